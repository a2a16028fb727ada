//! The engine's settings. Limits are those of the contract; the rest tune
//! how the scheduler claims and dispatches.

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::limits::Limits;

#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub limits: Arc<Limits>,
    /// A claimed step's lease: its wall limit plus this margin, so a live
    /// worker always finishes (or is stopped) before its lease runs out.
    pub lease_margin: Duration,
    /// Steps claimed and not yet committed, at most. Enough to keep every
    /// JS worker busy while others wait on the store.
    pub max_inflight: usize,
    /// On a virtual clock: jump to the next due step whenever idle.
    pub fast_forward: bool,
    /// Longest sleep between looks at the store when nothing wakes the
    /// scheduler (another node may have added work).
    pub poll_interval: Duration,
    /// Keep the run state of finished runs in their `FinishedRun` (for
    /// `flowstate run`, which prints it).
    pub capture_final_state: bool,
    /// The server's base URL as the outside reaches it, for the
    /// `resumeUrl`s of `api.waitForEvent`.
    pub public_url: Arc<str>,
    /// Opens the workflows' secrets; without it, a step of a workflow with
    /// secrets fails with a message that says so.
    pub secret_key: Option<flowstate_core::secrets::SecretKey>,
}

impl EngineConfig {
    pub fn new(limits: Limits, workers: usize) -> Self {
        EngineConfig {
            limits: Arc::new(limits),
            lease_margin: Duration::from_secs(60),
            max_inflight: (workers * 8).max(8),
            fast_forward: false,
            poll_interval: Duration::from_secs(1),
            capture_final_state: false,
            public_url: Arc::from(flowstate_core::executor::DEFAULT_PUBLIC_URL),
            secret_key: None,
        }
    }
}
