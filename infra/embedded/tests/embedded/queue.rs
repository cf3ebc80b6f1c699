use std::time::{Duration, Instant};

use sound_creator_core::ports::{JobQueue, QueueDepth, QueueName};
use sound_creator_core::task::ModelFamily;
use sound_creator_embedded::EmbeddedOptions;

use crate::support::{open, quick_options, raw_database};

const MUSIC: QueueName = QueueName::Jobs(ModelFamily::Music);
const AUDIO: QueueName = QueueName::Jobs(ModelFamily::Audio);
const NOW: Duration = Duration::ZERO;

fn depth(queued: u64, in_flight: u64) -> QueueDepth {
    QueueDepth { queued, in_flight }
}

#[tokio::test]
async fn a_message_not_deleted_in_time_is_redelivered_with_a_higher_receive_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    queue.send(MUSIC, "job-1", NOW).await.unwrap();

    let first = queue.receive(MUSIC, 10, NOW).await.unwrap();
    assert_eq!(first.len(), 1);
    assert_eq!(
        (first[0].body.as_str(), first[0].receive_count),
        ("job-1", 1)
    );
    assert!(
        queue.receive(MUSIC, 10, NOW).await.unwrap().is_empty(),
        "invisible while in flight"
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = queue.receive(MUSIC, 10, NOW).await.unwrap();

    assert_eq!(second.len(), 1);
    assert_eq!(second[0].message_id, first[0].message_id);
    assert_eq!(second[0].receive_count, 2);
    assert_ne!(
        second[0].receipt, first[0].receipt,
        "every receive gets a fresh receipt"
    );
}

#[tokio::test]
async fn a_delete_with_a_stale_receipt_does_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    queue.send(MUSIC, "job-1", NOW).await.unwrap();
    let stale = queue.receive(MUSIC, 1, NOW).await.unwrap().remove(0);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let current = queue.receive(MUSIC, 1, NOW).await.unwrap().remove(0);

    queue.delete(MUSIC, &stale.receipt).await.unwrap();
    queue
        .extend_visibility(MUSIC, &stale.receipt, NOW)
        .await
        .unwrap();
    assert_eq!(
        queue.depth(MUSIC).await.unwrap(),
        depth(0, 1),
        "still held by the current receiver"
    );

    queue.delete(MUSIC, &current.receipt).await.unwrap();
    assert_eq!(queue.depth(MUSIC).await.unwrap(), depth(0, 0));
}

#[tokio::test]
async fn a_delayed_message_stays_invisible_until_its_delay_passes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    let sent = Instant::now();
    queue
        .send(MUSIC, "later", Duration::from_millis(500))
        .await
        .unwrap();

    assert!(queue.receive(MUSIC, 1, NOW).await.unwrap().is_empty());
    assert_eq!(
        queue.depth(MUSIC).await.unwrap(),
        depth(1, 0),
        "a delayed message counts as queued"
    );

    let got = queue
        .receive(MUSIC, 1, Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(got.len(), 1);
    assert!(
        sent.elapsed() >= Duration::from_millis(450),
        "delivered after {:?}",
        sent.elapsed()
    );
}

#[tokio::test]
async fn a_long_poll_wakes_as_soon_as_a_message_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    // A poll interval far longer than the test: only the wakeup can deliver.
    let options = EmbeddedOptions {
        poll_interval: Duration::from_secs(30),
        ..quick_options()
    };
    let store = open(dir.path(), options).await;
    let queue = store.queue();
    let receiver = {
        let queue = queue.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            (
                queue
                    .receive(MUSIC, 1, Duration::from_secs(20))
                    .await
                    .unwrap(),
                started.elapsed(),
            )
        })
    };

    tokio::time::sleep(Duration::from_millis(200)).await;
    queue.send(MUSIC, "wake up", NOW).await.unwrap();
    let (got, waited) = receiver.await.unwrap();

    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body, "wake up");
    assert!(waited < Duration::from_secs(2), "woke after {waited:?}");
}

#[tokio::test]
async fn a_long_poll_with_nothing_to_receive_returns_empty_after_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let started = Instant::now();

    let got = store
        .queue()
        .receive(MUSIC, 1, Duration::from_millis(300))
        .await
        .unwrap();

    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_message_received_max_receives_times_goes_to_the_dead_letter_table() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        max_receives: 3,
        visibility_timeout: Duration::from_millis(100),
        ..quick_options()
    };
    let store = open(dir.path(), options).await;
    let queue = store.queue();
    queue.send(MUSIC, "poison", NOW).await.unwrap();

    for expected in 1..=3 {
        let got = queue
            .receive(MUSIC, 1, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].receive_count, expected);
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    let fourth = queue.receive(MUSIC, 1, NOW).await.unwrap();

    assert!(fourth.is_empty(), "never received a fourth time");
    let dead = queue.dead_letters(MUSIC).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(
        (dead[0].body.as_str(), dead[0].receive_count),
        ("poison", 3)
    );
    assert_eq!(queue.depth(MUSIC).await.unwrap(), depth(0, 0));
    assert!(queue.dead_letters(AUDIO).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dead_letter_move_cut_short_by_a_crash_is_finished_by_the_next_receive() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        max_receives: 1,
        visibility_timeout: Duration::from_millis(100),
        ..quick_options()
    };
    let store = open(dir.path(), options).await;
    let queue = store.queue();
    queue.send(MUSIC, "poison", NOW).await.unwrap();
    let got = queue.receive(MUSIC, 1, NOW).await.unwrap();
    assert_eq!(got.len(), 1);
    // What a crash between the copy and the delete leaves: the message in
    // both tables.
    let raw = raw_database(dir.path()).await;
    sqlx::query(
        "INSERT INTO queue_dead_letters (queue, message_id, body, sent_at, receive_count, dead_at) \
         SELECT queue, message_id, body, sent_at, receive_count, 0 FROM queue_messages",
    )
    .execute(&raw)
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    assert!(queue.receive(MUSIC, 1, NOW).await.unwrap().is_empty());

    let dead = queue.dead_letters(MUSIC).await.unwrap();
    assert_eq!(dead.len(), 1, "one dead letter for one message: {dead:?}");
    assert_eq!(dead[0].message_id, got[0].message_id);
    assert_eq!(queue.depth(MUSIC).await.unwrap(), depth(0, 0));
}

#[tokio::test]
async fn depth_counts_queued_and_in_flight_messages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    for body in ["a", "b", "c"] {
        queue.send(MUSIC, body, NOW).await.unwrap();
    }
    queue.send(AUDIO, "other", NOW).await.unwrap();

    let got = queue.receive(MUSIC, 1, NOW).await.unwrap();
    assert_eq!(queue.depth(MUSIC).await.unwrap(), depth(2, 1));

    queue.release(MUSIC, &got[0].receipt).await.unwrap();
    assert_eq!(queue.depth(MUSIC).await.unwrap(), depth(3, 0));
    assert_eq!(queue.depth(AUDIO).await.unwrap(), depth(1, 0));
    assert_eq!(
        queue.depth(QueueName::Completions).await.unwrap(),
        depth(0, 0)
    );
}

#[tokio::test]
async fn receive_returns_at_most_max_messages_oldest_first_from_its_own_queue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    for body in ["1", "2", "3"] {
        queue.send(MUSIC, body, NOW).await.unwrap();
    }

    assert!(queue.receive(AUDIO, 10, NOW).await.unwrap().is_empty());
    let got = queue.receive(MUSIC, 2, NOW).await.unwrap();
    let bodies: Vec<_> = got.iter().map(|d| d.body.as_str()).collect();
    assert_eq!(bodies, ["1", "2"]);
    assert!(queue.receive(MUSIC, 0, NOW).await.unwrap().is_empty());
}

#[tokio::test]
async fn extending_visibility_keeps_a_message_hidden_and_release_hands_it_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    queue.send(MUSIC, "long job", NOW).await.unwrap();
    let held = queue.receive(MUSIC, 1, NOW).await.unwrap().remove(0);

    queue
        .extend_visibility(MUSIC, &held.receipt, Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        queue.receive(MUSIC, 1, NOW).await.unwrap().is_empty(),
        "the heartbeat kept it hidden"
    );

    queue.release(MUSIC, &held.receipt).await.unwrap();
    let again = queue.receive(MUSIC, 1, NOW).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].receive_count, 2);
}

#[tokio::test]
async fn concurrent_receivers_never_get_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(
        dir.path(),
        EmbeddedOptions {
            visibility_timeout: Duration::from_secs(30),
            ..quick_options()
        },
    )
    .await;
    let queue = store.queue();
    for i in 0..20 {
        queue.send(MUSIC, &format!("job-{i}"), NOW).await.unwrap();
    }

    let receivers: Vec<_> = (0..4)
        .map(|_| {
            let queue = queue.clone();
            tokio::spawn(async move {
                let mut bodies = Vec::new();
                loop {
                    let got = queue.receive(MUSIC, 3, NOW).await.unwrap();
                    if got.is_empty() {
                        return bodies;
                    }
                    bodies.extend(got.into_iter().map(|d| d.body));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for receiver in receivers {
        all.extend(receiver.await.unwrap());
    }

    all.sort();
    all.dedup();
    assert_eq!(all.len(), 20, "each message delivered exactly once");
}

#[tokio::test]
async fn an_absurdly_long_wait_is_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let queue = store.queue();
    queue.send(MUSIC, "ready", NOW).await.unwrap();

    let got = queue.receive(MUSIC, 1, Duration::MAX).await.unwrap();

    assert_eq!(got.len(), 1);
}
