//! Run state and dedupe on SQLite, journaled per (step, seq) so a retried
//! step replays what its earlier attempt already applied (DESIGN.md 1.3).
//!
//! Values are kept as SQLite numbers when they are JSON numbers (so
//! `increment` is one upsert) and as JSON text otherwise. Lists keep one row
//! per item, so a push costs the same on the 10,000th item as on the first.

use flowstate_core::RunId;
use flowstate_core::state::{StateError, StateOp, StateScope, json_type_name};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{OptionalExtension, params};

use super::writer::Writer;
use super::{db_err, sql};
use crate::{OpContext, OpError};

type OpResult<T> = std::result::Result<T, OpError>;

impl Writer {
    pub fn apply_state_op(&mut self, step_ctx: &OpContext, op: &StateOp) -> OpResult<String> {
        if self.leased_step(step_ctx.step, step_ctx.attempt)?.is_none() {
            return Err(StateError::Superseded.into());
        }
        // Workflow-scoped state lives under its scope's negative id; the
        // journal stays the step's, under its run.
        let owned;
        let ctx = match step_ctx.scope {
            StateScope::Run => step_ctx,
            StateScope::Workflow => {
                owned = OpContext {
                    run: RunId(self.workflow_owner(&step_ctx.workflow)?),
                    ..step_ctx.clone()
                };
                &owned
            }
        };
        if op.is_read() {
            return self.read_key(ctx.run.0, op.key());
        }
        if (ctx.attempt > 1 || ctx.replay || self.journaled.contains(&ctx.step.0))
            && let Some(result) = self.replay(ctx, op)?
        {
            return Ok(result);
        }
        let result = match op {
            StateOp::Get { .. } => unreachable!("reads return above"),
            StateOp::Set { key, value } => self.set(ctx, key, value)?,
            StateOp::Push { key, item } => self.push(ctx, key, item)?,
            StateOp::Increment { key, delta } => self.increment(ctx.run.0, key, *delta)?,
            StateOp::Delete { key } => self.delete_key(ctx.run.0, key)?,
            StateOp::Dedupe { key, ttl_secs } => self.dedupe(ctx, key, *ttl_secs)?,
        };
        self.conn
            .prepare_cached(sql::INSERT_JOURNAL)
            .map_err(db_err)?
            .execute(params![
                ctx.step.0,
                ctx.seq,
                step_ctx.run.0,
                op.name(),
                op.key(),
                result
            ])
            .map_err(db_err)?;
        self.journaled.insert(ctx.step.0);
        Ok(result)
    }

    /// The (negative) owner id of a workflow's shared state.
    fn workflow_owner(&mut self, workflow: &str) -> OpResult<i64> {
        if let Some(owner) = self.scopes.get(workflow) {
            return Ok(*owner);
        }
        let found: Option<i64> = self
            .conn
            .prepare_cached(sql::SELECT_WORKFLOW_SCOPE)
            .map_err(db_err)?
            .query_row([workflow], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        let id = match found {
            Some(id) => id,
            None => {
                self.conn
                    .prepare_cached(sql::INSERT_WORKFLOW_SCOPE)
                    .map_err(db_err)?
                    .execute([workflow])
                    .map_err(db_err)?;
                self.conn.last_insert_rowid()
            }
        };
        self.scopes.insert(workflow.to_string(), -id);
        Ok(-id)
    }

    /// The journaled result of this op if an earlier attempt applied the same
    /// op at the same position; on the first mismatch the rest of the old
    /// journal is dropped and everything from here on applies afresh.
    fn replay(&mut self, ctx: &OpContext, op: &StateOp) -> OpResult<Option<String>> {
        let entry: Option<(String, String, String)> = self
            .conn
            .prepare_cached(sql::SELECT_JOURNAL)
            .map_err(db_err)?
            .query_row(params![ctx.step.0, ctx.seq], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(db_err)?;
        match entry {
            Some((name, key, result)) if name == op.name() && key == op.key() => Ok(Some(result)),
            Some(_) => {
                self.conn
                    .prepare_cached(sql::TRUNCATE_JOURNAL)
                    .map_err(db_err)?
                    .execute(params![ctx.step.0, ctx.seq])
                    .map_err(db_err)?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    fn state_total(&mut self, run: i64) -> OpResult<i64> {
        if let Some(total) = self.state_bytes.get(&run) {
            return Ok(*total);
        }
        let total: i64 = self
            .conn
            .prepare_cached(sql::SUM_STATE_BYTES)
            .map_err(db_err)?
            .query_row([run], |r| r.get(0))
            .map_err(db_err)?;
        self.state_bytes.insert(run, total);
        Ok(total)
    }

    fn check_total(&mut self, ctx: &OpContext, key: &str, delta: i64) -> OpResult<()> {
        let total = self.state_total(ctx.run.0)?;
        let after = total + delta;
        if delta > 0 && after > ctx.max_run_state_bytes as i64 {
            return Err(StateError::RunStateFull {
                key: key.to_string(),
                size: after as usize,
                limit: ctx.max_run_state_bytes,
            }
            .into());
        }
        Ok(())
    }

    fn add_total(&mut self, run: i64, delta: i64) {
        if let Some(total) = self.state_bytes.get_mut(&run) {
            *total += delta;
        }
    }

    /// (is_list, stored value, bytes) of a key, if set.
    fn key_row(&mut self, run: i64, key: &str) -> OpResult<Option<(bool, SqlValue, i64)>> {
        Ok(self
            .conn
            .prepare_cached(sql::SELECT_STATE_KEY)
            .map_err(db_err)?
            .query_row(params![run, key], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()
            .map_err(db_err)?)
    }

    pub(super) fn read_key(&mut self, run: i64, key: &str) -> OpResult<String> {
        match self.key_row(run, key)? {
            None => Ok("null".into()),
            Some((true, _, _)) => self.read_list(run, key),
            Some((false, value, _)) => Ok(sql_to_json(ValueRef::from(&value))),
        }
    }

    fn read_list(&mut self, run: i64, key: &str) -> OpResult<String> {
        let mut stmt = self
            .conn
            .prepare_cached(sql::SELECT_LIST_ITEMS)
            .map_err(db_err)?;
        let mut rows = stmt.query(params![run, key]).map_err(db_err)?;
        let mut out = String::from("[");
        let mut first = true;
        while let Some(row) = rows.next().map_err(db_err)? {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(
                row.get_ref(0)
                    .map_err(db_err)?
                    .as_str()
                    .map_err(|e| db_err(e.into()))?,
            );
        }
        out.push(']');
        Ok(out)
    }

    fn set(&mut self, ctx: &OpContext, key: &str, value: &str) -> OpResult<String> {
        let run = ctx.run.0;
        let old = self.key_row(run, key)?;
        let old_bytes = old.as_ref().map_or(0, |o| o.2);
        let new_bytes = value.len() as i64;
        self.check_total(ctx, key, new_bytes - old_bytes)?;
        if matches!(old, Some((true, _, _))) {
            self.delete_items(run, key)?;
        }
        self.conn
            .prepare_cached(sql::UPSERT_VALUE)
            .map_err(db_err)?
            .execute(params![run, key, json_to_sql(value), new_bytes])
            .map_err(db_err)?;
        self.add_total(run, new_bytes - old_bytes);
        Ok("null".into())
    }

    fn push(&mut self, ctx: &OpContext, key: &str, item: &str) -> OpResult<String> {
        let run = ctx.run.0;
        let bytes = item.len() as i64;
        self.check_total(ctx, key, bytes)?;
        let listed: Option<bool> = self
            .conn
            .prepare_cached(sql::UPSERT_LIST_PUSH)
            .map_err(db_err)?
            .query_row(params![run, key, bytes], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if listed.is_none() {
            // The key holds a plain value: an array becomes a list, anything
            // else cannot be pushed to.
            self.value_to_list(run, key)?;
        }
        self.conn
            .prepare_cached(sql::INSERT_LIST_ITEM)
            .map_err(db_err)?
            .execute(params![run, key, item])
            .map_err(db_err)?;
        self.add_total(run, bytes);
        Ok("null".into())
    }

    fn value_to_list(&mut self, run: i64, key: &str) -> OpResult<()> {
        let Some((_, value, old_bytes)) = self.key_row(run, key)? else {
            return Err(db_err(rusqlite::Error::QueryReturnedNoRows).into());
        };
        let text = sql_to_json(ValueRef::from(&value));
        let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(&text)
        else {
            return Err(StateError::NotAList {
                key: key.to_string(),
                found: json_type_name(&text).into(),
            }
            .into());
        };
        let mut total = 0i64;
        for item in items {
            let item = item.to_string();
            total += item.len() as i64;
            self.conn
                .prepare_cached(sql::INSERT_LIST_ITEM)
                .map_err(db_err)?
                .execute(params![run, key, item])
                .map_err(db_err)?;
        }
        self.conn
            .prepare_cached(sql::MAKE_LIST)
            .map_err(db_err)?
            .execute(params![run, key, total])
            .map_err(db_err)?;
        self.add_total(run, total - old_bytes);
        Ok(())
    }

    fn increment(&mut self, run: i64, key: &str, delta: f64) -> OpResult<String> {
        if !delta.is_finite() {
            return Err(StateError::BadDelta {
                key: key.to_string(),
                delta: delta.to_string(),
            }
            .into());
        }
        let delta = if delta.fract() == 0.0 && delta.abs() < 9e15 {
            SqlValue::Integer(delta as i64)
        } else {
            SqlValue::Real(delta)
        };
        let value: Option<SqlValue> = self
            .conn
            .prepare_cached(sql::UPSERT_INCREMENT)
            .map_err(db_err)?
            .query_row(params![run, key, delta], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        match value {
            Some(v) => Ok(sql_to_json(ValueRef::from(&v))),
            None => {
                let found = self.read_key(run, key)?;
                let found = match self.key_row(run, key)? {
                    Some((true, _, _)) => "a pushed list".to_string(),
                    _ => json_type_name(&found).to_string(),
                };
                Err(StateError::NotANumber {
                    key: key.to_string(),
                    found,
                }
                .into())
            }
        }
    }

    fn delete_key(&mut self, run: i64, key: &str) -> OpResult<String> {
        if let Some((is_list, _, bytes)) = self.key_row(run, key)? {
            if is_list {
                self.delete_items(run, key)?;
            }
            self.conn
                .prepare_cached(sql::DELETE_STATE_KEY)
                .map_err(db_err)?
                .execute(params![run, key])
                .map_err(db_err)?;
            self.add_total(run, -bytes);
        }
        Ok("null".into())
    }

    fn delete_items(&mut self, run: i64, key: &str) -> OpResult<()> {
        self.conn
            .prepare_cached(sql::DELETE_LIST_ITEMS)
            .map_err(db_err)?
            .execute(params![run, key])
            .map_err(db_err)?;
        Ok(())
    }

    fn dedupe(&mut self, ctx: &OpContext, key: &str, ttl_secs: f64) -> OpResult<String> {
        let expires: Option<i64> = self
            .conn
            .prepare_cached(sql::SELECT_DEDUPE)
            .map_err(db_err)?
            .query_row(params![ctx.workflow, key], |r| r.get(0))
            .optional()
            .map_err(db_err)?;
        if expires.is_some_and(|at| at > ctx.now.0) {
            return Ok(r#"{"locked":true}"#.into());
        }
        let ttl_ms = (ttl_secs.max(0.0) * 1000.0).min(i64::MAX as f64 / 2.0) as i64;
        self.conn
            .prepare_cached(sql::UPSERT_DEDUPE)
            .map_err(db_err)?
            .execute(params![ctx.workflow, key, ctx.now.0.saturating_add(ttl_ms)])
            .map_err(db_err)?;
        Ok(r#"{"locked":false}"#.into())
    }

    pub fn run_state(
        &mut self,
        run: flowstate_core::RunId,
    ) -> crate::Result<Vec<(String, String)>> {
        let rows: Vec<(String, bool, SqlValue)> = {
            let mut stmt = self
                .conn
                .prepare_cached(sql::SELECT_RUN_STATE)
                .map_err(db_err)?;
            stmt.query_map([run.0], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .map_err(db_err)?
                .collect::<rusqlite::Result<_>>()
                .map_err(db_err)?
        };
        rows.into_iter()
            .map(|(key, is_list, value)| {
                let json = if is_list {
                    self.read_list(run.0, &key).map_err(|e| match e {
                        OpError::Store(s) => s,
                        OpError::State(s) => crate::StoreError::Database(s.to_string()),
                    })?
                } else {
                    sql_to_json(ValueRef::from(&value))
                };
                Ok((key, json))
            })
            .collect()
    }
}

/// JSON numbers become SQLite numbers; everything else stays JSON text.
fn json_to_sql(text: &str) -> SqlValue {
    let t = text.trim();
    if matches!(t.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        if let Ok(i) = t.parse::<i64>() {
            return SqlValue::Integer(i);
        }
        if let Ok(f) = t.parse::<f64>()
            && f.is_finite()
        {
            return SqlValue::Real(f);
        }
    }
    SqlValue::Text(text.to_string())
}

fn sql_to_json(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Null => "null".into(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(f) => {
            serde_json::Number::from_f64(f).map_or("null".into(), |n| n.to_string())
        }
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
    }
}
