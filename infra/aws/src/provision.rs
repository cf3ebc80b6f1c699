//! Creates what the AWS backends expect to find: every queue with its
//! dead-letter queue and redrive policy, the audio bucket, and the task table
//! with TTL on `expires_at`. Idempotent: it converges an existing setup to
//! the settings (queue attributes are set again) and never deletes
//! anything. Used by tests and by `sound-creator provision` (the CLI);
//! production may use Terraform instead.

use std::collections::HashMap;

use anyhow::{bail, Context};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
    TimeToLiveSpecification, TimeToLiveStatus,
};
use aws_sdk_s3::types::{BucketLocationConstraint, CreateBucketConfiguration};
use aws_sdk_sqs::types::QueueAttributeName;
use sound_creator_core::ports::QueueName;

use crate::dynamodb::{PARTITION_KEY, TTL_ATTRIBUTE};
use crate::sqs::{dead_letter_queue_name, queue_name};
use crate::{sdk_config, AwsSettings};

/// Dead letters are kept as long as SQS allows (14 days) for inspection.
const DLQ_RETENTION_SECONDS: u32 = 14 * 24 * 3600;

pub async fn provision(settings: &AwsSettings) -> anyhow::Result<()> {
    let sdk = sdk_config(settings).await;
    provision_queues(&crate::sqs::client(&sdk, settings), settings).await?;
    provision_bucket(&crate::s3::client(&sdk, settings), settings).await?;
    provision_table(&crate::dynamodb::client(&sdk, settings), settings).await?;
    Ok(())
}

async fn provision_queues(sqs: &aws_sdk_sqs::Client, settings: &AwsSettings) -> anyhow::Result<()> {
    for queue in QueueName::ALL {
        let dlq_name = dead_letter_queue_name(&settings.sqs_queue_prefix, queue);
        let dlq_url = ensure_queue(
            sqs,
            &dlq_name,
            HashMap::from([(
                QueueAttributeName::MessageRetentionPeriod,
                DLQ_RETENTION_SECONDS.to_string(),
            )]),
        )
        .await?;
        let dlq_arn = sqs
            .get_queue_attributes()
            .queue_url(&dlq_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("Failed to read the ARN of {dlq_name}"))?
            .attributes
            .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
            .with_context(|| format!("SQS returned no ARN for {dlq_name}"))?;
        let redrive = serde_json::json!({
            "deadLetterTargetArn": dlq_arn,
            "maxReceiveCount": settings.sqs_max_receive_count.to_string(),
        });
        ensure_queue(
            sqs,
            &queue_name(&settings.sqs_queue_prefix, queue),
            HashMap::from([
                (
                    QueueAttributeName::VisibilityTimeout,
                    settings.sqs_visibility_timeout.as_secs().to_string(),
                ),
                (QueueAttributeName::RedrivePolicy, redrive.to_string()),
            ]),
        )
        .await?;
    }
    Ok(())
}

/// Creates the queue, or sets `attributes` on it when it already exists
/// (`CreateQueue` refuses different attributes for an existing name).
async fn ensure_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: HashMap<QueueAttributeName, String>,
) -> anyhow::Result<String> {
    match sqs.get_queue_url().queue_name(name).send().await {
        Ok(found) => {
            let url = found
                .queue_url
                .with_context(|| format!("SQS returned no URL for {name}"))?;
            sqs.set_queue_attributes()
                .queue_url(&url)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("Failed to update queue {name}"))?;
            Ok(url)
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_queue_does_not_exist()) =>
        {
            let created = sqs
                .create_queue()
                .queue_name(name)
                .set_attributes(Some(attributes))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("Failed to create queue {name}"))?;
            created
                .queue_url
                .with_context(|| format!("SQS returned no URL for {name}"))
        }
        Err(e) => Err(sdk_error(e)).with_context(|| format!("Failed to look up queue {name}")),
    }
}

async fn provision_bucket(s3: &aws_sdk_s3::Client, settings: &AwsSettings) -> anyhow::Result<()> {
    let bucket = &settings.s3_bucket;
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let mut create = s3.create_bucket().bucket(bucket);
    // us-east-1 is the one region that rejects an explicit location constraint.
    if settings.region != "us-east-1" {
        create = create.create_bucket_configuration(
            CreateBucketConfiguration::builder()
                .location_constraint(BucketLocationConstraint::from(settings.region.as_str()))
                .build(),
        );
    }
    match create.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e) => Err(sdk_error(e)).with_context(|| format!("Failed to create bucket {bucket}")),
    }
}

async fn provision_table(
    dynamodb: &aws_sdk_dynamodb::Client,
    settings: &AwsSettings,
) -> anyhow::Result<()> {
    let table = &settings.dynamodb_table;
    match dynamodb.describe_table().table_name(table).send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_not_found_exception()) =>
        {
            let created = dynamodb
                .create_table()
                .table_name(table)
                .attribute_definitions(
                    AttributeDefinition::builder()
                        .attribute_name(PARTITION_KEY)
                        .attribute_type(ScalarAttributeType::S)
                        .build()?,
                )
                .key_schema(
                    KeySchemaElement::builder()
                        .attribute_name(PARTITION_KEY)
                        .key_type(KeyType::Hash)
                        .build()?,
                )
                .billing_mode(BillingMode::PayPerRequest)
                .send()
                .await;
            if let Err(e) = created {
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_resource_in_use_exception())
                {
                    return Err(sdk_error(e))
                        .with_context(|| format!("Failed to create table {table}"));
                }
            }
        }
        Err(e) => {
            return Err(sdk_error(e)).with_context(|| format!("Failed to describe table {table}"))
        }
    }
    wait_until_active(dynamodb, table).await?;

    let ttl = dynamodb
        .describe_time_to_live()
        .table_name(table)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("Failed to read the TTL setting of {table}"))?;
    let enabled = ttl.time_to_live_description.as_ref().is_some_and(|d| {
        matches!(
            d.time_to_live_status,
            Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
        ) && d.attribute_name.as_deref() == Some(TTL_ATTRIBUTE)
    });
    if !enabled {
        dynamodb
            .update_time_to_live()
            .table_name(table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(TTL_ATTRIBUTE)
                    .enabled(true)
                    .build()?,
            )
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("Failed to enable TTL on {table}.{TTL_ATTRIBUTE}"))?;
    }
    Ok(())
}

fn sdk_error(err: impl std::error::Error + 'static) -> anyhow::Error {
    anyhow::anyhow!(crate::error_chain(&err))
}

async fn wait_until_active(dynamodb: &aws_sdk_dynamodb::Client, table: &str) -> anyhow::Result<()> {
    for _ in 0..120 {
        let described = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("Failed to describe table {table}"))?;
        if described.table.and_then(|t| t.table_status) == Some(TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    bail!("table {table} did not become ACTIVE within a minute")
}
