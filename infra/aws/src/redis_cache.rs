//! Redis as the result cache, as the seed keeps temporary results: each
//! stage's outcome as a worker finishes it (`sound-creator:stage:<task>:<i>`)
//! and the final aggregated task (`sound-creator:final:<task>`), each with an
//! expiry (`SET key value EX ttl`). The task store stays the record: losing
//! this cache loses nothing, so it runs without persistence.
//!
//! The `ConnectionManager` connects lazily and reconnects by itself after
//! the server comes back; every command is bounded by a response timeout so
//! a dead server answers an error, never a hang.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo};
use sound_creator_core::ports::{Backend, BackendError, PortResult, ResultCache};
use sound_creator_core::task::{StageOutcome, Task, TaskId};

use crate::{one_line, AwsSettings};

pub const KEY_PREFIX: &str = "sound-creator";

#[derive(Clone)]
pub struct RedisCache {
    connection: ConnectionManager,
}

impl RedisCache {
    /// Builds the client without connecting: Redis may come up after us.
    pub fn connect(settings: &AwsSettings) -> anyhow::Result<Self> {
        let info = ConnectionAddr::Tcp(settings.redis_host.clone(), settings.redis_port)
            .into_connection_info()?;
        let redis_settings = info.redis_settings().clone().set_db(settings.redis_db);
        let info: ConnectionInfo = info.set_redis_settings(redis_settings);
        let client = redis::Client::open(info)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.operation_timeout))
            // Reconnect attempts happen in the background of a failed call;
            // a few quick ones are enough, the next call tries again anyway.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self { connection })
    }

    async fn set(&self, key: &str, value: &str, ttl: Duration) -> PortResult<()> {
        let seconds = ttl.as_secs().max(1);
        let mut connection = self.connection.clone();
        redis::cmd("SET")
            .arg(key)
            .arg(value)
            .arg("EX")
            .arg(seconds)
            .query_async::<()>(&mut connection)
            .await
            .map_err(unavailable)
    }

    async fn get(&self, key: &str) -> PortResult<Option<String>> {
        let mut connection = self.connection.clone();
        redis::cmd("GET")
            .arg(key)
            .query_async::<Option<String>>(&mut connection)
            .await
            .map_err(unavailable)
    }

    /// Seconds until `key` expires (`TTL`), for tests: `None` if it is gone.
    pub async fn ttl_of(&self, key: &str) -> PortResult<Option<i64>> {
        let mut connection = self.connection.clone();
        let ttl: i64 = redis::cmd("TTL")
            .arg(key)
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok((ttl >= 0).then_some(ttl))
    }
}

pub fn stage_key(id: &TaskId, index: usize) -> String {
    format!("{KEY_PREFIX}:stage:{id}:{index}")
}

pub fn final_key(id: &TaskId) -> String {
    format!("{KEY_PREFIX}:final:{id}")
}

fn unavailable(err: redis::RedisError) -> BackendError {
    BackendError::unavailable(Backend::Cache, one_line(&err.to_string()))
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, raw: &str) -> PortResult<T> {
    serde_json::from_str(raw)
        .map_err(|e| BackendError::corrupt(Backend::Cache, format!("{key} does not parse: {e}")))
}

fn encode(value: &impl serde::Serialize, key: &str) -> PortResult<String> {
    serde_json::to_string(value).map_err(|e| {
        BackendError::unavailable(Backend::Cache, format!("{key} does not serialize: {e}"))
    })
}

#[async_trait]
impl ResultCache for RedisCache {
    async fn put_stage(
        &self,
        id: &TaskId,
        index: usize,
        stage: &StageOutcome,
        ttl: Duration,
    ) -> PortResult<()> {
        let key = stage_key(id, index);
        self.set(&key, &encode(stage, &key)?, ttl).await
    }

    async fn get_stage(&self, id: &TaskId, index: usize) -> PortResult<Option<StageOutcome>> {
        let key = stage_key(id, index);
        self.get(&key)
            .await?
            .map(|raw| decode(&key, &raw))
            .transpose()
    }

    async fn put_final(&self, task: &Task, ttl: Duration) -> PortResult<()> {
        let key = final_key(&task.id);
        self.set(&key, &encode(task, &key)?, ttl).await
    }

    async fn get_final(&self, id: &TaskId) -> PortResult<Option<Task>> {
        let key = final_key(id);
        self.get(&key)
            .await?
            .map(|raw| decode(&key, &raw))
            .transpose()
    }

    async fn ping(&self) -> PortResult<()> {
        let mut connection = self.connection.clone();
        redis::cmd("PING")
            .query_async::<String>(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
