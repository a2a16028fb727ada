//! `GET|PUT|DELETE /api/workflows/<name>/checkpoint[?step=<method>]`: look
//! at, edit or clear a workflow's `$checkpoint` (or a step's
//! `this.$checkpoint`) from outside its runs. A write from here bumps the
//! checkpoint's version, so a step that read the old value conflicts and
//! runs again on the new one.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use flowstate_core::checkpoint::{self, Checkpoint, WORKFLOW_SCOPE};
use flowstate_core::executor::{COMPLETE_HOOK, ERROR_HOOK, START, StepExecutor};
use flowstate_store::Store;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use crate::{ApiError, Shared};

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CheckpointQuery {
    /// A step method: its `this.$checkpoint` instead of the workflow's `$checkpoint`.
    step: Option<String>,
}

/// A checkpoint as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointView {
    pub workflow: String,
    /// The step method, or null for the workflow's `$checkpoint`.
    pub step: Option<String>,
    /// False while it is `undefined` (never set, or cleared).
    pub set: bool,
    /// The value; null when not set.
    #[schema(value_type = Object)]
    pub value: serde_json::Value,
    /// Bumped by every write.
    pub version: i64,
}

fn view(workflow: String, step: Option<String>, cp: Checkpoint) -> CheckpointView {
    CheckpointView {
        workflow,
        step,
        set: cp.value.is_some(),
        value: cp
            .value
            .as_deref()
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or(serde_json::Value::Null),
        version: cp.version,
    }
}

/// The scope named by the query, checked against the deployed workflow.
async fn scope<S: Store, E: StepExecutor>(
    app: &Shared<S, E>,
    name: &str,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Option<String>, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::bad_request(format!("bad checkpoint query: {e}; accepted: step")))?;
    let store = app.engine.store();
    let record = crate::workflows::deployed(app, name).await?;
    let Some(step) = q.step else {
        return Ok(None);
    };
    let info = store.version(record.version).await?.info;
    let known =
        [START, COMPLETE_HOOK, ERROR_HOOK].contains(&step.as_str()) || info.actions.contains(&step);
    if !known {
        let mut methods = vec![START.to_string()];
        methods.extend(info.actions);
        return Err(ApiError::not_found(format!(
            "workflow '{name}' has no step method '{step}'; its steps are {}",
            methods.join(", ")
        )));
    }
    Ok(Some(step))
}

#[utoipa::path(get, path = "/api/workflows/{name}/checkpoint", params(("name" = String, Path), CheckpointQuery), tag = "workflows",
    responses((status = 200, body = CheckpointView), (status = 404, body = ErrorBody, description = "no such workflow or step")))]
pub async fn get<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CheckpointView>, ApiError> {
    let step = scope(&app, &name, query).await?;
    let key = step.clone().unwrap_or_else(|| WORKFLOW_SCOPE.into());
    let cp = app.engine.store().checkpoint(name.clone(), key).await?;
    Ok(Json(view(name, step, cp)))
}

#[utoipa::path(put, path = "/api/workflows/{name}/checkpoint", params(("name" = String, Path), CheckpointQuery), tag = "workflows",
    request_body(content = Object, description = "the new value, any JSON", content_type = "application/json"),
    responses((status = 200, body = CheckpointView), (status = 400, body = ErrorBody, description = "not JSON"),
        (status = 413, body = ErrorBody, description = "over 64 KB"), (status = 404, body = ErrorBody)))]
pub async fn put<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
    body: Bytes,
) -> Result<Json<CheckpointView>, ApiError> {
    let step = scope(&app, &name, query).await?;
    let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the checkpoint must be JSON ({e}); to clear it, send DELETE instead"
        ))
    })?;
    let text = value.to_string();
    let scope_name = step.clone().unwrap_or_else(|| WORKFLOW_SCOPE.into());
    checkpoint::check_size(&checkpoint::describe_scope(&scope_name), &text)
        .map_err(|m| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, m))?;
    let now = app.engine.clock().now();
    let cp = app
        .engine
        .store()
        .put_checkpoint(name.clone(), scope_name, Some(text), now)
        .await?;
    Ok(Json(view(name, step, cp)))
}

#[utoipa::path(delete, path = "/api/workflows/{name}/checkpoint", params(("name" = String, Path), CheckpointQuery), tag = "workflows",
    responses((status = 200, body = CheckpointView, description = "cleared: undefined again"), (status = 404, body = ErrorBody)))]
pub async fn clear<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    query: Result<Query<CheckpointQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<CheckpointView>, ApiError> {
    let step = scope(&app, &name, query).await?;
    let scope_name = step.clone().unwrap_or_else(|| WORKFLOW_SCOPE.into());
    let now = app.engine.clock().now();
    let cp = app
        .engine
        .store()
        .put_checkpoint(name.clone(), scope_name, None, now)
        .await?;
    Ok(Json(view(name, step, cp)))
}
