//! The store conformance suite: what every back end must do, written once,
//! generic over [`Store`]. A back end runs it with
//! `flowstate_store::conformance_tests!(make_store())` in its tests.

use flowstate_core::executor::{ErrorKind, StepError, WorkflowInfo};
use flowstate_core::state::{StateError, StateOp, StateScope};
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{RunId, Timestamp};

use crate::*;

mod features;
pub use features::*;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const LEASE: i64 = 60_000;

fn info(complete: bool, error: bool) -> WorkflowInfo {
    WorkflowInfo {
        actions: vec!["work".into()],
        has_complete_hook: complete,
        has_error_hook: error,
    }
}

async fn new_run<S: Store>(s: &S, hooks: (bool, bool), data: &str) -> RunId {
    create(s, hooks, data, None).await.run
}

async fn create<S: Store>(
    s: &S,
    hooks: (bool, bool),
    data: &str,
    delivery: Option<&str>,
) -> CreatedRun {
    let v = s
        .deploy(NewVersion {
            name: "wf".into(),
            source: "class Workflow {}".into(),
            info: info(hooks.0, hooks.1),
            now: T0,
        })
        .await
        .unwrap();
    s.create_run(NewRun {
        delivery: delivery.map(|key| DeliveryKey {
            key: key.into(),
            ttl_ms: 60_000,
        }),
        workflow: "wf".into(),
        version: v.id,
        data: data.into(),
        headers: r#"{"x-test":"1"}"#.into(),
        has_complete_hook: hooks.0,
        has_error_hook: hooks.1,
        now: T0,
        claim_start: None,
        gate: None,
    })
    .await
    .unwrap()
}

async fn claim<S: Store>(s: &S, now: Timestamp, limit: usize) -> Vec<ClaimedStep> {
    s.claim_due_steps(ClaimRequest {
        now,
        limit,
        lease_until: Timestamp(now.0 + LEASE),
    })
    .await
    .unwrap()
}

fn child(action: &str, due: Timestamp, payload: &str) -> NewChild {
    NewChild {
        action: action.into(),
        due_at: due,
        payload: payload.into(),
        wait: None,
    }
}

fn commit(step: &ClaimedStep, kind: CommitKind, now: Timestamp) -> StepCommit {
    StepCommit {
        step: step.id,
        run: step.run,
        attempt: step.attempt,
        kind,
        logs: "[]".into(),
        now,
        duration_ms: 1,
        max_steps_per_run: 100_000,
        blob_threshold: 1_500_000,
        capture_state: true,
        claim: 0,
        lease_until: Timestamp(now.0 + LEASE),
        checkpoints: Vec::new(),
    }
}

fn succeed(children: Vec<NewChild>) -> CommitKind {
    CommitKind::Succeeded { children }
}

fn op_ctx(step: &ClaimedStep, seq: u32) -> OpContext {
    OpContext {
        run: step.run,
        step: step.id,
        attempt: step.attempt,
        seq,
        workflow: "wf".into(),
        now: T0,
        max_run_state_bytes: 16 * 1024 * 1024,
        scope: StateScope::Run,
        replay: false,
    }
}

fn boom() -> StepError {
    StepError::new(ErrorKind::Thrown, "Error", "boom")
}

async fn op<S: Store>(s: &S, step: &ClaimedStep, seq: u32, op: StateOp) -> Result<String, OpError> {
    s.apply_state_op(op_ctx(step, seq), op).await
}

fn incr(key: &str, delta: f64) -> StateOp {
    StateOp::Increment {
        key: key.into(),
        delta,
    }
}

fn push(key: &str, item: &str) -> StateOp {
    StateOp::Push {
        key: key.into(),
        item: item.into(),
    }
}

fn get(key: &str) -> StateOp {
    StateOp::Get { key: key.into() }
}

fn finished(o: CommitOutcome) -> Option<FinishedRun> {
    match o {
        CommitOutcome::Committed { finished, .. } => finished,
        other => panic!("expected a commit, got {other:?}"),
    }
}

/// A run whose `start` fanned out to two `work` branches, both claimed.
async fn two_branches<S: Store>(s: &S, hooks: (bool, bool)) -> (RunId, Vec<ClaimedStep>) {
    let run = new_run(s, hooks, "null").await;
    let start = claim(s, T0, 10).await.remove(0);
    let children = vec![child("work", T0, "1"), child("work", T0, "2")];
    s.commit_step(commit(&start, succeed(children), T0))
        .await
        .unwrap();
    (run, claim(s, T0, 10).await)
}

pub async fn a_new_run_has_one_due_start_step<S: Store>(s: S) {
    let run = new_run(&s, (false, false), r#"{"order":1}"#).await;
    let steps = claim(&s, T0, 10).await;
    assert_eq!(steps.len(), 1);
    let start = &steps[0];
    assert_eq!(
        (start.run, start.action.as_str(), start.attempt, start.depth),
        (run, "start", 1, 0)
    );
    assert_eq!(start.payload, r#"{"order":1}"#);
    assert!(
        claim(&s, T0, 10).await.is_empty(),
        "a leased step is not claimed twice"
    );
    let ctx = s.run_context(run).await.unwrap();
    assert_eq!(ctx.headers, r#"{"x-test":"1"}"#);
    assert_eq!(
        s.unfinished_runs(Some("wf".into())).await.unwrap(),
        vec![run]
    );
}

pub async fn claims_respect_due_times_and_the_limit<S: Store>(s: S) {
    let _run = new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let later = Timestamp(T0.0 + 10_000);
    let children = (0..5)
        .map(|i| child("work", if i < 3 { T0 } else { later }, "{}"))
        .collect();
    let mut c = commit(&start, succeed(children), T0);
    c.claim = 1;
    let out = s.commit_step(c).await.unwrap();
    let CommitOutcome::Committed {
        finished: None,
        claimed,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(claimed.len(), 1, "a commit claims the steps it made due");
    assert_eq!(
        (claimed[0].action.as_str(), claimed[0].attempt),
        ("work", 1)
    );
    assert_eq!(claim(&s, T0, 10).await.len(), 2, "only three were due");
    assert_eq!(s.next_due_at().await.unwrap(), Some(later));
    let rest = claim(&s, later, 10).await;
    assert_eq!(rest.len(), 2);
    assert!(rest.iter().all(|c| c.depth == 1 && c.action == "work"));
}

pub async fn the_last_branch_completes_the_run_and_deletes_its_state<S: Store>(s: S) {
    let (run, branches) = two_branches(&s, (false, false)).await;
    for (i, b) in branches.iter().enumerate() {
        op(&s, b, 0, incr("n", 1.0)).await.unwrap();
        op(&s, b, 1, push("items", &format!("{}", i)))
            .await
            .unwrap();
    }
    assert!(
        finished(
            s.commit_step(commit(&branches[0], succeed(vec![]), T0))
                .await
                .unwrap()
        )
        .is_none()
    );
    let done = finished(
        s.commit_step(commit(&branches[1], succeed(vec![]), T0))
            .await
            .unwrap(),
    )
    .expect("the last branch finishes the run");
    assert_eq!(done.status, RunStatus::Completed);
    let state = done.state.unwrap();
    assert_eq!(
        state,
        vec![("items".into(), "[0,1]".into()), ("n".into(), "2".into())]
    );
    assert!(
        s.run_state(run).await.unwrap().is_empty(),
        "run state is deleted at the end"
    );
    let rec = s.run(run).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.pending, rec.steps_total),
        (RunStatus::Completed, 0, 3)
    );
    assert!(rec.finished_at.is_some());
    assert!(s.unfinished_runs(None).await.unwrap().is_empty());
}

pub async fn the_complete_hook_runs_once_after_every_branch<S: Store>(s: S) {
    let run = new_run(&s, (true, true), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let out = s
        .commit_step(commit(&start, succeed(vec![]), T0))
        .await
        .unwrap();
    assert_eq!(
        out,
        CommitOutcome::Committed {
            finished: None,
            claimed: vec![]
        }
    );
    let hook = claim(&s, T0, 10).await.remove(0);
    assert_eq!(
        (hook.kind, hook.action.as_str()),
        (StepKind::CompleteHook, "onWorkflowComplete")
    );
    let done = finished(
        s.commit_step(commit(&hook, succeed(vec![]), T0))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done.status, RunStatus::Completed);
    assert!(claim(&s, T0, 10).await.is_empty());
    let steps = s.steps(run).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.kind == StepKind::CompleteHook)
            .count(),
        1
    );
}

pub async fn the_first_failure_fails_the_run_and_siblings_go_on<S: Store>(s: S) {
    let (run, b) = two_branches(&s, (true, true)).await;
    let failed = CommitKind::FailedForGood { error: boom() };
    assert!(finished(s.commit_step(commit(&b[0], failed, T0)).await.unwrap()).is_none());
    let rec = s.run(run).await.unwrap().unwrap();
    assert_eq!(rec.status, RunStatus::Failed);
    assert_eq!(rec.error.as_ref().map(|e| e.message.as_str()), Some("boom"));
    let hook = claim(&s, T0, 10).await.remove(0);
    assert_eq!(hook.kind, StepKind::ErrorHook);
    assert!(
        finished(
            s.commit_step(commit(&hook, succeed(vec![]), T0))
                .await
                .unwrap()
        )
        .is_none()
    );
    let done = finished(
        s.commit_step(commit(&b[1], succeed(vec![]), T0))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    let steps = s.steps(run).await.unwrap();
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.kind == StepKind::CompleteHook)
            .count(),
        0
    );
    assert_eq!(
        steps
            .iter()
            .filter(|s| s.status == StepStatus::Failed)
            .count(),
        1
    );
}

pub async fn a_retried_step_replays_its_journal_and_counts_once<S: Store>(s: S) {
    let run = new_run(&s, (false, false), "null").await;
    let first = claim(&s, T0, 10).await.remove(0);
    assert_eq!(op(&s, &first, 0, incr("n", 1.0)).await.unwrap(), "1");
    assert_eq!(op(&s, &first, 1, incr("n", 1.0)).await.unwrap(), "2");
    let later = Timestamp(T0.0 + 10_000);
    let retried = s
        .retry_step(StepRetry {
            step: first.id,
            attempt: 1,
            error: boom(),
            logs: "[]".into(),
            now: T0,
            due_at: later,
            duration_ms: 1,
        })
        .await
        .unwrap();
    assert!(retried);
    assert!(
        claim(&s, T0, 10).await.is_empty(),
        "the retry waits for its backoff"
    );
    let second = claim(&s, later, 10).await.remove(0);
    assert_eq!((second.id, second.attempt), (first.id, 2));
    assert_eq!(
        op(&s, &second, 0, incr("n", 1.0)).await.unwrap(),
        "1",
        "replayed"
    );
    assert_eq!(
        op(&s, &second, 1, incr("n", 1.0)).await.unwrap(),
        "2",
        "replayed"
    );
    assert_eq!(
        op(&s, &second, 2, incr("n", 1.0)).await.unwrap(),
        "3",
        "new work applies"
    );
    let done = finished(
        s.commit_step(commit(&second, succeed(vec![]), later))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done.state.unwrap(), vec![("n".into(), "3".into())]);
    let steps = s.steps(run).await.unwrap();
    assert_eq!(steps[0].failed_attempts.len(), 1);
    assert_eq!(steps[0].attempt, 2);
}

pub async fn a_diverging_retry_applies_afresh_from_the_first_mismatch<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let first = claim(&s, T0, 10).await.remove(0);
    op(&s, &first, 0, incr("a", 1.0)).await.unwrap();
    op(&s, &first, 1, incr("b", 1.0)).await.unwrap();
    let retry = StepRetry {
        step: first.id,
        attempt: 1,
        error: boom(),
        logs: "[]".into(),
        now: T0,
        due_at: T0,
        duration_ms: 1,
    };
    assert!(s.retry_step(retry).await.unwrap());
    let second = claim(&s, T0, 10).await.remove(0);
    assert_eq!(
        op(&s, &second, 0, incr("c", 1.0)).await.unwrap(),
        "1",
        "mismatch: applied"
    );
    assert_eq!(
        op(&s, &second, 1, incr("b", 1.0)).await.unwrap(),
        "2",
        "after a mismatch nothing replays"
    );
    assert_eq!(op(&s, &second, 2, get("a")).await.unwrap(), "1");
}

pub async fn pushes_from_many_branches_keep_every_item<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let n = 1000;
    let children = (0..n).map(|i| child("work", T0, &i.to_string())).collect();
    s.commit_step(commit(&start, succeed(children), T0))
        .await
        .unwrap();
    let branches = claim(&s, T0, n).await;
    assert_eq!(branches.len(), n);
    let mut last = None;
    for b in &branches {
        op(&s, b, 0, push("seen", &b.payload)).await.unwrap();
        op(&s, b, 1, incr("count", 1.0)).await.unwrap();
        last = finished(s.commit_step(commit(b, succeed(vec![]), T0)).await.unwrap());
    }
    let state = last.expect("the run finished").state.unwrap();
    let seen: Vec<i64> =
        serde_json::from_str(&state.iter().find(|(k, _)| k == "seen").unwrap().1).unwrap();
    assert_eq!(seen, (0..n as i64).collect::<Vec<_>>());
    assert_eq!(state.iter().find(|(k, _)| k == "count").unwrap().1, "1000");
}

pub async fn state_ops_refuse_what_they_cannot_do<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let st = claim(&s, T0, 10).await.remove(0);
    op(
        &s,
        &st,
        0,
        StateOp::Set {
            key: "name".into(),
            value: "\"bob\"".into(),
        },
    )
    .await
    .unwrap();
    let err = op(&s, &st, 1, incr("name", 1.0)).await.unwrap_err();
    assert!(
        matches!(err, OpError::State(StateError::NotANumber { ref found, .. }) if found == "a string"),
        "{err}"
    );
    let err = op(&s, &st, 2, push("name", "1")).await.unwrap_err();
    assert!(
        matches!(err, OpError::State(StateError::NotAList { .. })),
        "{err}"
    );
    assert_eq!(
        op(&s, &st, 3, get("name")).await.unwrap(),
        "\"bob\"",
        "failed ops change nothing"
    );
    op(
        &s,
        &st,
        4,
        StateOp::Set {
            key: "arr".into(),
            value: "[1,2]".into(),
        },
    )
    .await
    .unwrap();
    op(&s, &st, 5, push("arr", "3")).await.unwrap();
    assert_eq!(
        op(&s, &st, 6, get("arr")).await.unwrap(),
        "[1,2,3]",
        "an array value accepts pushes"
    );
    assert_eq!(op(&s, &st, 7, incr("neg", -2.5)).await.unwrap(), "-2.5");
    op(&s, &st, 8, StateOp::Delete { key: "arr".into() })
        .await
        .unwrap();
    assert_eq!(op(&s, &st, 9, get("arr")).await.unwrap(), "null");
    assert_eq!(op(&s, &st, 10, get("never")).await.unwrap(), "null");
}

pub async fn run_state_total_is_enforced_at_its_edge<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let st = claim(&s, T0, 10).await.remove(0);
    let limited = |seq| OpContext {
        max_run_state_bytes: 100,
        ..op_ctx(&st, seq)
    };
    let value = format!("\"{}\"", "x".repeat(98)); // 100 bytes of JSON
    s.apply_state_op(
        limited(0),
        StateOp::Set {
            key: "a".into(),
            value,
        },
    )
    .await
    .unwrap();
    let err = s
        .apply_state_op(limited(1), push("b", "1"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            OpError::State(StateError::RunStateFull {
                size: 101,
                limit: 100,
                ..
            })
        ),
        "{err}"
    );
    s.apply_state_op(limited(2), StateOp::Delete { key: "a".into() })
        .await
        .unwrap();
    s.apply_state_op(limited(3), push("b", "1")).await.unwrap();
}

pub async fn a_stale_attempt_can_neither_commit_nor_touch_state<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let first = claim(&s, T0, 10).await.remove(0);
    // Its lease runs out and another node takes the step over.
    let later = Timestamp(T0.0 + LEASE);
    let second = claim(&s, later, 10).await.remove(0);
    assert_eq!((second.id, second.attempt), (first.id, 2));
    let err = op(&s, &first, 0, incr("n", 1.0)).await.unwrap_err();
    assert!(
        matches!(err, OpError::State(StateError::Superseded)),
        "{err}"
    );
    let out = s
        .commit_step(commit(&first, succeed(vec![]), later))
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Superseded);
    assert!(
        finished(
            s.commit_step(commit(&second, succeed(vec![]), later))
                .await
                .unwrap()
        )
        .is_some()
    );
}

pub async fn end_cancels_the_other_steps<S: Store>(s: S) {
    let run = new_run(&s, (true, true), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let children = vec![
        child("work", T0, "1"),
        child("work", Timestamp(T0.0 + 5_000), "2"),
    ];
    s.commit_step(commit(&start, succeed(children), T0))
        .await
        .unwrap();
    let running = claim(&s, T0, 10).await.remove(0);
    let end = CommitKind::Ended {
        reason: "enough".into(),
    };
    let done = finished(s.commit_step(commit(&running, end, T0)).await.unwrap()).unwrap();
    assert_eq!(done.status, RunStatus::Ended);
    let rec = s.run(run).await.unwrap().unwrap();
    assert_eq!(rec.end_reason.as_deref(), Some("enough"));
    assert!(
        claim(&s, Timestamp(T0.0 + 10_000), 10).await.is_empty(),
        "no hook, nothing left"
    );
    let statuses: Vec<_> = s
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

pub async fn the_steps_per_run_breaker_refuses_the_commit<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let mut c = commit(
        &start,
        succeed(vec![child("work", T0, "1"), child("work", T0, "2")]),
        T0,
    );
    c.max_steps_per_run = 2;
    assert_eq!(
        s.commit_step(c.clone()).await.unwrap(),
        CommitOutcome::StepsLimit {
            would_be: 3,
            limit: 2
        }
    );
    c.max_steps_per_run = 3;
    assert!(matches!(
        s.commit_step(c).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
}

pub async fn dedupe_locks_for_its_ttl_and_replays_on_retry<S: Store>(s: S) {
    new_run(&s, (false, false), "null").await;
    let a = claim(&s, T0, 10).await.remove(0);
    let dd = || StateOp::Dedupe {
        key: "order-1".into(),
        ttl_secs: 60.0,
    };
    assert_eq!(op(&s, &a, 0, dd()).await.unwrap(), r#"{"locked":false}"#);
    assert_eq!(op(&s, &a, 1, dd()).await.unwrap(), r#"{"locked":true}"#);
    let retry = StepRetry {
        step: a.id,
        attempt: 1,
        error: boom(),
        logs: "[]".into(),
        now: T0,
        due_at: T0,
        duration_ms: 0,
    };
    s.retry_step(retry).await.unwrap();
    let b = claim(&s, T0, 10).await.remove(0);
    assert_eq!(
        op(&s, &b, 0, dd()).await.unwrap(),
        r#"{"locked":false}"#,
        "a retried start keeps its own lock"
    );
    let mut later = op_ctx(&b, 5);
    later.now = Timestamp(T0.0 + 60_001);
    assert_eq!(
        s.apply_state_op(later, dd()).await.unwrap(),
        r#"{"locked":false}"#,
        "expired"
    );
}

pub async fn large_payloads_round_trip_through_the_blob_store<S: Store>(s: S) {
    let run = new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let big = format!("\"{}\"", "y".repeat(2_000_000));
    let mut c = commit(&start, succeed(vec![child("work", T0, &big)]), T0);
    c.blob_threshold = 1_500_000;
    s.commit_step(c).await.unwrap();
    let step = claim(&s, T0, 10).await.remove(0);
    assert_eq!(step.payload.len(), big.len());
    assert_eq!(step.payload, big);
    let steps = s.steps(run).await.unwrap();
    assert_eq!(steps[1].payload_bytes, big.len() as u64);
}

pub async fn deploying_the_same_source_twice_is_one_version<S: Store>(s: S) {
    let v = |src: &str| NewVersion {
        name: "wf".into(),
        source: src.into(),
        info: info(false, false),
        now: T0,
    };
    let a = s.deploy(v("class Workflow { start() {} }")).await.unwrap();
    let b = s.deploy(v("class Workflow { start() {} }")).await.unwrap();
    let c = s
        .deploy(v("class Workflow { start() { return 1 } }"))
        .await
        .unwrap();
    assert_eq!(a.id, b.id);
    assert_ne!(a.id, c.id);
    assert_eq!(
        s.version(c.id).await.unwrap().source,
        "class Workflow { start() { return 1 } }"
    );
    assert_eq!(s.version(a.id).await.unwrap().info, info(false, false));
}

pub async fn a_redelivered_trigger_starts_no_second_run<S: Store>(s: S) {
    let first = create(&s, (false, false), "{}", Some("webhook-1")).await;
    assert!(!first.duplicate);
    let again = create(&s, (false, false), "{}", Some("webhook-1")).await;
    assert_eq!(
        again,
        CreatedRun {
            run: first.run,
            duplicate: true,
            start: None,
        }
    );
    let other = create(&s, (false, false), "{}", Some("webhook-2")).await;
    assert!(!other.duplicate && other.run != first.run);
    let runs = s
        .list_runs(RunFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(runs.len(), 2, "one run per delivery");
}

pub async fn workflows_are_published_listed_and_removed<S: Store>(s: S) {
    let v = s
        .deploy(NewVersion {
            name: "orders".into(),
            source: "a".into(),
            info: info(false, false),
            now: T0,
        })
        .await
        .unwrap();
    let publish = |version, settings: &str, token: &str, now| Publish {
        name: "orders".into(),
        version,
        settings: settings.into(),
        http_token: token.into(),
        now,
        schedule: None,
        env: vec![EnvVar {
            name: "REGION".into(),
            value: "eu".into(),
            secret: false,
        }],
    };
    let w = s
        .publish(publish(v.id, r#"{"x":1}"#, "tok1", T0))
        .await
        .unwrap();
    assert_eq!(w.http_token, "tok1");
    let env = s.env_vars("orders".into()).await.unwrap();
    assert_eq!(env.len(), 1, "the deploy's variables come with it");
    assert_eq!(
        (w.name.as_str(), w.version, w.settings.as_str()),
        ("orders", v.id, r#"{"x":1}"#)
    );
    let v2 = s
        .deploy(NewVersion {
            name: "orders".into(),
            source: "b".into(),
            info: info(false, false),
            now: T0,
        })
        .await
        .unwrap();
    let later = Timestamp(T0.0 + 5);
    let w2 = s
        .publish(publish(v2.id, "{}", "tok2", later))
        .await
        .unwrap();
    assert_eq!(w2.http_token, "tok1", "a redeploy keeps the workflow's URL");
    assert_eq!(
        s.workflow_by_token("tok1".into()).await.unwrap(),
        Some(w2.clone())
    );
    assert_eq!(s.workflow_by_token("tok2".into()).await.unwrap(), None);
    assert_eq!(s.workflow_by_token(String::new()).await.unwrap(), None);
    assert_eq!(
        (w2.version, w2.created_at, w2.updated_at),
        (v2.id, T0, later)
    );
    assert_eq!(s.workflows().await.unwrap(), vec![w2.clone()]);
    assert_eq!(s.workflow("orders".into()).await.unwrap(), Some(w2));
    assert!(s.remove_workflow("orders".into()).await.unwrap());
    assert!(!s.remove_workflow("orders".into()).await.unwrap());
    assert_eq!(s.workflow("orders".into()).await.unwrap(), None);
}

pub async fn runs_list_newest_first_with_filters_and_pages<S: Store>(s: S) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(new_run(&s, (false, false), "null").await);
    }
    let start = claim(&s, T0, 1).await.remove(0);
    s.commit_step(commit(&start, succeed(vec![]), T0))
        .await
        .unwrap();
    let page = s
        .list_runs(RunFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[4], ids[3]]
    );
    let next = s
        .list_runs(RunFilter {
            limit: 2,
            before: Some(ids[3]),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let done = s
        .list_runs(RunFilter {
            status: Some(RunStatus::Completed),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![ids[0]]);
    let none = s
        .list_runs(RunFilter {
            workflow: Some("other".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(none.is_empty());
}

pub async fn a_cancelled_run_stops_and_its_steps_are_refused<S: Store>(s: S) {
    let (run, branches) = two_branches(&s, (true, true)).await;
    op(&s, &branches[0], 0, incr("n", 1.0)).await.unwrap();
    let done = s
        .cancel_run(run, T0)
        .await
        .unwrap()
        .expect("it was running");
    assert_eq!(done.status, RunStatus::Cancelled);
    assert!(
        s.cancel_run(run, T0).await.unwrap().is_none(),
        "cancelling twice changes nothing"
    );
    let err = op(&s, &branches[1], 0, incr("n", 1.0)).await.unwrap_err();
    assert!(
        matches!(err, OpError::State(StateError::Superseded)),
        "{err}"
    );
    let out = s
        .commit_step(commit(&branches[0], succeed(vec![]), T0))
        .await
        .unwrap();
    assert_eq!(out, CommitOutcome::Superseded);
    assert!(s.run_state(run).await.unwrap().is_empty());
    assert!(
        claim(&s, Timestamp(T0.0 + LEASE * 10), 10).await.is_empty(),
        "no hook, no retry"
    );
    let rec = s.run(run).await.unwrap().unwrap();
    assert_eq!(
        (rec.status, rec.finished_at),
        (RunStatus::Cancelled, Some(T0))
    );
}

pub async fn history_is_pruned_after_retention_and_open_runs_are_kept<S: Store>(s: S) {
    let (done, branches) = two_branches(&s, (false, false)).await;
    for b in &branches {
        s.commit_step(commit(b, succeed(vec![]), T0)).await.unwrap();
    }
    let open = new_run(&s, (false, false), "null").await;
    let stats = s.queue_stats(Timestamp(T0.0 + 5)).await.unwrap();
    assert_eq!(
        stats,
        QueueStats {
            due: 1,
            oldest_due: Some(T0)
        },
        "the open run's start is due"
    );
    assert_eq!(
        s.prune_history(T0).await.unwrap(),
        0,
        "finished at T0 is not before T0"
    );
    assert_eq!(s.prune_history(Timestamp(T0.0 + 1)).await.unwrap(), 1);
    assert!(s.run(done).await.unwrap().is_none());
    assert!(s.steps(done).await.unwrap().is_empty());
    assert!(
        s.run(open).await.unwrap().is_some(),
        "unfinished runs are never pruned"
    );
    assert_eq!(claim(&s, T0, 10).await.len(), 1);
}

pub async fn an_inline_start_is_leased_to_its_creator<S: Store>(s: S) {
    let v = s
        .deploy(NewVersion {
            name: "wf".into(),
            source: "x".into(),
            info: info(false, false),
            now: T0,
        })
        .await
        .unwrap();
    let created = s
        .create_run(NewRun {
            delivery: None,
            workflow: "wf".into(),
            version: v.id,
            data: r#"{"q":1}"#.into(),
            headers: "{}".into(),
            has_complete_hook: false,
            has_error_hook: false,
            now: T0,
            claim_start: Some(Timestamp(T0.0 + LEASE)),
            gate: None,
        })
        .await
        .unwrap();
    let start = created.start.expect("the start step comes back leased");
    assert_eq!(
        (
            start.run,
            start.action.as_str(),
            start.attempt,
            start.payload.as_str()
        ),
        (created.run, "start", 1, r#"{"q":1}"#)
    );
    assert!(claim(&s, T0, 10).await.is_empty(), "nobody else gets it");
    op(&s, &start, 0, incr("n", 1.0)).await.unwrap();
    let done = finished(
        s.commit_step(commit(&start, succeed(vec![]), T0))
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(done.state.unwrap(), vec![("n".into(), "1".into())]);
}

pub async fn a_schedule_fires_once_per_due_time_and_keeps_its_progress<S: Store>(s: S) {
    let v = s
        .deploy(NewVersion {
            name: "nightly".into(),
            source: "x".into(),
            info: info(false, false),
            now: T0,
        })
        .await
        .unwrap();
    let publish = |spec: &str, first: Option<Timestamp>| Publish {
        name: "nightly".into(),
        version: v.id,
        settings: "{}".into(),
        http_token: "t".into(),
        now: T0,
        schedule: Some(ScheduleSpec {
            spec: spec.into(),
            first_fire_at: first,
        }),
        env: Vec::new(),
    };
    let first = Timestamp(T0.0 + 1000);
    s.publish(publish("every-1s", Some(first))).await.unwrap();
    assert_eq!(s.next_schedule_at().await.unwrap(), Some(first));
    assert!(s.due_schedules(T0).await.unwrap().is_empty());
    let due = s.due_schedules(first).await.unwrap();
    assert_eq!(
        due,
        vec![DueSchedule {
            workflow: "nightly".into(),
            spec: "every-1s".into(),
            fire_at: first,
            fired: 0
        }]
    );
    let run = NewRun {
        delivery: None,
        workflow: "nightly".into(),
        version: v.id,
        data: r#"{"counter":1}"#.into(),
        headers: "{}".into(),
        has_complete_hook: false,
        has_error_hook: false,
        now: first,
        claim_start: None,
        gate: None,
    };
    let next = Timestamp(first.0 + 1000);
    let fire = FireSchedule {
        workflow: "nightly".into(),
        fire_at: first,
        next_fire_at: Some(next),
        run: run.clone(),
    };
    let created = s.fire_schedule(fire.clone()).await.unwrap().expect("fired");
    assert!(
        s.fire_schedule(fire).await.unwrap().is_none(),
        "a fire time fires once"
    );
    assert_eq!(
        s.run(created.run).await.unwrap().unwrap().workflow,
        "nightly"
    );
    // Republishing the same spec keeps the progress; a new spec restarts it.
    s.publish(publish("every-1s", Some(first))).await.unwrap();
    assert_eq!(s.due_schedules(next).await.unwrap()[0].fired, 1);
    s.publish(publish("every-2s", Some(Timestamp(T0.0 + 2000))))
        .await
        .unwrap();
    assert_eq!(s.due_schedules(next).await.unwrap()[0].fired, 0);
    // A schedule that is over is not due again; removing the workflow drops it.
    let over = FireSchedule {
        workflow: "nightly".into(),
        fire_at: Timestamp(T0.0 + 2000),
        next_fire_at: None,
        run,
    };
    assert!(s.fire_schedule(over).await.unwrap().is_some());
    assert!(
        s.due_schedules(Timestamp(T0.0 + 1_000_000))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(s.next_schedule_at().await.unwrap(), None);
    s.publish(publish("every-3s", Some(first))).await.unwrap();
    assert!(s.remove_workflow("nightly".into()).await.unwrap());
    assert!(
        s.due_schedules(Timestamp(T0.0 + 1_000_000))
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn released_leases_are_claimable_at_once<S: Store>(s: S) {
    let (_, branches) = two_branches(&s, (false, false)).await;
    let leases: Vec<_> = branches.iter().map(|b| (b.id, b.attempt)).collect();
    assert_eq!(s.release_leases(leases).await.unwrap(), 2);
    let again = claim(&s, T0, 10).await;
    assert_eq!(
        again.iter().map(|c| (c.id, c.attempt)).collect::<Vec<_>>(),
        branches.iter().map(|b| (b.id, 2)).collect::<Vec<_>>()
    );
    let out = s
        .commit_step(commit(&branches[0], succeed(vec![]), T0))
        .await
        .unwrap();
    assert_eq!(
        out,
        CommitOutcome::Superseded,
        "the released attempt can no longer commit"
    );
    assert_eq!(
        s.release_leases(vec![(branches[0].id, 1)]).await.unwrap(),
        0,
        "a stale lease releases nothing"
    );
}

pub async fn workflow_state_is_shared_by_runs_and_outlives_them<S: Store>(s: S) {
    let (_, a) = two_branches(&s, (false, false)).await;
    let shared = |step: &ClaimedStep, seq| OpContext {
        scope: StateScope::Workflow,
        ..op_ctx(step, seq)
    };
    assert_eq!(
        s.apply_state_op(shared(&a[0], 0), incr("runs", 1.0))
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(
        s.apply_state_op(shared(&a[1], 0), incr("runs", 1.0))
            .await
            .unwrap(),
        "2"
    );
    s.apply_state_op(shared(&a[0], 1), push("seen", "\"a\""))
        .await
        .unwrap();
    op(&s, &a[0], 2, incr("runs", 5.0)).await.unwrap();
    let mut last = None;
    for b in &a {
        last = finished(s.commit_step(commit(b, succeed(vec![]), T0)).await.unwrap());
    }
    let done = last.expect("the run finished");
    assert_eq!(
        done.state.unwrap(),
        vec![("runs".into(), "5".into())],
        "run state and workflow state are apart"
    );
    // A later run of the same workflow sees the shared state.
    let (_, b) = two_branches(&s, (false, false)).await;
    assert_eq!(
        s.apply_state_op(shared(&b[0], 0), get("runs"))
            .await
            .unwrap(),
        "2"
    );
    assert_eq!(
        s.apply_state_op(shared(&b[0], 1), get("seen"))
            .await
            .unwrap(),
        "[\"a\"]"
    );
    assert_eq!(op(&s, &b[0], 2, get("runs")).await.unwrap(), "null");
    // Journaled like run state: a retried step replays its shared increment.
    s.apply_state_op(shared(&b[1], 0), incr("runs", 1.0))
        .await
        .unwrap();
    let retry = StepRetry {
        step: b[1].id,
        attempt: 1,
        error: boom(),
        logs: "[]".into(),
        now: T0,
        due_at: T0,
        duration_ms: 0,
    };
    s.retry_step(retry).await.unwrap();
    let again = claim(&s, T0, 10).await.remove(0);
    assert_eq!(
        s.apply_state_op(shared(&again, 0), incr("runs", 1.0))
            .await
            .unwrap(),
        "3",
        "replayed, not applied twice"
    );
}

/// Generates one test per conformance case for a store built by `$make`,
/// or, with `optional`, by `$make` returning `Option<store>` (a back end
/// whose server may be absent outside CI).
#[macro_export]
macro_rules! conformance_tests {
    (optional $make:expr) => {
        $crate::conformance_tests!(@list [$make] optional);
    };
    ($make:expr) => {
        $crate::conformance_tests!(@list [$make] plain);
    };
    (@list [$make:expr] $mode:ident) => {
        $crate::conformance_tests!(@cases [$make] $mode;
            a_new_run_has_one_due_start_step,
            claims_respect_due_times_and_the_limit,
            the_last_branch_completes_the_run_and_deletes_its_state,
            the_complete_hook_runs_once_after_every_branch,
            the_first_failure_fails_the_run_and_siblings_go_on,
            a_retried_step_replays_its_journal_and_counts_once,
            a_diverging_retry_applies_afresh_from_the_first_mismatch,
            pushes_from_many_branches_keep_every_item,
            state_ops_refuse_what_they_cannot_do,
            run_state_total_is_enforced_at_its_edge,
            a_stale_attempt_can_neither_commit_nor_touch_state,
            end_cancels_the_other_steps,
            the_steps_per_run_breaker_refuses_the_commit,
            dedupe_locks_for_its_ttl_and_replays_on_retry,
            large_payloads_round_trip_through_the_blob_store,
            deploying_the_same_source_twice_is_one_version,
            a_redelivered_trigger_starts_no_second_run,
            workflows_are_published_listed_and_removed,
            runs_list_newest_first_with_filters_and_pages,
            a_cancelled_run_stops_and_its_steps_are_refused,
            history_is_pruned_after_retention_and_open_runs_are_kept,
            an_inline_start_is_leased_to_its_creator,
            a_schedule_fires_once_per_due_time_and_keeps_its_progress,
            released_leases_are_claimable_at_once,
            workflow_state_is_shared_by_runs_and_outlives_them,
            checkpoint_writes_are_compare_and_set,
            a_concurrency_limit_admits_queued_runs_in_order,
            a_throttle_spreads_starts_over_its_period,
            a_wait_resumes_once_or_times_out,
            csv_chunks_are_kept_per_workflow_until_they_expire,
            env_vars_are_set_listed_and_unset_per_workflow,
        );
    };
    (@cases [$make:expr] plain; $($case:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    $crate::conformance::$case($make).await;
                }
            )*
        }
    };
    (@cases [$make:expr] optional; $($case:ident),* $(,)?) => {
        mod conformance {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[tokio::test]
                async fn $case() {
                    if let Some(store) = $make {
                        $crate::conformance::$case(store).await;
                    }
                }
            )*
        }
    };
}
