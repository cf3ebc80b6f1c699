//! The DynamoDB task store against moto: conditional writes, the
//! compare-and-swap the domain relies on, idempotency keys and TTL.

use crate::common;

use std::sync::Arc;

use aws_sdk_dynamodb::types::{AttributeValue, TimeToLiveStatus};
use chrono::{Duration as ChronoDuration, Utc};
use sound_creator_aws::dynamodb::{DynamoTasks, TTL_ATTRIBUTE};
use sound_creator_aws::{provision, sdk_config, AwsSettings};
use sound_creator_core::ports::{BackendError, Inserted, TaskStore};
use sound_creator_core::task::{TaskStatus, Tenant};

async fn store(settings: &AwsSettings) -> DynamoTasks {
    provision(settings).await.expect("provision against moto");
    DynamoTasks::new(&sdk_config(settings).await, settings)
}

#[tokio::test]
async fn an_inserted_task_reads_back_equal() {
    let settings = common::settings();
    let tasks = store(&settings).await;
    let task = common::task(&Tenant::new("marketplace"), 2);

    assert_eq!(
        tasks.insert(&task).await.expect("insert"),
        Inserted::Created
    );
    assert_eq!(tasks.get(&task.id).await.expect("get"), Some(task.clone()));
    assert_eq!(
        tasks
            .get(&common::task(&task.tenant, 1).id)
            .await
            .expect("get"),
        None
    );
}

#[tokio::test]
async fn inserting_the_same_task_twice_returns_the_stored_one() {
    let settings = common::settings();
    let tasks = store(&settings).await;
    let task = common::task(&Tenant::new("marketplace"), 1);
    tasks.insert(&task).await.expect("insert");
    let mut retried = task.clone();
    retried.progress = 0.5;
    assert_eq!(
        tasks.insert(&retried).await.expect("insert again"),
        Inserted::Existing(task)
    );
}

#[tokio::test]
async fn replace_writes_only_over_the_expected_version() {
    let settings = common::settings();
    let tasks = store(&settings).await;
    let task = common::task(&Tenant::new("marketplace"), 1);
    tasks.insert(&task).await.expect("insert");

    let mut running = task.clone();
    running.status = TaskStatus::Running;
    running.version = 2;
    assert!(tasks.replace(&running, 1).await.expect("replace"));
    // A writer that read version 1 loses.
    let mut stale = task.clone();
    stale.status = TaskStatus::Canceled;
    stale.version = 2;
    assert!(!tasks.replace(&stale, 1).await.expect("stale replace"));
    assert_eq!(tasks.get(&task.id).await.expect("get"), Some(running));
}

#[tokio::test]
async fn of_two_concurrent_replaces_of_one_version_exactly_one_wins() {
    let settings = common::settings();
    let tasks = Arc::new(store(&settings).await);
    for _ in 0..5 {
        let task = common::task(&Tenant::new("marketplace"), 1);
        tasks.insert(&task).await.expect("insert");
        let mut a = task.clone();
        a.status = TaskStatus::Running;
        a.version = 2;
        let mut b = task.clone();
        b.status = TaskStatus::Canceled;
        b.version = 2;
        let (ra, rb) = tokio::join!(
            {
                let (tasks, a) = (tasks.clone(), a.clone());
                tokio::spawn(async move { tasks.replace(&a, 1).await })
            },
            {
                let (tasks, b) = (tasks.clone(), b.clone());
                tokio::spawn(async move { tasks.replace(&b, 1).await })
            }
        );
        let (wa, wb) = (
            ra.expect("join").expect("replace a"),
            rb.expect("join").expect("replace b"),
        );
        assert!(wa ^ wb, "exactly one must win, got a={wa} b={wb}");
        let stored = tasks.get(&task.id).await.expect("get").expect("exists");
        assert_eq!(stored, if wa { a } else { b });
    }
}

#[tokio::test]
async fn racing_submits_with_one_idempotency_key_create_exactly_one_task() {
    let settings = common::settings();
    let tasks = Arc::new(store(&settings).await);
    let tenant = Tenant::new("marketplace");
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let mut task = common::task(&tenant, 1);
            task.idempotency_key = Some("order-17".into());
            task
        })
        .collect();
    let handles: Vec<_> = attempts
        .iter()
        .cloned()
        .map(|task| {
            let tasks = tasks.clone();
            tokio::spawn(async move { tasks.insert(&task).await })
        })
        .collect();
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for (task, handle) in attempts.iter().zip(handles) {
        match handle.await.expect("join").expect("insert") {
            Inserted::Created => created.push(task.clone()),
            Inserted::Existing(found) => existing.push(found),
        }
    }
    assert_eq!(created.len(), 1, "exactly one insert creates the task");
    assert!(
        existing.iter().all(|t| t.id == created[0].id),
        "every other insert gets the created task back"
    );
    for loser in attempts.iter().filter(|t| t.id != created[0].id) {
        assert_eq!(
            tasks.get(&loser.id).await.expect("get"),
            None,
            "a losing insert stored nothing"
        );
    }

    // Another tenant's key is its own.
    let mut other = common::task(&Tenant::new("other-client"), 1);
    other.idempotency_key = Some("order-17".into());
    assert_eq!(
        tasks.insert(&other).await.expect("insert"),
        Inserted::Created
    );
}

#[tokio::test]
async fn a_retained_task_carries_its_expiry_as_the_ttl_attribute() {
    let settings = common::settings();
    let tasks = store(&settings).await;
    let mut task = common::task(&Tenant::new("marketplace"), 1);
    tasks.insert(&task).await.expect("insert");
    let item = tasks
        .raw_item(&task.id)
        .await
        .expect("raw")
        .expect("exists");
    assert!(
        !item.contains_key(TTL_ATTRIBUTE),
        "no expiry while the task is not final"
    );
    assert_eq!(
        item.get("status"),
        Some(&AttributeValue::S("queued".into()))
    );
    assert_eq!(
        item.get("tenant"),
        Some(&AttributeValue::S("marketplace".into()))
    );
    assert_eq!(item.get("version"), Some(&AttributeValue::N("1".into())));

    let until = Utc::now() + ChronoDuration::days(7);
    task.status = TaskStatus::Canceled;
    task.retain_until = Some(until);
    task.version = 2;
    assert!(tasks.replace(&task, 1).await.expect("replace"));
    let item = tasks
        .raw_item(&task.id)
        .await
        .expect("raw")
        .expect("exists");
    assert_eq!(
        item.get(TTL_ATTRIBUTE),
        Some(&AttributeValue::N(until.timestamp().to_string()))
    );

    let sdk = sdk_config(&settings).await;
    let ttl = sound_creator_aws::dynamodb::client(&sdk, &settings)
        .describe_time_to_live()
        .table_name(&settings.dynamodb_table)
        .send()
        .await
        .expect("describe ttl")
        .time_to_live_description
        .expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some(TTL_ATTRIBUTE));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn a_stored_document_that_does_not_parse_is_reported_as_corrupt() {
    let settings = common::settings();
    let tasks = store(&settings).await;
    let task = common::task(&Tenant::new("marketplace"), 1);
    let sdk = sdk_config(&settings).await;
    sound_creator_aws::dynamodb::client(&sdk, &settings)
        .put_item()
        .table_name(&settings.dynamodb_table)
        .item("pk", AttributeValue::S(task.id.to_string()))
        .item("task", AttributeValue::S("{not json".into()))
        .send()
        .await
        .expect("raw put");
    let err = tasks.get(&task.id).await.expect_err("corrupt");
    assert!(matches!(err, BackendError::Corrupt { .. }), "{err:?}");
}

#[tokio::test]
async fn ping_fails_for_a_missing_table() {
    let settings = common::settings();
    let tasks = DynamoTasks::new(&sdk_config(&settings).await, &settings);
    assert!(matches!(
        tasks.ping().await,
        Err(BackendError::Unavailable { .. })
    ));
}
