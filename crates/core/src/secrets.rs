//! Workflow secrets at rest: sealed with ChaCha20-Poly1305 under a key the
//! operator provides (`--secret-key`), so the database alone does not give
//! them away. A sealed value is `v1:` + base64(nonce ‖ ciphertext ‖ tag).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "v1:";

/// The operator's key.
#[derive(Clone)]
pub struct SecretKey(ChaCha20Poly1305);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

impl SecretKey {
    /// Reads a key given as 64 hex digits or base64 of 32 bytes.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16).expect("hex digits"))
                .collect()
        } else {
            STANDARD.decode(text).unwrap_or_default()
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| {
            "the secret key must be 32 bytes, as 64 hex digits or base64; make one with `openssl rand -hex 32`".to_string()
        })?;
        Ok(SecretKey(ChaCha20Poly1305::new(&Key::from(key))))
    }

    /// Seals `plain` with a fresh random `nonce` (12 bytes, never reused).
    pub fn seal(&self, plain: &str, nonce: [u8; 12]) -> String {
        let sealed = self
            .0
            .encrypt(&Nonce::from(nonce), plain.as_bytes())
            .expect("sealing a bounded value cannot fail");
        let mut out = nonce.to_vec();
        out.extend(sealed);
        format!("{PREFIX}{}", STANDARD.encode(out))
    }

    /// Opens a sealed value; fails if it was sealed under another key.
    pub fn open(&self, sealed: &str) -> Result<String, String> {
        let wrong = || {
            "a secret could not be decrypted: it was sealed with another --secret-key".to_string()
        };
        let bytes = sealed
            .strip_prefix(PREFIX)
            .and_then(|b| STANDARD.decode(b).ok())
            .filter(|b| b.len() > 12)
            .ok_or_else(wrong)?;
        let (nonce, body) = bytes.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        let plain = self
            .0
            .decrypt(&Nonce::from(nonce), body)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// Whether `name` may name an env variable: a JS identifier of ASCII
/// letters, digits and `_`, not starting with a digit, at most 128 long.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid variable name: use letters, digits and _, not starting with a digit (e.g. SLACK_WEBHOOK_URL)"
        ))
    }
}

/// Replaces every occurrence of a secret's value in `text`. Values under 4
/// characters are left alone: they would redact ordinary words.
pub fn redact(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "[redacted]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn sealed_values_open_only_with_their_key() {
        let key = SecretKey::parse(KEY).unwrap();
        let sealed = key.seal("shpat_abc123", [7; 12]);
        assert!(sealed.starts_with("v1:") && !sealed.contains("shpat"));
        assert_eq!(key.open(&sealed).unwrap(), "shpat_abc123");
        let other = SecretKey::parse(&STANDARD.encode([9u8; 32])).unwrap();
        assert!(
            other
                .open(&sealed)
                .unwrap_err()
                .contains("another --secret-key")
        );
        assert!(key.open("plain text").is_err());
    }

    #[test]
    fn keys_must_be_32_bytes() {
        assert!(SecretKey::parse("abc").unwrap_err().contains("32 bytes"));
        assert!(SecretKey::parse(&KEY[..62]).is_err());
    }

    #[test]
    fn names_are_identifiers() {
        for good in ["A", "_x", "SHOPIFY_STORE", "a1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", "1A", "A-B", "A B", "é", &"A".repeat(129)] {
            assert!(
                check_name(bad)
                    .unwrap_err()
                    .contains("not a valid variable name")
            );
        }
    }

    #[test]
    fn secrets_are_redacted_from_text() {
        let secrets = vec!["hunter22".to_string(), "ab".to_string()];
        assert_eq!(redact("token=hunter22 ab", &secrets), "token=[redacted] ab");
    }
}
