//! One claimed step, from its lease to its commit: build the job, run it in
//! the executor, and record the outcome (success with children, a retry
//! with backoff, a failure for good, or the end of the run).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use flowstate_core::RunId;
use flowstate_core::checkpoint::CheckpointWrite;
use flowstate_core::executor::{
    ErrorKind, LogLevel, LogLine, Returned, RunMeta, StepError, StepExecutor, StepJob, StepLimits,
    StepReport, StepResult, WorkflowCode,
};
use flowstate_core::status::StepKind;
use flowstate_store::{
    ClaimedStep, CommitKind, CommitOutcome, NewChild, RunContext, StepCommit, StepRetry, Store,
};

use crate::host::EngineHost;
use crate::{Inner, Result};

/// Starts a task for a claimed step whose slot is already counted.
pub fn spawn_process<S: Store, E: StepExecutor>(inner: Arc<Inner<S, E>>, step: ClaimedStep) {
    // Boxed with an explicit `Send`: `process` spawns itself, and the
    // compiler cannot infer that through the cycle.
    let task: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(process(inner, step));
    tokio::spawn(task);
}

/// Runs a claimed step and, while its commit hands back steps it made due,
/// goes on with the first of them in the same slot (a chain of zero-delay
/// steps never waits for the scheduler); the others get tasks of their own.
pub async fn process<S: Store, E: StepExecutor>(inner: Arc<Inner<S, E>>, step: ClaimedStep) {
    let mut next = Some(step);
    while let Some(step) = next.take() {
        let id = step.id;
        match run_and_commit(&inner, step).await {
            Ok(attempt) => {
                let mut claimed = attempt.claimed.into_iter();
                next = claimed.next();
                for other in claimed {
                    inner.inflight.fetch_add(1, Ordering::SeqCst);
                    spawn_process(inner.clone(), other);
                }
            }
            Err(e) => {
                // The lease runs out and the step is retried; nothing was committed.
                tracing::error!(step = %id, error = %e, "step could not be recorded; it will be retried when its lease expires");
            }
        }
    }
    inner.inflight.fetch_sub(1, Ordering::SeqCst);
    inner.wake.notify_one();
}

/// How one attempt went, for its caller.
pub struct Attempt {
    /// Due steps its commit claimed for this node.
    pub claimed: Vec<ClaimedStep>,
    /// What the method returned.
    pub returned: Option<Returned>,
    /// Why it failed, if it did (it may be retried).
    pub error: Option<StepError>,
}

/// Runs one step attempt and records it.
pub async fn run_and_commit<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    step: ClaimedStep,
) -> Result<Attempt> {
    let lease = (step.id, step.attempt);
    inner.held.lock().expect("never poisoned").insert(lease);
    let attempt = attempt_step(inner, step).await;
    inner.held.lock().expect("never poisoned").remove(&lease);
    attempt
}

async fn attempt_step<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    step: ClaimedStep,
) -> Result<Attempt> {
    let limits = inner.config.limits.clone();
    let run = run_context(inner, step.run, step.kind.is_hook()).await?;
    let max_attempts = limits.max_retries + 1;
    if step.attempt > max_attempts {
        // Earlier attempts lost their worker (crash, node death) without
        // reporting; the last of them used up the retries.
        let error = StepError::new(
            ErrorKind::WorkerLost,
            "WorkerLost",
            format!(
                "the step's worker was lost (process crash or node death) and it has used all {max_attempts} attempts"
            ),
        );
        return without_js(inner, &step, CommitKind::FailedForGood { error }).await;
    }
    if step.kind == StepKind::WaitTimeout {
        // The event never came: the branch ends here, recorded, without JS.
        let error = StepError::new(
            ErrorKind::WaitTimeout,
            "WaitTimeout",
            format!(
                "no event resumed this branch before its timeout; '{}' did not run",
                step.action
            ),
        );
        return without_js(inner, &step, CommitKind::TimedOut { error }).await;
    }
    let code = workflow_code(inner, &run).await?;
    let step_env = match crate::env::step_env(inner, &run.workflow).await {
        Ok(env) => env,
        Err(message) => {
            // Retried like any failure: the operator may fix the key meanwhile.
            let error = StepError::new(ErrorKind::Internal, "SecretUnavailable", message);
            let report = StepReport {
                result: StepResult::Failed(error.clone()),
                logs: Vec::new(),
                returned: None,
                checkpoints: Vec::new(),
            };
            let claimed = done(record(inner, &step, report, "[]".into(), 0).await?);
            return Ok(Attempt {
                claimed,
                returned: None,
                error: Some(error),
            });
        }
    };
    let job = |replay: bool| StepJob {
        code: code.clone(),
        run: RunMeta {
            id: run.id,
            workflow: run.workflow.clone(),
            action: step.action.clone(),
            step_id: step.id,
            attempt: step.attempt,
            depth: step.depth,
            status: "running".into(),
        },
        kind: step.kind,
        data: step.payload.clone(),
        headers: Arc::from(run.headers.as_str()),
        error: run.error.clone(),
        limits: StepLimits {
            cpu: limits.step_cpu,
            wall: limits.step_wall,
            memory: limits.step_memory,
            limits: limits.clone(),
            steps_left: limits.max_steps_per_run.saturating_sub(run.steps_total),
        },
        host: Arc::new(EngineHost {
            store: inner.store.clone(),
            clock: inner.clock.clone(),
            runtime: tokio::runtime::Handle::current(),
            limits: limits.clone(),
            run: run.id,
            step: step.id,
            attempt: step.attempt,
            workflow: run.workflow.clone(),
            seq: AtomicU32::new(0),
            replay,
        }),
        public_url: inner.config.public_url.clone(),
        env: step_env.clone(),
    };
    // A checkpoint conflict refuses the commit and changes nothing: the step
    // runs again under the same lease on the new value, replaying the state
    // ops it already applied. Only a run of conflicts costs an attempt.
    let mut reruns = 0;
    loop {
        let started = Instant::now();
        let mut report = inner.executor.execute(job(reruns > 0)).await;
        inner.stats.step_latency.observe(started.elapsed());
        let duration_ms = started.elapsed().as_millis() as u64;
        if !step_env.secrets.is_empty() {
            redact_report(&mut report, &step_env.secrets);
        }
        if reruns > 0 {
            report.logs.push(LogLine {
                at: inner.clock.now(),
                level: LogLevel::Info,
                message: format!(
                    "ran {} times: another run changed a checkpoint this step changes",
                    reruns + 1
                ),
            });
        }
        if reruns >= MAX_CHECKPOINT_RERUNS && !matches!(report.result, StepResult::Failed(_)) {
            report.result = StepResult::Failed(StepError::new(
                ErrorKind::CheckpointConflict,
                "CheckpointConflict",
                format!(
                    "other runs changed the checkpoint while this step ran, {reruns} times in a row; the step will be retried (serialise the workflow with concurrency: 1 if its runs all update one checkpoint)"
                ),
            ));
            report.checkpoints.clear();
        }
        let logs = serde_json::to_string(&report.logs).expect("log lines serialise");
        let returned = report.returned.clone();
        let error = match &report.result {
            StepResult::Failed(e) => Some(e.clone()),
            _ => None,
        };
        match record(inner, &step, report, logs, duration_ms).await? {
            Recorded::Done(claimed) => {
                return Ok(Attempt {
                    claimed,
                    returned,
                    error,
                });
            }
            Recorded::CheckpointConflict(scope) => {
                tracing::debug!(step = %step.id, scope, "checkpoint conflict; running the step again");
                inner
                    .stats
                    .checkpoint_conflicts
                    .fetch_add(1, Ordering::Relaxed);
                reruns += 1;
            }
        }
    }
}

/// Keeps secret values out of the run history: the step's log lines and
/// its error.
fn redact_report(report: &mut StepReport, secrets: &[String]) {
    use flowstate_core::secrets::redact;
    for line in &mut report.logs {
        line.message = redact(&line.message, secrets);
    }
    if let StepResult::Failed(e) = &mut report.result {
        e.message = redact(&e.message, secrets);
        e.stack = e.stack.as_deref().map(|s| redact(s, secrets));
    }
}

/// Records an outcome decided without running the step's code (a lost
/// worker's last attempt, a wait's timeout).
async fn without_js<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    step: &ClaimedStep,
    kind: CommitKind,
) -> Result<Attempt> {
    let error = match &kind {
        CommitKind::FailedForGood { error } => Some(error.clone()),
        _ => None,
    };
    let claimed = done(commit(inner, step, kind, "[]".into(), 0, Vec::new()).await?);
    Ok(Attempt {
        claimed,
        returned: None,
        error,
    })
}

/// The claims of an outcome that wrote no checkpoint, so cannot conflict.
fn done(recorded: Recorded) -> Vec<ClaimedStep> {
    match recorded {
        Recorded::Done(claimed) => claimed,
        Recorded::CheckpointConflict(_) => unreachable!("no checkpoint was written"),
    }
}

/// Conflicts in a row after which a step counts as failed (and is retried
/// with backoff like any failure).
const MAX_CHECKPOINT_RERUNS: u32 = 50;

/// How recording an attempt went.
enum Recorded {
    /// Committed or retried; any due steps its commit claimed.
    Done(Vec<ClaimedStep>),
    /// Refused: a checkpoint changed since the step read it.
    CheckpointConflict(String),
}

/// Commits an attempt's outcome, or schedules its retry.
async fn record<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    step: &ClaimedStep,
    report: StepReport,
    logs: String,
    duration_ms: u64,
) -> Result<Recorded> {
    let limits = &inner.config.limits;
    let now = inner.clock.now();
    let checkpoints = report.checkpoints;
    match report.result {
        StepResult::Completed { scheduled } => {
            let children = scheduled
                .into_iter()
                .map(|s| NewChild {
                    action: s.action,
                    due_at: now.plus(s.delay),
                    payload: s.payload,
                    wait: s.wait,
                })
                .collect();
            commit(
                inner,
                step,
                CommitKind::Succeeded { children },
                logs,
                duration_ms,
                checkpoints,
            )
            .await
        }
        StepResult::Ended { reason } => {
            commit(
                inner,
                step,
                CommitKind::Ended { reason },
                logs,
                duration_ms,
                checkpoints,
            )
            .await
        }
        StepResult::Failed(error) => {
            // Hooks are not retried for throwing: a hook that throws is logged.
            let backoff = if step.kind.is_hook() {
                None
            } else {
                limits.retry_backoff(step.attempt)
            };
            match backoff {
                Some(backoff) => {
                    let retry = StepRetry {
                        step: step.id,
                        attempt: step.attempt,
                        error,
                        logs,
                        now,
                        due_at: now.plus(backoff),
                        duration_ms,
                    };
                    if inner.store.retry_step(retry).await? {
                        inner.stats.steps_retried.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Recorded::Done(Vec::new()))
                }
                None => {
                    commit(
                        inner,
                        step,
                        CommitKind::FailedForGood { error },
                        logs,
                        duration_ms,
                        Vec::new(),
                    )
                    .await
                }
            }
        }
    }
}

async fn commit<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    step: &ClaimedStep,
    kind: CommitKind,
    logs: String,
    duration_ms: u64,
    checkpoints: Vec<CheckpointWrite>,
) -> Result<Recorded> {
    let limits = &inner.config.limits;
    let failed = matches!(kind, CommitKind::FailedForGood { .. });
    let now = inner.clock.now();
    // This task's slot carries on with one claimed step; free slots take the rest.
    let free = inner
        .config
        .max_inflight
        .saturating_sub(inner.inflight.load(Ordering::SeqCst));
    let mut c = StepCommit {
        step: step.id,
        run: step.run,
        attempt: step.attempt,
        kind,
        logs,
        now,
        duration_ms,
        max_steps_per_run: limits.max_steps_per_run,
        blob_threshold: limits.blob_threshold,
        capture_state: inner.config.capture_final_state,
        claim: if inner.stopping.load(Ordering::SeqCst) {
            0
        } else {
            1 + free
        },
        lease_until: now.plus(limits.step_wall + inner.config.lease_margin),
        checkpoints,
    };
    let mut outcome = inner.store.commit_step(c.clone()).await?;
    if let CommitOutcome::StepsLimit { would_be, limit } = outcome {
        let error = StepError::new(
            ErrorKind::Breaker,
            "StepsLimitExceeded",
            format!(
                "committing this step would bring the run to {would_be} steps, over its limit of {limit}; a workflow that keeps creating steps is stopped here"
            ),
        );
        c.kind = CommitKind::FailedForGood { error };
        c.checkpoints.clear();
        outcome = inner.store.commit_step(c).await?;
    }
    match outcome {
        CommitOutcome::Committed { finished, claimed } => {
            let counter = if failed {
                &inner.stats.steps_failed
            } else {
                &inner.stats.steps_committed
            };
            counter.fetch_add(1, Ordering::Relaxed);
            if let Some(done) = finished {
                // Tell the outside only once the end of the run is durable.
                inner.store.flush().await?;
                inner.stats.run_finished(done.status);
                inner.runs.lock().await.remove(&done.run);
                inner.finished.send_modify(|f| {
                    f.insert(done.run, done);
                });
            }
            Ok(Recorded::Done(claimed))
        }
        CommitOutcome::Superseded => {
            tracing::debug!(step = %step.id, "step lost its lease before committing; outcome discarded");
            Ok(Recorded::Done(Vec::new()))
        }
        CommitOutcome::CheckpointConflict { scope } => Ok(Recorded::CheckpointConflict(scope)),
        CommitOutcome::StepsLimit { .. } => unreachable!("a failure schedules no children"),
    }
}

async fn run_context<S: Store, E>(
    inner: &Inner<S, E>,
    run: RunId,
    fresh: bool,
) -> Result<Arc<RunContext>> {
    if !fresh && let Some(ctx) = inner.runs.lock().await.get(&run) {
        return Ok(ctx.clone());
    }
    let ctx = Arc::new(inner.store.run_context(run).await?);
    let mut runs = inner.runs.lock().await;
    if runs.len() >= MAX_CACHED_RUNS {
        // Runs that wait for days would otherwise stay here; the store has them.
        runs.clear();
    }
    runs.insert(run, ctx.clone());
    Ok(ctx)
}

/// Run contexts kept in memory (each holds the trigger's headers).
const MAX_CACHED_RUNS: usize = 10_000;

async fn workflow_code<S: Store, E>(
    inner: &Inner<S, E>,
    run: &RunContext,
) -> Result<Arc<WorkflowCode>> {
    if let Some(code) = inner.code.lock().await.get(&run.version) {
        return Ok(code.clone());
    }
    let v = inner.store.version(run.version).await?;
    let code = Arc::new(WorkflowCode {
        version: v.id,
        name: v.name,
        source: v.source,
    });
    inner.code.lock().await.insert(run.version, code.clone());
    Ok(code)
}
