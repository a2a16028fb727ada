//! Run and step statuses, with the text forms stored and shown.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! text_enum {
    ($name:ident { $($variant:ident => $text:literal),* $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name { $(#[serde(rename = $text)] $variant),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!(
                        "unknown {} '{}': expected one of {}",
                        stringify!($name), s,
                        [$($text),*].join(", ")
                    )),
                }
            }
        }
    };
}

text_enum!(RunStatus {
    Queued => "queued",
    Running => "running",
    Waiting => "waiting",
    Completed => "completed",
    Failed => "failed",
    Ended => "ended",
    Cancelled => "cancelled",
});

impl RunStatus {
    /// Whether the run still has (or may get) work to do. A `failed` run is
    /// not final until its other branches and hooks are done, so finality is
    /// kept in its own column; this only says what the status allows.
    pub fn accepts_work(self) -> bool {
        matches!(
            self,
            RunStatus::Queued | RunStatus::Running | RunStatus::Waiting | RunStatus::Failed
        )
    }
}

// `queued`: a `start` held back by the workflow's concurrency limit or
// throttle. `waiting`: an `api.waitForEvent` branch; `timed_out`: one whose
// event never came.
text_enum!(StepStatus {
    Queued => "queued",
    Waiting => "waiting",
    TimedOut => "timed_out",
    Pending => "pending",
    Running => "running",
    Done => "done",
    Failed => "failed",
    Ended => "ended",
    Cancelled => "cancelled",
});

// What a step row is: an ordinary step, one of the two hooks, or a
// `waitForEvent` branch whose timeout came (recorded without running JS).
text_enum!(StepKind {
    Action => "action",
    CompleteHook => "complete_hook",
    ErrorHook => "error_hook",
    WaitTimeout => "wait_timeout",
});

impl StepKind {
    pub fn is_hook(self) -> bool {
        matches!(self, StepKind::CompleteHook | StepKind::ErrorHook)
    }

    /// The JS method a hook step calls.
    pub fn hook_method(self) -> Option<&'static str> {
        match self {
            StepKind::Action | StepKind::WaitTimeout => None,
            StepKind::CompleteHook => Some("onWorkflowComplete"),
            StepKind::ErrorHook => Some("onWorkflowError"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_uses_the_same_text() {
        assert_eq!(
            serde_json::to_string(&StepKind::CompleteHook).unwrap(),
            "\"complete_hook\""
        );
        assert_eq!(
            serde_json::from_str::<RunStatus>("\"cancelled\"").unwrap(),
            RunStatus::Cancelled
        );
    }

    #[test]
    fn statuses_round_trip_through_text() {
        for s in RunStatus::ALL {
            assert_eq!(s.as_str().parse::<RunStatus>().unwrap(), *s);
        }
        let err = "done".parse::<RunStatus>().unwrap_err();
        assert!(err.contains("completed"), "{err}");
    }
}
