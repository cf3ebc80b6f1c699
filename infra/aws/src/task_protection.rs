//! ECS task scale-in protection through the ECS container agent's endpoint
//! (`PUT $ECS_AGENT_URI/task-protection/v1/state`), the adapter of the
//! `ScaleInProtection` port. The agent injects `ECS_AGENT_URI` into every
//! container of an ECS task and acts with the task role, which needs
//! `ecs:UpdateTaskProtection` (terraform/iam.tf).
//!
//! Its settings are read here and nowhere else:
//! - `WORKER_TASK_PROTECTION`: `true` to hold protection while a job is in
//!   hand (default `false`: outside ECS there is no agent to ask);
//! - `WORKER_TASK_PROTECTION_MINUTES`: how long one protection lasts unless
//!   renewed (default 60, ECS allows 1 to 2880);
//! - `ECS_AGENT_URI`: set by ECS itself.
//!
//! It never retries on its own: the worker asks again on its next batch.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Value};
use sound_creator_core::ports::{ProtectionError, ScaleInProtection};

/// The agent answers on the instance itself; a slow answer means it is in
/// trouble, and the job must not wait on it.
const AGENT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProtectionSettings {
    pub agent_uri: String,
    pub expires_in_minutes: u32,
}

impl TaskProtectionSettings {
    /// `Ok(None)` when protection is off; an error names the bad setting.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<TaskProtectionSettings>, String> {
        let enabled = match lookup("WORKER_TASK_PROTECTION").as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(format!(
                    "WORKER_TASK_PROTECTION must be true or false, not {other:?}"
                ))
            }
        };
        if !enabled {
            return Ok(None);
        }
        let expires_in_minutes = match lookup("WORKER_TASK_PROTECTION_MINUTES") {
            None => 60,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(minutes) if (1..=2880).contains(&minutes) => minutes,
                _ => {
                    return Err(format!(
                        "WORKER_TASK_PROTECTION_MINUTES must be a whole number of minutes from 1 to 2880, not {raw:?}"
                    ))
                }
            },
        };
        let agent_uri = lookup("ECS_AGENT_URI")
            .map(|uri| uri.trim().trim_end_matches('/').to_owned())
            .filter(|uri| !uri.is_empty())
            .ok_or_else(|| {
                "WORKER_TASK_PROTECTION is true but ECS_AGENT_URI is not set: task scale-in protection needs the ECS container agent (run in an ECS task, or set WORKER_TASK_PROTECTION=false)".to_owned()
            })?;
        Ok(Some(TaskProtectionSettings {
            agent_uri,
            expires_in_minutes,
        }))
    }

    pub fn from_env() -> Result<Option<TaskProtectionSettings>, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn protection_is_off_unless_asked_for() {
        assert_eq!(TaskProtectionSettings::from_lookup(lookup(&[])), Ok(None));
        assert_eq!(
            TaskProtectionSettings::from_lookup(lookup(&[
                ("WORKER_TASK_PROTECTION", "false"),
                ("ECS_AGENT_URI", "http://169.254.170.2/api/x")
            ])),
            Ok(None)
        );
    }

    #[test]
    fn protection_needs_the_agent_and_sane_minutes() {
        let on = TaskProtectionSettings::from_lookup(lookup(&[
            ("WORKER_TASK_PROTECTION", "true"),
            ("ECS_AGENT_URI", "http://169.254.170.2/api/abc/"),
        ]));
        assert_eq!(
            on,
            Ok(Some(TaskProtectionSettings {
                agent_uri: "http://169.254.170.2/api/abc".into(),
                expires_in_minutes: 60
            }))
        );
        let no_agent =
            TaskProtectionSettings::from_lookup(lookup(&[("WORKER_TASK_PROTECTION", "true")]));
        assert!(no_agent.is_err_and(|e| e.contains("ECS_AGENT_URI")));
        for bad in ["0", "2881", "ten"] {
            let err = TaskProtectionSettings::from_lookup(lookup(&[
                ("WORKER_TASK_PROTECTION", "true"),
                ("WORKER_TASK_PROTECTION_MINUTES", bad),
                ("ECS_AGENT_URI", "http://x"),
            ]));
            assert!(
                err.is_err_and(|e| e.contains("WORKER_TASK_PROTECTION_MINUTES")),
                "{bad}"
            );
        }
        let typo =
            TaskProtectionSettings::from_lookup(lookup(&[("WORKER_TASK_PROTECTION", "yes")]));
        assert!(typo.is_err());
    }
}
