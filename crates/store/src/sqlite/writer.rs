//! The writer thread's side of the SQLite store: runs, versions and steps.
//! Every method runs inside the savepoint of one job (see `mod.rs`), so it
//! either applies whole or not at all.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use flowstate_core::executor::{StepError, WorkflowInfo};
use flowstate_core::lifecycle::{self, RunView};
use flowstate_core::status::{RunStatus, StepKind, StepStatus};
use flowstate_core::{RunId, StepId, Timestamp, VersionId};
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{db_err, sql};
use crate::blob::BlobStore;
use crate::{
    AttemptRecord, ClaimRequest, ClaimedStep, CommitKind, CommitOutcome, CommitPlan, CreatedRun,
    FinishedRun, NewRun, NewVersion, Result, RunContext, RunRecord, StepCommit, StepRecord,
    StepRetry, StoreError, VersionRecord,
};

pub struct Writer {
    pub(super) conn: Connection,
    pub(super) blobs: BlobStore,
    /// Bytes of run state per run, loaded on first use. Only this thread
    /// writes run state, so the cache stays exact.
    pub(super) state_bytes: HashMap<i64, i64>,
    /// Steps with journal entries written by this process.
    pub(super) journaled: HashSet<i64>,
    /// Steps this process holds a lease on, by id. Every claim, commit,
    /// retry and cancellation passes through this thread, and opening the
    /// store releases leases of a previous process, so the map is exact;
    /// it spares a lookup per state op.
    pub(super) leases: HashMap<i64, LeasedStep>,
    /// Workflow-scope owner ids (negative) by workflow name.
    pub(super) scopes: HashMap<String, i64>,
    /// Blobs no longer referenced once the open transaction commits.
    pub(super) unreferenced_blobs: Vec<String>,
}

impl Writer {
    pub fn new(conn: Connection, blobs: BlobStore) -> Self {
        Writer {
            conn,
            blobs,
            state_bytes: HashMap::new(),
            journaled: HashSet::new(),
            leases: HashMap::new(),
            scopes: HashMap::new(),
            unreferenced_blobs: Vec::new(),
        }
    }

    pub fn after_commit(&mut self) {
        for name in self.unreferenced_blobs.drain(..) {
            self.blobs.delete(&name);
        }
    }

    /// A job was rolled back: drop caches it may have touched. Leases fall
    /// back to the database until claimed again.
    pub fn forget_caches(&mut self) {
        self.state_bytes.clear();
        self.leases.clear();
        self.scopes.clear();
    }

    pub fn deploy(&mut self, v: NewVersion) -> Result<VersionRecord> {
        let hash = source_hash(&v.source);
        let found: Option<(i64, i64)> = self
            .conn
            .prepare_cached(sql::FIND_VERSION_BY_SOURCE)
            .map_err(db_err)?
            .query_row(params![v.name, hash], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(db_err)?;
        let (id, created_at) = match found {
            Some(found) => found,
            None => {
                let info = serde_json::to_string(&v.info).expect("WorkflowInfo serialises");
                self.conn
                    .prepare_cached(sql::INSERT_VERSION)
                    .map_err(db_err)?
                    .execute(params![v.name, v.source, hash, info, v.now.0])
                    .map_err(db_err)?;
                (self.conn.last_insert_rowid(), v.now.0)
            }
        };
        Ok(VersionRecord {
            id: VersionId(id),
            name: v.name,
            source: v.source,
            info: v.info,
            created_at: Timestamp(created_at),
        })
    }

    pub fn version(&mut self, id: VersionId) -> Result<VersionRecord> {
        self.conn
            .prepare_cached(sql::SELECT_VERSION)
            .map_err(db_err)?
            .query_row([id.0], |r| {
                let info: String = r.get(3)?;
                Ok(VersionRecord {
                    id: VersionId(r.get(0)?),
                    name: r.get(1)?,
                    source: r.get(2)?,
                    info: serde_json::from_str::<WorkflowInfo>(&info).unwrap_or(WorkflowInfo {
                        actions: vec![],
                        has_complete_hook: false,
                        has_error_hook: false,
                    }),
                    created_at: Timestamp(r.get(4)?),
                })
            })
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("workflow version {id} does not exist")))
    }

    pub fn create_run(&mut self, r: NewRun) -> Result<CreatedRun> {
        let trigger_scope = format!("{}#trigger", r.workflow);
        if let Some(d) = &r.delivery {
            let seen: Option<(Option<i64>, i64)> = self
                .conn
                .prepare_cached(sql::SELECT_DELIVERY)
                .map_err(db_err)?
                .query_row(params![trigger_scope, d.key], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()
                .map_err(db_err)?;
            if let Some((Some(run), expires_at)) = seen
                && expires_at > r.now.0
            {
                return Ok(CreatedRun {
                    run: RunId(run),
                    duplicate: true,
                    start: None,
                });
            }
        }
        self.conn
            .prepare_cached(sql::INSERT_RUN)
            .map_err(db_err)?
            .execute(params![
                r.workflow,
                r.version.0,
                r.headers,
                r.has_complete_hook,
                r.has_error_hook,
                r.now.0
            ])
            .map_err(db_err)?;
        let run = self.conn.last_insert_rowid();
        // The trigger's data is not capped by the blob threshold's caller;
        // large bodies still go to the blob store.
        self.insert_step(
            run,
            None,
            StepKind::Action,
            "start",
            0,
            &r.data,
            r.now,
            r.now,
            1_500_000,
        )?;
        if let Some(d) = &r.delivery {
            self.conn
                .prepare_cached(sql::UPSERT_DELIVERY)
                .map_err(db_err)?
                .execute(params![
                    trigger_scope,
                    d.key,
                    r.now.0.saturating_add(d.ttl_ms),
                    run
                ])
                .map_err(db_err)?;
        }
        let due = match &r.gate {
            Some(gate) => self.hold(run, &r.workflow, gate, r.now)?,
            None => Some(r.now),
        };
        let start = match r.claim_start {
            Some(lease_until) if due.is_some_and(|d| d <= r.now) => {
                let row = self
                    .conn
                    .prepare_cached(sql::CLAIM_START)
                    .map_err(db_err)?
                    .query_row(params![run, lease_until.0, r.now.0], claim_row)
                    .map_err(db_err)?;
                Some(self.lease(row, r.now)?)
            }
            _ => None,
        };
        Ok(CreatedRun {
            run: RunId(run),
            duplicate: false,
            start,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn insert_step(
        &mut self,
        run: i64,
        parent: Option<i64>,
        kind: StepKind,
        action: &str,
        depth: u32,
        payload: &str,
        due_at: Timestamp,
        now: Timestamp,
        blob_threshold: usize,
    ) -> Result<()> {
        let (inline, blob) = if payload.len() > blob_threshold {
            (None, Some(self.blobs.put(payload.as_bytes())?))
        } else {
            (Some(payload), None)
        };
        self.conn
            .prepare_cached(sql::INSERT_STEP)
            .map_err(db_err)?
            .execute(params![
                run,
                parent,
                kind.as_str(),
                action,
                depth,
                inline,
                blob,
                payload.len() as i64,
                due_at.0,
                now.0
            ])
            .map_err(db_err)?;
        Ok(())
    }

    /// Leases due steps, then steps whose lease ran out.
    pub fn claim(&mut self, c: ClaimRequest) -> Result<Vec<ClaimedStep>> {
        self.expire_waits(c.now)?;
        self.claim_with(c, &[sql::CLAIM_DUE, sql::CLAIM_EXPIRED])
    }

    fn claim_with(&mut self, c: ClaimRequest, queries: &[&str]) -> Result<Vec<ClaimedStep>> {
        let mut rows = Vec::new();
        for &query in queries {
            let left = c.limit.saturating_sub(rows.len());
            if left == 0 {
                break;
            }
            let mut stmt = self.conn.prepare_cached(query).map_err(db_err)?;
            let claimed = stmt
                .query_map(params![c.lease_until.0, c.now.0, left as i64], claim_row)
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            rows.extend(claimed);
        }
        rows.sort_by_key(|r| r.id);
        rows.into_iter().map(|row| self.lease(row, c.now)).collect()
    }

    /// Records this process's lease on a claimed row and loads its payload.
    fn lease(&mut self, row: ClaimRow, now: Timestamp) -> Result<ClaimedStep> {
        let kind: StepKind = row.kind.parse().map_err(StoreError::Database)?;
        if row.depth == 0 && kind == StepKind::Action {
            self.conn
                .prepare_cached(super::gate::MARK_STARTED)
                .map_err(db_err)?
                .execute([row.run])
                .map_err(db_err)?;
        }
        self.leases.insert(
            row.id,
            LeasedStep {
                run: row.run,
                kind,
                depth: row.depth,
                blob: row.blob.clone(),
                started_at: Some(now.0),
                attempt: row.attempt,
            },
        );
        let payload = match (row.payload, row.blob) {
            (_, Some(name)) => self.blobs.get(&name)?,
            (Some(p), None) => p,
            (None, None) => "null".into(),
        };
        Ok(ClaimedStep {
            id: StepId(row.id),
            run: RunId(row.run),
            kind,
            action: row.action,
            depth: row.depth,
            attempt: row.attempt,
            payload,
        })
    }

    pub fn next_due_at(&mut self) -> Result<Option<Timestamp>> {
        self.conn
            .prepare_cached(sql::NEXT_DUE)
            .map_err(db_err)?
            .query_row([], |r| r.get::<_, Option<i64>>(0))
            .map(|t| t.map(Timestamp))
            .map_err(db_err)
    }

    pub fn run_context(&mut self, run: RunId) -> Result<RunContext> {
        self.conn
            .prepare_cached(sql::SELECT_RUN_CONTEXT)
            .map_err(db_err)?
            .query_row([run.0], |r| {
                Ok(RunContext {
                    id: run,
                    workflow: r.get(0)?,
                    version: VersionId(r.get(1)?),
                    headers: r.get(2)?,
                    steps_total: r.get::<_, i64>(3)? as u64,
                    error: parse_error(r.get(4)?),
                })
            })
            .optional()
            .map_err(db_err)?
            .ok_or_else(|| StoreError::NotFound(format!("run {run} does not exist")))
    }

    /// The step's row if `attempt` still holds its lease.
    pub(super) fn leased_step(&mut self, step: StepId, attempt: u32) -> Result<Option<LeasedStep>> {
        if let Some(lease) = self.leases.get(&step.0) {
            return Ok((lease.attempt == attempt).then(|| lease.clone()));
        }
        self.conn
            .prepare_cached(sql::SELECT_LEASED_STEP)
            .map_err(db_err)?
            .query_row(params![step.0, attempt], |r| {
                Ok(LeasedStep {
                    run: r.get(0)?,
                    kind: r.get::<_, String>(1)?.parse().unwrap_or(StepKind::Action),
                    depth: r.get(2)?,
                    blob: r.get(3)?,
                    started_at: r.get(4)?,
                    attempt,
                })
            })
            .optional()
            .map_err(db_err)
    }

    pub fn commit_step(&mut self, c: StepCommit) -> Result<CommitOutcome> {
        let Some(step) = self.leased_step(c.step, c.attempt)? else {
            return Ok(CommitOutcome::Superseded);
        };
        let (status, pending, steps_total, has_complete_hook, has_error_hook): (
            String,
            i64,
            i64,
            bool,
            bool,
        ) = self
            .conn
            .prepare_cached(sql::SELECT_RUN_FOR_COMMIT)
            .map_err(db_err)?
            .query_row([step.run], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(db_err)?;
        let view = RunView {
            status: status.parse().map_err(StoreError::Database)?,
            pending,
            has_complete_hook,
            has_error_hook,
        };
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
        if !matches!(c.kind, CommitKind::FailedForGood { .. })
            && let Some(scope) = self.write_checkpoints(step.run, &c.checkpoints, c.now)?
        {
            return Ok(CommitOutcome::CheckpointConflict { scope });
        }
        let t = lifecycle::decide(view, step.kind, outcome);
        let error_json = error.map(|e| serde_json::to_string(e).expect("StepError serialises"));
        self.conn
            .prepare_cached(sql::FINISH_STEP)
            .map_err(db_err)?
            .execute(params![
                c.step.0,
                step_status.as_str(),
                c.now.0,
                c.duration_ms as i64,
                c.logs,
                error_json
            ])
            .map_err(db_err)?;
        for child in children {
            self.insert_step(
                step.run,
                Some(c.step.0),
                StepKind::Action,
                &child.action,
                step.depth + 1,
                &child.payload,
                child.due_at,
                c.now,
                c.blob_threshold,
            )?;
            if let Some(wait) = &child.wait {
                self.make_waiting(wait)?;
            }
        }
        let mut added = children.len() as i64;
        if let Some(hook) = t.schedule_hook {
            let method = hook.hook_method().expect("a hook kind names its method");
            self.insert_step(
                step.run,
                Some(c.step.0),
                hook,
                method,
                step.depth + 1,
                "null",
                c.now,
                c.now,
                usize::MAX,
            )?;
            added += 1;
        }
        self.leases.remove(&c.step.0);
        let mut unreferenced: Vec<String> = step.blob.into_iter().collect();
        if t.cancel_others {
            self.leases.retain(|_, l| l.run != step.run);
            let mut stmt = self
                .conn
                .prepare_cached(sql::CANCEL_OTHER_STEPS)
                .map_err(db_err)?;
            let blobs = stmt
                .query_map(params![step.run, c.step.0, c.now.0], |r| {
                    r.get::<_, Option<String>>(0)
                })
                .map_err(db_err)?
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(db_err)?;
            unreferenced.extend(blobs.into_iter().flatten());
        }
        let failed_now = t.status == Some(RunStatus::Failed);
        self.conn
            .prepare_cached(sql::UPDATE_RUN_AFTER_STEP)
            .map_err(db_err)?
            .execute(params![
                step.run,
                t.pending,
                added,
                t.status.map(|s| s.as_str()),
                if failed_now {
                    error_json.as_deref()
                } else {
                    None
                },
                end_reason,
                t.finalize.then_some(c.now.0),
                c.kind.waiting_delta()
            ])
            .map_err(db_err)?;
        if self.journaled.remove(&c.step.0) || c.attempt > 1 {
            self.conn
                .prepare_cached(sql::DELETE_STEP_JOURNAL)
                .map_err(db_err)?
                .execute([c.step.0])
                .map_err(db_err)?;
        }
        let finished = if t.finalize {
            let state = if c.capture_state {
                Some(self.run_state(RunId(step.run))?)
            } else {
                None
            };
            self.delete_run_state(step.run)?;
            self.admit_after(step.run, c.now)?;
            let final_status = t.status.unwrap_or(view.status);
            Some(FinishedRun {
                run: RunId(step.run),
                status: final_status,
                state,
            })
        } else {
            None
        };
        self.unreferenced_blobs.extend(unreferenced);
        // Steps whose lease ran out are left to the scheduler's claims.
        let claimed = if c.claim > 0 {
            self.claim_with(
                ClaimRequest {
                    now: c.now,
                    limit: c.claim,
                    lease_until: c.lease_until,
                },
                &[sql::CLAIM_DUE],
            )?
        } else {
            Vec::new()
        };
        Ok(CommitOutcome::Committed { finished, claimed })
    }

    pub(super) fn delete_run_state(&mut self, run: i64) -> Result<()> {
        for q in [
            sql::DELETE_RUN_STATE,
            sql::DELETE_RUN_LIST_ITEMS,
            sql::DELETE_RUN_JOURNAL,
        ] {
            self.conn
                .prepare_cached(q)
                .map_err(db_err)?
                .execute([run])
                .map_err(db_err)?;
        }
        self.state_bytes.remove(&run);
        Ok(())
    }

    pub fn retry_step(&mut self, r: StepRetry) -> Result<bool> {
        let Some(step) = self.leased_step(r.step, r.attempt)? else {
            return Ok(false);
        };
        let error = serde_json::to_string(&r.error).expect("StepError serialises");
        self.conn
            .prepare_cached(sql::INSERT_ATTEMPT)
            .map_err(db_err)?
            .execute(params![
                r.step.0,
                r.attempt,
                step.started_at,
                r.now.0,
                error,
                r.logs
            ])
            .map_err(db_err)?;
        self.leases.remove(&r.step.0);
        self.conn
            .prepare_cached(sql::RESCHEDULE_STEP)
            .map_err(db_err)?
            .execute(params![r.step.0, r.due_at.0, error])
            .map_err(db_err)?;
        Ok(true)
    }

    pub fn run(&mut self, id: RunId) -> Result<Option<RunRecord>> {
        self.conn
            .prepare_cached(sql::SELECT_RUN)
            .map_err(db_err)?
            .query_row([id.0], run_record)
            .optional()
            .map_err(db_err)
    }

    pub fn steps(&mut self, run: RunId) -> Result<Vec<StepRecord>> {
        let mut attempts: HashMap<i64, Vec<AttemptRecord>> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare_cached(sql::SELECT_ATTEMPTS)
                .map_err(db_err)?;
            let rows = stmt
                .query_map([run.0], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        AttemptRecord {
                            attempt: r.get(1)?,
                            started_at: r.get::<_, Option<i64>>(2)?.map(Timestamp),
                            finished_at: Timestamp(r.get(3)?),
                            error: parse_error(r.get(4)?),
                            logs: r.get(5)?,
                        },
                    ))
                })
                .map_err(db_err)?;
            for row in rows {
                let (step, a) = row.map_err(db_err)?;
                attempts.entry(step).or_default().push(a);
            }
        }
        let mut stmt = self
            .conn
            .prepare_cached(sql::SELECT_STEPS)
            .map_err(db_err)?;
        let rows = stmt.query_map([run.0], step_record).map_err(db_err)?;
        rows.map(|r| {
            let mut s = r.map_err(db_err)?;
            s.failed_attempts = attempts.remove(&s.id.0).unwrap_or_default();
            Ok(s)
        })
        .collect()
    }

    pub fn unfinished_runs(&mut self, workflow: Option<&str>) -> Result<Vec<RunId>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql::SELECT_UNFINISHED_RUNS)
            .map_err(db_err)?;
        stmt.query_map([workflow], |r| r.get::<_, i64>(0))
            .map_err(db_err)?
            .map(|r| r.map(RunId).map_err(db_err))
            .collect()
    }
}

#[derive(Clone, Debug)]
/// The columns every claim query returns.
struct ClaimRow {
    id: i64,
    run: i64,
    kind: String,
    action: String,
    depth: u32,
    attempt: u32,
    payload: Option<String>,
    blob: Option<String>,
}

fn claim_row(r: &Row<'_>) -> rusqlite::Result<ClaimRow> {
    Ok(ClaimRow {
        id: r.get(0)?,
        run: r.get(1)?,
        kind: r.get(2)?,
        action: r.get(3)?,
        depth: r.get(4)?,
        attempt: r.get(5)?,
        payload: r.get(6)?,
        blob: r.get(7)?,
    })
}

#[derive(Clone, Debug)]
pub(super) struct LeasedStep {
    pub attempt: u32,
    pub run: i64,
    pub kind: StepKind,
    pub depth: u32,
    pub blob: Option<String>,
    pub started_at: Option<i64>,
}

pub(super) fn run_record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    Ok(RunRecord {
        id: RunId(r.get(0)?),
        workflow: r.get(1)?,
        version: VersionId(r.get(2)?),
        status: r.get::<_, String>(3)?.parse().unwrap_or(RunStatus::Failed),
        pending: r.get(4)?,
        steps_total: r.get::<_, i64>(5)? as u64,
        error: parse_error(r.get(6)?),
        end_reason: r.get(7)?,
        created_at: Timestamp(r.get(8)?),
        finished_at: r.get::<_, Option<i64>>(9)?.map(Timestamp),
    })
}

fn step_record(r: &Row<'_>) -> rusqlite::Result<StepRecord> {
    Ok(StepRecord {
        id: StepId(r.get(0)?),
        run: RunId(r.get(1)?),
        parent: r.get::<_, Option<i64>>(2)?.map(StepId),
        kind: r.get::<_, String>(3)?.parse().unwrap_or(StepKind::Action),
        action: r.get(4)?,
        depth: r.get(5)?,
        status: r.get::<_, String>(6)?.parse().unwrap_or(StepStatus::Failed),
        attempt: r.get(7)?,
        payload_bytes: r.get::<_, i64>(8)? as u64,
        due_at: Timestamp(r.get(9)?),
        started_at: r.get::<_, Option<i64>>(10)?.map(Timestamp),
        finished_at: r.get::<_, Option<i64>>(11)?.map(Timestamp),
        duration_ms: r.get::<_, Option<i64>>(12)?.map(|d| d as u64),
        error: parse_error(r.get(13)?),
        logs: r
            .get::<_, Option<String>>(14)?
            .unwrap_or_else(|| "[]".into()),
        failed_attempts: Vec::new(),
    })
}

fn parse_error(text: Option<String>) -> Option<StepError> {
    text.and_then(|t| serde_json::from_str(&t).ok())
}

/// A stable hash of a workflow's source, to recognise a redeploy of the
/// same code. Not a security boundary.
fn source_hash(source: &str) -> String {
    let mut h = DefaultHasher::new();
    source.hash(&mut h);
    source.len().hash(&mut h);
    format!("{:016x}", h.finish())
}
