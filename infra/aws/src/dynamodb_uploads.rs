//! DynamoDB as the upload store: one item per upload in the task table,
//! `pk` = `upload#<upload_id>` (task ids and idempotency records never start
//! so), holding the `Upload` as a JSON document, its `tenant` for the
//! console, and the table's TTL attribute (`expires_at`, epoch seconds of
//! `retain_until`) so DynamoDB drops it after its retention. Written once
//! with a condition; never changed. This module never decides who may use
//! an upload.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use sound_creator_core::ports::{Backend, BackendError, PortResult, UploadInserted, UploadStore};
use sound_creator_core::upload::{Upload, UploadId};

use crate::dynamodb::{client, PARTITION_KEY, TTL_ATTRIBUTE};
use crate::{sdk_unavailable, AwsSettings};

const DOCUMENT: &str = "upload";

pub struct DynamoUploads {
    client: Client,
    table: String,
}

/// The item key of an upload record.
pub fn upload_pk(id: &UploadId) -> String {
    format!("upload#{id}")
}

fn unavailable(err: impl std::error::Error + 'static) -> BackendError {
    sdk_unavailable(Backend::Tasks, &err)
}

impl DynamoUploads {
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            client: client(sdk, settings),
            table: settings.dynamodb_table.clone(),
        }
    }

    /// The raw item of an upload, for tests and operators.
    pub async fn raw_item(
        &self,
        id: &UploadId,
    ) -> PortResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(upload_pk(id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }
}

#[async_trait]
impl UploadStore for DynamoUploads {
    async fn insert(&self, upload: &Upload) -> PortResult<UploadInserted> {
        let document = serde_json::to_string(upload).map_err(|e| {
            BackendError::unavailable(
                Backend::Tasks,
                format!("upload {} does not serialize: {e}", upload.id),
            )
        })?;
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, AttributeValue::S(upload_pk(&upload.id)))
            .item("tenant", AttributeValue::S(upload.tenant.to_string()))
            .item(DOCUMENT, AttributeValue::S(document))
            .item(
                TTL_ATTRIBUTE,
                AttributeValue::N(upload.retain_until.timestamp().to_string()),
            )
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match written {
            Ok(_) => Ok(UploadInserted::Created),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(UploadInserted::Exists)
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn get(&self, id: &UploadId) -> PortResult<Option<Upload>> {
        let Some(item) = self.raw_item(id).await? else {
            return Ok(None);
        };
        let corrupt = |why: String| BackendError::corrupt(Backend::Tasks, why);
        let Some(AttributeValue::S(document)) = item.get(DOCUMENT) else {
            return Err(corrupt(format!("upload item {id} has no document")));
        };
        serde_json::from_str(document)
            .map(Some)
            .map_err(|e| corrupt(format!("upload {id} does not parse: {e}")))
    }
}
