//! Task records in SQLite: the `Task` as a JSON document beside the columns
//! that constraints need (tenant + idempotency key, version).
//!
//! Every write is a single statement, so SQLite's one-writer-at-a-time lock
//! makes the compare-and-swap and the idempotent insert race-free without an
//! explicit transaction. This module never looks inside a task to decide
//! anything.

use async_trait::async_trait;
use sound_creator_core::ports::{Backend, BackendError, Inserted, PortResult, TaskStore};
use sound_creator_core::task::{Task, TaskId};
use std::sync::Arc;

use crate::db::Database;
use crate::now_millis;

pub struct SqliteTasks {
    db: Arc<Database>,
}

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Tasks, err)
}

fn version_column(version: u64) -> PortResult<i64> {
    i64::try_from(version).map_err(|_| {
        unavailable(format!(
            "task version {version} does not fit a database integer"
        ))
    })
}

fn decode(id: &str, document: &str) -> PortResult<Task> {
    serde_json::from_str(document).map_err(|e| {
        BackendError::corrupt(Backend::Tasks, format!("task {id} cannot be decoded: {e}"))
    })
}

impl SqliteTasks {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    async fn find_by_key(&self, task: &Task, key: &str) -> PortResult<Option<Task>> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT id, document FROM tasks WHERE tenant = ? AND idempotency_key = ?",
        )
        .bind(task.tenant.as_str())
        .bind(key)
        .fetch_optional(&mut *db)
        .await
        .map_err(unavailable)?;
        row.map(|(id, document)| decode(&id, &document)).transpose()
    }
}

#[async_trait]
impl TaskStore for SqliteTasks {
    async fn insert(&self, task: &Task) -> PortResult<Inserted> {
        let document = serde_json::to_string(task).map_err(unavailable)?;
        // DO NOTHING on any uniqueness conflict: the (tenant, key) index
        // decides the idempotency race inside SQLite's write lock.
        let mut db = self.db.write().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO tasks (id, tenant, idempotency_key, status, version, document, updated_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        )
        .bind(task.id.as_str())
        .bind(task.tenant.as_str())
        .bind(task.idempotency_key.as_deref())
        .bind(task.status.as_str())
        .bind(version_column(task.version)?)
        .bind(&document)
        .bind(now_millis())
        .execute(&mut *db)
        .await
        .map_err(unavailable)?
        .rows_affected();
        drop(db);
        if inserted == 1 {
            return Ok(Inserted::Created);
        }
        if let Some(key) = task.idempotency_key.as_deref() {
            if let Some(existing) = self.find_by_key(task, key).await? {
                return Ok(Inserted::Existing(existing));
            }
        }
        // Same id inserted twice (a retried insert): that record is the task.
        match self.get(&task.id).await? {
            Some(existing) => Ok(Inserted::Existing(existing)),
            None => Err(unavailable(format!(
                "insert of task {} conflicted with a record that is gone",
                task.id
            ))),
        }
    }

    async fn get(&self, id: &TaskId) -> PortResult<Option<Task>> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        let document: Option<String> =
            sqlx::query_scalar("SELECT document FROM tasks WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *db)
                .await
                .map_err(unavailable)?;
        document.map(|d| decode(id.as_str(), &d)).transpose()
    }

    async fn replace(&self, task: &Task, expected_version: u64) -> PortResult<bool> {
        let document = serde_json::to_string(task).map_err(unavailable)?;
        let mut db = self.db.write().await.map_err(unavailable)?;
        let written = sqlx::query(
            "UPDATE tasks SET status = ?, version = ?, document = ?, updated_at = ? \
             WHERE id = ? AND version = ?",
        )
        .bind(task.status.as_str())
        .bind(version_column(task.version)?)
        .bind(&document)
        .bind(now_millis())
        .bind(task.id.as_str())
        .bind(version_column(expected_version)?)
        .execute(&mut *db)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(written == 1)
    }

    async fn ping(&self) -> PortResult<()> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        sqlx::query("SELECT 1 FROM tasks LIMIT 1")
            .execute(&mut *db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
