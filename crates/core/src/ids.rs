//! Typed ids. Stored as integers (cheap keys in SQLite and Postgres), shown
//! to users with a prefix (`run_42`) so a pasted id says what it names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! typed_id {
    ($name:ident, $prefix:literal, $what:literal) => {
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = String;

            /// Accepts `run_42` as printed, or the bare number `42`.
            fn from_str(s: &str) -> Result<Self, String> {
                let digits = s.strip_prefix($prefix).unwrap_or(s);
                digits.parse::<i64>().map($name).map_err(|_| {
                    format!(
                        concat!(
                            "'{}' is not a ",
                            $what,
                            " id: expected '",
                            $prefix,
                            "<number>', e.g. '",
                            $prefix,
                            "12'"
                        ),
                        s
                    )
                })
            }
        }
    };
}

typed_id!(RunId, "run_", "run");
typed_id!(StepId, "step_", "step");
typed_id!(VersionId, "ver_", "workflow version");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_print_with_prefix_and_parse_both_forms() {
        assert_eq!(RunId(42).to_string(), "run_42");
        assert_eq!("run_42".parse::<RunId>().unwrap(), RunId(42));
        assert_eq!("42".parse::<RunId>().unwrap(), RunId(42));
        let err = "step_x".parse::<StepId>().unwrap_err();
        assert!(err.contains("step_<number>"), "{err}");
    }
}
