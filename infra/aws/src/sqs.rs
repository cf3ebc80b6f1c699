//! SQS as the job queue: one queue per model family plus the completions
//! queue, each named `<SQS_QUEUE_PREFIX><QueueName::as_str()>` with a
//! `<name>-dlq` dead-letter queue (see `provision`).
//!
//! Long polling and batch receive keep the GPU workers' poll cost low; the
//! receive count comes from SQS itself (`ApproximateReceiveCount`) so the
//! domain can tell a redelivery from a first try. Queue URLs are looked up
//! by name once and then reused. This module never creates a queue: that is
//! `provision`'s job, so a typo in a prefix fails loudly instead of
//! silently creating an orphan queue.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::timeout::TimeoutConfig;
use aws_config::SdkConfig;
use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use aws_sdk_sqs::Client;
use sound_creator_core::ports::{
    Backend, BackendError, Delivery, JobQueue, PortResult, QueueDepth, QueueName,
};

use crate::{sdk_unavailable, AwsSettings};

/// SQS's own limits.
pub const MAX_WAIT: Duration = Duration::from_secs(20);
pub const MAX_BATCH: usize = 10;
pub const MAX_DELAY: Duration = Duration::from_secs(900);
pub const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 3600);

pub struct SqsQueue {
    client: Client,
    prefix: String,
    operation_timeout: Duration,
    urls: Mutex<HashMap<QueueName, String>>,
}

impl SqsQueue {
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            client: client(sdk, settings),
            prefix: settings.sqs_queue_prefix.clone(),
            operation_timeout: settings.operation_timeout,
            urls: Mutex::new(HashMap::new()),
        }
    }

    pub fn queue_name(&self, queue: QueueName) -> String {
        queue_name(&self.prefix, queue)
    }

    async fn url(&self, queue: QueueName) -> PortResult<String> {
        if let Some(url) = self
            .urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&queue)
        {
            return Ok(url.clone());
        }
        let name = self.queue_name(queue);
        let found = self
            .client
            .get_queue_url()
            .queue_name(&name)
            .send()
            .await
            .map_err(|e| {
                if e.as_service_error()
                    .is_some_and(|s| s.is_queue_does_not_exist())
                {
                    BackendError::unavailable(
                        Backend::Queue,
                        format!("queue {name} does not exist (run provision)"),
                    )
                } else {
                    sdk_unavailable(Backend::Queue, &e)
                }
            })?;
        let url = found.queue_url.ok_or_else(|| {
            BackendError::unavailable(
                Backend::Queue,
                format!("SQS returned no URL for queue {name}"),
            )
        })?;
        self.urls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(queue, url.clone());
        Ok(url)
    }
}

pub fn client(sdk: &SdkConfig, settings: &AwsSettings) -> Client {
    let mut config = aws_sdk_sqs::config::Builder::from(sdk);
    if let Some(endpoint) = settings.sqs_endpoint() {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

pub fn queue_name(prefix: &str, queue: QueueName) -> String {
    format!("{prefix}{}", queue.as_str())
}

pub fn dead_letter_queue_name(prefix: &str, queue: QueueName) -> String {
    format!("{}-dlq", queue_name(prefix, queue))
}

fn unavailable(err: impl std::error::Error + 'static) -> BackendError {
    sdk_unavailable(Backend::Queue, &err)
}

fn whole_seconds(d: Duration, cap: Duration) -> i32 {
    i32::try_from(d.min(cap).as_secs()).unwrap_or(i32::MAX)
}

#[async_trait]
impl JobQueue for SqsQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> PortResult<()> {
        let url = self.url(queue).await?;
        self.client
            .send_message()
            .queue_url(url)
            .message_body(body)
            .delay_seconds(whole_seconds(delay, MAX_DELAY))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        let url = self.url(queue).await?;
        let wait = wait.min(MAX_WAIT);
        // The long poll itself may take `wait`: the usual operation timeout
        // applies on top of it, not instead of it.
        let timeouts = TimeoutConfig::builder()
            .read_timeout(wait + self.operation_timeout)
            .operation_timeout(wait + self.operation_timeout)
            .build();
        let out = self
            .client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(i32::try_from(max.clamp(1, MAX_BATCH)).unwrap_or(1))
            .wait_time_seconds(whole_seconds(wait, MAX_WAIT))
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(unavailable)?;
        let mut deliveries = Vec::new();
        for message in out.messages.unwrap_or_default() {
            let (Some(message_id), Some(receipt)) = (message.message_id, message.receipt_handle)
            else {
                return Err(BackendError::corrupt(
                    Backend::Queue,
                    "SQS returned a message without id or receipt handle",
                ));
            };
            let receive_count = message
                .attributes
                .as_ref()
                .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                .and_then(|raw| raw.parse().ok())
                .unwrap_or(1);
            deliveries.push(Delivery {
                message_id,
                receipt,
                body: message.body.unwrap_or_default(),
                receive_count,
            });
        }
        Ok(deliveries)
    }

    async fn delete(&self, queue: QueueName, receipt: &str) -> PortResult<()> {
        let url = self.url(queue).await?;
        self.client
            .delete_message()
            .queue_url(url)
            .receipt_handle(receipt)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn extend_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        timeout: Duration,
    ) -> PortResult<()> {
        let url = self.url(queue).await?;
        self.client
            .change_message_visibility()
            .queue_url(url)
            .receipt_handle(receipt)
            .visibility_timeout(whole_seconds(timeout, MAX_VISIBILITY))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth> {
        let url = self.url(queue).await?;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(unavailable)?;
        let attributes = out.attributes.unwrap_or_default();
        let count = |name: QueueAttributeName| -> PortResult<u64> {
            match attributes.get(&name) {
                None => Ok(0),
                Some(raw) => raw.parse().map_err(|_| {
                    BackendError::corrupt(
                        Backend::Queue,
                        format!("{name:?} is not a number: {raw:?}"),
                    )
                }),
            }
        };
        Ok(QueueDepth {
            queued: count(QueueAttributeName::ApproximateNumberOfMessages)?
                + count(QueueAttributeName::ApproximateNumberOfMessagesDelayed)?,
            in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)?,
        })
    }
}
