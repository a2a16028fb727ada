//! The PostgreSQL schema, versioned in `flowstate_schema`. Migrations run
//! under an advisory lock so nodes starting together migrate once.

use deadpool_postgres::Client;

use super::pg_err;
use crate::Result;

const MIGRATIONS: &[&str] = &[
    // 1: everything the store needs (the SQLite migrations 1–4 in one).
    "CREATE TABLE workflow_versions (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        source_hash TEXT NOT NULL,
        info TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        UNIQUE (name, source_hash)
    );
    CREATE TABLE runs (
        id BIGSERIAL PRIMARY KEY,
        workflow TEXT NOT NULL,
        version_id BIGINT NOT NULL,
        status TEXT NOT NULL,
        headers TEXT NOT NULL,
        has_complete_hook BOOLEAN NOT NULL,
        has_error_hook BOOLEAN NOT NULL,
        pending BIGINT NOT NULL,
        steps_total BIGINT NOT NULL,
        state_bytes BIGINT NOT NULL DEFAULT 0,
        error TEXT,
        end_reason TEXT,
        created_at BIGINT NOT NULL,
        finished_at BIGINT
    );
    CREATE INDEX runs_unfinished ON runs (workflow, id) WHERE finished_at IS NULL;
    CREATE INDEX runs_by_workflow ON runs (workflow, id);
    CREATE INDEX runs_by_status ON runs (status, id);
    CREATE TABLE steps (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL,
        parent_id BIGINT,
        kind TEXT NOT NULL,
        action TEXT NOT NULL,
        depth INTEGER NOT NULL,
        status TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0,
        payload TEXT,
        payload_bytes BIGINT NOT NULL,
        due_at BIGINT NOT NULL,
        lease_until BIGINT,
        created_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        duration_ms BIGINT,
        error TEXT,
        logs TEXT
    );
    CREATE INDEX steps_due ON steps (due_at, id) WHERE status = 'pending';
    CREATE INDEX steps_leased ON steps (lease_until) WHERE status = 'running';
    CREATE INDEX steps_by_run ON steps (run_id, id);
    CREATE TABLE step_attempts (
        step_id BIGINT NOT NULL,
        attempt INTEGER NOT NULL,
        started_at BIGINT,
        finished_at BIGINT NOT NULL,
        error TEXT,
        logs TEXT NOT NULL,
        PRIMARY KEY (step_id, attempt)
    );
    CREATE TABLE run_state (
        run_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        is_list BOOLEAN NOT NULL,
        txt TEXT,
        num NUMERIC,
        bytes BIGINT NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE TABLE run_list_items (
        id BIGSERIAL PRIMARY KEY,
        run_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        item TEXT NOT NULL
    );
    CREATE INDEX run_list_items_by_key ON run_list_items (run_id, key, id);
    CREATE TABLE journal (
        step_id BIGINT NOT NULL,
        seq INTEGER NOT NULL,
        run_id BIGINT NOT NULL,
        op TEXT NOT NULL,
        key TEXT NOT NULL,
        result TEXT NOT NULL,
        PRIMARY KEY (step_id, seq)
    );
    CREATE INDEX journal_by_run ON journal (run_id);
    CREATE TABLE dedupe_keys (
        workflow TEXT NOT NULL,
        key TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        run_id BIGINT,
        PRIMARY KEY (workflow, key)
    );
    CREATE TABLE workflows (
        name TEXT PRIMARY KEY,
        version_id BIGINT NOT NULL,
        settings TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        http_token TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX workflows_by_token ON workflows (http_token);
    CREATE TABLE schedules (
        workflow TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        next_fire_at BIGINT,
        fired BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE next_fire_at IS NOT NULL;",
    // 2: workflow-scoped state (api.workflowStore), kept in the run-state
    // tables under the negative of the scope's id.
    "CREATE TABLE workflow_scopes (
        id BIGSERIAL PRIMARY KEY,
        workflow TEXT NOT NULL UNIQUE,
        state_bytes BIGINT NOT NULL DEFAULT 0
    );",
    // 3: $checkpoint and this.$checkpoint; a cleared one keeps its row so
    // its version only ever grows (compare-and-set relies on it).
    "CREATE TABLE checkpoints (
        workflow TEXT NOT NULL,
        scope TEXT NOT NULL,
        value TEXT,
        version BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (workflow, scope)
    );",
    // 4: concurrency and throttle (see the SQLite migration 7).
    "ALTER TABLE runs ADD COLUMN gate_key TEXT;
    ALTER TABLE runs ADD COLUMN gate_limit BIGINT;
    ALTER TABLE runs ADD COLUMN throttle_limit BIGINT;
    ALTER TABLE runs ADD COLUMN throttle_period_ms BIGINT;
    ALTER TABLE runs ADD COLUMN admitted_at BIGINT;
    CREATE INDEX runs_gated ON runs (workflow, gate_key, id)
        WHERE gate_key IS NOT NULL AND finished_at IS NULL;
    CREATE INDEX runs_admitted ON runs (workflow, admitted_at) WHERE admitted_at IS NOT NULL;",
    // 5: api.waitForEvent (see the SQLite migration 8).
    "ALTER TABLE steps ADD COLUMN wait_token TEXT;
    ALTER TABLE steps ADD COLUMN redirect_url TEXT;
    ALTER TABLE runs ADD COLUMN waiting BIGINT NOT NULL DEFAULT 0;
    CREATE UNIQUE INDEX steps_by_wait_token ON steps (wait_token) WHERE wait_token IS NOT NULL;
    CREATE INDEX steps_waiting ON steps (due_at) WHERE status = 'waiting';",
    // 6: api.csv (see the SQLite migration 9).
    "CREATE TABLE csv_imports (
        key TEXT PRIMARY KEY,
        workflow TEXT NOT NULL,
        meta TEXT,
        expires_at BIGINT NOT NULL
    );
    CREATE INDEX csv_imports_expiry ON csv_imports (expires_at);
    CREATE TABLE csv_chunks (
        key TEXT NOT NULL,
        idx INTEGER NOT NULL,
        rows TEXT NOT NULL,
        PRIMARY KEY (key, idx)
    );",
    // 7: workflow variables and sealed secrets.
    "CREATE TABLE workflow_env (
        workflow TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        secret BOOLEAN NOT NULL,
        updated_at BIGINT NOT NULL,
        PRIMARY KEY (workflow, name)
    );",
];

/// An arbitrary constant naming flowstate's migration lock.
const MIGRATION_LOCK: i64 = 0x666c_6f77_7374;

pub async fn migrate(client: &mut Client) -> Result<()> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS flowstate_schema (version INTEGER NOT NULL)")
        .await
        .map_err(pg_err)?;
    let current: i32 = tx
        .query_opt("SELECT version FROM flowstate_schema", &[])
        .await
        .map_err(pg_err)?
        .map_or(0, |r| r.get(0));
    if current as usize > MIGRATIONS.len() {
        return Err(crate::StoreError::Database(format!(
            "the database is at schema version {current}, newer than this flowstate knows ({}); upgrade flowstate",
            MIGRATIONS.len()
        )));
    }
    for migration in MIGRATIONS.iter().skip(current as usize) {
        tx.batch_execute(migration).await.map_err(pg_err)?;
    }
    let version = MIGRATIONS.len() as i32;
    tx.execute("DELETE FROM flowstate_schema", &[])
        .await
        .map_err(pg_err)?;
    tx.execute(
        "INSERT INTO flowstate_schema (version) VALUES ($1)",
        &[&version],
    )
    .await
    .map_err(pg_err)?;
    tx.commit().await.map_err(pg_err)
}
