//! `flowstate checkpoint get|set|clear <workflow> [--step METHOD]`: a
//! workflow's `$checkpoint` through the management API.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::Value;

use crate::args::{CheckpointArgs, CheckpointCommand};
use crate::commands::client::{Client, encode, print_json, query};

pub fn run(command: CheckpointCommand) -> anyhow::Result<ExitCode> {
    let (target, method, body) = match command {
        CheckpointCommand::Get(t) => (t, "GET", None),
        CheckpointCommand::Clear(t) => (t, "DELETE", None),
        CheckpointCommand::Set { target, value } => {
            let text = if value == "-" {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read the value from stdin")?;
                s
            } else {
                value
            };
            serde_json::from_str::<Value>(&text).with_context(|| {
                format!("the value must be JSON (a string needs quotes: '\"text\"'); got {text}")
            })?;
            (target, "PUT", Some(text))
        }
    };
    let path = format!(
        "/api/workflows/{}/checkpoint{}",
        encode(&target.workflow),
        query(&[("step", target.step.clone())])
    );
    let v = Client::new(&target.client).call(
        method,
        &path,
        "application/json",
        body.as_deref().map(str::as_bytes),
    )?;
    if target.client.json {
        print_json(&v)?;
    } else {
        print!("{}", describe(&target, &v));
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(target: &CheckpointArgs, v: &Value) -> String {
    let name = match &target.step {
        Some(step) => format!("this.$checkpoint of {}.{step}", target.workflow),
        None => format!("$checkpoint of {}", target.workflow),
    };
    if v["set"] == Value::Bool(true) {
        let value = serde_json::to_string_pretty(&v["value"]).unwrap_or_default();
        format!("{value}\n")
    } else {
        format!("{name} is not set (undefined)\n")
    }
}
