//! Time comes only from a [`Clock`]. The wall clock serves production; the
//! virtual clock lets `run --fast-forward` and the engine tests jump to the
//! next due step, so a workflow that waits eight days finishes at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(
            self.0
                .saturating_add(d.as_millis().min(i64::MAX as u128) as i64),
        )
    }

    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC, to the millisecond (no calendar crate needed for this).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(1000);
        let secs = self.0.div_euclid(1000);
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            sod / 3600,
            (sod / 60) % 60,
            sod % 60
        )
    }
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic Gregorian
/// calendar (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

pub type SleepFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// The source of time for everything that waits or stamps.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
    /// Resolves once `now() >= at`.
    fn sleep_until(&self, at: Timestamp) -> SleepFuture<'_>;
    /// The virtual clock, if this is one (the engine fast-forwards only those).
    fn as_virtual(&self) -> Option<&VirtualClock> {
        None
    }
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("system clock is set after 1970");
        Timestamp(d.as_millis() as i64)
    }

    fn sleep_until(&self, at: Timestamp) -> SleepFuture<'_> {
        let wait = at.since(self.now());
        Box::pin(tokio::time::sleep(wait))
    }
}

/// A clock that moves only when told to. Sleepers wake when it passes them.
#[derive(Clone, Debug)]
pub struct VirtualClock {
    now: Arc<watch::Sender<i64>>,
}

impl VirtualClock {
    pub fn new(start: Timestamp) -> Self {
        VirtualClock {
            now: Arc::new(watch::Sender::new(start.0)),
        }
    }

    /// Starts at the wall clock's present, so timestamps look familiar.
    pub fn starting_now() -> Self {
        Self::new(WallClock.now())
    }

    /// Moves the clock forward to `at` (never backward).
    pub fn advance_to(&self, at: Timestamp) {
        self.now.send_if_modified(|now| {
            if at.0 > *now {
                *now = at.0;
                true
            } else {
                false
            }
        });
    }

    pub fn advance_by(&self, d: Duration) {
        self.advance_to(self.now().plus(d));
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        Timestamp(*self.now.borrow())
    }

    fn sleep_until(&self, at: Timestamp) -> SleepFuture<'_> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as self, which outlives this future.
            let _ = rx.wait_for(|now| *now >= at.0).await;
        })
    }

    fn as_virtual(&self) -> Option<&VirtualClock> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_print_as_rfc3339() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_763_731_200_123).to_string(),
            "2025-11-21T13:20:00.123Z"
        );
        assert_eq!(
            Timestamp(951_782_400_000).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[tokio::test]
    async fn virtual_sleepers_wake_only_when_the_clock_passes_them() {
        let clock = VirtualClock::new(Timestamp(1_000));
        let c2 = clock.clone();
        let sleeper = tokio::spawn(async move { c2.sleep_until(Timestamp(5_000)).await });
        tokio::task::yield_now().await;
        clock.advance_to(Timestamp(4_999));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance_to(Timestamp(5_000));
        sleeper.await.unwrap();
        clock.advance_to(Timestamp(10));
        assert_eq!(
            clock.now(),
            Timestamp(5_000),
            "the clock never runs backward"
        );
    }
}
