//! The `MAX_QUEUED_JOBS` cap, enforced atomically within a process: a
//! submit is admitted only if the jobs already waiting, plus the jobs of
//! submits admitted but not yet queued (in flight), plus its own stay within
//! the cap. Reading the queue depth and then queueing is a race on its own:
//! sixteen concurrent submits would all read the same depth and all pass.
//!
//! Submits take a gate only around the depth read and the reservation, not
//! around storing and queueing, so an uncapped deployment pays nothing and a
//! capped one serializes one queue read per submit. It must never admit past
//! the cap; it may, for the moment between a reservation's jobs reaching the
//! queue and the reservation being dropped, count them twice (refusing a
//! submit that would have fit, which the client retries).
//!
//! In AWS each API instance (Lambda) holds its own gate, so the cap there is
//! exact per instance and SQS's approximate depth across them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::ports::{JobQueue, PortResult, QueueName};
use crate::task::ModelFamily;

#[derive(Default)]
pub struct QueueAdmission {
    gate: tokio::sync::Mutex<()>,
    /// Jobs admitted but not yet known to be in the queue, per family.
    in_flight: Mutex<BTreeMap<ModelFamily, u64>>,
}

/// Jobs admitted under the cap; dropped once they are queued (or the submit
/// failed), when the queue's own depth counts them.
pub struct Reservation<'a> {
    admission: &'a QueueAdmission,
    family: ModelFamily,
    jobs: u64,
}

impl QueueAdmission {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, BTreeMap<ModelFamily, u64>> {
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reserves `jobs` places in `family`'s queue, or `Ok(None)` when that
    /// would pass `max`.
    pub async fn reserve(
        &self,
        queue: &dyn JobQueue,
        family: ModelFamily,
        jobs: u64,
        max: u64,
    ) -> PortResult<Option<Reservation<'_>>> {
        let _gate = self.gate.lock().await;
        // In flight first, the queue second: a reservation dropped between
        // the two reads had its jobs queued before the depth was read, so
        // they are counted either way.
        let in_flight = self.in_flight().get(&family).copied().unwrap_or_default();
        let queued = queue.depth(QueueName::Jobs(family)).await?.queued;
        if queued + in_flight + jobs > max {
            return Ok(None);
        }
        *self.in_flight().entry(family).or_default() += jobs;
        Ok(Some(Reservation {
            admission: self,
            family,
            jobs,
        }))
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut in_flight = self.admission.in_flight();
        if let Some(n) = in_flight.get_mut(&self.family) {
            *n = n.saturating_sub(self.jobs);
        }
    }
}
