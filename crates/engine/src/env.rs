//! The `env` a step sees: the workflow's variables, its secrets opened with
//! the operator's key. Read from the store at most once a second per
//! workflow (a fan-out would otherwise read it on every step), so a change
//! reaches new steps within a second.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flowstate_core::executor::StepEnv;
use flowstate_core::secrets::SecretKey;
use flowstate_store::Store;

use crate::Inner;

const TTL: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct EnvCache(tokio::sync::Mutex<HashMap<String, (Instant, Arc<StepEnv>)>>);

/// The env for a step of `workflow`; an error says why a secret is not
/// available (no key, or another key).
pub async fn step_env<S: Store, E>(
    inner: &Inner<S, E>,
    workflow: &str,
) -> Result<Arc<StepEnv>, String> {
    if let Some((at, env)) = inner.env.0.lock().await.get(workflow)
        && at.elapsed() < TTL
    {
        return Ok(env.clone());
    }
    let stored = inner
        .store
        .env_vars(workflow.to_string())
        .await
        .map_err(|e| format!("the workflow's env could not be read ({e})"))?;
    let key: Option<&SecretKey> = inner.config.secret_key.as_ref();
    let env = StepEnv::build(
        stored.into_iter().map(|v| (v.name, v.value, v.secret)),
        |name, sealed| match key {
            Some(k) => k.open(sealed).map_err(|e| format!("env.{name}: {e}")),
            None => Err(format!(
                "env.{name} is a secret and this server has no --secret-key (FLOWSTATE_SECRET_KEY) to open it; restart it with the key the secret was set with"
            )),
        },
    )?;
    let env = Arc::new(env);
    let mut cache = inner.env.0.lock().await;
    if cache.len() > 10_000 {
        cache.clear();
    }
    cache.insert(workflow.to_string(), (Instant::now(), env.clone()));
    Ok(env)
}

impl EnvCache {
    /// Drops a workflow's cached env (it was just changed here).
    pub async fn forget(&self, workflow: &str) {
        self.0.lock().await.remove(workflow);
    }
}
