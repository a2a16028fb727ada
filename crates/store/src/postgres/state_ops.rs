//! Run state and dedupe on PostgreSQL, journaled per (step, seq) like the
//! SQLite store (DESIGN.md 1.3). Numbers are kept as exact NUMERIC so that
//! `increment` is one upsert; other values as JSON text; lists as one row
//! per item. Ops that change a run's size lock its row, which keeps the
//! run's total exact across nodes.

use deadpool_postgres::Transaction;
use flowstate_core::RunId;
use flowstate_core::state::{StateError, StateOp, StateScope, json_type_name};

use super::ops::lock_leased;
use super::{pg_err, sql};
use crate::{OpContext, OpError};

type OpResult<T> = std::result::Result<T, OpError>;

pub async fn apply(tx: &Transaction<'_>, step_ctx: &OpContext, op: &StateOp) -> OpResult<String> {
    if lock_leased(tx, step_ctx.step, step_ctx.attempt)
        .await?
        .is_none()
    {
        return Err(StateError::Superseded.into());
    }
    // Workflow-scoped state lives under its scope's negative id; the
    // journal stays the step's, under its run.
    let owned;
    let ctx = match step_ctx.scope {
        StateScope::Run => step_ctx,
        StateScope::Workflow => {
            owned = OpContext {
                run: RunId(-workflow_scope(tx, &step_ctx.workflow).await?),
                ..step_ctx.clone()
            };
            &owned
        }
    };
    let run = ctx.run.0;
    if op.is_read() {
        return Ok(read_key(tx, run, op.key()).await?);
    }
    if (ctx.attempt > 1 || ctx.replay)
        && let Some(result) = replay(tx, ctx, op).await?
    {
        return Ok(result);
    }
    let result = match op {
        StateOp::Get { .. } => unreachable!("reads return above"),
        StateOp::Set { key, value } => set(tx, ctx, key, value).await?,
        StateOp::Push { key, item } => push(tx, ctx, key, item).await?,
        StateOp::Increment { key, delta } => increment(tx, run, key, *delta).await?,
        StateOp::Delete { key } => delete(tx, run, key).await?,
        StateOp::Dedupe { key, ttl_secs } => dedupe(tx, ctx, key, *ttl_secs).await?,
    };
    tx.execute(
        sql::INSERT_JOURNAL,
        &[
            &ctx.step.0,
            &(ctx.seq as i32),
            &step_ctx.run.0,
            &op.name(),
            &op.key(),
            &result,
        ],
    )
    .await
    .map_err(pg_err)?;
    Ok(result)
}

/// The id of a workflow's shared-state scope, created on first use. A read
/// first: most ops find it, and need no write or lock for it.
async fn workflow_scope(tx: &Transaction<'_>, workflow: &str) -> crate::Result<i64> {
    if let Some(row) = tx
        .query_opt(sql::SELECT_WORKFLOW_SCOPE, &[&workflow])
        .await
        .map_err(pg_err)?
    {
        return Ok(row.get(0));
    }
    tx.execute(sql::CREATE_WORKFLOW_SCOPE, &[&workflow])
        .await
        .map_err(pg_err)?;
    let row = tx
        .query_one(sql::SELECT_WORKFLOW_SCOPE, &[&workflow])
        .await
        .map_err(pg_err)?;
    Ok(row.get(0))
}

async fn replay(tx: &Transaction<'_>, ctx: &OpContext, op: &StateOp) -> OpResult<Option<String>> {
    let seq = ctx.seq as i32;
    let entry = tx
        .query_opt(sql::SELECT_JOURNAL, &[&ctx.step.0, &seq])
        .await
        .map_err(pg_err)?;
    match entry {
        Some(r) if r.get::<_, String>(0) == op.name() && r.get::<_, String>(1) == op.key() => {
            Ok(Some(r.get(2)))
        }
        Some(_) => {
            tx.execute(sql::TRUNCATE_JOURNAL, &[&ctx.step.0, &seq])
                .await
                .map_err(pg_err)?;
            Ok(None)
        }
        None => Ok(None),
    }
}

/// (is_list, JSON text of a plain value, bytes), locked, if the key is set.
async fn key_row(
    tx: &Transaction<'_>,
    run: i64,
    key: &str,
) -> crate::Result<Option<(bool, String, i64)>> {
    let row = tx
        .query_opt(sql::SELECT_STATE_KEY, &[&run, &key])
        .await
        .map_err(pg_err)?;
    Ok(row.map(|r| {
        let (txt, num): (Option<String>, Option<String>) = (r.get(1), r.get(2));
        (
            r.get(0),
            num.or(txt).unwrap_or_else(|| "null".into()),
            r.get(3),
        )
    }))
}

async fn read_list(tx: &Transaction<'_>, run: i64, key: &str) -> crate::Result<String> {
    let rows = tx
        .query(sql::SELECT_LIST_ITEMS, &[&run, &key])
        .await
        .map_err(pg_err)?;
    let items: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    Ok(format!("[{}]", items.join(",")))
}

async fn read_key(tx: &Transaction<'_>, run: i64, key: &str) -> crate::Result<String> {
    match key_row(tx, run, key).await? {
        None => Ok("null".into()),
        Some((true, _, _)) => read_list(tx, run, key).await,
        Some((false, value, _)) => Ok(value),
    }
}

pub async fn run_state(tx: &Transaction<'_>, run: i64) -> crate::Result<Vec<(String, String)>> {
    let rows = tx
        .query(sql::SELECT_RUN_STATE, &[&run])
        .await
        .map_err(pg_err)?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let key: String = r.get(0);
        let value = if r.get::<_, bool>(1) {
            read_list(tx, run, &key).await?
        } else {
            let (txt, num): (Option<String>, Option<String>) = (r.get(2), r.get(3));
            num.or(txt).unwrap_or_else(|| "null".into())
        };
        out.push((key, value));
    }
    Ok(out)
}

/// Locks the run's size and checks that growing it by `delta` stays within the limit.
/// Where an owner's size is kept: a run's on its row, a workflow scope's
/// (negative owner) on its own row.
fn size_row(owner: i64) -> (&'static str, &'static str, i64) {
    if owner < 0 {
        (sql::LOCK_SCOPE_BYTES, sql::ADD_SCOPE_BYTES, -owner)
    } else {
        (sql::LOCK_RUN_BYTES, sql::ADD_RUN_BYTES, owner)
    }
}

async fn reserve(tx: &Transaction<'_>, ctx: &OpContext, key: &str, delta: i64) -> OpResult<()> {
    let (lock, add, row) = size_row(ctx.run.0);
    let total: i64 = tx.query_one(lock, &[&row]).await.map_err(pg_err)?.get(0);
    let after = total + delta;
    if delta > 0 && after > ctx.max_run_state_bytes as i64 {
        return Err(StateError::RunStateFull {
            key: key.into(),
            size: after as usize,
            limit: ctx.max_run_state_bytes,
        }
        .into());
    }
    if delta != 0 {
        tx.execute(add, &[&row, &delta]).await.map_err(pg_err)?;
    }
    Ok(())
}

/// A JSON number's text for NUMERIC, or `None` for any other value.
fn as_number(text: &str) -> Option<String> {
    let t = text.trim();
    let looks_numeric = matches!(t.as_bytes().first(), Some(b'-' | b'0'..=b'9'));
    (looks_numeric && t.parse::<f64>().is_ok_and(f64::is_finite)).then(|| t.to_string())
}

async fn set(tx: &Transaction<'_>, ctx: &OpContext, key: &str, value: &str) -> OpResult<String> {
    let run = ctx.run.0;
    let old = key_row(tx, run, key).await?;
    let new_bytes = value.len() as i64;
    reserve(tx, ctx, key, new_bytes - old.as_ref().map_or(0, |o| o.2)).await?;
    if matches!(old, Some((true, _, _))) {
        tx.execute(sql::DELETE_LIST_ITEMS, &[&run, &key])
            .await
            .map_err(pg_err)?;
    }
    let num = as_number(value);
    let txt = if num.is_some() { None } else { Some(value) };
    tx.execute(sql::UPSERT_VALUE, &[&run, &key, &txt, &num, &new_bytes])
        .await
        .map_err(pg_err)?;
    Ok("null".into())
}

async fn push(tx: &Transaction<'_>, ctx: &OpContext, key: &str, item: &str) -> OpResult<String> {
    let run = ctx.run.0;
    let bytes = item.len() as i64;
    reserve(tx, ctx, key, bytes).await?;
    let list_bytes = match key_row(tx, run, key).await? {
        None => bytes,
        Some((true, _, old)) => old + bytes,
        Some((false, value, old)) => {
            // A plain array value becomes a list; anything else cannot be pushed to.
            let Ok(serde_json::Value::Array(items)) =
                serde_json::from_str::<serde_json::Value>(&value)
            else {
                return Err(StateError::NotAList {
                    key: key.into(),
                    found: json_type_name(&value).into(),
                }
                .into());
            };
            for it in items {
                tx.execute(sql::INSERT_LIST_ITEM, &[&run, &key, &it.to_string()])
                    .await
                    .map_err(pg_err)?;
            }
            old + bytes
        }
    };
    tx.execute(sql::UPSERT_LIST, &[&run, &key, &list_bytes])
        .await
        .map_err(pg_err)?;
    tx.execute(sql::INSERT_LIST_ITEM, &[&run, &key, &item])
        .await
        .map_err(pg_err)?;
    Ok("null".into())
}

async fn increment(tx: &Transaction<'_>, run: i64, key: &str, delta: f64) -> OpResult<String> {
    if !delta.is_finite() {
        return Err(StateError::BadDelta {
            key: key.into(),
            delta: delta.to_string(),
        }
        .into());
    }
    let text = if delta.fract() == 0.0 && delta.abs() < 9e15 {
        (delta as i64).to_string()
    } else {
        delta.to_string()
    };
    let row = tx
        .query_opt(sql::UPSERT_INCREMENT, &[&run, &key, &text])
        .await
        .map_err(pg_err)?;
    match row {
        Some(r) => Ok(normalize_numeric(r.get(0))),
        None => {
            let found = match key_row(tx, run, key).await? {
                Some((true, _, _)) => "a pushed list".to_string(),
                Some((false, value, _)) => json_type_name(&value).to_string(),
                None => "nothing".to_string(),
            };
            Err(StateError::NotANumber {
                key: key.into(),
                found,
            }
            .into())
        }
    }
}

/// NUMERIC text without a trailing `.0…` scale (`3.0` → `3`).
fn normalize_numeric(text: String) -> String {
    match text.split_once('.') {
        Some((int, frac)) if frac.bytes().all(|b| b == b'0') => int.to_string(),
        Some((int, frac)) => format!("{int}.{}", frac.trim_end_matches('0')),
        None => text,
    }
}

async fn delete(tx: &Transaction<'_>, run: i64, key: &str) -> OpResult<String> {
    if let Some((is_list, _, bytes)) = key_row(tx, run, key).await? {
        if is_list {
            tx.execute(sql::DELETE_LIST_ITEMS, &[&run, &key])
                .await
                .map_err(pg_err)?;
        }
        tx.execute(sql::DELETE_STATE_KEY, &[&run, &key])
            .await
            .map_err(pg_err)?;
        let (_, add, row) = size_row(run);
        tx.execute(add, &[&row, &(-bytes)]).await.map_err(pg_err)?;
    }
    Ok("null".into())
}

async fn dedupe(
    tx: &Transaction<'_>,
    ctx: &OpContext,
    key: &str,
    ttl_secs: f64,
) -> OpResult<String> {
    let row = tx
        .query_opt(sql::SELECT_DEDUPE, &[&ctx.workflow, &key])
        .await
        .map_err(pg_err)?;
    if row.is_some_and(|r| r.get::<_, i64>(0) > ctx.now.0) {
        return Ok(r#"{"locked":true}"#.into());
    }
    let ttl_ms = (ttl_secs.max(0.0) * 1000.0).min(i64::MAX as f64 / 2.0) as i64;
    tx.execute(
        sql::UPSERT_DEDUPE,
        &[&ctx.workflow, &key, &ctx.now.0.saturating_add(ttl_ms)],
    )
    .await
    .map_err(pg_err)?;
    Ok(r#"{"locked":false}"#.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_text_reads_like_json() {
        assert_eq!(normalize_numeric("3.000".into()), "3");
        assert_eq!(normalize_numeric("-2.50".into()), "-2.5");
        assert_eq!(normalize_numeric("1000".into()), "1000");
        assert_eq!(as_number("\"5\""), None);
        assert_eq!(as_number("-1.5e3"), Some("-1.5e3".into()));
    }
}
