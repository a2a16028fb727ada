//! `flowstate serve`: the engine and the HTTP server in one process, on a
//! SQLite file. SIGTERM or Ctrl-C stops taking requests, lets running steps
//! finish (up to the grace period), and commits; whatever is left is
//! retried on the next start.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use flowstate_core::limits::Limits;
use flowstate_core::{Clock, WallClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_js::{DenyRule, Sandbox};
use flowstate_server::{ServerConfig, WorkflowSettings, new_token, router};
use flowstate_store::{PostgresStore, SqliteOptions, SqliteStore, Store};
use tokio::sync::watch;

use crate::args::ServeArgs;

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    match args.database_url.clone() {
        Some(url) => {
            let store = PostgresStore::connect(&url)
                .await
                .context("cannot use --database-url")?;
            serve(Arc::new(store), args, "PostgreSQL".into()).await
        }
        None => {
            let store = SqliteStore::open(SqliteOptions::from_arg(&args.db))
                .with_context(|| format!("cannot open the database {}", args.db))?;
            let what = format!("database {}", args.db);
            serve(Arc::new(store), args, what).await
        }
    }
}

async fn serve<S: Store>(
    store: Arc<S>,
    args: ServeArgs,
    database: String,
) -> anyhow::Result<ExitCode> {
    let limits = args.limits.apply(Limits::default())?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let mut policy = args.fetch.policy()?;
    // Workflow code may call this server's webhooks, not its admin API.
    policy.deny.push(DenyRule::Endpoint {
        addr,
        path: "/api".into(),
    });
    let sandbox = Sandbox::sized_to_cores_with(policy);
    let mut config = EngineConfig::new(limits, sandbox.workers());
    let public_url = match &args.public_url {
        Some(u) => {
            let parsed = url::Url::parse(u)
                .ok()
                .filter(|p| matches!(p.scheme(), "http" | "https"));
            if parsed.is_none() {
                anyhow::bail!(
                    "--public-url '{u}' is not an http(s) URL; write it like https://flows.example.com"
                );
            }
            u.trim_end_matches('/').to_string()
        }
        None => format!("http://{addr}"),
    };
    config.public_url = Arc::from(public_url.as_str());
    let key_text = match (&args.secret_key, &args.secret_key_file) {
        (Some(k), _) => Some(k.clone()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the secret key file {}", path.display()))?,
        ),
        (None, None) => None,
    };
    config.secret_key = key_text
        .map(|k| flowstate_core::secrets::SecretKey::parse(&k))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--secret-key: {e}"))?;
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let engine = Engine::new(store.clone(), Arc::new(sandbox), clock, config);
    // Stamped before the first deploy, so that `--dev` sees any edit made
    // from here on, even before its watcher task first runs.
    let stamps = args.dir.as_deref().map(dir_stamps).unwrap_or_default();
    if let Some(dir) = &args.dir {
        deploy_dir(&engine, dir, args.min_schedule_interval).await?;
    }

    let app = router(
        engine.clone(),
        ServerConfig {
            api_token: args.api_token.clone(),
            max_body_bytes: args.max_body * 1024,
            min_schedule_interval: args.min_schedule_interval,
        },
    );
    eprintln!("flowstate listening on http://{addr} ({database})");

    let (stop_tx, stop_rx) = watch::channel(false);
    let driver = {
        let engine = engine.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { engine.drive(Until::Shutdown(stop)).await })
    };
    let mut http_stop = stop_rx.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = http_stop.wait_for(|s| *s).await;
            })
            .await
    });

    let pruner = tokio::spawn(prune_history(
        store.clone(),
        engine.clock().clone(),
        args.retention,
    ));
    let schedules = tokio::spawn(fire_schedules(engine.clone()));
    let watcher = match (&args.dir, args.dev) {
        (Some(dir), true) => Some(tokio::spawn(watch_dir(
            engine.clone(),
            dir.clone(),
            args.min_schedule_interval,
            stamps,
        ))),
        _ => None,
    };
    tracing::info!(%addr, %database, "serving");

    shutdown_signal().await;
    pruner.abort();
    schedules.abort();
    if let Some(w) = watcher {
        w.abort();
    }
    eprintln!(
        "flowstate: shutting down; letting running steps finish (up to {:?})",
        args.shutdown_grace
    );
    let _ = stop_tx.send(true);
    let finished = tokio::time::timeout(args.shutdown_grace, async {
        let _ = server.await;
        driver.await
    })
    .await;
    match finished {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => eprintln!("flowstate: the engine stopped with an error: {e}"),
        Ok(Err(e)) => eprintln!("flowstate: the engine task failed: {e}"),
        Err(_) => match engine.release_held().await {
            Ok(n) => eprintln!(
                "flowstate: released {n} steps still running after the grace period; any node retries them now"
            ),
            Err(e) => eprintln!(
                "flowstate: could not release running steps ({e}); they are retried when their leases run out"
            ),
        },
    }
    store.flush().await?;
    Ok(ExitCode::SUCCESS)
}

/// How often finished runs past the retention are pruned.
const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Deletes the history of runs that finished more than `retention` ago, at
/// start and then hourly. Run state itself is deleted when a run ends.
async fn prune_history<S: Store>(
    store: Arc<S>,
    clock: Arc<dyn Clock>,
    retention: std::time::Duration,
) {
    loop {
        let cutoff = flowstate_core::Timestamp(clock.now().0 - retention.as_millis() as i64);
        match store.prune_history(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                runs = n,
                "pruned the history of finished runs past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "could not prune run history; will try again"),
        }
        tokio::time::sleep(PRUNE_EVERY).await;
    }
}

/// Longest the schedule loop sleeps: deploys made meanwhile are seen this soon.
const SCHEDULE_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Fires schedule triggers as they fall due.
async fn fire_schedules<S: Store>(engine: Engine<S, Sandbox>) {
    loop {
        if let Err(e) = flowstate_server::schedule_trigger::fire_due(&engine).await {
            tracing::warn!(error = %e, "could not fire schedules; will try again");
        }
        let now = engine.clock().now();
        let next = engine.store().next_schedule_at().await.ok().flatten();
        let wait = next.map_or(SCHEDULE_POLL, |t| t.since(now).min(SCHEDULE_POLL));
        tokio::time::sleep(wait.max(std::time::Duration::from_millis(10))).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM can be handled");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// The workflow files of `dir`, sorted.
fn workflow_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the workflow directory {}", dir.display()))?;
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "js"))
        .collect();
    files.sort();
    Ok(files)
}

fn settings_path(js: &Path) -> PathBuf {
    let name = js.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    js.with_file_name(format!("{name}.settings.json"))
}

/// Deploys every `*.js` of `dir`; one that does not load stops the start.
async fn deploy_dir<S: Store>(
    engine: &Engine<S, Sandbox>,
    dir: &Path,
    min_schedule_interval: Duration,
) -> anyhow::Result<()> {
    for path in workflow_files(dir)? {
        deploy_file(engine, &path, min_schedule_interval).await?;
    }
    Ok(())
}

/// Deploys one workflow file, with the settings beside it, as a new version.
async fn deploy_file<S: Store>(
    engine: &Engine<S, Sandbox>,
    path: &Path,
    min_schedule_interval: Duration,
) -> anyhow::Result<()> {
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default()
        .to_string();
    let source =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let settings_path = settings_path(path);
    let settings: WorkflowSettings = match std::fs::read_to_string(&settings_path) {
        Ok(text) => serde_json::from_str(&text).with_context(|| {
            format!("{} is not valid workflow settings", settings_path.display())
        })?,
        Err(_) => WorkflowSettings::default(),
    };
    let version = match engine.deploy(&name, &source).await {
        Ok(v) => v,
        Err(e) => bail!("{} cannot be deployed: {e}", path.display()),
    };
    let vars = settings
        .variables(engine.secret_key())
        .map_err(|m| anyhow::anyhow!("{}: invalid settings: {m}", settings_path.display()))?;
    let publish = settings
        .publish(
            &name,
            version.id,
            new_token()?,
            engine.clock().now(),
            min_schedule_interval,
        )
        .map_err(|m| anyhow::anyhow!("{}: invalid settings: {m}", settings_path.display()))?;
    engine
        .store()
        .publish(flowstate_store::Publish {
            env: vars,
            ..publish
        })
        .await?;
    engine.env_changed(&name).await;
    eprintln!("deployed {name} ({}) from {}", version.id, path.display());
    Ok(())
}

/// Modification times of each workflow file and its settings file.
type Stamps = HashMap<PathBuf, (Option<SystemTime>, Option<SystemTime>)>;

fn file_stamps(js: &Path) -> (Option<SystemTime>, Option<SystemTime>) {
    let stamp = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (stamp(js), stamp(&settings_path(js)))
}

fn dir_stamps(dir: &Path) -> Stamps {
    workflow_files(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            let stamps = file_stamps(&f);
            (f, stamps)
        })
        .collect()
}

/// How often `--dev` looks at the workflow directory.
const DEV_POLL: Duration = Duration::from_millis(500);

/// `serve --dev`: redeploys a workflow when its file or settings change. A
/// change that does not load is reported and the live version stays.
async fn watch_dir<S: Store>(
    engine: Engine<S, Sandbox>,
    dir: PathBuf,
    min_schedule_interval: Duration,
    mut seen: Stamps,
) {
    loop {
        tokio::time::sleep(DEV_POLL).await;
        let Ok(files) = workflow_files(&dir) else {
            continue;
        };
        for f in files {
            let now = file_stamps(&f);
            if seen.get(&f) == Some(&now) {
                continue;
            }
            seen.insert(f.clone(), now);
            if let Err(e) = deploy_file(&engine, &f, min_schedule_interval).await {
                eprintln!("flowstate --dev: {e:#}; the previous version stays live");
            }
        }
    }
}
