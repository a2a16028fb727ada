//! The store: the single source of truth. [`Store`] speaks in domain
//! operations (create a run, claim due steps, apply a journaled state op,
//! commit a step with its children), each one atomic, so that a node may
//! die at any instruction and lose nothing. SQLite is the embedded default;
//! every back end must pass the suite in [`conformance`].

use std::future::Future;

use flowstate_core::checkpoint::{Checkpoint, CheckpointWrite};
use flowstate_core::executor::{StepError, WaitSpec, WorkflowInfo};
use flowstate_core::lifecycle;
use flowstate_core::state::{StateError, StateOp, StateScope};
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{RunId, StepId, Timestamp, VersionId};
use thiserror::Error;

pub mod blob;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod postgres;
pub mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::{SqliteOptions, SqliteStore};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(String),
    #[error("{0}")]
    NotFound(String),
    #[error("blob store error at {path}: {message}")]
    Blob { path: String, message: String },
    #[error(
        "the database {path} is in use by another flowstate process; stop it first, or use another --db"
    )]
    Locked { path: String },
    #[error("the store has shut down")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A state operation's failure: the workflow's fault, or the store's.
#[derive(Debug, Error)]
pub enum OpError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Clone, Debug)]
pub struct NewVersion {
    pub name: String,
    pub source: String,
    pub info: WorkflowInfo,
    pub now: Timestamp,
}

#[derive(Clone, Debug)]
pub struct VersionRecord {
    pub id: VersionId,
    pub name: String,
    pub source: String,
    pub info: WorkflowInfo,
    pub created_at: Timestamp,
}

/// A trigger's delivery id: a second delivery with the same key within the
/// TTL starts no run (Shopify redelivers webhooks).
#[derive(Clone, Debug)]
pub struct DeliveryKey {
    pub key: String,
    pub ttl_ms: i64,
}

#[derive(Clone, Debug)]
pub struct NewRun {
    /// Set for triggers that dedupe their deliveries.
    pub delivery: Option<DeliveryKey>,
    pub workflow: String,
    pub version: VersionId,
    /// JSON text of the trigger's data.
    pub data: String,
    /// JSON text of the trigger's headers (an object).
    pub headers: String,
    pub has_complete_hook: bool,
    pub has_error_hook: bool,
    pub now: Timestamp,
    /// Lease the `start` step to the caller at once, until this time, so it
    /// runs inline (the HTTP trigger answers with its return value). A run
    /// its gate holds back is not leased.
    pub claim_start: Option<Timestamp>,
    /// The workflow's concurrency limit and throttle, if it has either.
    pub gate: Option<RunGate>,
}

/// What holds a run back before it starts (DESIGN.md 1.7). A gated run is
/// created `queued`; it is admitted, oldest first, while fewer than
/// `concurrency` runs with its key are active, and its `start` is due no
/// sooner than the workflow's throttle allows.
#[derive(Clone, Debug, PartialEq)]
pub struct RunGate {
    /// Runs with the same key share the concurrency limit.
    pub key: String,
    pub concurrency: Option<u32>,
    pub throttle: Option<Throttle>,
}

/// At most `limit` runs of the workflow start in any `period_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Throttle {
    pub limit: u32,
    pub period_ms: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CreatedRun {
    pub run: RunId,
    /// The delivery was seen before: `run` is the run it started then.
    pub duplicate: bool,
    /// The `start` step, already leased to the caller (see `NewRun::claim_start`).
    pub start: Option<ClaimedStep>,
}

/// A deployed workflow: its live version and trigger settings.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkflowRecord {
    pub name: String,
    pub version: VersionId,
    /// JSON text of the workflow's settings.
    pub settings: String,
    /// The secret of its HTTP trigger URL (`/http/<token>`), set at first deploy.
    pub http_token: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug)]
pub struct Publish {
    pub name: String,
    pub version: VersionId,
    /// JSON text of the settings.
    pub settings: String,
    /// Used only if the workflow is new.
    pub http_token: String,
    pub now: Timestamp,
    /// The workflow's schedule trigger, or none (removing any it had).
    pub schedule: Option<ScheduleSpec>,
    /// Variables to set with it (secrets already sealed), in the same
    /// transaction; others the workflow has are kept.
    pub env: Vec<EnvVar>,
}

/// A schedule as the store keeps it: its spec (JSON text, opaque here) and
/// its first fire time. Republishing the same spec keeps its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    pub spec: String,
    pub first_fire_at: Option<Timestamp>,
}

/// A schedule whose time has come.
#[derive(Clone, Debug, PartialEq)]
pub struct DueSchedule {
    pub workflow: String,
    pub spec: String,
    pub fire_at: Timestamp,
    /// Runs it has started so far.
    pub fired: u64,
}

#[derive(Clone, Debug)]
pub struct FireSchedule {
    pub workflow: String,
    /// The fire time read from `due_schedules`; if it changed since (another
    /// node fired it), nothing happens.
    pub fire_at: Timestamp,
    /// The next fire time, or none when the schedule is over.
    pub next_fire_at: Option<Timestamp>,
    pub run: NewRun,
}

/// The queue as `/metrics` shows it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QueueStats {
    /// Steps due now and not yet claimed.
    pub due: u64,
    /// The oldest due time among them: how far behind the timers are.
    pub oldest_due: Option<Timestamp>,
}

/// Which runs to list, newest first.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub workflow: Option<String>,
    pub status: Option<RunStatus>,
    /// Only runs older than this one (the previous page's last id).
    pub before: Option<RunId>,
    pub limit: usize,
}

#[derive(Clone, Copy, Debug)]
pub struct ClaimRequest {
    pub now: Timestamp,
    pub limit: usize,
    /// When the lease of each claimed step runs out.
    pub lease_until: Timestamp,
}

/// A step handed to this node to run, with its lease.
#[derive(Clone, Debug, PartialEq)]
pub struct ClaimedStep {
    pub id: StepId,
    pub run: RunId,
    pub kind: StepKind,
    pub action: String,
    pub depth: u32,
    /// 1 for the first attempt; counts lost leases too.
    pub attempt: u32,
    /// JSON text of the step's data.
    pub payload: String,
}

/// What a step needs to know about its run.
#[derive(Clone, Debug)]
pub struct RunContext {
    pub id: RunId,
    pub workflow: String,
    pub version: VersionId,
    pub headers: String,
    pub steps_total: u64,
    /// The failure that failed the run (for `onWorkflowError`).
    pub error: Option<StepError>,
}

/// Identifies the step attempt an op belongs to, for journaling.
#[derive(Clone, Debug)]
pub struct OpContext {
    pub run: RunId,
    pub step: StepId,
    pub attempt: u32,
    /// 0-based position of the op within the attempt.
    pub seq: u32,
    pub workflow: String,
    pub now: Timestamp,
    pub max_run_state_bytes: usize,
    /// The run's state, or its workflow's (shared across runs).
    pub scope: StateScope,
    /// Replay from the journal even on a first attempt: the step is being
    /// run again after a refused commit (a checkpoint conflict).
    pub replay: bool,
}

#[derive(Clone, Debug)]
pub struct NewChild {
    pub action: String,
    /// For a wait: when it times out.
    pub due_at: Timestamp,
    /// JSON text of the payload.
    pub payload: String,
    /// Set for an `api.waitForEvent` branch: it waits for its token.
    pub wait: Option<WaitSpec>,
}

/// A workflow variable as stored: a secret's value is sealed (see
/// `flowstate_core::secrets`).
#[derive(Clone, Debug, PartialEq)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub secret: bool,
}

/// A `/resume/<token>` call.
#[derive(Clone, Debug)]
pub struct ResumeWait {
    pub token: String,
    /// JSON text of an object, merged over the wait's payload.
    pub data: String,
    pub now: Timestamp,
}

/// What a resume did.
#[derive(Clone, Debug, PartialEq)]
pub enum Resumed {
    /// The branch goes on: its step is due now.
    Resumed {
        run: RunId,
        redirect_url: Option<String>,
    },
    /// No wait has this token.
    Unknown,
    /// Resumed before: a token works once.
    AlreadyUsed { run: RunId },
    /// Timed out, or its run ended or was cancelled.
    Expired { run: RunId },
}

/// Merges a resume's data (an object) over a wait's payload: the payload's
/// fields, then the data's; a payload that is not an object is kept under
/// `payload`.
pub fn merge_resume(payload: &str, data: &str) -> String {
    use serde_json::{Map, Value};
    let mut merged = match serde_json::from_str::<Value>(payload).unwrap_or(Value::Null) {
        Value::Object(m) => m,
        Value::Null => Map::new(),
        other => Map::from_iter([("payload".to_string(), other)]),
    };
    if let Ok(Value::Object(d)) = serde_json::from_str::<Value>(data) {
        merged.extend(d);
    }
    Value::Object(merged).to_string()
}

#[derive(Clone, Debug)]
pub enum CommitKind {
    Succeeded {
        children: Vec<NewChild>,
    },
    FailedForGood {
        error: StepError,
    },
    Ended {
        reason: String,
    },
    /// A wait whose event never came: the branch ends, recorded, without
    /// failing the run.
    TimedOut {
        error: StepError,
    },
}

impl CommitKind {
    /// What this outcome is in the lifecycle's terms, the step's final
    /// status, its error, the children it schedules, and the end reason.
    pub fn plan(&self) -> CommitPlan<'_> {
        match self {
            CommitKind::Succeeded { children } => CommitPlan {
                outcome: lifecycle::Outcome::Succeeded {
                    children: children.len() as i64,
                },
                status: StepStatus::Done,
                error: None,
                children,
                end_reason: None,
            },
            CommitKind::FailedForGood { error } => CommitPlan {
                outcome: lifecycle::Outcome::FailedForGood,
                status: StepStatus::Failed,
                error: Some(error),
                children: &[],
                end_reason: None,
            },
            CommitKind::Ended { reason } => CommitPlan {
                outcome: lifecycle::Outcome::Ended,
                status: StepStatus::Ended,
                error: None,
                children: &[],
                end_reason: Some(reason),
            },
            CommitKind::TimedOut { error } => CommitPlan {
                outcome: lifecycle::Outcome::Succeeded { children: 0 },
                status: StepStatus::TimedOut,
                error: Some(error),
                children: &[],
                end_reason: None,
            },
        }
    }

    /// How this commit changes the run's count of waiting branches.
    pub fn waiting_delta(&self) -> i64 {
        match self {
            CommitKind::Succeeded { children } => {
                children.iter().filter(|c| c.wait.is_some()).count() as i64
            }
            CommitKind::TimedOut { .. } => -1,
            _ => 0,
        }
    }
}

/// A commit seen by a store (see [`CommitKind::plan`]).
#[derive(Debug)]
pub struct CommitPlan<'a> {
    pub outcome: lifecycle::Outcome,
    pub status: StepStatus,
    pub error: Option<&'a StepError>,
    pub children: &'a [NewChild],
    pub end_reason: Option<&'a str>,
}

#[derive(Clone, Debug)]
pub struct StepCommit {
    pub step: StepId,
    pub run: RunId,
    pub attempt: u32,
    pub kind: CommitKind,
    /// JSON text of the attempt's log lines (an array).
    pub logs: String,
    pub now: Timestamp,
    pub duration_ms: u64,
    pub max_steps_per_run: u64,
    pub blob_threshold: usize,
    /// Return the run state in [`FinishedRun`] if this commit ends the run.
    pub capture_state: bool,
    /// Claim up to this many due steps in the same transaction (the ones
    /// just made due first), so they start without a trip to the scheduler.
    pub claim: usize,
    /// The lease of steps claimed that way.
    pub lease_until: Timestamp,
    /// Checkpoints to write, each only if still at the version the step read.
    pub checkpoints: Vec<CheckpointWrite>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FinishedRun {
    pub run: RunId,
    pub status: RunStatus,
    /// The run state just before deletion, when asked for: (key, JSON text).
    pub state: Option<Vec<(String, String)>>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitOutcome {
    Committed {
        /// Set when this commit ended the run.
        finished: Option<FinishedRun>,
        /// Due steps claimed for the caller (see [`StepCommit::claim`]).
        claimed: Vec<ClaimedStep>,
    },
    /// The step no longer holds its lease (taken over, cancelled, or the run
    /// ended); nothing was changed.
    Superseded,
    /// Committing would take the run past its steps-per-run breaker; nothing
    /// was changed.
    StepsLimit { would_be: u64, limit: u64 },
    /// A checkpoint the step changed was changed by another run since the
    /// step read it; nothing was changed.
    CheckpointConflict { scope: String },
}

#[derive(Clone, Debug)]
pub struct StepRetry {
    pub step: StepId,
    pub attempt: u32,
    pub error: StepError,
    pub logs: String,
    pub now: Timestamp,
    pub due_at: Timestamp,
    pub duration_ms: u64,
}

#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: RunId,
    pub workflow: String,
    pub version: VersionId,
    pub status: RunStatus,
    pub pending: i64,
    pub steps_total: u64,
    pub error: Option<StepError>,
    pub end_reason: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub attempt: u32,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub error: Option<StepError>,
    pub logs: String,
}

#[derive(Clone, Debug)]
pub struct StepRecord {
    pub id: StepId,
    pub run: RunId,
    pub parent: Option<StepId>,
    pub kind: StepKind,
    pub action: String,
    pub depth: u32,
    pub status: StepStatus,
    pub attempt: u32,
    pub payload_bytes: u64,
    pub due_at: Timestamp,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub duration_ms: Option<u64>,
    pub error: Option<StepError>,
    /// JSON text of the last attempt's log lines.
    pub logs: String,
    /// Earlier attempts that failed and were retried.
    pub failed_attempts: Vec<AttemptRecord>,
}

/// Domain operations over durable state. Every method is one atomic
/// transition; none leaves a half-applied change behind.
pub trait Store: Send + Sync + 'static {
    /// Records a version of a workflow; the same source twice is one version.
    fn deploy(&self, v: NewVersion) -> impl Future<Output = Result<VersionRecord>> + Send;
    fn version(&self, id: VersionId) -> impl Future<Output = Result<VersionRecord>> + Send;

    /// Creates a run and its `start` step, due now. Durable when it returns.
    /// A delivery key seen within its TTL creates nothing.
    fn create_run(&self, r: NewRun) -> impl Future<Output = Result<CreatedRun>> + Send;

    /// Makes `version` the live version of `name`, with these settings. A
    /// new workflow gets `http_token`; an existing one keeps its token.
    fn publish(&self, p: Publish) -> impl Future<Output = Result<WorkflowRecord>> + Send;
    fn workflow(&self, name: String)
    -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send;
    fn workflow_by_token(
        &self,
        token: String,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send;
    fn workflows(&self) -> impl Future<Output = Result<Vec<WorkflowRecord>>> + Send;
    /// Removes a deployed workflow; its runs and their history stay.
    fn remove_workflow(&self, name: String) -> impl Future<Output = Result<bool>> + Send;

    fn list_runs(&self, f: RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send;
    /// Cancels an unfinished run: its steps are cancelled and its state
    /// deleted. `None` if the run had already finished.
    fn cancel_run(
        &self,
        run: RunId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<FinishedRun>>> + Send;

    /// Leases due steps (and steps whose lease ran out) to the caller.
    fn claim_due_steps(
        &self,
        c: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<ClaimedStep>>> + Send;

    /// The earliest time a step becomes claimable, if any.
    fn next_due_at(&self) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    fn run_context(&self, run: RunId) -> impl Future<Output = Result<RunContext>> + Send;

    /// Applies a state op of a step attempt and journals it, or replays it
    /// from the journal when a retried step repeats it (DESIGN.md 1.3).
    /// Returns the op's result as JSON text.
    fn apply_state_op(
        &self,
        ctx: OpContext,
        op: StateOp,
    ) -> impl Future<Output = Result<String, OpError>> + Send;

    /// Records a step's final outcome, its children, and what that means for
    /// the run (see `flowstate_core::lifecycle`), in one transaction.
    fn commit_step(&self, c: StepCommit) -> impl Future<Output = Result<CommitOutcome>> + Send;

    /// Puts a failed attempt back as pending, due at `due_at`. Its journal is
    /// kept so the retry replays the state ops already applied. Returns
    /// `false` if the step no longer holds its lease.
    fn retry_step(&self, r: StepRetry) -> impl Future<Output = Result<bool>> + Send;

    fn run(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send;
    fn steps(&self, run: RunId) -> impl Future<Output = Result<Vec<StepRecord>>> + Send;
    /// The live run state: (key, JSON text), by key.
    fn run_state(&self, run: RunId) -> impl Future<Output = Result<Vec<(String, String)>>> + Send;
    /// Runs not yet finished, oldest first, optionally of one workflow.
    fn unfinished_runs(
        &self,
        workflow: Option<String>,
    ) -> impl Future<Output = Result<Vec<RunId>>> + Send;

    fn queue_stats(&self, now: Timestamp) -> impl Future<Output = Result<QueueStats>> + Send;

    /// Schedules due at `now`, oldest first.
    fn due_schedules(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<DueSchedule>>> + Send;
    /// Starts the scheduled run and moves the schedule on, in one
    /// transaction; `None` if the schedule was fired or changed meanwhile.
    fn fire_schedule(
        &self,
        f: FireSchedule,
    ) -> impl Future<Output = Result<Option<CreatedRun>>> + Send;
    /// When the earliest schedule fires next.
    fn next_schedule_at(&self) -> impl Future<Output = Result<Option<Timestamp>>> + Send;

    /// Deletes the history (run, steps, attempts) of runs finished before
    /// `before`, and delivery and dedupe keys expired by then. Returns how
    /// many runs were pruned.
    fn prune_history(&self, before: Timestamp) -> impl Future<Output = Result<u64>> + Send;

    /// Gives up these leases (step, attempt) so that any node can take the
    /// steps at once (a node shutting down with steps still running).
    /// Returns how many were released; steps since committed are left alone.
    fn release_leases(
        &self,
        leases: Vec<(StepId, u32)>,
    ) -> impl Future<Output = Result<u64>> + Send;

    /// A workflow's checkpoint (`scope` as in [`CheckpointWrite::scope`]).
    fn checkpoint(
        &self,
        workflow: String,
        scope: String,
    ) -> impl Future<Output = Result<Checkpoint>> + Send;
    /// Sets (or, with `None`, clears) a checkpoint from outside a run (CLI,
    /// API), whatever its version; returns it as now stored. Durable when it
    /// returns.
    fn put_checkpoint(
        &self,
        workflow: String,
        scope: String,
        value: Option<String>,
        now: Timestamp,
    ) -> impl Future<Output = Result<Checkpoint>> + Send;

    /// Stores or reads a workflow's imported CSV chunks (`api.csv`); chunks
    /// expire `CSV_TTL` after their import began.
    fn csv_op(
        &self,
        workflow: String,
        op: flowstate_core::executor::CsvOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// A workflow's variables and (sealed) secrets, by name.
    fn env_vars(&self, workflow: String) -> impl Future<Output = Result<Vec<EnvVar>>> + Send;
    /// Sets a variable, replacing one of that name. Durable when it returns.
    fn set_env(
        &self,
        workflow: String,
        var: EnvVar,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes a variable; `false` if there was none. Durable when it returns.
    fn unset_env(
        &self,
        workflow: String,
        name: String,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Resumes the `api.waitForEvent` branch with this token, once. Durable
    /// when it returns.
    fn resume_wait(&self, r: ResumeWait) -> impl Future<Output = Result<Resumed>> + Send;

    /// Resolves once every write accepted before it is durable.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send;
}
