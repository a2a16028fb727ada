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
use serde::Deserialize;
use serde_json::{Value, json};

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
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployQuery {
    webhook_secret: Option<String>,
    signature: Option<SignatureScheme>,
    signature_header: Option<String>,
    dedupe_header: Option<String>,
    dedupe_ttl_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    source: String,
    #[serde(default)]
    settings: WorkflowSettings,
}

pub async fn deploy<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
    query: Result<Query<DeployQuery>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_name(&name)?;
    let Query(query) = query.map_err(|e| {
        ApiError::bad_request(format!(
            "bad deploy parameters: {e}; accepted: webhook_secret, signature (shopify|hmac-sha256), signature_header, dedupe_header, dedupe_ttl_secs"
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
    let record = app.engine.store().publish(publish).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(describe(&record, &version.info, &settings, false, &source)),
    ))
}

fn describe(
    w: &WorkflowRecord,
    info: &flowstate_core::executor::WorkflowInfo,
    settings: &WorkflowSettings,
    with_source: bool,
    source: &str,
) -> Value {
    let mut v = json!({
        "name": w.name,
        "version": w.version.to_string(),
        "actions": info.actions,
        "hooks": {
            "onWorkflowComplete": info.has_complete_hook,
            "onWorkflowError": info.has_error_hook,
        },
        "settings": settings.redacted(),
        "webhook_url": format!("/hooks/{}", w.name),
        "http_url": format!("/http/{}", w.http_token),
        "created_at": w.created_at.to_string(),
        "updated_at": w.updated_at.to_string(),
    });
    if with_source {
        v["source"] = Value::String(source.to_string());
    }
    v
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

pub async fn list<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
) -> Result<Json<Value>, ApiError> {
    let mut out = Vec::new();
    for w in app.engine.store().workflows().await? {
        let v = app.engine.store().version(w.version).await?;
        out.push(describe(&w, &v.info, &settings_of(&w), false, ""));
    }
    Ok(Json(json!({ "workflows": out })))
}

pub async fn show<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let w = app
        .engine
        .store()
        .workflow(name.clone())
        .await?
        .ok_or_else(|| ApiError::unknown_workflow(&name))?;
    let v = app.engine.store().version(w.version).await?;
    Ok(Json(describe(
        &w,
        &v.info,
        &settings_of(&w),
        true,
        &v.source,
    )))
}

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
