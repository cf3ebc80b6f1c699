//! The result cache in SQLite: stage results and final tasks as JSON with an
//! expiry time, the way the seed keeps them in Redis.
//!
//! Reads ignore expired rows, so expiry is exact whatever the purge does;
//! the purge only reclaims space and runs lazily on writes, at most once per
//! purge interval. Losing this table loses nothing: the task store is the
//! record. The embedded service keeps only stage results here
//! (`Ports::cache_final_results` is off): a final task cached beside its
//! record in the same file would cost a write and save no read.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sound_creator_core::ports::{Backend, BackendError, PortResult, ResultCache};
use sound_creator_core::task::{StageOutcome, Task, TaskId};

use crate::db::Database;
use crate::{millis, now_millis};

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Cache, err)
}

fn stage_key(id: &TaskId, index: usize) -> String {
    format!("stage:{id}:{index}")
}

fn final_key(id: &TaskId) -> String {
    format!("final:{id}")
}

pub struct SqliteResultCache {
    db: Arc<Database>,
    purge_interval: i64,
    last_purge: AtomicI64,
}

impl SqliteResultCache {
    pub(crate) fn new(db: Arc<Database>, purge_interval: Duration) -> Self {
        Self {
            db,
            purge_interval: millis(purge_interval),
            last_purge: AtomicI64::new(0),
        }
    }

    /// Deletes every expired row; returns how many.
    pub async fn purge_expired(&self) -> PortResult<u64> {
        let now = now_millis();
        self.last_purge.store(now, Ordering::Relaxed);
        let mut db = self.db.write().await.map_err(unavailable)?;
        let purged = sqlx::query("DELETE FROM result_cache WHERE expires_at <= ?")
            .bind(now)
            .execute(&mut *db)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(purged)
    }

    async fn put(&self, key: String, value: String, ttl: Duration) -> PortResult<()> {
        let now = now_millis();
        let mut db = self.db.write().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO result_cache (key, value, expires_at) VALUES (?, ?, ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
        )
        .bind(key)
        .bind(value)
        .bind(now.saturating_add(millis(ttl)))
        .execute(&mut *db)
        .await
        .map_err(unavailable)?;
        drop(db);
        let last = self.last_purge.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= self.purge_interval
            && self
                .last_purge
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // A failed purge costs only space; the write itself succeeded.
            if let Err(e) = self.purge_expired().await {
                tracing::warn!(error = %e, "failed to purge expired cache rows");
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str) -> PortResult<Option<String>> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        sqlx::query_scalar("SELECT value FROM result_cache WHERE key = ? AND expires_at > ?")
            .bind(key)
            .bind(now_millis())
            .fetch_optional(&mut *db)
            .await
            .map_err(unavailable)
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    key: &str,
    value: Option<String>,
) -> PortResult<Option<T>> {
    value
        .map(|v| {
            serde_json::from_str(&v).map_err(|e| {
                BackendError::corrupt(
                    Backend::Cache,
                    format!("cache entry {key} cannot be decoded: {e}"),
                )
            })
        })
        .transpose()
}

#[async_trait]
impl ResultCache for SqliteResultCache {
    async fn put_stage(
        &self,
        id: &TaskId,
        index: usize,
        stage: &StageOutcome,
        ttl: Duration,
    ) -> PortResult<()> {
        let value = serde_json::to_string(stage).map_err(unavailable)?;
        self.put(stage_key(id, index), value, ttl).await
    }

    async fn get_stage(&self, id: &TaskId, index: usize) -> PortResult<Option<StageOutcome>> {
        let key = stage_key(id, index);
        let value = self.get(&key).await?;
        decode(&key, value)
    }

    async fn put_final(&self, task: &Task, ttl: Duration) -> PortResult<()> {
        let value = serde_json::to_string(task).map_err(unavailable)?;
        self.put(final_key(&task.id), value, ttl).await
    }

    async fn get_final(&self, id: &TaskId) -> PortResult<Option<Task>> {
        let key = final_key(id);
        let value = self.get(&key).await?;
        decode(&key, value)
    }

    async fn ping(&self) -> PortResult<()> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        sqlx::query("SELECT 1 FROM result_cache LIMIT 1")
            .execute(&mut *db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
