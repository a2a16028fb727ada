//! Schedule triggers, as pure functions: a workflow's schedule settings are
//! checked at deploy (every error says what to write instead) and turned
//! into the next time to fire. Three kinds: `every` N minutes, hours, days,
//! weeks or months from a start, until a date or for N runs; once `at` a
//! time; or a `cron` expression in a time zone.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Months, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use flowstate_core::Timestamp;
use flowstate_core::delay::format_duration;
use serde::{Deserialize, Serialize};

/// A schedule as deployed (in a workflow's settings).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSettings {
    /// Repeat every N units: "10 minutes", "2 hours", "1 day", "1 week", "3 months".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    /// When `every` starts (RFC 3339); default: when it is deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// No runs after this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// At most this many runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Run once, at this time (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// A cron expression: 5 fields (minute hour day month weekday) or 6 with seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The cron expression's time zone (IANA name, e.g. Europe/Berlin); default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

/// A checked schedule, ready to compute fire times.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    until: Option<Timestamp>,
    count: Option<u64>,
}

#[derive(Clone, Debug)]
enum Kind {
    Every { start: Timestamp, step: Step },
    At(Timestamp),
    Cron { cron: Box<Cron>, tz: Tz },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Step {
    Fixed(Duration),
    Months(u32),
}

const EVERY_FORMS: &str = "\"10 minutes\", \"2 hours\", \"1 day\", \"1 week\" or \"3 months\"";

fn time(field: &str, value: &str) -> Result<Timestamp, String> {
    DateTime::parse_from_rfc3339(value.trim())
        .map(|t| Timestamp(t.timestamp_millis()))
        .map_err(|e| format!("schedule.{field} '{value}' is not a time ({e}); write RFC 3339, e.g. 2026-12-01T09:00:00Z"))
}

fn parse_every(text: &str) -> Result<Step, String> {
    let t = text.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u32 = num.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
        format!("schedule.every '{text}' needs a positive whole number and a unit: {EVERY_FORMS}")
    })?;
    let secs = match unit.trim() {
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        "mo" | "month" | "months" => return Ok(Step::Months(n)),
        _ => {
            return Err(format!(
                "schedule.every '{text}': unknown unit; write {EVERY_FORMS}"
            ));
        }
    };
    Ok(Step::Fixed(Duration::from_secs(u64::from(n) * secs)))
}

impl ScheduleSettings {
    /// Checks the settings; `now` is the deploy time (the default start),
    /// `min_interval` the shortest allowed repeat.
    pub fn check(&self, now: Timestamp, min_interval: Duration) -> Result<Schedule, String> {
        let kinds = [self.every.is_some(), self.at.is_some(), self.cron.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err("a schedule needs exactly one of: every (with optional start, until, count), at, or cron (with optional timezone)".into());
        }
        let until = self
            .until
            .as_deref()
            .map(|u| time("until", u))
            .transpose()?;
        if self.count == Some(0) {
            return Err("schedule.count must be at least 1 (or left out for no limit)".into());
        }
        if self.timezone.is_some() && self.cron.is_none() {
            return Err("schedule.timezone applies to cron; give every and at times with their offset instead".into());
        }
        let kind = if let Some(every) = &self.every {
            let step = parse_every(every)?;
            if let Step::Fixed(d) = step
                && d < min_interval
            {
                return Err(format!(
                    "schedule.every '{every}' is shorter than the minimum interval of {}; repeat less often (the minimum is set with --min-schedule-interval)",
                    format_duration(min_interval)
                ));
            }
            let start = self
                .start
                .as_deref()
                .map(|s| time("start", s))
                .transpose()?
                .unwrap_or(now);
            Kind::Every { start, step }
        } else if let Some(at) = &self.at {
            if self.start.is_some() || self.until.is_some() || self.count.is_some() {
                return Err("schedule.at runs once: leave out start, until and count".into());
            }
            let at = time("at", at)?;
            if at < now {
                return Err(format!(
                    "schedule.at {at} is in the past; give a future time"
                ));
            }
            Kind::At(at)
        } else {
            let expr = self.cron.as_deref().unwrap_or_default();
            let cron = Cron::new(expr).with_seconds_optional().parse().map_err(|e| {
                format!("schedule.cron '{expr}' is not a cron expression ({e}); write 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 9 * * MON-FRI\"")
            })?;
            let tz_name = self.timezone.as_deref().unwrap_or("UTC");
            let tz = Tz::from_str(tz_name)
                .map_err(|_| format!("schedule.timezone '{tz_name}' is not a time zone; use an IANA name such as Europe/Berlin or America/New_York"))?;
            let kind = Kind::Cron {
                cron: Box::new(cron),
                tz,
            };
            // An expression that never fires (e.g. February 30th) is refused.
            let probe = Schedule {
                kind: kind.clone(),
                until: None,
                count: None,
            };
            if probe.next_after(now, 0).is_none() {
                return Err(format!(
                    "schedule.cron '{expr}' never fires; check the day and month fields"
                ));
            }
            kind
        };
        Ok(Schedule {
            kind,
            until,
            count: self.count,
        })
    }
}

impl Schedule {
    /// The first fire time strictly after `after`, given `fired` runs so far;
    /// `None` when the schedule is over.
    pub fn next_after(&self, after: Timestamp, fired: u64) -> Option<Timestamp> {
        if self.count.is_some_and(|c| fired >= c) {
            return None;
        }
        let next = match &self.kind {
            Kind::At(at) => (fired == 0).then_some(*at),
            Kind::Every { start, step } => Some(next_every(*start, *step, after)?),
            Kind::Cron { cron, tz } => {
                let from = tz.timestamp_millis_opt(after.0).single()?;
                let next = cron.find_next_occurrence(&from, false).ok()?;
                Some(Timestamp(next.timestamp_millis()))
            }
        }?;
        match self.until {
            Some(until) if next > until => None,
            _ => Some(next),
        }
    }

    /// The first fire time, counted from the deploy.
    pub fn first(&self, now: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            // `every` fires at its start when that is still ahead (or now).
            Kind::Every { start, .. } if *start >= now => {
                self.next_after(Timestamp(start.0 - 1), 0)
            }
            Kind::At(at) => self.next_after(Timestamp(at.0 - 1), 0),
            _ => self.next_after(now, 0),
        }
    }
}

/// The first `start + k·step` strictly after `after` (k ≥ 0).
fn next_every(start: Timestamp, step: Step, after: Timestamp) -> Option<Timestamp> {
    if start > after {
        return Some(start);
    }
    match step {
        Step::Fixed(d) => {
            let d = d.as_millis() as i64;
            let k = (after.0 - start.0) / d + 1;
            Some(Timestamp(start.0 + k * d))
        }
        Step::Months(n) => {
            let base = Utc.timestamp_millis_opt(start.0).single()?;
            // Estimate k from the elapsed time, then step to the first after.
            let approx = ((after.0 - start.0) / (31 * 86_400_000) / i64::from(n)).max(0) as u32;
            let mut k = approx.saturating_sub(1);
            loop {
                let t = base.checked_add_months(Months::new(k.checked_mul(n)?))?;
                if t.timestamp_millis() > after.0 {
                    return Some(Timestamp(t.timestamp_millis()));
                }
                k += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        time("t", s).unwrap()
    }

    const TEN_MIN: Duration = Duration::from_secs(600);

    fn every(every: &str, start: &str) -> ScheduleSettings {
        ScheduleSettings {
            every: Some(every.into()),
            start: Some(start.into()),
            ..Default::default()
        }
    }

    #[test]
    fn every_repeats_from_its_start_and_skips_what_was_missed() {
        let s = every("2 hours", "2026-01-01T00:00:00Z")
            .check(ts("2025-12-31T00:00:00Z"), TEN_MIN)
            .unwrap();
        assert_eq!(
            s.first(ts("2025-12-31T00:00:00Z")),
            Some(ts("2026-01-01T00:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-01-01T00:00:00Z"), 1),
            Some(ts("2026-01-01T02:00:00Z"))
        );
        // Down for a day: the next fire is the first one after now, not the backlog.
        assert_eq!(
            s.next_after(ts("2026-01-02T03:30:00Z"), 2),
            Some(ts("2026-01-02T04:00:00Z"))
        );
    }

    #[test]
    fn months_follow_the_calendar() {
        let s = every("1 month", "2026-01-31T09:00:00Z")
            .check(ts("2026-01-01T00:00:00Z"), TEN_MIN)
            .unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-31T09:00:00Z"), 1),
            Some(ts("2026-02-28T09:00:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2026-03-01T00:00:00Z"), 2),
            Some(ts("2026-03-31T09:00:00Z"))
        );
        let q = every("3 months", "2026-01-15T00:00:00Z")
            .check(ts("2026-01-01T00:00:00Z"), TEN_MIN)
            .unwrap();
        assert_eq!(
            q.next_after(ts("2027-02-01T00:00:00Z"), 4),
            Some(ts("2027-04-15T00:00:00Z"))
        );
    }

    #[test]
    fn until_and_count_end_a_schedule() {
        let mut s = every("1 day", "2026-01-01T00:00:00Z");
        s.until = Some("2026-01-03T00:00:00Z".into());
        let s = s.check(ts("2026-01-01T00:00:00Z"), TEN_MIN).unwrap();
        assert_eq!(
            s.next_after(ts("2026-01-02T00:00:00Z"), 2),
            Some(ts("2026-01-03T00:00:00Z")),
            "until is inclusive"
        );
        assert_eq!(s.next_after(ts("2026-01-03T00:00:00Z"), 3), None);
        let mut c = every("1 day", "2026-01-01T00:00:00Z");
        c.count = Some(2);
        let c = c.check(ts("2026-01-01T00:00:00Z"), TEN_MIN).unwrap();
        assert!(c.next_after(ts("2026-01-01T00:00:00Z"), 1).is_some());
        assert_eq!(c.next_after(ts("2026-01-02T00:00:00Z"), 2), None);
    }

    #[test]
    fn at_fires_once() {
        let s = ScheduleSettings {
            at: Some("2026-06-01T12:00:00+02:00".into()),
            ..Default::default()
        };
        let s = s.check(ts("2026-01-01T00:00:00Z"), TEN_MIN).unwrap();
        assert_eq!(
            s.first(ts("2026-01-01T00:00:00Z")),
            Some(ts("2026-06-01T10:00:00Z"))
        );
        assert_eq!(s.next_after(ts("2026-06-01T10:00:00Z"), 1), None);
    }

    #[test]
    fn cron_fires_in_its_time_zone_across_dst() {
        let s = ScheduleSettings {
            cron: Some("0 9 * * MON-FRI".into()),
            timezone: Some("Europe/Berlin".into()),
            ..Default::default()
        };
        let s = s.check(ts("2026-03-27T00:00:00Z"), TEN_MIN).unwrap();
        // Friday 27 March 2026, 09:00 CET = 08:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-03-27T00:00:00Z"), 0),
            Some(ts("2026-03-27T08:00:00Z"))
        );
        // The clocks go forward on Sunday 29 March: Monday 09:00 CEST = 07:00 UTC.
        assert_eq!(
            s.next_after(ts("2026-03-27T08:00:00Z"), 1),
            Some(ts("2026-03-30T07:00:00Z"))
        );
    }

    #[test]
    fn bad_schedules_say_what_to_write() {
        let now = ts("2026-01-01T00:00:00Z");
        let cases = [
            (ScheduleSettings::default(), "exactly one of"),
            (
                ScheduleSettings {
                    every: Some("5 minutes".into()),
                    ..Default::default()
                },
                "shorter than the minimum interval of 10m",
            ),
            (
                ScheduleSettings {
                    every: Some("often".into()),
                    ..Default::default()
                },
                "\"10 minutes\"",
            ),
            (
                ScheduleSettings {
                    every: Some("2 fortnights".into()),
                    ..Default::default()
                },
                "unknown unit",
            ),
            (
                ScheduleSettings {
                    cron: Some("61 * * * *".into()),
                    ..Default::default()
                },
                "is not a cron expression",
            ),
            (
                ScheduleSettings {
                    cron: Some("0 0 30 2 *".into()),
                    ..Default::default()
                },
                "never fires",
            ),
            (
                ScheduleSettings {
                    cron: Some("0 9 * * *".into()),
                    timezone: Some("Mars/Olympus".into()),
                    ..Default::default()
                },
                "IANA name",
            ),
            (
                ScheduleSettings {
                    at: Some("2025-01-01T00:00:00Z".into()),
                    ..Default::default()
                },
                "in the past",
            ),
            (
                ScheduleSettings {
                    at: Some("tomorrow".into()),
                    ..Default::default()
                },
                "RFC 3339",
            ),
            (
                ScheduleSettings {
                    every: Some("1 day".into()),
                    count: Some(0),
                    ..Default::default()
                },
                "at least 1",
            ),
        ];
        for (settings, expected) in cases {
            let err = settings.check(now, TEN_MIN).unwrap_err();
            assert!(err.contains(expected), "{settings:?}: {err}");
        }
        assert!(
            ScheduleSettings {
                every: Some("10 minutes".into()),
                ..Default::default()
            }
            .check(now, TEN_MIN)
            .is_ok(),
            "the minimum itself is allowed"
        );
    }
}
