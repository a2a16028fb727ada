//! Every limit of the contract (DESIGN.md 1.2, 1.3, 1.5) as a named,
//! documented, configurable value. Defaults follow the reference platform
//! where it documents one.

use std::time::Duration;

use crate::delay::DelayBounds;

pub const KIB: usize = 1024;
pub const MIB: usize = 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    /// Shortest `scheduleNextStep` delay. 10 s as the reference documents;
    /// `--min-delay 0` for development and benchmarks.
    pub min_delay: Duration,
    /// Longest delay: 400 days, the reference's ceiling.
    pub max_delay: Duration,
    /// CPU a step may burn before it is interrupted. An endless loop dies here.
    pub step_cpu: Duration,
    /// Wall time a step may take, waiting on the store included.
    pub step_wall: Duration,
    /// Heap of one step's JS runtime. Workers × this is the sandbox's worst case.
    pub step_memory: usize,
    /// Retries after the first attempt; 0 disables retries.
    pub max_retries: u32,
    /// Backoff of the first retry; each next one is 6× longer, up to `max_backoff`
    /// (so 10 s, 1 min, 5 min by default).
    pub backoff_base: Duration,
    pub max_backoff: Duration,
    /// Circuit breakers against runaway workflows.
    pub max_depth: u32,
    pub max_steps_per_run: u64,
    pub max_fanout: u32,
    /// Run state: key length, each value or pushed item, and a run's total.
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_run_state_bytes: usize,
    /// Payloads above this go to the blob store (1.5 MB as the reference).
    pub blob_threshold: usize,
    /// Payloads above this are refused at the call.
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            min_delay: Duration::from_secs(10),
            max_delay: Duration::from_secs(400 * 86_400),
            step_cpu: Duration::from_secs(5 * 60),
            step_wall: Duration::from_secs(15 * 60),
            step_memory: 128 * MIB,
            max_retries: 3,
            backoff_base: Duration::from_secs(10),
            max_backoff: Duration::from_secs(5 * 60),
            max_depth: 10_000,
            max_steps_per_run: 100_000,
            max_fanout: 10_000,
            max_key_bytes: 512,
            max_value_bytes: 64 * KIB,
            max_run_state_bytes: 16 * MIB,
            blob_threshold: 1_500_000,
            max_payload_bytes: 32 * MIB,
        }
    }
}

impl Limits {
    pub fn delay_bounds(&self) -> DelayBounds {
        DelayBounds {
            min: self.min_delay,
            max: self.max_delay,
        }
    }

    /// Delay before retry number `retry` (1-based), or `None` when the step
    /// has used up its retries and has failed for good.
    pub fn retry_backoff(&self, retry: u32) -> Option<Duration> {
        if retry == 0 || retry > self.max_retries {
            return None;
        }
        let factor = 6u32.saturating_pow(retry - 1);
        Some(
            self.backoff_base
                .saturating_mul(factor)
                .min(self.max_backoff),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_backoff_is_10s_1m_5m_then_gives_up() {
        let l = Limits::default();
        assert_eq!(l.retry_backoff(1), Some(Duration::from_secs(10)));
        assert_eq!(l.retry_backoff(2), Some(Duration::from_secs(60)));
        assert_eq!(l.retry_backoff(3), Some(Duration::from_secs(300)));
        assert_eq!(l.retry_backoff(4), None);
        let none = Limits {
            max_retries: 0,
            ..l
        };
        assert_eq!(none.retry_backoff(1), None);
    }
}
