//! Request statistics in SQLite: one row per task, written (and rewritten)
//! once the task is final, and the stats route's aggregate over a tenant's
//! rows. Rows outlive the task records and the cached results.
//!
//! Latency percentiles are nearest-rank over the rows that have a
//! `total_ms`, picked with `ORDER BY ... LIMIT 1 OFFSET rank-1` so no query
//! loads every row. Queries are always scoped to one tenant.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sound_creator_core::ports::{
    Backend, BackendError, Percentiles, PortResult, RecentTask, StatsQuery, StatsRow, StatsStore,
    StatsSummary,
};
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus};

use crate::db::Database;

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Stats, err)
}

fn corrupt(err: impl std::fmt::Display) -> BackendError {
    BackendError::corrupt(Backend::Stats, err)
}

/// `created_at` is kept as unix nanoseconds so the inclusive bounds of a
/// query compare exactly with what was recorded.
fn nanos(at: DateTime<Utc>) -> PortResult<i64> {
    at.timestamp_nanos_opt().ok_or_else(|| {
        unavailable(format!(
            "time {at} is outside the range the stats table can hold"
        ))
    })
}

/// Where a query bound falls on the table's scale. The API takes years
/// 1..=9999, wider than unix nanoseconds in an `i64` (1677..=2262), and no
/// row can be stored past either end: a bound out there either bounds
/// nothing or leaves nothing inside, which is a client's window, never a
/// backend fault.
enum Bound {
    Nanos(i64),
    BeforeEveryRow,
    AfterEveryRow,
}

impl Bound {
    fn of(at: DateTime<Utc>) -> Bound {
        match at.timestamp_nanos_opt() {
            Some(n) => Bound::Nanos(n),
            None if at < DateTime::UNIX_EPOCH => Bound::BeforeEveryRow,
            None => Bound::AfterEveryRow,
        }
    }
}

fn optional_millis(value: Option<u64>) -> Option<i64> {
    value.map(|v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// The WHERE clause shared by every summary query: tenant, optional user,
/// optional inclusive bounds. Numbered parameters ?1..?4 are bound once, in
/// that order, by [`Scope::bind`]; a query's own parameters start at ?5.
const SCOPE: &str = "tenant = ?1 AND (?2 IS NULL OR user_id = ?2) \
                     AND (?3 IS NULL OR created_at >= ?3) AND (?4 IS NULL OR created_at <= ?4)";

struct Scope {
    tenant: String,
    user_id: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
}

impl Scope {
    /// The query's scope in the table's terms, or `None` when its window
    /// lies wholly outside the times a row can have.
    fn of(query: &StatsQuery) -> Option<Self> {
        let from = match query.from.map(Bound::of) {
            None | Some(Bound::BeforeEveryRow) => None,
            Some(Bound::Nanos(n)) => Some(n),
            Some(Bound::AfterEveryRow) => return None,
        };
        let to = match query.to.map(Bound::of) {
            None | Some(Bound::AfterEveryRow) => None,
            Some(Bound::Nanos(n)) => Some(n),
            Some(Bound::BeforeEveryRow) => return None,
        };
        Some(Self {
            tenant: query.tenant.as_str().to_owned(),
            user_id: query.user_id.clone(),
            from,
            to,
        })
    }

    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> sqlx::query::QueryAs<'q, sqlx::Sqlite, O, sqlx::sqlite::SqliteArguments<'q>> {
        query
            .bind(&self.tenant)
            .bind(self.user_id.as_deref())
            .bind(self.from)
            .bind(self.to)
    }
}

pub struct SqliteStats {
    db: Arc<Database>,
}

impl SqliteStats {
    pub(crate) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }

    async fn counts_by(&self, column: &str, scope: &Scope) -> PortResult<BTreeMap<String, u64>> {
        let sql = format!("SELECT {column}, COUNT(*) FROM stats WHERE {SCOPE} GROUP BY {column}");
        let mut db = self.db.read().await.map_err(unavailable)?;
        let rows: Vec<(String, i64)> = scope
            .bind(sqlx::query_as(&sql))
            .fetch_all(&mut *db)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|(k, n)| (k, u64::try_from(n).unwrap_or(0)))
            .collect())
    }

    /// Nearest-rank percentile `percent` of `total_ms` over `n` rows.
    async fn latency_percentile(
        &self,
        scope: &Scope,
        n: i64,
        percent: i64,
    ) -> PortResult<Option<u64>> {
        if n == 0 {
            return Ok(None);
        }
        let rank = (percent * n + 99) / 100;
        let sql = format!(
            "SELECT total_ms FROM stats WHERE {SCOPE} AND total_ms IS NOT NULL \
             ORDER BY total_ms LIMIT 1 OFFSET ?5"
        );
        let mut db = self.db.read().await.map_err(unavailable)?;
        let value: Option<(i64,)> = scope
            .bind(sqlx::query_as(&sql))
            .bind(rank.max(1) - 1)
            .fetch_optional(&mut *db)
            .await
            .map_err(unavailable)?;
        Ok(value.map(|(ms,)| u64::try_from(ms).unwrap_or(0)))
    }
}

type RecentRow = (String, String, String, i64, f64);

fn recent_task(
    (task_id, family, status, created_at, duration): RecentRow,
) -> PortResult<RecentTask> {
    Ok(RecentTask {
        task_id: TaskId::parse(&task_id)
            .ok_or_else(|| corrupt(format!("stats row has a bad task id {task_id:?}")))?,
        family: ModelFamily::parse(&family).ok_or_else(|| {
            corrupt(format!(
                "stats row {task_id} has an unknown type {family:?}"
            ))
        })?,
        status: TaskStatus::parse(&status).ok_or_else(|| {
            corrupt(format!(
                "stats row {task_id} has an unknown status {status:?}"
            ))
        })?,
        created_at: DateTime::from_timestamp_nanos(created_at),
        duration,
    })
}

#[async_trait]
impl StatsStore for SqliteStats {
    async fn record(&self, row: &StatsRow) -> PortResult<()> {
        let mut db = self.db.write().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO stats (task_id, tenant, user_id, family, status, duration, samples, audio_seconds, \
                                created_at, completed_at, queue_ms, inference_ms, total_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (task_id) DO UPDATE SET \
                tenant = excluded.tenant, user_id = excluded.user_id, family = excluded.family, \
                status = excluded.status, duration = excluded.duration, samples = excluded.samples, \
                audio_seconds = excluded.audio_seconds, created_at = excluded.created_at, \
                completed_at = excluded.completed_at, queue_ms = excluded.queue_ms, \
                inference_ms = excluded.inference_ms, total_ms = excluded.total_ms",
        )
        .bind(row.task_id.as_str())
        .bind(row.tenant.as_str())
        .bind(&row.user_id)
        .bind(row.family.as_str())
        .bind(row.status.as_str())
        .bind(row.duration)
        .bind(i64::from(row.samples))
        .bind(row.audio_seconds)
        .bind(nanos(row.created_at)?)
        .bind(row.completed_at.map(|t| t.to_rfc3339()))
        .bind(optional_millis(row.queue_ms))
        .bind(optional_millis(row.inference_ms))
        .bind(optional_millis(row.total_ms))
        .execute(&mut *db)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn summarize(&self, query: &StatsQuery) -> PortResult<StatsSummary> {
        let Some(scope) = Scope::of(query) else {
            return Ok(StatsSummary::default());
        };

        let totals_sql = format!(
            "SELECT COUNT(*), TOTAL(audio_seconds), COUNT(total_ms) FROM stats WHERE {SCOPE}"
        );
        let mut db = self.db.read().await.map_err(unavailable)?;
        let (requests, audio_seconds, timed): (i64, f64, i64) = scope
            .bind(sqlx::query_as(&totals_sql))
            .fetch_one(&mut *db)
            .await
            .map_err(unavailable)?;
        drop(db);

        let by_status = self.counts_by("status", &scope).await?;
        let by_type = self.counts_by("family", &scope).await?;
        let latency_ms = Percentiles {
            p50: self.latency_percentile(&scope, timed, 50).await?,
            p95: self.latency_percentile(&scope, timed, 95).await?,
        };

        let recent_sql = format!(
            "SELECT task_id, family, status, created_at, duration FROM stats WHERE {SCOPE} \
             ORDER BY created_at DESC, task_id DESC LIMIT ?5"
        );
        let mut db = self.db.read().await.map_err(unavailable)?;
        let recent_rows: Vec<RecentRow> = scope
            .bind(sqlx::query_as(&recent_sql))
            .bind(i64::try_from(query.recent_limit).unwrap_or(i64::MAX))
            .fetch_all(&mut *db)
            .await
            .map_err(unavailable)?;
        drop(db);
        let recent = recent_rows
            .into_iter()
            .map(recent_task)
            .collect::<PortResult<Vec<_>>>()?;

        Ok(StatsSummary {
            requests: u64::try_from(requests).unwrap_or(0),
            by_status,
            by_type,
            audio_seconds,
            latency_ms,
            recent,
        })
    }

    async fn ping(&self) -> PortResult<()> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        sqlx::query("SELECT 1 FROM stats LIMIT 1")
            .execute(&mut *db)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
