//! `api.csv` chunks on PostgreSQL (see `sqlite/csv.rs`): in the database,
//! so every node reads what any node imported.

use deadpool_postgres::Transaction;
use flowstate_core::Timestamp;
use flowstate_core::executor::{CSV_TTL, CsvOp};

use super::pg_err;
use crate::Result;

const DROP_CHUNKS: &str = "DELETE FROM csv_chunks WHERE key = $1";
const DROP_IMPORT: &str = "DELETE FROM csv_imports WHERE key = $1 AND workflow = $2";
const BEGIN: &str = "INSERT INTO csv_imports (key, workflow, meta, expires_at)
     VALUES ($1, $2, NULL, $3)
     ON CONFLICT (key) DO UPDATE SET workflow = excluded.workflow, meta = NULL,
        expires_at = excluded.expires_at";
const CHUNK: &str = "INSERT INTO csv_chunks (key, idx, rows) VALUES ($1, $2, $3)
     ON CONFLICT (key, idx) DO UPDATE SET rows = excluded.rows";
const FINISH: &str = "UPDATE csv_imports SET meta = $3 WHERE key = $1 AND workflow = $2";
const READ: &str = "SELECT c.rows FROM csv_chunks c JOIN csv_imports i ON i.key = c.key
     WHERE c.key = $1 AND c.idx = $2 AND i.workflow = $3 AND i.meta IS NOT NULL
       AND i.expires_at > $4";
const OWNED: &str = "SELECT 1 FROM csv_imports WHERE key = $1 AND workflow = $2";
pub const PRUNE_CHUNKS: &str =
    "DELETE FROM csv_chunks WHERE key IN (SELECT key FROM csv_imports WHERE expires_at < $1)";
pub const PRUNE_IMPORTS: &str = "DELETE FROM csv_imports WHERE expires_at < $1";

pub async fn apply(
    tx: &Transaction<'_>,
    workflow: &str,
    op: &CsvOp,
    now: Timestamp,
) -> Result<Option<String>> {
    match op {
        CsvOp::Begin { key } => {
            tx.execute(DROP_CHUNKS, &[key]).await.map_err(pg_err)?;
            let expires = now.plus(CSV_TTL).0;
            tx.execute(BEGIN, &[key, &workflow, &expires])
                .await
                .map_err(pg_err)?;
        }
        CsvOp::Chunk { key, index, rows } => {
            tx.execute(CHUNK, &[key, &(*index as i32), rows])
                .await
                .map_err(pg_err)?;
        }
        CsvOp::Finish { key, meta } => {
            tx.execute(FINISH, &[key, &workflow, meta])
                .await
                .map_err(pg_err)?;
        }
        CsvOp::Read { key, index } => {
            let row = tx
                .query_opt(READ, &[key, &(*index as i32), &workflow, &now.0])
                .await
                .map_err(pg_err)?;
            return Ok(row.map(|r| r.get(0)));
        }
        CsvOp::Delete { key } => {
            if tx
                .query_opt(OWNED, &[key, &workflow])
                .await
                .map_err(pg_err)?
                .is_some()
            {
                tx.execute(DROP_CHUNKS, &[key]).await.map_err(pg_err)?;
                tx.execute(DROP_IMPORT, &[key, &workflow])
                    .await
                    .map_err(pg_err)?;
            }
        }
    }
    Ok(None)
}
