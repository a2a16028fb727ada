//! `flowstate bench webhooks`: an in-process server on a SQLite file (the
//! embedded default, synchronous=FULL) and an open-loop load generator on
//! loopback. Each connection sends on a fixed schedule; latency is counted
//! from when a request was due, not when it could be sent, so a stalled
//! server cannot hide its queue (no coordinated omission).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use flowstate_core::limits::Limits;
use flowstate_core::{Clock, WallClock};
use flowstate_engine::{Engine, EngineConfig, Until};
use flowstate_js::Sandbox;
use flowstate_server::{ServerConfig, router};
use flowstate_store::{Publish, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::args::BenchArgs;

const WORKFLOW: &str = "class Workflow { async start(data, headers, api) { await api.runStore.set('order', data.id); } }";

struct Sample {
    latencies: Vec<Duration>,
    accepted: u64,
    failed: u64,
}

pub async fn run(args: &BenchArgs, db: &Path, workers: usize) -> anyhow::Result<Value> {
    let store = super::bench::fresh_store(args, db)?;
    let config = EngineConfig::new(
        Limits {
            min_delay: Duration::ZERO,
            ..Limits::default()
        },
        workers,
    );
    let clock: Arc<dyn Clock> = Arc::new(WallClock);
    let engine = Engine::new(
        store.clone(),
        Arc::new(Sandbox::new(workers)),
        clock,
        config,
    );
    let version = engine.deploy("orders", WORKFLOW).await?;
    store
        .publish(Publish {
            name: "orders".into(),
            version: version.id,
            settings: "{}".into(),
            http_token: flowstate_server::new_token()?,
            now: engine.clock().now(),
            schedule: None,
            env: Vec::new(),
        })
        .await?;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = {
        let app = router(engine.clone(), ServerConfig::default());
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await
        })
    };
    let driver = (!args.accept_only).then(|| {
        let engine = engine.clone();
        let stop = stop_rx.clone();
        tokio::spawn(async move { engine.drive(Until::Shutdown(stop)).await })
    });

    let connections = args.connections.max(1);
    let duration = Duration::from_secs(args.seconds.max(1));
    let per_conn_interval =
        (args.rate > 0).then(|| Duration::from_secs_f64(connections as f64 / args.rate as f64));
    let start = Instant::now() + Duration::from_millis(200);
    let mut tasks = Vec::new();
    for c in 0..connections {
        tasks.push(tokio::spawn(load(
            addr,
            c,
            start,
            duration,
            per_conn_interval,
        )));
    }
    let mut all = Sample {
        latencies: Vec::new(),
        accepted: 0,
        failed: 0,
    };
    for t in tasks {
        let s = t.await??;
        all.latencies.extend(s.latencies);
        all.accepted += s.accepted;
        all.failed += s.failed;
    }
    let elapsed = start.elapsed().max(duration);
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(driver) = driver {
        let _ = tokio::time::timeout(Duration::from_secs(30), driver).await;
    }

    if all.latencies.is_empty() {
        bail!("no webhook was answered");
    }
    all.latencies.sort_unstable();
    let pct = |p: f64| {
        let i =
            ((all.latencies.len() as f64 * p).ceil() as usize).clamp(1, all.latencies.len()) - 1;
        all.latencies[i].as_secs_f64() * 1000.0
    };
    let accepted_per_s = all.accepted as f64 / elapsed.as_secs_f64();
    let runs = store
        .list_runs(flowstate_store::RunFilter {
            limit: 1,
            ..Default::default()
        })
        .await?;
    let recorded = runs.first().map_or(0, |r| r.id.0);
    if recorded < all.accepted as i64 {
        bail!(
            "{} webhooks were acknowledged but only {recorded} runs are recorded",
            all.accepted
        );
    }
    let offered = if args.rate == 0 {
        "max".to_string()
    } else {
        args.rate.to_string()
    };
    if !args.json {
        println!(
            "webhooks{} offered={offered}/s over {}s, {connections} connections: {:>7.0} accepted/s, ack p50 {:.2}ms p90 {:.2}ms p99 {:.2}ms max {:.2}ms, {} failed (every acknowledged run recorded: verified)",
            if args.accept_only {
                " (accept only)"
            } else {
                ""
            },
            duration.as_secs(),
            accepted_per_s,
            pct(0.50),
            pct(0.90),
            pct(0.99),
            pct(1.0),
            all.failed
        );
    }
    Ok(json!({
        "scenario": "webhooks",
        "accept_only": args.accept_only,
        "offered_per_second": args.rate,
        "seconds": duration.as_secs(),
        "connections": connections,
        "accepted": all.accepted,
        "accepted_per_second": accepted_per_s,
        "failed": all.failed,
        "ack_ms": { "p50": pct(0.50), "p90": pct(0.90), "p99": pct(0.99), "max": pct(1.0) },
    }))
}

/// One keep-alive connection sending on its schedule until `duration` ends.
async fn load(
    addr: std::net::SocketAddr,
    conn: usize,
    start: Instant,
    duration: Duration,
    interval: Option<Duration>,
) -> anyhow::Result<Sample> {
    let mut stream = BufReader::new(TcpStream::connect(addr).await?);
    stream.get_mut().set_nodelay(true)?;
    let mut sample = Sample {
        latencies: Vec::new(),
        accepted: 0,
        failed: 0,
    };
    let end = start + duration;
    // Spread the connections' first sends over one interval.
    let mut due = match interval {
        Some(i) => start + i.mul_f64(conn as f64 / 64.0 % 1.0),
        None => start,
    };
    tokio::time::sleep_until(due.into()).await;
    let mut n = 0u64;
    while due < end {
        let body = format!("{{\"id\":{},\"conn\":{conn}}}", n);
        n += 1;
        let request = format!(
            "POST /hooks/orders HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.get_mut().write_all(request.as_bytes()).await?;
        let status = read_response(&mut stream).await?;
        let latency = Instant::now().saturating_duration_since(due);
        sample.latencies.push(latency);
        if status == 202 {
            sample.accepted += 1;
        } else {
            sample.failed += 1;
        }
        match interval {
            Some(i) => {
                due += i;
                tokio::time::sleep_until(due.into()).await;
            }
            None => due = Instant::now(),
        }
    }
    Ok(sample)
}

/// Reads one HTTP/1.1 response; returns its status.
async fn read_response(stream: &mut BufReader<TcpStream>) -> anyhow::Result<u16> {
    let mut line = String::new();
    stream.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))?;
    let mut length = 0usize;
    loop {
        line.clear();
        stream.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await?;
    Ok(status)
}
