//! `/metrics` in the Prometheus text format: run and step counters, the
//! step-latency histogram, the queue of due steps and how far behind the
//! timers are. Written by hand: a few lines, no metrics stack to build.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use flowstate_core::executor::StepExecutor;
use flowstate_store::Store;

use crate::{ApiError, Shared};

pub async fn metrics<S: Store, E: StepExecutor>(
    State(app): State<Shared<S, E>>,
) -> Result<impl IntoResponse, ApiError> {
    let engine = &app.engine;
    let stats = engine.stats();
    let now = engine.clock().now();
    let queue = engine.store().queue_stats(now).await?;
    let mut out = String::new();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);

    let _ = writeln!(
        out,
        "# HELP flowstate_runs_started_total Runs started by any trigger."
    );
    let _ = writeln!(out, "# TYPE flowstate_runs_started_total counter");
    let _ = writeln!(
        out,
        "flowstate_runs_started_total {}",
        load(&stats.runs_started)
    );
    let _ = writeln!(
        out,
        "# HELP flowstate_runs_finished_total Runs finished, by final status."
    );
    let _ = writeln!(out, "# TYPE flowstate_runs_finished_total counter");
    for (status, c) in [
        ("completed", &stats.runs_completed),
        ("failed", &stats.runs_failed),
        ("ended", &stats.runs_ended),
        ("cancelled", &stats.runs_cancelled),
    ] {
        let _ = writeln!(
            out,
            "flowstate_runs_finished_total{{status=\"{status}\"}} {}",
            load(c)
        );
    }
    let _ = writeln!(
        out,
        "# HELP flowstate_steps_total Step attempts executed, by outcome."
    );
    let _ = writeln!(out, "# TYPE flowstate_steps_total counter");
    for (outcome, c) in [
        ("committed", &stats.steps_committed),
        ("retried", &stats.steps_retried),
        ("failed", &stats.steps_failed),
        ("checkpoint_conflict", &stats.checkpoint_conflicts),
    ] {
        let _ = writeln!(
            out,
            "flowstate_steps_total{{outcome=\"{outcome}\"}} {}",
            load(c)
        );
    }
    let h = &stats.step_latency;
    let _ = writeln!(
        out,
        "# HELP flowstate_step_duration_seconds Time to run a step attempt in the sandbox."
    );
    let _ = writeln!(out, "# TYPE flowstate_step_duration_seconds histogram");
    for (bound_ms, n) in h.buckets() {
        let _ = writeln!(
            out,
            "flowstate_step_duration_seconds_bucket{{le=\"{}\"}} {n}",
            bound_ms as f64 / 1000.0
        );
    }
    let _ = writeln!(
        out,
        "flowstate_step_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        h.count()
    );
    let _ = writeln!(
        out,
        "flowstate_step_duration_seconds_sum {}",
        h.sum().as_secs_f64()
    );
    let _ = writeln!(out, "flowstate_step_duration_seconds_count {}", h.count());
    let _ = writeln!(
        out,
        "# HELP flowstate_queue_due_steps Steps due now and not yet started."
    );
    let _ = writeln!(out, "# TYPE flowstate_queue_due_steps gauge");
    let _ = writeln!(out, "flowstate_queue_due_steps {}", queue.due);
    let _ = writeln!(
        out,
        "# HELP flowstate_steps_in_flight Steps running on this node."
    );
    let _ = writeln!(out, "# TYPE flowstate_steps_in_flight gauge");
    let _ = writeln!(out, "flowstate_steps_in_flight {}", engine.inflight());
    let lag = queue.oldest_due.map_or(0.0, |t| now.since(t).as_secs_f64());
    let _ = writeln!(
        out,
        "# HELP flowstate_timer_lag_seconds How long the oldest due step has waited past its due time."
    );
    let _ = writeln!(out, "# TYPE flowstate_timer_lag_seconds gauge");
    let _ = writeln!(out, "flowstate_timer_lag_seconds {lag}");
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out))
}
