//! Runs: `GET /api/runs` (filters, pages), `GET /api/runs/<id>` (steps,
//! attempts, logs, errors, and the live run state while it runs), and
//! `POST /api/runs/<id>/cancel`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use flowstate_core::RunId;
use flowstate_core::executor::StepExecutor;
use flowstate_core::status::RunStatus;
use flowstate_store::{RunFilter, Store};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::view::{run_document, run_summary};
use crate::{ApiError, Shared};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<usize>,
    before: Option<String>,
}

fn parse_run(id: &str) -> Result<RunId, ApiError> {
    id.parse().map_err(ApiError::bad_request)
}

pub async fn list<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad run filter: {e}; accepted: workflow, status, limit, before"
        ))
    })?;
    let status = q
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(ApiError::bad_request)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_PAGE}, got {limit}"
        )));
    }
    let before = q.before.as_deref().map(parse_run).transpose()?;
    let runs = app
        .engine
        .store()
        .list_runs(RunFilter {
            workflow: q.workflow,
            status,
            before,
            limit,
        })
        .await?;
    let next = (runs.len() == limit)
        .then(|| runs.last().map(|r| r.id.to_string()))
        .flatten();
    Ok(Json(
        json!({ "runs": runs.iter().map(run_summary).collect::<Vec<_>>(), "next_before": next }),
    ))
}

pub async fn show<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run(&id)?;
    let store = app.engine.store();
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no run {id}")))?;
    let steps = store.steps(id).await?;
    // While the run is open its state is live; it is deleted at the end.
    let state = if run.finished_at.is_none() {
        store.run_state(id).await?
    } else {
        Vec::new()
    };
    Ok(Json(run_document(&run, &steps, &state)))
}

pub async fn cancel<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = parse_run(&id)?;
    let store = app.engine.store();
    let run = store
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no run {id}")))?;
    match app.engine.cancel(id).await? {
        Some(done) => Ok(Json(
            json!({ "run": id.to_string(), "status": done.status }),
        )),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {id} has already finished ({}); only unfinished runs can be cancelled",
                run.status
            ),
        )),
    }
}
