//! The scheduler. It claims due steps from the [`Store`] under a lease,
//! runs them through a [`StepExecutor`], and commits each outcome; what an
//! outcome means for the run is decided by `flowstate_core::lifecycle`
//! inside the store's commit. Time comes only from the [`Clock`]: on a
//! virtual clock with fast-forward, the engine jumps to the next due step
//! whenever nothing is running, so delays of days cost nothing.

mod config;
mod env;
mod host;
mod scheduler;
mod stats;
mod step;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flowstate_core::executor::{LoadError, StepExecutor, WorkflowCode};
use flowstate_core::{Clock, RunId, VersionId};
use flowstate_store::{
    CreatedRun, DeliveryKey, FinishedRun, NewRun, NewVersion, ResumeWait, Resumed, RunContext,
    RunGate, Store, StoreError, VersionRecord,
};
use thiserror::Error;
use tokio::sync::{Mutex, Notify, watch};

pub use config::EngineConfig;
pub use scheduler::Until;
pub use stats::{LATENCY_BUCKETS_MS, Stats};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("{0}")]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Stuck(String),
}

pub type Result<T> = std::result::Result<T, EngineError>;

/// A run whose `start` ran inline.
#[derive(Debug)]
pub struct InlineRun {
    pub run: RunId,
    /// What `start` returned.
    pub returned: Option<flowstate_core::executor::Returned>,
    /// Why `start` failed (it is retried in the background like any step).
    pub error: Option<flowstate_core::executor::StepError>,
    /// The workflow's concurrency limit or throttle holds the run back:
    /// `start` runs later, in the background.
    pub queued: bool,
}

pub struct Engine<S, E> {
    inner: Arc<Inner<S, E>>,
}

impl<S, E> Clone for Engine<S, E> {
    fn clone(&self) -> Self {
        Engine {
            inner: self.inner.clone(),
        }
    }
}

pub(crate) struct Inner<S, E> {
    pub store: Arc<S>,
    pub executor: Arc<E>,
    pub clock: Arc<dyn Clock>,
    pub config: EngineConfig,
    /// Something changed: a step finished, a run was created.
    pub wake: Notify,
    pub inflight: AtomicUsize,
    /// Leases this engine holds: (step, attempt) of steps being run.
    pub held: std::sync::Mutex<std::collections::HashSet<(flowstate_core::StepId, u32)>>,
    /// Shutting down: finish what runs, claim nothing more.
    pub stopping: std::sync::atomic::AtomicBool,
    pub stats: Stats,
    pub code: Mutex<HashMap<VersionId, Arc<WorkflowCode>>>,
    pub runs: Mutex<HashMap<RunId, Arc<RunContext>>>,
    /// Runs that finished while this engine ran, durable when listed.
    pub finished: watch::Sender<HashMap<RunId, FinishedRun>>,
    pub env: env::EnvCache,
}

impl<S: Store, E: StepExecutor> Engine<S, E> {
    pub fn new(
        store: Arc<S>,
        executor: Arc<E>,
        clock: Arc<dyn Clock>,
        config: EngineConfig,
    ) -> Self {
        Engine {
            inner: Arc::new(Inner {
                store,
                executor,
                clock,
                config,
                wake: Notify::new(),
                inflight: AtomicUsize::new(0),
                held: Default::default(),
                stopping: std::sync::atomic::AtomicBool::new(false),
                stats: Stats::default(),
                code: Mutex::default(),
                runs: Mutex::default(),
                finished: watch::Sender::new(HashMap::new()),
                env: Default::default(),
            }),
        }
    }

    /// The operator's key for workflow secrets, if the server has one.
    pub fn secret_key(&self) -> Option<&flowstate_core::secrets::SecretKey> {
        self.inner.config.secret_key.as_ref()
    }

    pub fn store(&self) -> &Arc<S> {
        &self.inner.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    pub fn inflight(&self) -> usize {
        self.inner.inflight.load(Ordering::SeqCst)
    }

    /// Compiles and records a version of a workflow; refuses one that does
    /// not load, with the JS error and its line.
    pub async fn deploy(&self, name: &str, source: &str) -> Result<VersionRecord> {
        let info = self.inner.executor.inspect(name, source)?;
        let v = self
            .inner
            .store
            .deploy(NewVersion {
                name: name.to_string(),
                source: source.to_string(),
                info,
                now: self.inner.clock.now(),
            })
            .await?;
        Ok(v)
    }

    /// A new run of `version` now, with the trigger's data and headers
    /// (JSON text), for a trigger to adjust and record.
    pub fn new_run(&self, version: &VersionRecord, data: String, headers: String) -> NewRun {
        NewRun {
            delivery: None,
            workflow: version.name.clone(),
            version: version.id,
            data,
            headers,
            has_complete_hook: version.info.has_complete_hook,
            has_error_hook: version.info.has_error_hook,
            now: self.inner.clock.now(),
            claim_start: None,
            gate: None,
        }
    }

    /// Starts a run of `version` with the trigger's data and headers (JSON
    /// text). Durable when it returns.
    pub async fn start_run(
        &self,
        version: &VersionRecord,
        data: String,
        headers: String,
    ) -> Result<RunId> {
        Ok(self.trigger(version, data, headers, None, None).await?.run)
    }

    /// Starts a run for a trigger delivery; a delivery key seen before
    /// (within its TTL) starts nothing and names the run it started then.
    pub async fn trigger(
        &self,
        version: &VersionRecord,
        data: String,
        headers: String,
        delivery: Option<DeliveryKey>,
        gate: Option<RunGate>,
    ) -> Result<CreatedRun> {
        let run = NewRun {
            delivery,
            gate,
            ..self.new_run(version, data, headers)
        };
        let created = self.inner.store.create_run(run).await?;
        if !created.duplicate {
            self.inner
                .stats
                .runs_started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.inner.wake.notify_one();
        }
        Ok(created)
    }

    /// Starts a run and runs its `start` step here and now, for triggers that
    /// answer with what `start` returns (HTTP). Steps it scheduled go on in
    /// the background. Durable when it returns.
    pub async fn trigger_inline(
        &self,
        version: &VersionRecord,
        data: String,
        headers: String,
        gate: Option<RunGate>,
    ) -> Result<InlineRun> {
        let inner = &self.inner;
        let now = inner.clock.now();
        let lease = inner.config.limits.step_wall + inner.config.lease_margin;
        let gated = gate.is_some();
        let run = NewRun {
            claim_start: Some(now.plus(lease)),
            gate,
            ..self.new_run(version, data, headers)
        };
        let created = inner.store.create_run(run).await?;
        inner.stats.runs_started.fetch_add(1, Ordering::Relaxed);
        let Some(start) = created.start else {
            if !gated {
                return Err(EngineError::Stuck(
                    "the new run's start step was not leased to its creator".into(),
                ));
            }
            inner.store.flush().await?;
            inner.wake.notify_one();
            return Ok(InlineRun {
                run: created.run,
                returned: None,
                error: None,
                queued: true,
            });
        };
        inner.inflight.fetch_add(1, Ordering::SeqCst);
        let attempt = step::run_and_commit(inner, start).await;
        if let Ok(a) = &attempt {
            for other in a.claimed.iter().cloned() {
                inner.inflight.fetch_add(1, Ordering::SeqCst);
                step::spawn_process(inner.clone(), other);
            }
        }
        inner.inflight.fetch_sub(1, Ordering::SeqCst);
        inner.wake.notify_one();
        let attempt = attempt?;
        inner.store.flush().await?;
        Ok(InlineRun {
            run: created.run,
            returned: attempt.returned,
            error: attempt.error,
            queued: false,
        })
    }

    /// Cancels a run: pending steps are dropped, running ones lose their
    /// lease, the state is deleted. `None` if it had already finished.
    pub async fn cancel(&self, run: RunId) -> Result<Option<FinishedRun>> {
        let done = self
            .inner
            .store
            .cancel_run(run, self.inner.clock.now())
            .await?;
        if let Some(done) = &done {
            self.inner.stats.run_finished(done.status);
            self.inner.runs.lock().await.remove(&run);
            self.inner.finished.send_modify(|f| {
                f.insert(run, done.clone());
            });
        }
        Ok(done)
    }

    /// Resumes the `api.waitForEvent` branch with this token (once), its
    /// payload merged with `data` (a JSON object's text). Durable when it
    /// returns.
    pub async fn resume(&self, token: String, data: String) -> Result<Resumed> {
        let resumed = self
            .inner
            .store
            .resume_wait(ResumeWait {
                token,
                data,
                now: self.inner.clock.now(),
            })
            .await?;
        if let Resumed::Resumed { run, .. } = &resumed {
            // The run's cached context may say it was waiting; nothing else changed.
            tracing::debug!(run = %run, "a waiting branch was resumed");
            self.inner.wake.notify_one();
        }
        Ok(resumed)
    }

    /// Forgets a workflow's cached env, after it was changed through this
    /// engine's server (other nodes see the change within a second).
    pub async fn env_changed(&self, workflow: &str) {
        self.inner.env.forget(workflow).await;
    }

    /// Runs the scheduler until `until` holds.
    pub async fn drive(&self, until: Until) -> Result<()> {
        scheduler::drive(&self.inner, until).await
    }

    /// Has the scheduler look for due steps now (after runs were created
    /// behind its back, e.g. by a schedule firing through the store).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Gives up the leases of steps still running here, so that other nodes
    /// (or this one, restarted) take them at once; their late commits are
    /// refused. For a shutdown whose grace period ran out.
    pub async fn release_held(&self) -> Result<u64> {
        let held: Vec<_> = self
            .inner
            .held
            .lock()
            .expect("never poisoned")
            .drain()
            .collect();
        if held.is_empty() {
            return Ok(0);
        }
        Ok(self.inner.store.release_leases(held).await?)
    }

    /// How a run finished, if it finished while this engine ran.
    pub fn finished(&self, run: RunId) -> Option<FinishedRun> {
        self.inner.finished.borrow().get(&run).cloned()
    }
}
