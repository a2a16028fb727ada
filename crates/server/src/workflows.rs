//! Deploying and managing workflows: `PUT|GET|DELETE /api/workflows/<name>`
//! and `GET /api/workflows`. Every deploy compiles the source first; one
//! that does not load is refused with the JS error and its line, and the
//! live version stays.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use flowstate_core::executor::StepExecutor;
use flowstate_store::{Store, WorkflowRecord};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::ErrorBody;
use serde_json::Value;

use crate::settings::{SignatureScheme, WorkflowSettings};
use crate::triggers::read_body;
use crate::{ApiError, Shared};

const MAX_NAME: usize = 64;

pub fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "'{name}' is not a workflow name: use 1 to {MAX_NAME} letters, digits, '-' or '_'"
        )))
    }
}

/// Settings as query parameters, for a deploy whose body is the source.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeployQuery {
    /// Require webhooks to be signed with this secret.
    webhook_secret: Option<String>,
    /// shopify (default) or hmac-sha256.
    #[param(value_type = Option<String>)]
    signature: Option<SignatureScheme>,
    /// For hmac-sha256: the header with the hex signature (default x-signature).
    signature_header: Option<String>,
    /// A header identifying each delivery; a redelivery starts no run.
    dedupe_header: Option<String>,
    /// How long a delivery id is remembered (default 86400).
    dedupe_ttl_secs: Option<u64>,
    /// Most runs active at once (1: one at a time, in arrival order).
    concurrency: Option<u32>,
    /// With `concurrency`: a field path of the trigger data to count runs by.
    concurrency_key: Option<String>,
    /// Most runs started per `throttle_period`.
    throttle: Option<u32>,
    /// The throttle's period, e.g. 1m (default 1m).
    throttle_period: Option<String>,
}

/// A deploy as JSON: the source and every setting.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployBody {
    /// The workflow's JavaScript.
    source: String,
    #[serde(default)]
    settings: WorkflowSettings,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Hooks {
    #[serde(rename = "onWorkflowComplete")]
    pub on_workflow_complete: bool,
    #[serde(rename = "onWorkflowError")]
    pub on_workflow_error: bool,
}

/// A deployed workflow. Secrets are never shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowView {
    pub name: String,
    /// The live version, e.g. `ver_3`; runs keep the version they started with.
    pub version: String,
    /// Step methods that can be scheduled.
    pub actions: Vec<String>,
    pub hooks: Hooks,
    /// The settings, with `webhook.secret` replaced by `webhook.secret_set`.
    #[schema(value_type = Object)]
    pub settings: Value,
    pub webhook_url: String,
    /// The HTTP trigger's secret URL.
    pub http_url: String,
    pub created_at: String,
    pub updated_at: String,
    /// The live version's source (when one workflow is shown).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WorkflowList {
    pub workflows: Vec<WorkflowView>,
}

#[utoipa::path(put, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "letters, digits, '-' or '_'"), DeployQuery),
    request_body(content = DeployBody, description = "the JS source as text (settings as query parameters), or this JSON"),
    responses(
        (status = 201, body = WorkflowView, description = "deployed, new"),
        (status = 200, body = WorkflowView, description = "deployed, a new version"),
        (status = 422, body = ErrorBody, description = "the source does not load (with line and column), or invalid settings")))]
pub async fn deploy<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<WorkflowView>), ApiError> {
    check_name(&name)?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad deploy parameters: {e}; accepted: webhook_secret, signature (shopify|hmac-sha256), signature_header, dedupe_header, dedupe_ttl_secs, concurrency, concurrency_key, throttle, throttle_period"
        ))
    })?;
    let bytes = read_body(body, &headers, app.config.max_body_bytes).await?;
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    let (source, settings) = if is_json {
        let b: DeployBody = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "a JSON deploy body is {{\"source\": \"<JS>\", \"settings\": {{...}}}}: {e}"
                ),
            )
        })?;
        (b.source, b.settings)
    } else {
        let source = String::from_utf8(bytes.to_vec())
            .map_err(|_| ApiError::bad_request("the workflow source must be UTF-8 text"))?;
        let mut settings = WorkflowSettings::default();
        settings.webhook.secret = query.webhook_secret;
        settings.webhook.signature = query.signature.unwrap_or_default();
        settings.webhook.signature_header = query.signature_header;
        settings.webhook.dedupe_header = query.dedupe_header.map(|h| h.to_ascii_lowercase());
        settings.webhook.dedupe_ttl_secs = query.dedupe_ttl_secs;
        if query.concurrency_key.is_some() && query.concurrency.is_none() {
            return Err(ApiError::bad_request(
                "concurrency_key needs concurrency (the most runs active at once per key)",
            ));
        }
        settings.concurrency =
            query
                .concurrency
                .map(|limit| crate::concurrency::ConcurrencySettings {
                    limit,
                    key: query.concurrency_key,
                });
        settings.throttle = query
            .throttle
            .map(|limit| crate::concurrency::ThrottleSettings {
                limit,
                period: query.throttle_period.unwrap_or_else(|| "1m".into()),
            });
        (source, settings)
    };
    if source.trim().is_empty() {
        return Err(ApiError::bad_request(
            "the body is empty: send the workflow's JavaScript source (a file defining `class Workflow`)",
        ));
    }
    let version = app.engine.deploy(&name, &source).await?;
    let existed = app.engine.store().workflow(name.clone()).await?.is_some();
    let now = app.engine.clock().now();
    let token = new_token().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("no randomness for a trigger token: {e}"),
        )
    })?;
    let publish = settings
        .clone()
        .publish(
            &name,
            version.id,
            token,
            now,
            app.config.min_schedule_interval,
        )
        .map_err(|m| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("invalid settings: {m}"),
            )
        })?;
    // The deploy's variables go in with the publish, in one transaction.
    let env = settings.variables(app.engine.secret_key()).map_err(|m| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid settings: {m}"),
        )
    })?;
    let record = app
        .engine
        .store()
        .publish(flowstate_store::Publish { env, ..publish })
        .await?;
    app.engine.env_changed(&name).await;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(describe(&record, &version.info, &settings, None)),
    ))
}

fn describe(
    w: &WorkflowRecord,
    info: &flowstate_core::executor::WorkflowInfo,
    settings: &WorkflowSettings,
    source: Option<&str>,
) -> WorkflowView {
    WorkflowView {
        name: w.name.clone(),
        version: w.version.to_string(),
        actions: info.actions.clone(),
        hooks: Hooks {
            on_workflow_complete: info.has_complete_hook,
            on_workflow_error: info.has_error_hook,
        },
        settings: settings.redacted(),
        webhook_url: format!("/hooks/{}", w.name),
        http_url: format!("/http/{}", w.http_token),
        created_at: w.created_at.to_string(),
        updated_at: w.updated_at.to_string(),
        source: source.map(str::to_string),
    }
}

/// An unguessable secret for a workflow's HTTP trigger URL: 128 random bits.
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn settings_of(w: &WorkflowRecord) -> WorkflowSettings {
    serde_json::from_str(&w.settings).unwrap_or_default()
}

#[utoipa::path(get, path = "/api/workflows", tag = "workflows", responses((status = 200, body = WorkflowList)))]
pub async fn list<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
) -> Result<Json<WorkflowList>, ApiError> {
    let mut workflows = Vec::new();
    for w in app.engine.store().workflows().await? {
        let v = app.engine.store().version(w.version).await?;
        workflows.push(describe(&w, &v.info, &settings_of(&w), None));
    }
    Ok(Json(WorkflowList { workflows }))
}

#[utoipa::path(get, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path)),
    responses((status = 200, body = WorkflowView), (status = 404, body = ErrorBody)))]
pub async fn show<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
) -> Result<Json<WorkflowView>, ApiError> {
    let w = deployed(&app, &name).await?;
    let v = app.engine.store().version(w.version).await?;
    Ok(Json(describe(
        &w,
        &v.info,
        &settings_of(&w),
        Some(&v.source),
    )))
}

#[utoipa::path(delete, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path)),
    responses((status = 204, description = "removed; its runs and their history stay"), (status = 404, body = ErrorBody)))]
pub async fn remove<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let removed = app.engine.store().remove_workflow(name.clone()).await?;
    app.live.forget(&name);
    if removed {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::unknown_workflow(&name))
    }
}

/// The deployed workflow `name`, or a 404 that says how to deploy it.
pub(crate) async fn deployed<S: Store, E: StepExecutor>(
    app: &Shared<S, E>,
    name: &str,
) -> Result<flowstate_store::WorkflowRecord, ApiError> {
    app.engine
        .store()
        .workflow(name.to_string())
        .await?
        .ok_or_else(|| ApiError::unknown_workflow(name))
}
