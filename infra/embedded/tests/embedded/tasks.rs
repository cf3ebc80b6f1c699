use std::sync::Arc;

use sound_creator_core::ports::{Backend, BackendError, Inserted, TaskStore};
use sound_creator_core::records::{self, Change};
use sound_creator_core::task::{Task, TaskId, TaskStatus};

use crate::support::{open, quick_options, raw_database, task};

#[tokio::test]
async fn an_inserted_task_reads_back_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks = store.tasks();
    let original = task("marketplace", None);

    assert_eq!(tasks.insert(&original).await.unwrap(), Inserted::Created);

    assert_eq!(tasks.get(&original.id).await.unwrap(), Some(original));
    assert_eq!(
        tasks.get(&TaskId::parse("unknown").unwrap()).await.unwrap(),
        None
    );
    tasks.ping().await.unwrap();
}

#[tokio::test]
async fn two_concurrent_replaces_with_the_same_expected_version_have_exactly_one_winner() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks: Arc<dyn TaskStore> = store.tasks();
    let original = task("marketplace", None);
    tasks.insert(&original).await.unwrap();

    let attempts = [TaskStatus::Running, TaskStatus::Canceled].map(|status| {
        let tasks = tasks.clone();
        let mut next = original.clone();
        next.status = status;
        next.version = 2;
        tokio::spawn(async move { (status, tasks.replace(&next, 1).await.unwrap()) })
    });
    let mut winners = Vec::new();
    for attempt in attempts {
        let (status, won) = attempt.await.unwrap();
        if won {
            winners.push(status);
        }
    }

    assert_eq!(winners.len(), 1, "exactly one replace wins");
    let stored = tasks.get(&original.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(stored.status, winners[0]);
}

#[tokio::test]
async fn a_replace_with_an_old_version_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks = store.tasks();
    let mut current = task("marketplace", None);
    tasks.insert(&current).await.unwrap();
    current.status = TaskStatus::Running;
    current.version = 2;
    assert!(tasks.replace(&current, 1).await.unwrap());

    let mut stale = current.clone();
    stale.status = TaskStatus::Canceled;
    stale.version = 2;
    assert!(!tasks.replace(&stale, 1).await.unwrap());

    assert_eq!(
        tasks.get(&current.id).await.unwrap().unwrap().status,
        TaskStatus::Running
    );
}

#[tokio::test]
async fn ten_concurrent_inserts_with_one_idempotency_key_create_one_task() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks: Arc<dyn TaskStore> = store.tasks();

    let inserts: Vec<_> = (0..10)
        .map(|_| {
            let tasks = tasks.clone();
            let candidate = task("marketplace", Some("key-1"));
            tokio::spawn(async move {
                (
                    candidate.id.clone(),
                    tasks.insert(&candidate).await.unwrap(),
                )
            })
        })
        .collect();
    let mut created = Vec::new();
    let mut existing = Vec::new();
    for insert in inserts {
        match insert.await.unwrap() {
            (id, Inserted::Created) => created.push(id),
            (_, Inserted::Existing(task)) => existing.push(task.id),
        }
    }

    assert_eq!(created.len(), 1);
    assert_eq!(existing.len(), 9);
    assert!(
        existing.iter().all(|id| *id == created[0]),
        "every replay names the one created task"
    );
}

#[tokio::test]
async fn the_same_idempotency_key_in_another_tenant_is_another_task() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks = store.tasks();

    assert_eq!(
        tasks.insert(&task("marketplace", Some("k"))).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        tasks.insert(&task("studio", Some("k"))).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        tasks.insert(&task("studio", None)).await.unwrap(),
        Inserted::Created
    );
    assert_eq!(
        tasks.insert(&task("studio", None)).await.unwrap(),
        Inserted::Created
    );
}

#[tokio::test]
async fn an_undecodable_stored_task_is_reported_as_corrupt_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks = store.tasks();
    let original = task("marketplace", None);
    tasks.insert(&original).await.unwrap();

    let raw = raw_database(dir.path()).await;
    sqlx::query("UPDATE tasks SET document = '{not json' WHERE id = ?")
        .bind(original.id.as_str())
        .execute(&raw)
        .await
        .unwrap();

    let err = tasks.get(&original.id).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Corrupt {
                backend: Backend::Tasks,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_closed_store_answers_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks = store.tasks();
    store.close().await;

    let err = tasks.ping().await.unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Unavailable {
                backend: Backend::Tasks,
                ..
            }
        ),
        "{err:?}"
    );
}

/// Inserts a task and returns that first copy; then someone else moves the
/// stored record on to `status` (version 2), so the copy is stale.
async fn inserted_then_moved_on(tasks: &dyn TaskStore, status: TaskStatus) -> Task {
    let original = task("marketplace", None);
    tasks.insert(&original).await.unwrap();
    let mut moved = original.clone();
    moved.status = status;
    moved.version = 2;
    assert!(tasks.replace(&moved, 1).await.unwrap());
    original
}

#[tokio::test]
async fn an_update_seeded_with_a_stale_copy_rereads_and_keeps_the_other_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks: Arc<dyn TaskStore> = store.tasks();
    let original = inserted_then_moved_on(tasks.as_ref(), TaskStatus::Running).await;

    records::mark_jobs_enqueued(tasks.as_ref(), &original)
        .await
        .unwrap();

    let stored = tasks.get(&original.id).await.unwrap().unwrap();
    assert!(stored.jobs_enqueued);
    assert_eq!(
        (stored.status, stored.version),
        (TaskStatus::Running, 3),
        "the other write survives"
    );
}

#[tokio::test]
async fn a_keep_decided_on_a_seeded_copy_is_checked_against_the_stored_record() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let tasks: Arc<dyn TaskStore> = store.tasks();
    let original = inserted_then_moved_on(tasks.as_ref(), TaskStatus::Canceled).await;

    // On the stale copy the task is queued (keep); on the record it is not.
    let (seen, status) =
        records::update_from(tasks.as_ref(), &original, |task| Change::Keep(task.status))
            .await
            .unwrap()
            .unwrap();

    assert_eq!(status, TaskStatus::Canceled);
    assert_eq!(seen.version, 2);
}
