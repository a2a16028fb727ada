//! The JSON shapes of the API (and of `flowstate run --json`), as types, so
//! the OpenAPI document is derived from the same code that answers.

use flowstate_core::executor::{LogLine, StepError};
use flowstate_core::json::parse_stored;
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_store::{RunRecord, StepRecord};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// A run at a glance.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunSummary {
    /// e.g. `run_12`
    pub run: String,
    pub workflow: String,
    /// The workflow version the run uses to its end, e.g. `ver_3`.
    pub version: String,
    /// queued, running, waiting, completed, failed, ended or cancelled
    #[schema(value_type = String)]
    pub status: RunStatus,
    /// The failure that failed the run (name, message, stack, kind).
    #[schema(value_type = Option<Object>)]
    pub error: Option<StepError>,
    /// The reason given to `$end`, for ended runs.
    pub end_reason: Option<String>,
    /// Steps created so far.
    pub steps: u64,
    /// Steps not yet finished.
    pub pending: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub elapsed_ms: Option<i64>,
    /// Wall time of a local `flowstate run` (only there).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wall_ms: Option<u64>,
}

/// One line a step logged.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogView {
    pub attempt: u32,
    pub at: String,
    /// log, info, warn or error
    pub level: String,
    pub message: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptError {
    pub attempt: u32,
    #[schema(value_type = Option<Object>)]
    pub error: Option<StepError>,
}

/// A step with its attempts, logs and outcome.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepView {
    /// e.g. `step_40`
    pub id: String,
    pub action: String,
    /// action, complete_hook, error_hook or wait_timeout
    #[schema(value_type = String)]
    pub kind: StepKind,
    /// queued, pending, waiting, running, done, failed, ended, timed_out or cancelled
    #[schema(value_type = String)]
    pub status: StepStatus,
    /// Attempts so far (1 unless retried).
    pub attempts: u32,
    pub depth: u32,
    pub due_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// When it started, from the run's start.
    pub offset_ms: Option<i64>,
    pub duration_ms: Option<u64>,
    pub payload_bytes: u64,
    #[schema(value_type = Option<Object>)]
    pub error: Option<StepError>,
    /// Errors of earlier attempts that were retried.
    pub attempt_errors: Vec<AttemptError>,
    pub logs: Vec<LogView>,
}

/// A run with its state (at the end, or live while it runs) and its steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunDocument {
    pub summary: RunSummary,
    /// Run state: every key and its value.
    #[schema(value_type = Object)]
    pub state: serde_json::Map<String, Value>,
    pub steps: Vec<StepView>,
}

pub fn run_summary(run: &RunRecord) -> RunSummary {
    RunSummary {
        run: run.id.to_string(),
        workflow: run.workflow.clone(),
        version: run.version.to_string(),
        status: run.status,
        error: run.error.clone(),
        end_reason: run.end_reason.clone(),
        steps: run.steps_total,
        pending: run.pending,
        started_at: run.created_at.to_string(),
        finished_at: run.finished_at.map(|t| t.to_string()),
        elapsed_ms: run.finished_at.map(|f| f.0 - run.created_at.0),
        wall_ms: None,
    }
}

fn logs_of(attempt: u32, text: &str) -> impl Iterator<Item = LogView> {
    serde_json::from_str::<Vec<LogLine>>(text)
        .unwrap_or_default()
        .into_iter()
        .map(move |l| LogView {
            attempt,
            at: l.at.to_string(),
            level: serde_json::to_value(l.level)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            message: l.message,
        })
}

pub fn step_view(run: &RunRecord, s: &StepRecord) -> StepView {
    let mut logs: Vec<LogView> = s
        .failed_attempts
        .iter()
        .flat_map(|a| logs_of(a.attempt, &a.logs))
        .collect();
    logs.extend(logs_of(s.attempt, &s.logs));
    StepView {
        id: s.id.to_string(),
        action: s.action.clone(),
        kind: s.kind,
        status: s.status,
        attempts: s.attempt,
        depth: s.depth,
        due_at: s.due_at.to_string(),
        started_at: s.started_at.map(|t| t.to_string()),
        finished_at: s.finished_at.map(|t| t.to_string()),
        offset_ms: s.started_at.map(|t| t.0 - run.created_at.0),
        duration_ms: s.duration_ms,
        payload_bytes: s.payload_bytes,
        error: s.error.clone(),
        attempt_errors: s
            .failed_attempts
            .iter()
            .map(|a| AttemptError {
                attempt: a.attempt,
                error: a.error.clone(),
            })
            .collect(),
        logs,
    }
}

/// `{ summary, state, steps }` (DESIGN.md 1.8).
pub fn run_document(
    run: &RunRecord,
    steps: &[StepRecord],
    state: &[(String, String)],
) -> RunDocument {
    RunDocument {
        summary: run_summary(run),
        state: state
            .iter()
            .map(|(k, v)| (k.clone(), parse_stored(v)))
            .collect(),
        steps: steps.iter().map(|s| step_view(run, s)).collect(),
    }
}
