//! Choosing and connecting the backends: the embedded ones (SQLite + local
//! files under the data directory) or the AWS ones (SQS, S3, DynamoDB,
//! Redis, Postgres — real or emulated, by endpoint settings). This is the
//! only place that knows both; everything else sees the domain's ports.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sound_creator_aws::AwsBackends;
use sound_creator_core::ports::{CallbackSender, Ports, SignedDownloads, SignedUploads};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_settings::{BackendKind, Settings};
use sound_creator_webhook::HttpCallbackSender;

pub struct Backends {
    pub ports: Ports,
    /// Set in the embedded mode, where the API serves the download links.
    pub downloads: Option<Arc<dyn SignedDownloads>>,
    /// Set in the embedded mode, where the API takes the upload PUTs.
    pub uploads: Option<Arc<dyn SignedUploads>>,
    pub visibility_timeout: Duration,
    pub label: &'static str,
}

/// Connects the backends `settings.backend` names. `public_base_url` is
/// where the embedded mode's signed links point (known once the API has
/// bound its port).
pub async fn connect(settings: &Settings, public_base_url: &str) -> anyhow::Result<Backends> {
    let callbacks: Arc<dyn CallbackSender> = Arc::new(
        HttpCallbackSender::new(settings.service.callbacks.timeout)
            .context("cannot build the HTTP client for callbacks")?,
    );
    match settings.backend {
        BackendKind::Embedded => {
            let data_dir = &settings.embedded.data_dir;
            let options = EmbeddedOptions {
                public_base_url: public_base_url.to_owned(),
                max_receives: settings.worker.max_receives(),
                ..EmbeddedOptions::default()
            };
            let visibility_timeout = options.visibility_timeout;
            let store = EmbeddedStore::open(data_dir, options)
                .await
                .with_context(|| {
                    format!("cannot open the embedded store in {}", data_dir.display())
                })?;
            let downloads: Arc<dyn SignedDownloads> = store.blobs();
            let uploads: Arc<dyn SignedUploads> = store.blobs();
            Ok(Backends {
                ports: store.ports(callbacks),
                downloads: Some(downloads),
                uploads: Some(uploads),
                visibility_timeout,
                label: "embedded",
            })
        }
        BackendKind::Aws => {
            let backends = AwsBackends::connect(&settings.aws)
                .await
                .context("cannot connect the AWS backends")?;
            Ok(Backends {
                ports: backends.into_ports(callbacks),
                downloads: None,
                uploads: None,
                visibility_timeout: settings.aws.sqs_visibility_timeout,
                label: "aws",
            })
        }
    }
}

/// `sound-creator provision`: queues (with dead-letter queues), bucket and
/// table on the configured endpoint; safe to run again.
pub async fn provision(settings: &Settings) -> anyhow::Result<()> {
    let aws = &settings.aws;
    sound_creator_aws::provision(aws).await?;
    println!(
        "provisioned queues, bucket {} and table {}",
        aws.s3_bucket, aws.dynamodb_table
    );
    Ok(())
}
