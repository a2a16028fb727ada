//! Deployed workflows, run listing and cancellation on SQLite: the
//! operations behind the management API, apart from the step path.

use flowstate_core::status::RunStatus;
use flowstate_core::{RunId, Timestamp, VersionId};
use rusqlite::{OptionalExtension, Row, params};

use super::writer::{Writer, run_record};
use super::{db_err, sql};
use crate::{
    CreatedRun, DueSchedule, FinishedRun, FireSchedule, Publish, QueueStats, Result, RunFilter,
    RunRecord, WorkflowRecord,
};

fn workflow_record(r: &Row<'_>) -> rusqlite::Result<WorkflowRecord> {
    Ok(WorkflowRecord {
        name: r.get(0)?,
        version: VersionId(r.get(1)?),
        settings: r.get(2)?,
        created_at: Timestamp(r.get(3)?),
        updated_at: Timestamp(r.get(4)?),
        http_token: r.get(5)?,
    })
}

impl Writer {
    pub fn publish(&mut self, p: &Publish) -> Result<WorkflowRecord> {
        self.conn
            .prepare_cached(sql::UPSERT_WORKFLOW)
            .map_err(db_err)?
            .execute(params![
                p.name,
                p.version.0,
                p.settings,
                p.now.0,
                p.http_token
            ])
            .map_err(db_err)?;
        let current: Option<String> = self
            .conn
            .prepare_cached(sql::SELECT_SCHEDULE_SPEC)
            .map_err(db_err)?
            .query_row([&p.name], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        match &p.schedule {
            // The same schedule keeps its progress (fired count, next time).
            Some(s) if current.as_deref() == Some(s.spec.as_str()) => {}
            Some(s) => {
                self.conn
                    .prepare_cached(sql::REPLACE_SCHEDULE)
                    .map_err(db_err)?
                    .execute(params![p.name, s.spec, s.first_fire_at.map(|t| t.0)])
                    .map_err(db_err)?;
            }
            None => {
                self.conn
                    .prepare_cached(sql::DELETE_SCHEDULE)
                    .map_err(db_err)?
                    .execute([&p.name])
                    .map_err(db_err)?;
            }
        }
        for var in &p.env {
            self.set_env(&p.name, var, p.now)?;
        }
        self.workflow(&p.name)?
            .ok_or_else(|| crate::StoreError::Database("a published workflow vanished".into()))
    }

    pub fn workflow_by_token(&mut self, token: &str) -> Result<Option<WorkflowRecord>> {
        self.conn
            .prepare_cached(sql::SELECT_WORKFLOW_BY_TOKEN)
            .map_err(db_err)?
            .query_row([token], workflow_record)
            .optional()
            .map_err(db_err)
    }

    pub fn workflow(&mut self, name: &str) -> Result<Option<WorkflowRecord>> {
        self.conn
            .prepare_cached(sql::SELECT_WORKFLOW)
            .map_err(db_err)?
            .query_row([name], workflow_record)
            .optional()
            .map_err(db_err)
    }

    pub fn workflows(&mut self) -> Result<Vec<WorkflowRecord>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql::SELECT_WORKFLOWS)
            .map_err(db_err)?;
        stmt.query_map([], workflow_record)
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)
    }

    pub fn due_schedules(&mut self, now: Timestamp) -> Result<Vec<DueSchedule>> {
        let mut stmt = self
            .conn
            .prepare_cached(sql::DUE_SCHEDULES)
            .map_err(db_err)?;
        stmt.query_map([now.0], |r| {
            Ok(DueSchedule {
                workflow: r.get(0)?,
                spec: r.get(1)?,
                fire_at: Timestamp(r.get(2)?),
                fired: r.get::<_, i64>(3)? as u64,
            })
        })
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)
    }

    pub fn fire_schedule(&mut self, f: FireSchedule) -> Result<Option<CreatedRun>> {
        let moved = self
            .conn
            .prepare_cached(sql::ADVANCE_SCHEDULE)
            .map_err(db_err)?
            .execute(params![
                f.workflow,
                f.fire_at.0,
                f.next_fire_at.map(|t| t.0)
            ])
            .map_err(db_err)?;
        if moved == 0 {
            return Ok(None);
        }
        self.create_run(f.run).map(Some)
    }

    pub fn next_schedule_at(&mut self) -> Result<Option<Timestamp>> {
        self.conn
            .prepare_cached(sql::NEXT_SCHEDULE)
            .map_err(db_err)?
            .query_row([], |r| r.get::<_, Option<i64>>(0))
            .map(|t| t.map(Timestamp))
            .map_err(db_err)
    }

    pub fn remove_workflow(&mut self, name: &str) -> Result<bool> {
        self.conn
            .prepare_cached(sql::DELETE_SCHEDULE)
            .map_err(db_err)?
            .execute([name])
            .map_err(db_err)?;
        let n = self
            .conn
            .prepare_cached(sql::DELETE_WORKFLOW)
            .map_err(db_err)?
            .execute([name])
            .map_err(db_err)?;
        Ok(n > 0)
    }

    pub fn list_runs(&mut self, f: &RunFilter) -> Result<Vec<RunRecord>> {
        let mut stmt = self.conn.prepare_cached(sql::LIST_RUNS).map_err(db_err)?;
        stmt.query_map(
            params![
                f.workflow,
                f.status.map(RunStatus::as_str),
                f.before.map(|r| r.0),
                f.limit.clamp(1, 1000) as i64
            ],
            run_record,
        )
        .map_err(db_err)?
        .collect::<rusqlite::Result<_>>()
        .map_err(db_err)
    }

    pub fn cancel_run(&mut self, run: RunId, now: Timestamp) -> Result<Option<FinishedRun>> {
        let changed = self
            .conn
            .prepare_cached(sql::CANCEL_RUN)
            .map_err(db_err)?
            .execute(params![run.0, now.0])
            .map_err(db_err)?;
        if changed == 0 {
            return Ok(None);
        }
        let blobs: Vec<Option<String>> = {
            let mut stmt = self
                .conn
                .prepare_cached(sql::CANCEL_RUN_STEPS)
                .map_err(db_err)?;
            stmt.query_map(params![run.0, now.0], |r| r.get(0))
                .map_err(db_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db_err)?
        };
        // Steps of the run still executing lose their lease: their writes
        // and commits are refused from here on.
        self.leases.retain(|_, l| l.run != run.0);
        self.delete_run_state(run.0)?;
        self.admit_after(run.0, now)?;
        self.unreferenced_blobs.extend(blobs.into_iter().flatten());
        Ok(Some(FinishedRun {
            run,
            status: RunStatus::Cancelled,
            state: None,
        }))
    }

    pub fn queue_stats(&mut self, now: Timestamp) -> Result<QueueStats> {
        self.conn
            .prepare_cached(sql::QUEUE_STATS)
            .map_err(db_err)?
            .query_row([now.0], |r| {
                Ok(QueueStats {
                    due: r.get::<_, i64>(0)? as u64,
                    oldest_due: r.get::<_, Option<i64>>(1)?.map(Timestamp),
                })
            })
            .map_err(db_err)
    }

    pub fn prune_history(&mut self, before: Timestamp) -> Result<u64> {
        for q in [sql::PRUNE_ATTEMPTS, sql::PRUNE_STEPS] {
            self.conn
                .prepare_cached(q)
                .map_err(db_err)?
                .execute([before.0])
                .map_err(db_err)?;
        }
        let runs = self
            .conn
            .prepare_cached(sql::PRUNE_RUNS)
            .map_err(db_err)?
            .execute([before.0])
            .map_err(db_err)?;
        // Expired CSV imports are unreadable at once; their rows go here.
        for q in [
            sql::PRUNE_DEDUPE,
            super::csv::PRUNE_CHUNKS,
            super::csv::PRUNE_IMPORTS,
        ] {
            self.conn
                .prepare_cached(q)
                .map_err(db_err)?
                .execute([before.0])
                .map_err(db_err)?;
        }
        Ok(runs as u64)
    }

    pub fn release_leases(&mut self, leases: &[(flowstate_core::StepId, u32)]) -> Result<u64> {
        let mut released = 0;
        for (step, attempt) in leases {
            released += self
                .conn
                .prepare_cached(sql::RELEASE_LEASE)
                .map_err(db_err)?
                .execute(params![step.0, attempt])
                .map_err(db_err)? as u64;
            self.leases.remove(&step.0);
        }
        Ok(released)
    }
}
