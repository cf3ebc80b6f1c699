//! DynamoDB as the task store: one item per task (`pk` = task id) holding
//! the task as a JSON document plus the attributes worth seeing in the
//! console (`status`, `tenant`, `version`) and a TTL attribute (`expires_at`,
//! epoch seconds of `retain_until`) so DynamoDB drops records past their
//! retention by itself.
//!
//! Every write is conditional: `insert` only creates, `replace` only writes
//! over the version the caller read (the domain's compare-and-swap). An
//! idempotency key is its own item, `idem#<tenant>#<key>`, written in the
//! same transaction as the task, so two racing submits with one key create
//! exactly one task. This module never interprets a task's status.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use sound_creator_core::ports::{Backend, BackendError, Inserted, PortResult, TaskStore};
use sound_creator_core::task::{Task, TaskId};

use crate::{sdk_unavailable, AwsSettings};

pub const PARTITION_KEY: &str = "pk";
pub const TTL_ATTRIBUTE: &str = "expires_at";
const DOCUMENT: &str = "task";

/// How often an insert retries when DynamoDB cancels its transaction for a
/// conflict with another one in flight (not for a failed condition).
const INSERT_ATTEMPTS: u32 = 5;

pub struct DynamoTasks {
    client: Client,
    table: String,
}

impl DynamoTasks {
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            client: client(sdk, settings),
            table: settings.dynamodb_table.clone(),
        }
    }

    /// The raw item of a task, for tests and operators.
    pub async fn raw_item(
        &self,
        id: &TaskId,
    ) -> PortResult<Option<HashMap<String, AttributeValue>>> {
        self.get_item(id.as_str()).await
    }

    async fn get_item(&self, pk: &str) -> PortResult<Option<HashMap<String, AttributeValue>>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(pk.to_owned()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(out.item)
    }

    /// The task an idempotency key points at, if the key was used.
    async fn task_for_key(&self, idem_pk: &str) -> PortResult<Option<(TaskId, Option<Task>)>> {
        let Some(item) = self.get_item(idem_pk).await? else {
            return Ok(None);
        };
        let raw = string_attribute(&item, "task_id", idem_pk)?;
        let id = TaskId::parse(raw).ok_or_else(|| {
            BackendError::corrupt(
                Backend::Tasks,
                format!("{idem_pk} points at an invalid task id {raw:?}"),
            )
        })?;
        let task = self.get(&id).await?;
        Ok(Some((id, task)))
    }

    async fn insert_with_key(&self, task: &Task, key: &str) -> PortResult<Inserted> {
        let idem_pk = idempotency_pk(task, key);
        let task_put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(task_item(task)?))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(unavailable)?;
        let key_put = Put::builder()
            .table_name(&self.table)
            .item(PARTITION_KEY, AttributeValue::S(idem_pk.clone()))
            .item("task_id", AttributeValue::S(task.id.to_string()))
            .item("tenant", AttributeValue::S(task.tenant.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .build()
            .map_err(unavailable)?;
        for attempt in 1..=INSERT_ATTEMPTS {
            let written = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(task_put.clone()).build())
                .transact_items(TransactWriteItem::builder().put(key_put.clone()).build())
                .send()
                .await;
            let err = match written {
                Ok(_) => return Ok(Inserted::Created),
                Err(err) => err,
            };
            let canceled = err
                .as_service_error()
                .is_some_and(|e| e.is_transaction_canceled_exception());
            if !canceled {
                return Err(unavailable(err));
            }
            // Canceled: the key is taken, the id is taken, or another
            // transaction on the same items was in flight. Look at what is
            // there now rather than trusting the cancellation reasons, whose
            // detail varies between DynamoDB and its emulators.
            match self.task_for_key(&idem_pk).await? {
                Some((_, Some(existing))) => {
                    if existing.tenant != task.tenant {
                        return Err(BackendError::corrupt(
                            Backend::Tasks,
                            format!("{idem_pk} points at task {} of another tenant", existing.id),
                        ));
                    }
                    return Ok(Inserted::Existing(existing));
                }
                Some((stale, None)) => {
                    // The task expired (TTL) but its key record is still there:
                    // the key is free again. Remove the record only if it
                    // still points at the expired task.
                    let deleted = self
                        .client
                        .delete_item()
                        .table_name(&self.table)
                        .key(PARTITION_KEY, AttributeValue::S(idem_pk.clone()))
                        .condition_expression("task_id = :stale")
                        .expression_attribute_values(":stale", AttributeValue::S(stale.to_string()))
                        .send()
                        .await;
                    if let Err(err) = deleted {
                        if !err
                            .as_service_error()
                            .is_some_and(|e| e.is_conditional_check_failed_exception())
                        {
                            return Err(unavailable(err));
                        }
                    }
                }
                None => {
                    if let Some(existing) = self.get(&task.id).await? {
                        return Ok(Inserted::Existing(existing));
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
        }
        Err(BackendError::unavailable(
            Backend::Tasks,
            format!(
                "insert of task {} kept conflicting with concurrent writes",
                task.id
            ),
        ))
    }
}

pub fn client(sdk: &SdkConfig, settings: &AwsSettings) -> Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk);
    if let Some(endpoint) = settings.dynamodb_endpoint() {
        config = config.endpoint_url(endpoint);
    }
    Client::from_conf(config.build())
}

fn unavailable(err: impl std::error::Error + 'static) -> BackendError {
    sdk_unavailable(Backend::Tasks, &err)
}

/// The idempotency record's key. Task ids never contain `#`, so these never
/// collide with a task item.
pub fn idempotency_pk(task: &Task, key: &str) -> String {
    format!("idem#{}#{key}", task.tenant)
}

fn task_item(task: &Task) -> PortResult<HashMap<String, AttributeValue>> {
    let document = serde_json::to_string(task).map_err(|e| {
        BackendError::unavailable(
            Backend::Tasks,
            format!("task {} does not serialize: {e}", task.id),
        )
    })?;
    let mut item = HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(task.id.to_string()),
        ),
        (
            "status".to_owned(),
            AttributeValue::S(task.status.as_str().to_owned()),
        ),
        (
            "tenant".to_owned(),
            AttributeValue::S(task.tenant.to_string()),
        ),
        (
            "version".to_owned(),
            AttributeValue::N(task.version.to_string()),
        ),
        (DOCUMENT.to_owned(), AttributeValue::S(document)),
    ]);
    if let Some(until) = task.retain_until {
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            AttributeValue::N(until.timestamp().to_string()),
        );
    }
    Ok(item)
}

fn string_attribute<'a>(
    item: &'a HashMap<String, AttributeValue>,
    name: &str,
    pk: &str,
) -> PortResult<&'a str> {
    match item.get(name) {
        Some(AttributeValue::S(value)) => Ok(value),
        _ => Err(BackendError::corrupt(
            Backend::Tasks,
            format!("item {pk} has no string attribute {name}"),
        )),
    }
}

fn decode(item: &HashMap<String, AttributeValue>, pk: &str) -> PortResult<Task> {
    let document = string_attribute(item, DOCUMENT, pk)?;
    serde_json::from_str(document).map_err(|e| {
        BackendError::corrupt(Backend::Tasks, format!("task {pk} does not parse: {e}"))
    })
}

#[async_trait]
impl TaskStore for DynamoTasks {
    async fn insert(&self, task: &Task) -> PortResult<Inserted> {
        if let Some(key) = task.idempotency_key.as_deref() {
            return self.insert_with_key(task, key).await;
        }
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(task_item(task)?))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match written {
            Ok(_) => Ok(Inserted::Created),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                // Same id inserted twice (a retried insert): that record is the task.
                match self.get(&task.id).await? {
                    Some(existing) => Ok(Inserted::Existing(existing)),
                    None => Err(BackendError::unavailable(
                        Backend::Tasks,
                        format!(
                            "insert of task {} conflicted with a record that is gone",
                            task.id
                        ),
                    )),
                }
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn get(&self, id: &TaskId) -> PortResult<Option<Task>> {
        let Some(item) = self.get_item(id.as_str()).await? else {
            return Ok(None);
        };
        decode(&item, id.as_str()).map(Some)
    }

    async fn replace(&self, task: &Task, expected_version: u64) -> PortResult<bool> {
        let written = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(task_item(task)?))
            .condition_expression("#version = :expected")
            .expression_attribute_names("#version", "version")
            .expression_attribute_values(
                ":expected",
                AttributeValue::N(expected_version.to_string()),
            )
            .send()
            .await;
        match written {
            Ok(_) => Ok(true),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn ping(&self) -> PortResult<()> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
