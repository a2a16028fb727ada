//! Parsing of step delays (`scheduleNextStep`'s `delay`) and of the duration
//! flags of the CLI. A delay is a number of seconds or a duration string;
//! months and years are refused because they have no fixed length.

use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

/// What a delay may be written as, quoted in every delay error.
pub const ACCEPTED_FORMS: &str = "a number of seconds (e.g. 30) or a duration string: \
\"30 sec\", \"30 seconds\", \"5 min\", \"5 minutes\", \"2 hr\", \"2 hours\", \"1 day\", \
\"3 days\", \"1 week\", \"2 weeks\", or the short forms 30s, 5m, 2h, 1d, 1w";

#[derive(Debug, Error, PartialEq)]
pub enum DelayError {
    #[error("invalid delay {given}: expected {ACCEPTED_FORMS}")]
    Unparseable { given: String },
    #[error(
        "invalid delay {given}: months and years are not a fixed length; write it in days or weeks (e.g. \"30 days\"). Accepted: {ACCEPTED_FORMS}"
    )]
    Calendar { given: String },
    #[error(
        "delay {given} is below the minimum of {min}; use a delay of at least {min} (the minimum is set with --min-delay)"
    )]
    TooShort { given: String, min: String },
    #[error(
        "delay {given} is above the maximum of {max}; schedule a shorter step and chain from it"
    )]
    TooLong { given: String, max: String },
}

/// Bounds a delay must fall within.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DelayBounds {
    pub min: Duration,
    pub max: Duration,
}

/// Parses and bounds-checks a `delay` as given by workflow code.
pub fn parse_delay(value: &Value, bounds: DelayBounds) -> Result<Duration, DelayError> {
    let given = value.to_string();
    let d = match value {
        Value::Number(n) => {
            let secs = n.as_f64().unwrap_or(f64::NAN);
            seconds(secs).ok_or_else(|| DelayError::Unparseable {
                given: given.clone(),
            })?
        }
        Value::String(s) => parse_duration_str(s).map_err(|e| match e {
            DurationStrError::Calendar => DelayError::Calendar {
                given: given.clone(),
            },
            DurationStrError::Unparseable => DelayError::Unparseable {
                given: given.clone(),
            },
        })?,
        _ => return Err(DelayError::Unparseable { given }),
    };
    if d < bounds.min {
        return Err(DelayError::TooShort {
            given,
            min: format_duration(bounds.min),
        });
    }
    if d > bounds.max {
        return Err(DelayError::TooLong {
            given,
            max: format_duration(bounds.max),
        });
    }
    Ok(d)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && (0.0..1e12).contains(&secs)).then(|| Duration::from_secs_f64(secs))
}

#[derive(Debug, PartialEq)]
pub enum DurationStrError {
    Unparseable,
    Calendar,
}

/// Parses "30 sec", "5 minutes", "2h", "1.5 days", "90" (seconds), ...
pub fn parse_duration_str(s: &str) -> Result<Duration, DurationStrError> {
    let t = s.trim().to_ascii_lowercase();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| DurationStrError::Unparseable)?;
    let unit_secs = match unit.trim() {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1.0,
        "ms" | "millisecond" | "milliseconds" => 0.001,
        "m" | "min" | "mins" | "minute" | "minutes" => 60.0,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "wk" | "wks" | "week" | "weeks" => 604_800.0,
        "mo" | "mon" | "month" | "months" | "y" | "yr" | "yrs" | "year" | "years" => {
            return Err(DurationStrError::Calendar);
        }
        _ => return Err(DurationStrError::Unparseable),
    };
    seconds(n * unit_secs).ok_or(DurationStrError::Unparseable)
}

/// A flag value such as `10s`, `5m`, `1h`, `0`, `128MiB` is not a duration;
/// this is the duration half. Errors name the flag's accepted forms.
pub fn parse_flag_duration(s: &str) -> Result<Duration, String> {
    parse_duration_str(s).map_err(|_| {
        format!("'{s}' is not a duration: write a number with a unit, e.g. 10s, 5m, 1h, 2d (or 0)")
    })
}

/// Short human form: 10s, 5m, 2h30m, 3d, 250ms.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = d.as_secs();
    let parts = [(86_400, "d"), (3600, "h"), (60, "m"), (1, "s")];
    let mut rest = secs;
    let mut out = String::new();
    for (unit, name) in parts {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    let frac = ms % 1000;
    if frac != 0 && secs < 60 {
        return format!("{:.1}s", d.as_secs_f64());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT: DelayBounds = DelayBounds {
        min: Duration::from_secs(10),
        max: Duration::from_secs(400 * 86_400),
    };

    #[test]
    fn every_documented_form_parses() {
        let cases = [
            (json!(30), 30),
            (json!("30 sec"), 30),
            (json!("30 seconds"), 30),
            (json!("5 min"), 300),
            (json!("5 minutes"), 300),
            (json!("2 hr"), 7200),
            (json!("2 hours"), 7200),
            (json!("1 day"), 86_400),
            (json!("3 days"), 3 * 86_400),
            (json!("1 week"), 604_800),
            (json!("2 weeks"), 2 * 604_800),
            (json!("30s"), 30),
            (json!("5m"), 300),
            (json!("2h"), 7200),
            (json!("1d"), 86_400),
            (json!("1w"), 604_800),
            (json!(" 1 Day "), 86_400),
        ];
        for (v, secs) in cases {
            assert_eq!(
                parse_delay(&v, DEFAULT),
                Ok(Duration::from_secs(secs)),
                "{v}"
            );
        }
    }

    #[test]
    fn bounds_hold_at_their_edges() {
        assert!(parse_delay(&json!(10), DEFAULT).is_ok());
        assert!(matches!(
            parse_delay(&json!(9.999), DEFAULT),
            Err(DelayError::TooShort { .. })
        ));
        assert!(parse_delay(&json!("400 days"), DEFAULT).is_ok());
        let err = parse_delay(&json!("401 days"), DEFAULT).unwrap_err();
        assert!(err.to_string().contains("\"401 days\""), "{err}");
        assert!(err.to_string().contains("400d"), "{err}");
        let zero = DelayBounds {
            min: Duration::ZERO,
            ..DEFAULT
        };
        assert_eq!(parse_delay(&json!(0), zero), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_delays_quote_the_value_and_list_what_is_accepted() {
        for bad in [
            json!("soon"),
            json!(-5),
            json!(null),
            json!("5 parsecs"),
            json!(true),
        ] {
            let err = parse_delay(&bad, DEFAULT).unwrap_err().to_string();
            assert!(err.contains(&bad.to_string()), "{err}");
            assert!(err.contains("\"5 minutes\""), "{err}");
        }
        let err = parse_delay(&json!("2 months"), DEFAULT).unwrap_err();
        assert!(matches!(err, DelayError::Calendar { .. }));
        assert!(err.to_string().contains("days"));
        assert!(matches!(
            parse_delay(&json!("1 year"), DEFAULT),
            Err(DelayError::Calendar { .. })
        ));
    }

    #[test]
    fn durations_format_compactly() {
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_secs(9000)), "2h30m");
        assert_eq!(format_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(format_duration(Duration::from_secs(400 * 86_400)), "400d");
        assert_eq!(parse_flag_duration("5m"), Ok(Duration::from_secs(300)));
        assert!(parse_flag_duration("five").unwrap_err().contains("10s"));
    }
}
