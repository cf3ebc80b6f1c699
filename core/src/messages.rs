//! The messages that travel on the queues, shared by producers and consumers.
//!
//! A [`Job`] asks a worker for one sample of a task; a [`CompletionEvent`]
//! tells the completion step that a stage finished or that a callback is due
//! again. Bodies are JSON with a `kind` tag and a schema version, so a
//! message from an older or newer deployment is refused with a clear error
//! rather than misread.
//!
//! Each kind of message has its own version ([`Message::VERSION`]) and the
//! versions it can still read ([`Message::READS`]). A change that an older
//! reader would misread bumps the version; a newer reader keeps reading the
//! older versions for as long as a rolling deployment may still send them,
//! and an older reader refuses the newer one by name (a poison message, left
//! to the dead-letter queue) instead of guessing. Job v2 added the output
//! format, normalization, model and melody; a v1 job means what it meant
//! then (WAV, no normalization, the family's default model, no melody).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::audio::ClipRequest;
use crate::media::{Normalization, OutputFormat};
use crate::request::{GenerationParams, MelodyRequest};
use crate::task::{ModelFamily, StageOutcome, Task, TaskId};

/// A message kind and its schema versions.
pub trait Message: Serialize + for<'de> Deserialize<'de> {
    /// What `encode` writes.
    const VERSION: u32;
    /// What `decode` accepts (including `VERSION`).
    const READS: &'static [u32];
}

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
    /// Since v2. How the clip is stored.
    #[serde(default)]
    pub format: OutputFormat,
    /// Since v2. What is done to its level before it is encoded.
    #[serde(default)]
    pub normalization: Normalization,
    /// Since v2. The model to generate with (the API resolved the family's
    /// default already); `None` (a v1 job): the worker's default.
    #[serde(default)]
    pub model: Option<String>,
    /// Since v2. The upload whose melody to condition on.
    #[serde(default)]
    pub melody: Option<MelodyRequest>,
}

impl Message for Job {
    const VERSION: u32 = 2;
    const READS: &'static [u32] = &[1, 2];
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
                    format: task.request.format,
                    normalization: task.request.normalization,
                    model: task.request.model.clone(),
                    melody: task.request.melody.clone(),
                }
            })
            .collect()
    }

    /// What the engine is asked for, without the melody (the worker decodes
    /// the upload and adds it).
    pub fn clip_request(&self) -> ClipRequest {
        ClipRequest::new(self.prompt.clone(), self.duration, self.params.clone())
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

impl Message for CompletionEvent {
    const VERSION: u32 = 1;
    const READS: &'static [u32] = &[1];
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

pub fn encode<T: Message>(body: &T) -> String {
    serde_json::to_string(&Envelope {
        v: T::VERSION,
        body,
    })
    .unwrap_or_default()
}

pub fn decode<T: Message>(raw: &str) -> Result<T, MalformedMessage> {
    let value: serde_json::Value =
        serde_json::from_str(raw).map_err(|e| MalformedMessage(format!("not JSON: {e}")))?;
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if T::READS.iter().any(|&r| u64::from(r) == v) => {}
        Some(v) => {
            let reads: Vec<String> = T::READS.iter().map(u32::to_string).collect();
            return Err(MalformedMessage(format!(
                "message version {v}, this deployment reads version {} (a newer deployment sent it, or it is not one of ours)",
                reads.join(" or ")
            )));
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

    fn job() -> Job {
        Job {
            task_id: TaskId::parse("t1").unwrap(),
            index: 0,
            family: ModelFamily::Music,
            prompt: "p".into(),
            duration: 2.0,
            params: GenerationParams::default(),
            queue_deadline: None,
            format: OutputFormat::Flac,
            normalization: Normalization::Loudness,
            model: Some("facebook/musicgen-melody".into()),
            melody: Some(MelodyRequest {
                upload_id: crate::upload::UploadId::parse("up_1").unwrap(),
            }),
        }
    }

    #[test]
    fn jobs_are_written_as_version_2_and_round_trip() {
        let raw = encode(&job());
        assert!(raw.starts_with("{\"v\":2,"), "{raw}");
        assert_eq!(decode::<Job>(&raw).unwrap(), job());
    }

    #[test]
    fn a_version_1_job_still_reads_with_the_meaning_it_had() {
        let raw = r#"{"v":1,"task_id":"t1","index":0,"family":"music","prompt":"p","duration":2.0,
            "params":{"temperature":1.0,"top_k":250,"top_p":0.0,"cfg_coef":3.0,"seed":null},
            "queue_deadline":null}"#;
        let old = decode::<Job>(raw).unwrap();
        assert_eq!(old.format, OutputFormat::Wav);
        assert_eq!(old.normalization, Normalization::None);
        assert_eq!((old.model, old.melody), (None, None));
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let raw = encode(&job()).replacen("\"v\":2", "\"v\":3", 1);
        let err = decode::<Job>(&raw).unwrap_err().to_string();
        assert!(err.contains("version 3") && err.contains("1 or 2"), "{err}");
        // Completion events did not change: a v2 one is not ours.
        let event = encode(&CompletionEvent::TaskFinal {
            task_id: TaskId::parse("t1").unwrap(),
        });
        assert!(event.starts_with("{\"v\":1,"), "{event}");
        assert!(decode::<CompletionEvent>(&event.replacen("\"v\":1", "\"v\":2", 1)).is_err());
    }
}
