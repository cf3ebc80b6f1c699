use std::time::Duration;

use sound_creator_core::ports::{Backend, BackendError, ResultCache};
use sound_creator_core::task::{StageOutcome, TaskError, TaskStatus};

use crate::support::{open, quick_options, raw_database, task};

fn failed_stage(message: &str) -> StageOutcome {
    StageOutcome::Failed {
        error: TaskError::new(
            sound_creator_core::error_code::ErrorCode::EngineError,
            message,
        ),
    }
}

#[tokio::test]
async fn cached_results_read_back_until_they_expire() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let cache = store.cache();
    let mut final_task = task("marketplace", None);
    final_task.status = TaskStatus::Failed;
    let id = final_task.id.clone();

    cache
        .put_stage(&id, 0, &failed_stage("short"), Duration::from_millis(300))
        .await
        .unwrap();
    cache
        .put_stage(&id, 1, &failed_stage("long"), Duration::from_secs(60))
        .await
        .unwrap();
    cache
        .put_final(&final_task, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        cache.get_stage(&id, 0).await.unwrap(),
        Some(failed_stage("short"))
    );
    assert_eq!(
        cache.get_final(&id).await.unwrap(),
        Some(final_task.clone())
    );
    assert_eq!(cache.get_stage(&id, 2).await.unwrap(), None);

    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_eq!(
        cache.get_stage(&id, 0).await.unwrap(),
        None,
        "expired rows are not read"
    );
    assert_eq!(cache.get_final(&id).await.unwrap(), None);
    assert_eq!(
        cache.get_stage(&id, 1).await.unwrap(),
        Some(failed_stage("long"))
    );
    assert_eq!(store.purge_expired_results().await.unwrap(), 2);
    assert_eq!(
        cache.get_stage(&id, 1).await.unwrap(),
        Some(failed_stage("long"))
    );
    cache.ping().await.unwrap();
}

#[tokio::test]
async fn writing_a_key_again_replaces_its_value_and_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let cache = store.cache();
    let id = task("marketplace", None).id;

    cache
        .put_stage(&id, 0, &failed_stage("first"), Duration::from_millis(200))
        .await
        .unwrap();
    cache
        .put_stage(&id, 0, &failed_stage("second"), Duration::from_secs(60))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert_eq!(
        cache.get_stage(&id, 0).await.unwrap(),
        Some(failed_stage("second"))
    );
}

#[tokio::test]
async fn an_undecodable_cache_entry_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let cache = store.cache();
    let id = task("marketplace", None).id;
    cache
        .put_stage(&id, 0, &failed_stage("x"), Duration::from_secs(60))
        .await
        .unwrap();

    let raw = raw_database(dir.path()).await;
    sqlx::query("UPDATE result_cache SET value = '[1,2'")
        .execute(&raw)
        .await
        .unwrap();

    let err = cache.get_stage(&id, 0).await.unwrap_err();
    assert!(
        matches!(
            err,
            BackendError::Corrupt {
                backend: Backend::Cache,
                ..
            }
        ),
        "{err:?}"
    );
}
