//! Upload records in SQLite, beside the task records: the `Upload` as a
//! JSON document keyed by its id. A record is written once; an insert of an
//! id that exists changes nothing. This module never decides who may use an
//! upload (the domain does, from the record).

use std::sync::Arc;

use async_trait::async_trait;
use sound_creator_core::ports::{Backend, BackendError, PortResult, UploadInserted, UploadStore};
use sound_creator_core::upload::{Upload, UploadId};

use crate::db::Database;

pub struct SqliteUploads {
    db: Arc<Database>,
}

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Tasks, err)
}

impl SqliteUploads {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

#[async_trait]
impl UploadStore for SqliteUploads {
    async fn insert(&self, upload: &Upload) -> PortResult<UploadInserted> {
        let document = serde_json::to_string(upload).map_err(unavailable)?;
        let mut db = self.db.write().await.map_err(unavailable)?;
        let inserted = sqlx::query(
            "INSERT INTO uploads (id, tenant, document, retain_until) VALUES (?, ?, ?, ?) \
             ON CONFLICT DO NOTHING",
        )
        .bind(upload.id.as_str())
        .bind(upload.tenant.as_str())
        .bind(&document)
        .bind(upload.retain_until.timestamp_millis())
        .execute(&mut *db)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(if inserted == 1 {
            UploadInserted::Created
        } else {
            UploadInserted::Exists
        })
    }

    async fn get(&self, id: &UploadId) -> PortResult<Option<Upload>> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        let document: Option<String> =
            sqlx::query_scalar("SELECT document FROM uploads WHERE id = ?")
                .bind(id.as_str())
                .fetch_optional(&mut *db)
                .await
                .map_err(unavailable)?;
        document
            .map(|d| {
                serde_json::from_str(&d).map_err(|e| {
                    BackendError::corrupt(
                        Backend::Tasks,
                        format!("upload {id} cannot be decoded: {e}"),
                    )
                })
            })
            .transpose()
    }
}
