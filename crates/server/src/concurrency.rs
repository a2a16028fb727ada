//! A workflow's `concurrency` and `throttle` settings (DESIGN.md 1.7), and
//! the gate they put on each new run. The store does the admitting; this
//! checks the settings at deploy and works out a run's key from its data.

use flowstate_store::{RunGate, Throttle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// At most `limit` runs active at once (`1` runs them one by one, in
/// arrival order), counted per value of `key` when it is given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConcurrencySettings {
    pub limit: u32,
    /// A dotted path into the trigger's data, e.g. `customer.id`: runs with
    /// different values do not wait for each other. A run whose data lacks
    /// the path (or has null there) shares one queue with the others that lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// At most `limit` runs started per `period` (`30s`, `1m`, `1h`, ...);
/// later runs wait, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleSettings {
    pub limit: u32,
    pub period: String,
}

/// The queue key of runs whose data lacks the key path.
pub const MISSING_KEY: &str = "";

impl ConcurrencySettings {
    pub fn check(&self) -> Result<(), String> {
        if self.limit == 0 {
            return Err("concurrency.limit must be at least 1 (1 runs one at a time)".into());
        }
        if let Some(key) = &self.key
            && (key.is_empty() || key.split('.').any(str::is_empty))
        {
            return Err(format!(
                "concurrency.key '{key}' is not a field path; write it like customer.id"
            ));
        }
        Ok(())
    }

    /// The run's key: the value at the path, as text.
    fn key_of(&self, data: &str) -> String {
        let Some(path) = &self.key else {
            return String::new();
        };
        let Ok(mut v) = serde_json::from_str::<Value>(data) else {
            return MISSING_KEY.into();
        };
        for part in path.split('.') {
            v = match v {
                Value::Object(mut m) => m.remove(part).unwrap_or(Value::Null),
                Value::Array(mut a) => match part.parse::<usize>() {
                    Ok(i) if i < a.len() => a.swap_remove(i),
                    _ => Value::Null,
                },
                _ => Value::Null,
            };
        }
        match v {
            Value::Null => MISSING_KEY.into(),
            // Prefixed, so that no value collides with the missing key.
            Value::String(s) => format!("={s}"),
            other => format!("={other}"),
        }
    }
}

impl ThrottleSettings {
    pub fn check(&self) -> Result<Throttle, String> {
        if self.limit == 0 {
            return Err("throttle.limit must be at least 1".into());
        }
        let period = flowstate_core::delay::parse_flag_duration(&self.period)
            .map_err(|e| format!("throttle.period: {e}"))?;
        if period.as_millis() < 1_000 {
            return Err(format!(
                "throttle.period '{}' is under a second; use at least 1s",
                self.period
            ));
        }
        Ok(Throttle {
            limit: self.limit,
            period_ms: period.as_millis() as i64,
        })
    }
}

/// The gate a new run with this data (JSON text) passes, if the workflow
/// has a concurrency limit or a throttle.
pub fn gate(
    concurrency: Option<&ConcurrencySettings>,
    throttle: Option<&ThrottleSettings>,
    data: &str,
) -> Option<RunGate> {
    if concurrency.is_none() && throttle.is_none() {
        return None;
    }
    Some(RunGate {
        key: concurrency.map(|c| c.key_of(data)).unwrap_or_default(),
        concurrency: concurrency.map(|c| c.limit),
        throttle: throttle.and_then(|t| t.check().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyed(path: &str) -> ConcurrencySettings {
        ConcurrencySettings {
            limit: 1,
            key: Some(path.into()),
        }
    }

    #[test]
    fn keys_come_from_the_data_path() {
        let c = keyed("customer.id");
        assert_eq!(c.key_of(r#"{"customer":{"id":7}}"#), "=7");
        assert_eq!(c.key_of(r#"{"customer":{"id":"7"}}"#), "=7");
        assert_eq!(
            keyed("items.1.sku").key_of(r#"{"items":[{"sku":"a"},{"sku":"b"}]}"#),
            "=b"
        );
        // Missing, null, or not JSON: one shared queue, not a crash.
        assert_eq!(c.key_of(r#"{"customer":{}}"#), MISSING_KEY);
        assert_eq!(c.key_of(r#"{"customer":{"id":null}}"#), MISSING_KEY);
        assert_eq!(c.key_of("not json"), MISSING_KEY);
        assert_eq!(
            c.key_of(r#"{"customer":{"id":""}}"#),
            "=",
            "an empty value is a value"
        );
    }

    #[test]
    fn settings_are_checked() {
        assert!(
            keyed("customer..id")
                .check()
                .unwrap_err()
                .contains("field path")
        );
        let zero = ConcurrencySettings {
            limit: 0,
            key: None,
        };
        assert!(zero.check().unwrap_err().contains("at least 1"));
        let t = |limit, period: &str| ThrottleSettings {
            limit,
            period: period.into(),
        };
        assert_eq!(
            t(10, "1m").check().unwrap(),
            Throttle {
                limit: 10,
                period_ms: 60_000
            }
        );
        assert!(
            t(10, "soon")
                .check()
                .unwrap_err()
                .contains("throttle.period")
        );
        assert!(t(10, "0s").check().unwrap_err().contains("at least 1s"));
        assert!(t(0, "1m").check().unwrap_err().contains("at least 1"));
    }

    #[test]
    fn no_settings_no_gate() {
        assert_eq!(gate(None, None, "{}"), None);
        let g = gate(Some(&keyed("a")), None, r#"{"a":1}"#).unwrap();
        assert_eq!(
            (g.key.as_str(), g.concurrency, g.throttle),
            ("=1", Some(1), None)
        );
    }
}
