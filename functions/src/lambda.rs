//! What the two Lambda functions share, kept out of their `main`s so tests
//! can call it: the completions-queue batch handler, the cold-start wiring
//! (settings, secrets, AWS backends) and JSON logging.
//!
//! The completions Lambda is the AWS twin of the completion loop in
//! `worker`: SQS hands it a batch, each record goes through the domain's
//! [`Completion`] step, and the records that must be seen again are named in
//! an [`SqsBatchResponse`] so SQS redelivers only those. Nothing here decides
//! a task's status (the domain does) or deletes messages itself (Lambda's
//! event source mapping does, for every record not reported as failed).

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use sound_creator_aws::AwsBackends;
use sound_creator_core::completion::{Completion, CompletionOutcome};
use sound_creator_core::messages::{decode, CompletionEvent, MalformedMessage};
use sound_creator_core::ports::{BackendError, CallbackSender, Ports};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_settings::{process_env, Settings};
use sound_creator_webhook::HttpCallbackSender;
use tracing_subscriber::EnvFilter;

/// What became of one SQS record.
#[derive(Debug)]
pub enum RecordOutcome {
    /// Handled; SQS may delete it.
    Handled(CompletionOutcome),
    /// A backend failed: the record goes back to the queue and is tried again
    /// after its visibility timeout.
    Retryable(BackendError),
    /// The body cannot be read and never will be. It is still reported as a
    /// failure, so that SQS's redrive policy moves it to the dead-letter queue
    /// after `maxReceiveCount` receives, where it can be inspected; deleting
    /// it would lose the evidence.
    Poison(MalformedMessage),
}

impl RecordOutcome {
    pub fn is_failure(&self) -> bool {
        !matches!(self, RecordOutcome::Handled(_))
    }
}

/// Handles one batch from the completions queue. Records are handled one
/// after another (the completion step of a task is not meant to race with
/// itself), and every record that was not handled is named in
/// `batch_item_failures` (the function's event source mapping must have
/// `ReportBatchItemFailures`).
pub async fn handle_completion_batch(
    ports: &Ports,
    settings: &ServiceSettings,
    event: SqsEvent,
) -> SqsBatchResponse {
    let step = Completion { ports, settings };
    let mut response = SqsBatchResponse::default();
    for record in &event.records {
        let message_id = record.message_id.clone().unwrap_or_default();
        let outcome = handle_record(&step, record).await;
        log_outcome(&message_id, record, &outcome);
        if outcome.is_failure() {
            // SQS always sets a message id; without one Lambda could not
            // tell which record failed and would retry the whole batch.
            response.add_failure(message_id);
        }
    }
    response
}

async fn handle_record(step: &Completion<'_>, record: &SqsMessage) -> RecordOutcome {
    let event: CompletionEvent = match record.body.as_deref() {
        None => return RecordOutcome::Poison(MalformedMessage("the record has no body".into())),
        Some(body) => match decode(body) {
            Ok(event) => event,
            Err(e) => return RecordOutcome::Poison(e),
        },
    };
    match step.handle(&event).await {
        Ok(outcome) => RecordOutcome::Handled(outcome),
        Err(e) => RecordOutcome::Retryable(e),
    }
}

fn log_outcome(message_id: &str, record: &SqsMessage, outcome: &RecordOutcome) {
    let receive_count = record
        .attributes
        .get("ApproximateReceiveCount")
        .map(String::as_str)
        .unwrap_or("?");
    match outcome {
        RecordOutcome::Handled(outcome) => {
            tracing::debug!(message_id, ?outcome, "completion event handled");
        }
        RecordOutcome::Retryable(BackendError::Unavailable { .. }) => {
            tracing::warn!(message_id, receive_count, error = %outcome_error(outcome), "completion event failed; SQS will redeliver it");
        }
        RecordOutcome::Retryable(BackendError::Corrupt { .. }) | RecordOutcome::Poison(_) => {
            tracing::error!(message_id, receive_count, error = %outcome_error(outcome), "completion event cannot be handled; it goes to the dead-letter queue after maxReceiveCount receives");
        }
    }
}

fn outcome_error(outcome: &RecordOutcome) -> String {
    match outcome {
        RecordOutcome::Handled(_) => String::new(),
        RecordOutcome::Retryable(e) => e.to_string(),
        RecordOutcome::Poison(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Cold start

/// A reference to a secret: `<arn>` for a plain-string secret, or
/// `<arn>#<field>` for one field of a JSON secret (RDS-managed master
/// passwords are stored as `{"username": ..., "password": ...}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretRef {
    pub secret_id: String,
    pub field: Option<String>,
}

impl SecretRef {
    pub fn parse(raw: &str) -> Option<Self> {
        let raw = raw.trim();
        let (id, field) = match raw.rsplit_once('#') {
            Some((id, field)) if !field.is_empty() => (id, Some(field.to_owned())),
            Some((id, _)) => (id, None),
            None => (raw, None),
        };
        (!id.is_empty()).then(|| SecretRef {
            secret_id: id.to_owned(),
            field,
        })
    }

    /// The setting's value out of the secret's string.
    pub fn select(&self, secret_string: &str) -> anyhow::Result<String> {
        let Some(field) = &self.field else {
            return Ok(secret_string.to_owned());
        };
        let value: serde_json::Value = serde_json::from_str(secret_string)
            .context("the secret is not a JSON object, but a field was asked for")?;
        match value.get(field) {
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) if !other.is_null() => Ok(other.to_string()),
            _ => anyhow::bail!("the secret has no field {field:?}"),
        }
    }
}

/// The secret references to resolve: `(setting name, reference)` for every
/// secret setting that is not set directly but names `<NAME>_SECRET_ARN`.
pub fn secret_refs(
    lookup: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Vec<(&'static str, SecretRef)>> {
    Settings::secret_references(lookup)
        .into_iter()
        .map(|(name, raw)| {
            SecretRef::parse(&raw)
                .map(|reference| (name, reference))
                .with_context(|| format!("{name}_SECRET_ARN is not a secret reference"))
        })
        .collect()
}

/// Reads the referenced secrets; the answer overlays the environment.
/// Values are never logged, only the names of the settings they fill.
pub async fn resolve_secrets(
    sdk: &aws_config::SdkConfig,
    refs: Vec<(&'static str, SecretRef)>,
) -> anyhow::Result<HashMap<String, String>> {
    let mut values = HashMap::new();
    if refs.is_empty() {
        return Ok(values);
    }
    let client = aws_sdk_secretsmanager::Client::new(sdk);
    for (name, reference) in refs {
        let found = client
            .get_secret_value()
            .secret_id(&reference.secret_id)
            .send()
            .await
            .with_context(|| {
                format!("Failed to read the secret for {name} from Secrets Manager")
            })?;
        let raw = found
            .secret_string()
            .with_context(|| format!("the secret for {name} is binary, not a string"))?;
        let value = reference
            .select(raw)
            .with_context(|| format!("Failed to read the secret for {name}"))?;
        values.insert(name.to_owned(), value);
        tracing::info!(setting = name, "setting read from Secrets Manager");
    }
    Ok(values)
}

/// Everything a function needs, built once per execution environment (cold
/// start) and reused by every invocation.
pub struct FunctionEnvironment {
    pub ports: Ports,
    pub settings: Settings,
}

impl FunctionEnvironment {
    /// Reads the settings (environment plus referenced secrets) and connects
    /// the AWS backends.
    pub async fn from_env() -> anyhow::Result<Self> {
        // The SDK configuration (region, credentials) does not depend on the
        // secrets, so a first read of the settings can build it.
        let bootstrap = Settings::from_env().context("invalid settings")?;
        let sdk = sound_creator_aws::sdk_config(&bootstrap.aws).await;
        let secrets = resolve_secrets(&sdk, secret_refs(process_env)?).await?;
        let settings =
            Settings::from_lookup(|name| secrets.get(name).cloned().or_else(|| process_env(name)))
                .context("invalid settings")?;
        let backends = AwsBackends::connect(&settings.aws)
            .await
            .context("Failed to connect the AWS backends")?;
        let callbacks: Arc<dyn CallbackSender> = Arc::new(
            HttpCallbackSender::new(settings.service.callbacks.timeout)
                .context("Failed to build the HTTP client for callbacks")?,
        );
        let ports = backends.into_ports(callbacks);
        Ok(Self { ports, settings })
    }
}

/// JSON log lines on stdout, which Lambda ships to CloudWatch as they are.
/// `RUST_LOG` sets the filter (default `info`). No ANSI colours, no time
/// stamps of our own: CloudWatch adds them.
pub fn init_tracing() {
    let directive = sound_creator_settings::TelemetrySettings::from_env()
        .map(|t| t.log_filter)
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(directive).unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_reference_may_name_a_json_field() {
        let plain =
            SecretRef::parse("arn:aws:secretsmanager:eu-west-1:1:secret:token-AbC").expect("valid");
        assert_eq!(plain.field, None);
        assert_eq!(plain.select("s3cr3t").expect("plain"), "s3cr3t");

        let field = SecretRef::parse("arn:aws:secretsmanager:eu-west-1:1:secret:rds!db-1#password")
            .expect("valid");
        assert_eq!(
            field.secret_id,
            "arn:aws:secretsmanager:eu-west-1:1:secret:rds!db-1"
        );
        assert_eq!(
            field
                .select(r#"{"username":"u","password":"p@ss"}"#)
                .expect("field"),
            "p@ss"
        );
        assert!(field.select(r#"{"username":"u"}"#).is_err());
        assert!(field.select("not json").is_err());
        assert!(SecretRef::parse("  ").is_none());
    }

    #[test]
    fn a_setting_set_directly_is_not_read_from_secrets_manager() {
        let vars = HashMap::from([
            ("MARKETPLACE_TOKEN", "direct"),
            ("MARKETPLACE_TOKEN_SECRET_ARN", "arn:token"),
            ("POSTGRES_PASSWORD_SECRET_ARN", "arn:rds#password"),
            ("WEBHOOK_SECRET_SECRET_ARN", ""),
            ("REDIS_HOST_SECRET_ARN", "arn:not-a-secret"),
        ]);
        let refs = secret_refs(|name| vars.get(name).map(|v| (*v).to_owned())).expect("valid");
        assert_eq!(
            refs,
            vec![(
                "POSTGRES_PASSWORD",
                SecretRef {
                    secret_id: "arn:rds".into(),
                    field: Some("password".into())
                }
            )]
        );
    }
}
