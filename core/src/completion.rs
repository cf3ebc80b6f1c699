//! The completion step (seed: `AudioCraftWorkFlow.trigger_text2audio_callback`
//! and `process_result`): aggregates the stages of a task into its final
//! result, stores it, writes the statistics row and calls the client back.
//!
//! Every effect is idempotent so that a redelivered event changes nothing:
//! stages are recorded at most once (compare-and-swap), the stats row is
//! keyed by task id, the cached result is overwritten with the same value,
//! and the callback carries a webhook id derived from the task id and is not
//! sent again once delivered. An error returned here means "leave the event
//! on the queue and try again later".

use std::time::Duration;

use chrono::Utc;

use crate::messages::{encode, CompletionEvent};
use crate::metrics::{self, CallbackAttempt};
use crate::ports::{BackendError, Ports, QueueName, StatsRow, WebhookDelivery};
use crate::records::{self, StageRecorded};
use crate::settings::ServiceSettings;
use crate::task::{to_chrono, CallbackState, Task, TaskId};
use crate::view::document;
use crate::webhook::retry_delay;

/// What handling one event did (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompletionOutcome {
    StageRecorded { task_final: bool },
    DuplicateStage,
    IgnoredTaskFinal,
    FinalEffectsDone,
    CallbackDelivered,
    CallbackRetryScheduled { next_attempt: u32 },
    CallbackGaveUp,
    CallbackNotNeeded,
    UnknownTask,
}

pub struct Completion<'a> {
    pub ports: &'a Ports,
    pub settings: &'a ServiceSettings,
}

impl Completion<'_> {
    pub async fn handle(&self, event: &CompletionEvent) -> Result<CompletionOutcome, BackendError> {
        match event {
            CompletionEvent::StageFinished {
                task_id,
                index,
                outcome,
            } => {
                let recorded = records::record_stage(
                    self.ports.tasks.as_ref(),
                    task_id,
                    *index,
                    outcome,
                    Utc::now(),
                    to_chrono(self.settings.result_ttl),
                )
                .await?;
                let Some((task, recorded)) = recorded else {
                    return Ok(CompletionOutcome::UnknownTask);
                };
                match recorded {
                    StageRecorded::Recorded { task_became_final } => {
                        if task_became_final {
                            metrics::task_finished(&task);
                            self.ports.finals.signal(&task.id);
                            self.final_effects(&task).await?;
                        }
                        Ok(CompletionOutcome::StageRecorded {
                            task_final: task_became_final,
                        })
                    }
                    // A redelivery after a crash between recording and the
                    // final effects: run them again (they are idempotent).
                    StageRecorded::Duplicate => {
                        if task.status.is_final() {
                            self.final_effects(&task).await?;
                        }
                        Ok(CompletionOutcome::DuplicateStage)
                    }
                    StageRecorded::TaskWasFinal => Ok(CompletionOutcome::IgnoredTaskFinal),
                }
            }
            CompletionEvent::TaskFinal { task_id } => {
                let Some(task) = self.ports.tasks.get(task_id).await? else {
                    return Ok(CompletionOutcome::UnknownTask);
                };
                if task.status.is_final() {
                    // Announced by whoever made it final (a cancel, an
                    // expiry): this event is its one count, but for an SQS
                    // redelivery.
                    metrics::task_finished(&task);
                    self.ports.finals.signal(&task.id);
                    self.final_effects(&task).await?;
                    Ok(CompletionOutcome::FinalEffectsDone)
                } else {
                    Ok(CompletionOutcome::IgnoredTaskFinal)
                }
            }
            CompletionEvent::CallbackDue { task_id, attempt } => {
                self.deliver_callback(task_id, *attempt).await
            }
        }
    }

    /// Stats row, cached final result, and the first callback attempt.
    async fn final_effects(&self, task: &Task) -> Result<(), BackendError> {
        self.ports.stats.record(&StatsRow::of(task)).await?;
        if self.ports.cache_final_results {
            if let Err(e) = self
                .ports
                .cache
                .put_final(task, self.settings.final_cache_ttl)
                .await
            {
                // The cache is an accelerator: the task store has the result.
                tracing::warn!(task_id = %task.id, error = %e, "could not cache the final result");
            }
        }
        if task.callback == CallbackState::Pending {
            let event = CompletionEvent::CallbackDue {
                task_id: task.id.clone(),
                attempt: 1,
            };
            self.ports
                .queue
                .send(QueueName::Completions, &encode(&event), Duration::ZERO)
                .await?;
            records::set_callback_state(
                self.ports.tasks.as_ref(),
                &task.id,
                &[CallbackState::Pending],
                CallbackState::Scheduled,
            )
            .await?;
        }
        Ok(())
    }

    async fn deliver_callback(
        &self,
        id: &TaskId,
        attempt: u32,
    ) -> Result<CompletionOutcome, BackendError> {
        let Some(task) = self.ports.tasks.get(id).await? else {
            return Ok(CompletionOutcome::UnknownTask);
        };
        let Some(url) = task.callback_url.clone() else {
            return Ok(CompletionOutcome::CallbackNotNeeded);
        };
        if !matches!(
            task.callback,
            CallbackState::Pending | CallbackState::Scheduled
        ) || !task.status.is_final()
        {
            return Ok(CompletionOutcome::CallbackNotNeeded);
        }
        let body =
            serde_json::to_string(&document(self.ports, self.settings.url_ttl, &task).await?)
                .map_err(|e| BackendError::corrupt(crate::ports::Backend::Tasks, e))?;
        let webhook_id = task.webhook_id();
        let timestamp = Utc::now().timestamp();
        let signature = self
            .settings
            .callbacks
            .webhook_secret
            .as_ref()
            .map(|secret| secret.sign(&webhook_id, timestamp, &body))
            .unwrap_or_default();
        let delivery = WebhookDelivery {
            url,
            webhook_id,
            timestamp,
            signature,
            body,
        };

        match self.ports.callbacks.send(&delivery).await {
            Ok(()) => {
                records::set_callback_state(
                    self.ports.tasks.as_ref(),
                    id,
                    &[CallbackState::Pending, CallbackState::Scheduled],
                    CallbackState::Delivered,
                )
                .await?;
                metrics::callback_attempted(CallbackAttempt::Delivered);
                tracing::info!(task_id = %id, attempt, "callback delivered");
                Ok(CompletionOutcome::CallbackDelivered)
            }
            Err(e) if attempt < self.settings.callbacks.max_attempts => {
                metrics::callback_attempted(CallbackAttempt::Retry);
                let next_attempt = attempt + 1;
                let delay = retry_delay(self.settings.callbacks.retry_base, next_attempt);
                tracing::warn!(task_id = %id, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "callback failed; will retry");
                let event = CompletionEvent::CallbackDue {
                    task_id: id.clone(),
                    attempt: next_attempt,
                };
                self.ports
                    .queue
                    .send(QueueName::Completions, &encode(&event), delay)
                    .await?;
                Ok(CompletionOutcome::CallbackRetryScheduled { next_attempt })
            }
            Err(e) => {
                metrics::callback_attempted(CallbackAttempt::GaveUp);
                tracing::error!(task_id = %id, attempt, error = %e, "callback failed for the last time; the result stays readable through /v1/result");
                records::set_callback_state(
                    self.ports.tasks.as_ref(),
                    id,
                    &[CallbackState::Pending, CallbackState::Scheduled],
                    CallbackState::GaveUp,
                )
                .await?;
                Ok(CompletionOutcome::CallbackGaveUp)
            }
        }
    }
}

/// Records the final effects of a task that became final outside the
/// completion step, through the completions queue.
pub async fn announce_final(ports: &Ports, id: &TaskId) -> Result<(), BackendError> {
    let event = CompletionEvent::TaskFinal {
        task_id: id.clone(),
    };
    ports
        .queue
        .send(QueueName::Completions, &encode(&event), Duration::ZERO)
        .await
}
