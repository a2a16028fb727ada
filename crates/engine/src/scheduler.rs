//! The claim-and-dispatch loop. It claims as many due steps as it has free
//! slots, hands each to a task, and otherwise sleeps until a step finishes,
//! a run arrives, or the next step falls due. A step scheduled with no delay
//! wakes the loop through its commit, so it runs at once, not on a poll.

use std::collections::HashSet;
use std::sync::atomic::Ordering;

use flowstate_core::executor::StepExecutor;
use flowstate_core::{RunId, Timestamp};
use flowstate_store::{ClaimRequest, Store};
use tokio::sync::watch;

use crate::step::spawn_process;
use crate::{EngineError, Inner, Result};
use std::sync::Arc;

/// When `Engine::drive` returns.
#[derive(Debug)]
pub enum Until {
    /// Once every one of these runs has finished (and nothing is in flight).
    Finished(Vec<RunId>),
    /// When the value turns true; steps in flight are let finish first.
    Shutdown(watch::Receiver<bool>),
}

pub async fn drive<S: Store, E: StepExecutor>(
    inner: &Arc<Inner<S, E>>,
    until: Until,
) -> Result<()> {
    let mut finished_rx = inner.finished.subscribe();
    let mut waiting: HashSet<RunId> = match &until {
        Until::Finished(runs) => runs.iter().copied().collect(),
        Until::Shutdown(_) => HashSet::new(),
    };
    let lease = inner.config.limits.step_wall + inner.config.lease_margin;
    loop {
        waiting.retain(|r| !inner.finished.borrow().contains_key(r));
        let done = match &until {
            Until::Finished(_) => waiting.is_empty(),
            Until::Shutdown(rx) => *rx.borrow(),
        };
        let inflight = inner.inflight.load(Ordering::SeqCst);
        if done {
            inner.stopping.store(true, Ordering::SeqCst);
            if inflight == 0 {
                return Ok(());
            }
            inner.wake.notified().await;
            continue;
        }

        let free = inner.config.max_inflight.saturating_sub(inflight);
        if can_claim(inner.config.max_inflight, inflight) {
            let now = inner.clock.now();
            let claimed = inner
                .store
                .claim_due_steps(ClaimRequest {
                    now,
                    limit: free,
                    lease_until: now.plus(lease),
                })
                .await?;
            let full = claimed.len() == free;
            if !claimed.is_empty() {
                for step in claimed {
                    inner.inflight.fetch_add(1, Ordering::SeqCst);
                    spawn_process(inner.clone(), step);
                }
            }
            if full {
                // There may be more due: claim again once slots free up.
                inner.wake.notified().await;
                continue;
            }
        }

        // Nothing more to claim now: wait for a wake-up or the next due
        // time. What is in flight may have changed since the top of the loop.
        let inflight = inner.inflight.load(Ordering::SeqCst);
        let claimable = can_claim(inner.config.max_inflight, inflight);
        let next = inner.store.next_due_at().await?;
        let now = inner.clock.now();
        if next.is_some_and(|t| t <= now) && claimable {
            continue;
        }
        if inflight == 0
            && inner.config.fast_forward
            && let Some(clock) = inner.clock.as_virtual()
        {
            match next {
                Some(t) => {
                    clock.advance_to(t);
                    continue;
                }
                None if matches!(until, Until::Finished(_)) => {
                    // The last step may have finished since the top of the loop.
                    waiting.retain(|r| !inner.finished.borrow().contains_key(r));
                    if waiting.is_empty() || inner.inflight.load(Ordering::SeqCst) > 0 {
                        continue;
                    }
                    return Err(EngineError::Stuck(format!(
                        "no step is due or running, yet {} run(s) have not finished",
                        waiting.len()
                    )));
                }
                None => {}
            }
        }
        let poll = now.plus(inner.config.poll_interval);
        let wake_at = match next {
            Some(t) if claimable => t.min(poll),
            _ => poll,
        };
        let mut shutdown = match &until {
            Until::Shutdown(rx) => Some(rx.clone()),
            Until::Finished(_) => None,
        };
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = sleep_until(inner, wake_at) => {}
            _ = finished_rx.changed() => {}
            _ = async { match shutdown.as_mut() { Some(rx) => { let _ = rx.changed().await; } None => std::future::pending().await } } => {}
        }
    }
}

/// Claims go in batches: when nothing runs, or when half the slots are free.
/// A finishing step wakes the loop, so a due step waits at most for that.
fn can_claim(max_inflight: usize, inflight: usize) -> bool {
    let free = max_inflight.saturating_sub(inflight);
    free > 0 && (inflight == 0 || free * 2 >= max_inflight)
}

async fn sleep_until<S, E>(inner: &Inner<S, E>, at: Timestamp) {
    // A virtual clock that is not fast-forwarded only moves when told to;
    // still look at the store now and then.
    if inner.clock.as_virtual().is_some() {
        tokio::select! {
            _ = inner.clock.sleep_until(at) => {}
            _ = tokio::time::sleep(inner.config.poll_interval) => {}
        }
    } else {
        inner.clock.sleep_until(at).await;
    }
}
