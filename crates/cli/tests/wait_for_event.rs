//! `api.waitForEvent` over HTTP, against the real server: a run pauses,
//! shows `waiting`, is resumed once by its link (GET from a browser or POST
//! with JSON), and refuses a used, expired or unknown link. Timeouts are
//! tested on the virtual clock (engine tests, and `flowstate run`).

use serde_json::{Value, json};

mod common;
use common::*;

const APPROVAL: &str = "class Workflow {
    async start(data, headers, api) {
        const { resumeUrl } = await api.waitForEvent({
            action: 'decide',
            payload: { order: data.order },
            timeout: '3 days',
            redirect_url: data.thanks,
        });
        return { resumeUrl };
    }
    async decide(data, headers, api) {
        await api.runStore.set('decision', data);
    }
    async onWorkflowComplete(api) {
        api.log('decision', JSON.stringify(await api.runStore.get('decision')));
    }
}";

/// Starts an approval run; returns (run, resume URL).
fn start(server: &Server, http: &str, data: Value) -> (String, String) {
    let resp = agent()
        .post(http)
        .header("content-type", "application/json")
        .send(data.to_string().as_bytes())
        .unwrap();
    let run = resp.headers()["x-flowstate-run"]
        .to_str()
        .unwrap()
        .to_string();
    let body: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    let url = body["resumeUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&server.base), "{url} is on this server");
    (run, url)
}

fn status(server: &Server, run: &str) -> String {
    let (_, doc) = must("GET", &server.url(&format!("/api/runs/{run}")), &[], None);
    doc["summary"]["status"].as_str().unwrap().to_string()
}

#[test]
fn an_approval_link_resumes_the_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let (code, body) = must(
        "PUT",
        &server.url("/api/workflows/approve"),
        &[],
        Some(APPROVAL.as_bytes()),
    );
    assert_eq!(code, 201, "{body}");
    let http = server.url(body["http_url"].as_str().unwrap());

    // A browser click: GET with query parameters, then a confirmation page.
    let (run, url) = start(&server, &http, json!({ "order": 41 }));
    assert_eq!(status(&server, &run), "waiting");
    let mut page = agent()
        .get(&format!("{url}?approved=yes"))
        .header("accept", "text/html")
        .call()
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(
        page.body_mut()
            .read_to_string()
            .unwrap()
            .contains("recorded")
    );
    let doc = wait_for_run(&server, &run, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let logs = doc.to_string();
    assert!(
        logs.contains(r#"decision {\"order\":41,\"approved\":\"yes\"}"#),
        "{logs}"
    );
    // Used: 409, and nothing changes.
    let (code, body) = must("GET", &url, &[], None);
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("works once"),
        "{body}"
    );

    // A POST with JSON, and a redirect for the browser.
    let (run, url) = start(
        &server,
        &http,
        json!({ "order": 42, "thanks": "https://shop.example.com/thanks" }),
    );
    let resp = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .new_agent()
        .post(&url)
        .header("content-type", "application/json")
        .send(br#"{"approved": false, "note": "out of stock"}"#)
        .unwrap();
    assert_eq!(resp.status().as_u16(), 303);
    assert_eq!(
        resp.headers()["location"],
        "https://shop.example.com/thanks"
    );
    let doc = wait_for_run(&server, &run, &[]);
    assert!(
        doc.to_string().contains(r#"\"note\":\"out of stock\""#),
        "{doc}"
    );

    // The run is over (cancelled here): 410.
    let (run, url) = start(&server, &http, json!({ "order": 43 }));
    let (code, _) = must(
        "POST",
        &server.url(&format!("/api/runs/{run}/cancel")),
        &[],
        None,
    );
    assert_eq!(code, 200);
    let (code, body) = must(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!(code, 410, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Unknown or malformed tokens: 404, with no hint.
    for bad in [
        "0123456789abcdef0123456789abcdef",
        "short",
        "../api/workflows",
    ] {
        let (code, _) = must("GET", &server.url(&format!("/resume/{bad}")), &[], None);
        assert_eq!(code, 404, "{bad}");
    }
    server.kill();
}

#[test]
fn resume_links_use_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        &dir.path().join("s.db"),
        &["--public-url", "https://flows.example.com/"],
    );
    let (_, body) = must(
        "PUT",
        &server.url("/api/workflows/approve"),
        &[],
        Some(APPROVAL.as_bytes()),
    );
    let http = server.url(body["http_url"].as_str().unwrap());
    let (_, answer) = must(
        "POST",
        &http,
        &[("content-type", "application/json")],
        Some(b"{\"order\":1}"),
    );
    let url = answer["resumeUrl"].as_str().unwrap();
    assert!(
        url.starts_with("https://flows.example.com/resume/"),
        "{url}"
    );
    server.kill();
}

/// A wait survives SIGKILL, and so does an acknowledged resume: the branch
/// goes on after the restart, once.
#[test]
fn waits_and_resumes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = Server::start(&db, &[]);
    let (_, body) = must(
        "PUT",
        &server.url("/api/workflows/approve"),
        &[],
        Some(APPROVAL.as_bytes()),
    );
    let token_path = body["http_url"].as_str().unwrap().to_string();
    let (first, first_url) = start(&server, &server.url(&token_path), json!({ "order": 1 }));
    let (second, second_url) = start(&server, &server.url(&token_path), json!({ "order": 2 }));
    // The first is resumed and acknowledged; the server dies at once.
    let (code, _) = must(
        "POST",
        &first_url,
        &[("content-type", "application/json")],
        Some(b"{\"ok\":1}"),
    );
    assert_eq!(code, 200);
    server.kill();

    let server = Server::start(&db, &[]);
    let doc = wait_for_run(&server, &first, &[]);
    assert_eq!(doc["summary"]["status"], "completed", "{doc}");
    let decided: Vec<&Value> = doc["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "decide")
        .collect();
    assert_eq!(decided.len(), 1, "one branch, resumed once");
    assert!(
        doc.to_string()
            .contains(r#"decision {\"order\":1,\"ok\":1}"#),
        "{doc}"
    );
    // The second still waits, and its link (on the old address) still works.
    assert_eq!(status(&server, &second), "waiting");
    let path = &second_url[second_url.find("/resume/").unwrap()..];
    let (code, _) = must("GET", &server.url(&format!("{path}?ok=2")), &[], None);
    assert_eq!(code, 200);
    let doc = wait_for_run(&server, &second, &[]);
    assert!(doc.to_string().contains(r#"\"ok\":\"2\""#), "{doc}");
    server.kill();
}
