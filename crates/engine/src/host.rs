//! The engine's side of a running step: state operations from the sandbox's
//! worker thread, numbered per attempt so the store can journal and replay
//! them, and checked against the size limits before they reach the store.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use flowstate_core::checkpoint::Checkpoint;
use flowstate_core::executor::{CsvOp, StepHost};
use flowstate_core::limits::Limits;
use flowstate_core::state::{StateOp, StateScope};
use flowstate_core::{Clock, RunId, StepId, Timestamp};
use flowstate_store::{OpContext, OpError, Store};
use tokio::runtime::Handle;

pub struct EngineHost<S> {
    pub store: Arc<S>,
    pub clock: Arc<dyn Clock>,
    pub runtime: Handle,
    pub limits: Arc<Limits>,
    pub run: RunId,
    pub step: StepId,
    pub attempt: u32,
    pub workflow: String,
    pub seq: AtomicU32,
    /// A re-run after a checkpoint conflict: replay the journal.
    pub replay: bool,
}

impl<S: Store> StepHost for EngineHost<S> {
    fn state(&self, scope: StateScope, op: StateOp) -> Result<String, String> {
        op.check_sizes(self.limits.max_key_bytes, self.limits.max_value_bytes)
            .map_err(|e| e.message(scope))?;
        let ctx = OpContext {
            run: self.run,
            step: self.step,
            attempt: self.attempt,
            seq: self.seq.fetch_add(1, Ordering::SeqCst),
            workflow: self.workflow.clone(),
            now: self.clock.now(),
            max_run_state_bytes: self.limits.max_run_state_bytes,
            scope,
            replay: self.replay,
        };
        // Called on a sandbox worker thread, never inside the async runtime.
        self.runtime
            .block_on(self.store.apply_state_op(ctx, op))
            .map_err(|e| match e {
                OpError::State(e) => e.message(scope),
                OpError::Store(e) => format!(
                    "flowstate could not apply the operation ({e}); the step will be retried"
                ),
            })
    }

    fn checkpoint(&self, scope: &str) -> Result<Checkpoint, String> {
        self.runtime
            .block_on(
                self.store
                    .checkpoint(self.workflow.clone(), scope.to_string()),
            )
            .map_err(|e| {
                format!("flowstate could not read the checkpoint ({e}); the step will be retried")
            })
    }

    fn csv(&self, op: CsvOp) -> Result<Option<String>, String> {
        self.runtime
            .block_on(
                self.store
                    .csv_op(self.workflow.clone(), op, self.clock.now()),
            )
            .map_err(|e| {
                format!("flowstate could not store or read the CSV chunk ({e}); the step will be retried")
            })
    }

    fn now(&self) -> Timestamp {
        self.clock.now()
    }
}
