//! What `flowstate run` prints: a timeline for people, one JSON document
//! (DESIGN.md 1.8) for programs.

use std::fmt::Write;
use std::time::Duration;

use flowstate_core::delay::format_duration;
use flowstate_core::executor::LogLine;
use flowstate_core::json::human_bytes;
use flowstate_store::{RunRecord, StepRecord};
use serde_json::{Value, json};

/// Rows shown before the timeline is cut short (the rest: --json).
const HEAD_ROWS: usize = 40;
const TAIL_ROWS: usize = 10;

fn logs_of(text: &str) -> Vec<LogLine> {
    serde_json::from_str(text).unwrap_or_default()
}

/// `flowstate run --json`: the API's run document plus the wall time.
pub fn json_document(
    run: &RunRecord,
    steps: &[StepRecord],
    state: &[(String, String)],
    wall: Duration,
) -> Value {
    let mut doc = flowstate_server::view::run_document(run, steps, state);
    doc["summary"]["wall_ms"] = json!(wall.as_millis() as u64);
    doc
}

pub fn timeline(
    run: &RunRecord,
    steps: &[StepRecord],
    state: &[(String, String)],
    wall: Duration,
    virtual_time: bool,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} of workflow '{}'\n", run.id, run.workflow);
    let _ = writeln!(
        out,
        "  {:<10} {:<24} {:<10} {:>3} {:>5} {:>10} {:>9}",
        "step", "action", "status", "try", "depth", "at", "took"
    );
    let shown: Vec<(usize, &StepRecord)> = if steps.len() > HEAD_ROWS + TAIL_ROWS {
        steps
            .iter()
            .enumerate()
            .filter(|(i, _)| *i < HEAD_ROWS || *i >= steps.len() - TAIL_ROWS)
            .collect()
    } else {
        steps.iter().enumerate().collect()
    };
    let mut last = 0;
    for (i, s) in shown {
        if i > last + 1 {
            let _ = writeln!(
                out,
                "  … {} more steps (use --json to see every step)",
                i - last - 1
            );
        }
        last = i;
        let at = s
            .started_at
            .map(|t| format!("+{}", format_duration(t.since(run.created_at))))
            .unwrap_or_else(|| "-".into());
        let took = s
            .duration_ms
            .map(|d| format!("{d}ms"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "  {:<10} {:<24} {:<10} {:>3} {:>5} {:>10} {:>9}",
            s.id.to_string(),
            truncate(&s.action, 24),
            s.status.as_str(),
            s.attempt,
            s.depth,
            at,
            took
        );
        for a in &s.failed_attempts {
            for l in logs_of(&a.logs) {
                let _ = writeln!(
                    out,
                    "             {:<5} {}",
                    format!("{:?}", l.level).to_lowercase(),
                    indent(&l.message)
                );
            }
            if let Some(e) = &a.error {
                let _ = writeln!(
                    out,
                    "             retry attempt {} failed: {}: {}",
                    a.attempt,
                    e.name,
                    indent(&e.message)
                );
            }
        }
        for l in logs_of(&s.logs) {
            let _ = writeln!(
                out,
                "             {:<5} {}",
                format!("{:?}", l.level).to_lowercase(),
                indent(&l.message)
            );
        }
        if let Some(e) = &s.error {
            let _ = writeln!(out, "             error {}: {}", e.name, indent(&e.message));
            if let Some(stack) = &e.stack {
                for line in stack.lines().filter(|l| !l.trim().is_empty()).take(5) {
                    let _ = writeln!(out, "                   {}", line.trim());
                }
            }
        }
        if s.payload_bytes > 1_500_000 {
            let _ = writeln!(
                out,
                "             payload {} (kept in the blob store)",
                human_bytes(s.payload_bytes as usize)
            );
        }
    }
    let _ = writeln!(out, "\nrun state at the end:");
    if state.is_empty() {
        let _ = writeln!(out, "  (empty)");
    }
    for (k, v) in state {
        let _ = writeln!(out, "  {k} = {}", truncate(v, 200));
    }
    let elapsed = run
        .finished_at
        .map(|f| f.since(run.created_at))
        .unwrap_or_default();
    let clock = if virtual_time {
        format!(
            "{} of workflow time in {} (fast-forward)",
            format_duration(elapsed),
            format_duration(wall)
        )
    } else {
        format!("in {}", format_duration(wall))
    };
    let _ = writeln!(out, "\n{}: {} steps {clock}", run.status, run.steps_total);
    if let Some(e) = &run.error {
        let _ = writeln!(out, "  failed because {}: {}", e.name, e.message);
    }
    if let Some(reason) = &run.end_reason {
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

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max - 1).collect();
    cut + "…"
}

fn indent(s: &str) -> String {
    s.replace('\n', "\n                   ")
}
