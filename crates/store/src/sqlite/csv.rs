//! `api.csv` chunks on SQLite: one row per chunk, under an import that
//! belongs to one workflow and expires after `CSV_TTL`. Chunks live in the
//! database rather than the blob directory so that an import and its rows
//! share the database's transactions and retention.

use flowstate_core::Timestamp;
use flowstate_core::executor::{CSV_TTL, CsvOp};
use rusqlite::{OptionalExtension, params};

use super::db_err;
use super::writer::Writer;
use crate::Result;

const DROP_CHUNKS: &str = "DELETE FROM csv_chunks WHERE key = ?1";
const DROP_IMPORT: &str = "DELETE FROM csv_imports WHERE key = ?1 AND workflow = ?2";
const BEGIN: &str = "INSERT OR REPLACE INTO csv_imports (key, workflow, meta, expires_at)
     VALUES (?1, ?2, NULL, ?3)";
const CHUNK: &str = "INSERT OR REPLACE INTO csv_chunks (key, idx, rows) VALUES (?1, ?2, ?3)";
const FINISH: &str = "UPDATE csv_imports SET meta = ?3 WHERE key = ?1 AND workflow = ?2";
const READ: &str = "SELECT c.rows FROM csv_chunks c JOIN csv_imports i ON i.key = c.key
     WHERE c.key = ?1 AND c.idx = ?2 AND i.workflow = ?3 AND i.meta IS NOT NULL
       AND i.expires_at > ?4";
const OWNED: &str = "SELECT 1 FROM csv_imports WHERE key = ?1 AND workflow = ?2";
pub(super) const PRUNE_CHUNKS: &str =
    "DELETE FROM csv_chunks WHERE key IN (SELECT key FROM csv_imports WHERE expires_at < ?1)";
pub(super) const PRUNE_IMPORTS: &str = "DELETE FROM csv_imports WHERE expires_at < ?1";

impl Writer {
    pub fn csv_op(&mut self, workflow: &str, op: &CsvOp, now: Timestamp) -> Result<Option<String>> {
        let exec = |w: &mut Writer, q: &str, p: &[&dyn rusqlite::ToSql]| -> Result<usize> {
            w.conn
                .prepare_cached(q)
                .map_err(db_err)?
                .execute(p)
                .map_err(db_err)
        };
        match op {
            CsvOp::Begin { key } => {
                exec(self, DROP_CHUNKS, &[key])?;
                let expires = now.plus(CSV_TTL).0;
                exec(self, BEGIN, &[key, &workflow, &expires])?;
            }
            CsvOp::Chunk { key, index, rows } => {
                exec(self, CHUNK, &[key, index, rows])?;
            }
            CsvOp::Finish { key, meta } => {
                exec(self, FINISH, &[key, &workflow, meta])?;
            }
            CsvOp::Read { key, index } => {
                return self
                    .conn
                    .prepare_cached(READ)
                    .map_err(db_err)?
                    .query_row(params![key, index, workflow, now.0], |r| r.get(0))
                    .optional()
                    .map_err(db_err);
            }
            CsvOp::Delete { key } => {
                let owned = self
                    .conn
                    .prepare_cached(OWNED)
                    .map_err(db_err)?
                    .query_row(params![key, workflow], |_| Ok(()))
                    .optional()
                    .map_err(db_err)?
                    .is_some();
                if owned {
                    exec(self, DROP_CHUNKS, &[key])?;
                    exec(self, DROP_IMPORT, &[key, &workflow])?;
                }
            }
        }
        Ok(None)
    }
}
