//! Ports: the traits through which the domain reaches the outside world.
//!
//! Each has one adapter per backend (SQLite and local files in the embedded
//! mode; SQS, DynamoDB, Redis, Postgres and S3 in AWS) and every adapter is
//! tested against a real server. Adapters store and move data; they never
//! decide a status transition — that is the domain's job (see `tasks.rs`).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::final_watch::FinalWatch;
use crate::task::{ModelFamily, Task, TaskId, TaskStatus, Tenant};
use crate::upload::{Upload, UploadId};

/// Which outside system an error came from; also the names `/health` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Queue,
    Tasks,
    Cache,
    Stats,
    Blobs,
    Callback,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Queue => "queue",
            Backend::Tasks => "tasks",
            Backend::Cache => "cache",
            Backend::Stats => "stats",
            Backend::Blobs => "blobs",
            Backend::Callback => "callback",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A backend failed. `Unavailable` means "try again later" (the API answers
/// 503 with `Retry-After`); `Corrupt` means stored data could not be read
/// back and retrying will not help.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("{backend} backend is unavailable: {message}")]
    Unavailable { backend: Backend, message: String },
    #[error("{backend} backend holds unreadable data: {message}")]
    Corrupt { backend: Backend, message: String },
}

impl BackendError {
    pub fn unavailable(backend: Backend, err: impl fmt::Display) -> Self {
        BackendError::Unavailable {
            backend,
            message: err.to_string(),
        }
    }

    pub fn corrupt(backend: Backend, err: impl fmt::Display) -> Self {
        BackendError::Corrupt {
            backend,
            message: err.to_string(),
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            BackendError::Unavailable { backend, .. } | BackendError::Corrupt { backend, .. } => {
                *backend
            }
        }
    }
}

pub type PortResult<T> = Result<T, BackendError>;

// ---------------------------------------------------------------------------
// Queue

/// The queues of a deployment: one per model family, so workers of one
/// family never see the other's jobs, plus the completions queue that
/// carries stage results and callback retries to the completion step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueName {
    Jobs(ModelFamily),
    Completions,
}

impl QueueName {
    pub const ALL: [QueueName; 3] = [
        QueueName::Jobs(ModelFamily::Music),
        QueueName::Jobs(ModelFamily::Audio),
        QueueName::Completions,
    ];

    /// Stable name, used for SQS queue names, table rows and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Jobs(ModelFamily::Music) => "music-jobs",
            QueueName::Jobs(ModelFamily::Audio) => "audio-jobs",
            QueueName::Completions => "completions",
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A received message. It stays invisible to other consumers until the
/// visibility timeout passes; only `delete` removes it for good.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub message_id: String,
    /// Handle for `delete`/`extend_visibility`/`release` of this receipt.
    pub receipt: String,
    pub body: String,
    /// 1 on first delivery; grows with every redelivery.
    pub receive_count: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    pub queued: u64,
    pub in_flight: u64,
}

/// A durable queue with SQS semantics: at-least-once delivery, visibility
/// timeout, receive count, and a dead-letter queue after too many receives.
#[async_trait]
pub trait JobQueue: Send + Sync {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> PortResult<()>;

    /// Waits up to `wait` for at least one message (long polling) and returns
    /// at most `max`.
    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>>;

    async fn delete(&self, queue: QueueName, receipt: &str) -> PortResult<()>;

    /// Heartbeat: keep the message invisible for `timeout` from now.
    async fn extend_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        timeout: Duration,
    ) -> PortResult<()>;

    /// Hand a message back at once (graceful shutdown).
    async fn release(&self, queue: QueueName, receipt: &str) -> PortResult<()> {
        self.extend_visibility(queue, receipt, Duration::ZERO).await
    }

    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth>;
}

// ---------------------------------------------------------------------------
// Task store

/// What `TaskStore::insert` did.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // returned once per submit; boxing buys nothing
pub enum Inserted {
    Created,
    /// A task with the same tenant and idempotency key already exists.
    Existing(Task),
}

/// Durable task records (DynamoDB in AWS, SQLite embedded). Writes are
/// compare-and-swap on `Task::version`, so concurrent writers (a worker
/// reporting progress, the API canceling, two deliveries of one job) never
/// lose each other's changes and each transition is applied exactly once.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Stores a new task (its `version` is the initial one). When the task
    /// has an idempotency key already used by the same tenant, stores nothing
    /// and returns the existing task.
    async fn insert(&self, task: &Task) -> PortResult<Inserted>;

    async fn get(&self, id: &TaskId) -> PortResult<Option<Task>>;

    /// Writes `task` (whose `version` is already the new one) only if the
    /// stored version is still `expected_version`. Returns whether it did.
    async fn replace(&self, task: &Task, expected_version: u64) -> PortResult<bool>;

    async fn ping(&self) -> PortResult<()>;
}

// ---------------------------------------------------------------------------
// Upload records

/// What `UploadStore::insert` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadInserted {
    Created,
    /// An upload with this id exists already (a retried insert).
    Exists,
}

/// The records of `POST /v1/uploads` (DynamoDB in AWS, beside the tasks;
/// SQLite embedded). Written once and never changed; a record past its
/// `retain_until` may be dropped by the store (DynamoDB's TTL).
#[async_trait]
pub trait UploadStore: Send + Sync {
    async fn insert(&self, upload: &Upload) -> PortResult<UploadInserted>;
    async fn get(&self, id: &UploadId) -> PortResult<Option<Upload>>;
}

// ---------------------------------------------------------------------------
// Result cache

/// Temporary results with expiry (Redis in AWS, as the seed keeps them):
/// each stage's result as the worker finishes it, and the final aggregated
/// task. Losing an entry loses nothing: the task store is the record.
#[async_trait]
pub trait ResultCache: Send + Sync {
    async fn put_stage(
        &self,
        id: &TaskId,
        index: usize,
        stage: &crate::task::StageOutcome,
        ttl: Duration,
    ) -> PortResult<()>;
    async fn get_stage(
        &self,
        id: &TaskId,
        index: usize,
    ) -> PortResult<Option<crate::task::StageOutcome>>;
    async fn put_final(&self, task: &Task, ttl: Duration) -> PortResult<()>;
    async fn get_final(&self, id: &TaskId) -> PortResult<Option<Task>>;
    async fn ping(&self) -> PortResult<()>;
}

// ---------------------------------------------------------------------------
// Stats store

/// One request's statistics row, written once the task is final.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsRow {
    pub task_id: TaskId,
    pub tenant: Tenant,
    pub user_id: String,
    pub family: ModelFamily,
    pub status: TaskStatus,
    pub duration: f64,
    pub samples: u8,
    pub audio_seconds: f64,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub queue_ms: Option<u64>,
    pub inference_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

impl StatsRow {
    pub fn of(task: &Task) -> Self {
        Self {
            task_id: task.id.clone(),
            tenant: task.tenant.clone(),
            user_id: task.request.user_id.clone(),
            family: task.request.family,
            status: task.status,
            duration: task.request.duration,
            samples: task.request.samples,
            audio_seconds: task.audio_seconds(),
            created_at: task.created_at,
            completed_at: task.completed_at,
            queue_ms: task.queue_ms(),
            inference_ms: task.inference_ms(),
            total_ms: task.total_ms(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StatsQuery {
    pub tenant: Tenant,
    pub user_id: Option<String>,
    /// Bounds on `created_at`, inclusive.
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub recent_limit: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RecentTask {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    #[serde(rename = "type")]
    pub family: ModelFamily,
    pub status: TaskStatus,
    pub created_at: DateTime<Utc>,
    pub duration: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: Option<u64>,
    pub p95: Option<u64>,
}

/// The aggregate the stats route answers with (minus the echo of the query).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSummary {
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    pub audio_seconds: f64,
    /// Of `total_ms` (submit to final), over finished tasks.
    pub latency_ms: Percentiles,
    /// Newest first.
    pub recent: Vec<RecentTask>,
}

/// Durable request statistics (Postgres in AWS, SQLite embedded). They
/// outlive the temporary results and the task records' retention.
#[async_trait]
pub trait StatsStore: Send + Sync {
    /// Idempotent by `task_id`: recording a task again overwrites its row.
    async fn record(&self, row: &StatsRow) -> PortResult<()>;
    async fn summarize(&self, query: &StatsQuery) -> PortResult<StatsSummary>;
    async fn ping(&self) -> PortResult<()>;
}

// ---------------------------------------------------------------------------
// Blob store

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUrl {
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// A signed link a client PUTs one object to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresignedUpload {
    pub url: String,
    /// Headers the PUT must carry (`Content-Type` among them); the client's
    /// HTTP library adds `Content-Length` itself.
    pub headers: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// Where audio files live (S3 in AWS, a directory embedded). Downloads go
/// straight from the store through short-lived presigned URLs, and so do
/// uploads, through presigned PUTs.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Idempotent: writing the same key twice leaves one object.
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> PortResult<()>;
    /// The object's bytes, or `None` if there is none.
    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>>;
    /// The object's size, or `None` if there is none (a HEAD: no bytes move).
    async fn size(&self, key: &str) -> PortResult<Option<u64>>;
    async fn presign_get(&self, key: &str, expires_in: Duration) -> PortResult<PresignedUrl>;
    /// A link that lets its holder PUT exactly `bytes` bytes of
    /// `content_type` to `key`, and nothing else, until it expires.
    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        bytes: u64,
        expires_in: Duration,
    ) -> PortResult<PresignedUpload>;
    async fn ping(&self) -> PortResult<()>;
}

/// What a presigned download served by the API itself found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Download {
    Found {
        bytes: Vec<u8>,
        content_type: String,
    },
    /// The link's time is up: the client should read the result again.
    Expired,
    /// Signature does not match (tampered or foreign link).
    Forbidden,
    Missing,
}

/// Presigned URLs that the API serves itself (the embedded mode's local
/// files; in AWS, S3 serves its presigned URLs and this is not used).
/// `GET /v1/files/{key}?expires=<unix seconds>&signature=<hex>` lands here.
#[async_trait]
pub trait SignedDownloads: Send + Sync {
    async fn open(&self, key: &str, expires: i64, signature: &str) -> PortResult<Download>;
}

/// A presigned PUT served by the API itself (the embedded mode's local
/// files): `PUT /v1/files/{key}?expires=&content_type=&bytes=&signature=`.
/// The signature covers all four, so a holder can change none of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutLink {
    pub expires: i64,
    pub content_type: String,
    pub bytes: u64,
    pub signature: String,
}

/// Whether a PUT link may be used now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutAuthorization {
    Allowed,
    Expired,
    /// Signature does not match (tampered or foreign link).
    Forbidden,
}

/// The embedded mode's side of presigned uploads (in AWS, S3 checks its own
/// presigned PUTs and this is not used). The API checks the link, then the
/// request's type and length against it, then stores through `BlobStore`.
pub trait SignedUploads: Send + Sync {
    fn authorize_put(&self, key: &str, link: &PutLink) -> PutAuthorization;
}

/// The object key of one clip: grouped per task so a task's audio can be
/// listed or removed together.
pub fn clip_key(task: &TaskId, index: usize, extension: &str) -> String {
    format!("tasks/{task}/clip-{index}.{extension}")
}

/// The object key of an upload: the bytes a client PUT for it.
pub fn upload_key(upload: &UploadId) -> String {
    format!("uploads/{upload}")
}

// ---------------------------------------------------------------------------
// Client callback

/// One signed delivery of a result document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    pub url: String,
    pub webhook_id: String,
    pub timestamp: i64,
    /// `v1,<base64>` signatures, space separated (empty when unsigned).
    pub signature: String,
    pub body: String,
}

/// Its message shows the URL without its credentials (`redact::url`).
#[derive(Debug, Clone, thiserror::Error)]
#[error("callback to {} failed: {reason}", crate::redact::url(.url))]
pub struct CallbackError {
    pub url: String,
    pub reason: String,
}

/// Sends a callback over HTTP. A non-2xx answer or a timeout is an error;
/// retries are scheduled by the domain, not here.
#[async_trait]
pub trait CallbackSender: Send + Sync {
    async fn send(&self, delivery: &WebhookDelivery) -> Result<(), CallbackError>;
}

// ---------------------------------------------------------------------------
// Scale-in protection

#[derive(Debug, Clone, thiserror::Error)]
#[error("scale-in protection: {0}")]
pub struct ProtectionError(pub String);

/// Protection of the worker's own task from scale-in (ECS task scale-in
/// protection in AWS): held while the worker has a job in hand, so that a
/// scale-in stops only workers with nothing to lose. A failure here costs at
/// most a job handed back by SIGTERM, so the worker logs it and goes on.
#[async_trait]
pub trait ScaleInProtection: Send + Sync {
    async fn protect(&self) -> Result<(), ProtectionError>;
    async fn unprotect(&self) -> Result<(), ProtectionError>;
    /// How long one `protect` lasts if it is not renewed; the worker renews
    /// it after half of this.
    fn lasts(&self) -> Duration;
}

// ---------------------------------------------------------------------------
// All of them

/// Every backend the domain talks to, as one deployment wired them.
#[derive(Clone)]
pub struct Ports {
    pub tasks: Arc<dyn TaskStore>,
    pub uploads: Arc<dyn UploadStore>,
    pub queue: Arc<dyn JobQueue>,
    pub cache: Arc<dyn ResultCache>,
    pub stats: Arc<dyn StatsStore>,
    pub blobs: Arc<dyn BlobStore>,
    pub callbacks: Arc<dyn CallbackSender>,
    /// In-process wake-ups for `/v1/generate` waiters. The process that
    /// runs a completion loop beside the API says so with
    /// [`FinalWatch::mark_completion_local`]; everywhere else waiters poll.
    pub finals: Arc<FinalWatch>,
    /// Whether final results go through `cache` as well as the task store:
    /// worth it where the cache is the faster store (Redis in front of
    /// DynamoDB). Stage results always go through the cache.
    pub cache_final_results: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_distinct() {
        let names: std::collections::BTreeSet<_> =
            QueueName::ALL.iter().map(|q| q.as_str()).collect();
        assert_eq!(names.len(), QueueName::ALL.len());
    }

    #[test]
    fn clip_keys_group_clips_by_task() {
        let id = TaskId::parse("abc").unwrap();
        assert_eq!(clip_key(&id, 2, "wav"), "tasks/abc/clip-2.wav");
    }
}
