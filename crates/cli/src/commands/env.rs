//! `flowstate env set|unset|list <workflow>`: a workflow's variables and
//! secrets through the management API. Secret values go to the server,
//! which seals them; they are never printed back.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::args::EnvCommand;
use crate::commands::client::{Client, encode, print_json};

pub fn run(command: EnvCommand) -> anyhow::Result<ExitCode> {
    match command {
        EnvCommand::Set {
            workflow,
            assignment,
            secret,
            client,
        } => {
            let Some((name, value)) = assignment.split_once('=') else {
                bail!("write the variable as NAME=VALUE, e.g. SLACK_CHANNEL=#orders");
            };
            let value = if value == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read the value from stdin")?;
                s.trim_end_matches(['\n', '\r']).to_string()
            } else {
                value.to_string()
            };
            let body = json!({ "value": value, "secret": secret }).to_string();
            let v = Client::new(&client).call(
                "PUT",
                &format!("/api/workflows/{}/env/{}", encode(&workflow), encode(name)),
                "application/json",
                Some(body.as_bytes()),
            )?;
            if client.json {
                print_json(&v)?;
            } else {
                let kind = if secret { "secret" } else { "variable" };
                println!("set {kind} {name} for {workflow}");
            }
        }
        EnvCommand::Unset {
            workflow,
            name,
            client,
        } => {
            Client::new(&client).call(
                "DELETE",
                &format!("/api/workflows/{}/env/{}", encode(&workflow), encode(&name)),
                "application/json",
                None,
            )?;
            if !client.json {
                println!("removed {name} from {workflow}");
            }
        }
        EnvCommand::List { workflow, client } => {
            let v = Client::new(&client).call(
                "GET",
                &format!("/api/workflows/{}/env", encode(&workflow)),
                "application/json",
                None,
            )?;
            if client.json {
                print_json(&v)?;
            } else {
                for var in v["vars"].as_array().into_iter().flatten() {
                    let name = var["name"].as_str().unwrap_or_default();
                    match &var["value"] {
                        Value::String(value) => println!("{name}={value}"),
                        _ => println!("{name} (secret)"),
                    }
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
