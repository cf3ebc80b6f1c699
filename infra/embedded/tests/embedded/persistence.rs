use std::time::Duration;

use chrono::Utc;
use sound_creator_core::ports::{
    BlobStore, Download, JobQueue, QueueDepth, QueueName, ResultCache, SignedDownloads, StatsQuery,
    StatsRow, StatsStore, TaskStore,
};
use sound_creator_core::task::{ModelFamily, TaskStatus};

use crate::blobs::parse_link;
use crate::support::{open, quick_options, task};

const MUSIC: QueueName = QueueName::Jobs(ModelFamily::Music);

#[tokio::test]
async fn queued_in_flight_and_finished_work_survives_closing_and_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let queued = task("marketplace", Some("k1"));
    let mut finished = task("marketplace", None);
    let (in_flight_id, link) = {
        let store = open(dir.path(), quick_options()).await;
        let tasks = store.tasks();
        tasks.insert(&queued).await.unwrap();
        tasks.insert(&finished).await.unwrap();
        finished.status = TaskStatus::Running;
        finished.version = 2;
        assert!(tasks.replace(&finished, 1).await.unwrap());
        finished.status = TaskStatus::Succeeded;
        finished.completed_at = Some(Utc::now());
        finished.version = 3;
        assert!(tasks.replace(&finished, 2).await.unwrap());
        store
            .stats()
            .record(&StatsRow::of(&finished))
            .await
            .unwrap();
        store
            .cache()
            .put_final(&finished, Duration::from_secs(3600))
            .await
            .unwrap();

        let queue = store.queue();
        queue
            .send(MUSIC, "in flight", Duration::ZERO)
            .await
            .unwrap();
        let held = queue
            .receive(MUSIC, 1, Duration::ZERO)
            .await
            .unwrap()
            .remove(0);
        queue.send(MUSIC, "queued", Duration::ZERO).await.unwrap();

        let key = "tasks/finished/clip-0.wav";
        store
            .blobs()
            .put(key, vec![1, 2, 3], "audio/wav")
            .await
            .unwrap();
        let link = parse_link(
            &store
                .blobs()
                .presign_get(key, Duration::from_secs(600))
                .await
                .unwrap()
                .url,
        );
        store.close().await;
        (held.message_id, link)
    };

    let store = open(dir.path(), quick_options()).await;

    let tasks = store.tasks();
    assert_eq!(tasks.get(&queued.id).await.unwrap(), Some(queued.clone()));
    assert_eq!(
        tasks.get(&finished.id).await.unwrap(),
        Some(finished.clone())
    );
    assert_eq!(
        store.cache().get_final(&finished.id).await.unwrap(),
        Some(finished.clone())
    );
    let summary = store
        .stats()
        .summarize(&StatsQuery {
            tenant: finished.tenant.clone(),
            user_id: None,
            from: None,
            to: None,
            recent_limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(summary.requests, 1);
    assert_eq!(summary.by_status.get("succeeded"), Some(&1));

    let queue = store.queue();
    assert_eq!(
        queue.depth(MUSIC).await.unwrap(),
        QueueDepth {
            queued: 1,
            in_flight: 1
        }
    );
    let mut redelivered = queue
        .receive(MUSIC, 10, Duration::from_secs(2))
        .await
        .unwrap();
    if redelivered.len() < 2 {
        redelivered.extend(
            queue
                .receive(MUSIC, 10, Duration::from_secs(2))
                .await
                .unwrap(),
        );
    }
    let held_again = redelivered
        .iter()
        .find(|d| d.message_id == in_flight_id)
        .expect("redelivered after restart");
    assert_eq!(held_again.receive_count, 2);
    assert!(redelivered.iter().any(|d| d.body == "queued"));

    assert_eq!(
        store
            .blobs()
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Found {
            bytes: vec![1, 2, 3],
            content_type: "audio/wav".to_owned()
        }
    );
    // The idempotency index survived too.
    let replay = task("marketplace", Some("k1"));
    assert_eq!(
        tasks.insert(&replay).await.unwrap(),
        sound_creator_core::ports::Inserted::Existing(queued)
    );
}
