//! The SQS adapter against moto: at-least-once delivery, visibility
//! timeouts, heartbeats, the dead-letter queue and queue depth.

use crate::common;

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;
use sound_creator_aws::sqs::{dead_letter_queue_name, SqsQueue};
use sound_creator_aws::{provision, sdk_config, AwsSettings};
use sound_creator_core::ports::{JobQueue, QueueDepth, QueueName};
use sound_creator_core::task::ModelFamily;

const MUSIC: QueueName = QueueName::Jobs(ModelFamily::Music);

async fn queue(settings: &AwsSettings) -> SqsQueue {
    provision(settings).await.expect("provision against moto");
    SqsQueue::new(&sdk_config(settings).await, settings)
}

#[tokio::test]
async fn a_sent_message_is_received_once_and_gone_after_delete() {
    let settings = common::settings();
    let q = queue(&settings).await;
    q.send(MUSIC, r#"{"job":1}"#, Duration::ZERO)
        .await
        .expect("send");

    let got = q
        .receive(MUSIC, 10, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, r#"{"job":1}"#);
    assert_eq!(got[0].receive_count, 1);

    q.delete(MUSIC, &got[0].receipt).await.expect("delete");
    assert_eq!(
        q.depth(MUSIC).await.expect("depth"),
        QueueDepth {
            queued: 0,
            in_flight: 0
        }
    );
    assert!(q
        .receive(MUSIC, 10, Duration::ZERO)
        .await
        .expect("receive")
        .is_empty());
}

#[tokio::test]
async fn queues_of_different_families_never_share_messages() {
    let settings = common::settings();
    let q = queue(&settings).await;
    q.send(MUSIC, "music", Duration::ZERO).await.expect("send");
    let audio = q
        .receive(QueueName::Jobs(ModelFamily::Audio), 10, Duration::ZERO)
        .await
        .expect("receive");
    assert!(audio.is_empty());
    assert_eq!(
        q.receive(MUSIC, 10, Duration::ZERO)
            .await
            .expect("receive")
            .len(),
        1
    );
}

#[tokio::test]
async fn batch_receive_returns_up_to_ten_messages() {
    let settings = common::settings();
    let q = queue(&settings).await;
    for i in 0..12 {
        q.send(QueueName::Completions, &format!("m{i}"), Duration::ZERO)
            .await
            .expect("send");
    }
    // 50 is beyond SQS's limit of 10: the adapter caps it instead of failing.
    let got = q
        .receive(QueueName::Completions, 50, Duration::from_secs(1))
        .await
        .expect("receive");
    assert!(!got.is_empty() && got.len() <= 10, "got {}", got.len());
}

#[tokio::test]
async fn a_released_message_comes_back_with_a_higher_receive_count() {
    let settings = common::settings();
    let q = queue(&settings).await;
    q.send(MUSIC, "job", Duration::ZERO).await.expect("send");
    let first = q
        .receive(MUSIC, 1, Duration::from_secs(2))
        .await
        .expect("receive")
        .remove(0);
    q.release(MUSIC, &first.receipt).await.expect("release");

    let again = q
        .receive(MUSIC, 1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message_id, first.message_id);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn an_unacknowledged_message_is_redelivered_after_its_visibility_timeout() {
    let settings = common::settings_with(&[("SQS_VISIBILITY_TIMEOUT", "1")]);
    let q = queue(&settings).await;
    q.send(MUSIC, "job", Duration::ZERO).await.expect("send");
    let first = q
        .receive(MUSIC, 1, Duration::from_secs(2))
        .await
        .expect("receive")
        .remove(0);
    assert!(
        q.receive(MUSIC, 1, Duration::ZERO)
            .await
            .expect("receive")
            .is_empty(),
        "invisible while in flight"
    );

    let again = q
        .receive(MUSIC, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(
        again.len(),
        1,
        "redelivered once the visibility timeout passed"
    );
    assert_eq!(again[0].message_id, first.message_id);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn a_heartbeat_keeps_a_message_invisible_past_the_original_timeout() {
    let settings = common::settings_with(&[("SQS_VISIBILITY_TIMEOUT", "2")]);
    let q = queue(&settings).await;
    q.send(MUSIC, "long job", Duration::ZERO)
        .await
        .expect("send");
    let held = q
        .receive(MUSIC, 1, Duration::from_secs(2))
        .await
        .expect("receive")
        .remove(0);

    // Beat every second for 5 s, well past the queue's 2 s timeout.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        q.extend_visibility(MUSIC, &held.receipt, Duration::from_secs(2))
            .await
            .expect("heartbeat");
        assert!(
            q.receive(MUSIC, 1, Duration::ZERO)
                .await
                .expect("receive")
                .is_empty(),
            "redelivered during heartbeat"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert_eq!(q.depth(MUSIC).await.expect("depth").in_flight, 1);

    // Without heartbeats it comes back.
    let again = q
        .receive(MUSIC, 1, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn a_message_received_too_often_moves_to_the_dead_letter_queue() {
    let mut settings = common::settings();
    settings.sqs_max_receive_count = 2;
    let q = queue(&settings).await;
    q.send(MUSIC, "poison", Duration::ZERO).await.expect("send");
    for expected_count in 1..=2 {
        let got = q
            .receive(MUSIC, 1, Duration::from_secs(2))
            .await
            .expect("receive");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, expected_count);
        q.release(MUSIC, &got[0].receipt).await.expect("release");
    }
    assert!(
        q.receive(MUSIC, 1, Duration::from_secs(1))
            .await
            .expect("receive")
            .is_empty(),
        "moved past maxReceiveCount"
    );

    let sdk = sdk_config(&settings).await;
    let sqs = sound_creator_aws::sqs::client(&sdk, &settings);
    let dlq_url = sqs
        .get_queue_url()
        .queue_name(dead_letter_queue_name(&settings.sqs_queue_prefix, MUSIC))
        .send()
        .await
        .expect("dlq exists")
        .queue_url
        .expect("dlq url");
    let dead = sqs
        .receive_message()
        .queue_url(dlq_url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from dlq");
    let bodies: Vec<_> = dead.messages().iter().filter_map(|m| m.body()).collect();
    assert_eq!(bodies, vec!["poison"]);
}

#[tokio::test]
async fn depth_counts_visible_and_delayed_messages_as_queued_and_received_ones_as_in_flight() {
    let settings = common::settings();
    let q = queue(&settings).await;
    q.send(MUSIC, "a", Duration::ZERO).await.expect("send");
    q.send(MUSIC, "b", Duration::ZERO).await.expect("send");
    // An hour is beyond SQS's 15-minute limit: capped, not refused.
    q.send(MUSIC, "later", Duration::from_secs(3600))
        .await
        .expect("send delayed");
    assert_eq!(
        q.depth(MUSIC).await.expect("depth"),
        QueueDepth {
            queued: 3,
            in_flight: 0
        }
    );

    let got = q
        .receive(MUSIC, 1, Duration::from_secs(2))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(
        q.depth(MUSIC).await.expect("depth"),
        QueueDepth {
            queued: 2,
            in_flight: 1
        }
    );
}

#[tokio::test]
async fn provisioning_twice_keeps_the_queues_and_applies_the_redrive_policy() {
    // JOB_MAX_ATTEMPTS 5 => a message is dead-lettered after 7 receives.
    let settings = common::settings_with(&[("JOB_MAX_ATTEMPTS", "5")]);
    provision(&settings).await.expect("first provision");
    provision(&settings)
        .await
        .expect("second provision is a no-op");

    let sdk = sdk_config(&settings).await;
    let sqs = sound_creator_aws::sqs::client(&sdk, &settings);
    let url = sqs
        .get_queue_url()
        .queue_name(format!("{}completions", settings.sqs_queue_prefix))
        .send()
        .await
        .expect("queue exists")
        .queue_url
        .expect("url");
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .expect("attributes")
        .attributes
        .unwrap_or_default();
    let policy: serde_json::Value = serde_json::from_str(
        attributes
            .get(&QueueAttributeName::RedrivePolicy)
            .expect("redrive policy"),
    )
    .expect("json");
    assert_eq!(policy["maxReceiveCount"].to_string().trim_matches('"'), "7");
    assert!(policy["deadLetterTargetArn"]
        .as_str()
        .is_some_and(|arn| arn.ends_with("completions-dlq")));
}

#[tokio::test]
async fn an_unprovisioned_queue_is_reported_as_unavailable_not_created() {
    let settings = common::settings();
    let q = SqsQueue::new(&sdk_config(&settings).await, &settings);
    let err = q
        .send(MUSIC, "x", Duration::ZERO)
        .await
        .expect_err("no such queue");
    assert!(err.to_string().contains("does not exist"), "{err}");
}
