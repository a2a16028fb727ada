//! A workflow's deployed settings: for now, how its webhook trigger checks
//! signatures and dedupes deliveries. Secrets are kept, never shown.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSettings {
    #[serde(default)]
    pub webhook: WebhookSettings,
    /// A schedule trigger (see `schedule`), if the workflow runs on a clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::schedule::ScheduleSettings>,
    /// Most runs active at once, optionally per key; the rest wait `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<crate::concurrency::ConcurrencySettings>,
    /// Most runs started per period; the rest wait `queued`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<crate::concurrency::ThrottleSettings>,
    /// Variables to set at deploy (kept with the workflow's env, not here).
    #[serde(default, skip_serializing)]
    pub env: std::collections::BTreeMap<String, String>,
    /// Secrets to set at deploy: sealed with the server's key, never shown.
    #[serde(default, skip_serializing)]
    pub secrets: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
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

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    #[default]
    Shopify,
    HmacSha256,
}

pub const DEFAULT_DEDUPE_TTL_SECS: u64 = 86_400;
pub const DEFAULT_SIGNATURE_HEADER: &str = "x-signature";

impl WorkflowSettings {
    /// Checks the settings and turns them into what the store publishes;
    /// `now` is the deploy time (a schedule's default start). The error says
    /// what to write instead.
    pub fn publish(
        mut self,
        name: &str,
        version: flowstate_core::VersionId,
        http_token: String,
        now: flowstate_core::Timestamp,
        min_schedule_interval: std::time::Duration,
    ) -> Result<flowstate_store::Publish, String> {
        if let Some(c) = &self.concurrency {
            c.check()?;
        }
        if let Some(t) = &self.throttle {
            t.check()?;
        }
        let schedule = match &mut self.schedule {
            None => None,
            Some(s) => {
                let checked = s.check(now, min_schedule_interval)?;
                // Store the start it was given, so later fires agree on it.
                if s.every.is_some() && s.start.is_none() {
                    s.start = Some(flowstate_core::Timestamp::to_string(&now));
                }
                Some(flowstate_store::ScheduleSpec {
                    spec: serde_json::to_string(&s).expect("schedules serialise"),
                    first_fire_at: checked.first(now),
                })
            }
        };
        Ok(flowstate_store::Publish {
            name: name.to_string(),
            version,
            settings: serde_json::to_string(&self).expect("settings serialise"),
            http_token,
            now,
            schedule,
            env: Vec::new(),
        })
    }

    /// The deploy's `env` and `secrets`, checked and sealed for the store.
    pub fn variables(
        &self,
        key: Option<&flowstate_core::secrets::SecretKey>,
    ) -> Result<Vec<flowstate_store::EnvVar>, String> {
        let plain = self.env.iter().map(|(k, v)| (k, v, false));
        let sealed = self.secrets.iter().map(|(k, v)| (k, v, true));
        plain
            .chain(sealed)
            .map(|(name, value, secret)| crate::variables::seal_var(key, name, value, secret))
            .collect()
    }

    /// The gate a new run with this data (JSON text) passes, if any.
    pub fn gate(&self, data: &str) -> Option<flowstate_store::RunGate> {
        crate::concurrency::gate(self.concurrency.as_ref(), self.throttle.as_ref(), data)
    }

    /// What the API shows: secrets replaced by a marker.
    pub fn redacted(&self) -> serde_json::Value {
        let mut shown = self.clone();
        let has_secret = shown.webhook.secret.take().is_some();
        let mut v = serde_json::to_value(shown).expect("settings serialise");
        v["webhook"]["secret_set"] = serde_json::Value::Bool(has_secret);
        v
    }
}
