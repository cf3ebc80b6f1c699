//! A durable job queue with SQS semantics in one SQLite table.
//!
//! Each row is a message of one named queue. A receive makes the message
//! invisible for the visibility timeout, bumps its receive count and gives
//! it a fresh receipt, so only the latest receiver can delete or extend it.
//! A message that was already received `max_receives` times is moved to the
//! dead-letter table instead of being delivered again. Long polling waits on
//! a `Notify` that local sends ring, and polls the table as well, since
//! another process may share the database. Bodies are never logged.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use sound_creator_core::ports::{
    Backend, BackendError, Delivery, JobQueue, PortResult, QueueDepth, QueueName,
};
use sqlx::SqliteConnection;
use tokio::sync::Notify;

use crate::db::Database;
use crate::{millis, now_millis};

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Queue, err)
}

/// A message that was received too many times without being deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: String,
    pub receive_count: u32,
    pub sent_at: DateTime<Utc>,
    pub dead_at: DateTime<Utc>,
}

pub struct SqliteQueue {
    db: Arc<Database>,
    visibility_timeout: Duration,
    max_receives: u32,
    poll_interval: Duration,
    /// One per queue in `QueueName::ALL` order.
    arrivals: [Notify; QueueName::ALL.len()],
    /// Per queue: when a receive should next sweep exhausted messages to the
    /// dead-letter table (unix ms).
    sweep_due: [AtomicI64; QueueName::ALL.len()],
}

fn slot(queue: QueueName) -> usize {
    QueueName::ALL.iter().position(|q| *q == queue).unwrap_or(0)
}

fn time_of(millis: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

fn count(value: i64) -> u32 {
    u32::try_from(value).unwrap_or(u32::MAX)
}

impl SqliteQueue {
    pub(crate) fn new(
        db: Arc<Database>,
        visibility_timeout: Duration,
        max_receives: u32,
        poll_interval: Duration,
    ) -> Self {
        Self {
            db,
            visibility_timeout,
            max_receives: max_receives.max(1),
            poll_interval: poll_interval.max(Duration::from_millis(10)),
            arrivals: std::array::from_fn(|_| Notify::new()),
            sweep_due: std::array::from_fn(|_| AtomicI64::new(0)),
        }
    }

    pub fn visibility_timeout(&self) -> Duration {
        self.visibility_timeout
    }

    /// The messages this queue gave up on, oldest first.
    pub async fn dead_letters(&self, queue: QueueName) -> PortResult<Vec<DeadLetter>> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        let rows: Vec<(String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT message_id, body, receive_count, sent_at, dead_at FROM queue_dead_letters \
             WHERE queue = ? ORDER BY seq",
        )
        .bind(queue.as_str())
        .fetch_all(&mut *db)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(
                |(message_id, body, receive_count, sent_at, dead_at)| DeadLetter {
                    message_id,
                    body,
                    receive_count: count(receive_count),
                    sent_at: time_of(sent_at),
                    dead_at: time_of(dead_at),
                },
            )
            .collect())
    }

    /// Moves the exhausted messages that are due to the dead-letter table;
    /// returns their ids and receive counts.
    ///
    /// Copy first, delete second, each in its own statement (no explicit
    /// transaction: BEGIN and COMMIT would be two more round trips to the
    /// connection's thread). A crash between the two leaves a message in
    /// both tables; the upsert returns it again on the next sweep and the
    /// delete, which only removes what the dead-letter table holds,
    /// finishes the move. Nothing is lost.
    async fn sweep_exhausted(
        &self,
        db: &mut SqliteConnection,
        queue: QueueName,
        now: i64,
    ) -> PortResult<Vec<(String, i64)>> {
        let max_receives = i64::from(self.max_receives);
        let exhausted: Vec<(String, i64)> = sqlx::query_as(
            "INSERT INTO queue_dead_letters (queue, message_id, body, sent_at, receive_count, dead_at) \
             SELECT queue, message_id, body, sent_at, receive_count, ?1 FROM queue_messages \
             WHERE queue = ?2 AND visible_at <= ?1 AND receive_count >= ?3 \
             ON CONFLICT (message_id) DO UPDATE SET receive_count = excluded.receive_count \
             RETURNING message_id, receive_count",
        )
        .bind(now)
        .bind(queue.as_str())
        .bind(max_receives)
        .fetch_all(&mut *db)
        .await
        .map_err(unavailable)?;
        if !exhausted.is_empty() {
            // EXISTS looks each candidate up in the dead letters' unique
            // index; an IN over the dead-letter table would read all of it.
            sqlx::query(
                "DELETE FROM queue_messages WHERE queue = ? AND receive_count >= ? \
                 AND EXISTS (SELECT 1 FROM queue_dead_letters AS dead \
                             WHERE dead.message_id = queue_messages.message_id)",
            )
            .bind(queue.as_str())
            .bind(max_receives)
            .execute(&mut *db)
            .await
            .map_err(unavailable)?;
        }
        Ok(exhausted)
    }

    /// One non-waiting receive: dead-letters the exhausted messages that are
    /// due, then takes up to `max` visible ones.
    async fn receive_now(&self, queue: QueueName, max: usize) -> PortResult<Vec<Delivery>> {
        let now = now_millis();
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        let max_receives = i64::from(self.max_receives);
        let visible_again = now.saturating_add(millis(self.visibility_timeout));
        let mut db = self.db.write().await.map_err(unavailable)?;

        // The sweep is a statement of its own, and on a busy queue it almost
        // always finds nothing: it runs once per poll interval (so messages
        // that other processes exhausted are swept too), and as soon as a
        // message this process handed out for the last time is visible again.
        let sweep_due = &self.sweep_due[slot(queue)];
        let exhausted = if now >= sweep_due.load(Ordering::Relaxed) {
            sweep_due.store(
                now.saturating_add(millis(self.poll_interval)),
                Ordering::Relaxed,
            );
            self.sweep_exhausted(&mut db, queue, now).await?
        } else {
            Vec::new()
        };

        let mut received: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
            "UPDATE queue_messages \
             SET receive_count = receive_count + 1, receipt = lower(hex(randomblob(16))), visible_at = ? \
             WHERE seq IN (SELECT seq FROM queue_messages \
                           WHERE queue = ? AND visible_at <= ? AND receive_count < ? \
                           ORDER BY seq LIMIT ?) \
             RETURNING seq, message_id, receipt, body, receive_count",
        )
        .bind(visible_again)
        .bind(queue.as_str())
        .bind(now)
        .bind(max_receives)
        .bind(limit)
        .fetch_all(&mut *db)
        .await
        .map_err(unavailable)?;
        drop(db);
        if received.iter().any(|row| row.4 >= max_receives) {
            sweep_due.fetch_min(visible_again, Ordering::Relaxed);
        }

        for (message_id, receive_count) in &exhausted {
            tracing::warn!(
                queue = queue.as_str(),
                message_id = %message_id,
                receive_count = *receive_count,
                "message moved to the dead-letter table after too many receives"
            );
        }
        received.sort_by_key(|row| row.0);
        Ok(received
            .into_iter()
            .map(|(_, message_id, receipt, body, receive_count)| Delivery {
                message_id,
                receipt,
                body,
                receive_count: count(receive_count),
            })
            .collect())
    }
}

#[async_trait]
impl JobQueue for SqliteQueue {
    async fn send(&self, queue: QueueName, body: &str, delay: Duration) -> PortResult<()> {
        let now = now_millis();
        let mut db = self.db.write().await.map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO queue_messages (queue, message_id, body, sent_at, visible_at, receive_count) \
             VALUES (?, ?, ?, ?, ?, 0)",
        )
        .bind(queue.as_str())
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(body)
        .bind(now)
        .bind(now.saturating_add(millis(delay)))
        .execute(&mut *db)
        .await
        .map_err(unavailable)?;
        drop(db);
        if delay.is_zero() {
            self.arrivals[slot(queue)].notify_waiters();
        }
        Ok(())
    }

    async fn receive(
        &self,
        queue: QueueName,
        max: usize,
        wait: Duration,
    ) -> PortResult<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let started = tokio::time::Instant::now();
        // A wait too long to represent means "a year": never a panic.
        let deadline = started
            .checked_add(wait)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
        loop {
            // Registered before looking, so a send between the look and the
            // wait still wakes us.
            let arrival = self.arrivals[slot(queue)].notified();
            tokio::pin!(arrival);
            arrival.as_mut().enable();

            let deliveries = self.receive_now(queue, max).await?;
            let now = tokio::time::Instant::now();
            if !deliveries.is_empty() || now >= deadline {
                return Ok(deliveries);
            }
            let nap = self.poll_interval.min(deadline - now);
            // Either outcome (woken or timed out) means: look again.
            let _ = tokio::time::timeout(nap, arrival).await;
        }
    }

    async fn delete(&self, queue: QueueName, receipt: &str) -> PortResult<()> {
        let mut db = self.db.write().await.map_err(unavailable)?;
        let deleted = sqlx::query("DELETE FROM queue_messages WHERE queue = ? AND receipt = ?")
            .bind(queue.as_str())
            .bind(receipt)
            .execute(&mut *db)
            .await
            .map_err(unavailable)?
            .rows_affected();
        drop(db);
        if deleted == 0 {
            // SQS semantics: the message was redelivered (new receipt) or is
            // already gone; the current holder decides its fate.
            tracing::debug!(
                queue = queue.as_str(),
                "delete with a stale receipt did nothing"
            );
        }
        Ok(())
    }

    async fn extend_visibility(
        &self,
        queue: QueueName,
        receipt: &str,
        timeout: Duration,
    ) -> PortResult<()> {
        let mut db = self.db.write().await.map_err(unavailable)?;
        let changed =
            sqlx::query("UPDATE queue_messages SET visible_at = ? WHERE queue = ? AND receipt = ?")
                .bind(now_millis().saturating_add(millis(timeout)))
                .bind(queue.as_str())
                .bind(receipt)
                .execute(&mut *db)
                .await
                .map_err(unavailable)?
                .rows_affected();
        drop(db);
        if changed == 0 {
            tracing::debug!(
                queue = queue.as_str(),
                "visibility change with a stale receipt did nothing"
            );
        } else if timeout.is_zero() {
            self.arrivals[slot(queue)].notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self, queue: QueueName) -> PortResult<QueueDepth> {
        let mut db = self.db.read().await.map_err(unavailable)?;
        let (total, in_flight): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), SUM(CASE WHEN receive_count > 0 AND visible_at > ? THEN 1 ELSE 0 END) \
             FROM queue_messages WHERE queue = ?",
        )
        .bind(now_millis())
        .bind(queue.as_str())
        .fetch_one(&mut *db)
        .await
        .map_err(unavailable)?;
        let in_flight = in_flight.unwrap_or(0);
        Ok(QueueDepth {
            queued: u64::try_from(total - in_flight).unwrap_or(0),
            in_flight: u64::try_from(in_flight).unwrap_or(0),
        })
    }
}
