//! `flowstate serve` end to end, over loopback HTTP: deploys, webhooks,
//! runs, errors, and crash safety under SIGKILL.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowstate_server::settings::SignatureScheme;
use flowstate_server::signature::sign;
use serde_json::{Value, json};

mod common;
use common::*;

const ORDERS: &str = "class Workflow {
    async start(order, headers, api) {
        await api.runStore.set('topic', headers['x-shopify-topic']);
        for (const item of order.line_items) {
            await api.scheduleNextStep({ delay: 0, action: 'reserve', payload: item });
        }
    }
    async reserve(item, headers, api) { await api.runStore.increment('units', item.quantity); }
    async onWorkflowComplete(api) {
        api.log('units', await api.runStore.get('units'), 'topic', await api.runStore.get('topic'));
    }
}";

#[test]
fn webhooks_run_workflows_and_bad_requests_record_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--min-delay", "0", "--max-body", "1"],
    );
    let deploy = server
        .url("/api/workflows/orders?webhook_secret=s3cret&dedupe_header=x-shopify-webhook-id");
    let (status, body) = must("PUT", &deploy, &[], Some(ORDERS.as_bytes()));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["actions"], json!(["reserve"]));
    assert_eq!(body["settings"]["webhook"]["secret_set"], true);
    assert!(
        body["settings"]["webhook"].get("secret").is_none(),
        "secrets are never shown"
    );

    let order = br#"{"id": 1, "line_items": [{"quantity": 2}, {"quantity": 3}]}"#;
    let good = sign(SignatureScheme::Shopify, "s3cret", order);
    let hook = server.url("/hooks/orders");
    let signed = |id: &'static str, sig: &str| -> Vec<(&'static str, String)> {
        vec![
            ("content-type", "application/json".into()),
            ("x-shopify-topic", "orders/create".into()),
            ("x-shopify-webhook-id", id.into()),
            ("x-shopify-hmac-sha256", sig.into()),
        ]
    };
    let as_refs = |h: &Vec<(&'static str, String)>| {
        h.iter().map(|(k, v)| (*k, v.clone())).collect::<Vec<_>>()
    };
    let send = |h: Vec<(&'static str, String)>, body: &[u8]| {
        let h = as_refs(&h);
        let refs: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
        must("POST", &hook, &refs, Some(body))
    };

    // Refused, and nothing recorded: bad signature, none, malformed JSON, too large.
    let (status, body) = send(signed("w0", "AAAA"), order);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("does not match"));
    let (status, _) = must(
        "POST",
        &hook,
        &[("content-type", "application/json")],
        Some(order),
    );
    assert_eq!(status, 401);
    let bad = b"{\"id\": 1,";
    let (status, body) = send(
        signed("w0", &sign(SignatureScheme::Shopify, "s3cret", bad)),
        bad,
    );
    assert_eq!(status, 400, "{body}");
    let big = vec![b' '; 2048];
    let (status, body) = send(signed("w0", "x"), &big);
    assert_eq!(status, 413, "{body}");
    let (status, body) = must("POST", &server.url("/hooks/nope"), &[], Some(b"{}"));
    assert_eq!(status, 404);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("PUT /api/workflows/nope")
    );
    let (_, runs) = must("GET", &server.url("/api/runs"), &[], None);
    assert_eq!(runs["runs"], json!([]), "refused webhooks recorded nothing");

    // Accepted, then a redelivery of the same webhook id starts nothing.
    let (status, body) = send(signed("w1", &good), order);
    assert_eq!(status, 202, "{body}");
    let run = body["run"].as_str().unwrap().to_string();
    let (status, again) = send(signed("w1", &good), order);
    assert_eq!(
        (status, again["duplicate"].clone(), again["run"].as_str()),
        (200, json!(true), Some(run.as_str()))
    );

    let doc = wait_for_run(&server, &run, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let hook_step = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "onWorkflowComplete")
        .unwrap();
    assert_eq!(
        hook_step["logs"][0]["message"],
        "units 5 topic orders/create"
    );
    let metrics = get_text(&server.url("/metrics"));
    for line in [
        "flowstate_runs_started_total 1",
        "flowstate_runs_finished_total{status=\"completed\"} 1",
        "flowstate_steps_total{outcome=\"committed\"} 4",
        "flowstate_step_duration_seconds_count 4",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line} in:\n{metrics}"
        );
    }
    let (_, runs) = must(
        "GET",
        &server.url("/api/runs?workflow=orders&status=completed"),
        &[],
        None,
    );
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1);

    // A deploy that does not compile is refused; the live version stays.
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/orders"),
        &[],
        Some(b"class Workflow {\n  start() { let x = ; }\n}"),
    );
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["line"], 2);
    let (_, shown) = must("GET", &server.url("/api/workflows/orders"), &[], None);
    assert_eq!(shown["source"], ORDERS);
    assert!(server.stop().success(), "SIGTERM is a clean shutdown");
}

#[test]
fn the_api_needs_its_token_and_runs_can_be_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--api-token", "t0ken"]);
    let auth = [("authorization", "Bearer t0ken")];
    let (status, body) = must("GET", &server.url("/api/workflows"), &[], None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = must(
        "GET",
        &server.url("/api/workflows"),
        &[("authorization", "Bearer nope")],
        None,
    );
    assert_eq!(status, 401);

    let waiting = "class Workflow {
        async start(d, h, api) { await api.scheduleNextStep({ delay: '3 days', action: 'later' }); }
        async later() {}
    }";
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/slow"),
        &auth,
        Some(waiting.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = must(
        "POST",
        &server.url("/api/workflows/slow/runs"),
        &auth,
        Some(br#"{"data": {"n": 1}, "headers": {"X-Source": "test"}}"#),
    );
    assert_eq!(status, 201, "{body}");
    let run = body["run"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, doc) = must("GET", &server.url(&format!("/api/runs/{run}")), &auth, None);
        if doc["steps"][0]["status"] == "done" {
            assert_eq!(doc["steps"][1]["status"], "pending");
            break;
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    let cancel = server.url(&format!("/api/runs/{run}/cancel"));
    let (status, body) = must("POST", &cancel, &auth, None);
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("cancelled")),
        "{body}"
    );
    let (status, body) = must("POST", &cancel, &auth, None);
    assert_eq!(status, 409, "{body}");
    let (_, doc) = must("GET", &server.url(&format!("/api/runs/{run}")), &auth, None);
    assert_eq!(doc["steps"][1]["status"], "cancelled");

    for (path, expected) in [
        ("/api/runs/run_999", 404),
        ("/api/runs/seven", 400),
        ("/api/runs?status=done", 400),
        ("/api/runs?limit=0", 400),
    ] {
        let (status, body) = must("GET", &server.url(path), &auth, None);
        assert_eq!(status, expected, "{path}: {body}");
        assert!(body["error"].is_string(), "{path}: {body}");
    }
    let (status, doc) = must("GET", &server.url("/api/openapi.json"), &[], None);
    assert_eq!(status, 200, "the API document is public");
    assert!(
        doc["paths"]["/api/runs/{id}/cancel"]["post"].is_object(),
        "{doc}"
    );
    for path in [
        "/api/workflows/{name}/checkpoint",
        "/api/workflows/{name}/env",
        "/api/workflows/{name}/env/{var}",
        "/resume/{token}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }
    // The new management routes are behind the token like the rest.
    for (method, path) in [
        ("GET", "/api/workflows/slow/env"),
        ("PUT", "/api/workflows/slow/env/A"),
        ("GET", "/api/workflows/slow/checkpoint"),
        ("DELETE", "/api/workflows/slow/checkpoint"),
    ] {
        let (status, _) = must(method, &server.url(path), &[], Some(b"{}"));
        assert_eq!(status, 401, "{method} {path}");
    }
    let (status, _) = must("DELETE", &server.url("/api/workflows/slow"), &auth, None);
    assert_eq!(status, 204);
    let (status, _) = must("DELETE", &server.url("/api/workflows/slow"), &auth, None);
    assert_eq!(status, 404);
    server.kill();
}

fn jitter_ms(max: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    nanos % max.max(1)
}

const FANOUT: &str = "class Workflow {
    async start(data, headers, api) {
        for (let i = 0; i < data.n; i++) {
            await api.scheduleNextStep({ delay: 0, action: 'branch', payload: { i } });
        }
    }
    async branch({ i }, headers, api) {
        await api.runStore.increment('count');
        await api.runStore.push('items', i);
    }
    async onWorkflowComplete(api) {
        const items = await api.runStore.get('items');
        api.log(JSON.stringify({ count: await api.runStore.get('count'), items: items.length, unique: new Set(items).size }));
    }
}";

/// The server is killed with SIGKILL at random moments (ten times) while a
/// fan-out runs and webhooks keep arriving; after each kill it restarts on
/// the same file. Then: the counter equals the branches, every item is
/// there once, the hook ran once, no step is stuck, and every webhook
/// answered 202 has its run; redelivered webhooks made no second run.
#[test]
fn sigkill_at_random_moments_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let args = ["--min-delay", "0"];
    let n = 3000;

    let server = Server::start(&db, &args);
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/fanout"),
        &[],
        Some(FANOUT.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let deploy = server.url("/api/workflows/ping?dedupe_header=x-delivery");
    let (status, _) = must(
        "PUT",
        &deploy,
        &[],
        Some(
            b"class Workflow { async start(d, h, api) { await api.runStore.set('seen', d.id); } }",
        ),
    );
    assert_eq!(status, 201);
    let (status, body) = must(
        "POST",
        &server.url("/hooks/fanout"),
        &[("content-type", "application/json")],
        Some(format!("{{\"n\": {n}}}").as_bytes()),
    );
    assert_eq!(status, 202, "{body}");
    let fanout_run = body["run"].as_str().unwrap().to_string();

    // delivery id -> run acknowledged with 202 (or a duplicate's run)
    let mut acked: HashMap<u32, String> = HashMap::new();
    let mut next_delivery = 0u32;
    let mut server = server;
    for _kill in 0..10 {
        let until = Instant::now() + Duration::from_millis(150 + jitter_ms(250));
        while Instant::now() < until {
            let id = next_delivery;
            next_delivery += 1;
            let delivery = id.to_string();
            let body = format!("{{\"id\": {id}}}");
            if let Some((202, b)) = request(
                "POST",
                &server.url("/hooks/ping"),
                &[
                    ("content-type", "application/json"),
                    ("x-delivery", &delivery),
                ],
                Some(body.as_bytes()),
            ) {
                acked.insert(id, b["run"].as_str().unwrap().to_string());
            }
        }
        server.kill();
        server = Server::start(&db, &args);
    }

    // Like a webhook sender, redeliver everything: acknowledged ids must map
    // to the run they got, unacknowledged ones get exactly one run now.
    let mut runs_of_deliveries = BTreeSet::new();
    for id in 0..next_delivery {
        let body = format!("{{\"id\": {id}}}");
        let delivery = id.to_string();
        let (status, b) = must(
            "POST",
            &server.url("/hooks/ping"),
            &[
                ("content-type", "application/json"),
                ("x-delivery", &delivery),
            ],
            Some(body.as_bytes()),
        );
        assert!(status == 200 || status == 202, "{status} {b}");
        let run = b["run"].as_str().unwrap().to_string();
        if let Some(first) = acked.get(&id) {
            assert_eq!(&run, first, "delivery {id} was acknowledged as {first}");
            assert_eq!(status, 200, "an acknowledged delivery is a duplicate now");
        }
        runs_of_deliveries.insert(run);
    }
    assert_eq!(
        runs_of_deliveries.len(),
        next_delivery as usize,
        "one run per delivery"
    );
    let (_, listed) = must(
        "GET",
        &server.url("/api/runs?workflow=ping&limit=1000"),
        &[],
        None,
    );
    assert_eq!(
        listed["runs"].as_array().unwrap().len(),
        next_delivery as usize,
        "no extra runs"
    );

    let doc = wait_for_run(&server, &fanout_run, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{}", doc["summary"]);
    let steps = doc["steps"].as_array().unwrap();
    let hooks: Vec<_> = steps
        .iter()
        .filter(|s| s["kind"] == "complete_hook")
        .collect();
    assert_eq!(hooks.len(), 1, "onWorkflowComplete exactly once");
    let report: Value =
        serde_json::from_str(hooks[0]["logs"][0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(report, json!({ "count": n, "items": n, "unique": n }));
    assert!(steps.iter().all(|s| s["status"] == "done"), "no step stuck");
    assert_eq!(
        doc["state"],
        json!({}),
        "run state is gone after completion"
    );
    assert!(
        steps.iter().any(|s| s["attempts"].as_u64() > Some(1)),
        "some steps were running when the server was killed"
    );
    assert!(!acked.is_empty());
    server.kill();
}

#[test]
fn the_client_commands_deploy_trigger_and_inspect_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    let wf = dir.path().join("orders.js");
    std::fs::write(&wf, ORDERS).unwrap();
    let out = cli(&server, &["deploy", wf.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployed orders as ver_1"));

    let data = dir.path().join("order.json");
    std::fs::write(&data, r#"{"line_items": [{"quantity": 4}]}"#).unwrap();
    let out = cli(
        &server,
        &[
            "trigger",
            "orders",
            "--data",
            data.to_str().unwrap(),
            "--header",
            "x-shopify-topic=manual",
            "--wait",
            "--json",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["status"], "completed");
    let run = doc["summary"]["run"].as_str().unwrap().to_string();

    let out = cli(&server, &["runs", "list", "--workflow", "orders", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["runs"][0]["run"], run.as_str());
    let out = cli(&server, &["runs", "logs", &run]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("units 4 topic manual"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&server, &["runs", "show", &run]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("completed: 3 steps"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let out = cli(&server, &["runs", "cancel", &run]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already finished"));
    let bad = dir.path().join("bad.js");
    std::fs::write(&bad, "class Workflow {\n  start() { let = 1; }\n}").unwrap();
    let out = cli(&server, &["deploy", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("(line 2, column"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.kill();
}

#[test]
fn the_http_trigger_answers_with_what_start_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--min-delay", "0", "--max-retries", "0"],
    );
    let src = "class Workflow {
        async start(data, headers, api) {
            if (data.mode === 'json') return { total: data.qty * 2, sku: data.sku };
            if (data.mode === 'response') return new Response('made it', { status: 201, headers: { 'X-Thing': 'yes' } });
            if (data.mode === 'throw') throw new TypeError('no such order');
            await api.scheduleNextStep({ delay: 0, action: 'later', payload: { sku: data.sku } });
        }
        async later({ sku }, headers, api) { api.log('later for', sku); }
    }";
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/quote"),
        &[],
        Some(src.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let http = server.url(body["http_url"].as_str().unwrap());
    assert_eq!(
        body["http_url"].as_str().unwrap().len(),
        "/http/".len() + 32
    );

    let json_body = br#"{"mode": "json", "qty": 3}"#;
    let (status, answer) = must(
        "POST",
        &format!("{http}?sku=MUG"),
        &[("content-type", "application/json")],
        Some(json_body),
    );
    assert_eq!((status, answer), (200, json!({ "total": 6, "sku": "MUG" })));

    let mut resp = agent()
        .get(&format!("{http}?mode=response"))
        .call()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    assert_eq!(resp.headers().get("x-thing").unwrap(), "yes");
    assert!(resp.headers().get("x-flowstate-run").is_some());
    assert_eq!(resp.body_mut().read_to_string().unwrap(), "made it");

    let (status, answer) = must("GET", &format!("{http}?mode=none&sku=TEE"), &[], None);
    assert_eq!((status, answer), (200, json!({ "success": true })));
    let (_, runs) = must(
        "GET",
        &server.url("/api/runs?workflow=quote&limit=1"),
        &[],
        None,
    );
    let run = runs["runs"][0]["run"].as_str().unwrap().to_string();
    let doc = wait_for_run(&server, &run, &[]);
    assert_eq!(
        doc["steps"][1]["logs"][0]["message"], "later for TEE",
        "later steps run after the response"
    );

    let (status, answer) = must("GET", &format!("{http}?mode=throw"), &[], None);
    assert_eq!(status, 500, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("TypeError: no such order"),
        "{answer}"
    );

    for bad in ["/http/nope", "/http/0123456789abcdef0123456789abcdef"] {
        let (status, answer) = must("POST", &server.url(bad), &[], Some(b"{}"));
        assert_eq!(
            (status, answer["error"].as_str()),
            (404, Some("nothing here")),
            "{bad}"
        );
    }
    server.kill();
}

#[test]
fn schedule_settings_are_checked_at_deploy() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let deploy = |settings: Value| {
        let body = json!({ "source": "class Workflow { async start() {} }", "settings": settings })
            .to_string();
        must(
            "PUT",
            &server.url("/api/workflows/nightly"),
            &[("content-type", "application/json")],
            Some(body.as_bytes()),
        )
    };
    let (status, body) = deploy(json!({ "schedule": { "cron": "0 25 * * *" } }));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("is not a cron expression"),
        "{body}"
    );
    let (status, body) = deploy(json!({ "schedule": { "every": "1 minute" } }));
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("minimum interval"),
        "{body}"
    );
    let (status, body) =
        deploy(json!({ "schedule": { "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin" } }));
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["settings"]["schedule"]["timezone"], "Europe/Berlin");
    let (status, body) = deploy(json!({ "schedule": { "every": "1 day" }, "surprise": true }));
    assert_eq!(status, 422, "unknown settings are refused: {body}");
    server.kill();
}

#[test]
fn a_config_file_sets_what_flags_and_the_environment_leave_unset() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("flowstate.toml");
    std::fs::write(&config, "max_body = 1\napi_token = \"from-file\"\n").unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &[
            "--config",
            config.to_str().unwrap(),
            "--api-token",
            "from-flag",
        ],
    );
    let (status, _) = must(
        "GET",
        &server.url("/api/workflows"),
        &[("authorization", "Bearer from-file")],
        None,
    );
    assert_eq!(status, 401, "the flag wins over the file");
    let auth = [("authorization", "Bearer from-flag")];
    let (status, _) = must(
        "PUT",
        &server.url("/api/workflows/w"),
        &auth,
        Some(b"class Workflow { async start() {} }"),
    );
    assert_eq!(status, 201);
    let big = vec![b' '; 2048];
    let (status, body) = must("POST", &server.url("/hooks/w"), &[], Some(&big));
    assert_eq!(
        status, 413,
        "max_body = 1 (KiB) comes from the file: {body}"
    );
    server.kill();
}

#[test]
fn dev_mode_redeploys_changed_files_and_keeps_the_last_good_version() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    let file = flows.join("greet.js");
    std::fs::write(&file, "class Workflow { async start() { return 1; } }").unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--dir", flows.to_str().unwrap(), "--dev"],
    );
    let version =
        || must("GET", &server.url("/api/workflows/greet"), &[], None).1["version"].clone();
    let wait_for = |expected: &str| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while version() != json!(expected) {
            assert!(Instant::now() < deadline, "still {} after edits", version());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert_eq!(version(), json!("ver_1"));
    std::fs::write(&file, "class Workflow { async start() { return 2; } }").unwrap();
    wait_for("ver_2");
    // A broken edit deploys nothing; the next good one becomes ver_3.
    std::fs::write(&file, "class Workflow { async start() { let = ; } }").unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(
        version(),
        json!("ver_2"),
        "the last good version stays live"
    );
    std::fs::write(&file, "class Workflow { async start() { return 3; } }").unwrap();
    wait_for("ver_3");
    server.kill();
}

fn committed_steps(server: &Server) -> u64 {
    get_text(&server.url("/metrics"))
        .lines()
        .find_map(|l| l.strip_prefix("flowstate_steps_total{outcome=\"committed\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn two_nodes_on_one_postgres_share_a_run_and_do_nothing_twice() {
    let Some(url) = fresh_postgres() else { return };
    let args = ["--database-url", url.as_str(), "--min-delay", "0"];
    let a = Server::spawn(&args);
    let b = Server::spawn(&args);
    let n = 1500;
    let (status, body) = must(
        "PUT",
        &a.url("/api/workflows/fanout"),
        &[],
        Some(FANOUT.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let (status, body) = must(
        "POST",
        &b.url("/hooks/fanout"),
        &[("content-type", "application/json")],
        Some(format!("{{\"n\": {n}}}").as_bytes()),
    );
    assert_eq!(status, 202, "node b serves what node a deployed: {body}");
    let run = body["run"].as_str().unwrap().to_string();
    let doc = wait_for_run(&a, &run, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{}", doc["summary"]);
    let hooks: Vec<_> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["kind"] == "complete_hook")
        .collect();
    assert_eq!(hooks.len(), 1);
    let report: Value =
        serde_json::from_str(hooks[0]["logs"][0]["message"].as_str().unwrap()).unwrap();
    assert_eq!(
        report,
        json!({ "count": n, "items": n, "unique": n }),
        "no step ran twice"
    );
    let (ca, cb) = (committed_steps(&a), committed_steps(&b));
    assert_eq!(
        ca + cb,
        n as u64 + 2,
        "every step committed once, by one node or the other"
    );
    assert!(ca > 0 && cb > 0, "both nodes took steps: {ca} and {cb}");
    a.kill();
    b.kill();
}

#[test]
fn a_shutdown_past_its_grace_period_releases_running_steps() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(
        &dir.path().join("s.db"),
        &["--step-cpu-limit", "60s", "--shutdown-grace", "1s"],
    );
    let base = server.base.clone();
    let spin = b"class Workflow { async start() { while (true) {} } }";
    let (status, _) = must(
        "PUT",
        &format!("{base}/api/workflows/spin"),
        &[],
        Some(spin),
    );
    assert_eq!(status, 201);
    let (status, body) = must("POST", &format!("{base}/hooks/spin"), &[], Some(b"{}"));
    assert_eq!(status, 202, "{body}");
    let run = body["run"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while must("GET", &format!("{base}/api/runs/{run}"), &[], None).1["steps"][0]["status"]
        != "running"
    {
        assert!(Instant::now() < deadline, "the step never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: sends a signal to our own child process.
    unsafe { libc::kill(server.child.id() as i32, libc::SIGTERM) };
    assert!(server.child.wait().unwrap().success());
    let log = server.finish_log();
    assert!(
        log.iter()
            .any(|l| l.contains("released 1 steps still running")),
        "{log:?}"
    );
}

#[test]
fn workflow_fetch_reaches_the_server_but_not_its_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let src = "class Workflow {
        async start(data, headers, api) {
            const tryFetch = async (url) => {
                try { return `${(await fetch(url)).status}`; } catch (e) { return e.message; }
            };
            return { metrics: await tryFetch(data.base + '/metrics'), admin: await tryFetch(data.base + '/api/workflows') };
        }
    }";
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/probe"),
        &[],
        Some(src.as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    let http = server.url(body["http_url"].as_str().unwrap());
    let (status, answer) = must("GET", &format!("{http}?base={}", server.base), &[], None);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["metrics"], "200",
        "control: the server itself is reachable"
    );
    let admin = answer["admin"].as_str().unwrap();
    assert!(
        admin.contains("denied") && admin.contains("/api"),
        "{admin}"
    );
    server.kill();
}
