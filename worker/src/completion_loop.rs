//! The completion loop: drains the completions queue through the domain's
//! [`Completion`] step (aggregate stages, store the final result, write the
//! stats row, call the client back with retries). In AWS the same step runs
//! as a Lambda on the SQS event; this loop serves the embedded mode and a
//! local AWS-mode server.
//!
//! Callback deliveries run apart from the loop, in [`CallbackLanes`]: a
//! receiver that answers slowly, or hangs until `CALLBACK_TIMEOUT_MS`,
//! must delay its own tenant's callbacks only, never another tenant's tasks
//! becoming final. A tenant with all its lanes busy gets its next delivery
//! back on the queue shortly, not a queue of waiting tasks in memory.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sound_creator_core::completion::Completion;
use sound_creator_core::messages::{decode, CompletionEvent};
use sound_creator_core::ports::{BackendError, Delivery, Ports, QueueName};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::Tenant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::job_loop::ExecutionOutcome;

pub struct CompletionLoop {
    pub ports: Ports,
    pub settings: Arc<ServiceSettings>,
    pub poll_wait: Duration,
    pub batch: usize,
    pub callbacks: Arc<CallbackLanes>,
}

/// Bounds on callback deliveries in flight: in total, and per tenant.
pub struct CallbackLanes {
    total: Arc<Semaphore>,
    capacity: usize,
    per_tenant: usize,
    tenants: Mutex<HashMap<Tenant, Arc<Semaphore>>>,
    /// How soon a delivery that found no free lane is tried again.
    pub retry_in: Duration,
}

/// A delivery's places in both bounds, given back when it is dropped.
pub struct CallbackLane {
    _total: OwnedSemaphorePermit,
    _tenant: OwnedSemaphorePermit,
}

impl CallbackLanes {
    /// At most `total` deliveries at once, `per_tenant` of them for one
    /// tenant.
    pub fn new(total: usize, per_tenant: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total.max(1))),
            capacity: total.max(1),
            per_tenant: per_tenant.max(1),
            tenants: Mutex::new(HashMap::new()),
            retry_in: Duration::from_secs(1),
        }
    }

    /// A lane for one of `tenant`'s deliveries, or `None` when the tenant
    /// or the whole service has none free.
    pub fn try_take(&self, tenant: &Tenant) -> Option<CallbackLane> {
        let semaphore = {
            let mut tenants = self
                .tenants
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget tenants with nothing in flight, so the map stays as
            // small as the set of tenants being called back right now.
            tenants.retain(|_, s| s.available_permits() < self.per_tenant);
            tenants
                .entry(tenant.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.per_tenant)))
                .clone()
        };
        let tenant = semaphore.try_acquire_owned().ok()?;
        let total = self.total.clone().try_acquire_owned().ok()?;
        Some(CallbackLane {
            _total: total,
            _tenant: tenant,
        })
    }
}

impl CallbackLanes {
    /// Deliveries under way now.
    pub fn in_flight(&self) -> usize {
        self.capacity - self.total.available_permits()
    }
}

impl Default for CallbackLanes {
    /// 32 deliveries at once, 4 per tenant.
    fn default() -> Self {
        Self::new(32, 4)
    }
}

impl CompletionLoop {
    /// A completion loop over `ports`. Where it runs in the same process as
    /// the API, the caller also marks `ports.finals` local, so that
    /// `/v1/generate` waiters sleep until this loop signals their task.
    pub fn new(ports: Ports, settings: Arc<ServiceSettings>) -> Self {
        Self {
            ports,
            settings,
            poll_wait: Duration::from_secs(10),
            batch: 10,
            callbacks: Arc::new(CallbackLanes::default()),
        }
    }

    /// Handles one batch of events; each is deleted only once handled, so
    /// a failure leaves it for redelivery. Callback deliveries are started
    /// here and finish in the background: the queue counts as drained
    /// (`EmptyQueue`) only once none is left under way either.
    pub async fn try_execute_events(&self) -> Result<ExecutionOutcome, BackendError> {
        let deliveries = self
            .ports
            .queue
            .receive(QueueName::Completions, self.batch, self.poll_wait)
            .await?;
        if deliveries.is_empty() {
            if self.callbacks.in_flight() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
                return Ok(ExecutionOutcome::Handled(0));
            }
            return Ok(ExecutionOutcome::EmptyQueue);
        }
        let handled = deliveries.len();
        for delivery in deliveries {
            let event: CompletionEvent = match decode(&delivery.body) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(message_id = %delivery.message_id, error = %e, "leaving an unreadable completion event to the dead-letter queue");
                    continue;
                }
            };
            if let CompletionEvent::CallbackDue { task_id, .. } = &event {
                if let Some(task) = self.ports.tasks.get(task_id).await? {
                    self.start_callback(task.tenant, event, delivery).await?;
                    continue;
                }
            }
            handle(&self.ports, &self.settings, &event, &delivery).await?;
        }
        Ok(ExecutionOutcome::Handled(handled))
    }

    /// Delivers a callback in the background in one of its tenant's lanes,
    /// or puts the event back for a moment when none is free.
    async fn start_callback(
        &self,
        tenant: Tenant,
        event: CompletionEvent,
        delivery: Delivery,
    ) -> Result<(), BackendError> {
        let Some(lane) = self.callbacks.try_take(&tenant) else {
            // Sent again rather than made visible again: every receive
            // counts towards the dead-letter threshold, and waiting for a
            // lane is no failure of the event. Should the delete fail, the
            // copy finds the callback delivered and sends nothing.
            tracing::debug!(%tenant, "every callback lane of this tenant is busy; trying again shortly");
            self.ports
                .queue
                .send(
                    QueueName::Completions,
                    &delivery.body,
                    self.callbacks.retry_in,
                )
                .await?;
            return self
                .ports
                .queue
                .delete(QueueName::Completions, &delivery.receipt)
                .await;
        };
        let (ports, settings) = (self.ports.clone(), self.settings.clone());
        tokio::spawn(async move {
            let _lane = lane;
            if let Err(e) = handle(&ports, &settings, &event, &delivery).await {
                tracing::warn!(error = %e, "could not delete a handled callback event; it will be redelivered");
            }
        });
        Ok(())
    }

    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let work = async {
            let mut backoff = Duration::from_millis(200);
            loop {
                match self.try_execute_events().await {
                    Ok(_) => backoff = Duration::from_millis(200),
                    Err(e) => {
                        tracing::warn!(error = %e, "completion loop could not reach a backend; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(10));
                    }
                }
            }
        };
        // Each event is handled by idempotent steps and deleted after, so
        // stopping between awaits loses nothing: the event is redelivered
        // (a callback in flight too, with the same webhook id).
        tokio::select! {
            () = work => {}
            () = shutdown => {}
        }
        tracing::info!("completion loop stopped");
    }
}

/// Runs one event through the completion step and deletes it once handled.
/// A failure of the step leaves it on the queue for redelivery; only a
/// failed delete is returned.
async fn handle(
    ports: &Ports,
    settings: &ServiceSettings,
    event: &CompletionEvent,
    delivery: &Delivery,
) -> Result<(), BackendError> {
    let step = Completion { ports, settings };
    match step.handle(event).await {
        Ok(outcome) => {
            tracing::debug!(?outcome, "completion event handled");
            ports
                .queue
                .delete(QueueName::Completions, &delivery.receipt)
                .await
        }
        Err(e) => {
            tracing::warn!(error = %e, ?event, "completion event failed; it will be redelivered");
            Ok(())
        }
    }
}
