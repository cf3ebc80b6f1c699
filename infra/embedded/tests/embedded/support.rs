//! Fixtures shared by the embedded backend tests.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sound_creator_core::request::{GenerationParams, OutputFormat, TaskRequest};
use sound_creator_core::task::{CallbackState, ModelFamily, Task, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};

/// Options with short timeouts so tests run fast.
pub fn quick_options() -> EmbeddedOptions {
    EmbeddedOptions {
        visibility_timeout: Duration::from_millis(300),
        max_receives: 5,
        poll_interval: Duration::from_millis(50),
        ..EmbeddedOptions::default()
    }
}

pub async fn open(dir: &Path, options: EmbeddedOptions) -> EmbeddedStore {
    EmbeddedStore::open(dir, options)
        .await
        .expect("the store opens")
}

pub fn task(tenant: &str, idempotency_key: Option<&str>) -> Task {
    task_at(tenant, idempotency_key, Utc::now())
}

pub fn task_at(tenant: &str, idempotency_key: Option<&str>, created_at: DateTime<Utc>) -> Task {
    let request = TaskRequest {
        family: ModelFamily::Music,
        prompt: "lofi hip hop beat with warm piano".to_owned(),
        duration: 8.0,
        samples: 1,
        user_id: "user-42".to_owned(),
        params: GenerationParams::default(),
        format: OutputFormat::Wav,
        normalization: Default::default(),
        model: None,
        melody: None,
        callback_url: None,
        ttl_seconds: None,
    };
    Task {
        id: TaskId::generate(),
        tenant: Tenant::new(tenant),
        status: TaskStatus::Queued,
        progress: 0.0,
        stages: vec![None],
        stage_progress: vec![0.0],
        stage_steps: Vec::new(),
        error: None,
        created_at,
        started_at: None,
        completed_at: None,
        queue_deadline: None,
        retain_until: None,
        idempotency_key: idempotency_key.map(str::to_owned),
        request_fingerprint: request.fingerprint(),
        callback: CallbackState::NotRequested,
        callback_url: None,
        jobs_enqueued: false,
        version: 1,
        request,
    }
}

/// A raw connection to the store's database, to plant bad data.
pub async fn raw_database(dir: &Path) -> sqlx::SqlitePool {
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.join(sound_creator_embedded::DATABASE_FILE))
        .busy_timeout(Duration::from_secs(5));
    sqlx::SqlitePool::connect_with(options).await.unwrap()
}
