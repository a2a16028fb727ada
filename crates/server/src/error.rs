//! API errors: a status and a JSON body `{ "error": "..." }` whose message
//! says what was wrong and what to do.

use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use flowstate_engine::EngineError;
use flowstate_store::StoreError;
use serde_json::json;

/// Every error answer: what was wrong and what to do.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: String,
    /// For a workflow that does not compile: where.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<u32>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// Extra fields for the body (e.g. a compile error's line and column).
    pub detail: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            detail: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn unknown_workflow(name: &str) -> Self {
        Self::not_found(format!(
            "no workflow named '{name}' is deployed; deploy it with `PUT /api/workflows/{name}` (the JS source as the body) or `flowstate serve --dir` with {name}.js in the directory"
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(map)) =
            (self.detail, body.as_object_mut())
        {
            map.extend(extra);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error while answering a request");
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store could not answer: {e}; try again"),
        )
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(e) => e.into(),
            EngineError::Load(e) => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                message: format!("the workflow does not load: {}", e.message),
                detail: Some(json!({ "line": e.line, "column": e.column })),
            },
            EngineError::Stuck(m) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m),
        }
    }
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!(
        "nothing at {}: webhooks go to POST /hooks/<workflow>, the API lives under /api (e.g. GET /api/workflows, GET /api/runs)",
        uri.path()
    ))
}
