//! Concurrency limits and throttles end to end (DESIGN.md 1.7): runs over
//! the limit wait `queued` and start in arrival order, checked from the
//! run history the API keeps.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::*;

/// A run takes a while: two steps, each waiting on a timer.
const SLOW: &str = "class Workflow {
    async start(data, headers, api) {
        await new Promise((r) => setTimeout(r, 15));
        await api.scheduleNextStep({ delay: 0, action: 'finish', payload: data });
    }
    async finish(data) {
        await new Promise((r) => setTimeout(r, 15));
    }
}";

fn deploy(server: &Server, name: &str, query: &str) -> Value {
    let (status, body) = must(
        "PUT",
        &server.url(&format!("/api/workflows/{name}{query}")),
        &[],
        Some(SLOW.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    body
}

fn send(server: &Server, name: &str, body: &Value) -> String {
    let (status, accepted) = must(
        "POST",
        &server.url(&format!("/hooks/{name}")),
        &[("content-type", "application/json")],
        Some(body.to_string().as_bytes()),
    );
    assert_eq!(status, 202, "{accepted}");
    accepted["run"].as_str().unwrap().to_string()
}

/// Each run's (start of its `start` step, end of the run), once all ended.
fn intervals(server: &Server, runs: &[String]) -> Vec<(String, String)> {
    runs.iter()
        .map(|run| {
            let doc = wait_for_run(server, run, &[]);
            assert_eq!(doc["summary"]["status"], "completed", "{doc}");
            let start = doc["steps"][0]["started_at"].as_str().unwrap().to_string();
            let end = doc["summary"]["finished_at"].as_str().unwrap().to_string();
            (start, end)
        })
        .collect()
}

/// Timestamps are fixed-width UTC text, so they compare as strings.
fn overlapping(a: &(String, String), b: &(String, String)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

#[test]
fn concurrency_one_runs_one_at_a_time_in_arrival_order() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    let body = deploy(&server, "serial", "?concurrency=1");
    assert_eq!(body["settings"]["concurrency"], json!({ "limit": 1 }));
    let runs: Vec<String> = (0..12)
        .map(|i| send(&server, "serial", &json!({ "i": i })))
        .collect();

    // (That the waiting runs show `queued` is checked without timing in
    // an_http_trigger_behind_a_busy_slot_answers_queued.)
    let spans = intervals(&server, &runs);
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            assert!(
                !overlapping(a, b),
                "two runs were active at once: {a:?} {b:?}"
            );
        }
    }
    for pair in spans.windows(2) {
        assert!(
            pair[0].1 <= pair[1].0,
            "runs started out of arrival order: {pair:?}"
        );
    }
    server.kill();
}

#[test]
fn a_concurrency_key_serialises_per_customer_only() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    deploy(
        &server,
        "per-customer",
        "?concurrency=1&concurrency_key=customer.id",
    );
    let mut by_customer: Vec<(i64, String)> = Vec::new();
    for i in 0..12 {
        let customer = i % 3;
        by_customer.push((
            customer,
            send(
                &server,
                "per-customer",
                &json!({ "customer": { "id": customer } }),
            ),
        ));
    }
    // Data without the key: one shared queue, not an error.
    let missing = vec![
        send(&server, "per-customer", &json!({ "other": 1 })),
        send(&server, "per-customer", &json!({ "customer": null })),
    ];
    let runs: Vec<String> = by_customer.iter().map(|(_, r)| r.clone()).collect();
    let spans = intervals(&server, &runs);
    let mut across = false;
    for i in 0..spans.len() {
        for j in i + 1..spans.len() {
            if overlapping(&spans[i], &spans[j]) {
                assert_ne!(
                    by_customer[i].0, by_customer[j].0,
                    "two runs of one customer were active at once"
                );
                across = true;
            }
        }
    }
    assert!(
        across,
        "runs of different customers should run side by side"
    );
    let spans = intervals(&server, &missing);
    assert!(!overlapping(&spans[0], &spans[1]));
    server.kill();
}

#[test]
fn a_throttle_delays_starts_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    deploy(&server, "throttled", "?throttle=2&throttle_period=1s");
    let sent = Instant::now();
    let runs: Vec<String> = (0..4)
        .map(|i| send(&server, "throttled", &json!({ "i": i })))
        .collect();
    let spans = intervals(&server, &runs);
    assert!(
        sent.elapsed() >= Duration::from_secs(1),
        "4 runs at 2 per second take a second"
    );
    // The third starts a period after the first.
    let first = &spans[0].0;
    let third = &spans[2].0;
    assert!(third > first);

    // Bad settings are refused with what to write instead.
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/bad?throttle=2&throttle_period=soon"),
        &[],
        Some(SLOW.as_bytes()),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("throttle.period"),
        "{body}"
    );
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/bad?concurrency=0"),
        &[],
        Some(SLOW.as_bytes()),
    );
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("at least 1"),
        "{body}"
    );
    let (status, _) = must("GET", &server.url("/api/workflows/bad"), &[], None);
    assert_eq!(status, 404, "a refused deploy records nothing");
    server.kill();
}

/// A run waiting for an event still holds its slot; an HTTP trigger whose
/// run has to queue says so at once, and the run starts when the slot frees.
#[test]
fn an_http_trigger_behind_a_busy_slot_answers_queued() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    let src = "class Workflow {
        async start(data, headers, api) {
            if (data.wait) {
                const { resumeUrl } = await api.waitForEvent({ action: 'done', timeout: '1h' });
                return { resumeUrl };
            }
            return { ran: true };
        }
        async done() {}
    }";
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/slot?concurrency=1"),
        &[],
        Some(src.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let http = server.url(body["http_url"].as_str().unwrap());
    let (status, first) = must(
        "POST",
        &http,
        &[("content-type", "application/json")],
        Some(b"{\"wait\":true}"),
    );
    assert_eq!(status, 200, "{first}");
    let (status, queued) = must(
        "POST",
        &http,
        &[("content-type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(status, 202, "{queued}");
    assert_eq!(queued["status"], "queued");
    let run = queued["run"].as_str().unwrap().to_string();
    let (_, doc) = must("GET", &server.url(&format!("/api/runs/{run}")), &[], None);
    assert_eq!(doc["summary"]["status"], "queued");
    assert_eq!(doc["steps"][0]["status"], "queued");
    let (status, _) = must(
        "POST",
        first["resumeUrl"].as_str().unwrap(),
        &[],
        Some(b"{}"),
    );
    assert_eq!(status, 200);
    let doc = wait_for_run(&server, &run, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    server.kill();
}

/// Two nodes on one PostgreSQL database admit runs of a `concurrency: 1`
/// workflow one at a time between them.
#[test]
fn two_nodes_on_postgres_keep_one_run_active() {
    let Some(url) = fresh_postgres() else { return };
    let args = ["--database-url", url.as_str(), "--min-delay", "0"];
    let a = Server::spawn(&args);
    let b = Server::spawn(&args);
    deploy(&a, "serial", "?concurrency=1");
    let runs: Vec<String> = (0..16)
        .map(|i| {
            let node = if i % 2 == 0 { &a } else { &b };
            send(node, "serial", &json!({ "i": i }))
        })
        .collect();
    let mut spans = intervals(&a, &runs);
    for (i, x) in spans.iter().enumerate() {
        for y in &spans[i + 1..] {
            assert!(
                !overlapping(x, y),
                "two runs were active at once: {x:?} {y:?}"
            );
        }
    }
    spans.sort();
    assert_eq!(spans.len(), 16);
    a.kill();
    b.kill();
}
