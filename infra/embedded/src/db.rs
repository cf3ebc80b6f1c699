//! The embedded database's connections: one writer and a few readers, each a
//! plain sqlx `SqliteConnection` behind an async mutex.
//!
//! Why not a `SqlitePool`: sqlx-sqlite runs every connection on its own
//! worker thread, and a pooled statement makes three round trips to it (a
//! ping when the connection is acquired, the statement, a ping when it is
//! released), each two thread hand-offs. Under the pipeline benchmark those
//! hand-offs were most of the service's CPU (`bench/PIPELINE.md`). A held
//! connection costs one round trip per statement. One writer also means
//! that the writers of this process queue on a mutex, in order, instead of
//! meeting in SQLite's busy handler, which sleeps; the busy timeout is left
//! for other processes that open the same file.
//!
//! Cancellation: a statement already sent still runs on the worker, and a
//! dropped `Transaction` queues its rollback there, so the next holder of a
//! connection always starts after them.

use std::sync::atomic::{AtomicBool, Ordering};

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};
use tokio::sync::{MappedMutexGuard, Mutex, MutexGuard};

/// A connection held for one or a few statements; dropping it gives it back.
pub(crate) type Held<'a> = MappedMutexGuard<'a, SqliteConnection>;

type Slot = Mutex<Option<SqliteConnection>>;

pub(crate) struct Database {
    writer: Slot,
    readers: Box<[Slot]>,
    closed: AtomicBool,
}

impl Database {
    /// Opens the writer first (it creates the file and sets WAL mode), runs
    /// the migrations on it, then opens `readers` reader connections.
    pub(crate) async fn open(
        options: &SqliteConnectOptions,
        readers: usize,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut writer = options.connect().await?;
        sqlx::migrate!("./migrations")
            .run(&mut writer)
            .await
            .context("Failed to run the embedded database migrations")?;
        let mut opened = Vec::with_capacity(readers.max(1));
        for _ in 0..readers.max(1) {
            opened.push(Mutex::new(Some(options.connect().await?)));
        }
        Ok(Self {
            writer: Mutex::new(Some(writer)),
            readers: opened.into_boxed_slice(),
            closed: AtomicBool::new(false),
        })
    }

    /// The writer connection, once every earlier writer of this process is
    /// done with it. Use it for anything that writes.
    pub(crate) async fn write(&self) -> Result<Held<'_>, sqlx::Error> {
        self.held(self.writer.lock().await)
    }

    /// A reader connection: the first one free, or a wait for the first.
    /// In WAL mode readers never wait for the writer.
    pub(crate) async fn read(&self) -> Result<Held<'_>, sqlx::Error> {
        for slot in self.readers.iter() {
            if let Ok(guard) = slot.try_lock() {
                return self.held(guard);
            }
        }
        self.held(self.readers[0].lock().await)
    }

    fn held<'a>(
        &self,
        guard: MutexGuard<'a, Option<SqliteConnection>>,
    ) -> Result<Held<'a>, sqlx::Error> {
        if self.closed.load(Ordering::Acquire) {
            return Err(sqlx::Error::PoolClosed);
        }
        MutexGuard::try_map(guard, Option::as_mut).map_err(|_| sqlx::Error::PoolClosed)
    }

    /// Closes every connection, readers first, so the writer's close (the
    /// last one) checkpoints the WAL into the database file. Later calls of
    /// `read` and `write` fail with `PoolClosed`.
    pub(crate) async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        for slot in self.readers.iter().chain(std::iter::once(&self.writer)) {
            let connection = slot.lock().await.take();
            if let Some(connection) = connection {
                if let Err(e) = sqlx::Connection::close(connection).await {
                    tracing::warn!(error = %e, "failed to close an embedded database connection");
                }
            }
        }
    }
}
