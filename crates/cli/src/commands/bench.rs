//! `flowstate bench`: built-in scenarios run on the embedded default (a
//! SQLite file whose WAL is synced before anything is acknowledged, so what
//! is acknowledged survives a power loss) through the real sandbox, engine
//! and store. Each scenario
//! checks its own result, so a fast wrong answer cannot pass for a figure.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use flowstate_core::limits::Limits;
use flowstate_core::status::RunStatus;
use flowstate_core::{Clock, WallClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_js::Sandbox;
use flowstate_store::{SqliteOptions, SqliteStore};
use serde_json::json;

use crate::args::{BenchArgs, Scenario};

const FANOUT: &str = r#"
class Workflow {
  async start(data, headers, api) {
    for (let i = 0; i < data.branches; i++) {
      await api.scheduleNextStep({ delay: 0, action: 'branch', payload: { i } });
    }
  }
  async branch(data, headers, api) {
    await api.runStore.increment('processed');
    await api.runStore.push('results', data.i);
  }
}
"#;

const CHAIN: &str = r#"
class Workflow {
  async start(data, headers, api) {
    await api.scheduleNextStep({ delay: 0, action: 'next', payload: { left: data.steps - 1 } });
  }
  async next(data, headers, api) {
    if (data.left > 1) {
      await api.scheduleNextStep({ delay: 0, action: 'next', payload: { left: data.left - 1 } });
    }
  }
}
"#;

struct Outcome {
    name: &'static str,
    n: usize,
    steps: u64,
    elapsed: Duration,
    check: String,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile_dir()?;
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let db = args.db.clone().unwrap_or_else(|| dir.join("bench.db"));
    let sync = if args.relaxed_durability {
        "off (survives a crash, not a power loss)"
    } else {
        "WAL synced before every acknowledgement"
    };
    if !args.json {
        println!(
            "flowstate bench: SQLite file, durability: {sync}; {workers} JS workers, {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
    }
    let mut results = Vec::new();
    if matches!(args.scenario, Scenario::Fanout | Scenario::All) {
        let n = args.branches.unwrap_or(10_000);
        results.push(scenario(&args, &db, workers, "fanout", n).await?);
    }
    if matches!(args.scenario, Scenario::Chain | Scenario::All) {
        let n = args.steps.unwrap_or(1_000);
        results.push(scenario(&args, &db, workers, "chain", n).await?);
    }
    let webhooks = if matches!(args.scenario, Scenario::Webhooks | Scenario::All) {
        Some(super::bench_webhooks::run(&args, &dir.join("webhooks.db"), workers).await?)
    } else {
        None
    };
    if args.json {
        let mut doc: Vec<_> = results
            .iter()
            .map(|r| {
                json!({
                    "scenario": r.name, "n": r.n, "steps": r.steps,
                    "seconds": r.elapsed.as_secs_f64(),
                    "steps_per_second": r.steps as f64 / r.elapsed.as_secs_f64(),
                    "workers": workers, "durability": sync,
                })
            })
            .collect();
        doc.extend(webhooks);
        println!("{}", serde_json::to_string_pretty(&doc)?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

async fn scenario(
    args: &BenchArgs,
    db: &std::path::Path,
    workers: usize,
    name: &'static str,
    n: usize,
) -> anyhow::Result<Outcome> {
    ensure!(n >= 1, "{name} needs at least 1 step");
    let db = &db.with_file_name(format!(
        "{name}-{}",
        db.file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("bench.db")
    ));
    let store = fresh_store(args, db)?;
    let limits = Limits {
        min_delay: Duration::ZERO,
        max_fanout: (n as u32).max(Limits::default().max_fanout),
        max_steps_per_run: (n as u64 + 10).max(Limits::default().max_steps_per_run),
        ..Limits::default()
    };
    let mut config = EngineConfig::new(limits, workers);
    config.capture_final_state = true;
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let engine = Engine::new(
        store.clone(),
        Arc::new(Sandbox::new(workers)),
        clock,
        config,
    );
    let (source, data) = match name {
        "fanout" => (FANOUT, json!({ "branches": n })),
        _ => (CHAIN, json!({ "steps": n })),
    };
    let version = engine.deploy(name, source).await?;
    let started = Instant::now();
    let run = engine
        .start_run(&version, data.to_string(), "{}".into())
        .await?;
    engine.drive(Until::Finished(vec![run])).await?;
    let elapsed = started.elapsed();
    let finished = engine.finished(run).context("the run did not finish")?;
    ensure!(
        finished.status == RunStatus::Completed,
        "the {name} run ended {}",
        finished.status
    );
    let steps = engine
        .stats()
        .steps_committed
        .load(std::sync::atomic::Ordering::Relaxed);
    let check = if name == "fanout" {
        let state = finished.state.unwrap_or_default();
        let get = |k: &str| {
            state
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let results: Vec<u64> = serde_json::from_str(&get("results")).unwrap_or_default();
        let mut unique = results.clone();
        unique.sort_unstable();
        unique.dedup();
        ensure!(
            get("processed") == n.to_string(),
            "counter is {}, expected {n}",
            get("processed")
        );
        ensure!(
            results.len() == n && unique.len() == n,
            "pushed {} items ({} unique), expected {n}",
            results.len(),
            unique.len()
        );
        format!("counter {n}, {n} unique items: verified")
    } else {
        ensure!(steps == n as u64, "{steps} steps committed, expected {n}");
        format!("{n} steps in sequence: verified")
    };
    let outcome = Outcome {
        name,
        n,
        steps,
        elapsed,
        check,
    };
    if !args.json {
        println!(
            "{:<7} N={:<6} {:>6} steps in {:>7.3}s  {:>8.0} steps/s   {}",
            outcome.name,
            outcome.n,
            outcome.steps,
            outcome.elapsed.as_secs_f64(),
            outcome.steps as f64 / outcome.elapsed.as_secs_f64(),
            outcome.check
        );
    }
    drop(engine);
    Ok(outcome)
}

/// A new, empty benchmark database at `db` (durable unless relaxed).
pub(super) fn fresh_store(
    args: &BenchArgs,
    db: &std::path::Path,
) -> anyhow::Result<Arc<SqliteStore>> {
    let _ = std::fs::remove_file(db);
    let store = SqliteStore::open(SqliteOptions {
        path: Some(db.to_path_buf()),
        relaxed_durability: args.relaxed_durability,
        ..Default::default()
    })
    .with_context(|| format!("cannot open {}", db.display()))?;
    Ok(Arc::new(store))
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("flowstate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}
