//! Webhook signatures: Shopify's (base64 HMAC-SHA256 of the raw body in
//! X-Shopify-Hmac-Sha256) and a generic hex HMAC-SHA256 in a header of the
//! workflow's choosing. Compared in constant time by the `hmac` crate.

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::settings::{DEFAULT_SIGNATURE_HEADER, SignatureScheme, WebhookSettings};

const SHOPIFY_HEADER: &str = "x-shopify-hmac-sha256";

/// Turns a header's text into the signature bytes, if well-formed.
type Decoder = fn(&str) -> Option<Vec<u8>>;

/// `Ok` if the request is signed as the settings require.
pub fn verify(settings: &WebhookSettings, headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let Some(secret) = &settings.secret else {
        return Ok(());
    };
    let (header, decode): (&str, Decoder) = match settings.signature {
        SignatureScheme::Shopify => (SHOPIFY_HEADER, |v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        }),
        SignatureScheme::HmacSha256 => (
            settings
                .signature_header
                .as_deref()
                .unwrap_or(DEFAULT_SIGNATURE_HEADER),
            |v| decode_hex(v.trim().strip_prefix("sha256=").unwrap_or(v.trim())),
        ),
    };
    let given = headers
        .get(header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("this webhook must be signed: the {header} header is missing"))?;
    let given = decode(given)
        .ok_or_else(|| format!("the {header} header is not a well-formed signature"))?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| {
        format!(
            "the {header} signature does not match the body; check the workflow's webhook secret"
        )
    })
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Signs `body` as the scheme expects (for clients and tests).
pub fn sign(scheme: SignatureScheme, secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    match scheme {
        SignatureScheme::Shopify => base64::engine::general_purpose::STANDARD.encode(bytes),
        SignatureScheme::HmacSha256 => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(scheme: SignatureScheme) -> WebhookSettings {
        WebhookSettings {
            secret: Some("s3cret".into()),
            signature: scheme,
            ..Default::default()
        }
    }

    #[test]
    fn shopify_signatures_verify_and_tampering_fails() {
        let body = br#"{"id":1}"#;
        let mut h = HeaderMap::new();
        h.insert(
            SHOPIFY_HEADER,
            sign(SignatureScheme::Shopify, "s3cret", body)
                .parse()
                .unwrap(),
        );
        assert!(verify(&settings(SignatureScheme::Shopify), &h, body).is_ok());
        let err = verify(&settings(SignatureScheme::Shopify), &h, br#"{"id":2}"#).unwrap_err();
        assert!(err.contains("does not match"), "{err}");
        let err = verify(&settings(SignatureScheme::Shopify), &HeaderMap::new(), body).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }

    #[test]
    fn generic_hex_signatures_verify_with_or_without_prefix() {
        let body = b"hello";
        let sig = sign(SignatureScheme::HmacSha256, "s3cret", body);
        for value in [sig.clone(), format!("sha256={sig}")] {
            let mut h = HeaderMap::new();
            h.insert(DEFAULT_SIGNATURE_HEADER, value.parse().unwrap());
            assert!(verify(&settings(SignatureScheme::HmacSha256), &h, body).is_ok());
        }
        let mut h = HeaderMap::new();
        h.insert(DEFAULT_SIGNATURE_HEADER, "zz".parse().unwrap());
        assert!(
            verify(&settings(SignatureScheme::HmacSha256), &h, body)
                .unwrap_err()
                .contains("well-formed")
        );
    }

    #[test]
    fn without_a_secret_nothing_is_required() {
        assert!(verify(&WebhookSettings::default(), &HeaderMap::new(), b"x").is_ok());
    }
}
