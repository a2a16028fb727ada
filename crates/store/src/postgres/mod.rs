//! The PostgreSQL store, for running many `serve` nodes on one database.
//! Every operation is one transaction. Claims take rows with
//! `FOR UPDATE SKIP LOCKED`, so any node takes any due step and no step is
//! taken twice; a dead node's steps are taken over when their lease runs
//! out. Leases are checked in the database (no node keeps a private view),
//! and the run row is locked while a step's outcome is committed, so the
//! lifecycle decisions (`flowstate_core::lifecycle`) see one run at a time.
//! Large payloads stay in their rows (TOAST compresses them); the blob
//! directory is for the single-node SQLite store.

mod checkpoints;
mod csv;
mod env;
mod gate;
mod ops;
mod schema;
mod sql;
mod state_ops;
mod waits;

use std::future::Future;

use deadpool_postgres::{Pool, Runtime};
use flowstate_core::executor::WorkflowInfo;
use flowstate_core::state::StateOp;
use flowstate_core::status::RunStatus;
use flowstate_core::{RunId, Timestamp, VersionId};
use tokio_postgres::NoTls;

use crate::{
    ClaimRequest, ClaimedStep, CommitOutcome, CreatedRun, DueSchedule, FinishedRun, FireSchedule,
    NewRun, NewVersion, OpContext, OpError, Publish, QueueStats, Result, RunContext, RunFilter,
    RunRecord, StepCommit, StepRecord, StepRetry, Store, StoreError, VersionRecord, WorkflowRecord,
};
use ops::{
    claim, commit_step, create_run, delete_run_state, lock_leased, parse_error, publish,
    run_record, source_hash, steps, ts, workflow_record,
};

pub(crate) fn pg_err(e: tokio_postgres::Error) -> StoreError {
    StoreError::Database(match e.as_db_error() {
        Some(db) => format!("{}: {}", db.code().code(), db.message()),
        None => e.to_string(),
    })
}

fn pool_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("no PostgreSQL connection: {e}"))
}

/// Runs `$body` in a transaction of a pooled connection; `?` inside rolls back.
macro_rules! in_tx {
    ($pool:expr, |$tx:ident| $body:expr) => {{
        let mut client = $pool.get().await.map_err(pool_err)?;
        let $tx = client.transaction().await.map_err(pg_err)?;
        let out = $body;
        $tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }};
}

/// Connections per node: enough for the engine's steps in flight and the
/// JS workers' state ops at once.
const POOL_SIZE: usize = 32;

#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl PostgresStore {
    /// Connects (`postgres://user:pass@host:port/db`) and migrates.
    pub async fn connect(url: &str) -> Result<Self> {
        let mut config = deadpool_postgres::Config::new();
        config.url = Some(url.to_string());
        config.pool = Some(deadpool_postgres::PoolConfig::new(POOL_SIZE));
        let pool = config
            .create_pool(Some(Runtime::Tokio1), NoTls)
            .map_err(|e| StoreError::Database(format!("bad --database-url: {e}")))?;
        let mut client = pool.get().await.map_err(|e| {
            StoreError::Database(format!(
                "cannot connect to PostgreSQL: {e}; check --database-url and that the server accepts connections"
            ))
        })?;
        schema::migrate(&mut client).await?;
        Ok(PostgresStore { pool })
    }
}

impl Store for PostgresStore {
    fn deploy(&self, v: NewVersion) -> impl Future<Output = Result<VersionRecord>> + Send {
        let pool = self.pool.clone();
        async move {
            let info = serde_json::to_string(&v.info).expect("WorkflowInfo serialises");
            let (id, created_at): (i64, i64) = in_tx!(pool, |tx| {
                let r = tx
                    .query_one(
                        sql::INSERT_VERSION,
                        &[&v.name, &v.source, &source_hash(&v.source), &info, &v.now.0],
                    )
                    .await
                    .map_err(pg_err)?;
                (r.get(0), r.get(1))
            })?;
            Ok(VersionRecord {
                id: VersionId(id),
                name: v.name,
                source: v.source,
                info: v.info,
                created_at: Timestamp(created_at),
            })
        }
    }

    fn version(&self, id: VersionId) -> impl Future<Output = Result<VersionRecord>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let row = client
                .query_opt(sql::SELECT_VERSION, &[&id.0])
                .await
                .map_err(pg_err)?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("workflow version {id} does not exist"))
                })?;
            let info: String = row.get(3);
            Ok(VersionRecord {
                id: VersionId(row.get(0)),
                name: row.get(1),
                source: row.get(2),
                info: serde_json::from_str::<WorkflowInfo>(&info)
                    .map_err(|e| StoreError::Database(e.to_string()))?,
                created_at: Timestamp(row.get(4)),
            })
        }
    }

    fn create_run(&self, r: NewRun) -> impl Future<Output = Result<CreatedRun>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| create_run(&tx, r).await?) }
    }

    fn publish(&self, p: Publish) -> impl Future<Output = Result<WorkflowRecord>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| publish(&tx, &p).await?) }
    }

    fn workflow(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(client
                .query_opt(sql::SELECT_WORKFLOW, &[&name])
                .await
                .map_err(pg_err)?
                .as_ref()
                .map(workflow_record))
        }
    }

    fn workflow_by_token(
        &self,
        token: String,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(client
                .query_opt(sql::SELECT_WORKFLOW_BY_TOKEN, &[&token])
                .await
                .map_err(pg_err)?
                .as_ref()
                .map(workflow_record))
        }
    }

    fn workflows(&self) -> impl Future<Output = Result<Vec<WorkflowRecord>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(client
                .query(sql::SELECT_WORKFLOWS, &[])
                .await
                .map_err(pg_err)?
                .iter()
                .map(workflow_record)
                .collect())
        }
    }

    fn remove_workflow(&self, name: String) -> impl Future<Output = Result<bool>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                tx.execute(sql::DELETE_SCHEDULE, &[&name])
                    .await
                    .map_err(pg_err)?;
                tx.execute(sql::DELETE_WORKFLOW, &[&name])
                    .await
                    .map_err(pg_err)?
                    > 0
            })
        }
    }

    fn list_runs(&self, f: RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(
                    sql::LIST_RUNS,
                    &[
                        &f.workflow,
                        &f.status.map(RunStatus::as_str),
                        &f.before.map(|r| r.0),
                        &(f.limit.clamp(1, 1000) as i64),
                    ],
                )
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(run_record).collect())
        }
    }

    fn cancel_run(
        &self,
        run: RunId,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<FinishedRun>>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                if tx
                    .execute(sql::CANCEL_RUN, &[&run.0, &now.0])
                    .await
                    .map_err(pg_err)?
                    == 0
                {
                    None
                } else {
                    tx.execute(sql::CANCEL_RUN_STEPS, &[&run.0, &now.0])
                        .await
                        .map_err(pg_err)?;
                    delete_run_state(&tx, run.0).await?;
                    gate::admit_after(&tx, run.0, now).await?;
                    Some(FinishedRun {
                        run,
                        status: RunStatus::Cancelled,
                        state: None,
                    })
                }
            })
        }
    }

    fn claim_due_steps(
        &self,
        c: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<ClaimedStep>>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                tx.execute(waits::EXPIRE, &[&c.now.0])
                    .await
                    .map_err(pg_err)?;
                claim(&tx, c, &[sql::CLAIM_DUE, sql::CLAIM_EXPIRED]).await?
            })
        }
    }

    fn next_due_at(&self) -> impl Future<Output = Result<Option<Timestamp>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(ts(client
                .query_one(sql::NEXT_DUE, &[])
                .await
                .map_err(pg_err)?
                .get(0)))
        }
    }

    fn run_context(&self, run: RunId) -> impl Future<Output = Result<RunContext>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let r = client
                .query_opt(sql::SELECT_RUN_CONTEXT, &[&run.0])
                .await
                .map_err(pg_err)?
                .ok_or_else(|| StoreError::NotFound(format!("run {run} does not exist")))?;
            Ok(RunContext {
                id: run,
                workflow: r.get(0),
                version: VersionId(r.get(1)),
                headers: r.get(2),
                steps_total: r.get::<_, i64>(3) as u64,
                error: parse_error(r.get(4)),
            })
        }
    }

    fn apply_state_op(
        &self,
        ctx: OpContext,
        op: StateOp,
    ) -> impl Future<Output = Result<String, OpError>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let out = state_ops::apply(&tx, &ctx, &op).await?;
            tx.commit().await.map_err(pg_err)?;
            Ok(out)
        }
    }

    fn commit_step(&self, c: StepCommit) -> impl Future<Output = Result<CommitOutcome>> + Send {
        let pool = self.pool.clone();
        async move {
            let mut client = pool.get().await.map_err(pool_err)?;
            let tx = client.transaction().await.map_err(pg_err)?;
            let out = commit_step(&tx, c).await?;
            // A refused commit changes nothing: roll it back.
            if matches!(out, CommitOutcome::Committed { .. }) {
                tx.commit().await.map_err(pg_err)?;
            }
            Ok(out)
        }
    }

    fn retry_step(&self, r: StepRetry) -> impl Future<Output = Result<bool>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                match lock_leased(&tx, r.step, r.attempt).await? {
                    None => false,
                    Some((_, _, _, started_at)) => {
                        let error = serde_json::to_string(&r.error).expect("StepError serialises");
                        tx.execute(
                            sql::INSERT_ATTEMPT,
                            &[
                                &r.step.0,
                                &(r.attempt as i32),
                                &started_at,
                                &r.now.0,
                                &error,
                                &r.logs,
                            ],
                        )
                        .await
                        .map_err(pg_err)?;
                        tx.execute(sql::RESCHEDULE_STEP, &[&r.step.0, &r.due_at.0, &error])
                            .await
                            .map_err(pg_err)?;
                        true
                    }
                }
            })
        }
    }

    fn run(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(client
                .query_opt(sql::SELECT_RUN, &[&id.0])
                .await
                .map_err(pg_err)?
                .as_ref()
                .map(run_record))
        }
    }

    fn steps(&self, run: RunId) -> impl Future<Output = Result<Vec<StepRecord>>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| steps(&tx, run).await?) }
    }

    fn run_state(&self, run: RunId) -> impl Future<Output = Result<Vec<(String, String)>>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| state_ops::run_state(&tx, run.0).await?) }
    }

    fn unfinished_runs(
        &self,
        workflow: Option<String>,
    ) -> impl Future<Output = Result<Vec<RunId>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(sql::SELECT_UNFINISHED_RUNS, &[&workflow])
                .await
                .map_err(pg_err)?;
            Ok(rows.iter().map(|r| RunId(r.get(0))).collect())
        }
    }

    fn queue_stats(&self, now: Timestamp) -> impl Future<Output = Result<QueueStats>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let r = client
                .query_one(sql::QUEUE_STATS, &[&now.0])
                .await
                .map_err(pg_err)?;
            Ok(QueueStats {
                due: r.get::<_, i64>(0) as u64,
                oldest_due: ts(r.get(1)),
            })
        }
    }

    fn prune_history(&self, before: Timestamp) -> impl Future<Output = Result<u64>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                tx.execute(sql::PRUNE_ATTEMPTS, &[&before.0])
                    .await
                    .map_err(pg_err)?;
                tx.execute(sql::PRUNE_STEPS, &[&before.0])
                    .await
                    .map_err(pg_err)?;
                let runs = tx
                    .execute(sql::PRUNE_RUNS, &[&before.0])
                    .await
                    .map_err(pg_err)?;
                for q in [sql::PRUNE_DEDUPE, csv::PRUNE_CHUNKS, csv::PRUNE_IMPORTS] {
                    tx.execute(q, &[&before.0]).await.map_err(pg_err)?;
                }
                runs
            })
        }
    }

    fn due_schedules(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Vec<DueSchedule>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            let rows = client
                .query(sql::DUE_SCHEDULES, &[&now.0])
                .await
                .map_err(pg_err)?;
            Ok(rows
                .iter()
                .map(|r| DueSchedule {
                    workflow: r.get(0),
                    spec: r.get(1),
                    fire_at: Timestamp(r.get(2)),
                    fired: r.get::<_, i64>(3) as u64,
                })
                .collect())
        }
    }

    fn fire_schedule(
        &self,
        f: FireSchedule,
    ) -> impl Future<Output = Result<Option<CreatedRun>>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                let moved = tx
                    .execute(
                        sql::ADVANCE_SCHEDULE,
                        &[&f.workflow, &f.fire_at.0, &f.next_fire_at.map(|t| t.0)],
                    )
                    .await
                    .map_err(pg_err)?;
                if moved == 0 {
                    None
                } else {
                    Some(create_run(&tx, f.run).await?)
                }
            })
        }
    }

    fn next_schedule_at(&self) -> impl Future<Output = Result<Option<Timestamp>>> + Send {
        let pool = self.pool.clone();
        async move {
            let client = pool.get().await.map_err(pool_err)?;
            Ok(ts(client
                .query_one(sql::NEXT_SCHEDULE, &[])
                .await
                .map_err(pg_err)?
                .get(0)))
        }
    }

    fn release_leases(
        &self,
        leases: Vec<(flowstate_core::StepId, u32)>,
    ) -> impl Future<Output = Result<u64>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                let mut released = 0;
                for (step, attempt) in &leases {
                    released += tx
                        .execute(sql::RELEASE_LEASE, &[&step.0, &(*attempt as i32)])
                        .await
                        .map_err(pg_err)?;
                }
                released
            })
        }
    }

    fn checkpoint(
        &self,
        workflow: String,
        scope: String,
    ) -> impl Future<Output = Result<flowstate_core::checkpoint::Checkpoint>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| checkpoints::read(&tx, &workflow, &scope).await?) }
    }

    fn put_checkpoint(
        &self,
        workflow: String,
        scope: String,
        value: Option<String>,
        now: Timestamp,
    ) -> impl Future<Output = Result<flowstate_core::checkpoint::Checkpoint>> + Send {
        let pool = self.pool.clone();
        async move {
            in_tx!(pool, |tx| {
                checkpoints::put(&tx, &workflow, &scope, value.as_deref(), now).await?
            })
        }
    }

    fn csv_op(
        &self,
        workflow: String,
        op: flowstate_core::executor::CsvOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<String>>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| csv::apply(&tx, &workflow, &op, now).await?) }
    }

    fn env_vars(
        &self,
        workflow: String,
    ) -> impl Future<Output = Result<Vec<crate::EnvVar>>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| env::list(&tx, &workflow).await?) }
    }

    fn set_env(
        &self,
        workflow: String,
        var: crate::EnvVar,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| env::set(&tx, &workflow, &var, now).await?) }
    }

    fn unset_env(
        &self,
        workflow: String,
        name: String,
    ) -> impl Future<Output = Result<bool>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| env::unset(&tx, &workflow, &name).await?) }
    }

    fn resume_wait(
        &self,
        r: crate::ResumeWait,
    ) -> impl Future<Output = Result<crate::Resumed>> + Send {
        let pool = self.pool.clone();
        async move { in_tx!(pool, |tx| waits::resume(&tx, &r).await?) }
    }

    /// Every operation commits before it returns: nothing is ever pending.
    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A store on a fresh database of the test cluster (scripts/test starts
    /// one). Outside CI, without a cluster, these tests say so and pass.
    async fn fresh() -> Option<PostgresStore> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let Ok(admin) = std::env::var("FLOWSTATE_TEST_DATABASE_URL") else {
            assert!(
                std::env::var_os("CI").is_none(),
                "FLOWSTATE_TEST_DATABASE_URL is not set: run the tests with scripts/test"
            );
            eprintln!("skipped: no PostgreSQL (run scripts/test to include these tests)");
            return None;
        };
        let name = format!(
            "flowstate_test_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .expect("the test cluster accepts connections");
        tokio::spawn(conn);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("a test database can be created");
        let url = match admin.rsplit_once('/') {
            Some((base, _)) => format!("{base}/{name}"),
            None => panic!("FLOWSTATE_TEST_DATABASE_URL should end with /<database>"),
        };
        Some(
            PostgresStore::connect(&url)
                .await
                .expect("the store connects and migrates"),
        )
    }

    crate::conformance_tests!(optional fresh().await);
}
