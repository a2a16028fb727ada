//! Schedule triggers fired on the virtual clock: on time, once per due
//! time, missed fires collapsed into one, `data` as documented.

use std::sync::Arc;
use std::time::Duration;

use flowstate_core::limits::Limits;
use flowstate_core::{Clock, RunId, Timestamp, VirtualClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_js::Sandbox;
use flowstate_server::WorkflowSettings;
use flowstate_server::schedule::ScheduleSettings;
use flowstate_server::schedule_trigger::fire_due;
use flowstate_store::{RunFilter, SqliteStore, Store};
use serde_json::{Value, json};

const MIN: i64 = 60_000;

async fn seen(engine: &Engine<SqliteStore, Sandbox>, run: RunId) -> Value {
    engine.drive(Until::Finished(vec![run])).await.unwrap();
    let state = engine.finished(run).unwrap().state.unwrap();
    serde_json::from_str(&state.iter().find(|(k, _)| k == "seen").unwrap().1).unwrap()
}

async fn newest(engine: &Engine<SqliteStore, Sandbox>) -> Vec<RunId> {
    let runs = engine
        .store()
        .list_runs(RunFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    runs.iter().map(|r| r.id).collect()
}

type VirtualSetup = (
    Timestamp,
    Arc<VirtualClock>,
    Arc<SqliteStore>,
    Engine<SqliteStore, Sandbox>,
);

/// An engine on a virtual clock at 2026-01-01T00:00:00Z, keeping final state.
fn on_virtual_clock() -> VirtualSetup {
    let t0 = Timestamp(1_767_225_600_000);
    let clock = Arc::new(VirtualClock::new(t0));
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let mut config = EngineConfig::new(Limits::default(), 1);
    config.capture_final_state = true;
    let dyn_clock: Arc<dyn Clock> = clock.clone();
    let engine = Engine::new(store.clone(), Arc::new(Sandbox::new(1)), dyn_clock, config);
    (t0, clock, store, engine)
}

#[tokio::test]
async fn a_schedule_fires_on_time_and_missed_fires_become_one() {
    let (t0, clock, store, engine) = on_virtual_clock();

    let source = "class Workflow { async start(data, headers, api) { await api.runStore.set('seen', { data, trigger: headers['x-flowstate-trigger'] }); } }";
    let version = engine.deploy("report", source).await.unwrap();
    let settings = WorkflowSettings {
        schedule: Some(ScheduleSettings {
            every: Some("10 minutes".into()),
            start: Some("2026-01-01T00:05:00Z".into()),
            count: Some(3),
            ..Default::default()
        }),
        ..Default::default()
    };
    let publish = settings
        .publish(
            "report",
            version.id,
            "tok".into(),
            t0,
            Duration::from_secs(600),
        )
        .unwrap();
    store.publish(publish).await.unwrap();

    assert_eq!(fire_due(&engine).await.unwrap(), 0, "not yet");
    clock.advance_to(Timestamp(t0.0 + 5 * MIN));
    assert_eq!(fire_due(&engine).await.unwrap(), 1);
    assert_eq!(fire_due(&engine).await.unwrap(), 0, "a due time fires once");
    let first = newest(&engine).await[0];
    assert_eq!(
        seen(&engine, first).await,
        json!({ "data": { "counter": 1, "next_schedule_time": 10 * MIN }, "trigger": "schedule" })
    );

    // Down for half an hour: three fire times pass; one run on return.
    clock.advance_to(Timestamp(t0.0 + 40 * MIN));
    assert_eq!(fire_due(&engine).await.unwrap(), 1);
    let runs = newest(&engine).await;
    assert_eq!(runs.len(), 2, "missed fires are not replayed");
    assert_eq!(
        seen(&engine, runs[0]).await["data"],
        json!({ "counter": 2, "next_schedule_time": 5 * MIN })
    );

    clock.advance_to(Timestamp(t0.0 + 45 * MIN));
    assert_eq!(fire_due(&engine).await.unwrap(), 1);
    let runs = newest(&engine).await;
    assert_eq!(
        seen(&engine, runs[0]).await["data"],
        json!({ "counter": 3, "next_schedule_time": 0 }),
        "the last of count 3"
    );
    clock.advance_to(Timestamp(t0.0 + 300 * MIN));
    assert_eq!(fire_due(&engine).await.unwrap(), 0, "the schedule is over");
    assert_eq!(store.next_schedule_at().await.unwrap(), None);
}

#[test]
fn invalid_schedules_are_refused_at_publish() {
    let settings = WorkflowSettings {
        schedule: Some(ScheduleSettings {
            every: Some("1 minute".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let err = settings
        .publish(
            "x",
            flowstate_core::VersionId(1),
            "t".into(),
            Timestamp(0),
            Duration::from_secs(600),
        )
        .unwrap_err();
    assert!(err.contains("minimum interval of 10m"), "{err}");
}

/// The compatibility suite's scheduled counter (`crates/cli/tests/compat/
/// scheduled.js`): every hour, counted by the trigger and by `$checkpoint`.
#[tokio::test]
async fn compat_a_scheduled_workflow_counts_its_runs() {
    let (t0, clock, store, engine) = on_virtual_clock();
    let source = include_str!("../../cli/tests/compat/scheduled.js");
    let version = engine.deploy("hourly", source).await.unwrap();
    let settings = WorkflowSettings {
        schedule: Some(ScheduleSettings {
            every: Some("1 hour".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let publish = settings
        .publish(
            "hourly",
            version.id,
            "tok".into(),
            t0,
            Duration::from_secs(600),
        )
        .unwrap();
    store.publish(publish).await.unwrap();
    for hour in 1..=3 {
        clock.advance_to(Timestamp(t0.0 + hour * 60 * MIN));
        assert_eq!(fire_due(&engine).await.unwrap(), 1);
        let run = newest(&engine).await[0];
        assert_eq!(
            seen(&engine, run).await,
            json!({ "counter": hour, "next": 60 * MIN, "total": hour })
        );
    }
    let cp = store.checkpoint("hourly".into(), "".into()).await.unwrap();
    assert_eq!(cp.value.as_deref(), Some("3"));
}
