//! Triggers that start runs: webhooks (`POST /hooks/<workflow>`) and manual
//! runs (`POST /api/workflows/<workflow>/runs`). A webhook is answered `202`
//! only once its run is durably recorded; a refused one records nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use flowstate_core::executor::StepExecutor;
use flowstate_core::json::human_bytes;
use flowstate_store::{DeliveryKey, Store, VersionRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use serde_json::{Map, Value};

use crate::settings::{DEFAULT_DEDUPE_TTL_SECS, WorkflowSettings};
use crate::signature;
use crate::{ApiError, Shared};

/// Headers kept out of run history: they carry credentials.
const PRIVATE_HEADERS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Reads the whole body, refusing one over `limit` with a 413.
pub async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body is over the server's limit of {}; send less (pass references, not data) or raise --max-body",
                human_bytes(limit)
            ),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// The body as `data`: JSON when it is JSON (malformed JSON with a JSON
/// content type is refused), otherwise the text itself, `null` if empty.
fn body_data(headers: &HeaderMap, body: &[u8]) -> Result<String, ApiError> {
    let declared_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json"));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("null".into());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(v.to_string()),
        Err(e) if declared_json => Err(ApiError::bad_request(format!(
            "the body is not valid JSON: {e}; fix the JSON, or send another content type to receive the body as text"
        ))),
        Err(_) => Ok(Value::String(String::from_utf8_lossy(body).into_owned()).to_string()),
    }
}

/// Request headers as a JSON object, lower-cased names, credentials left out.
pub fn headers_json(headers: &HeaderMap) -> String {
    let mut map = Map::new();
    for (name, value) in headers {
        if PRIVATE_HEADERS.contains(&name.as_str()) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        match map.get_mut(name.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&value);
            }
            _ => {
                map.insert(name.as_str().to_string(), Value::String(value));
            }
        }
    }
    Value::Object(map).to_string()
}

/// How long a cached live version is trusted; a deploy through this server
/// replaces it at once, one made elsewhere (another node) within this time.
const LIVE_TTL: Duration = Duration::from_secs(1);

pub type Live = Arc<(VersionRecord, WorkflowSettings)>;

#[derive(Default)]
pub struct LiveCache(Mutex<HashMap<String, (Instant, Live)>>);

impl LiveCache {
    pub fn forget(&self, name: &str) {
        self.0
            .lock()
            .expect("the cache lock is never poisoned")
            .remove(name);
    }
}

async fn live_version<S: Store, E: StepExecutor>(
    app: &Shared<S, E>,
    name: &str,
) -> Result<Live, ApiError> {
    if let Some((at, live)) = app
        .live
        .0
        .lock()
        .expect("the cache lock is never poisoned")
        .get(name)
        && at.elapsed() < LIVE_TTL
    {
        return Ok(live.clone());
    }
    let store = app.engine.store();
    let w = crate::workflows::deployed(app, name).await?;
    let settings = serde_json::from_str(&w.settings).unwrap_or_default();
    let live: Live = Arc::new((store.version(w.version).await?, settings));
    app.live
        .0
        .lock()
        .expect("the cache lock is never poisoned")
        .insert(name.to_string(), (Instant::now(), live.clone()));
    Ok(live)
}

#[utoipa::path(post, path = "/hooks/{workflow}", tag = "triggers",
    params(("workflow" = String, Path, description = "the deployed workflow")),
    request_body(content = Object, description = "the event, as sent; it becomes `data`"),
    responses(
        (status = 202, body = Accepted, description = "recorded durably; `start` runs next"),
        (status = 200, body = Accepted, description = "a redelivery (same dedupe header): no new run"),
        (status = 400, body = ErrorBody, description = "malformed JSON"),
        (status = 401, body = ErrorBody, description = "a bad or missing signature"),
        (status = 404, body = ErrorBody, description = "no such workflow"),
        (status = 413, body = ErrorBody, description = "the body is over the limit")))]
pub async fn webhook<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live_version(&app, &name).await?;
    let (version, settings) = (&live.0, &live.1);
    let body = read_body(body, &headers, app.config.max_body_bytes).await?;
    signature::verify(&settings.webhook, &headers, &body)
        .map_err(|m| ApiError::new(StatusCode::UNAUTHORIZED, m))?;
    let data = body_data(&headers, &body)?;
    let delivery = settings.webhook.dedupe_header.as_deref().and_then(|h| {
        let id = headers.get(h)?.to_str().ok()?.trim();
        (!id.is_empty()).then(|| DeliveryKey {
            key: id.to_string(),
            ttl_ms: settings
                .webhook
                .dedupe_ttl_secs
                .unwrap_or(DEFAULT_DEDUPE_TTL_SECS)
                .saturating_mul(1000) as i64,
        })
    });
    let gate = settings.gate(&data);
    let created = app
        .engine
        .trigger(version, data, headers_json(&headers), delivery, gate)
        .await?;
    if created.duplicate {
        return Ok((
            StatusCode::OK,
            Json(Accepted {
                run: created.run.to_string(),
                status: "duplicate",
                duplicate: true,
            }),
        ));
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            run: created.run.to_string(),
            status: "accepted",
            duplicate: false,
        }),
    ))
}

/// A manual run: the trigger's data and headers of your choice.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualRun {
    /// What `start` receives as `data`.
    #[serde(default)]
    #[schema(value_type = Object)]
    data: Value,
    /// Header names and values for `headers`.
    #[serde(default)]
    #[schema(value_type = Object)]
    headers: Map<String, Value>,
}

/// A trigger's answer: the run it started (or, for a redelivery, started before).
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    pub run: String,
    /// `accepted`, or `duplicate` for a delivery seen before.
    pub status: &'static str,
    /// True for a redelivery: no new run was started.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub duplicate: bool,
}

#[utoipa::path(post, path = "/api/workflows/{name}/runs", tag = "triggers",
    params(("name" = String, Path, description = "the deployed workflow")),
    request_body = ManualRun,
    responses((status = 201, body = Accepted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn manual<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let live = live_version(&app, &name).await?;
    let version = &live.0;
    let body = read_body(body, &headers, app.config.max_body_bytes).await?;
    let req: ManualRun = if body.iter().all(u8::is_ascii_whitespace) {
        ManualRun::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(format!(
                "a manual run takes {{\"data\": <the trigger's data>, \"headers\": {{\"name\": \"value\"}}}}: {e}"
            ))
        })?
    };
    let headers: Map<String, Value> = req
        .headers
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            };
            (k.to_ascii_lowercase(), v)
        })
        .collect();
    let data = req.data.to_string();
    let gate = live.1.gate(&data);
    let created = app
        .engine
        .trigger(
            version,
            data,
            Value::Object(headers).to_string(),
            None,
            gate,
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(Accepted {
            run: created.run.to_string(),
            status: "accepted",
            duplicate: false,
        }),
    ))
}
