//! The compatibility suite: workflows written against the reference
//! platform's documented API (`tests/compat/*.js`, one per documented call
//! or pattern) run unchanged on flowstate and give the documented results.
//! Delays run on the virtual clock (`run --fast-forward`); the triggers
//! through a real server on loopback. The scheduled counter is in
//! `crates/server/tests/schedules.rs`, on the server's virtual clock.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

mod common;
use common::*;

const DAY_MS: i64 = 86_400_000;

fn compat(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/compat")
        .join(name)
}

fn source(name: &str) -> String {
    std::fs::read_to_string(compat(name)).unwrap()
}

/// `flowstate run <compat file> --fast-forward --json` with `data`.
fn run(name: &str, data: &Value, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let data_file = dir.path().join("data.json");
    std::fs::write(&data_file, data.to_string()).unwrap();
    let out: Output = Command::new(env!("CARGO_BIN_EXE_flowstate"))
        .arg("run")
        .arg(compat(name))
        .arg("--data")
        .arg(&data_file)
        .args(["--fast-forward", "--json"])
        .args(extra)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn steps<'a>(doc: &'a Value, action: &str) -> Vec<&'a Value> {
    doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == action)
        .collect()
}

fn first_log(step: &Value) -> &str {
    step["logs"][0]["message"].as_str().unwrap_or_default()
}

#[test]
fn a_linear_chain_waits_its_duration_strings() {
    let doc = run(
        "chain.js",
        &json!({ "id": 1001, "email": "ada@example.com" }),
        &[],
    );
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let first = steps(&doc, "sendFollowUp")[0];
    let second = steps(&doc, "sendSecondFollowUp")[0];
    assert_eq!(first["offset_ms"], json!(DAY_MS), "'1 day' after the order");
    assert_eq!(second["offset_ms"], json!(8 * DAY_MS), "then '7 days' more");
    assert_eq!(
        first_log(first),
        "follow-up for order 1001 to ada@example.com"
    );
    assert_eq!(
        first_log(second),
        "second follow-up for order 1001 to ada@example.com"
    );
}

#[test]
fn fan_out_branches_push_and_count_without_losing_any() {
    let items: Vec<Value> = (0..25)
        .map(|i| json!({ "id": i, "sku": format!("SKU-{i}"), "quantity": i % 5 }))
        .collect();
    let doc = run(
        "fanout.js",
        &json!({ "customer": { "id": 7 }, "line_items": items }),
        &[],
    );
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    assert_eq!(steps(&doc, "checkStock").len(), 25);
    let state = &doc["state"];
    assert_eq!(state["stockResults"].as_array().unwrap().len(), 25);
    assert_eq!(state["processedCount"], json!(25));
    assert_eq!(state["outOfStock"], json!(5));
    let mut skus: Vec<&str> = state["stockResults"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["sku"].as_str().unwrap())
        .collect();
    skus.sort();
    skus.dedup();
    assert_eq!(skus.len(), 25, "each branch's result once");
    let hook = steps(&doc, "onWorkflowComplete")[0];
    assert_eq!(
        first_log(hook),
        "checked 25 items; processed 25 for customer 7"
    );
    // Staggered by a second per item, from a 10 s start.
    let offsets: Vec<i64> = steps(&doc, "checkStock")
        .iter()
        .map(|s| s["offset_ms"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets[0], 10_000);
    assert_eq!(offsets[24], 34_000);
}

#[test]
fn dedupe_in_start_ignores_a_redelivered_order() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("d.db");
    let db = db.to_str().unwrap();
    let order = json!({ "id": 5150 });
    let first = run("dedupe.js", &order, &["--db", db]);
    assert_eq!(steps(&first, "processOrder").len(), 1, "{first}");
    let again = run("dedupe.js", &order, &["--db", db]);
    assert_eq!(again["summary"]["status"], "completed");
    assert!(
        steps(&again, "processOrder").is_empty(),
        "the redelivery does nothing"
    );
    let other = run("dedupe.js", &json!({ "id": 5151 }), &["--db", db]);
    assert_eq!(steps(&other, "processOrder").len(), 1);
    let no_id = run("dedupe.js", &json!({}), &["--db", db]);
    assert_eq!(
        no_id["summary"]["steps"],
        json!(1),
        "validated away in start"
    );
}

#[test]
fn an_unanswered_approval_times_out_and_the_run_ends() {
    let doc = run("approval.js", &json!({ "id": 9, "total": "12.50" }), &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let wait = steps(&doc, "onDecision")[0];
    assert_eq!(wait["status"], "timed_out");
    assert_eq!(wait["error"]["name"], "WaitTimeout");
    assert_eq!(
        doc["summary"]["elapsed_ms"],
        json!(2 * DAY_MS),
        "'2 days' on the virtual clock"
    );
    assert!(doc["state"]["decision"].is_null());
}

fn deploy(server: &Server, name: &str, file: &str) -> String {
    let (status, body) = must(
        "PUT",
        &server.url(&format!("/api/workflows/{name}")),
        &[],
        Some(source(file).as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    server.url(body["http_url"].as_str().unwrap())
}

fn post_json(url: &str, body: &Value) -> (u16, Vec<(String, String)>, String) {
    let resp = agent()
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
        .collect();
    (status, headers, resp.into_body().read_to_string().unwrap())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

#[test]
fn http_triggers_answer_with_what_start_returns() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    let http = deploy(&server, "http", "http.js");
    let (status, _, body) = post_json(&http, &json!({ "mode": "json", "order": 1 }));
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({ "received": 1, "ok": true }))
    );
    let (status, headers, body) = post_json(&http, &json!({ "mode": "response", "order": 2 }));
    assert_eq!(
        (status, body.as_str(), header(&headers, "x-order")),
        (201, "created 2", "2")
    );
    let (status, headers, body) = post_json(&http, &json!({ "order": 3 }));
    assert_eq!((status, body.as_str()), (200, r#"{"success":true}"#));
    let doc = wait_for_run(&server, header(&headers, "x-flowstate-run"), &[]);
    let later = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "later")
        .unwrap();
    assert_eq!(
        first_log(later),
        "after the answer 3",
        "later steps run after the answer"
    );
    server.kill();
}

#[test]
fn an_approval_link_resumes_the_branch_with_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let http = deploy(&server, "approval", "approval.js");
    let (_, headers, body) = post_json(&http, &json!({ "id": 77, "total": "99.00" }));
    let run = header(&headers, "x-flowstate-run").to_string();
    let link = serde_json::from_str::<Value>(&body).unwrap()["resumeUrl"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _, _) = post_json(&link, &json!({ "approved": true }));
    assert_eq!(status, 200);
    let doc = wait_for_run(&server, &run, &[]);
    assert_eq!(doc["summary"]["status"], "completed");
    let decided = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["action"] == "onDecision")
        .unwrap();
    assert_eq!(first_log(decided), "order 77 (99.00) approved: true");
    server.kill();
}

#[test]
fn a_csv_import_fans_out_over_its_chunks() {
    let mut csv = String::from("sku,title,inventory\n");
    for i in 0..1_234 {
        csv.push_str(&format!("SKU-{i},\"Item {i}, blue\",{}\n", i % 50));
    }
    let files = file_server(vec![(
        "/products.csv",
        "200 OK",
        "text/csv",
        csv.into_bytes(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &["--min-delay", "0"]);
    deploy(&server, "import", "csv.js");
    let (status, accepted) = must(
        "POST",
        &server.url("/hooks/import"),
        &[("content-type", "application/json")],
        Some(
            json!({ "url": format!("{files}/products.csv") })
                .to_string()
                .as_bytes(),
        ),
    );
    assert_eq!(status, 202);
    let doc = wait_for_run(&server, accepted["run"].as_str().unwrap(), &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let chunks = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "processChunk")
        .count();
    assert_eq!(chunks, 13);
    let hook = doc["steps"].as_array().unwrap().last().unwrap();
    // inventory < 5: i % 50 in 0..5, 5 of every 50 rows (1,234 rows: 24 full
    // blocks of 50 give 120, and the last 34 rows 5 more).
    assert_eq!(first_log(hook), "processed 1234 of 1234 rows; 125 low");
    server.kill();
}

#[test]
fn checkpoint_counts_runs_and_dedupes_emails_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    deploy(&server, "signup", "checkpoint.js");
    let mut runs = Vec::new();
    for email in ["a@example.com", "b@example.com", "a@example.com"] {
        let (status, accepted) = must(
            "POST",
            &server.url("/hooks/signup"),
            &[("content-type", "application/json")],
            Some(json!({ "email": email }).to_string().as_bytes()),
        );
        assert_eq!(status, 202);
        // One at a time, as the reference's example assumes.
        runs.push(wait_for_run(
            &server,
            accepted["run"].as_str().unwrap(),
            &[],
        ));
    }
    let logged: Vec<&str> = runs.iter().map(|d| first_log(&d["steps"][0])).collect();
    assert_eq!(logged, ["1", "2", "3"]);
    assert_eq!(runs[2]["summary"]["status"], "ended");
    assert_eq!(
        runs[2]["summary"]["end_reason"],
        "Email already seen. Exiting early"
    );
    let (_, cp) = must(
        "GET",
        &server.url("/api/workflows/signup/checkpoint"),
        &[],
        None,
    );
    assert_eq!(
        cp["value"],
        json!(3),
        "$end still keeps the checkpoint it set"
    );
    let (_, step) = must(
        "GET",
        &server.url("/api/workflows/signup/checkpoint?step=start"),
        &[],
        None,
    );
    assert_eq!(
        step["value"],
        json!({ "emails": ["a@example.com", "b@example.com"] })
    );
    server.kill();
}
