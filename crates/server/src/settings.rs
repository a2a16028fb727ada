//! A workflow's deployed settings: for now, how its webhook trigger checks
//! signatures and dedupes deliveries. Secrets are kept, never shown.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSettings {
    #[serde(default)]
    pub webhook: WebhookSettings,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSettings {
    /// The shared secret; when set, every webhook must be signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// `shopify` (X-Shopify-Hmac-Sha256, base64) or `hmac-sha256` (hex in
    /// `signature_header`, optionally prefixed `sha256=`).
    #[serde(default)]
    pub signature: SignatureScheme,
    /// For `hmac-sha256`: the header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_header: Option<String>,
    /// A header whose value identifies a delivery (Shopify:
    /// `x-shopify-webhook-id`); a second delivery starts no run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_header: Option<String>,
    /// How long a delivery id is remembered, in seconds (default one day).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedupe_ttl_secs: Option<u64>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    Shopify,
    HmacSha256,
}

pub const DEFAULT_DEDUPE_TTL_SECS: u64 = 86_400;
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-signature";

impl WorkflowSettings {
    /// What the API shows: secrets replaced by a marker.
    pub fn redacted(&self) -> serde_json::Value {
        let mut shown = self.clone();
        let has_secret = shown.webhook.secret.take().is_some();
        let mut v = serde_json::to_value(shown).expect("settings serialise");
        v["webhook"]["secret_set"] = serde_json::Value::Bool(has_secret);
        v
    }
}
