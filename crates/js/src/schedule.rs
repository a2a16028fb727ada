//! Validation of `api.scheduleNextStep` calls: action, delay, payload size
//! and the circuit breakers, each refused at the call with a message that
//! says what was wrong and what is allowed.

use std::time::Duration;

use flowstate_core::delay::{DelayBounds, parse_delay};
use flowstate_core::executor::{
    COMPLETE_HOOK, DEFAULT_WAIT, ERROR_HOOK, MAX_WAIT, START, ScheduledStep, WaitSpec, WorkflowInfo,
};
use flowstate_core::json::human_bytes;
use flowstate_core::limits::Limits;

/// What the step has scheduled so far and where it stands.
pub struct ScheduleContext<'a> {
    pub info: &'a WorkflowInfo,
    pub limits: &'a Limits,
    pub depth: u32,
    pub steps_left: u64,
    pub already: usize,
}

pub fn check(
    cx: &ScheduleContext<'_>,
    action: Option<&str>,
    delay_json: &str,
    payload: String,
) -> Result<ScheduledStep, String> {
    check_as(
        cx,
        "api.scheduleNextStep",
        action,
        delay_json,
        cx.limits.delay_bounds(),
        payload,
    )
}

/// Checks an `api.waitForEvent` call like a scheduled step whose delay is
/// its timeout (a number of seconds or a duration string, up to 30 days).
pub fn check_wait(
    cx: &ScheduleContext<'_>,
    action: Option<&str>,
    timeout_json: &str,
    payload: String,
    wait: WaitSpec,
) -> Result<ScheduledStep, String> {
    let timeout_json = if timeout_json == "null" {
        DEFAULT_WAIT.as_secs().to_string()
    } else {
        timeout_json.to_string()
    };
    let bounds = DelayBounds {
        min: Duration::from_secs(1),
        max: MAX_WAIT,
    };
    let mut step = check_as(
        cx,
        "api.waitForEvent",
        action,
        &timeout_json,
        bounds,
        payload,
    )?;
    step.wait = Some(wait);
    Ok(step)
}

fn check_as(
    cx: &ScheduleContext<'_>,
    prefix: &str,
    action: Option<&str>,
    delay_json: &str,
    bounds: DelayBounds,
    payload: String,
) -> Result<ScheduledStep, String> {
    let schedulable = || {
        if cx.info.actions.is_empty() {
            "none yet: add a method to class Workflow".to_string()
        } else {
            cx.info.actions.join(", ")
        }
    };
    let action = match action {
        None => {
            return Err(format!(
                "{prefix}: `action` must be the name of a step method (a string); methods you can schedule: {}",
                schedulable()
            ));
        }
        Some(a) if a == START => {
            return Err(format!(
                "{prefix}: 'start' is the entry step and runs only for triggers; schedule another method: {}",
                schedulable()
            ));
        }
        Some(a) if a == COMPLETE_HOOK || a == ERROR_HOOK => {
            return Err(format!(
                "{prefix}: '{a}' is a hook that flowstate calls itself when the run ends; schedule a step method: {}",
                schedulable()
            ));
        }
        Some(a) if !cx.info.is_schedulable(a) => {
            return Err(format!(
                "{prefix}: Workflow has no method '{a}'; methods you can schedule: {}",
                schedulable()
            ));
        }
        Some(a) => a.to_string(),
    };
    let delay_value: serde_json::Value =
        serde_json::from_str(delay_json).unwrap_or(serde_json::Value::Null);
    let delay: Duration =
        parse_delay(&delay_value, bounds).map_err(|e| format!("{prefix} to '{action}': {e}"))?;
    if payload.len() > cx.limits.max_payload_bytes {
        return Err(format!(
            "{prefix}: the payload for '{action}' is {}, over the limit of {}; store the data elsewhere and pass a reference (an id, a URL, a CSV chunk key)",
            human_bytes(payload.len()),
            human_bytes(cx.limits.max_payload_bytes)
        ));
    }
    if cx.already >= cx.limits.max_fanout as usize {
        return Err(format!(
            "{prefix}: this step has already scheduled {} steps, the fan-out limit per step; split the work across steps (fan out in stages)",
            cx.already
        ));
    }
    if cx.depth + 1 > cx.limits.max_depth {
        return Err(format!(
            "{prefix}: a step at depth {} would pass the maximum chain depth of {}; a workflow that keeps scheduling itself is stopped here",
            cx.depth + 1,
            cx.limits.max_depth
        ));
    }
    if cx.already as u64 >= cx.steps_left {
        return Err(format!(
            "{prefix}: this run has reached its limit of {} steps; a workflow that keeps creating steps is stopped here",
            cx.limits.max_steps_per_run
        ));
    }
    Ok(ScheduledStep {
        action,
        delay,
        payload,
        wait: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> WorkflowInfo {
        WorkflowInfo {
            actions: vec!["a".into(), "b".into()],
            has_complete_hook: true,
            has_error_hook: false,
        }
    }

    fn cx<'a>(info: &'a WorkflowInfo, limits: &'a Limits) -> ScheduleContext<'a> {
        ScheduleContext {
            info,
            limits,
            depth: 0,
            steps_left: 100,
            already: 0,
        }
    }

    #[test]
    fn actions_are_checked_and_errors_list_the_methods() {
        let (i, l) = (info(), Limits::default());
        assert!(check(&cx(&i, &l), Some("a"), "10", "{}".into()).is_ok());
        for bad in [
            Some("nope"),
            Some("start"),
            Some("onWorkflowComplete"),
            None,
        ] {
            let err = check(&cx(&i, &l), bad, "10", "{}".into()).unwrap_err();
            assert!(err.contains("a, b"), "{err}");
        }
    }

    #[test]
    fn delays_and_payloads_are_bounded() {
        let (i, l) = (info(), Limits::default());
        let err = check(&cx(&i, &l), Some("a"), "\"2 months\"", "{}".into()).unwrap_err();
        assert!(
            err.contains("\"2 months\"") && err.contains("days"),
            "{err}"
        );
        let small = Limits {
            max_payload_bytes: 10,
            ..Limits::default()
        };
        assert!(check(&cx(&i, &small), Some("a"), "10", "x".repeat(10)).is_ok());
        let err = check(&cx(&i, &small), Some("a"), "10", "x".repeat(11)).unwrap_err();
        assert!(err.contains("11 B") && err.contains("10 B"), "{err}");
    }

    #[test]
    fn wait_timeouts_default_to_a_day_and_stop_at_30_days() {
        let (i, l) = (info(), Limits::default());
        let spec = || WaitSpec {
            token: "t".into(),
            redirect_url: None,
        };
        let w = check_wait(&cx(&i, &l), Some("a"), "null", "{}".into(), spec()).unwrap();
        assert_eq!((w.delay, w.wait), (DEFAULT_WAIT, Some(spec())));
        let w = check_wait(&cx(&i, &l), Some("a"), "\"30 days\"", "{}".into(), spec()).unwrap();
        assert_eq!(w.delay, MAX_WAIT);
        let err =
            check_wait(&cx(&i, &l), Some("a"), "\"31 days\"", "{}".into(), spec()).unwrap_err();
        assert!(err.starts_with("api.waitForEvent to 'a'"), "{err}");
        assert!(check_wait(&cx(&i, &l), Some("nope"), "60", "{}".into(), spec()).is_err());
    }

    #[test]
    fn breakers_trip_at_their_edges() {
        let i = info();
        let l = Limits {
            max_fanout: 2,
            max_depth: 3,
            ..Limits::default()
        };
        let mut c = cx(&i, &l);
        c.already = 1;
        assert!(check(&c, Some("a"), "10", "1".into()).is_ok());
        c.already = 2;
        assert!(
            check(&c, Some("a"), "10", "1".into())
                .unwrap_err()
                .contains("fan-out")
        );
        let mut c = cx(&i, &l);
        c.depth = 2;
        assert!(check(&c, Some("a"), "10", "1".into()).is_ok());
        c.depth = 3;
        assert!(
            check(&c, Some("a"), "10", "1".into())
                .unwrap_err()
                .contains("depth")
        );
        let mut c = cx(&i, &l);
        c.steps_left = 0;
        assert!(
            check(&c, Some("a"), "10", "1".into())
                .unwrap_err()
                .contains("limit of")
        );
    }
}
