//! `api.waitForEvent` on SQLite: waiting steps, their resume, and their
//! timeout. A waiting step is due at its timeout; when that passes, the
//! scheduler's claim turns it into a `wait_timeout` step, which the engine
//! records as timed out without running any JS.

use flowstate_core::executor::WaitSpec;
use flowstate_core::{RunId, Timestamp};
use rusqlite::{OptionalExtension, params};

use super::db_err;
use super::writer::Writer;
use crate::{Result, ResumeWait, Resumed, merge_resume};

const INSERT_WAIT: &str = "UPDATE steps SET status = 'waiting', wait_token = ?2, redirect_url = ?3
     WHERE id = ?1";
const FIND: &str = "SELECT id, run_id, status, kind, payload, payload_blob, redirect_url, due_at
     FROM steps WHERE wait_token = ?1";
const RESUME_STEP: &str = "UPDATE steps SET status = 'pending', due_at = ?2, payload = ?3,
        payload_blob = NULL, payload_bytes = ?4
     WHERE id = ?1";
const RESUME_RUN: &str = "UPDATE runs SET waiting = waiting - 1,
        status = CASE WHEN status = 'waiting' THEN 'running' ELSE status END
     WHERE id = ?1";
/// Waits whose timeout has come become claimable `wait_timeout` steps.
pub(super) const EXPIRE: &str = "UPDATE steps SET status = 'pending', kind = 'wait_timeout'
     WHERE status = 'waiting' AND due_at <= ?1";

impl Writer {
    /// Marks the step just inserted (the last row) as waiting for `wait`.
    pub(super) fn make_waiting(&mut self, wait: &WaitSpec) -> Result<()> {
        let id = self.conn.last_insert_rowid();
        self.conn
            .prepare_cached(INSERT_WAIT)
            .map_err(db_err)?
            .execute(params![id, wait.token, wait.redirect_url])
            .map_err(db_err)?;
        Ok(())
    }

    pub fn resume_wait(&mut self, r: &ResumeWait) -> Result<Resumed> {
        type Found = (
            i64,
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            i64,
        );
        let found: Option<Found> = self
            .conn
            .prepare_cached(FIND)
            .map_err(db_err)?
            .query_row([&r.token], |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get(6)?,
                    row.get(7)?,
                ))
            })
            .optional()
            .map_err(db_err)?;
        let Some((step, run, status, kind, payload, blob, redirect_url, due_at)) = found else {
            return Ok(Resumed::Unknown);
        };
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
        let payload = match (payload, blob) {
            (_, Some(name)) => {
                let p = self.blobs.get(&name)?;
                self.unreferenced_blobs.push(name);
                p
            }
            (Some(p), None) => p,
            (None, None) => "null".into(),
        };
        let merged = merge_resume(&payload, &r.data);
        self.conn
            .prepare_cached(RESUME_STEP)
            .map_err(db_err)?
            .execute(params![step, r.now.0, merged, merged.len() as i64])
            .map_err(db_err)?;
        self.conn
            .prepare_cached(RESUME_RUN)
            .map_err(db_err)?
            .execute([run])
            .map_err(db_err)?;
        Ok(Resumed::Resumed {
            run: run_id,
            redirect_url,
        })
    }

    pub(super) fn expire_waits(&mut self, now: Timestamp) -> Result<()> {
        self.conn
            .prepare_cached(EXPIRE)
            .map_err(db_err)?
            .execute([now.0])
            .map_err(db_err)?;
        Ok(())
    }
}
