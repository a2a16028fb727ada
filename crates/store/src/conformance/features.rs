//! Conformance cases for the state a workflow keeps beyond one run and the
//! triggers' extras: checkpoints (compare-and-set), concurrency gates and
//! throttles, waits, CSV chunks and workflow variables.

use flowstate_core::executor::{ErrorKind, StepError};
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{RunId, Timestamp};

use super::*;

/// A run of `wf` behind a gate, created at `now`.
async fn gated<S: Store>(s: &S, gate: RunGate, now: Timestamp) -> RunId {
    let v = s
        .deploy(NewVersion {
            name: "wf".into(),
            source: "class Workflow {}".into(),
            info: info(false, false),
            now,
        })
        .await
        .unwrap();
    s.create_run(NewRun {
        delivery: None,
        workflow: "wf".into(),
        version: v.id,
        data: "{}".into(),
        headers: "{}".into(),
        has_complete_hook: false,
        has_error_hook: false,
        now,
        claim_start: None,
        gate: Some(gate),
    })
    .await
    .unwrap()
    .run
}

async fn status_of<S: Store>(s: &S, run: RunId) -> RunStatus {
    s.run(run).await.unwrap().unwrap().status
}

pub async fn checkpoint_writes_are_compare_and_set<S: Store>(s: S) {
    use flowstate_core::checkpoint::{Checkpoint, CheckpointWrite};
    let write = |read_version, value: &str| CheckpointWrite {
        scope: String::new(),
        read_version,
        value: Some(value.into()),
    };
    let (_, steps) = two_branches(&s, (false, false)).await;
    let unset = s.checkpoint("wf".into(), "".into()).await.unwrap();
    assert_eq!(unset, Checkpoint::default(), "undefined until first set");

    // Both branches read version 0 and write 1: the first wins.
    let mut first = commit(&steps[0], succeed(vec![]), T0);
    first.checkpoints = vec![write(Some(0), "1")];
    assert!(finished(s.commit_step(first).await.unwrap()).is_none());
    assert_eq!(op(&s, &steps[1], 0, incr("n", 1.0)).await.unwrap(), "1");
    let mut second = commit(&steps[1], succeed(vec![]), T0);
    second.checkpoints = vec![write(Some(0), "1")];
    assert_eq!(
        s.commit_step(second.clone()).await.unwrap(),
        CommitOutcome::CheckpointConflict { scope: "".into() }
    );
    // The refused commit changed nothing: the step still holds its lease,
    // runs again replaying its journal, and commits on the new value.
    let rerun = OpContext {
        replay: true,
        ..op_ctx(&steps[1], 0)
    };
    assert_eq!(
        s.apply_state_op(rerun, incr("n", 1.0)).await.unwrap(),
        "1",
        "replayed, not applied twice"
    );
    let now = s.checkpoint("wf".into(), "".into()).await.unwrap();
    assert_eq!((now.value.as_deref(), now.version), (Some("1"), 1));
    second.checkpoints = vec![
        write(Some(1), "2"),
        CheckpointWrite {
            scope: "work".into(),
            read_version: None,
            value: Some(r#"{"last":2}"#.into()),
        },
    ];
    let done = finished(s.commit_step(second).await.unwrap()).expect("the run ends");
    assert_eq!(done.status, RunStatus::Completed);
    let now = s.checkpoint("wf".into(), "".into()).await.unwrap();
    assert_eq!((now.value.as_deref(), now.version), (Some("2"), 2));
    let step = s.checkpoint("wf".into(), "work".into()).await.unwrap();
    assert_eq!(step.value.as_deref(), Some(r#"{"last":2}"#));

    // Clearing from outside keeps the version growing, so a step that read
    // the old value still conflicts.
    let cleared = s
        .put_checkpoint("wf".into(), "".into(), None, T0)
        .await
        .unwrap();
    assert_eq!((cleared.value, cleared.version), (None, 3));
    let (_, steps) = two_branches(&s, (false, false)).await;
    let mut stale = commit(&steps[0], succeed(vec![]), T0);
    stale.checkpoints = vec![write(Some(2), "3")];
    assert!(matches!(
        s.commit_step(stale).await.unwrap(),
        CommitOutcome::CheckpointConflict { .. }
    ));
    // A failure for good writes nothing.
    let mut failed = commit(&steps[1], CommitKind::FailedForGood { error: boom() }, T0);
    failed.checkpoints = vec![write(Some(3), "9")];
    s.commit_step(failed).await.unwrap();
    let now = s.checkpoint("wf".into(), "".into()).await.unwrap();
    assert_eq!((now.value, now.version), (None, 3));
}

pub async fn a_concurrency_limit_admits_queued_runs_in_order<S: Store>(s: S) {
    let one = |key: &str| RunGate {
        key: key.into(),
        concurrency: Some(1),
        throttle: None,
    };
    let a1 = gated(&s, one("a"), T0).await;
    let a2 = gated(&s, one("a"), T0).await;
    let a3 = gated(&s, one("a"), T0).await;
    let b1 = gated(&s, one("b"), T0).await;
    assert_eq!(status_of(&s, a2).await, RunStatus::Queued);
    let first = claim(&s, T0, 10).await;
    let runs: Vec<RunId> = first.iter().map(|c| c.run).collect();
    assert_eq!(runs, vec![a1, b1], "one run per key at a time");
    assert_eq!(status_of(&s, a1).await, RunStatus::Running);
    assert_eq!(status_of(&s, a2).await, RunStatus::Queued);

    // Cancelling a queued run just drops it from the queue.
    s.cancel_run(a3, T0).await.unwrap().unwrap();
    // a1 finishing admits a2 in the same commit.
    let mut c = commit(&first[0], succeed(vec![]), T0);
    c.claim = 10;
    let CommitOutcome::Committed { finished, claimed } = s.commit_step(c).await.unwrap() else {
        panic!("the commit goes through");
    };
    assert!(finished.is_some());
    assert_eq!(claimed.iter().map(|c| c.run).collect::<Vec<_>>(), vec![a2]);
    assert_eq!(status_of(&s, a2).await, RunStatus::Running);
    s.commit_step(commit(&claimed[0], succeed(vec![]), T0))
        .await
        .unwrap();
    assert!(
        claim(&s, T0, 10).await.is_empty(),
        "the cancelled run never starts"
    );
    assert_eq!(status_of(&s, a3).await, RunStatus::Cancelled);
}

pub async fn a_throttle_spreads_starts_over_its_period<S: Store>(s: S) {
    let gate = RunGate {
        key: String::new(),
        concurrency: None,
        throttle: Some(Throttle {
            limit: 2,
            period_ms: 60_000,
        }),
    };
    let runs = [
        gated(&s, gate.clone(), T0).await,
        gated(&s, gate.clone(), T0).await,
        gated(&s, gate.clone(), T0).await,
    ];
    let now = claim(&s, T0, 10).await;
    assert_eq!(
        now.iter().map(|c| c.run).collect::<Vec<_>>(),
        runs[..2].to_vec()
    );
    assert_eq!(status_of(&s, runs[2]).await, RunStatus::Queued);
    for step in &now {
        s.commit_step(commit(step, succeed(vec![]), T0))
            .await
            .unwrap();
    }
    assert!(claim(&s, Timestamp(T0.0 + 59_999), 10).await.is_empty());
    let later = claim(&s, Timestamp(T0.0 + 60_000), 10).await;
    assert_eq!(
        later.iter().map(|c| c.run).collect::<Vec<_>>(),
        vec![runs[2]]
    );
}

pub async fn a_wait_resumes_once_or_times_out<S: Store>(s: S) {
    use flowstate_core::executor::WaitSpec;
    let wait = |token: &str, due: Timestamp| NewChild {
        wait: Some(WaitSpec {
            token: token.into(),
            redirect_url: Some("https://example.com/thanks".into()),
        }),
        ..child("work", due, r#"{"order":7}"#)
    };
    let resume = |token: &str, data: &str, now: Timestamp| ResumeWait {
        token: token.into(),
        data: data.into(),
        now,
    };
    let run = new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    let due = Timestamp(T0.0 + 60_000);
    s.commit_step(commit(&start, succeed(vec![wait("t1", due)]), T0))
        .await
        .unwrap();
    assert_eq!(status_of(&s, run).await, RunStatus::Waiting);
    assert!(
        claim(&s, T0, 10).await.is_empty(),
        "a wait is not a due step"
    );
    assert_eq!(
        s.resume_wait(resume("t1", r#"{"ok":true}"#, T0))
            .await
            .unwrap(),
        Resumed::Resumed {
            run,
            redirect_url: Some("https://example.com/thanks".into())
        }
    );
    assert_eq!(status_of(&s, run).await, RunStatus::Running);
    assert_eq!(
        s.resume_wait(resume("t1", "{}", T0)).await.unwrap(),
        Resumed::AlreadyUsed { run }
    );
    let resumed = claim(&s, T0, 10).await.remove(0);
    assert_eq!(resumed.action, "work");
    let payload: serde_json::Value = serde_json::from_str(&resumed.payload).unwrap();
    assert_eq!(payload, serde_json::json!({ "order": 7, "ok": true }));
    let done = finished(
        s.commit_step(commit(&resumed, succeed(vec![]), T0))
            .await
            .unwrap(),
    );
    assert_eq!(done.unwrap().status, RunStatus::Completed);

    // A wait nobody resumes is claimed at its timeout as a `wait_timeout`.
    let run = new_run(&s, (false, false), "null").await;
    let start = claim(&s, T0, 10).await.remove(0);
    s.commit_step(commit(&start, succeed(vec![wait("t2", due)]), T0))
        .await
        .unwrap();
    assert_eq!(
        s.next_due_at().await.unwrap(),
        Some(due),
        "the timeout is a due time"
    );
    let late = Timestamp(due.0 - 1);
    assert!(claim(&s, late, 10).await.is_empty());
    let expired = claim(&s, due, 10).await.remove(0);
    assert_eq!(expired.kind, StepKind::WaitTimeout);
    assert_eq!(
        s.resume_wait(resume("t2", "{}", due)).await.unwrap(),
        Resumed::Expired { run }
    );
    let timed_out = CommitKind::TimedOut {
        error: StepError::new(ErrorKind::WaitTimeout, "WaitTimeout", "no event"),
    };
    let done = finished(
        s.commit_step(commit(&expired, timed_out, due))
            .await
            .unwrap(),
    );
    assert_eq!(
        done.unwrap().status,
        RunStatus::Completed,
        "a timeout is not a failure"
    );
    let steps = s.steps(run).await.unwrap();
    assert_eq!(steps[1].status, StepStatus::TimedOut);
    assert_eq!(
        s.resume_wait(resume("nope", "{}", due)).await.unwrap(),
        Resumed::Unknown
    );
}

pub async fn csv_chunks_are_kept_per_workflow_until_they_expire<S: Store>(s: S) {
    use flowstate_core::executor::{CSV_TTL, CsvOp};
    let op = |workflow: &str, op: CsvOp, now: Timestamp| s.csv_op(workflow.into(), op, now);
    let read = |index| CsvOp::Read {
        key: "k".into(),
        index,
    };
    op("wf", CsvOp::Begin { key: "k".into() }, T0)
        .await
        .unwrap();
    for index in 0..2 {
        let rows = format!(r#"[{{"n":"{index}"}}]"#);
        op(
            "wf",
            CsvOp::Chunk {
                key: "k".into(),
                index,
                rows,
            },
            T0,
        )
        .await
        .unwrap();
    }
    assert_eq!(
        op("wf", read(0), T0).await.unwrap(),
        None,
        "not until it is complete"
    );
    op(
        "wf",
        CsvOp::Finish {
            key: "k".into(),
            meta: "{}".into(),
        },
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        op("wf", read(1), T0).await.unwrap().as_deref(),
        Some(r#"[{"n":"1"}]"#)
    );
    assert_eq!(op("wf", read(2), T0).await.unwrap(), None);
    assert_eq!(
        op("other", read(0), T0).await.unwrap(),
        None,
        "another workflow's import"
    );
    op("other", CsvOp::Delete { key: "k".into() }, T0)
        .await
        .unwrap();
    let expiry = T0.plus(CSV_TTL);
    let just_before = Timestamp(expiry.0 - 1);
    assert!(op("wf", read(0), just_before).await.unwrap().is_some());
    assert_eq!(
        op("wf", read(0), expiry).await.unwrap(),
        None,
        "expired after 7 days"
    );

    // A retried import starts over under the same key.
    op("wf", CsvOp::Begin { key: "k".into() }, T0)
        .await
        .unwrap();
    op(
        "wf",
        CsvOp::Finish {
            key: "k".into(),
            meta: "{}".into(),
        },
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        op("wf", read(1), T0).await.unwrap(),
        None,
        "old chunks are gone"
    );
    op(
        "wf",
        CsvOp::Chunk {
            key: "k".into(),
            index: 0,
            rows: "[]".into(),
        },
        T0,
    )
    .await
    .unwrap();
    op("wf", CsvOp::Delete { key: "k".into() }, T0)
        .await
        .unwrap();
    assert_eq!(op("wf", read(0), T0).await.unwrap(), None, "deleted");
}

pub async fn env_vars_are_set_listed_and_unset_per_workflow<S: Store>(s: S) {
    let var = |name: &str, value: &str, secret| EnvVar {
        name: name.into(),
        value: value.into(),
        secret,
    };
    s.set_env("wf".into(), var("B", "2", false), T0)
        .await
        .unwrap();
    s.set_env("wf".into(), var("A", "v1:sealed", true), T0)
        .await
        .unwrap();
    s.set_env("wf".into(), var("B", "3", false), T0)
        .await
        .unwrap();
    s.set_env("other".into(), var("C", "x", false), T0)
        .await
        .unwrap();
    assert_eq!(
        s.env_vars("wf".into()).await.unwrap(),
        vec![var("A", "v1:sealed", true), var("B", "3", false)]
    );
    assert!(s.unset_env("wf".into(), "A".into()).await.unwrap());
    assert!(!s.unset_env("wf".into(), "A".into()).await.unwrap());
    assert_eq!(
        s.env_vars("wf".into()).await.unwrap(),
        vec![var("B", "3", false)]
    );
}
