//! `$checkpoint` rows on PostgreSQL. A step's compare-and-set is one
//! conditional statement per checkpoint, so two nodes committing at once
//! cannot both win; the commit's transaction is rolled back on a conflict.

use deadpool_postgres::Transaction;
use flowstate_core::Timestamp;
use flowstate_core::checkpoint::{Checkpoint, CheckpointWrite};

use super::pg_err;
use crate::Result;

const SELECT: &str = "SELECT value, version FROM checkpoints WHERE workflow = $1 AND scope = $2";
/// Any version: the CLI and API, and steps that assigned without reading.
const UPSERT: &str = "INSERT INTO checkpoints (workflow, scope, value, version, updated_at)
     VALUES ($1, $2, $3, 1, $4)
     ON CONFLICT (workflow, scope) DO UPDATE
     SET value = excluded.value, version = checkpoints.version + 1, updated_at = excluded.updated_at
     RETURNING version";
/// A first write: only if nobody wrote it meanwhile.
const INSERT_FIRST: &str = "INSERT INTO checkpoints (workflow, scope, value, version, updated_at)
     VALUES ($1, $2, $3, 1, $4) ON CONFLICT (workflow, scope) DO NOTHING";
/// A later write: only over the version read.
const UPDATE_FROM: &str =
    "UPDATE checkpoints SET value = $3, version = version + 1, updated_at = $4
     WHERE workflow = $1 AND scope = $2 AND version = $5";
const RUN_WORKFLOW: &str = "SELECT workflow FROM runs WHERE id = $1";

pub async fn read(tx: &Transaction<'_>, workflow: &str, scope: &str) -> Result<Checkpoint> {
    let row = tx
        .query_opt(SELECT, &[&workflow, &scope])
        .await
        .map_err(pg_err)?;
    Ok(row
        .map(|r| Checkpoint {
            value: r.get(0),
            version: r.get(1),
        })
        .unwrap_or_default())
}

pub async fn put(
    tx: &Transaction<'_>,
    workflow: &str,
    scope: &str,
    value: Option<&str>,
    now: Timestamp,
) -> Result<Checkpoint> {
    let row = tx
        .query_one(UPSERT, &[&workflow, &scope, &value, &now.0])
        .await
        .map_err(pg_err)?;
    Ok(Checkpoint {
        value: value.map(str::to_string),
        version: row.get(0),
    })
}

/// Writes a committing step's checkpoints; on a conflict names the
/// checkpoint, and the caller must roll back what was written before it.
pub async fn write_all(
    tx: &Transaction<'_>,
    run: i64,
    writes: &[CheckpointWrite],
    now: Timestamp,
) -> Result<Option<String>> {
    if writes.is_empty() {
        return Ok(None);
    }
    let workflow: String = tx
        .query_one(RUN_WORKFLOW, &[&run])
        .await
        .map_err(pg_err)?
        .get(0);
    for w in writes {
        let value = w.value.as_deref();
        let written = match w.read_version {
            None => {
                put(tx, &workflow, &w.scope, value, now).await?;
                1
            }
            Some(0) => tx
                .execute(INSERT_FIRST, &[&workflow, &w.scope, &value, &now.0])
                .await
                .map_err(pg_err)?,
            Some(read) => tx
                .execute(UPDATE_FROM, &[&workflow, &w.scope, &value, &now.0, &read])
                .await
                .map_err(pg_err)?,
        };
        if written == 0 {
            return Ok(Some(w.scope.clone()));
        }
    }
    Ok(None)
}
