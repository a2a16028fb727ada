//! What the CLI prints about runs: a timeline for people, rendered from the
//! same JSON document the API serves and `--json` prints (DESIGN.md 1.8),
//! so `flowstate run` and `flowstate runs show` look alike.

use std::fmt::Write;
use std::time::Duration;

use flowstate_core::delay::format_duration;
use flowstate_core::json::human_bytes;
use flowstate_store::{RunRecord, StepRecord};
use serde_json::Value;

/// Rows shown before the timeline is cut short (the rest: --json).
const HEAD_ROWS: usize = 40;
const TAIL_ROWS: usize = 10;

/// `flowstate run --json`: the API's run document plus the wall time.
pub fn json_document(
    run: &RunRecord,
    steps: &[StepRecord],
    state: &[(String, String)],
    wall: Duration,
) -> Value {
    let mut doc = flowstate_server::view::run_document(run, steps, state);
    doc.summary.wall_ms = Some(wall.as_millis() as u64);
    serde_json::to_value(doc).expect("a run document serialises")
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn ms(v: &Value) -> Option<Duration> {
    v.as_i64().map(|m| Duration::from_millis(m.max(0) as u64))
}

/// The timeline of a run document; `clock` says how the time was spent.
pub fn timeline(doc: &Value, clock: Option<String>) -> String {
    let summary = &doc["summary"];
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} of workflow '{}'\n",
        text(&summary["run"]),
        text(&summary["workflow"])
    );
    let _ = writeln!(
        out,
        "  {:<10} {:<24} {:<10} {:>3} {:>5} {:>10} {:>9}",
        "step", "action", "status", "try", "depth", "at", "took"
    );
    let empty = Vec::new();
    let steps = doc["steps"].as_array().unwrap_or(&empty);
    let mut last = 0;
    for (i, s) in steps.iter().enumerate() {
        if steps.len() > HEAD_ROWS + TAIL_ROWS && i >= HEAD_ROWS && i < steps.len() - TAIL_ROWS {
            continue;
        }
        if i > last + 1 {
            let _ = writeln!(
                out,
                "  … {} more steps (use --json to see every step)",
                i - last - 1
            );
        }
        last = i;
        let at = ms(&s["offset_ms"])
            .map(|d| format!("+{}", format_duration(d)))
            .unwrap_or_else(|| "-".into());
        let took = match s["duration_ms"].as_u64() {
            Some(0) => "<1ms".to_string(),
            Some(d) => format!("{d}ms"),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<24} {:<10} {:>3} {:>5} {:>10} {:>9}",
            text(&s["id"]),
            truncate(&text(&s["action"]), 24),
            text(&s["status"]),
            text(&s["attempts"]),
            text(&s["depth"]),
            at,
            took
        );
        let attempt_errors = s["attempt_errors"].as_array().unwrap_or(&empty);
        for l in s["logs"].as_array().unwrap_or(&empty) {
            let _ = writeln!(
                out,
                "             {:<5} {}",
                text(&l["level"]),
                indent(&text(&l["message"]))
            );
        }
        for a in attempt_errors {
            let e = &a["error"];
            let _ = writeln!(
                out,
                "             retry attempt {} failed: {}: {}",
                text(&a["attempt"]),
                text(&e["name"]),
                indent(&text(&e["message"]))
            );
        }
        if s["error"].is_object() {
            let e = &s["error"];
            let _ = writeln!(
                out,
                "             error {}: {}",
                text(&e["name"]),
                indent(&text(&e["message"]))
            );
            if let Some(stack) = e["stack"].as_str() {
                for line in stack.lines().filter(|l| !l.trim().is_empty()).take(5) {
                    let _ = writeln!(out, "                   {}", line.trim());
                }
            }
        }
        if s["payload_bytes"].as_u64().is_some_and(|b| b > 1_500_000) {
            let bytes = s["payload_bytes"].as_u64().unwrap_or(0) as usize;
            let _ = writeln!(
                out,
                "             payload {} (kept in the blob store)",
                human_bytes(bytes)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nrun state{}:",
        if summary["finished_at"].is_null() {
            " (live)"
        } else {
            " at the end"
        }
    );
    match doc["state"].as_object() {
        Some(state) if !state.is_empty() => {
            for (k, v) in state {
                let _ = writeln!(out, "  {k} = {}", truncate(&v.to_string(), 200));
            }
        }
        _ => {
            let _ = writeln!(out, "  (empty)");
        }
    }
    let clock = clock.unwrap_or_else(|| match ms(&summary["elapsed_ms"]) {
        Some(d) => format!("in {}", format_duration(d)),
        None => "so far".into(),
    });
    let _ = writeln!(
        out,
        "\n{}: {} steps {clock}",
        text(&summary["status"]),
        text(&summary["steps"])
    );
    if summary["error"].is_object() {
        let e = &summary["error"];
        let _ = writeln!(
            out,
            "  failed because {}: {}",
            text(&e["name"]),
            text(&e["message"])
        );
    }
    if let Some(reason) = summary["end_reason"].as_str() {
        let _ = writeln!(
            out,
            "  ended: {}",
            if reason.is_empty() {
                "(no reason given)"
            } else {
                reason
            }
        );
    }
    out
}

/// One line per log line of a run, oldest first: `step attempt level message`.
pub fn logs(doc: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    for s in doc["steps"].as_array().unwrap_or(&empty) {
        for l in s["logs"].as_array().unwrap_or(&empty) {
            let _ = writeln!(
                out,
                "{} {:<10} {:<20} #{} {:<5} {}",
                text(&l["at"]),
                text(&s["id"]),
                truncate(&text(&s["action"]), 20),
                text(&l["attempt"]),
                text(&l["level"]),
                text(&l["message"])
            );
        }
    }
    out
}

pub fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    cut + "…"
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n                   ")
}
