//! AWS backends: SQS for jobs, S3 for audio, DynamoDB for task and upload
//! records, plus Redis for temporary results and Postgres for statistics, as
//! the seed keeps them.
//!
//! One adapter module per backend, each implementing a port of
//! `sound_creator_core::ports`, all built from one [`AwsSettings`]. Adapters
//! store and move data and never decide a status transition. Every driver
//! error becomes a one-line [`BackendError`]: nothing here panics on a
//! backend that is down, and every client reconnects by itself once the
//! backend is back (SDK clients and pools open new connections per call;
//! Redis goes through a reconnecting `ConnectionManager`).

pub mod dynamodb;
pub mod dynamodb_uploads;
pub mod postgres_stats;
pub mod provision;
pub mod redis_cache;
pub mod s3;
pub mod sqs;
pub mod task_protection;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use sound_creator_core::ports::{
    Backend, BackendError, BlobStore, JobQueue, ResultCache, StatsStore, TaskStore, UploadStore,
};

pub use provision::provision;
pub use sound_creator_settings::{AwsSettings, Secret};

/// Every port of an AWS-mode deployment, ready to hand to the service.
#[derive(Clone)]
pub struct AwsBackends {
    pub queue: Arc<dyn JobQueue>,
    pub tasks: Arc<dyn TaskStore>,
    pub uploads: Arc<dyn UploadStore>,
    pub cache: Arc<dyn ResultCache>,
    pub stats: Arc<dyn StatsStore>,
    pub blobs: Arc<dyn BlobStore>,
}

impl AwsBackends {
    /// Builds every client and runs the Postgres migrations (so Postgres must
    /// be reachable now). The AWS clients and Redis connect on first use.
    pub async fn connect(settings: &AwsSettings) -> anyhow::Result<Self> {
        let sdk = sdk_config(settings).await;
        let stats = postgres_stats::PostgresStats::connect(settings)
            .await
            .context("Failed to connect to Postgres and run the stats migrations")?;
        let cache = redis_cache::RedisCache::connect(settings)
            .context("Failed to set up the Redis client")?;
        Ok(Self {
            queue: Arc::new(sqs::SqsQueue::new(&sdk, settings)),
            tasks: Arc::new(dynamodb::DynamoTasks::new(&sdk, settings)),
            uploads: Arc::new(dynamodb_uploads::DynamoUploads::new(&sdk, settings)),
            cache: Arc::new(cache),
            stats: Arc::new(stats),
            blobs: Arc::new(s3::S3Blobs::new(&sdk, settings)),
        })
    }

    /// All the domain's ports: these backends plus the callback sender.
    pub fn into_ports(
        self,
        callbacks: Arc<dyn sound_creator_core::ports::CallbackSender>,
    ) -> sound_creator_core::ports::Ports {
        sound_creator_core::ports::Ports {
            tasks: self.tasks,
            uploads: self.uploads,
            queue: self.queue,
            cache: self.cache,
            stats: self.stats,
            blobs: self.blobs,
            callbacks,
            finals: Default::default(),
            // Redis answers a result read for a fraction of a DynamoDB read.
            cache_final_results: true,
        }
    }
}

/// The shared SDK configuration: region, credentials, short timeouts and a
/// small retry budget, so a dead endpoint fails within seconds instead of
/// holding a request (or a worker) for the SDK's defaults.
pub async fn sdk_config(settings: &AwsSettings) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(settings.region.clone()))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(settings.connect_timeout)
                .read_timeout(settings.operation_timeout)
                .operation_timeout(settings.operation_timeout)
                .build(),
        )
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(3)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(1)),
        );
    if let (Some(key), Some(secret)) = (&settings.access_key, &settings.secret_key) {
        loader = loader.credentials_provider(aws_sdk_sqs::config::Credentials::new(
            key.clone(),
            secret.expose().to_owned(),
            None,
            None,
            "sound-creator-settings",
        ));
    }
    loader.load().await
}

/// One line naming the whole cause chain of an SDK error: its `Display`
/// alone is often just "service error" or "dispatch failure", and
/// `DisplayErrorContext` appends a multi-kilobyte `Debug` dump.
pub(crate) fn sdk_unavailable(
    backend: Backend,
    err: &(dyn std::error::Error + 'static),
) -> BackendError {
    BackendError::unavailable(backend, error_chain(err))
}

/// `outer: cause: root cause`, skipping a cause its parent already quotes.
pub(crate) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    one_line(&parts.join(": "))
}

pub(crate) fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn an_error_chain_reads_as_one_line_without_repeats() {
        let err = Layer(
            "dispatch failure",
            Some(Box::new(Layer(
                "io error: refused",
                Some(Box::new(Layer("refused\nby peer", None))),
            ))),
        );
        assert_eq!(
            error_chain(&err),
            "dispatch failure: io error: refused: refused by peer"
        );
        let repeated = Layer(
            "timeout: no answer",
            Some(Box::new(Layer("no answer", None))),
        );
        assert_eq!(error_chain(&repeated), "timeout: no answer");
    }
}
