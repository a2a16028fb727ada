//! Workflow variables on SQLite. Secrets arrive sealed; the store never
//! sees a secret in the clear.

use flowstate_core::Timestamp;
use rusqlite::params;

use super::db_err;
use super::writer::Writer;
use crate::{EnvVar, Result};

const LIST: &str = "SELECT name, value, secret FROM workflow_env WHERE workflow = ?1 ORDER BY name";
const SET: &str = "INSERT OR REPLACE INTO workflow_env (workflow, name, value, secret, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5)";
const UNSET: &str = "DELETE FROM workflow_env WHERE workflow = ?1 AND name = ?2";

impl Writer {
    pub fn env_vars(&mut self, workflow: &str) -> Result<Vec<EnvVar>> {
        self.conn
            .prepare_cached(LIST)
            .map_err(db_err)?
            .query_map([workflow], |r| {
                Ok(EnvVar {
                    name: r.get(0)?,
                    value: r.get(1)?,
                    secret: r.get(2)?,
                })
            })
            .map_err(db_err)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db_err)
    }

    pub fn set_env(&mut self, workflow: &str, var: &EnvVar, now: Timestamp) -> Result<()> {
        self.conn
            .prepare_cached(SET)
            .map_err(db_err)?
            .execute(params![workflow, var.name, var.value, var.secret, now.0])
            .map_err(db_err)?;
        Ok(())
    }

    pub fn unset_env(&mut self, workflow: &str, name: &str) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached(UNSET)
            .map_err(db_err)?
            .execute(params![workflow, name])
            .map_err(db_err)?;
        Ok(n > 0)
    }
}
