//! `GET|POST /resume/<token>`: resumes an `api.waitForEvent` branch, once.
//! The token is the secret (128 random bits), so the route needs no API
//! token: it goes in an approval email or a chat button. The JSON body, a
//! form, or the query parameters are merged into the waiting step's payload.
//! A browser is redirected to the wait's `redirect_url`, or shown a small
//! confirmation page; other callers get JSON.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use flowstate_core::executor::StepExecutor;
use flowstate_store::{Resumed, Store};
use serde_json::{Value, json};

use crate::http_trigger::request_data;
use crate::triggers::read_body;
use crate::{ApiError, Shared};

#[utoipa::path(post, path = "/resume/{token}", tag = "triggers",
    params(("token" = String, Path, description = "from api.waitForEvent's resumeUrl")),
    request_body(content = Object, description = "merged into the waiting step's payload (GET: the query parameters)"),
    responses(
        (status = 200, description = "resumed: JSON, or a confirmation page for a browser"),
        (status = 303, description = "resumed: a browser goes to the wait's redirect_url"),
        (status = 404, body = crate::error::ErrorBody, description = "no wait has this token"),
        (status = 409, body = crate::error::ErrorBody, description = "already resumed: a token works once"),
        (status = 410, body = crate::error::ErrorBody, description = "timed out, or the run is over")))]
pub async fn resume<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(token): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let unknown = || {
        ApiError::not_found(
            "no waiting step has this resume token; check the link (it must be copied whole)",
        )
    };
    if token.len() != 32 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(unknown());
    }
    let body = read_body(body, &headers, app.config.max_body_bytes).await?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/x-www-form-urlencoded"));
    let data = if is_form {
        let form = String::from_utf8_lossy(&body);
        let mut data = request_data(Some(&form), b"");
        if let (Value::Object(d), Value::Object(q)) =
            (&mut data, request_data(query.as_deref(), b""))
        {
            d.extend(q);
        }
        data
    } else {
        request_data(query.as_deref(), &body)
    };
    let outcome = app.engine.resume(token, data.to_string()).await?;
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    match outcome {
        Resumed::Resumed { run, redirect_url } => Ok(match redirect_url {
            Some(url) => Redirect::to(&url).into_response(),
            None if browser => Html(CONFIRMATION).into_response(),
            None => axum::Json(json!({ "resumed": true, "run": run.to_string() })).into_response(),
        }),
        Resumed::Unknown => Err(unknown()),
        Resumed::AlreadyUsed { run } => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("this link was already used: {run} has moved on, and a resume link works once"),
        )),
        Resumed::Expired { run } => Err(ApiError::new(
            StatusCode::GONE,
            format!("this link has expired: the wait in {run} timed out, or the run is over"),
        )),
    }
}

const CONFIRMATION: &str = "<!doctype html>
<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Done</title>
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"></head>
<body style=\"font-family: system-ui, sans-serif; max-width: 32rem; margin: 4rem auto; text-align: center\">
<h1>Thank you</h1><p>Your response was recorded. You can close this page.</p>
</body></html>
";
