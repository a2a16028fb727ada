//! A workflow's variables and secrets: `GET /api/workflows/<name>/env`,
//! `PUT|DELETE /api/workflows/<name>/env/<VAR>`, and the `env`/`secrets`
//! maps of a deploy's settings. Secrets are sealed with the server's key
//! before they reach the store and are never returned.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use flowstate_core::executor::StepExecutor;
use flowstate_core::secrets;
use flowstate_store::{EnvVar, Store};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ErrorBody;
use crate::{ApiError, Shared};

/// Longest variable value.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;

/// A variable as the API shows it: a secret's value never is.
#[derive(Debug, Serialize, ToSchema)]
pub struct EnvView {
    pub name: String,
    /// The value; null for a secret.
    pub value: Option<String>,
    pub secret: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnvList {
    pub workflow: String,
    pub vars: Vec<EnvView>,
}

/// A variable to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVar {
    pub value: String,
    /// Sealed at rest, never shown, redacted from logs.
    #[serde(default)]
    pub secret: bool,
}

/// Checks and (for a secret) seals a variable for the store.
pub fn seal_var(
    key: Option<&secrets::SecretKey>,
    name: &str,
    value: &str,
    secret: bool,
) -> Result<EnvVar, String> {
    secrets::check_name(name)?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!(
            "env.{name} is {} bytes, over the limit of {MAX_VALUE_BYTES}; keep large data elsewhere",
            value.len()
        ));
    }
    let value = if secret {
        let key = key.ok_or_else(|| {
            format!(
                "env.{name} cannot be stored as a secret: this server has no key to seal it with; start it with --secret-key (or FLOWSTATE_SECRET_KEY), e.g. the output of `openssl rand -hex 32`"
            )
        })?;
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
        key.seal(value, nonce)
    } else {
        value.to_string()
    };
    Ok(EnvVar {
        name: name.to_string(),
        value,
        secret,
    })
}

fn prepare<S: Store, E: StepExecutor>(
    app: &Shared<S, E>,
    name: &str,
    value: &str,
    secret: bool,
) -> Result<EnvVar, ApiError> {
    let status = if value.len() > MAX_VALUE_BYTES {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    seal_var(app.engine.secret_key(), name, value, secret).map_err(|m| ApiError::new(status, m))
}

#[utoipa::path(get, path = "/api/workflows/{name}/env", params(("name" = String, Path)), tag = "workflows",
    responses((status = 200, body = EnvList), (status = 404, body = ErrorBody)))]
pub async fn list<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path(name): Path<String>,
) -> Result<Json<EnvList>, ApiError> {
    crate::workflows::deployed(&app, &name).await?;
    let vars = app.engine.store().env_vars(name.clone()).await?;
    Ok(Json(EnvList {
        workflow: name,
        vars: vars
            .into_iter()
            .map(|v| EnvView {
                value: (!v.secret).then_some(v.value),
                name: v.name,
                secret: v.secret,
            })
            .collect(),
    }))
}

#[utoipa::path(put, path = "/api/workflows/{name}/env/{var}", params(("name" = String, Path), ("var" = String, Path)), tag = "workflows",
    request_body = SetVar,
    responses((status = 200, body = EnvView), (status = 400, body = ErrorBody, description = "a bad name, or a secret without a server key"),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody)))]
pub async fn set<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path((name, var)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<EnvView>, ApiError> {
    crate::workflows::deployed(&app, &name).await?;
    let req: SetVar = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "send {{\"value\": \"...\", \"secret\": true|false}}: {e}"
        ))
    })?;
    let stored = prepare(&app, &var, &req.value, req.secret)?;
    let now = app.engine.clock().now();
    app.engine
        .store()
        .set_env(name.clone(), stored, now)
        .await?;
    app.engine.env_changed(&name).await;
    Ok(Json(EnvView {
        value: (!req.secret).then_some(req.value),
        name: var,
        secret: req.secret,
    }))
}

#[utoipa::path(delete, path = "/api/workflows/{name}/env/{var}", params(("name" = String, Path), ("var" = String, Path)), tag = "workflows",
    responses((status = 204, description = "removed"), (status = 404, body = ErrorBody)))]
pub async fn unset<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
    Path((name, var)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    crate::workflows::deployed(&app, &name).await?;
    if !app
        .engine
        .store()
        .unset_env(name.clone(), var.clone())
        .await?
    {
        return Err(ApiError::not_found(format!(
            "workflow '{name}' has no variable {var}; see GET /api/workflows/{name}/env"
        )));
    }
    app.engine.env_changed(&name).await;
    Ok(StatusCode::NO_CONTENT)
}
