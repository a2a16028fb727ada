//! `$checkpoint` and `this.$checkpoint`: JSON state a workflow keeps across
//! runs (DESIGN.md 1.4). Unlike the reference platform's last-writer-wins,
//! a step's write is compare-and-set against the version it read, so
//! concurrent runs cannot lose each other's updates: a conflicting step is
//! run again on the new value.

/// The largest checkpoint value, as JSON text.
pub const MAX_CHECKPOINT_BYTES: usize = 64 * 1024;

/// The workflow-level checkpoint's scope; a step's own is its method name.
pub const WORKFLOW_SCOPE: &str = "";

/// A checkpoint as a step reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// JSON text, or `None` while unset (`undefined` in JS).
    pub value: Option<String>,
    /// Bumped by every write; 0 for a checkpoint never written.
    pub version: i64,
}

/// A checkpoint a step changed, written when (and only if) the step commits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointWrite {
    /// [`WORKFLOW_SCOPE`] or the step method's name.
    pub scope: String,
    /// The version the step read; `None` if it assigned without reading,
    /// which depends on nothing and cannot conflict.
    pub read_version: Option<i64>,
    /// JSON text, or `None` to clear it.
    pub value: Option<String>,
}

/// Checks a value against [`MAX_CHECKPOINT_BYTES`]; `what` names it for the
/// author (`$checkpoint`, `this.$checkpoint`).
pub fn check_size(what: &str, json: &str) -> Result<(), String> {
    if json.len() > MAX_CHECKPOINT_BYTES {
        return Err(format!(
            "{what} would be {} as JSON, over the limit of {}; keep only what the next run needs (trim lists, store ids rather than records)",
            crate::json::human_bytes(json.len()),
            crate::json::human_bytes(MAX_CHECKPOINT_BYTES),
        ));
    }
    Ok(())
}

/// How a scope is named to the author and in the CLI.
pub fn describe_scope(scope: &str) -> String {
    if scope == WORKFLOW_SCOPE {
        "$checkpoint".to_string()
    } else {
        format!("this.$checkpoint of step {scope}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive() {
        let at = "x".repeat(MAX_CHECKPOINT_BYTES);
        assert!(check_size("$checkpoint", &at).is_ok());
        let over = "x".repeat(MAX_CHECKPOINT_BYTES + 1);
        let err = check_size("$checkpoint", &over).unwrap_err();
        assert!(
            err.contains("$checkpoint would be") && err.contains("64"),
            "{err}"
        );
    }

    #[test]
    fn scopes_are_named_for_the_author() {
        assert_eq!(describe_scope(""), "$checkpoint");
        assert_eq!(describe_scope("poll"), "this.$checkpoint of step poll");
    }
}
