//! Firing schedule triggers: each due schedule starts one run, with `data`
//! `{ counter, next_schedule_time }`, and moves to its next time in the same
//! transaction. The next time is counted from now, so fires missed while the
//! server was down become one fire on restart, not a burst.

use std::time::Duration;

use flowstate_core::Timestamp;
use flowstate_core::executor::StepExecutor;
use flowstate_engine::{Engine, EngineError};
use flowstate_store::{FireSchedule, NewRun, Store};
use serde_json::json;

use crate::schedule::ScheduleSettings;

/// Fires every schedule due at the engine's `now`; returns how many runs
/// were started.
pub async fn fire_due<S: Store, E: StepExecutor>(
    engine: &Engine<S, E>,
) -> Result<usize, EngineError> {
    let store = engine.store();
    let now = engine.clock().now();
    let mut started = 0;
    for due in store.due_schedules(now).await? {
        let Some(workflow) = store.workflow(due.workflow.clone()).await? else {
            continue;
        };
        let settings: ScheduleSettings = match serde_json::from_str(&due.spec) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(workflow = %due.workflow, error = %e, "unreadable schedule; skipped");
                continue;
            }
        };
        // Deploy-time checks (a future `at`, the minimum interval) were made
        // when it was published; here only the times matter.
        let schedule = match settings.check(Timestamp(i64::MIN), Duration::ZERO) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(workflow = %due.workflow, error = %e, "invalid schedule; skipped");
                continue;
            }
        };
        let counter = due.fired + 1;
        let next = schedule.next_after(now.max(due.fire_at), counter);
        let version = store.version(workflow.version).await?;
        let data = json!({
            "counter": counter,
            "next_schedule_time": next.map_or(0, |n| n.0 - now.0),
        });
        let fire = FireSchedule {
            workflow: due.workflow.clone(),
            fire_at: due.fire_at,
            next_fire_at: next,
            run: NewRun {
                gate: serde_json::from_str::<crate::WorkflowSettings>(&workflow.settings)
                    .unwrap_or_default()
                    .gate(&data.to_string()),
                ..engine.new_run(
                    &version,
                    data.to_string(),
                    json!({ "x-flowstate-trigger": "schedule" }).to_string(),
                )
            },
        };
        if let Some(created) = store.fire_schedule(fire).await? {
            engine
                .stats()
                .runs_started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(workflow = %due.workflow, run = %created.run, counter, "schedule fired");
            started += 1;
        }
    }
    if started > 0 {
        engine.wake();
    }
    Ok(started)
}
