//! Versioned migrations, tracked in `PRAGMA user_version`. Append new
//! migrations; never edit one that has shipped.

use rusqlite::Connection;

use super::db_err;
use crate::Result;

const MIGRATIONS: &[&str] = &[
    // 1: the durable core.
    "CREATE TABLE workflow_versions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        source_hash TEXT NOT NULL,
        info TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX workflow_versions_by_source ON workflow_versions(name, source_hash);

    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        workflow TEXT NOT NULL,
        version_id INTEGER NOT NULL,
        status TEXT NOT NULL,
        headers TEXT NOT NULL,
        has_complete_hook INTEGER NOT NULL,
        has_error_hook INTEGER NOT NULL,
        pending INTEGER NOT NULL,
        steps_total INTEGER NOT NULL,
        error TEXT,
        end_reason TEXT,
        created_at INTEGER NOT NULL,
        finished_at INTEGER
    );
    CREATE INDEX runs_unfinished ON runs(workflow, id) WHERE finished_at IS NULL;

    CREATE TABLE steps (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        parent_id INTEGER,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        depth INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        payload TEXT,
        payload_blob TEXT,
        payload_bytes INTEGER NOT NULL,
        due_at INTEGER NOT NULL,
        lease_until INTEGER,
        created_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        duration_ms INTEGER,
        error TEXT,
        logs TEXT
    );
    CREATE INDEX steps_due ON steps(due_at, id) WHERE status = 'pending';
    CREATE INDEX steps_leased ON steps(lease_until) WHERE status = 'running';
    CREATE INDEX steps_by_run ON steps(run_id, id);

    CREATE TABLE step_attempts (
        step_id INTEGER NOT NULL,
        attempt INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER NOT NULL,
        error TEXT,
        logs TEXT NOT NULL,
        PRIMARY KEY (step_id, attempt)
    ) WITHOUT ROWID;

    CREATE TABLE run_state (
        run_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        is_list INTEGER NOT NULL,
        value,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;

    CREATE TABLE run_list_items (
        id INTEGER PRIMARY KEY,
        run_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        item TEXT NOT NULL
    );
    CREATE INDEX run_list_items_by_key ON run_list_items(run_id, key, id);

    CREATE TABLE journal (
        step_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        run_id INTEGER NOT NULL,
        op TEXT NOT NULL,
        key TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (step_id, seq)
    ) WITHOUT ROWID;
    CREATE INDEX journal_by_run ON journal(run_id);

    CREATE TABLE dedupe_keys (
        workflow TEXT NOT NULL,
        key TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, key)
    ) WITHOUT ROWID;",
    // 2: deployed workflows, delivery dedupe, run listing.
    "CREATE TABLE workflows (
        name TEXT PRIMARY KEY,
        version_id INTEGER NOT NULL,
        settings TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    ALTER TABLE dedupe_keys ADD COLUMN run_id INTEGER;
    CREATE INDEX runs_by_workflow ON runs(workflow, id);
    CREATE INDEX runs_by_status ON runs(status, id);",
    // 3: HTTP trigger URLs.
    "ALTER TABLE workflows ADD COLUMN http_token TEXT NOT NULL DEFAULT '';
    CREATE INDEX workflows_by_token ON workflows(http_token);",
    // 4: schedule triggers.
    "CREATE TABLE schedules (
        workflow TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_fire_at INTEGER,
        fired INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX schedules_due ON schedules(next_fire_at) WHERE next_fire_at IS NOT NULL;",
    // 5: workflow-scoped state (api.workflowStore), kept in the run-state
    // tables under the negative of the scope's id.
    "CREATE TABLE workflow_scopes (
        id INTEGER PRIMARY KEY,
        workflow TEXT NOT NULL UNIQUE
    );",
    // 6: $checkpoint and this.$checkpoint; a cleared one keeps its row so
    // its version only ever grows (compare-and-set relies on it).
    "CREATE TABLE checkpoints (
        workflow TEXT NOT NULL,
        scope TEXT NOT NULL,
        value TEXT,
        version INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, scope)
    ) WITHOUT ROWID;",
    // 7: concurrency and throttle. A gated run has a gate key; it is
    // admitted (its start made due) at `admitted_at`.
    "ALTER TABLE runs ADD COLUMN gate_key TEXT;
    ALTER TABLE runs ADD COLUMN gate_limit INTEGER;
    ALTER TABLE runs ADD COLUMN throttle_limit INTEGER;
    ALTER TABLE runs ADD COLUMN throttle_period_ms INTEGER;
    ALTER TABLE runs ADD COLUMN admitted_at INTEGER;
    CREATE INDEX runs_gated ON runs(workflow, gate_key, id)
        WHERE gate_key IS NOT NULL AND finished_at IS NULL;
    CREATE INDEX runs_admitted ON runs(workflow, admitted_at) WHERE admitted_at IS NOT NULL;",
    // 8: api.waitForEvent. A waiting step is due at its timeout; `waiting`
    // counts a run's waiting branches (the run is `waiting` when they are
    // all it has left).
    "ALTER TABLE steps ADD COLUMN wait_token TEXT;
    ALTER TABLE steps ADD COLUMN redirect_url TEXT;
    ALTER TABLE runs ADD COLUMN waiting INTEGER NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX steps_by_wait_token ON steps(wait_token) WHERE wait_token IS NOT NULL;
    CREATE INDEX steps_waiting ON steps(due_at) WHERE status = 'waiting';",
    // 9: api.csv. An import's `meta` is set when it completes.
    "CREATE TABLE csv_imports (
        key TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        meta TEXT,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX csv_imports_expiry ON csv_imports(expires_at);
    CREATE TABLE csv_chunks (
        key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        rows TEXT NOT NULL,
        PRIMARY KEY (key, idx)
    ) WITHOUT ROWID;",
    // 10: workflow variables and sealed secrets.
    "CREATE TABLE workflow_env (
        workflow TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        secret INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (workflow, name)
    ) WITHOUT ROWID;",
];

pub fn migrate(conn: &Connection) -> Result<()> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err)?;
    let current = current as usize;
    if current > MIGRATIONS.len() {
        return Err(crate::StoreError::Database(format!(
            "the database is at schema version {current}, newer than this flowstate knows ({}); upgrade flowstate",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let version = i + 1;
        conn.execute_batch(&format!(
            "BEGIN; {migration}; PRAGMA user_version = {version}; COMMIT;"
        ))
        .map_err(db_err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrating_twice_is_a_no_op() {
        let conn = Connection::open_in_memory().unwrap();
        migrate(&conn).unwrap();
        migrate(&conn).unwrap();
        let v: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v as usize, MIGRATIONS.len());
    }
}
