//! `flowstate run FILE`: deploy the file into a local store, start (or
//! resume) a run, drive it to its end, and print what happened.

use std::io::IsTerminal;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowstate_core::delay::format_duration;
use flowstate_core::limits::Limits;
use flowstate_core::status::RunStatus;
use flowstate_core::{Clock, VirtualClock, WallClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_js::Sandbox;
use flowstate_store::{SqliteOptions, SqliteStore, Store};

use crate::args::RunArgs;
use crate::render;

pub async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let source = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read the workflow file {}", args.file.display()))?;
    let name = workflow_name(&args.file)?;
    let data = read_data(args.data.as_deref())?;
    let headers: serde_json::Map<String, serde_json::Value> = args
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    let headers = serde_json::to_string(&headers)?;
    let limits = args.limits.apply(Limits::default())?;

    let store = SqliteStore::open(SqliteOptions::from_arg(&args.db))
        .with_context(|| format!("cannot open the database {}", args.db))?;
    let store = Arc::new(store);
    let sandbox = Sandbox::sized_to_cores_with(args.fetch.policy()?);
    let mut config = EngineConfig::new(limits, sandbox.workers());
    config.capture_final_state = true;
    config.fast_forward = args.fast_forward;
    let clock: Arc<dyn Clock> = if args.fast_forward {
        Arc::new(VirtualClock::starting_now())
    } else {
        Arc::new(WallClock)
    };
    let engine = Engine::new(store.clone(), Arc::new(sandbox), clock, config);

    let version = match engine.deploy(&name, &source).await {
        Ok(v) => v,
        Err(e) => bail!("{} cannot be loaded: {e}", args.file.display()),
    };
    let resumed = store
        .unfinished_runs(Some(name.clone()))
        .await?
        .first()
        .copied();
    let run = match resumed {
        Some(run) => {
            // On stderr, so that --json output stays one document.
            eprintln!(
                "resuming unfinished {run} of workflow '{name}' from {}",
                args.db
            );
            run
        }
        None => engine.start_run(&version, data, headers).await?,
    };

    let started = Instant::now();
    let progress = (!args.json && std::io::stderr().is_terminal()).then(|| {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let Ok(Some(rec)) = engine.store().run(run).await else {
                    continue;
                };
                let done = engine
                    .stats()
                    .steps_committed
                    .load(std::sync::atomic::Ordering::Relaxed);
                eprint!(
                    "\r{run}: {done} steps done, {} pending, {:.1}s   ",
                    rec.pending,
                    started.elapsed().as_secs_f64()
                );
            }
        })
    });
    let driven = engine.drive(Until::Finished(vec![run])).await;
    if let Some(p) = progress {
        p.abort();
        eprint!("\r\x1b[2K");
    }
    driven?;

    let record = store
        .run(run)
        .await?
        .context("the run disappeared from the store")?;
    let steps = store.steps(run).await?;
    let state = engine
        .finished(run)
        .and_then(|f| f.state)
        .unwrap_or_default();
    let wall = started.elapsed();
    let doc = render::json_document(&record, &steps, &state, wall);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        let clock = args.fast_forward.then(|| {
            let elapsed = record
                .finished_at
                .map(|f| f.since(record.created_at))
                .unwrap_or_default();
            format!(
                "{} of workflow time in {} (fast-forward)",
                format_duration(elapsed),
                format_duration(wall)
            )
        });
        let clock = clock.unwrap_or_else(|| format!("in {}", format_duration(wall)));
        print!("{}", render::timeline(&doc, Some(clock)));
    }
    Ok(if record.status == RunStatus::Completed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn workflow_name(file: &Path) -> anyhow::Result<String> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem.is_empty() {
        bail!(
            "cannot name a workflow after {}: give the file a name such as orders.js",
            file.display()
        );
    }
    Ok(stem.to_string())
}

/// The trigger's data: the file's JSON, or `{}` when none is given.
fn read_data(path: Option<&Path>) -> anyhow::Result<String> {
    let Some(path) = path else {
        return Ok("{}".into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        anyhow::anyhow!("cannot read the data file {}: {e}; --data takes a JSON file with the trigger's payload", path.display())
    })?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "the data file {} is not JSON: {e}; --data takes a JSON file with the trigger's payload",
            path.display()
        )
    })?;
    Ok(value.to_string())
}
