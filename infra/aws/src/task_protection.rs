//! ECS task scale-in protection through the ECS container agent's endpoint
//! (`PUT $ECS_AGENT_URI/task-protection/v1/state`), the adapter of the
//! `ScaleInProtection` port. The agent injects `ECS_AGENT_URI` into every
//! container of an ECS task and acts with the task role, which needs
//! `ecs:UpdateTaskProtection` (terraform/iam.tf).
//!
//! Its settings (`WORKER_TASK_PROTECTION`, `WORKER_TASK_PROTECTION_MINUTES`,
//! and `ECS_AGENT_URI`, which ECS sets) come from the settings crate.
//!
//! It never retries on its own: the worker asks again on its next batch.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sound_creator_core::ports::{ProtectionError, ScaleInProtection};
use sound_creator_settings::TaskProtectionSettings;

/// The agent answers on the instance itself; a slow answer means it is in
/// trouble, and the job must not wait on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

pub struct EcsTaskProtection {
    client: reqwest::Client,
    url: String,
    expires_in_minutes: u32,
}

impl EcsTaskProtection {
    pub fn new(settings: &TaskProtectionSettings) -> Result<Self, ProtectionError> {
        let client = reqwest::Client::builder()
            .timeout(AGENT_TIMEOUT)
            .build()
            .map_err(|e| ProtectionError(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            client,
            url: format!("{}/task-protection/v1/state", settings.agent_uri),
            expires_in_minutes: settings.expires_in_minutes,
        })
    }

    async fn set(&self, body: Value) -> Result<(), ProtectionError> {
        let response = self
            .client
            .put(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| ProtectionError(format!("the ECS agent did not answer: {e}")))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        // The agent answers {"protection": {...}} on success and
        // {"failure": {...}} or {"error": {...}} otherwise, with 200 for
        // some failures.
        let doc: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() && doc.get("protection").is_some() {
            return Ok(());
        }
        let reason = ["failure", "error"]
            .iter()
            .find_map(|key| doc.get(key))
            .map(|detail| {
                ["Reason", "Message", "Code"]
                    .iter()
                    .find_map(|field| detail.get(field).and_then(Value::as_str))
                    .map(str::to_owned)
                    .unwrap_or_else(|| detail.to_string())
            })
            .unwrap_or_else(|| text.chars().take(200).collect());
        Err(ProtectionError(format!(
            "the ECS agent answered {status}: {reason}"
        )))
    }
}

#[async_trait]
impl ScaleInProtection for EcsTaskProtection {
    async fn protect(&self) -> Result<(), ProtectionError> {
        self.set(json!({"ProtectionEnabled": true, "ExpiresInMinutes": self.expires_in_minutes}))
            .await
    }

    async fn unprotect(&self) -> Result<(), ProtectionError> {
        self.set(json!({"ProtectionEnabled": false})).await
    }

    fn lasts(&self) -> Duration {
        Duration::from_secs(u64::from(self.expires_in_minutes) * 60)
    }
}
