//! The embedded SQLite store. One writer thread owns the connection and
//! commits many operations per transaction (group commit): a batch holds
//! whatever arrived while the previous one was being synced, so throughput
//! is not bounded by one fsync per operation. Each operation runs inside its
//! own savepoint, so a failing one rolls back alone and the batch goes on.
//!
//! State-op results return before their batch commits: the step's own
//! commit comes later in the same log, so nothing is acknowledged early
//! (DESIGN.md part 2). Replies that leave the process (a created run) wait
//! for the commit that holds them.

mod schema;
mod sql;
mod state_ops;
mod writer;

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use flowstate_core::state::StateOp;
use flowstate_core::{RunId, VersionId};
use rusqlite::Connection;

use crate::blob::BlobStore;
use crate::{
    ClaimRequest, ClaimedStep, CommitOutcome, NewRun, NewVersion, OpContext, OpError, Result,
    RunContext, RunRecord, StepCommit, StepRecord, StepRetry, Store, StoreError, VersionRecord,
};
use writer::Writer;

/// Most operations one transaction commits; bounds the latency of the
/// replies that wait for it.
const MAX_BATCH: usize = 4_000;
/// Longest a transaction stays open. Work in it is not lost to a crash in
/// the sense that matters: no step in it was acknowledged, so its steps
/// are retried and their journaled ops replayed. This bounds how much is
/// redone, and how long an idle writer holds uncommitted work.
const MAX_BATCH_TIME: Duration = Duration::from_millis(10);

#[derive(Clone, Debug, Default)]
pub struct SqliteOptions {
    /// The database file; `None` for an in-memory database.
    pub path: Option<PathBuf>,
    /// Where large payloads go; defaults to `<db>.blobs/` beside the file.
    pub blob_dir: Option<PathBuf>,
    /// `synchronous=NORMAL` instead of `FULL`: survives a process crash but
    /// not a power loss. Off by default; acknowledged steps survive both.
    pub relaxed_durability: bool,
}

impl SqliteOptions {
    /// `:memory:` or a file path, as the CLI takes it.
    pub fn from_arg(db: &str) -> Self {
        SqliteOptions {
            path: (db != ":memory:").then(|| PathBuf::from(db)),
            ..Default::default()
        }
    }
}

type Reply = Box<dyn FnOnce() + Send>;
/// Runs on the writer; says whether it succeeded, and how to answer.
type JobFn = Box<dyn FnOnce(&mut Writer) -> (bool, Reply) + Send>;

struct Job {
    /// Reply only once the batch holding this job is committed.
    durable: bool,
    run: JobFn,
}

pub struct SqliteStore {
    jobs: Option<Sender<Job>>,
    writer: Option<JoinHandle<()>>,
    _lock: Option<File>,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database. A file database
    /// is locked to this process; steps a previous process left running are
    /// released for retry, each such loss counting as an attempt.
    pub fn open(opts: SqliteOptions) -> Result<Self> {
        let lock = match &opts.path {
            Some(path) => Some(lock_database(path)?),
            None => None,
        };
        let conn = match &opts.path {
            Some(path) => Connection::open(path),
            None => Connection::open_in_memory(),
        }
        .map_err(db_err)?;
        configure(&conn, &opts)?;
        schema::migrate(&conn)?;
        conn.execute(sql::RELEASE_ORPHANED_STEPS, [])
            .map_err(db_err)?;
        let blobs = match (&opts.blob_dir, &opts.path) {
            (Some(dir), _) => BlobStore::open(dir)?,
            (None, Some(path)) => BlobStore::open(sibling(path, "blobs"))?,
            (None, None) => BlobStore::temporary()?,
        };
        let (tx, rx) = crossbeam_channel::unbounded();
        let writer = Writer::new(conn, blobs);
        let handle = std::thread::Builder::new()
            .name("flowstate-sqlite-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            jobs: Some(tx),
            writer: Some(handle),
            _lock: lock,
        })
    }

    pub fn in_memory() -> Result<Self> {
        Self::open(SqliteOptions::default())
    }

    fn call<T, E, F>(
        &self,
        durable: bool,
        f: F,
    ) -> impl Future<Output = Result<T, E>> + Send + use<T, E, F>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&mut Writer) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            durable,
            run: Box::new(move |w| {
                let result = f(w);
                let ok = result.is_ok();
                let reply: Reply = Box::new(move || {
                    let _ = tx.send(result);
                });
                (ok, reply)
            }),
        };
        let sent = match &self.jobs {
            Some(jobs) => jobs.send(job).is_ok(),
            None => false,
        };
        async move {
            if !sent {
                return Err(StoreError::Closed.into());
            }
            rx.await.map_err(|_| E::from(StoreError::Closed))?
        }
    }
}

impl Drop for SqliteStore {
    /// Closing the channel lets the writer commit what it holds and stop.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(h) = self.writer.take() {
            let _ = h.join();
        }
    }
}

fn writer_loop(mut w: Writer, rx: Receiver<Job>) {
    let mut deferred: Vec<Reply> = Vec::new();
    while let Ok(first) = rx.recv() {
        fatal_on_error(w.conn.execute_batch("BEGIN IMMEDIATE"), "BEGIN");
        let deadline = Instant::now() + MAX_BATCH_TIME;
        let mut next = Some(first);
        let mut n = 0;
        // Keep the transaction open while work keeps coming: replies that
        // need durability wait for the commit, the others do not, so there
        // is no reason to sync until one waits, the batch is full, or old.
        while let Some(job) = next.take() {
            run_job(&mut w, job, &mut deferred);
            n += 1;
            if n >= MAX_BATCH {
                break;
            }
            next = match rx.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Disconnected) => None,
                Err(TryRecvError::Empty) if !deferred.is_empty() => None,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    rx.recv_timeout(left).ok()
                }
            };
        }
        fatal_on_error(w.conn.execute_batch("COMMIT"), "COMMIT");
        w.after_commit();
        for reply in deferred.drain(..) {
            reply();
        }
    }
}

fn run_job(w: &mut Writer, job: Job, deferred: &mut Vec<Reply>) {
    fatal_on_error(exec_cached(&w.conn, "SAVEPOINT op"), "SAVEPOINT");
    let (ok, reply) = (job.run)(w);
    if !ok {
        fatal_on_error(exec_cached(&w.conn, "ROLLBACK TO op"), "ROLLBACK TO");
        w.forget_caches();
    }
    fatal_on_error(exec_cached(&w.conn, "RELEASE op"), "RELEASE");
    if job.durable {
        deferred.push(reply);
    } else {
        reply();
    }
}

fn exec_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

/// Replies already sent may depend on the open transaction; if it cannot be
/// committed, crash rather than let anyone believe in lost writes.
fn fatal_on_error(r: rusqlite::Result<()>, what: &str) {
    if let Err(e) = r {
        tracing::error!(error = %e, "SQLite {what} failed; stopping so that no unrecorded work is acknowledged");
        eprintln!("flowstate: fatal: SQLite {what} failed: {e}");
        std::process::abort();
    }
}

fn configure(conn: &Connection, opts: &SqliteOptions) -> Result<()> {
    let sync = if opts.relaxed_durability {
        "NORMAL"
    } else {
        "FULL"
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;"
    ))
    .map_err(db_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".");
    name.push(suffix);
    db.with_file_name(name)
}

fn lock_database(db: &Path) -> Result<File> {
    let path = sibling(db, "lock");
    let file = File::create(&path).map_err(|e| {
        StoreError::Database(format!(
            "cannot create the lock file {}: {e}",
            path.display()
        ))
    })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(_) => Err(StoreError::Locked {
            path: db.display().to_string(),
        }),
    }
}

pub(crate) fn db_err(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl Store for SqliteStore {
    fn deploy(&self, v: NewVersion) -> impl Future<Output = Result<VersionRecord>> + Send {
        self.call(true, move |w| w.deploy(v))
    }

    fn version(&self, id: VersionId) -> impl Future<Output = Result<VersionRecord>> + Send {
        self.call(false, move |w| w.version(id))
    }

    fn create_run(&self, r: NewRun) -> impl Future<Output = Result<RunId>> + Send {
        self.call(true, move |w| w.create_run(r))
    }

    fn claim_due_steps(
        &self,
        c: ClaimRequest,
    ) -> impl Future<Output = Result<Vec<ClaimedStep>>> + Send {
        self.call(false, move |w| w.claim(c))
    }

    fn next_due_at(
        &self,
    ) -> impl Future<Output = Result<Option<flowstate_core::Timestamp>>> + Send {
        self.call(false, move |w| w.next_due_at())
    }

    fn run_context(&self, run: RunId) -> impl Future<Output = Result<RunContext>> + Send {
        self.call(false, move |w| w.run_context(run))
    }

    fn apply_state_op(
        &self,
        ctx: OpContext,
        op: StateOp,
    ) -> impl Future<Output = Result<String, OpError>> + Send {
        self.call(false, move |w| w.apply_state_op(&ctx, &op))
    }

    fn commit_step(&self, c: StepCommit) -> impl Future<Output = Result<CommitOutcome>> + Send {
        self.call(false, move |w| w.commit_step(c))
    }

    fn retry_step(&self, r: StepRetry) -> impl Future<Output = Result<bool>> + Send {
        self.call(false, move |w| w.retry_step(r))
    }

    fn run(&self, id: RunId) -> impl Future<Output = Result<Option<RunRecord>>> + Send {
        self.call(false, move |w| w.run(id))
    }

    fn steps(&self, run: RunId) -> impl Future<Output = Result<Vec<StepRecord>>> + Send {
        self.call(false, move |w| w.steps(run))
    }

    fn run_state(&self, run: RunId) -> impl Future<Output = Result<Vec<(String, String)>>> + Send {
        self.call(false, move |w| w.run_state(run))
    }

    fn unfinished_runs(
        &self,
        workflow: Option<String>,
    ) -> impl Future<Output = Result<Vec<RunId>>> + Send {
        self.call(false, move |w| w.unfinished_runs(workflow.as_deref()))
    }

    fn flush(&self) -> impl Future<Output = Result<()>> + Send {
        self.call(true, |_| Ok::<_, StoreError>(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_tests!(SqliteStore::in_memory().unwrap());

    #[test]
    fn a_file_database_is_locked_to_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let opts = SqliteOptions {
            path: Some(path.clone()),
            ..Default::default()
        };
        let first = SqliteStore::open(opts.clone()).unwrap();
        let err = SqliteStore::open(opts.clone())
            .err()
            .expect("second open must fail");
        assert!(
            err.to_string()
                .contains("in use by another flowstate process"),
            "{err}"
        );
        drop(first);
        SqliteStore::open(opts).expect("the lock is released on drop");
    }
}
