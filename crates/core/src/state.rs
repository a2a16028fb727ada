//! State operations a step performs through its host (`api.runStore`,
//! `api.dedupe`), and the errors a workflow author can cause with them.
//! Values travel as JSON text: the sandbox produces it and the store keeps
//! it, so nothing is parsed twice on the hot path.

use thiserror::Error;

use crate::json::human_bytes;

/// Whose state an op touches: the run's (`api.runStore`) or the workflow's,
/// shared by all its runs (`api.workflowStore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateScope {
    Run,
    Workflow,
}

#[derive(Clone, Debug, PartialEq)]
pub enum StateOp {
    Get {
        key: String,
    },
    Set {
        key: String,
        value: String,
    },
    Push {
        key: String,
        item: String,
    },
    Increment {
        key: String,
        delta: f64,
    },
    Delete {
        key: String,
    },
    /// `api.dedupe(key, ttl)`: scoped to the workflow, not the run.
    Dedupe {
        key: String,
        ttl_secs: f64,
    },
}

impl StateOp {
    pub fn name(&self) -> &'static str {
        match self {
            StateOp::Get { .. } => "get",
            StateOp::Set { .. } => "set",
            StateOp::Push { .. } => "push",
            StateOp::Increment { .. } => "increment",
            StateOp::Delete { .. } => "delete",
            StateOp::Dedupe { .. } => "dedupe",
        }
    }

    pub fn key(&self) -> &str {
        match self {
            StateOp::Get { key }
            | StateOp::Set { key, .. }
            | StateOp::Push { key, .. }
            | StateOp::Increment { key, .. }
            | StateOp::Delete { key }
            | StateOp::Dedupe { key, .. } => key,
        }
    }

    /// Reads change nothing, so they are not journaled: a retry reads afresh.
    pub fn is_read(&self) -> bool {
        matches!(self, StateOp::Get { .. })
    }

    /// Checks key and value sizes before the op reaches the store.
    pub fn check_sizes(&self, max_key: usize, max_value: usize) -> Result<(), StateError> {
        let key = self.key();
        if key.len() > max_key {
            return Err(StateError::KeyTooLong {
                key: key.chars().take(40).collect::<String>() + "…",
                size: key.len(),
                limit: max_key,
            });
        }
        let value = match self {
            StateOp::Set { value, .. } => Some(value),
            StateOp::Push { item, .. } => Some(item),
            _ => None,
        };
        if let Some(v) = value
            && v.len() > max_value
        {
            return Err(StateError::ValueTooLarge {
                key: key.to_string(),
                what: if matches!(self, StateOp::Push { .. }) {
                    "pushed item"
                } else {
                    "value"
                },
                size: v.len(),
                limit: max_value,
            });
        }
        Ok(())
    }
}

/// What a workflow did wrong with run state. The message is what JS sees.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum StateError {
    #[error(
        "runStore key '{key}' is {size} bytes, over the limit of {limit} bytes; use a shorter key"
    )]
    KeyTooLong {
        key: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "runStore {what} for key '{key}' is {}, over the limit of {}; store a reference (an id, a URL, a CSV chunk key) instead of the data itself",
        human_bytes(*size), human_bytes(*limit)
    )]
    ValueTooLarge {
        key: String,
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error(
        "run state would grow to {} with key '{key}', over the run's limit of {}; keep compact data in run state and store large data elsewhere, passing references",
        human_bytes(*size), human_bytes(*limit)
    )]
    RunStateFull {
        key: String,
        size: usize,
        limit: usize,
    },
    #[error(
        "runStore.increment('{key}'): the value stored there is {found}, not a number; use a fresh key for the counter or set it to a number first"
    )]
    NotANumber { key: String, found: String },
    #[error("runStore.increment('{key}', {delta}): the delta must be a finite number")]
    BadDelta { key: String, delta: String },
    #[error(
        "runStore.push('{key}'): the value stored there is {found}, not a list; push to a fresh key or set it to an array first"
    )]
    NotAList { key: String, found: String },
    #[error(
        "this step no longer owns its run (the run ended or was cancelled, or the step was taken over after its lease expired); its state changes are discarded"
    )]
    Superseded,
}

impl StateError {
    /// The message for an op on `scope`'s state: the messages name
    /// `runStore`, and say `workflowStore` for the workflow's shared state.
    pub fn message(&self, scope: StateScope) -> String {
        let text = self.to_string();
        match scope {
            StateScope::Run => text,
            StateScope::Workflow => text
                .replace("runStore", "workflowStore")
                .replace("run state", "workflow state")
                .replace("the run's limit", "the workflow's limit"),
        }
    }
}

/// A JSON text's type, named as JS authors know it, for error messages.
pub fn json_type_name(text: &str) -> &'static str {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_store_the_op_was_on() {
        let e = StateError::NotANumber {
            key: "n".into(),
            found: "a string".into(),
        };
        assert!(
            e.message(StateScope::Run)
                .starts_with("runStore.increment('n')")
        );
        let w = e.message(StateScope::Workflow);
        assert!(
            w.starts_with("workflowStore.increment('n')") && !w.contains("runStore"),
            "{w}"
        );
        let full = StateError::RunStateFull {
            key: "k".into(),
            size: 10,
            limit: 5,
        };
        assert!(
            full.message(StateScope::Workflow)
                .contains("the workflow's limit")
        );
    }

    #[test]
    fn sizes_are_checked_at_the_edge() {
        let op = |n: usize| StateOp::Set {
            key: "k".into(),
            value: "x".repeat(n),
        };
        assert!(op(100).check_sizes(512, 100).is_ok());
        let err = op(101).check_sizes(512, 100).unwrap_err();
        assert!(matches!(
            err,
            StateError::ValueTooLarge {
                size: 101,
                limit: 100,
                ..
            }
        ));
        assert!(err.to_string().contains("'k'"));
        let long = StateOp::Get {
            key: "k".repeat(513),
        };
        assert!(matches!(
            long.check_sizes(512, 100),
            Err(StateError::KeyTooLong { size: 513, .. })
        ));
        assert!(
            StateOp::Get {
                key: "k".repeat(512)
            }
            .check_sizes(512, 100)
            .is_ok()
        );
    }
}
