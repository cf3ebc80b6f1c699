//! The events of one task, as `GET /v1/events/{task_id}` sends them: a
//! `status` event on every change (with the depth of the family's queue
//! while the task waits in it), `progress` events while it runs, and one
//! final `result` event with the result document, after which there are no
//! more.
//!
//! The events are read, never written: [`TaskEvents`] polls the task record
//! that the workers already update with their per-step progress (every
//! `progress_interval`), so a stream adds reads and no write to the durable
//! store. Where the completion step runs in this process, its final signal
//! ([`crate::final_watch`]) cuts the wait for the last poll short.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

use crate::final_watch::FinalSubscription;
use crate::ports::{BackendError, QueueName};
use crate::service::{ServiceError, TaskService};
use crate::task::{Task, TaskId, TaskStatus, Tenant};
use crate::view::{QueueDepthDocument, TaskDocument};

/// How often a running task is read again: the workers write progress every
/// 250 ms, so reading faster would only repeat events.
const RUNNING_POLL: Duration = Duration::from_millis(250);
/// A queued task changes only when a worker takes it (or its queue moves).
const QUEUED_POLL: Duration = Duration::from_secs(1);

/// One event of a task's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskEvent {
    Status(StatusEvent),
    Progress(ProgressEvent),
    /// The result document; always the last event.
    Result(Box<TaskDocument>),
}

impl TaskEvent {
    /// The SSE `event:` name.
    pub fn name(&self) -> &'static str {
        match self {
            TaskEvent::Status(_) => "status",
            TaskEvent::Progress(_) => "progress",
            TaskEvent::Result(_) => "result",
        }
    }

    /// The SSE `data:` line: the event as JSON.
    pub fn data(&self) -> String {
        let json = match self {
            TaskEvent::Status(e) => serde_json::to_string(e),
            TaskEvent::Progress(e) => serde_json::to_string(e),
            TaskEvent::Result(doc) => serde_json::to_string(doc),
        };
        // These documents are plain data; serializing them cannot fail.
        json.unwrap_or_else(|_| "{}".to_owned())
    }
}

/// `event: status`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatusEvent {
    pub task_id: String,
    pub status: TaskStatus,
    /// While queued: the jobs waiting in this family's queue (this task's
    /// among them) and those being generated. The queues do not say where
    /// in the line a job stands, so `queued` is the most it can be behind.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueDepthDocument>,
}

/// `event: progress`: the mean progress of the task's samples, and the
/// decoding steps done of those planned, summed over the samples whose
/// worker has reported (a finished sample counts all its steps).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct ProgressEvent {
    pub progress: f32,
    pub step: u32,
    pub steps: u32,
}

impl ProgressEvent {
    fn of(task: &Task) -> Self {
        let (mut step, mut steps) = (0u32, 0u32);
        for (i, s) in task.stage_steps.iter().enumerate() {
            let finished = task.stages.get(i).is_some_and(Option::is_some);
            step = step.saturating_add(if finished { s.total } else { s.done });
            steps = steps.saturating_add(s.total);
        }
        Self {
            progress: task.progress,
            step,
            steps,
        }
    }
}

/// The event source of one task for one client key. Opening it checks
/// ownership, so another key's task is `404` before any event is sent.
pub struct TaskEvents {
    service: Arc<TaskService>,
    tenant: Tenant,
    id: TaskId,
    last_status: Option<StatusEvent>,
    last_progress: Option<ProgressEvent>,
    pending: VecDeque<TaskEvent>,
    /// The result event has been queued: nothing follows it.
    finished: bool,
    /// Taken before each read of the task, so that a start or end signalled
    /// between the read and the next wait still cuts that wait short.
    wake: FinalSubscription,
}

impl TaskEvents {
    /// Reads the task once: the first events (its status, its progress if
    /// it runs, its result if it is final) are ready when this returns.
    pub async fn open(
        service: Arc<TaskService>,
        tenant: Tenant,
        raw_id: &str,
    ) -> Result<Self, ServiceError> {
        // Subscribed before the read, so a start right after it still wakes
        // the first wait (an id that does not parse is refused by the read).
        let wake = TaskId::parse(raw_id).map(|id| service.ports.finals.subscribe(&id));
        let task = service.owned_task(&tenant, raw_id, false).await?;
        let wake = wake.unwrap_or_else(|| service.ports.finals.subscribe(&task.id));
        let mut events = Self {
            service,
            tenant,
            id: task.id.clone(),
            last_status: None,
            last_progress: None,
            pending: VecDeque::new(),
            finished: false,
            wake,
        };
        events.observe(task).await?;
        Ok(events)
    }

    /// The events ready now, without waiting for more: what a deployment
    /// that cannot stream answers at once.
    pub fn ready(&mut self) -> Vec<TaskEvent> {
        self.pending.drain(..).collect()
    }

    /// Whether the result event has been handed out or is ready.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next event, waiting for the task to change; `None` after the
    /// result event, or when the task can no longer be read (its result
    /// expired). A backend outage is waited out, not ended on.
    pub async fn next(&mut self) -> Option<TaskEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            self.wait().await;
            self.wake = self.service.ports.finals.subscribe(&self.id);
            let read = match self
                .service
                .owned_task(&self.tenant, self.id.as_str(), false)
                .await
            {
                Ok(task) => self.observe(task).await,
                Err(e) => Err(e),
            };
            match read {
                Ok(()) => {}
                Err(ServiceError::Backend(e @ BackendError::Unavailable { .. })) => {
                    tracing::warn!(task_id = %self.id, error = %e, "event stream: cannot read the task; retrying");
                }
                Err(e) => {
                    tracing::info!(task_id = %self.id, error = %e, "event stream ends: the task cannot be read");
                    return None;
                }
            }
        }
    }

    /// Sleeps until the next poll, or until a worker or the completion step
    /// in this process says the task started or became final.
    async fn wait(&mut self) {
        let running = self
            .last_status
            .as_ref()
            .is_some_and(|s| s.status == TaskStatus::Running);
        let pause = if running { RUNNING_POLL } else { QUEUED_POLL };
        let _ = tokio::time::timeout(pause, self.wake.changed()).await;
    }

    /// Queues the events that `task`, read just now, adds to those sent.
    async fn observe(&mut self, task: Task) -> Result<(), ServiceError> {
        let deadline_passed = task.status == TaskStatus::Queued
            && task.queue_deadline.is_some_and(|d| d < Utc::now());
        if task.status.is_final() || deadline_passed {
            // The result read also expires a task whose queue deadline
            // passed, and presigns the outputs.
            let doc = self.service.result(&self.tenant, self.id.as_str()).await?;
            if doc.status.is_final() {
                // A run shorter than a poll is still a change the stream
                // owes a client that saw the task queued: the record says
                // it started (a worker in another process wakes no one).
                let saw_it_queued = self
                    .last_status
                    .as_ref()
                    .is_some_and(|s| s.status == TaskStatus::Queued);
                if saw_it_queued && task.started_at.is_some() {
                    self.push_status(TaskStatus::Running, None);
                }
                self.push_status(doc.status, None);
                self.pending.push_back(TaskEvent::Result(Box::new(doc)));
                self.finished = true;
                return Ok(());
            }
        }
        let queue = if task.status == TaskStatus::Queued {
            let family = task.request.family;
            match self
                .service
                .ports
                .queue
                .depth(QueueName::Jobs(family))
                .await
            {
                Ok(d) => Some(QueueDepthDocument {
                    queued: d.queued,
                    in_flight: d.in_flight,
                }),
                // The depth is a courtesy; the status itself is known.
                Err(_) => self.last_status.as_ref().and_then(|s| s.queue),
            }
        } else {
            None
        };
        self.push_status(task.status, queue);
        if task.status == TaskStatus::Running {
            let progress = ProgressEvent::of(&task);
            if self.last_progress != Some(progress) {
                self.last_progress = Some(progress);
                self.pending.push_back(TaskEvent::Progress(progress));
            }
        }
        Ok(())
    }

    fn push_status(&mut self, status: TaskStatus, queue: Option<QueueDepthDocument>) {
        let event = StatusEvent {
            task_id: self.id.to_string(),
            status,
            queue,
        };
        if self.last_status.as_ref() != Some(&event) {
            self.last_status = Some(event.clone());
            self.pending.push_back(TaskEvent::Status(event));
        }
    }
}
