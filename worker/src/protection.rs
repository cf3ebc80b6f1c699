//! Holds the worker's scale-in protection while it has jobs in hand and lets
//! it go when its queue is empty, calling the port only when the state
//! changes or the protection is due for renewal: each call is a control-plane
//! request in ECS (`UpdateTaskProtection`), which is rate-limited, so it must
//! never be made once per job.
//!
//! It never stops or delays the job loop: a failed call is logged and the
//! next batch tries again.

use std::sync::Arc;
use std::time::Instant;

use sound_creator_core::ports::ScaleInProtection;
use tokio::sync::Mutex;

pub(crate) struct ProtectionHold {
    port: Option<Arc<dyn ScaleInProtection>>,
    /// When protection was last set; `None` while unprotected.
    since: Mutex<Option<Instant>>,
}

impl ProtectionHold {
    pub(crate) fn new(port: Option<Arc<dyn ScaleInProtection>>) -> Self {
        Self {
            port,
            since: Mutex::new(None),
        }
    }

    /// Jobs are in hand: protect, unless protection was set less than half
    /// its lifetime ago.
    pub(crate) async fn hold(&self) {
        let Some(port) = &self.port else { return };
        let mut since = self.since.lock().await;
        if since.is_some_and(|set| set.elapsed() < port.lasts() / 2) {
            return;
        }
        match port.protect().await {
            Ok(()) => {
                if since.is_none() {
                    tracing::info!("scale-in protection on: jobs in hand");
                }
                *since = Some(Instant::now());
            }
            Err(e) => tracing::warn!(error = %e, "could not protect the task from scale-in"),
        }
    }

    /// The queue is empty and nothing is in hand: let scale-in take this task.
    pub(crate) async fn let_go(&self) {
        let Some(port) = &self.port else { return };
        let mut since = self.since.lock().await;
        if since.is_none() {
            return;
        }
        match port.unprotect().await {
            Ok(()) => {
                tracing::info!("scale-in protection off: queue empty");
                *since = None;
            }
            Err(e) => tracing::warn!(error = %e, "could not lift the task's scale-in protection"),
        }
    }
}
