//! Counters and a latency histogram the engine keeps as it works, read by
//! progress lines, benchmarks and `/metrics`. Lock-free: atomics only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flowstate_core::status::RunStatus;

/// Upper bounds of the step-latency buckets, in milliseconds.
pub const LATENCY_BUCKETS_MS: [u64; 12] =
    [1, 2, 5, 10, 25, 50, 100, 250, 500, 1_000, 5_000, 30_000];

#[derive(Debug, Default)]
pub struct Stats {
    pub runs_started: AtomicU64,
    pub runs_completed: AtomicU64,
    pub runs_failed: AtomicU64,
    pub runs_ended: AtomicU64,
    pub runs_cancelled: AtomicU64,
    pub steps_committed: AtomicU64,
    pub steps_retried: AtomicU64,
    pub steps_failed: AtomicU64,
    /// Step commits refused because a checkpoint changed (the step re-ran).
    pub checkpoint_conflicts: AtomicU64,
    pub step_latency: Histogram,
}

impl Stats {
    pub fn run_finished(&self, status: RunStatus) {
        let counter = match status {
            RunStatus::Completed => &self.runs_completed,
            RunStatus::Failed => &self.runs_failed,
            RunStatus::Ended => &self.runs_ended,
            RunStatus::Cancelled => &self.runs_cancelled,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Cumulative-bucket histogram in the Prometheus sense.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let ms = d.as_millis() as u64;
        for (bound, bucket) in LATENCY_BUCKETS_MS.iter().zip(&self.buckets) {
            if ms <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (upper bound in ms, observations at or below it), cumulative.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        LATENCY_BUCKETS_MS
            .iter()
            .zip(&self.buckets)
            .map(|(b, n)| (*b, n.load(Ordering::Relaxed)))
            .collect()
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_micros.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(60));
        let b = h.buckets();
        assert_eq!(b[0], (1, 1));
        assert_eq!(b[3], (10, 2));
        assert_eq!(b[11], (30_000, 2), "60 s is only in +Inf");
        assert_eq!(h.count(), 3);
    }
}
