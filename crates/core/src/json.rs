//! JSON helpers shared by the store, the sandbox and the CLI.

use serde_json::Value;

/// Human size: 1.5 MB, 64.0 KiB, 12 B.
pub fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f >= KIB * KIB {
        format!("{:.1} MiB", f / (KIB * KIB))
    } else if f >= KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{n} B")
    }
}

/// Parses JSON text that flowstate itself wrote; corrupt text reads as null
/// rather than taking a display path down.
pub fn parse_stored(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(64 * 1024), "64.0 KiB");
        assert_eq!(human_bytes(32 * 1024 * 1024), "32.0 MiB");
    }
}
