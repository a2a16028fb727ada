//! The PostgreSQL store's operations, each on an open transaction: what
//! `mod.rs`'s `Store` impl runs inside `in_tx!`.

use deadpool_postgres::Transaction;
use flowstate_core::executor::StepError;
use flowstate_core::lifecycle::{self, RunView};
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{RunId, StepId, Timestamp, VersionId};
use tokio_postgres::Row;

use super::{pg_err, sql, state_ops};
use crate::{
    AttemptRecord, ClaimRequest, ClaimedStep, CommitKind, CommitOutcome, CommitPlan, CreatedRun,
    FinishedRun, NewRun, Publish, Result, RunRecord, StepCommit, StepRecord, StoreError,
    WorkflowRecord,
};

pub(super) fn ts(v: Option<i64>) -> Option<Timestamp> {
    v.map(Timestamp)
}

pub(super) fn parse_error(text: Option<String>) -> Option<StepError> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

pub(super) fn claimed(r: &Row) -> Result<ClaimedStep> {
    Ok(ClaimedStep {
        id: StepId(r.get(0)),
        run: RunId(r.get(1)),
        kind: r
            .get::<_, String>(2)
            .parse()
            .map_err(StoreError::Database)?,
        action: r.get(3),
        depth: r.get::<_, i32>(4) as u32,
        attempt: r.get::<_, i32>(5) as u32,
        payload: r
            .get::<_, Option<String>>(6)
            .unwrap_or_else(|| "null".into()),
    })
}

pub(super) fn run_record(r: &Row) -> RunRecord {
    RunRecord {
        id: RunId(r.get(0)),
        workflow: r.get(1),
        version: VersionId(r.get(2)),
        status: r.get::<_, String>(3).parse().unwrap_or(RunStatus::Failed),
        pending: r.get(4),
        steps_total: r.get::<_, i64>(5) as u64,
        error: parse_error(r.get(6)),
        end_reason: r.get(7),
        created_at: Timestamp(r.get(8)),
        finished_at: ts(r.get(9)),
    }
}

pub(super) fn workflow_record(r: &Row) -> WorkflowRecord {
    WorkflowRecord {
        name: r.get(0),
        version: VersionId(r.get(1)),
        settings: r.get(2),
        created_at: Timestamp(r.get(3)),
        updated_at: Timestamp(r.get(4)),
        http_token: r.get(5),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn insert_step(
    tx: &Transaction<'_>,
    run: i64,
    parent: Option<i64>,
    kind: StepKind,
    action: &str,
    depth: u32,
    payload: &str,
    due_at: Timestamp,
    now: Timestamp,
) -> Result<()> {
    let stmt = tx.prepare_cached(sql::INSERT_STEP).await.map_err(pg_err)?;
    tx.execute(
        &stmt,
        &[
            &run,
            &parent,
            &kind.as_str(),
            &action,
            &(depth as i32),
            &payload,
            &(payload.len() as i64),
            &due_at.0,
            &now.0,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub(super) async fn create_run(tx: &Transaction<'_>, r: NewRun) -> Result<CreatedRun> {
    let scope = format!("{}#trigger", r.workflow);
    if let Some(d) = &r.delivery {
        let seen = tx
            .query_opt(sql::SELECT_DELIVERY, &[&scope, &d.key])
            .await
            .map_err(pg_err)?;
        if let Some(row) = seen
            && let (Some(run), expires_at) = (row.get::<_, Option<i64>>(0), row.get::<_, i64>(1))
            && expires_at > r.now.0
        {
            return Ok(CreatedRun {
                run: RunId(run),
                duplicate: true,
                start: None,
            });
        }
    }
    let stmt = tx.prepare_cached(sql::INSERT_RUN).await.map_err(pg_err)?;
    let run: i64 = tx
        .query_one(
            &stmt,
            &[
                &r.workflow,
                &r.version.0,
                &r.headers,
                &r.has_complete_hook,
                &r.has_error_hook,
                &r.now.0,
            ],
        )
        .await
        .map_err(pg_err)?
        .get(0);
    insert_step(
        tx,
        run,
        None,
        StepKind::Action,
        "start",
        0,
        &r.data,
        r.now,
        r.now,
    )
    .await?;
    if let Some(d) = &r.delivery {
        tx.execute(
            sql::UPSERT_DELIVERY,
            &[&scope, &d.key, &r.now.0.saturating_add(d.ttl_ms), &run],
        )
        .await
        .map_err(pg_err)?;
    }
    let due = match &r.gate {
        Some(gate) => super::gate::hold(tx, run, &r.workflow, gate, r.now).await?,
        None => Some(r.now),
    };
    let start = match r.claim_start {
        Some(lease) if due.is_some_and(|d| d <= r.now) => {
            let row = tx
                .query_one(sql::CLAIM_START, &[&run, &lease.0, &r.now.0])
                .await
                .map_err(pg_err)?;
            if r.gate.is_some() {
                tx.execute(super::gate::MARK_STARTED, &[&vec![run]])
                    .await
                    .map_err(pg_err)?;
            }
            Some(claimed(&row)?)
        }
        _ => None,
    };
    Ok(CreatedRun {
        run: RunId(run),
        duplicate: false,
        start,
    })
}

pub(super) async fn claim(
    tx: &Transaction<'_>,
    c: ClaimRequest,
    queries: &[&str],
) -> Result<Vec<ClaimedStep>> {
    let mut out = Vec::new();
    for q in queries {
        let left = c.limit.saturating_sub(out.len()) as i64;
        if left == 0 {
            break;
        }
        let stmt = tx.prepare_cached(q).await.map_err(pg_err)?;
        for row in tx
            .query(&stmt, &[&c.lease_until.0, &c.now.0, &left])
            .await
            .map_err(pg_err)?
        {
            out.push(claimed(&row)?);
        }
    }
    out.sort_by_key(|s| s.id);
    let starting: Vec<i64> = out
        .iter()
        .filter(|s| s.depth == 0 && s.kind == StepKind::Action)
        .map(|s| s.run.0)
        .collect();
    if !starting.is_empty() {
        tx.execute(super::gate::MARK_STARTED, &[&starting])
            .await
            .map_err(pg_err)?;
    }
    Ok(out)
}

/// The leased step's (run, kind, depth, started_at), locked, if `attempt`
/// still holds the lease.
pub(super) async fn lock_leased(
    tx: &Transaction<'_>,
    step: StepId,
    attempt: u32,
) -> Result<Option<(i64, StepKind, u32, Option<i64>)>> {
    let stmt = tx
        .prepare_cached(sql::LOCK_LEASED_STEP)
        .await
        .map_err(pg_err)?;
    let row = tx
        .query_opt(&stmt, &[&step.0, &(attempt as i32)])
        .await
        .map_err(pg_err)?;
    Ok(row.map(|r| {
        (
            r.get(0),
            r.get::<_, String>(1).parse().unwrap_or(StepKind::Action),
            r.get::<_, i32>(2) as u32,
            r.get(3),
        )
    }))
}

pub(super) async fn delete_run_state(tx: &Transaction<'_>, run: i64) -> Result<()> {
    for q in [
        sql::DELETE_RUN_STATE,
        sql::DELETE_RUN_LIST_ITEMS,
        sql::DELETE_RUN_JOURNAL,
        sql::RESET_STATE_BYTES,
    ] {
        tx.execute(q, &[&run]).await.map_err(pg_err)?;
    }
    Ok(())
}

pub(super) async fn commit_step(tx: &Transaction<'_>, c: StepCommit) -> Result<CommitOutcome> {
    let Some((run, kind, depth, _)) = lock_leased(tx, c.step, c.attempt).await? else {
        return Ok(CommitOutcome::Superseded);
    };
    let row = tx
        .query_one(sql::LOCK_RUN_FOR_COMMIT, &[&run])
        .await
        .map_err(pg_err)?;
    let view = RunView {
        status: row
            .get::<_, String>(0)
            .parse()
            .map_err(StoreError::Database)?,
        pending: row.get(1),
        has_complete_hook: row.get(3),
        has_error_hook: row.get(4),
    };
    let steps_total: i64 = row.get(2);
    let CommitPlan {
        outcome,
        status: step_status,
        error,
        children,
        end_reason,
    } = c.kind.plan();
    let would_be = steps_total as u64 + children.len() as u64;
    if !children.is_empty() && would_be > c.max_steps_per_run {
        return Ok(CommitOutcome::StepsLimit {
            would_be,
            limit: c.max_steps_per_run,
        });
    }
    // Rolled back by the caller if a later write conflicts.
    if !matches!(c.kind, CommitKind::FailedForGood { .. })
        && let Some(scope) = super::checkpoints::write_all(tx, run, &c.checkpoints, c.now).await?
    {
        return Ok(CommitOutcome::CheckpointConflict { scope });
    }
    let t = lifecycle::decide(view, kind, outcome);
    let error_json = error.map(|e| serde_json::to_string(e).expect("StepError serialises"));
    tx.execute(
        sql::FINISH_STEP,
        &[
            &c.step.0,
            &step_status.as_str(),
            &c.now.0,
            &(c.duration_ms as i64),
            &c.logs,
            &error_json,
        ],
    )
    .await
    .map_err(pg_err)?;
    for child in children {
        match &child.wait {
            Some(wait) => {
                super::waits::insert_wait(
                    tx,
                    run,
                    c.step.0,
                    &child.action,
                    depth + 1,
                    &child.payload,
                    child.due_at,
                    c.now,
                    wait,
                )
                .await?
            }
            None => {
                insert_step(
                    tx,
                    run,
                    Some(c.step.0),
                    StepKind::Action,
                    &child.action,
                    depth + 1,
                    &child.payload,
                    child.due_at,
                    c.now,
                )
                .await?
            }
        }
    }
    let mut added = children.len() as i64;
    if let Some(hook) = t.schedule_hook {
        let method = hook.hook_method().expect("a hook kind names its method");
        insert_step(
            tx,
            run,
            Some(c.step.0),
            hook,
            method,
            depth + 1,
            "null",
            c.now,
            c.now,
        )
        .await?;
        added += 1;
    }
    if t.cancel_others {
        tx.execute(sql::CANCEL_OTHER_STEPS, &[&run, &c.step.0, &c.now.0])
            .await
            .map_err(pg_err)?;
    }
    let failed_now = t.status == Some(RunStatus::Failed);
    tx.execute(
        sql::UPDATE_RUN_AFTER_STEP,
        &[
            &run,
            &t.pending,
            &added,
            &t.status.map(|s| s.as_str()),
            &if failed_now { error_json.clone() } else { None },
            &end_reason,
            &t.finalize.then_some(c.now.0),
            &c.kind.waiting_delta(),
        ],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(sql::DELETE_STEP_JOURNAL, &[&c.step.0])
        .await
        .map_err(pg_err)?;
    let finished = if t.finalize {
        let state = if c.capture_state {
            Some(state_ops::run_state(tx, run).await?)
        } else {
            None
        };
        delete_run_state(tx, run).await?;
        super::gate::admit_after(tx, run, c.now).await?;
        Some(FinishedRun {
            run: RunId(run),
            status: t.status.unwrap_or(view.status),
            state,
        })
    } else {
        None
    };
    let claimed = if c.claim > 0 {
        claim(
            tx,
            ClaimRequest {
                now: c.now,
                limit: c.claim,
                lease_until: c.lease_until,
            },
            &[sql::CLAIM_DUE],
        )
        .await?
    } else {
        Vec::new()
    };
    Ok(CommitOutcome::Committed { finished, claimed })
}

pub(super) async fn steps(tx: &Transaction<'_>, run: RunId) -> Result<Vec<StepRecord>> {
    let mut attempts: std::collections::HashMap<i64, Vec<AttemptRecord>> = Default::default();
    for r in tx
        .query(sql::SELECT_ATTEMPTS, &[&run.0])
        .await
        .map_err(pg_err)?
    {
        attempts.entry(r.get(0)).or_default().push(AttemptRecord {
            attempt: r.get::<_, i32>(1) as u32,
            started_at: ts(r.get(2)),
            finished_at: Timestamp(r.get(3)),
            error: parse_error(r.get(4)),
            logs: r.get(5),
        });
    }
    let rows = tx
        .query(sql::SELECT_STEPS, &[&run.0])
        .await
        .map_err(pg_err)?;
    Ok(rows
        .iter()
        .map(|r| {
            let id: i64 = r.get(0);
            StepRecord {
                id: StepId(id),
                run: RunId(r.get(1)),
                parent: r.get::<_, Option<i64>>(2).map(StepId),
                kind: r.get::<_, String>(3).parse().unwrap_or(StepKind::Action),
                action: r.get(4),
                depth: r.get::<_, i32>(5) as u32,
                status: r.get::<_, String>(6).parse().unwrap_or(StepStatus::Failed),
                attempt: r.get::<_, i32>(7) as u32,
                payload_bytes: r.get::<_, i64>(8) as u64,
                due_at: Timestamp(r.get(9)),
                started_at: ts(r.get(10)),
                finished_at: ts(r.get(11)),
                duration_ms: r.get::<_, Option<i64>>(12).map(|d| d as u64),
                error: parse_error(r.get(13)),
                logs: r
                    .get::<_, Option<String>>(14)
                    .unwrap_or_else(|| "[]".into()),
                failed_attempts: attempts.remove(&id).unwrap_or_default(),
            }
        })
        .collect())
}

pub(super) async fn publish(tx: &Transaction<'_>, p: &Publish) -> Result<WorkflowRecord> {
    tx.execute(
        sql::UPSERT_WORKFLOW,
        &[&p.name, &p.version.0, &p.settings, &p.now.0, &p.http_token],
    )
    .await
    .map_err(pg_err)?;
    let current: Option<String> = tx
        .query_opt(sql::SELECT_SCHEDULE_SPEC, &[&p.name])
        .await
        .map_err(pg_err)?
        .map(|r| r.get(0));
    match &p.schedule {
        Some(s) if current.as_deref() == Some(s.spec.as_str()) => {}
        Some(s) => {
            tx.execute(
                sql::REPLACE_SCHEDULE,
                &[&p.name, &s.spec, &s.first_fire_at.map(|t| t.0)],
            )
            .await
            .map_err(pg_err)?;
        }
        None => {
            tx.execute(sql::DELETE_SCHEDULE, &[&p.name])
                .await
                .map_err(pg_err)?;
        }
    }
    for var in &p.env {
        super::env::set(tx, &p.name, var, p.now).await?;
    }
    let row = tx
        .query_one(sql::SELECT_WORKFLOW, &[&p.name])
        .await
        .map_err(pg_err)?;
    Ok(workflow_record(&row))
}

pub(super) fn source_hash(source: &str) -> String {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    source.len().hash(&mut h);
    format!("{:016x}", h.finish())
}
