//! Workflow variables on PostgreSQL (see `sqlite/env.rs`).

use deadpool_postgres::Transaction;
use flowstate_core::Timestamp;

use super::pg_err;
use crate::{EnvVar, Result};

const LIST: &str = "SELECT name, value, secret FROM workflow_env WHERE workflow = $1 ORDER BY name";
const SET: &str = "INSERT INTO workflow_env (workflow, name, value, secret, updated_at)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (workflow, name) DO UPDATE
     SET value = excluded.value, secret = excluded.secret, updated_at = excluded.updated_at";
const UNSET: &str = "DELETE FROM workflow_env WHERE workflow = $1 AND name = $2";

pub async fn list(tx: &Transaction<'_>, workflow: &str) -> Result<Vec<EnvVar>> {
    Ok(tx
        .query(LIST, &[&workflow])
        .await
        .map_err(pg_err)?
        .iter()
        .map(|r| EnvVar {
            name: r.get(0),
            value: r.get(1),
            secret: r.get(2),
        })
        .collect())
}

pub async fn set(tx: &Transaction<'_>, workflow: &str, var: &EnvVar, now: Timestamp) -> Result<()> {
    tx.execute(
        SET,
        &[&workflow, &var.name, &var.value, &var.secret, &now.0],
    )
    .await
    .map_err(pg_err)?;
    Ok(())
}

pub async fn unset(tx: &Transaction<'_>, workflow: &str, name: &str) -> Result<bool> {
    Ok(tx
        .execute(UNSET, &[&workflow, &name])
        .await
        .map_err(pg_err)?
        > 0)
}
