//! The embedded SQLite store. One connection, one open transaction, many
//! operations per commit (group commit), so throughput is not bounded by one
//! fsync per operation. A caller runs its operation on its own thread, under
//! the connection's lock, inside its own savepoint (a failing operation rolls
//! back alone); there is no hand-off to another thread per operation. A
//! small committer thread commits when a reply that needs durability is
//! waiting, or when the transaction is `MAX_BATCH_TIME` old.
//!
//! Durability without stalling: SQLite runs in WAL mode with
//! `synchronous=NORMAL`, so COMMIT appends to the WAL without syncing; the
//! committer then `fdatasync`s the WAL file itself, after releasing the
//! lock, so other operations go on while the disk syncs. Callers that need
//! durability wait for the *synced* generation. (Under NORMAL, SQLite still
//! syncs around checkpoints; a transaction is durable once its WAL frames
//! are synced.) `relaxed_durability` skips the sync: survives a process
//! crash, not a power loss.
//!
//! State-op results return before their transaction commits: the step's own
//! commit comes later in the same log, so nothing is acknowledged early
//! (DESIGN.md part 2). Replies that leave the process (a created run, a
//! flush) wait for the sync that holds them.

mod admin;
mod checkpoints;
mod csv;
mod env;
mod gate;
mod schema;
mod sql;
mod state_ops;
mod waits;
mod writer;

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::sync::{Arc, Condvar, Mutex};

use flowstate_core::state::StateOp;
use flowstate_core::{RunId, Timestamp, VersionId};
use rusqlite::Connection;
use tokio::sync::watch;

use crate::blob::BlobStore;
use crate::{
    ClaimRequest, ClaimedStep, CommitOutcome, CreatedRun, DueSchedule, FinishedRun, FireSchedule,
    NewRun, NewVersion, OpContext, OpError, Publish, QueueStats, Result, RunContext, RunFilter,
    RunRecord, StepCommit, StepRecord, StepRetry, Store, StoreError, VersionRecord, WorkflowRecord,
};
use writer::Writer;

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
    /// Do not sync the WAL before acknowledging: survives a process crash but
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

/// The connection and its transaction, shared by every caller.
struct Shared {
    state: Mutex<State>,
    /// Wakes the committer: a durable reply waits, or shutdown.
    kick: Condvar,
    /// The number of the last commit; durable callers wait for theirs.
    committed: watch::Sender<u64>,
}

struct State {
    writer: Writer,
    /// The WAL file, synced after each commit (file databases only).
    wal: Option<WalSync>,
    /// When the open transaction began, if one is open.
    open_since: Option<Instant>,
    /// Commits so far; the open transaction will be number `generation + 1`.
    generation: u64,
    durable_waiting: bool,
    shutdown: bool,
}

pub struct SqliteStore {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
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
        configure(&conn)?;
        schema::migrate(&conn)?;
        conn.execute(sql::RELEASE_ORPHANED_STEPS, [])
            .map_err(db_err)?;
        let blobs = match (&opts.blob_dir, &opts.path) {
            (Some(dir), _) => BlobStore::open(dir)?,
            (None, Some(path)) => BlobStore::open(sibling(path, "blobs"))?,
            (None, None) => BlobStore::temporary()?,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                wal: match (&opts.path, opts.relaxed_durability) {
                    (Some(path), false) => Some(WalSync::new(sibling_wal(path))),
                    _ => None,
                },
                writer: Writer::new(conn, blobs),
                open_since: None,
                generation: 0,
                durable_waiting: false,
                shutdown: false,
            }),
            kick: Condvar::new(),
            committed: watch::Sender::new(0),
        });
        let committer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("flowstate-sqlite-commit".into())
                .spawn(move || committer_loop(&shared))
                .map_err(|e| {
                    StoreError::Database(format!("cannot start the committer thread: {e}"))
                })?
        };
        Ok(SqliteStore {
            shared,
            committer: Some(committer),
            _lock: lock,
        })
    }

    pub fn in_memory() -> Result<Self> {
        Self::open(SqliteOptions::default())
    }

    /// Runs `f` now, on the calling thread, inside the open transaction.
    /// The returned future is ready at once, or (for `durable`) when the
    /// commit that holds the change is done.
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
        let (result, wait_for) = {
            let mut st = self
                .shared
                .state
                .lock()
                .expect("the store lock is never poisoned");
            if st.shutdown {
                (Err(E::from(StoreError::Closed)), None)
            } else {
                if st.open_since.is_none() {
                    fatal_on_error(exec_cached(&st.writer.conn, "BEGIN IMMEDIATE"), "BEGIN");
                    st.open_since = Some(Instant::now());
                }
                fatal_on_error(exec_cached(&st.writer.conn, "SAVEPOINT op"), "SAVEPOINT");
                let result = f(&mut st.writer);
                if result.is_err() {
                    fatal_on_error(
                        exec_cached(&st.writer.conn, "ROLLBACK TO op"),
                        "ROLLBACK TO",
                    );
                    st.writer.forget_caches();
                }
                fatal_on_error(exec_cached(&st.writer.conn, "RELEASE op"), "RELEASE");
                let wait_for = durable.then(|| {
                    st.durable_waiting = true;
                    st.generation + 1
                });
                (result, wait_for)
            }
        };
        let mut committed = self.shared.committed.subscribe();
        if wait_for.is_some() {
            self.shared.kick.notify_one();
        }
        async move {
            if let Some(generation) = wait_for {
                committed
                    .wait_for(|g| *g >= generation)
                    .await
                    .map_err(|_| E::from(StoreError::Closed))?;
            }
            result
        }
    }
}

impl Drop for SqliteStore {
    /// The committer commits what is open, then stops.
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .expect("the store lock is never poisoned")
            .shutdown = true;
        self.shared.kick.notify_one();
        if let Some(h) = self.committer.take() {
            let _ = h.join();
        }
    }
}

fn committer_loop(shared: &Shared) {
    let mut st = shared
        .state
        .lock()
        .expect("the store lock is never poisoned");
    loop {
        let age = st.open_since.map(|t| t.elapsed());
        let due = age.is_some_and(|age| st.durable_waiting || st.shutdown || age >= MAX_BATCH_TIME);
        if due {
            fatal_on_error(exec_cached(&st.writer.conn, "COMMIT"), "COMMIT");
            st.open_since = None;
            st.durable_waiting = false;
            st.generation += 1;
            st.writer.after_commit();
            let generation = st.generation;
            let wal = st.wal.clone();
            // Sync outside the lock: the next batch fills while the disk works.
            drop(st);
            if let Some(wal) = wal {
                wal.sync();
            }
            shared.committed.send_replace(generation);
            st = shared
                .state
                .lock()
                .expect("the store lock is never poisoned");
            continue;
        }
        if st.shutdown {
            return;
        }
        let wait = match age {
            Some(age) => MAX_BATCH_TIME.saturating_sub(age),
            None => Duration::from_secs(3600),
        };
        st = shared
            .kick
            .wait_timeout(st, wait)
            .expect("the store lock is never poisoned")
            .0;
    }
}

/// The database's WAL file, opened on first use (it exists once the first
/// transaction has committed) and synced to make commits durable.
#[derive(Clone)]
struct WalSync {
    path: PathBuf,
    file: Arc<std::sync::OnceLock<File>>,
}

impl WalSync {
    fn new(path: PathBuf) -> Self {
        WalSync {
            path,
            file: Arc::default(),
        }
    }

    fn sync(&self) {
        let file = match self.file.get() {
            Some(f) => f,
            None => match File::open(&self.path) {
                Ok(f) => self.file.get_or_init(|| f),
                Err(e) => fatal(&format!(
                    "cannot open the WAL file {} to sync it: {e}",
                    self.path.display()
                )),
            },
        };
        if let Err(e) = file.sync_data() {
            fatal(&format!(
                "cannot sync the WAL file {}: {e}",
                self.path.display()
            ));
        }
    }
}

fn sibling_wal(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push("-wal");
    db.with_file_name(name)
}

fn fatal(message: &str) -> ! {
    tracing::error!("{message}; stopping so that no unrecorded work is acknowledged");
    eprintln!("flowstate: fatal: {message}");
    std::process::abort();
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

fn configure(conn: &Connection) -> Result<()> {
    // NORMAL: commits append to the WAL without syncing; the committer
    // syncs the WAL itself, outside the lock (see the module doc).
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         PRAGMA busy_timeout = 5000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -65536;",
    )
    .map_err(db_err)?;
    // Plans that do not depend on bound values: otherwise SQLite re-prepares
    // a statement whenever a value that could change its plan changes (e.g.
    // a claim's `LIMIT ?`), which costs more than the statement itself.
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map_err(db_err)?;
    // Room for every statement the store runs (about 60), so none is ever
    // evicted and prepared again on a hot path.
    conn.set_prepared_statement_cache_capacity(256);
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

    fn create_run(&self, r: NewRun) -> impl Future<Output = Result<CreatedRun>> + Send {
        self.call(true, move |w| w.create_run(r))
    }

    fn publish(&self, p: Publish) -> impl Future<Output = Result<WorkflowRecord>> + Send {
        self.call(true, move |w| w.publish(&p))
    }

    fn workflow_by_token(
        &self,
        token: String,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send {
        self.call(false, move |w| w.workflow_by_token(&token))
    }

    fn workflow(
        &self,
        name: String,
    ) -> impl Future<Output = Result<Option<WorkflowRecord>>> + Send {
        self.call(false, move |w| w.workflow(&name))
    }

    fn workflows(&self) -> impl Future<Output = Result<Vec<WorkflowRecord>>> + Send {
        self.call(false, move |w| w.workflows())
    }

    fn remove_workflow(&self, name: String) -> impl Future<Output = Result<bool>> + Send {
        self.call(true, move |w| w.remove_workflow(&name))
    }

    fn list_runs(&self, f: RunFilter) -> impl Future<Output = Result<Vec<RunRecord>>> + Send {
        self.call(false, move |w| w.list_runs(&f))
    }

    fn cancel_run(
        &self,
        run: RunId,
        now: flowstate_core::Timestamp,
    ) -> impl Future<Output = Result<Option<FinishedRun>>> + Send {
        self.call(true, move |w| w.cancel_run(run, now))
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

    fn queue_stats(
        &self,
        now: flowstate_core::Timestamp,
    ) -> impl Future<Output = Result<QueueStats>> + Send {
        self.call(false, move |w| w.queue_stats(now))
    }

    fn prune_history(
        &self,
        before: flowstate_core::Timestamp,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.call(true, move |w| w.prune_history(before))
    }

    fn due_schedules(
        &self,
        now: flowstate_core::Timestamp,
    ) -> impl Future<Output = Result<Vec<DueSchedule>>> + Send {
        self.call(false, move |w| w.due_schedules(now))
    }

    fn fire_schedule(
        &self,
        f: FireSchedule,
    ) -> impl Future<Output = Result<Option<CreatedRun>>> + Send {
        self.call(true, move |w| w.fire_schedule(f))
    }

    fn next_schedule_at(
        &self,
    ) -> impl Future<Output = Result<Option<flowstate_core::Timestamp>>> + Send {
        self.call(false, move |w| w.next_schedule_at())
    }

    fn release_leases(
        &self,
        leases: Vec<(flowstate_core::StepId, u32)>,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.call(true, move |w| w.release_leases(&leases))
    }

    fn checkpoint(
        &self,
        workflow: String,
        scope: String,
    ) -> impl Future<Output = Result<flowstate_core::checkpoint::Checkpoint>> + Send {
        self.call(false, move |w| w.checkpoint(&workflow, &scope))
    }

    fn put_checkpoint(
        &self,
        workflow: String,
        scope: String,
        value: Option<String>,
        now: Timestamp,
    ) -> impl Future<Output = Result<flowstate_core::checkpoint::Checkpoint>> + Send {
        self.call(true, move |w| {
            w.put_checkpoint(&workflow, &scope, value.as_deref(), now)
        })
    }

    fn csv_op(
        &self,
        workflow: String,
        op: flowstate_core::executor::CsvOp,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<String>>> + Send {
        self.call(false, move |w| w.csv_op(&workflow, &op, now))
    }

    fn env_vars(
        &self,
        workflow: String,
    ) -> impl Future<Output = Result<Vec<crate::EnvVar>>> + Send {
        self.call(false, move |w| w.env_vars(&workflow))
    }

    fn set_env(
        &self,
        workflow: String,
        var: crate::EnvVar,
        now: Timestamp,
    ) -> impl Future<Output = Result<()>> + Send {
        self.call(true, move |w| w.set_env(&workflow, &var, now))
    }

    fn unset_env(
        &self,
        workflow: String,
        name: String,
    ) -> impl Future<Output = Result<bool>> + Send {
        self.call(true, move |w| w.unset_env(&workflow, &name))
    }

    fn resume_wait(
        &self,
        r: crate::ResumeWait,
    ) -> impl Future<Output = Result<crate::Resumed>> + Send {
        self.call(true, move |w| w.resume_wait(&r))
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
