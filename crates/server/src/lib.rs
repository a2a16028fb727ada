//! The HTTP face of flowstate: triggers (`/hooks/<workflow>`) and the
//! management API (`/api/...`), over an [`Engine`]. Every error is JSON with
//! a message that says what to do; nothing is recorded for a request that is
//! refused.

mod auth;
mod checkpoints;
pub mod concurrency;
mod error;
mod http_trigger;
mod metrics;
pub mod openapi;
mod resume;
mod runs;
pub mod schedule;
pub mod schedule_trigger;
pub mod settings;
pub mod signature;
mod triggers;
mod variables;
pub mod view;
mod workflows;

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, get, post, put};
use flowstate_core::executor::StepExecutor;
use flowstate_engine::Engine;
use flowstate_store::Store;

pub use error::ApiError;
pub use settings::WorkflowSettings;
pub use workflows::new_token;

/// How the server answers, apart from the engine's limits.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// When set, `/api/*` requires `Authorization: Bearer <token>`.
    pub api_token: Option<String>,
    /// Largest request body accepted (413 above it).
    pub max_body_bytes: usize,
    /// Shortest repeat a schedule may have (`every`); default 10 minutes.
    pub min_schedule_interval: std::time::Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            api_token: None,
            max_body_bytes: 5 * 1024 * 1024,
            min_schedule_interval: std::time::Duration::from_secs(600),
        }
    }
}

pub struct App<S, E> {
    pub engine: Engine<S, E>,
    pub config: ServerConfig,
    /// Live versions by workflow name, so a trigger does not read the
    /// version (and its source) on every request.
    pub live: triggers::LiveCache,
}

pub type Shared<S, E> = Arc<App<S, E>>;

pub fn router<S: Store, E: StepExecutor>(engine: Engine<S, E>, config: ServerConfig) -> Router {
    let app = Arc::new(App {
        engine,
        config,
        live: Default::default(),
    });
    let api = Router::new()
        .route("/api/workflows", get(workflows::list::<S, E>))
        .route(
            "/api/workflows/{name}",
            put(workflows::deploy::<S, E>)
                .get(workflows::show::<S, E>)
                .delete(workflows::remove::<S, E>),
        )
        .route("/api/workflows/{name}/runs", post(triggers::manual::<S, E>))
        .route("/api/workflows/{name}/env", get(variables::list::<S, E>))
        .route(
            "/api/workflows/{name}/env/{var}",
            put(variables::set::<S, E>).delete(variables::unset::<S, E>),
        )
        .route(
            "/api/workflows/{name}/checkpoint",
            get(checkpoints::get::<S, E>)
                .put(checkpoints::put::<S, E>)
                .delete(checkpoints::clear::<S, E>),
        )
        .route("/api/runs", get(runs::list::<S, E>))
        .route("/api/runs/{id}", get(runs::show::<S, E>))
        .route("/api/runs/{id}/cancel", post(runs::cancel::<S, E>))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            auth::require_token::<S, E>,
        ));
    Router::new()
        .merge(api)
        .route("/hooks/{name}", post(triggers::webhook::<S, E>))
        .route("/metrics", get(metrics::metrics::<S, E>))
        .route("/api/openapi.json", get(openapi::document))
        .route("/http/{token}", any(http_trigger::http::<S, E>))
        .route(
            "/resume/{token}",
            get(resume::resume::<S, E>).post(resume::resume::<S, E>),
        )
        .fallback(error::not_found)
        .with_state(app)
}
