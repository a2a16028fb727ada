//! Concurrency and throttle on SQLite (DESIGN.md 1.7): a gated run waits
//! `queued` with its `start` step held until it is admitted. Admission runs
//! in the transaction that creates a gated run or finishes one, so the
//! count of active runs is never stale.

use flowstate_core::Timestamp;
use rusqlite::{OptionalExtension, params};

use super::db_err;
use super::writer::Writer;
use crate::{Result, RunGate};

const HOLD_RUN: &str = "UPDATE runs SET status = 'queued', gate_key = ?2, gate_limit = ?3,
        throttle_limit = ?4, throttle_period_ms = ?5
     WHERE id = ?1";
const HOLD_START: &str = "UPDATE steps SET status = 'queued' WHERE run_id = ?1";
const OLDEST_QUEUED: &str = "SELECT id, gate_limit, throttle_limit, throttle_period_ms FROM runs
     WHERE workflow = ?1 AND gate_key = ?2 AND finished_at IS NULL AND admitted_at IS NULL
       AND status = 'queued'
     ORDER BY id LIMIT 1";
const ACTIVE: &str = "SELECT count(*) FROM runs
     WHERE workflow = ?1 AND gate_key = ?2 AND finished_at IS NULL AND admitted_at IS NOT NULL";
/// The start time `limit` admissions back: the throttle's window edge.
const NTH_LATEST_START: &str = "SELECT admitted_at FROM runs
     WHERE workflow = ?1 AND admitted_at IS NOT NULL
     ORDER BY admitted_at DESC LIMIT 1 OFFSET ?2";
const ADMIT_RUN: &str = "UPDATE runs SET admitted_at = ?2 WHERE id = ?1";
const RELEASE_START: &str =
    "UPDATE steps SET status = 'pending', due_at = ?2 WHERE run_id = ?1 AND status = 'queued'";
const RUN_GATE: &str = "SELECT workflow, gate_key FROM runs WHERE id = ?1";
/// A run leaves `queued` when its `start` is first claimed.
pub(super) const MARK_STARTED: &str =
    "UPDATE runs SET status = 'running' WHERE id = ?1 AND status = 'queued'";

/// (run, concurrency limit, throttle limit, throttle period).
type QueuedRun = (i64, Option<i64>, Option<i64>, Option<i64>);

impl Writer {
    /// Holds a new run back behind its gate, then admits what may start.
    /// Returns when the run's `start` is due, if it was admitted.
    pub(super) fn hold(
        &mut self,
        run: i64,
        workflow: &str,
        gate: &RunGate,
        now: Timestamp,
    ) -> Result<Option<Timestamp>> {
        let throttle = gate.throttle.map(|t| (t.limit, t.period_ms));
        self.conn
            .prepare_cached(HOLD_RUN)
            .map_err(db_err)?
            .execute(params![
                run,
                gate.key,
                gate.concurrency,
                throttle.map(|t| t.0),
                throttle.map(|t| t.1)
            ])
            .map_err(db_err)?;
        self.conn
            .prepare_cached(HOLD_START)
            .map_err(db_err)?
            .execute([run])
            .map_err(db_err)?;
        let admitted = self.admit(workflow, &gate.key, now)?;
        Ok(admitted
            .into_iter()
            .find_map(|(id, at)| (id == run).then_some(at)))
    }

    /// After a run finished: lets the next queued run with its key start.
    pub(super) fn admit_after(&mut self, run: i64, now: Timestamp) -> Result<()> {
        let (workflow, key): (String, Option<String>) = self
            .conn
            .prepare_cached(RUN_GATE)
            .map_err(db_err)?
            .query_row([run], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(db_err)?;
        if let Some(key) = key {
            self.admit(&workflow, &key, now)?;
        }
        Ok(())
    }

    /// Admits queued runs with this key, oldest first, while the
    /// concurrency limit allows; each start is due when the throttle allows.
    fn admit(
        &mut self,
        workflow: &str,
        key: &str,
        now: Timestamp,
    ) -> Result<Vec<(i64, Timestamp)>> {
        let mut admitted = Vec::new();
        loop {
            let next: Option<QueuedRun> = self
                .conn
                .prepare_cached(OLDEST_QUEUED)
                .map_err(db_err)?
                .query_row(params![workflow, key], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()
                .map_err(db_err)?;
            let Some((run, limit, throttle_limit, period)) = next else {
                break;
            };
            if let Some(limit) = limit {
                let active: i64 = self
                    .conn
                    .prepare_cached(ACTIVE)
                    .map_err(db_err)?
                    .query_row(params![workflow, key], |r| r.get(0))
                    .map_err(db_err)?;
                if active >= limit {
                    break;
                }
            }
            let mut at = now;
            if let (Some(n), Some(period)) = (throttle_limit, period) {
                let edge: Option<i64> = self
                    .conn
                    .prepare_cached(NTH_LATEST_START)
                    .map_err(db_err)?
                    .query_row(params![workflow, n - 1], |r| r.get(0))
                    .optional()
                    .map_err(db_err)?;
                if let Some(edge) = edge {
                    at = Timestamp(at.0.max(edge + period));
                }
            }
            self.conn
                .prepare_cached(ADMIT_RUN)
                .map_err(db_err)?
                .execute(params![run, at.0])
                .map_err(db_err)?;
            self.conn
                .prepare_cached(RELEASE_START)
                .map_err(db_err)?
                .execute(params![run, at.0])
                .map_err(db_err)?;
            admitted.push((run, at));
        }
        Ok(admitted)
    }
}
