//! The HTTP trigger: `/http/<token>`, any method, a secret URL per workflow.
//! `data` is the JSON body's fields with the query parameters merged in;
//! `start` runs inline and its return value is the response (a plain value
//! → JSON, a `Response` → its status, headers and body, nothing →
//! `{"success":true}`). Later steps run after the response is sent.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowstate_core::executor::{Returned, StepExecutor};
use flowstate_store::Store;
use serde_json::{Map, Value, json};

use crate::triggers::{headers_json, read_body};
use crate::{ApiError, Shared};

pub async fn http<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let store = app.engine.store();
    // No hint either way: an unknown token looks like any unknown path.
    let unknown = || ApiError::not_found("nothing here");
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let w = store.workflow_by_token(token).await?.ok_or_else(unknown)?;
    let version = store.version(w.version).await?;
    let body = read_body(body, &headers, app.config.max_body_bytes).await?;
    let data = request_data(query.as_deref(), &body);
    let data = data.to_string();
    let settings: crate::WorkflowSettings = serde_json::from_str(&w.settings).unwrap_or_default();
    let gate = settings.gate(&data);
    let inline = app
        .engine
        .trigger_inline(&version, data, headers_json(&headers), gate)
        .await?;
    let run = inline.run.to_string();
    let mut response = match (inline.error, inline.returned) {
        // Held back by the workflow's concurrency limit or throttle: there is
        // no answer from `start` to give yet.
        _ if inline.queued => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "run": run, "status": "queued" })),
        )
            .into_response(),
        (Some(e), _) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "the workflow's start step failed ({}: {}); {run} retries it in the background",
                e.name, e.message
            ),
        )
        .into_response(),
        (None, Some(Returned::Json(text))) => {
            ([(header::CONTENT_TYPE, "application/json")], text).into_response()
        }
        (
            None,
            Some(Returned::Response {
                status,
                headers,
                body,
            }),
        ) => returned_response(status, &headers, body),
        (None, None) => axum::Json(json!({ "success": true })).into_response(),
    };
    if let Ok(v) = HeaderValue::from_str(&run) {
        response.headers_mut().insert("x-flowstate-run", v);
    }
    Ok(response)
}

/// The body's JSON fields (a non-object JSON body under `body`), with the
/// query parameters merged in; `{}` when there is neither.
pub(crate) fn request_data(query: Option<&str>, body: &[u8]) -> Value {
    let mut data = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        Ok(other) => Map::from_iter([("body".to_string(), other)]),
        Err(_) => Map::new(),
    };
    for (k, v) in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(split_pair)
    {
        data.insert(k, Value::String(v));
    }
    Value::Object(data)
}

fn split_pair(pair: &str) -> (String, String) {
    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
    (decode(k), decode(v))
}

/// Decodes `application/x-www-form-urlencoded` text (`+` is a space).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn returned_response(status: u16, headers: &[(String, String)], body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let mut response = (status, body).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_fields_and_query_parameters_merge() {
        let d = request_data(
            Some("sku=MUG%2DBLUE&note=hello+world&flag"),
            br#"{"qty": 2, "sku": "x"}"#,
        );
        assert_eq!(
            d,
            json!({ "qty": 2, "sku": "MUG-BLUE", "note": "hello world", "flag": "" })
        );
        assert_eq!(request_data(None, b"not json"), json!({}));
        assert_eq!(
            request_data(Some("a=1"), b"[1,2]"),
            json!({ "body": [1, 2], "a": "1" })
        );
        assert_eq!(decode("100%"), "100%");
    }
}
