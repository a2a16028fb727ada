//! State across runs, end to end against the real server: the exact
//! `workflowStore` counter, `$checkpoint` compare-and-set under a race, and
//! the checkpoint's CLI and API.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

/// Deploys `src` as `name` and returns its HTTP trigger URL.
fn deploy(server: &Server, name: &str, src: &str) -> String {
    let (status, body) = must(
        "PUT",
        &server.url(&format!("/api/workflows/{name}")),
        &[],
        Some(src.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    server.url(body["http_url"].as_str().unwrap())
}

/// Sends `n` webhooks to `name` from 8 threads at once.
fn burst(server: &Server, name: &str, n: usize) {
    let hook = server.url(&format!("/hooks/{name}"));
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let hook = hook.clone();
            std::thread::spawn(move || {
                for i in (t..n).step_by(8) {
                    let body = format!(r#"{{"i":{i}}}"#);
                    let (status, _) = must(
                        "POST",
                        &hook,
                        &[("content-type", "application/json")],
                        Some(body.as_bytes()),
                    );
                    assert_eq!(status, 202);
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
}

/// Waits until `n` runs of `name` have completed; returns them.
fn completed(server: &Server, name: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, runs) = must(
            "GET",
            &server.url(&format!(
                "/api/runs?workflow={name}&status=completed&limit=1000"
            )),
            &[],
            None,
        );
        let runs = runs["runs"].as_array().unwrap().clone();
        if runs.len() >= n {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} runs completed",
            runs.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 200 runs triggered at once each add 1 to a workflow-scoped counter: it
/// ends at exactly 200.
#[test]
fn concurrent_runs_share_an_exact_workflow_counter() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let src = "class Workflow {
        async start(data, headers, api) {
            if (data.read) return { n: await api.workflowStore.get('n') };
            await api.workflowStore.increment('n');
        }
    }";
    let http = deploy(&server, "count", src);
    burst(&server, "count", 200);
    completed(&server, "count", 200);
    let (status, answer) = must("GET", &format!("{http}?read=1"), &[], None);
    assert_eq!((status, answer), (200, json!({ "n": 200 })));
    server.kill();
}

/// The reference's own example, raced: 200 runs triggered at once each do
/// `$checkpoint = ($checkpoint || 0) + 1` (and a step-level counter), and
/// no update is lost.
#[test]
fn concurrent_checkpoint_updates_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    let src = "class Workflow {
        async start(data, headers, api) {
            $checkpoint = ($checkpoint || 0) + 1;
            await api.scheduleNextStep({ delay: 0, action: 'tally', payload: {} });
        }
        async tally() {
            this.$checkpoint = { runs: (this.$checkpoint?.runs ?? 0) + 1 };
        }
    }";
    deploy(&server, "cp", src);
    burst(&server, "cp", 200);
    completed(&server, "cp", 200);
    let (status, cp) = must(
        "GET",
        &server.url("/api/workflows/cp/checkpoint"),
        &[],
        None,
    );
    assert_eq!(status, 200, "{cp}");
    assert_eq!(cp["value"], json!(200), "{cp}");
    let (_, step) = must(
        "GET",
        &server.url("/api/workflows/cp/checkpoint?step=tally"),
        &[],
        None,
    );
    assert_eq!(step["value"], json!({ "runs": 200 }), "{step}");
    let metrics = get_text(&server.url("/metrics"));
    let conflicts = metrics
        .lines()
        .find(|l| l.contains(r#"outcome="checkpoint_conflict""#))
        .expect("conflicts are counted");
    eprintln!("{conflicts}");
    server.kill();
}

#[test]
fn checkpoints_are_read_set_and_cleared_by_cli_and_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let http = deploy(
        &server,
        "seen",
        "class Workflow {
            async start(data) {
                const seen = $checkpoint ?? { ids: [] };
                if (seen.ids.includes(data.id)) return { duplicate: true };
                seen.ids.push(data.id);
                $checkpoint = seen;
                return { duplicate: false };
            }
        }",
    );
    let post = |id: u32| {
        let body = format!(r#"{{"id":{id}}}"#);
        must(
            "POST",
            &http,
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
        .1
    };
    assert_eq!(post(1), json!({ "duplicate": false }));
    assert_eq!(post(1), json!({ "duplicate": true }));

    let out = cli(&server, &["checkpoint", "get", "seen"]);
    assert!(out.status.success(), "{out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown, json!({ "ids": [1] }));

    let out = cli(&server, &["checkpoint", "set", "seen", r#"{"ids":[1,2]}"#]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        post(2),
        json!({ "duplicate": true }),
        "the edited value is what runs see"
    );

    let out = cli(&server, &["checkpoint", "clear", "seen"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(&server, &["checkpoint", "get", "seen"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "$checkpoint of seen is not set (undefined)\n"
    );
    assert_eq!(
        post(1),
        json!({ "duplicate": false }),
        "cleared: undefined again"
    );

    // Bad input: clear errors, nothing changed.
    let out = cli(&server, &["checkpoint", "set", "seen", "{not json"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("must be JSON"),
        "{out:?}"
    );
    let big = format!(r#""{}""#, "x".repeat(70 * 1024));
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/seen/checkpoint"),
        &[],
        Some(big.as_bytes()),
    );
    assert_eq!(status, 413, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("over the limit of 64"),
        "{body}"
    );
    let (status, body) = must(
        "GET",
        &server.url("/api/workflows/seen/checkpoint?step=nope"),
        &[],
        None,
    );
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("its steps are start"),
        "{body}"
    );
    let (status, _) = must(
        "GET",
        &server.url("/api/workflows/ghost/checkpoint"),
        &[],
        None,
    );
    assert_eq!(status, 404);
    let (_, cp) = must(
        "GET",
        &server.url("/api/workflows/seen/checkpoint"),
        &[],
        None,
    );
    assert_eq!(
        cp["value"],
        json!({ "ids": [1] }),
        "refused writes changed nothing"
    );
    server.kill();
}

/// Cross-run state survives SIGKILL: 300 accepted runs each add 1 to
/// `$checkpoint`, to a step's `this.$checkpoint` and to a `workflowStore`
/// counter while the server is killed three times at random moments; after
/// the restarts every counter is exactly 300.
#[test]
fn cross_run_counters_are_exact_across_sigkills() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let args = ["--min-delay", "0"];
    let server = Server::start(&db, &args);
    let src = "class Workflow {
        async start(data, headers, api) {
            $checkpoint = ($checkpoint ?? 0) + 1;
            await api.workflowStore.increment('runs');
            await api.scheduleNextStep({ delay: 0, action: 'tally', payload: {} });
        }
        async tally() {
            this.$checkpoint = (this.$checkpoint ?? 0) + 1;
        }
    }";
    deploy(&server, "kill", src);
    burst(&server, "kill", 300);
    let mut server = server;
    for round in 0..3 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos() as u64;
        std::thread::sleep(Duration::from_millis(20 + nanos % 150));
        server.kill();
        server = Server::start(&db, &args);
        eprintln!("restart {round}");
    }
    completed(&server, "kill", 300);
    let (_, cp) = must(
        "GET",
        &server.url("/api/workflows/kill/checkpoint"),
        &[],
        None,
    );
    assert_eq!(cp["value"], json!(300), "{cp}");
    let (_, step) = must(
        "GET",
        &server.url("/api/workflows/kill/checkpoint?step=tally"),
        &[],
        None,
    );
    assert_eq!(step["value"], json!(300), "{step}");
    // The counter, read through a run of its own.
    let reader = "class Workflow { async start(d, h, api) { return { n: await api.workflowStore.get('runs') }; } }";
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/kill"),
        &[],
        Some(reader.as_bytes()),
    );
    assert_eq!(status, 200, "{body}");
    let (_, answer) = must(
        "GET",
        &server.url(body["http_url"].as_str().unwrap()),
        &[],
        None,
    );
    assert_eq!(answer, json!({ "n": 300 }));
    server.kill();
}

/// The checkpoint race again, across two nodes on one PostgreSQL database:
/// their compare-and-set writes meet in the database.
#[test]
fn two_nodes_on_postgres_lose_no_checkpoint_update() {
    let Some(url) = fresh_postgres() else { return };
    let args = ["--database-url", url.as_str(), "--min-delay", "0"];
    let a = Server::spawn(&args);
    let b = Server::spawn(&args);
    let src = "class Workflow {
        async start(data, headers, api) {
            $checkpoint = ($checkpoint || 0) + 1;
            await api.workflowStore.increment('n');
        }
    }";
    deploy(&a, "cp", src);
    let senders = [&a, &b].map(|node| {
        let base = node.base.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                let (status, _) = must(
                    "POST",
                    &format!("{base}/hooks/cp"),
                    &[("content-type", "application/json")],
                    Some(format!(r#"{{"i":{i}}}"#).as_bytes()),
                );
                assert_eq!(status, 202);
            }
        })
    });
    for s in senders {
        s.join().unwrap();
    }
    completed(&a, "cp", 200);
    let (_, cp) = must("GET", &b.url("/api/workflows/cp/checkpoint"), &[], None);
    assert_eq!(cp["value"], json!(200), "{cp}");
    a.kill();
    b.kill();
}
