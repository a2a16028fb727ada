//! The JSON shapes of runs and steps, shared by the API and `flowstate run
//! --json` so both speak the same document (DESIGN.md 1.8).

use flowstate_core::executor::LogLine;
use flowstate_core::json::parse_stored;
use flowstate_store::{RunRecord, StepRecord};
use serde_json::{Value, json};

pub fn run_summary(run: &RunRecord) -> Value {
    json!({
        "run": run.id.to_string(),
        "workflow": run.workflow,
        "version": run.version.to_string(),
        "status": run.status,
        "error": run.error,
        "end_reason": run.end_reason,
        "steps": run.steps_total,
        "pending": run.pending,
        "started_at": run.created_at.to_string(),
        "finished_at": run.finished_at.map(|t| t.to_string()),
        "elapsed_ms": run.finished_at.map(|f| f.0 - run.created_at.0),
    })
}

fn logs_of(text: &str) -> Vec<LogLine> {
    serde_json::from_str(text).unwrap_or_default()
}

pub fn step_view(s: &StepRecord) -> Value {
    let mut logs = Vec::new();
    for a in &s.failed_attempts {
        for l in logs_of(&a.logs) {
            logs.push(json!({"attempt": a.attempt, "at": l.at.to_string(), "level": l.level, "message": l.message}));
        }
    }
    for l in logs_of(&s.logs) {
        logs.push(json!({"attempt": s.attempt, "at": l.at.to_string(), "level": l.level, "message": l.message}));
    }
    json!({
        "id": s.id.to_string(),
        "action": s.action,
        "kind": s.kind,
        "status": s.status,
        "attempts": s.attempt,
        "depth": s.depth,
        "due_at": s.due_at.to_string(),
        "started_at": s.started_at.map(|t| t.to_string()),
        "finished_at": s.finished_at.map(|t| t.to_string()),
        "duration_ms": s.duration_ms,
        "payload_bytes": s.payload_bytes,
        "error": s.error,
        "attempt_errors": s.failed_attempts.iter().map(|a| json!({"attempt": a.attempt, "error": a.error})).collect::<Vec<_>>(),
        "logs": logs,
    })
}

/// `{ summary, state, steps }`: the run, its state (at the end, or live),
/// and every step with its attempts and logs.
pub fn run_document(run: &RunRecord, steps: &[StepRecord], state: &[(String, String)]) -> Value {
    let state: serde_json::Map<String, Value> = state
        .iter()
        .map(|(k, v)| (k.clone(), parse_stored(v)))
        .collect();
    json!({
        "summary": run_summary(run),
        "state": state,
        "steps": steps
            .iter()
            .map(|s| {
                let mut v = step_view(s);
                // When the step started, from the run's start (e.g. "+1d").
                v["offset_ms"] = json!(s.started_at.map(|t| t.0 - run.created_at.0));
                v
            })
            .collect::<Vec<_>>(),
    })
}
