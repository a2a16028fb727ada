//! The engine on the virtual clock with a plain-Rust executor: the rules of
//! DESIGN.md 1.2–1.5 without JavaScript in the way.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use flowstate_core::executor::*;
use flowstate_core::limits::Limits;
use flowstate_core::state::StateOp;
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{Clock, RunId, Timestamp, VirtualClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_store::{SqliteOptions, SqliteStore, Store};

type StepFn = dyn Fn(&StepJob) -> StepResult + Send + Sync;

/// Runs steps as Rust closures, on blocking threads as the JS pool would.
struct FnExecutor {
    info: WorkflowInfo,
    f: Arc<StepFn>,
}

impl StepExecutor for FnExecutor {
    fn inspect(&self, _: &str, _: &str) -> Result<WorkflowInfo, LoadError> {
        Ok(self.info.clone())
    }

    fn execute(&self, job: StepJob) -> impl Future<Output = StepReport> + Send {
        let f = self.f.clone();
        async move {
            let result = tokio::task::spawn_blocking(move || f(&job)).await.unwrap();
            StepReport {
                result,
                logs: vec![],
                returned: None,
                checkpoints: vec![],
            }
        }
    }
}

fn info(complete: bool, error: bool) -> WorkflowInfo {
    WorkflowInfo {
        actions: vec!["work".into(), "next".into()],
        has_complete_hook: complete,
        has_error_hook: error,
    }
}

fn limits() -> Limits {
    Limits {
        min_delay: Duration::ZERO,
        ..Limits::default()
    }
}

fn engine<S: Store>(
    store: Arc<S>,
    f: Arc<StepFn>,
    info: WorkflowInfo,
    limits: Limits,
) -> Engine<S, FnExecutor> {
    let mut config = EngineConfig::new(limits, 4);
    config.fast_forward = true;
    config.capture_final_state = true;
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Timestamp(1_700_000_000_000)));
    Engine::new(store, Arc::new(FnExecutor { info, f }), clock, config)
}

async fn run_once<S: Store>(e: &Engine<S, FnExecutor>, data: &str) -> RunId {
    let v = e.deploy("wf", "source").await.unwrap();
    let run = e.start_run(&v, data.into(), "{}".into()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), e.drive(Until::Finished(vec![run])))
        .await
        .expect("the run finishes")
        .unwrap();
    run
}

fn op(job: &StepJob, op: StateOp) -> String {
    job.host
        .state(flowstate_core::state::StateScope::Run, op)
        .unwrap()
}

fn incr(key: &str) -> StateOp {
    StateOp::Increment {
        key: key.into(),
        delta: 1.0,
    }
}

fn schedule(action: &str, delay_secs: u64, payload: String) -> ScheduledStep {
    ScheduledStep {
        action: action.into(),
        delay: Duration::from_secs(delay_secs),
        payload,
        wait: None,
    }
}

fn ok(scheduled: Vec<ScheduledStep>) -> StepResult {
    StepResult::Completed { scheduled }
}

fn boom() -> StepResult {
    StepResult::Failed(StepError::new(ErrorKind::Thrown, "Error", "boom"))
}

fn state_of(e: &Engine<SqliteStore, FnExecutor>, run: RunId, key: &str) -> serde_json::Value {
    let finished = e.finished(run).expect("finished");
    let state = finished.state.expect("captured");
    state
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| serde_json::from_str(v).unwrap())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_chain_of_day_long_delays_runs_at_once_on_the_virtual_clock() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok(vec![schedule("work", 86_400, "1".into())]),
        "work" => ok(vec![schedule("next", 7 * 86_400, "2".into())]),
        _ => ok(vec![]),
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(false, false), limits());
    let run = run_once(&e, "{}").await;
    assert_eq!(e.finished(run).unwrap().status, RunStatus::Completed);
    let steps = store.steps(run).await.unwrap();
    let started: Vec<i64> = steps.iter().map(|s| s.started_at.unwrap().0).collect();
    assert_eq!(started[1] - started[0], 86_400_000);
    assert_eq!(started[2] - started[1], 7 * 86_400_000);
}

#[tokio::test]
async fn a_step_that_throws_after_two_increments_counts_them_once() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok(vec![schedule("work", 0, "null".into())]),
        _ => {
            op(job, incr("n"));
            op(job, incr("n"));
            if job.run.attempt < 3 {
                boom()
            } else {
                ok(vec![])
            }
        }
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(false, false), limits());
    let run = run_once(&e, "{}").await;
    assert_eq!(state_of(&e, run, "n"), serde_json::json!(2));
    let steps = store.steps(run).await.unwrap();
    let work = &steps[1];
    assert_eq!(
        (work.status, work.attempt, work.failed_attempts.len()),
        (StepStatus::Done, 3, 2)
    );
    // Backoff on the virtual clock: 10 s, then 1 min.
    let first = work.failed_attempts[0].finished_at.0;
    let second_start = work.failed_attempts[1].started_at.unwrap().0;
    assert_eq!(second_start - first, 10_000);
    assert_eq!(
        work.started_at.unwrap().0 - work.failed_attempts[1].finished_at.0,
        60_000
    );
}

#[tokio::test]
async fn a_thousand_branches_each_push_and_none_is_lost() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok((0..1000)
            .map(|i| schedule("work", 0, i.to_string()))
            .collect()),
        _ => {
            op(
                job,
                StateOp::Push {
                    key: "seen".into(),
                    item: job.data.clone(),
                },
            );
            op(job, incr("count"));
            ok(vec![])
        }
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store, f, info(false, false), limits());
    let run = run_once(&e, "{}").await;
    let mut seen: Vec<i64> = serde_json::from_value(state_of(&e, run, "seen")).unwrap();
    assert_eq!(seen.len(), 1000);
    seen.sort();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    assert_eq!(state_of(&e, run, "count"), serde_json::json!(1000));
}

#[tokio::test]
async fn on_workflow_complete_runs_exactly_once_and_sees_the_state() {
    let hooks = Arc::new(AtomicUsize::new(0));
    let h = hooks.clone();
    let f: Arc<StepFn> = Arc::new(move |job| match (job.kind, job.run.action.as_str()) {
        (StepKind::CompleteHook, _) => {
            h.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                op(
                    job,
                    StateOp::Get {
                        key: "count".into()
                    }
                ),
                "50"
            );
            ok(vec![])
        }
        (_, "start") => ok((0..50)
            .map(|i| schedule("work", i % 7, "null".into()))
            .collect()),
        _ => {
            op(job, incr("count"));
            ok(vec![])
        }
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(true, true), limits());
    let run = run_once(&e, "{}").await;
    assert_eq!(hooks.load(Ordering::SeqCst), 1);
    assert_eq!(e.finished(run).unwrap().status, RunStatus::Completed);
    assert!(
        store.run_state(run).await.unwrap().is_empty(),
        "state deleted after the hook"
    );
}

#[tokio::test]
async fn the_first_branch_to_fail_for_good_fails_the_run_and_the_rest_go_on() {
    let error_hooks = Arc::new(AtomicUsize::new(0));
    let h = error_hooks.clone();
    let f: Arc<StepFn> = Arc::new(move |job| match (job.kind, job.run.action.as_str()) {
        (StepKind::ErrorHook, _) => {
            assert_eq!(job.error.as_ref().unwrap().message, "boom");
            h.fetch_add(1, Ordering::SeqCst);
            ok(vec![])
        }
        (StepKind::CompleteHook, _) => panic!("onWorkflowComplete must not run for a failed run"),
        (_, "start") => ok((0..6).map(|i| schedule("work", 0, i.to_string())).collect()),
        _ => {
            op(job, incr("finished"));
            if job.data == "1" || job.data == "4" {
                boom()
            } else {
                ok(vec![])
            }
        }
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(true, true), limits());
    let run = run_once(&e, "{}").await;
    assert_eq!(
        error_hooks.load(Ordering::SeqCst),
        1,
        "onWorkflowError once, for two failed branches"
    );
    let rec = store.run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(rec.error.unwrap().message, "boom");
    // Each failing branch's increments count once despite 4 attempts each.
    assert_eq!(state_of(&e, run, "finished"), serde_json::json!(6));
    let steps = store.steps(run).await.unwrap();
    let failed: Vec<_> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Failed)
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        failed.iter().all(|s| s.attempt == 4),
        "3 retries then failed for good"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.kind == StepKind::Action && s.status == StepStatus::Done)
            .count(),
        5
    );
}

#[tokio::test]
async fn end_cancels_the_runs_pending_steps() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok(vec![
            schedule("work", 0, "null".into()),
            schedule("next", 3600, "null".into()),
        ]),
        "work" => StepResult::Ended {
            reason: "nothing to do".into(),
        },
        _ => panic!("a cancelled step ran"),
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(true, true), limits());
    let run = run_once(&e, "{}").await;
    let rec = store.run(run).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.end_reason.as_deref()),
        (RunStatus::Ended, Some("nothing to do"))
    );
    let statuses: Vec<_> = store
        .steps(run)
        .await
        .unwrap()
        .iter()
        .map(|s| s.status)
        .collect();
    assert_eq!(
        statuses,
        vec![StepStatus::Done, StepStatus::Ended, StepStatus::Cancelled]
    );
}

#[tokio::test]
async fn the_steps_per_run_breaker_fails_the_run_at_commit() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok((0..5).map(|_| schedule("work", 0, "null".into())).collect()),
        _ => ok(vec![]),
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(
        store.clone(),
        f,
        info(false, false),
        Limits {
            max_steps_per_run: 5,
            ..limits()
        },
    );
    let run = run_once(&e, "{}").await;
    let rec = store.run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    let err = rec.error.unwrap();
    assert_eq!(err.kind, ErrorKind::Breaker);
    assert!(
        err.message.contains("6 steps, over its limit of 5"),
        "{}",
        err.message
    );
}

/// The engine is dropped while steps are mid-flight (their state ops
/// applied, their commits not); a new engine on the same file finishes the
/// run to the same state, nothing doubled.
#[test]
fn a_run_interrupted_mid_flight_finishes_on_restart_without_doubling() {
    let dir = tempfile::tempdir().unwrap();
    let opts = SqliteOptions {
        path: Some(dir.path().join("flow.db")),
        ..Default::default()
    };
    let n = 200usize;
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let g = gate.clone();
    let f: Arc<StepFn> = Arc::new(move |job| match job.run.action.as_str() {
        "start" => ok((0..n).map(|i| schedule("work", 0, i.to_string())).collect()),
        _ => {
            op(job, incr("count"));
            op(
                job,
                StateOp::Push {
                    key: "seen".into(),
                    item: job.data.clone(),
                },
            );
            let i: usize = job.data.parse().unwrap();
            if i >= 150 && job.run.attempt == 1 {
                // Hold these mid-step until the "crash".
                let (lock, cv) = &*g;
                let mut open = lock.lock().unwrap();
                while !*open {
                    open = cv.wait(open).unwrap();
                }
            }
            ok(vec![])
        }
    });

    let store = Arc::new(SqliteStore::open(opts.clone()).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = engine(store.clone(), f.clone(), info(false, false), limits());
    let run = rt.block_on(async {
        let v = e.deploy("wf", "source").await.unwrap();
        let run = e.start_run(&v, "{}".into(), "{}".into()).await.unwrap();
        let driver = e.clone();
        let drive = tokio::spawn(async move { driver.drive(Until::Finished(vec![run])).await });
        while e.stats().steps_committed.load(Ordering::SeqCst) < 100 || e.inflight() < 8 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drive.abort();
        run
    });
    // The "crash": every task of the engine is dropped where it stands.
    rt.shutdown_background();
    {
        let (lock, cv) = &*gate;
        *lock.lock().unwrap() = true;
        cv.notify_all();
    }
    drop(e);
    let mut store = store;
    let store = loop {
        match Arc::try_unwrap(store) {
            Ok(s) => break s,
            Err(s) => {
                store = s;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    drop(store);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Arc::new(SqliteStore::open(opts).unwrap());
        assert_eq!(store.unfinished_runs(None).await.unwrap(), vec![run]);
        let e = engine(store.clone(), f, info(false, false), limits());
        e.drive(Until::Finished(vec![run])).await.unwrap();
        let mut seen: Vec<usize> = serde_json::from_value(state_of(&e, run, "seen")).unwrap();
        seen.sort();
        assert_eq!(seen, (0..n).collect::<Vec<_>>(), "every item once");
        assert_eq!(
            state_of(&e, run, "count"),
            serde_json::json!(n),
            "counted once"
        );
        let steps = store.steps(run).await.unwrap();
        assert!(
            steps.iter().any(|s| s.attempt == 2),
            "some steps were mid-flight at the crash"
        );
        assert!(steps.iter().all(|s| s.status == StepStatus::Done));
    });
}

fn wait_for(action: &str, token: &str, timeout_secs: u64, payload: &str) -> ScheduledStep {
    ScheduledStep {
        wait: Some(flowstate_core::executor::WaitSpec {
            token: token.into(),
            redirect_url: None,
        }),
        ..schedule(action, timeout_secs, payload.into())
    }
}

#[tokio::test]
async fn a_wait_that_is_never_resumed_times_out_and_the_run_completes() {
    let f: Arc<StepFn> = Arc::new(|job| match job.run.action.as_str() {
        "start" => ok(vec![
            wait_for("next", "a1", 3_600, r#"{"order":1}"#),
            schedule("work", 10, "null".into()),
        ]),
        "next" => panic!("the wait's action must not run after a timeout"),
        _ => ok(vec![]),
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let e = engine(store.clone(), f, info(false, false), limits());
    let run = run_once(&e, "{}").await;
    assert_eq!(e.finished(run).unwrap().status, RunStatus::Completed);
    let steps = store.steps(run).await.unwrap();
    let wait = steps.iter().find(|s| s.action == "next").unwrap();
    assert_eq!(wait.status, StepStatus::TimedOut);
    assert_eq!(wait.error.as_ref().unwrap().kind, ErrorKind::WaitTimeout);
    let started = steps[0].started_at.unwrap().0;
    assert_eq!(
        wait.finished_at.unwrap().0 - started,
        3_600_000,
        "on the virtual clock"
    );
    let late = e.resume("a1".into(), "{}".into()).await.unwrap();
    assert_eq!(late, flowstate_store::Resumed::Expired { run });
}

#[tokio::test]
async fn a_resumed_wait_runs_its_action_once_with_the_data_merged() {
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    let f: Arc<StepFn> = Arc::new(move |job| match job.run.action.as_str() {
        "start" => ok(vec![wait_for("next", "b2", 86_400, r#"{"order":1}"#)]),
        _ => {
            sink.lock().unwrap().push(job.data.clone());
            ok(vec![])
        }
    });
    let store = Arc::new(SqliteStore::in_memory().unwrap());
    let mut config = EngineConfig::new(limits(), 2);
    config.capture_final_state = true;
    let clock: Arc<dyn Clock> = Arc::new(VirtualClock::new(Timestamp(1_700_000_000_000)));
    let e = Engine::new(
        store.clone(),
        Arc::new(FnExecutor {
            info: info(false, false),
            f,
        }),
        clock,
        config,
    );
    let v = e.deploy("wf", "source").await.unwrap();
    let run = e.start_run(&v, "{}".into(), "{}".into()).await.unwrap();
    let driver = {
        let e = e.clone();
        tokio::spawn(async move { e.drive(Until::Finished(vec![run])).await })
    };
    // Only the wait is left: the run says so.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while store.run(run).await.unwrap().unwrap().status != RunStatus::Waiting {
        assert!(std::time::Instant::now() < deadline, "the run never waited");
        tokio::task::yield_now().await;
    }
    assert_eq!(
        e.resume("b2".into(), r#"{"approved":true}"#.into())
            .await
            .unwrap(),
        flowstate_store::Resumed::Resumed {
            run,
            redirect_url: None
        }
    );
    assert_eq!(
        e.resume("b2".into(), "{}".into()).await.unwrap(),
        flowstate_store::Resumed::AlreadyUsed { run },
        "a token works once"
    );
    assert_eq!(
        e.resume("nope".into(), "{}".into()).await.unwrap(),
        flowstate_store::Resumed::Unknown
    );
    tokio::time::timeout(Duration::from_secs(30), driver)
        .await
        .expect("the run finishes")
        .unwrap()
        .unwrap();
    assert_eq!(e.finished(run).unwrap().status, RunStatus::Completed);
    let data: Vec<serde_json::Value> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(
        data,
        vec![serde_json::json!({ "order": 1, "approved": true })]
    );
}
