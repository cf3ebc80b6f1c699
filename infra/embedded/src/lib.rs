//! Embedded backends: SQLite for tasks, uploads, stats, the result cache and
//! a durable job queue; local files for audio.
//!
//! Everything lives under one data directory (`sound-creator.db` in WAL mode,
//! `blobs/`, `download.key`), so the whole service runs on one machine with
//! no outside service, and a restart loses no queued, running or finished
//! task. This crate stores and moves data; it must never decide a status
//! transition (that is `sound_creator_core::records`), and it must never
//! panic on what it reads back: unreadable rows become `BackendError::corrupt`.
//!
//! ```no_run
//! # async fn demo(callbacks: std::sync::Arc<dyn sound_creator_core::ports::CallbackSender>) -> anyhow::Result<()> {
//! use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
//! let store = EmbeddedStore::open("./data".as_ref(), EmbeddedOptions::default()).await?;
//! // Once the server knows its address:
//! store.set_public_base_url("http://127.0.0.1:8007");
//! let ports = store.ports(callbacks);
//! let downloads: std::sync::Arc<dyn sound_creator_core::ports::SignedDownloads> = store.blobs();
//! # Ok(()) }
//! ```

mod blobs;
mod cache;
mod db;
mod link_signature;
mod queue;
mod stats;
mod tasks;
mod uploads;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sound_creator_core::ports::Ports;
use sound_creator_core::ports::{CallbackSender, PortResult};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};

use crate::db::Database;

pub use blobs::{content_type_for, validate_blob_key, LocalBlobs};
pub use cache::SqliteResultCache;
pub use queue::{DeadLetter, SqliteQueue};
pub use stats::SqliteStats;
pub use tasks::SqliteTasks;
pub use uploads::SqliteUploads;

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "sound-creator.db";
/// Where the download-link signing key is kept when none is configured.
pub const DOWNLOAD_KEY_FILE: &str = "download.key";
/// Where audio files live inside the data directory.
pub const BLOBS_DIR: &str = "blobs";

/// How the embedded backends behave. `Default` gives the SQS-like defaults.
#[derive(Clone)]
pub struct EmbeddedOptions {
    /// How long a received message stays invisible (SQS default: 30 s).
    pub visibility_timeout: Duration,
    /// A message received this many times is dead-lettered instead of being
    /// received again.
    pub max_receives: u32,
    /// How often a long-polling receive looks at the table when no local
    /// `send` woke it (another process may share the database).
    pub poll_interval: Duration,
    /// Key for download-link signatures. `None`: generated once and kept in
    /// `<data_dir>/download.key` so links survive a restart.
    pub download_secret: Option<Vec<u8>>,
    /// Where the API serving `/v1/files/...` is reached. Usually known only
    /// after binding: see [`EmbeddedStore::set_public_base_url`].
    pub public_base_url: String,
    /// Database connections in all: one writer, the rest readers (at least
    /// one).
    pub max_connections: u32,
    /// How long a statement waits for another writer's lock.
    pub busy_timeout: Duration,
    /// Expired cache rows are purged at most this often, lazily on writes.
    pub cache_purge_interval: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            visibility_timeout: Duration::from_secs(30),
            max_receives: 5,
            poll_interval: Duration::from_millis(500),
            download_secret: None,
            public_base_url: "http://127.0.0.1:8007".to_owned(),
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
            cache_purge_interval: Duration::from_secs(60),
        }
    }
}

impl std::fmt::Debug for EmbeddedOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedOptions")
            .field("visibility_timeout", &self.visibility_timeout)
            .field("max_receives", &self.max_receives)
            .field("poll_interval", &self.poll_interval)
            .field(
                "download_secret",
                &self.download_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("public_base_url", &self.public_base_url)
            .field("max_connections", &self.max_connections)
            .field("busy_timeout", &self.busy_timeout)
            .field("cache_purge_interval", &self.cache_purge_interval)
            .finish()
    }
}

/// One data directory opened: its database connections and one handle per
/// port. Handles are cheap `Arc`s that share the connections; clone them
/// freely.
pub struct EmbeddedStore {
    data_dir: PathBuf,
    db: Arc<Database>,
    tasks: Arc<SqliteTasks>,
    uploads: Arc<SqliteUploads>,
    queue: Arc<SqliteQueue>,
    cache: Arc<SqliteResultCache>,
    stats: Arc<SqliteStats>,
    blobs: Arc<LocalBlobs>,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the data directory, runs the migrations
    /// and loads or creates the download signing key.
    pub async fn open(data_dir: &Path, options: EmbeddedOptions) -> anyhow::Result<Self> {
        std::fs::create_dir_all(data_dir).with_context(|| {
            format!("Failed to create the data directory {}", data_dir.display())
        })?;
        let connect = SqliteConnectOptions::new()
            .filename(data_dir.join(DATABASE_FILE))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL is durable across process crashes in WAL mode; only a
            // power loss can drop the last commits.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let readers = usize::try_from(options.max_connections.saturating_sub(1)).unwrap_or(1);
        let db =
            Arc::new(Database::open(&connect, readers).await.with_context(|| {
                format!("Failed to open the database in {}", data_dir.display())
            })?);

        let secret = match options.download_secret.clone() {
            Some(secret) if !secret.is_empty() => secret,
            Some(_) => anyhow::bail!("the download signing secret must not be empty"),
            None => blobs::load_or_create_key(&data_dir.join(DOWNLOAD_KEY_FILE))?,
        };
        let blobs = LocalBlobs::open(data_dir.join(BLOBS_DIR), secret, &options.public_base_url)?;

        Ok(Self {
            data_dir: data_dir.to_owned(),
            tasks: Arc::new(SqliteTasks::new(db.clone())),
            uploads: Arc::new(SqliteUploads::new(db.clone())),
            queue: Arc::new(SqliteQueue::new(
                db.clone(),
                options.visibility_timeout,
                options.max_receives,
                options.poll_interval,
            )),
            cache: Arc::new(SqliteResultCache::new(
                db.clone(),
                options.cache_purge_interval,
            )),
            stats: Arc::new(SqliteStats::new(db.clone())),
            blobs: Arc::new(blobs),
            db,
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `TaskStore`.
    pub fn tasks(&self) -> Arc<SqliteTasks> {
        self.tasks.clone()
    }

    /// `UploadStore`.
    pub fn uploads(&self) -> Arc<SqliteUploads> {
        self.uploads.clone()
    }

    /// `JobQueue` (plus `dead_letters` for operators and tests).
    pub fn queue(&self) -> Arc<SqliteQueue> {
        self.queue.clone()
    }

    /// `ResultCache`.
    pub fn cache(&self) -> Arc<SqliteResultCache> {
        self.cache.clone()
    }

    /// `StatsStore`.
    pub fn stats(&self) -> Arc<SqliteStats> {
        self.stats.clone()
    }

    /// `BlobStore`, `SignedDownloads` and `SignedUploads`: the API serves the
    /// links that this same handle signs.
    pub fn blobs(&self) -> Arc<LocalBlobs> {
        self.blobs.clone()
    }

    /// Sets the base of presigned download URLs, e.g. `http://127.0.0.1:8007`
    /// once the server has bound its port. Links presigned afterwards use it.
    pub fn set_public_base_url(&self, url: &str) {
        self.blobs.set_public_base_url(url);
    }

    /// Every port the domain needs, with the given callback sender.
    pub fn ports(&self, callbacks: Arc<dyn CallbackSender>) -> Ports {
        Ports {
            tasks: self.tasks(),
            uploads: self.uploads(),
            queue: self.queue(),
            cache: self.cache(),
            stats: self.stats(),
            blobs: self.blobs(),
            callbacks,
            finals: Default::default(),
            // The cache is a table in the same SQLite file as the task
            // records: reading it first would only double every poll of a
            // running task, and a copy of a final task would never be read.
            cache_final_results: false,
        }
    }

    /// Removes expired cache rows now (they are also purged lazily).
    pub async fn purge_expired_results(&self) -> PortResult<u64> {
        self.cache.purge_expired().await
    }

    /// Closes the database and checkpoints the WAL. Handles still held
    /// elsewhere fail with `Unavailable` afterwards.
    pub async fn close(&self) {
        self.db.close().await;
    }
}

/// Unix milliseconds now: the queue's and the cache's clock.
pub(crate) fn now_millis() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
