//! The JavaScript sandbox: QuickJS (rquickjs) behind the engine's
//! [`StepExecutor`] seam. A fixed pool of worker threads, sized to the
//! cores, runs step attempts; each attempt gets a fresh runtime loaded from
//! bytecode compiled once per workflow version. Nothing here knows SQL:
//! state operations go back to the engine through the job's `StepHost`.

mod compile;
mod cpu;
mod csv_import;
mod fetch;
mod natives;
mod schedule;
mod step;

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use flowstate_core::VersionId;
use flowstate_core::executor::{
    ErrorKind, LoadError, StepError, StepExecutor, StepJob, StepReport, StepResult, WorkflowInfo,
};
use tokio::sync::oneshot;

pub use compile::{Compiled, compile};
pub use fetch::{DEFAULT_DENY, DenyRule, FetchPolicy};

/// Native stack of a worker thread: room for QuickJS's own guard
/// (`step::JS_STACK_BYTES`) plus the host calls beneath it.
const WORKER_STACK_BYTES: usize = 16 * 1024 * 1024;

struct Work {
    job: StepJob,
    reply: oneshot::Sender<StepReport>,
}

type Cache = Arc<Mutex<HashMap<VersionId, Arc<Compiled>>>>;

pub struct Sandbox {
    work: Option<Sender<Work>>,
    workers: Vec<JoinHandle<()>>,
}

impl Sandbox {
    /// A pool of `workers` JS threads (at least one), `fetch` as by default.
    pub fn new(workers: usize) -> Self {
        Self::with_fetch(workers, FetchPolicy::default())
    }

    /// A pool whose steps fetch under `policy`.
    pub fn with_fetch(workers: usize, policy: FetchPolicy) -> Self {
        let policy = Arc::new(policy);
        let (tx, rx) = crossbeam_channel::unbounded::<Work>();
        let cache: Cache = Arc::default();
        let workers = (0..workers.max(1))
            .map(|i| {
                let rx = rx.clone();
                let cache = cache.clone();
                let policy = policy.clone();
                std::thread::Builder::new()
                    .name(format!("flowstate-js-{i}"))
                    .stack_size(WORKER_STACK_BYTES)
                    .spawn(move || worker_loop(rx, cache, policy))
                    .expect("the OS can start a sandbox worker thread")
            })
            .collect();
        Sandbox {
            work: Some(tx),
            workers,
        }
    }

    /// One worker per available core, fetching under `policy`.
    pub fn sized_to_cores_with(policy: FetchPolicy) -> Self {
        Self::with_fetch(cores(), policy)
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }
}

impl Drop for Sandbox {
    /// Closes the queue; idle workers stop. A worker still running a step is
    /// not waited for: its lease is released or lost with the process, and
    /// the step runs again elsewhere.
    fn drop(&mut self) {
        self.work.take();
        self.workers.clear();
    }
}

impl StepExecutor for Sandbox {
    fn inspect(&self, name: &str, source: &str) -> Result<WorkflowInfo, LoadError> {
        compile(name, source).map(|c| c.info)
    }

    fn execute(&self, job: StepJob) -> impl Future<Output = StepReport> + Send {
        let (reply, rx) = oneshot::channel();
        let sent = self
            .work
            .as_ref()
            .is_some_and(|w| w.send(Work { job, reply }).is_ok());
        async move {
            let lost = || StepReport {
                result: StepResult::Failed(StepError::new(
                    ErrorKind::Internal,
                    "InternalError",
                    "the sandbox shut down before the step finished",
                )),
                logs: vec![],
                returned: None,
                checkpoints: vec![],
            };
            if !sent {
                return lost();
            }
            rx.await.unwrap_or_else(|_| lost())
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

fn worker_loop(rx: Receiver<Work>, cache: Cache, policy: Arc<FetchPolicy>) {
    while let Ok(Work { job, reply }) = rx.recv() {
        let failed = |name: &str, message: String| {
            let error = StepError::new(ErrorKind::Internal, name, message);
            let report = StepReport {
                result: StepResult::Failed(error),
                logs: vec![],
                returned: None,
                checkpoints: vec![],
            };
            (report, step::Teardown(None))
        };
        let (report, teardown) = match compiled_for(&cache, &job) {
            Ok(compiled) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                step::run_step(job, &compiled, &policy)
            }))
            .unwrap_or_else(|_| {
                failed(
                    "InternalError",
                    "the sandbox panicked while running the step".into(),
                )
            }),
            Err(e) => failed("LoadError", e.message),
        };
        // Answer first; the runtime's teardown is off the engine's path.
        let _ = reply.send(report);
        drop(teardown);
    }
}

fn compiled_for(cache: &Cache, job: &StepJob) -> Result<Arc<Compiled>, LoadError> {
    let version = job.code.version;
    if let Some(c) = cache
        .lock()
        .expect("the bytecode cache is never poisoned")
        .get(&version)
    {
        return Ok(c.clone());
    }
    // Compiled outside the lock; two workers racing on a new version both
    // compile it once, and one copy wins.
    let compiled = Arc::new(compile(&job.code.name, &job.code.source)?);
    cache
        .lock()
        .expect("the bytecode cache is never poisoned")
        .insert(version, compiled.clone());
    Ok(compiled)
}
