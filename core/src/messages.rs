//! The messages that travel on the queues, shared by producers and consumers.
//!
//! A [`Job`] asks a worker for one sample of a task; a [`CompletionEvent`]
//! tells the completion step that a stage finished or that a callback is due
//! again. Bodies are JSON with a `kind` tag and a schema version, so a
//! message from an older or newer deployment is refused with a clear error
//! rather than misread.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audio::ClipRequest;
use crate::request::GenerationParams;
use crate::task::{ModelFamily, StageOutcome, Task, TaskId};

pub const MESSAGE_VERSION: u32 = 1;

/// One sample of a task, for a worker of the task's model family.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub task_id: TaskId,
    /// Which sample (stage) of the task this is, from 0.
    pub index: usize,
    pub family: ModelFamily,
    pub prompt: String,
    pub duration: f64,
    pub params: GenerationParams,
    pub queue_deadline: Option<DateTime<Utc>>,
}

impl Job {
    /// The jobs of a new task, one per sample. With a seed, sample `i` uses
    /// `seed + i` so the samples differ yet the task stays reproducible.
    pub fn for_task(task: &Task) -> Vec<Job> {
        (0..task.samples())
            .map(|index| {
                let mut params = task.request.params.clone();
                params.seed = params.seed.map(|s| s.wrapping_add(index as u64));
                Job {
                    task_id: task.id.clone(),
                    index,
                    family: task.request.family,
                    prompt: task.request.prompt.clone(),
                    duration: task.request.duration,
                    params,
                    queue_deadline: task.queue_deadline,
                }
            })
            .collect()
    }

    pub fn clip_request(&self) -> ClipRequest {
        ClipRequest {
            prompt: self.prompt.clone(),
            duration: self.duration,
            params: self.params.clone(),
        }
    }
}

/// What the completion step is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CompletionEvent {
    /// A worker finished one stage (successfully or not).
    StageFinished {
        task_id: TaskId,
        index: usize,
        outcome: StageOutcome,
    },
    /// A task became final outside the completion step (canceled, expired):
    /// run the final effects (stats, cached result, callback).
    TaskFinal { task_id: TaskId },
    /// Try (again) to deliver the task's callback.
    CallbackDue { task_id: TaskId, attempt: u32 },
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

/// A message body that cannot be read. Such a message is poison: it is
/// logged and left to the dead-letter queue, never retried forever.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unreadable message: {0}")]
pub struct MalformedMessage(pub String);

pub fn encode<T: Serialize>(body: &T) -> String {
    serde_json::to_string(&Envelope {
        v: MESSAGE_VERSION,
        body,
    })
    .unwrap_or_default()
}

pub fn decode<T: for<'de> Deserialize<'de>>(raw: &str) -> Result<T, MalformedMessage> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| MalformedMessage(format!("not JSON: {e}")))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(MESSAGE_VERSION) => {}
        Some(v) => {
            return Err(MalformedMessage(format!(
                "message version {v}, expected {MESSAGE_VERSION}"
            )))
        }
        None => return Err(MalformedMessage("no message version".into())),
    }
    let envelope: Envelope<T> =
        serde_json::from_value(value).map_err(|e| MalformedMessage(e.to_string()))?;
    Ok(envelope.body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error_code::ErrorCode;
    use crate::task::TaskError;

    #[test]
    fn completion_events_round_trip() {
        let event = CompletionEvent::StageFinished {
            task_id: TaskId::parse("t1").unwrap(),
            index: 2,
            outcome: StageOutcome::Failed {
                error: TaskError::new(ErrorCode::EngineError, "boom"),
            },
        };
        let raw = encode(&event);
        assert_eq!(decode::<CompletionEvent>(&raw).unwrap(), event);
    }

    #[test]
    fn garbage_and_foreign_versions_are_malformed_not_panics() {
        for raw in [
            "",
            "{",
            "[]",
            "{\"v\":2,\"kind\":\"task_final\",\"task_id\":\"a\"}",
            "{\"kind\":\"task_final\"}",
            "{\"v\":1,\"kind\":\"nope\"}",
            "\u{0}",
        ] {
            assert!(decode::<CompletionEvent>(raw).is_err(), "{raw:?}");
        }
        assert!(decode::<Job>("{\"v\":1}").is_err());
    }
}
