//! `api.waitForEvent` on PostgreSQL (see `sqlite/waits.rs`). A resume locks
//! the waiting step's row, so two resumes of one token cannot both win.

use deadpool_postgres::Transaction;
use flowstate_core::executor::WaitSpec;
use flowstate_core::{RunId, Timestamp};

use super::pg_err;
use crate::{Result, ResumeWait, Resumed, merge_resume};

const INSERT_WAIT: &str = "INSERT INTO steps (run_id, parent_id, kind, action, depth, status,
        payload, payload_bytes, due_at, created_at, wait_token, redirect_url)
     VALUES ($1, $2, 'action', $3, $4, 'waiting', $5, $6, $7, $8, $9, $10)";
const FIND: &str = "SELECT id, run_id, status, kind, payload, redirect_url, due_at
     FROM steps WHERE wait_token = $1 FOR UPDATE";
const RESUME_STEP: &str = "UPDATE steps SET status = 'pending', due_at = $2, payload = $3,
        payload_bytes = $4
     WHERE id = $1";
const RESUME_RUN: &str = "UPDATE runs SET waiting = waiting - 1,
        status = CASE WHEN status = 'waiting' THEN 'running' ELSE status END
     WHERE id = $1";
pub const EXPIRE: &str = "UPDATE steps SET status = 'pending', kind = 'wait_timeout'
     WHERE status = 'waiting' AND due_at <= $1";

#[allow(clippy::too_many_arguments)]
pub async fn insert_wait(
    tx: &Transaction<'_>,
    run: i64,
    parent: i64,
    action: &str,
    depth: u32,
    payload: &str,
    due_at: Timestamp,
    now: Timestamp,
    wait: &WaitSpec,
) -> Result<()> {
    tx.execute(
        INSERT_WAIT,
        &[
            &run,
            &parent,
            &action,
            &(depth as i32),
            &payload,
            &(payload.len() as i64),
            &due_at.0,
            &now.0,
            &wait.token,
            &wait.redirect_url,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn resume(tx: &Transaction<'_>, r: &ResumeWait) -> Result<Resumed> {
    let Some(row) = tx.query_opt(FIND, &[&r.token]).await.map_err(pg_err)? else {
        return Ok(Resumed::Unknown);
    };
    let (step, run): (i64, i64) = (row.get(0), row.get(1));
    let (status, kind): (String, String) = (row.get(2), row.get(3));
    let payload: Option<String> = row.get(4);
    let redirect_url: Option<String> = row.get(5);
    let due_at: i64 = row.get(6);
    let run_id = RunId(run);
    let expired = matches!(status.as_str(), "timed_out" | "cancelled")
        || kind == "wait_timeout"
        || (status == "waiting" && due_at <= r.now.0);
    if expired {
        return Ok(Resumed::Expired { run: run_id });
    }
    if status != "waiting" {
        return Ok(Resumed::AlreadyUsed { run: run_id });
    }
    let merged = merge_resume(payload.as_deref().unwrap_or("null"), &r.data);
    tx.execute(
        RESUME_STEP,
        &[&step, &r.now.0, &merged, &(merged.len() as i64)],
    )
    .await
    .map_err(pg_err)?;
    tx.execute(RESUME_RUN, &[&run]).await.map_err(pg_err)?;
    Ok(Resumed::Resumed {
        run: run_id,
        redirect_url,
    })
}
