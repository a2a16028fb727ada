//! The seam between the engine and a sandbox. The engine hands a
//! [`StepJob`] to a [`StepExecutor`] (QuickJS in production, plain Rust in
//! engine tests) and gets a [`StepReport`] back. State operations go the
//! other way, through the [`StepHost`] the job carries: the sandbox knows
//! nothing of SQL, the engine nothing of JavaScript.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::checkpoint::{Checkpoint, CheckpointWrite};
use crate::ids::{RunId, StepId, VersionId};
use crate::limits::Limits;
use crate::state::{StateOp, StateScope};
use crate::status::StepKind;
use crate::time::Timestamp;

/// One deployed version of a workflow's source.
#[derive(Debug)]
pub struct WorkflowCode {
    pub version: VersionId,
    pub name: String,
    pub source: String,
}

/// What loading a workflow's source revealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkflowInfo {
    /// Step methods other than `start` and the hooks, in declaration order.
    pub actions: Vec<String>,
    pub has_complete_hook: bool,
    pub has_error_hook: bool,
}

pub const START: &str = "start";
pub const COMPLETE_HOOK: &str = "onWorkflowComplete";
pub const ERROR_HOOK: &str = "onWorkflowError";

impl WorkflowInfo {
    /// Whether `action` may be scheduled. `start` and the hooks may not.
    pub fn is_schedulable(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }
}

/// A workflow that cannot be loaded, with where it went wrong.
#[derive(Clone, Debug, Error, PartialEq)]
#[error("{message}")]
pub struct LoadError {
    pub message: String,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

/// Where the step stands, as `api.run` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RunMeta {
    pub id: RunId,
    pub workflow: String,
    pub action: String,
    #[serde(rename = "stepId")]
    pub step_id: StepId,
    pub attempt: u32,
    pub depth: u32,
    pub status: String,
}

/// The limits one step runs under.
#[derive(Clone, Debug)]
pub struct StepLimits {
    pub cpu: Duration,
    pub wall: Duration,
    pub memory: usize,
    pub limits: Arc<Limits>,
    /// Steps the run may still create before its steps-per-run breaker trips.
    pub steps_left: u64,
}

pub struct StepJob {
    pub code: Arc<WorkflowCode>,
    pub run: RunMeta,
    pub kind: StepKind,
    /// JSON text of `data` (the payload, or the trigger's body for `start`).
    pub data: String,
    /// JSON text of the trigger's headers.
    pub headers: Arc<str>,
    /// For `onWorkflowError`: the error that failed the run.
    pub error: Option<StepError>,
    pub limits: StepLimits,
    pub host: Arc<dyn StepHost>,
    /// The server's public base URL, for `api.waitForEvent`'s `resumeUrl`.
    pub public_url: Arc<str>,
    /// The workflow's variables and secrets.
    pub env: Arc<StepEnv>,
}

/// A workflow's `env` as one step sees it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepEnv {
    /// Name and value, secrets opened: what `env` holds for the code.
    pub vars: Vec<(String, String)>,
    /// Secret values, redacted from the step's logs and errors.
    pub secrets: Vec<String>,
    /// Added by `fetch` to requests for the store's Admin API.
    pub shopify: Option<ShopifyAccess>,
}

/// A configured Shopify store: `fetch` to `https://<store>/admin/...` gets
/// the access token header; the code never holds the token.
#[derive(Clone, Debug, PartialEq)]
pub struct ShopifyAccess {
    /// `host` or `host:port`, lower case (from `SHOPIFY_STORE`).
    pub store: String,
    pub token: String,
}

/// The secret that holds a store's Admin API token.
pub const SHOPIFY_TOKEN_VAR: &str = "SHOPIFY_ACCESS_TOKEN";
/// The variable naming the store (`my-shop.myshopify.com`).
pub const SHOPIFY_STORE_VAR: &str = "SHOPIFY_STORE";

impl StepEnv {
    /// Builds a step's env from the stored variables, opening secrets with
    /// `open`. `SHOPIFY_ACCESS_TOKEN` is kept out of `vars` and used for
    /// `fetch` to `SHOPIFY_STORE` instead.
    pub fn build(
        stored: impl IntoIterator<Item = (String, String, bool)>,
        open: impl Fn(&str, &str) -> Result<String, String>,
    ) -> Result<StepEnv, String> {
        let mut env = StepEnv::default();
        let mut token = None;
        for (name, value, secret) in stored {
            let value = if secret {
                let plain = open(&name, &value)?;
                env.secrets.push(plain.clone());
                plain
            } else {
                value
            };
            if name == SHOPIFY_TOKEN_VAR {
                token = Some(value);
            } else {
                env.vars.push((name, value));
            }
        }
        let store = env
            .vars
            .iter()
            .find(|(n, _)| n == SHOPIFY_STORE_VAR)
            .map(|(_, v)| {
                let v = v.trim().to_ascii_lowercase();
                let v = v
                    .strip_prefix("https://")
                    .or(v.strip_prefix("http://"))
                    .unwrap_or(&v);
                v.trim_end_matches('/').to_string()
            });
        if let (Some(store), Some(token)) = (store, token) {
            env.shopify = Some(ShopifyAccess { store, token });
        }
        Ok(env)
    }
}

/// What a step asks of the engine while it runs. Calls block the calling
/// (sandbox worker) thread, never an async runtime thread.
pub trait StepHost: Send + Sync {
    /// Applies a run-state or dedupe operation and returns its result as JSON
    /// text. Errors carry the message the workflow author sees.
    fn state(&self, scope: StateScope, op: StateOp) -> Result<String, String>;
    /// Reads a checkpoint (`scope` as in [`CheckpointWrite::scope`]).
    fn checkpoint(&self, scope: &str) -> Result<Checkpoint, String>;
    /// Stores or reads imported CSV chunks (`api.csv`); `Read` answers the
    /// chunk's rows as JSON text, or `None`.
    fn csv(&self, op: CsvOp) -> Result<Option<String>, String>;
    /// The engine's clock, for log timestamps.
    fn now(&self) -> Timestamp;
}

/// What `api.csv` asks of the store. An import writes its chunks one by
/// one, so memory stays bounded by one chunk whatever the file's size.
#[derive(Clone, Debug, PartialEq)]
pub enum CsvOp {
    /// Starts an import under `key`, dropping what an earlier attempt left.
    Begin {
        key: String,
    },
    /// One chunk: a JSON array of row objects.
    Chunk {
        key: String,
        index: u32,
        rows: String,
    },
    /// The import is complete: `meta` is what `importCSV` returns.
    Finish {
        key: String,
        meta: String,
    },
    Read {
        key: String,
        index: u32,
    },
    Delete {
        key: String,
    },
}

/// How long imported chunks are kept.
pub const CSV_TTL: Duration = Duration::from_secs(7 * 86_400);

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScheduledStep {
    pub action: String,
    /// For a wait: its timeout.
    pub delay: Duration,
    /// JSON text of the payload.
    pub payload: String,
    /// Set for `api.waitForEvent`: the step waits for its resume URL (or
    /// its timeout) instead of a delay.
    pub wait: Option<WaitSpec>,
}

/// A branch paused by `api.waitForEvent` until `/resume/<token>` is called.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WaitSpec {
    /// Unguessable: 128 random bits, hex.
    pub token: String,
    /// Where a browser goes after resuming.
    pub redirect_url: Option<String>,
}

/// The longest `api.waitForEvent` timeout.
pub const MAX_WAIT: Duration = Duration::from_secs(30 * 86_400);
/// Its default: one day.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(86_400);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The workflow's code threw.
    Thrown,
    CpuLimit,
    WallLimit,
    MemoryLimit,
    /// The worker was lost (crash, node death) and its lease ran out.
    WorkerLost,
    /// A circuit breaker tripped at commit.
    Breaker,
    /// Something in flowstate itself; retried like any failure.
    Internal,
    /// Another run kept changing a checkpoint this step changed.
    CheckpointConflict,
    /// An `api.waitForEvent` branch whose event never came.
    WaitTimeout,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Error)]
#[error("{name}: {message}")]
pub struct StepError {
    pub kind: ErrorKind,
    pub name: String,
    pub message: String,
    pub stack: Option<String>,
}

impl StepError {
    pub fn new(kind: ErrorKind, name: &str, message: impl Into<String>) -> Self {
        StepError {
            kind,
            name: name.into(),
            message: message.into(),
            stack: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Log,
    Info,
    Warn,
    Error,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub at: Timestamp,
    pub level: LogLevel,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StepResult {
    Completed { scheduled: Vec<ScheduledStep> },
    Failed(StepError),
    Ended { reason: String },
}

/// What a step method returned, for triggers that answer with it (HTTP).
#[derive(Clone, Debug, PartialEq)]
pub enum Returned {
    /// Any JSON value, as text.
    Json(String),
    /// A `Response` object: status, headers, body text.
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub result: StepResult,
    pub logs: Vec<LogLine>,
    /// What the method returned, if anything.
    pub returned: Option<Returned>,
    /// Checkpoints the step changed, to write at its commit.
    pub checkpoints: Vec<CheckpointWrite>,
}

/// Where the server is reachable from outside, for `resumeUrl`s.
pub const DEFAULT_PUBLIC_URL: &str = "http://127.0.0.1:8080";

pub trait StepExecutor: Send + Sync + 'static {
    /// Compiles a workflow's source and says what it defines; refuses one
    /// that cannot run. Done once per deployed version.
    fn inspect(&self, name: &str, source: &str) -> Result<WorkflowInfo, LoadError>;

    /// Runs one step attempt to its end.
    fn execute(&self, job: StepJob) -> impl Future<Output = StepReport> + Send;
}
