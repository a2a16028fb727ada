//! Runs: `GET /api/runs` (filters, pages), `GET /api/runs/<id>` (steps,
//! attempts, logs, errors, and the live run state while it runs), and
//! `POST /api/runs/<id>/cancel`.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use flowstate_core::RunId;
use flowstate_core::executor::StepExecutor;
use flowstate_core::status::RunStatus;
use flowstate_store::{RunFilter, RunRecord, Store};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::view::{RunDocument, RunSummary, run_document, run_summary};
use crate::{ApiError, Shared};

const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 1000;

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only runs of this workflow.
    workflow: Option<String>,
    /// Only runs with this status.
    status: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    limit: Option<usize>,
    /// Only runs older than this one: the previous page's `next_before`.
    before: Option<String>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
    /// Pass as `before` for the next page; null on the last page.
    pub next_before: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub run: String,
    #[schema(value_type = String)]
    pub status: RunStatus,
}

fn parse_run(id: &str) -> Result<RunId, ApiError> {
    id.parse().map_err(ApiError::bad_request)
}

/// The run named in the path, or a 400 / 404 that says why not.
async fn find_run<S: Store, E: StepExecutor>(
    app: &Shared<S, E>,
    id: &str,
) -> Result<RunRecord, ApiError> {
    let id = parse_run(id)?;
    app.engine
        .store()
        .run(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("there is no run {id}")))
}

#[utoipa::path(get, path = "/api/runs", params(ListQuery), tag = "runs",
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody, description = "a bad filter")))]
pub async fn list<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<RunList>, ApiError> {
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
    Ok(Json(RunList {
        runs: runs.iter().map(run_summary).collect(),
        next_before: next,
    }))
}

#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "the run, e.g. run_12")),
    responses((status = 200, body = RunDocument, description = "the run, its steps with attempts and logs, and its state while it runs"),
        (status = 404, body = ErrorBody)))]
pub async fn show<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(id): Path<String>,
) -> Result<Json<RunDocument>, ApiError> {
    let run = find_run(&app, &id).await?;
    let (id, store) = (run.id, app.engine.store());
    let steps = store.steps(id).await?;
    // While the run is open its state is live; it is deleted at the end.
    let state = if run.finished_at.is_none() {
        store.run_state(id).await?
    } else {
        Vec::new()
    };
    Ok(Json(run_document(&run, &steps, &state)))
}

#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "the run, e.g. run_12")),
    responses((status = 200, body = Cancelled), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody, description = "the run had already finished")))]
pub async fn cancel<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, ApiError> {
    let run = find_run(&app, &id).await?;
    let id = run.id;
    match app.engine.cancel(id).await? {
        Some(done) => Ok(Json(Cancelled {
            run: id.to_string(),
            status: done.status,
        })),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {id} has already finished ({}); only unfinished runs can be cancelled",
                run.status
            ),
        )),
    }
}
