//! `$checkpoint` rows on SQLite. The single writer makes a step's
//! compare-and-set a read then a write; nothing is written if any of the
//! step's checkpoints moved on since it read them.

use flowstate_core::Timestamp;
use flowstate_core::checkpoint::{Checkpoint, CheckpointWrite};
use rusqlite::{OptionalExtension, params};

use super::db_err;
use super::writer::Writer;
use crate::Result;

const SELECT: &str = "SELECT value, version FROM checkpoints WHERE workflow = ?1 AND scope = ?2";
const UPSERT: &str = "INSERT INTO checkpoints (workflow, scope, value, version, updated_at)
     VALUES (?1, ?2, ?3, 1, ?4)
     ON CONFLICT (workflow, scope) DO UPDATE
     SET value = excluded.value, version = checkpoints.version + 1, updated_at = excluded.updated_at
     RETURNING version";
const RUN_WORKFLOW: &str = "SELECT workflow FROM runs WHERE id = ?1";

impl Writer {
    pub fn checkpoint(&mut self, workflow: &str, scope: &str) -> Result<Checkpoint> {
        let found = self
            .conn
            .prepare_cached(SELECT)
            .map_err(db_err)?
            .query_row(params![workflow, scope], |r| {
                Ok(Checkpoint {
                    value: r.get(0)?,
                    version: r.get(1)?,
                })
            })
            .optional()
            .map_err(db_err)?;
        Ok(found.unwrap_or_default())
    }

    pub fn put_checkpoint(
        &mut self,
        workflow: &str,
        scope: &str,
        value: Option<&str>,
        now: Timestamp,
    ) -> Result<Checkpoint> {
        let version = self
            .conn
            .prepare_cached(UPSERT)
            .map_err(db_err)?
            .query_row(params![workflow, scope, value, now.0], |r| r.get(0))
            .map_err(db_err)?;
        Ok(Checkpoint {
            value: value.map(str::to_string),
            version,
        })
    }

    /// Writes a committing step's checkpoints, or, if one of them changed
    /// since the step read it, writes none and names it.
    pub(super) fn write_checkpoints(
        &mut self,
        run: i64,
        writes: &[CheckpointWrite],
        now: Timestamp,
    ) -> Result<Option<String>> {
        if writes.is_empty() {
            return Ok(None);
        }
        let workflow: String = self
            .conn
            .prepare_cached(RUN_WORKFLOW)
            .map_err(db_err)?
            .query_row([run], |r| r.get(0))
            .map_err(db_err)?;
        for w in writes {
            if let Some(read) = w.read_version
                && self.checkpoint(&workflow, &w.scope)?.version != read
            {
                return Ok(Some(w.scope.clone()));
            }
        }
        for w in writes {
            self.put_checkpoint(&workflow, &w.scope, w.value.as_deref(), now)?;
        }
        Ok(None)
    }
}
