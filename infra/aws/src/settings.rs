//! The AWS-mode backend settings, read from the environment with the seed's
//! names (`AWS_REGION_NAME`, `AWS_ACCESS_KEY`, `REDIS_HOST`, `POSTGRES_USER`,
//! ...) plus the SQS/S3/DynamoDB names this deployment adds. Secrets live in
//! [`Secret`], whose `Debug` never shows them, so the settings can be logged.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct AwsSettings {
    /// `AWS_REGION_NAME` (the seed's name; `AWS_REGION` as a fallback), default `us-east-1`.
    pub region: String,
    /// `AWS_ACCESS_KEY` + `AWS_SECRET_KEY`; when absent the SDK's default
    /// credential chain is used (instance or task role in AWS).
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// `AWS_ENDPOINT_URL`: an emulator (moto, LocalStack) for all services.
    pub endpoint_url: Option<String>,
    /// `AWS_ENDPOINT_URL_SQS` / `_S3` / `_DYNAMODB`: per-service overrides.
    pub sqs_endpoint_url: Option<String>,
    pub s3_endpoint_url: Option<String>,
    pub dynamodb_endpoint_url: Option<String>,
    /// `SQS_QUEUE_PREFIX`: queue names are `<prefix><QueueName::as_str()>`.
    pub sqs_queue_prefix: String,
    /// `SQS_VISIBILITY_TIMEOUT` (seconds): the queues' default, set by `provision`.
    pub sqs_visibility_timeout: Duration,
    /// `SQS_MAX_RECEIVE_COUNT`: receives before a message goes to the DLQ.
    pub sqs_max_receive_count: u32,
    /// `S3_BUCKET`.
    pub s3_bucket: String,
    /// `DYNAMODB_TABLE`.
    pub dynamodb_table: String,
    /// `REDIS_HOST`, `REDIS_PORT`, `REDIS_DB_NAME` (a database number).
    pub redis_host: String,
    pub redis_port: u16,
    pub redis_db: i64,
    /// `POSTGRES_HOST`, `POSTGRES_PORT`, `POSTGRES_USER`, `POSTGRES_PASSWORD`, `POSTGRES_DB`.
    pub postgres_host: String,
    pub postgres_port: u16,
    pub postgres_user: String,
    pub postgres_password: Secret,
    pub postgres_db: String,
    /// How long opening a connection may take before the backend counts as down.
    pub connect_timeout: Duration,
    /// How long one call may take (long polls get their wait on top).
    pub operation_timeout: Duration,
}

impl AwsSettings {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the settings through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let access_key = get("AWS_ACCESS_KEY");
        let secret_key = get("AWS_SECRET_KEY").map(Secret::new);
        if access_key.is_some() != secret_key.is_some() {
            bail!("set both AWS_ACCESS_KEY and AWS_SECRET_KEY, or neither (to use the default credential chain)");
        }
        Ok(Self {
            region: get("AWS_REGION_NAME")
                .or_else(|| get("AWS_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
            access_key,
            secret_key,
            endpoint_url: get("AWS_ENDPOINT_URL"),
            sqs_endpoint_url: get("AWS_ENDPOINT_URL_SQS"),
            s3_endpoint_url: get("AWS_ENDPOINT_URL_S3"),
            dynamodb_endpoint_url: get("AWS_ENDPOINT_URL_DYNAMODB"),
            sqs_queue_prefix: get("SQS_QUEUE_PREFIX").unwrap_or_else(|| "sound-creator-".into()),
            sqs_visibility_timeout: Duration::from_secs(parse(
                &get,
                "SQS_VISIBILITY_TIMEOUT",
                120,
            )?),
            sqs_max_receive_count: parse(&get, "SQS_MAX_RECEIVE_COUNT", 5)?,
            s3_bucket: get("S3_BUCKET").unwrap_or_else(|| "sound-creator-audio".into()),
            dynamodb_table: get("DYNAMODB_TABLE").unwrap_or_else(|| "sound-creator-tasks".into()),
            redis_host: get("REDIS_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            redis_port: parse(&get, "REDIS_PORT", 6379)?,
            redis_db: parse(&get, "REDIS_DB_NAME", 0)?,
            postgres_host: get("POSTGRES_HOST").unwrap_or_else(|| "127.0.0.1".into()),
            postgres_port: parse(&get, "POSTGRES_PORT", 5432)?,
            postgres_user: get("POSTGRES_USER").unwrap_or_else(|| "postgres".into()),
            postgres_password: Secret::new(get("POSTGRES_PASSWORD").unwrap_or_default()),
            postgres_db: get("POSTGRES_DB").unwrap_or_else(|| "sound_creator".into()),
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
        })
    }

    pub fn sqs_endpoint(&self) -> Option<&str> {
        self.sqs_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    pub fn dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }
}

fn parse<T: FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    default: T,
) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match get(name) {
        None => Ok(default),
        Some(raw) => raw
            .parse()
            .with_context(|| format!("{name}={raw:?} is not a valid value")),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<AwsSettings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        AwsSettings::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = settings(&[
            ("AWS_ACCESS_KEY", "AKIA1"),
            ("AWS_SECRET_KEY", "hunter2"),
            ("POSTGRES_PASSWORD", "pg-pass"),
        ])
        .expect("valid settings");
        let shown = format!("{s:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("pg-pass"),
            "{shown}"
        );
    }

    #[test]
    fn per_service_endpoints_override_the_shared_one() {
        let s = settings(&[
            ("AWS_ENDPOINT_URL", "http://a:1"),
            ("AWS_ENDPOINT_URL_S3", "http://s3:2"),
        ])
        .expect("valid");
        assert_eq!(s.s3_endpoint(), Some("http://s3:2"));
        assert_eq!(s.sqs_endpoint(), Some("http://a:1"));
        assert_eq!(s.dynamodb_endpoint(), Some("http://a:1"));
    }

    #[test]
    fn a_half_configured_key_pair_is_rejected() {
        assert!(settings(&[("AWS_ACCESS_KEY", "AKIA1")]).is_err());
    }

    #[test]
    fn a_non_numeric_redis_db_is_rejected_with_its_name() {
        let err = settings(&[("REDIS_DB_NAME", "cache")]).expect_err("must fail");
        assert!(err.to_string().contains("REDIS_DB_NAME"), "{err}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = settings(&[("REDIS_PORT", ""), ("AWS_REGION_NAME", " ")]).expect("valid");
        assert_eq!(s.redis_port, 6379);
        assert_eq!(s.region, "us-east-1");
    }
}
