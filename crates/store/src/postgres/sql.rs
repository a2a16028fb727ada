//! The PostgreSQL store's queries, one named constant each.

pub const INSERT_VERSION: &str =
    "INSERT INTO workflow_versions (name, source, source_hash, info, created_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (name, source_hash) DO UPDATE SET name = excluded.name
     RETURNING id, created_at";
pub const SELECT_VERSION: &str =
    "SELECT id, name, source, info, created_at FROM workflow_versions WHERE id = $1";

pub const SELECT_DELIVERY: &str =
    "SELECT run_id, expires_at FROM dedupe_keys WHERE workflow = $1 AND key = $2 FOR UPDATE";
pub const UPSERT_DELIVERY: &str = "INSERT INTO dedupe_keys (workflow, key, expires_at, run_id) VALUES ($1, $2, $3, $4)
     ON CONFLICT (workflow, key) DO UPDATE SET expires_at = excluded.expires_at, run_id = excluded.run_id";
pub const INSERT_RUN: &str =
    "INSERT INTO runs (workflow, version_id, status, headers, has_complete_hook,
        has_error_hook, pending, steps_total, created_at)
     VALUES ($1, $2, 'running', $3, $4, $5, 1, 1, $6) RETURNING id";
pub const INSERT_STEP: &str =
    "INSERT INTO steps (run_id, parent_id, kind, action, depth, status, payload,
        payload_bytes, due_at, created_at)
     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9)";
pub const CLAIM_START: &str =
    "UPDATE steps SET status = 'running', attempt = 1, lease_until = $2, started_at = $3
     WHERE run_id = $1 AND status = 'pending'
     RETURNING id, run_id, kind, action, depth, attempt, payload";

pub const CLAIM_DUE: &str = "UPDATE steps SET status = 'running', attempt = attempt + 1,
        lease_until = $1, started_at = $2
     WHERE id IN (SELECT id FROM steps WHERE status = 'pending' AND due_at <= $2
                  ORDER BY due_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
     RETURNING id, run_id, kind, action, depth, attempt, payload";
pub const CLAIM_EXPIRED: &str =
    "UPDATE steps SET attempt = attempt + 1, lease_until = $1, started_at = $2
     WHERE id IN (SELECT id FROM steps WHERE status = 'running' AND lease_until <= $2
                  ORDER BY lease_until LIMIT $3 FOR UPDATE SKIP LOCKED)
     RETURNING id, run_id, kind, action, depth, attempt, payload";
pub const NEXT_DUE: &str = "SELECT min(t) FROM (
        SELECT min(due_at) AS t FROM steps WHERE status = 'pending'
        UNION ALL SELECT min(lease_until) FROM steps WHERE status = 'running'
        UNION ALL SELECT min(due_at) FROM steps WHERE status = 'waiting') AS due";

pub const SELECT_RUN_CONTEXT: &str =
    "SELECT workflow, version_id, headers, steps_total, error FROM runs WHERE id = $1";
/// Locks the step row, so a cancellation waits for the op that checked it.
pub const LOCK_LEASED_STEP: &str = "SELECT run_id, kind, depth, started_at FROM steps
     WHERE id = $1 AND status = 'running' AND attempt = $2 FOR UPDATE";
pub const LOCK_RUN_FOR_COMMIT: &str = "SELECT status, pending, steps_total, has_complete_hook, has_error_hook FROM runs WHERE id = $1 FOR UPDATE";
pub const FINISH_STEP: &str =
    "UPDATE steps SET status = $2, finished_at = $3, duration_ms = $4, logs = $5,
        error = $6, lease_until = NULL
     WHERE id = $1";
pub const CANCEL_OTHER_STEPS: &str =
    "UPDATE steps SET status = 'cancelled', finished_at = $3, lease_until = NULL
     WHERE run_id = $1 AND id != $2 AND status IN ('pending', 'running', 'waiting')";
pub const UPDATE_RUN_AFTER_STEP: &str =
    "UPDATE runs SET pending = $2::BIGINT, steps_total = steps_total + $3,
        waiting = waiting + $8::BIGINT,
        status = coalesce($4, CASE
            WHEN status NOT IN ('running', 'waiting') THEN status
            WHEN $2::BIGINT > 0 AND $2::BIGINT = waiting + $8::BIGINT THEN 'waiting'
            ELSE 'running' END),
        error = coalesce(error, $5),
        end_reason = coalesce($6, end_reason), finished_at = $7
     WHERE id = $1";
pub const DELETE_STEP_JOURNAL: &str = "DELETE FROM journal WHERE step_id = $1";
pub const DELETE_RUN_JOURNAL: &str = "DELETE FROM journal WHERE run_id = $1";
pub const DELETE_RUN_STATE: &str = "DELETE FROM run_state WHERE run_id = $1";
pub const DELETE_RUN_LIST_ITEMS: &str = "DELETE FROM run_list_items WHERE run_id = $1";
pub const RESET_STATE_BYTES: &str = "UPDATE runs SET state_bytes = 0 WHERE id = $1";

pub const INSERT_ATTEMPT: &str =
    "INSERT INTO step_attempts (step_id, attempt, started_at, finished_at, error, logs)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (step_id, attempt) DO UPDATE SET finished_at = excluded.finished_at,
        error = excluded.error, logs = excluded.logs";
pub const RESCHEDULE_STEP: &str =
    "UPDATE steps SET status = 'pending', due_at = $2, lease_until = NULL, error = $3
     WHERE id = $1";

pub const SELECT_RUN: &str =
    "SELECT id, workflow, version_id, status, pending, steps_total, error, end_reason,
        created_at, finished_at
     FROM runs WHERE id = $1";
pub const LIST_RUNS: &str =
    "SELECT id, workflow, version_id, status, pending, steps_total, error, end_reason,
        created_at, finished_at
     FROM runs
     WHERE ($1::TEXT IS NULL OR workflow = $1) AND ($2::TEXT IS NULL OR status = $2)
       AND ($3::BIGINT IS NULL OR id < $3)
     ORDER BY id DESC LIMIT $4";
pub const SELECT_STEPS: &str =
    "SELECT id, run_id, parent_id, kind, action, depth, status, attempt, payload_bytes,
        due_at, started_at, finished_at, duration_ms, error, logs
     FROM steps WHERE run_id = $1 ORDER BY id";
pub const SELECT_ATTEMPTS: &str =
    "SELECT a.step_id, a.attempt, a.started_at, a.finished_at, a.error, a.logs
     FROM step_attempts a JOIN steps s ON s.id = a.step_id
     WHERE s.run_id = $1 ORDER BY a.step_id, a.attempt";
pub const SELECT_UNFINISHED_RUNS: &str = "SELECT id FROM runs WHERE finished_at IS NULL AND ($1::TEXT IS NULL OR workflow = $1) ORDER BY id";
pub const CANCEL_RUN: &str = "UPDATE runs SET status = 'cancelled', pending = 0, finished_at = $2
     WHERE id = $1 AND finished_at IS NULL";
pub const CANCEL_RUN_STEPS: &str =
    "UPDATE steps SET status = 'cancelled', finished_at = $2, lease_until = NULL
     WHERE run_id = $1 AND status IN ('pending', 'running', 'queued', 'waiting')";

// Run state. Numbers live in `num` (exact NUMERIC), everything else as JSON text.
pub const LOCK_RUN_BYTES: &str = "SELECT state_bytes FROM runs WHERE id = $1 FOR UPDATE";
pub const ADD_RUN_BYTES: &str = "UPDATE runs SET state_bytes = state_bytes + $2 WHERE id = $1";
pub const SELECT_STATE_KEY: &str = "SELECT is_list, txt, num::TEXT, bytes FROM run_state WHERE run_id = $1 AND key = $2 FOR UPDATE";
pub const SELECT_LIST_ITEMS: &str =
    "SELECT item FROM run_list_items WHERE run_id = $1 AND key = $2 ORDER BY id";
pub const SELECT_RUN_STATE: &str = "SELECT key, is_list, txt, num::TEXT FROM run_state WHERE run_id = $1 ORDER BY key COLLATE \"C\"";
pub const UPSERT_VALUE: &str = "INSERT INTO run_state (run_id, key, is_list, txt, num, bytes)
     VALUES ($1, $2, FALSE, $3, $4::TEXT::NUMERIC, $5)
     ON CONFLICT (run_id, key) DO UPDATE SET is_list = FALSE, txt = excluded.txt, num = excluded.num,
        bytes = excluded.bytes";
pub const UPSERT_LIST: &str = "INSERT INTO run_state (run_id, key, is_list, txt, num, bytes)
     VALUES ($1, $2, TRUE, NULL, NULL, $3)
     ON CONFLICT (run_id, key) DO UPDATE SET is_list = TRUE, txt = NULL, num = NULL, bytes = excluded.bytes";
pub const INSERT_LIST_ITEM: &str =
    "INSERT INTO run_list_items (run_id, key, item) VALUES ($1, $2, $3)";
pub const UPSERT_INCREMENT: &str = "INSERT INTO run_state (run_id, key, is_list, txt, num, bytes)
     VALUES ($1, $2, FALSE, NULL, $3::TEXT::NUMERIC, 8)
     ON CONFLICT (run_id, key) DO UPDATE SET num = run_state.num + excluded.num
     WHERE NOT run_state.is_list AND run_state.num IS NOT NULL
     RETURNING num::TEXT";
pub const DELETE_STATE_KEY: &str = "DELETE FROM run_state WHERE run_id = $1 AND key = $2";
pub const DELETE_LIST_ITEMS: &str = "DELETE FROM run_list_items WHERE run_id = $1 AND key = $2";

// Journal and dedupe.
pub const SELECT_JOURNAL: &str =
    "SELECT op, key, result FROM journal WHERE step_id = $1 AND seq = $2";
pub const TRUNCATE_JOURNAL: &str = "DELETE FROM journal WHERE step_id = $1 AND seq >= $2";
pub const INSERT_JOURNAL: &str = "INSERT INTO journal (step_id, seq, run_id, op, key, result)
     VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT (step_id, seq) DO UPDATE SET op = excluded.op, key = excluded.key, result = excluded.result";
pub const SELECT_DEDUPE: &str =
    "SELECT expires_at FROM dedupe_keys WHERE workflow = $1 AND key = $2 FOR UPDATE";
pub const UPSERT_DEDUPE: &str =
    "INSERT INTO dedupe_keys (workflow, key, expires_at) VALUES ($1, $2, $3)
     ON CONFLICT (workflow, key) DO UPDATE SET expires_at = excluded.expires_at";

// Deployed workflows and schedules.
pub const UPSERT_WORKFLOW: &str = "INSERT INTO workflows (name, version_id, settings, created_at, updated_at, http_token)
     VALUES ($1, $2, $3, $4, $4, $5)
     ON CONFLICT (name) DO UPDATE SET version_id = excluded.version_id, settings = excluded.settings,
        updated_at = excluded.updated_at";
pub const SELECT_WORKFLOW: &str = "SELECT name, version_id, settings, created_at, updated_at, http_token FROM workflows WHERE name = $1";
pub const SELECT_WORKFLOW_BY_TOKEN: &str =
    "SELECT name, version_id, settings, created_at, updated_at, http_token
     FROM workflows WHERE http_token = $1 AND http_token != ''";
pub const SELECT_WORKFLOWS: &str = "SELECT name, version_id, settings, created_at, updated_at, http_token FROM workflows ORDER BY name";
pub const DELETE_WORKFLOW: &str = "DELETE FROM workflows WHERE name = $1";
pub const SELECT_SCHEDULE_SPEC: &str = "SELECT spec FROM schedules WHERE workflow = $1";
pub const REPLACE_SCHEDULE: &str = "INSERT INTO schedules (workflow, spec, next_fire_at, fired) VALUES ($1, $2, $3, 0)
     ON CONFLICT (workflow) DO UPDATE SET spec = excluded.spec, next_fire_at = excluded.next_fire_at, fired = 0";
pub const DELETE_SCHEDULE: &str = "DELETE FROM schedules WHERE workflow = $1";
pub const DUE_SCHEDULES: &str = "SELECT workflow, spec, next_fire_at, fired FROM schedules
     WHERE next_fire_at IS NOT NULL AND next_fire_at <= $1 ORDER BY next_fire_at";
pub const ADVANCE_SCHEDULE: &str = "UPDATE schedules SET next_fire_at = $3, fired = fired + 1
     WHERE workflow = $1 AND next_fire_at = $2";
pub const NEXT_SCHEDULE: &str =
    "SELECT min(next_fire_at) FROM schedules WHERE next_fire_at IS NOT NULL";

// Metrics and retention.
pub const QUEUE_STATS: &str =
    "SELECT count(*), min(due_at) FROM steps WHERE status = 'pending' AND due_at <= $1";
pub const PRUNE_ATTEMPTS: &str = "DELETE FROM step_attempts WHERE step_id IN (
        SELECT s.id FROM steps s JOIN runs r ON r.id = s.run_id WHERE r.finished_at < $1)";
pub const PRUNE_STEPS: &str =
    "DELETE FROM steps WHERE run_id IN (SELECT id FROM runs WHERE finished_at < $1)";
pub const PRUNE_RUNS: &str = "DELETE FROM runs WHERE finished_at < $1";
pub const PRUNE_DEDUPE: &str = "DELETE FROM dedupe_keys WHERE expires_at < $1";
pub const RELEASE_LEASE: &str = "UPDATE steps SET status = 'pending', lease_until = NULL
     WHERE id = $1 AND attempt = $2 AND status = 'running'";
pub const SELECT_WORKFLOW_SCOPE: &str = "SELECT id FROM workflow_scopes WHERE workflow = $1";
pub const CREATE_WORKFLOW_SCOPE: &str =
    "INSERT INTO workflow_scopes (workflow) VALUES ($1) ON CONFLICT (workflow) DO NOTHING";
pub const LOCK_SCOPE_BYTES: &str =
    "SELECT state_bytes FROM workflow_scopes WHERE id = $1 FOR UPDATE";
pub const ADD_SCOPE_BYTES: &str =
    "UPDATE workflow_scopes SET state_bytes = state_bytes + $2 WHERE id = $1";
