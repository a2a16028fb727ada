//! `env` and secrets end to end: set by CLI, API and deploy settings;
//! secrets sealed at rest (not in the database file), never returned,
//! redacted from logs; the Shopify token added by `fetch` to the store's
//! Admin API only.

use serde_json::{Value, json};

mod common;
use common::*;

const KEY: &str = "8f3c2a1b0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a";

const SHOP: &str = "class Workflow {
    async start(data, headers, api) {
        api.log('greeting', env.GREETING, 'key', env.API_KEY);
        const admin = await (await fetch(`http://${env.SHOPIFY_STORE}/admin/api/${env.SHOPIFY_API_VERSION}/shop.json`)).json();
        const other = await (await fetch(`http://${env.SHOPIFY_STORE}/storefront`)).json();
        const elsewhere = await (await fetch(data.elsewhere + '/admin/x')).json();
        return {
            names: Object.keys(env).sort(),
            token: typeof env.SHOPIFY_ACCESS_TOKEN,
            admin: admin.headers['x-shopify-access-token'] ?? null,
            adminPath: admin.path,
            other: other.headers['x-shopify-access-token'] ?? null,
            elsewhere: elsewhere.headers['x-shopify-access-token'] ?? null,
            keyLength: env.API_KEY.length,
        };
    }
}";

#[test]
fn variables_and_secrets_reach_the_code_but_never_the_outside() {
    let shop = echo_server();
    let elsewhere = echo_server();
    let store = shop.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("s.db");
    let server = Server::start(&db, &["--secret-key", KEY]);
    let deploy = json!({
        "source": SHOP,
        "settings": {
            "env": { "SHOPIFY_STORE": store, "SHOPIFY_API_VERSION": "2025-01" },
            "secrets": { "SHOPIFY_ACCESS_TOKEN": "shpat_0123456789abcdef" },
        },
    });
    let (status, body) = must(
        "PUT",
        &server.url("/api/workflows/shop"),
        &[("content-type", "application/json")],
        Some(deploy.to_string().as_bytes()),
    );
    assert_eq!(status, 201, "{body}");
    assert!(
        !body.to_string().contains("shpat_"),
        "settings never show secrets: {body}"
    );
    let http = server.url(body["http_url"].as_str().unwrap());

    // The CLI sets a variable and a secret.
    let out = cli(&server, &["env", "set", "shop", "GREETING=hello world"]);
    assert!(out.status.success(), "{out:?}");
    let out = cli(
        &server,
        &[
            "env",
            "set",
            "shop",
            "API_KEY=sk_live_supersecret",
            "--secret",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let out = cli(&server, &["env", "list", "shop"]);
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listed.contains("GREETING=hello world"), "{listed}");
    assert!(
        listed.contains("API_KEY (secret)") && !listed.contains("sk_live"),
        "{listed}"
    );
    let (_, vars) = must("GET", &server.url("/api/workflows/shop/env"), &[], None);
    assert!(
        !vars.to_string().contains("sk_live") && !vars.to_string().contains("shpat_"),
        "{vars}"
    );

    let resp = agent()
        .post(&http)
        .header("content-type", "application/json")
        .send(json!({ "elsewhere": elsewhere }).to_string().as_bytes())
        .unwrap();
    let run = resp.headers()["x-flowstate-run"]
        .to_str()
        .unwrap()
        .to_string();
    let answer: Value = serde_json::from_str(&resp.into_body().read_to_string().unwrap()).unwrap();
    assert_eq!(
        answer,
        json!({
            "names": ["API_KEY", "GREETING", "SHOPIFY_API_VERSION", "SHOPIFY_STORE"],
            "token": "undefined",
            "admin": "shpat_0123456789abcdef",
            "adminPath": "/admin/api/2025-01/shop.json",
            "other": null,
            "elsewhere": null,
            "keyLength": 19,
        })
    );
    // The log line printed the secret: the history keeps it redacted.
    let doc = wait_for_run(&server, &run, &[]);
    let log = doc["steps"][0]["logs"][0]["message"].as_str().unwrap();
    assert_eq!(log, "greeting hello world key [redacted]");
    server.kill();

    // Sealed at rest: the database file holds neither secret in the clear.
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(dir.path().join("s.db-wal")) {
        bytes.extend(wal);
    }
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains("hello world"),
        "control: plain variables are in the file"
    );
    assert!(!text.contains("sk_live_supersecret") && !text.contains("shpat_0123"));

    // Without the key, secrets cannot be opened: the step says why.
    let server = Server::start(&db, &["--max-retries", "0"]);
    let resp = agent()
        .post(&http.replace(&http[..http.find("/http/").unwrap()], &server.base))
        .header("content-type", "application/json")
        .send(b"{}")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 500);
    let body = resp.into_body().read_to_string().unwrap();
    assert!(body.contains("no --secret-key"), "{body}");
    server.kill();
}

#[test]
fn bad_variables_are_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("s.db"), &[]);
    let (status, _) = must(
        "PUT",
        &server.url("/api/workflows/w"),
        &[],
        Some(b"class Workflow { async start() {} }"),
    );
    assert_eq!(status, 201);
    let put = |name: &str, body: Value| {
        must(
            "PUT",
            &server.url(&format!("/api/workflows/w/env/{name}")),
            &[("content-type", "application/json")],
            Some(body.to_string().as_bytes()),
        )
    };
    let (status, body) = put("1BAD", json!({ "value": "x" }));
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("not a valid variable name"),
        "{body}"
    );
    let (status, body) = put("TOKEN", json!({ "value": "x", "secret": true }));
    assert_eq!(status, 400, "no key, no secrets");
    assert!(
        body["error"].as_str().unwrap().contains("--secret-key"),
        "{body}"
    );
    let (status, _) = put("BIG", json!({ "value": "x".repeat(64 * 1024 + 1) }));
    assert_eq!(status, 413);
    let (status, _) = put("OK", json!({ "value": "x".repeat(64 * 1024) }));
    assert_eq!(status, 200, "at the limit");
    let (status, _) = must(
        "PUT",
        &server.url("/api/workflows/ghost/env/A"),
        &[],
        Some(b"{\"value\":\"1\"}"),
    );
    assert_eq!(status, 404);
    let (status, _) = must(
        "DELETE",
        &server.url("/api/workflows/w/env/NOPE"),
        &[],
        None,
    );
    assert_eq!(status, 404);
    let (status, _) = must("DELETE", &server.url("/api/workflows/w/env/OK"), &[], None);
    assert_eq!(status, 204);
    let (_, vars) = must("GET", &server.url("/api/workflows/w/env"), &[], None);
    assert_eq!(vars["vars"], json!([]), "refused writes recorded nothing");
    server.kill();
}
