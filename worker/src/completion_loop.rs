//! The completion loop: drains the completions queue through the domain's
//! [`Completion`] step (aggregate stages, store the final result, write the
//! stats row, call the client back with retries). In AWS the same step runs
//! as a Lambda on the SQS event; this loop serves the embedded mode and a
//! local AWS-mode server.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sound_creator_core::completion::Completion;
use sound_creator_core::messages::{decode, CompletionEvent};
use sound_creator_core::ports::{BackendError, Ports, QueueName};
use sound_creator_core::settings::ServiceSettings;

use crate::job_loop::ExecutionOutcome;

pub struct CompletionLoop {
    pub ports: Ports,
    pub settings: Arc<ServiceSettings>,
    pub poll_wait: Duration,
    pub batch: usize,
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
        }
    }

    /// Handles one batch of events; each is deleted only once handled, so
    /// a failure leaves it for redelivery.
    pub async fn try_execute_events(&self) -> Result<ExecutionOutcome, BackendError> {
        let deliveries = self
            .ports
            .queue
            .receive(QueueName::Completions, self.batch, self.poll_wait)
            .await?;
        if deliveries.is_empty() {
            return Ok(ExecutionOutcome::EmptyQueue);
        }
        let step = Completion {
            ports: &self.ports,
            settings: &self.settings,
        };
        let handled = deliveries.len();
        for delivery in deliveries {
            let event: CompletionEvent = match decode(&delivery.body) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(message_id = %delivery.message_id, error = %e, "leaving an unreadable completion event to the dead-letter queue");
                    continue;
                }
            };
            match step.handle(&event).await {
                Ok(outcome) => {
                    tracing::debug!(?outcome, "completion event handled");
                    self.ports
                        .queue
                        .delete(QueueName::Completions, &delivery.receipt)
                        .await?;
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?event, "completion event failed; it will be redelivered")
                }
            }
        }
        Ok(ExecutionOutcome::Handled(handled))
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
        // stopping between awaits loses nothing: the event is redelivered.
        tokio::select! {
            () = work => {}
            () = shutdown => {}
        }
        tracing::info!("completion loop stopped");
    }
}
