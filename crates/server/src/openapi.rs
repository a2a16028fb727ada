//! The OpenAPI document of the API, derived from the handlers' annotations
//! and the response types (see `view`), served at `/api/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use crate::{
    checkpoints, concurrency, error, resume, runs, schedule, settings, triggers, variables, view,
    workflows,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "flowstate",
        description = "Deploy JavaScript workflows, trigger them, and look at their runs. Every error is `{\"error\": \"...\"}` with what to do. With an API token configured, /api/* needs `Authorization: Bearer <token>`."
    ),
    paths(
        workflows::list,
        workflows::deploy,
        workflows::show,
        workflows::remove,
        checkpoints::get,
        variables::list,
        variables::set,
        variables::unset,
        checkpoints::put,
        checkpoints::clear,
        triggers::manual,
        triggers::webhook,
        resume::resume,
        runs::list,
        runs::show,
        runs::cancel,
    ),
    components(schemas(
        error::ErrorBody,
        checkpoints::CheckpointView,
        variables::EnvList,
        variables::EnvView,
        variables::SetVar,
        workflows::WorkflowView,
        workflows::WorkflowList,
        workflows::DeployBody,
        workflows::Hooks,
        settings::WorkflowSettings,
        concurrency::ConcurrencySettings,
        concurrency::ThrottleSettings,
        settings::WebhookSettings,
        settings::SignatureScheme,
        schedule::ScheduleSettings,
        triggers::ManualRun,
        triggers::Accepted,
        runs::RunList,
        runs::Cancelled,
        view::RunDocument,
        view::RunSummary,
        view::StepView,
        view::LogView,
        view::AttemptError,
    )),
    tags(
        (name = "workflows", description = "deploy and manage workflows"),
        (name = "triggers", description = "start runs"),
        (name = "runs", description = "look at and cancel runs"),
    )
)]
pub struct ApiDoc;

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_documented_with_its_methods() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for (path, methods) in [
            ("/api/workflows", &["get"][..]),
            ("/api/workflows/{name}", &["put", "get", "delete"][..]),
            ("/api/workflows/{name}/runs", &["post"][..]),
            ("/api/runs", &["get"][..]),
            ("/api/runs/{id}", &["get"][..]),
            ("/api/runs/{id}/cancel", &["post"][..]),
            ("/hooks/{workflow}", &["post"][..]),
        ] {
            for m in methods {
                assert!(paths[path][m].is_object(), "{m} {path} is not documented");
            }
        }
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for s in [
            "RunDocument",
            "StepView",
            "WorkflowView",
            "ErrorBody",
            "ScheduleSettings",
        ] {
            assert!(schemas.contains_key(s), "{s} missing");
        }
        assert_eq!(
            doc["paths"]["/api/runs"]["get"]["parameters"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
    }
}
