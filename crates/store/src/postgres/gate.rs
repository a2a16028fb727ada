//! Concurrency and throttle on PostgreSQL: the same admission as the
//! SQLite store (see `sqlite/gate.rs`), under a transaction-scoped advisory
//! lock per (workflow, key) so that nodes admitting at once cannot both
//! take the last slot.

use deadpool_postgres::Transaction;
use flowstate_core::Timestamp;

use super::pg_err;
use crate::{Result, RunGate};

const HOLD_RUN: &str = "UPDATE runs SET status = 'queued', gate_key = $2, gate_limit = $3,
        throttle_limit = $4, throttle_period_ms = $5
     WHERE id = $1";
const HOLD_START: &str = "UPDATE steps SET status = 'queued' WHERE run_id = $1";
const LOCK_QUEUE: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1 || '#' || $2, 7))";
const OLDEST_QUEUED: &str = "SELECT id, gate_limit, throttle_limit, throttle_period_ms FROM runs
     WHERE workflow = $1 AND gate_key = $2 AND finished_at IS NULL AND admitted_at IS NULL
       AND status = 'queued'
     ORDER BY id LIMIT 1";
const ACTIVE: &str = "SELECT count(*) FROM runs
     WHERE workflow = $1 AND gate_key = $2 AND finished_at IS NULL AND admitted_at IS NOT NULL";
const NTH_LATEST_START: &str = "SELECT admitted_at FROM runs
     WHERE workflow = $1 AND admitted_at IS NOT NULL
     ORDER BY admitted_at DESC LIMIT 1 OFFSET $2";
const ADMIT_RUN: &str = "UPDATE runs SET admitted_at = $2 WHERE id = $1";
const RELEASE_START: &str =
    "UPDATE steps SET status = 'pending', due_at = $2 WHERE run_id = $1 AND status = 'queued'";
const RUN_GATE: &str = "SELECT workflow, gate_key FROM runs WHERE id = $1";
/// A run leaves `queued` when its `start` is first claimed.
pub const MARK_STARTED: &str =
    "UPDATE runs SET status = 'running' WHERE id = ANY($1) AND status = 'queued'";

/// Holds a new run back behind its gate, then admits what may start.
/// Returns when the run's `start` is due, if it was admitted.
pub async fn hold(
    tx: &Transaction<'_>,
    run: i64,
    workflow: &str,
    gate: &RunGate,
    now: Timestamp,
) -> Result<Option<Timestamp>> {
    let limit = gate.concurrency.map(i64::from);
    let throttle_limit = gate.throttle.map(|t| i64::from(t.limit));
    let period = gate.throttle.map(|t| t.period_ms);
    tx.execute(
        HOLD_RUN,
        &[&run, &gate.key, &limit, &throttle_limit, &period],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(HOLD_START, &[&run]).await.map_err(pg_err)?;
    let admitted = admit(tx, workflow, &gate.key, now).await?;
    Ok(admitted
        .into_iter()
        .find_map(|(id, at)| (id == run).then_some(at)))
}

/// After a run finished: lets the next queued run with its key start.
pub async fn admit_after(tx: &Transaction<'_>, run: i64, now: Timestamp) -> Result<()> {
    let row = tx.query_one(RUN_GATE, &[&run]).await.map_err(pg_err)?;
    let (workflow, key): (String, Option<String>) = (row.get(0), row.get(1));
    if let Some(key) = key {
        admit(tx, &workflow, &key, now).await?;
    }
    Ok(())
}

async fn admit(
    tx: &Transaction<'_>,
    workflow: &str,
    key: &str,
    now: Timestamp,
) -> Result<Vec<(i64, Timestamp)>> {
    tx.execute(LOCK_QUEUE, &[&workflow, &key])
        .await
        .map_err(pg_err)?;
    let mut admitted = Vec::new();
    while let Some(row) = tx
        .query_opt(OLDEST_QUEUED, &[&workflow, &key])
        .await
        .map_err(pg_err)?
    {
        let run: i64 = row.get(0);
        let limit: Option<i64> = row.get(1);
        let throttle: (Option<i64>, Option<i64>) = (row.get(2), row.get(3));
        if let Some(limit) = limit {
            let active: i64 = tx
                .query_one(ACTIVE, &[&workflow, &key])
                .await
                .map_err(pg_err)?
                .get(0);
            if active >= limit {
                break;
            }
        }
        let mut at = now.0;
        if let (Some(n), Some(period)) = throttle
            && let Some(edge) = tx
                .query_opt(NTH_LATEST_START, &[&workflow, &(n - 1)])
                .await
                .map_err(pg_err)?
        {
            at = at.max(edge.get::<_, i64>(0) + period);
        }
        tx.execute(ADMIT_RUN, &[&run, &at]).await.map_err(pg_err)?;
        tx.execute(RELEASE_START, &[&run, &at])
            .await
            .map_err(pg_err)?;
        admitted.push((run, Timestamp(at)));
    }
    Ok(admitted)
}
