//! The client commands (`deploy`, `trigger`, `runs ...`): the management API
//! over HTTP, readable tables by default, the server's JSON with `--json`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use crate::args::{ClientArgs, DeployArgs, RunArgsId, RunsCommand, RunsListArgs, TriggerArgs};
use crate::render;

pub(crate) struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub(crate) fn new(args: &ClientArgs) -> Self {
        Client {
            base: args.server.trim_end_matches('/').to_string(),
            token: args.api_token.clone(),
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_global(Some(Duration::from_secs(60)))
                .build()
                .into(),
        }
    }

    /// Sends a request; a refused one becomes an error with the server's message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.base);
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        macro_rules! prepare {
            ($req:expr) => {{
                let mut r = $req;
                if let Some(a) = &auth {
                    r = r.header("authorization", a.as_str());
                }
                r
            }};
        }
        let result = match method {
            "GET" => prepare!(self.agent.get(&url)).call(),
            "DELETE" => prepare!(self.agent.delete(&url)).call(),
            _ => {
                let r = match method {
                    "PUT" => prepare!(self.agent.put(&url)),
                    _ => prepare!(self.agent.post(&url)),
                }
                .header("content-type", content_type);
                match body {
                    Some(b) => r.send(b),
                    None => r.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(|e| {
            anyhow::anyhow!(
                "cannot reach the flowstate server at {}: {e}; start one with `flowstate serve`, or point --server (or FLOWSTATE_SERVER) at it",
                self.base
            )
        })?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status >= 400 {
            let message = value["error"].as_str().map(str::to_string).unwrap_or(text);
            let mut position = String::new();
            if let (Some(l), Some(c)) = (value["line"].as_u64(), value["column"].as_u64()) {
                position = format!(" (line {l}, column {c})");
            }
            bail!("the server refused ({status}): {message}{position}");
        }
        Ok(value)
    }
}

pub(crate) fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

pub(crate) fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the workflow file {}", args.file.display()))?;
    let name = match args.name {
        Some(n) => n,
        None => workflow_name(&args.file)?,
    };
    let client = Client::new(&args.client);
    let q = query(&[
        ("webhook_secret", args.webhook_secret),
        ("signature", args.signature),
        ("signature_header", args.signature_header),
        ("dedupe_header", args.dedupe_header),
        ("concurrency", args.concurrency.map(|n| n.to_string())),
        ("concurrency_key", args.concurrency_key),
        ("throttle", args.throttle.map(|n| n.to_string())),
        ("throttle_period", args.throttle_period),
    ]);
    let v = client.call(
        "PUT",
        &format!("/api/workflows/{}{q}", encode(&name)),
        "application/javascript",
        Some(source.as_bytes()),
    )?;
    if args.client.json {
        print_json(&v)?;
    } else {
        println!(
            "deployed {} as {}",
            name,
            v["version"].as_str().unwrap_or("?")
        );
        println!(
            "  steps:   {}",
            v["actions"]
                .as_array()
                .map(|a| a
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        );
        println!(
            "  webhook: POST {}{}",
            client.base,
            v["webhook_url"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn workflow_name(file: &Path) -> anyhow::Result<String> {
    match file.file_stem().and_then(|s| s.to_str()) {
        Some(stem) if !stem.is_empty() => Ok(stem.to_string()),
        _ => bail!(
            "cannot name a workflow after {}: pass --name",
            file.display()
        ),
    }
}

pub fn trigger(args: TriggerArgs) -> anyhow::Result<ExitCode> {
    let data: Value = match &args.data {
        None => json!({}),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the data file {}", path.display()))?;
            serde_json::from_str(&text)
                .map_err(|e| anyhow::anyhow!("the data file {} is not JSON: {e}", path.display()))?
        }
    };
    let headers: Map<String, Value> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let client = Client::new(&args.client);
    let body = json!({ "data": data, "headers": headers }).to_string();
    let created = client.call(
        "POST",
        &format!("/api/workflows/{}/runs", encode(&args.workflow)),
        "application/json",
        Some(body.as_bytes()),
    )?;
    let run = created["run"].as_str().unwrap_or_default().to_string();
    if !args.wait {
        if args.client.json {
            print_json(&created)?;
        } else {
            println!("started {run}; follow it with `flowstate runs show {run}`");
        }
        return Ok(ExitCode::SUCCESS);
    }
    let doc = loop {
        let doc = client.call("GET", &format!("/api/runs/{run}"), "", None)?;
        if !doc["summary"]["finished_at"].is_null() {
            break doc;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    if args.client.json {
        print_json(&doc)?;
    } else {
        print!("{}", render::timeline(&doc, None));
    }
    Ok(if doc["summary"]["status"] == "completed" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The run named on the command line, as the API shows it.
fn run_document(a: &RunArgsId) -> anyhow::Result<Value> {
    Client::new(&a.client).call("GET", &format!("/api/runs/{}", encode(&a.run)), "", None)
}

pub fn runs(command: RunsCommand) -> anyhow::Result<ExitCode> {
    match command {
        RunsCommand::List(a) => list(a),
        RunsCommand::Show(a) => {
            let doc = run_document(&a)?;
            if a.client.json {
                print_json(&doc)?;
            } else {
                print!("{}", render::timeline(&doc, None));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Logs(a) => {
            let doc = run_document(&a)?;
            if a.client.json {
                let logs: Vec<Value> = doc["steps"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| {
                        s["logs"]
                            .as_array()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .map(move |mut l| {
                                l["step"] = s["id"].clone();
                                l["action"] = s["action"].clone();
                                l
                            })
                    })
                    .collect();
                print_json(&Value::Array(logs))?;
            } else {
                print!("{}", render::logs(&doc));
            }
            Ok(ExitCode::SUCCESS)
        }
        RunsCommand::Cancel(a) => {
            let v = Client::new(&a.client).call(
                "POST",
                &format!("/api/runs/{}/cancel", encode(&a.run)),
                "application/json",
                None,
            )?;
            if a.client.json {
                print_json(&v)?;
            } else {
                println!("{} cancelled", v["run"].as_str().unwrap_or(&a.run));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn list(a: RunsListArgs) -> anyhow::Result<ExitCode> {
    let q = query(&[
        ("workflow", a.workflow.clone()),
        ("status", a.status.clone()),
        ("limit", Some(a.limit.to_string())),
        ("before", a.before.clone()),
    ]);
    let v = Client::new(&a.client).call("GET", &format!("/api/runs{q}"), "", None)?;
    if a.client.json {
        print_json(&v)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<10} {:<20} {:<10} {:>6} {:>8}  {:<24}  finished",
        "run", "workflow", "status", "steps", "pending", "started"
    );
    for r in v["runs"].as_array().into_iter().flatten() {
        println!(
            "{:<10} {:<20} {:<10} {:>6} {:>8}  {:<24}  {}",
            r["run"].as_str().unwrap_or("-"),
            render::truncate(r["workflow"].as_str().unwrap_or("-"), 20),
            r["status"].as_str().unwrap_or("-"),
            r["steps"].to_string(),
            r["pending"].to_string(),
            r["started_at"].as_str().unwrap_or("-"),
            r["finished_at"].as_str().unwrap_or("-"),
        );
    }
    if let Some(next) = v["next_before"].as_str() {
        println!("(more: --before {next})");
    }
    Ok(ExitCode::SUCCESS)
}
