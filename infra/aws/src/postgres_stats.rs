//! Postgres as the durable statistics store behind `GET /v1/stats`, as the
//! seed keeps request information in its app database. One row per task
//! (`task_stats`, see `migrations/`), upserted by `task_id` so recording a
//! task twice (a redelivered completion) never counts it twice. The schema
//! is migrated when the adapter connects.
//!
//! Every query is bounded (pool acquire timeout, server-side
//! `statement_timeout`, and a client-side timeout on top), and the pool
//! checks idle connections before use, so a restarted server is picked up
//! without rebuilding the adapter.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sound_creator_core::ports::{
    Backend, BackendError, Percentiles, PortResult, RecentTask, StatsQuery, StatsRow, StatsStore,
    StatsSummary,
};
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::{one_line, AwsSettings};

pub struct PostgresStats {
    pool: PgPool,
    operation_timeout: Duration,
}

/// The filter every stats query shares: `$1` tenant, `$2` optional user,
/// `$3`/`$4` optional inclusive bounds on `created_at`.
const FILTER: &str = "tenant = $1 AND ($2::text IS NULL OR user_id = $2) \
     AND ($3::timestamptz IS NULL OR created_at >= $3) AND ($4::timestamptz IS NULL OR created_at <= $4)";

impl PostgresStats {
    /// Connects and runs the migrations in `infra/aws/migrations/`.
    pub async fn connect(settings: &AwsSettings) -> anyhow::Result<Self> {
        let statement_timeout = settings.operation_timeout.as_millis().to_string();
        let options = PgConnectOptions::new()
            .host(&settings.postgres_host)
            .port(settings.postgres_port)
            .username(&settings.postgres_user)
            .password(settings.postgres_password.expose())
            .database(&settings.postgres_db)
            .application_name("sound-creator")
            .options([("statement_timeout", statement_timeout.as_str())]);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .min_connections(0)
            .acquire_timeout(settings.connect_timeout + Duration::from_secs(1))
            .test_before_acquire(true)
            .connect_with(options)
            .await?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Self {
            pool,
            operation_timeout: settings.operation_timeout,
        })
    }

    /// The pool, for tests that inspect rows.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, sqlx::Error>>,
    ) -> PortResult<T> {
        match tokio::time::timeout(self.operation_timeout, call).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(BackendError::unavailable(
                Backend::Stats,
                format!(
                    "no answer from Postgres within {:?}",
                    self.operation_timeout
                ),
            )),
        }
    }
}

fn unavailable(err: sqlx::Error) -> BackendError {
    BackendError::unavailable(Backend::Stats, one_line(&err.to_string()))
}

fn corrupt(what: impl std::fmt::Display) -> BackendError {
    BackendError::corrupt(Backend::Stats, what)
}

fn to_i64(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

#[async_trait]
impl StatsStore for PostgresStats {
    async fn record(&self, row: &StatsRow) -> PortResult<()> {
        let query = sqlx::query(
            "INSERT INTO task_stats (task_id, tenant, user_id, family, status, duration, samples, audio_seconds, \
                 created_at, completed_at, queue_ms, inference_ms, total_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (task_id) DO UPDATE SET tenant = EXCLUDED.tenant, user_id = EXCLUDED.user_id, \
                 family = EXCLUDED.family, status = EXCLUDED.status, duration = EXCLUDED.duration, \
                 samples = EXCLUDED.samples, audio_seconds = EXCLUDED.audio_seconds, \
                 created_at = EXCLUDED.created_at, completed_at = EXCLUDED.completed_at, \
                 queue_ms = EXCLUDED.queue_ms, inference_ms = EXCLUDED.inference_ms, \
                 total_ms = EXCLUDED.total_ms, recorded_at = now()",
        )
        .bind(row.task_id.as_str())
        .bind(row.tenant.as_str())
        .bind(&row.user_id)
        .bind(row.family.as_str())
        .bind(row.status.as_str())
        .bind(row.duration)
        .bind(i16::from(row.samples))
        .bind(row.audio_seconds)
        .bind(row.created_at)
        .bind(row.completed_at)
        .bind(to_i64(row.queue_ms))
        .bind(to_i64(row.inference_ms))
        .bind(to_i64(row.total_ms));
        self.bounded(query.execute(&self.pool)).await?;
        Ok(())
    }

    async fn summarize(&self, q: &StatsQuery) -> PortResult<StatsSummary> {
        let totals_sql = format!(
            "SELECT count(*), coalesce(sum(audio_seconds), 0)::float8, \
                 percentile_disc(0.5) WITHIN GROUP (ORDER BY total_ms), \
                 percentile_disc(0.95) WITHIN GROUP (ORDER BY total_ms) \
             FROM task_stats WHERE {FILTER}"
        );
        let (requests, audio_seconds, p50, p95): (i64, f64, Option<i64>, Option<i64>) = self
            .bounded(
                sqlx::query_as(&totals_sql)
                    .bind(q.tenant.as_str())
                    .bind(q.user_id.as_deref())
                    .bind(q.from)
                    .bind(q.to)
                    .fetch_one(&self.pool),
            )
            .await?;

        let groups_sql = format!(
            "SELECT status, family, count(*) FROM task_stats WHERE {FILTER} \
             GROUP BY GROUPING SETS ((status), (family))"
        );
        let groups: Vec<(Option<String>, Option<String>, i64)> = self
            .bounded(
                sqlx::query_as(&groups_sql)
                    .bind(q.tenant.as_str())
                    .bind(q.user_id.as_deref())
                    .bind(q.from)
                    .bind(q.to)
                    .fetch_all(&self.pool),
            )
            .await?;
        let mut by_status = BTreeMap::new();
        let mut by_type = BTreeMap::new();
        for (status, family, count) in groups {
            match (status, family) {
                (Some(status), None) => by_status.insert(status, to_u64(count)),
                (None, Some(family)) => by_type.insert(family, to_u64(count)),
                _ => {
                    return Err(corrupt(
                        "a stats group has both or neither of status and family",
                    ))
                }
            };
        }

        let recent_sql = format!(
            "SELECT task_id, family, status, created_at, duration FROM task_stats WHERE {FILTER} \
             ORDER BY created_at DESC, task_id DESC LIMIT $5"
        );
        let rows: Vec<(String, String, String, DateTime<Utc>, f64)> = self
            .bounded(
                sqlx::query_as(&recent_sql)
                    .bind(q.tenant.as_str())
                    .bind(q.user_id.as_deref())
                    .bind(q.from)
                    .bind(q.to)
                    .bind(i64::try_from(q.recent_limit).unwrap_or(i64::MAX))
                    .fetch_all(&self.pool),
            )
            .await?;
        let recent = rows
            .into_iter()
            .map(|(task_id, family, status, created_at, duration)| {
                Ok(RecentTask {
                    task_id: TaskId::parse(&task_id)
                        .ok_or_else(|| corrupt(format!("invalid task id {task_id:?}")))?,
                    family: ModelFamily::parse(&family)
                        .ok_or_else(|| corrupt(format!("unknown type {family:?}")))?,
                    status: TaskStatus::parse(&status)
                        .ok_or_else(|| corrupt(format!("unknown status {status:?}")))?,
                    created_at,
                    duration,
                })
            })
            .collect::<PortResult<Vec<_>>>()?;

        Ok(StatsSummary {
            requests: to_u64(requests),
            by_status,
            by_type,
            audio_seconds,
            latency_ms: Percentiles {
                p50: p50.map(to_u64),
                p95: p95.map(to_u64),
            },
            recent,
        })
    }

    async fn ping(&self) -> PortResult<()> {
        self.bounded(sqlx::query("SELECT 1").execute(&self.pool))
            .await?;
        Ok(())
    }
}
