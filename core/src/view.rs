//! The documents the API returns and the callback carries, in the exact
//! shape of the contract. Built from a [`Task`] plus freshly presigned URLs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::media::OutputFormat;
use crate::ports::{BackendError, Percentiles, Ports, RecentTask};
use crate::task::{ModelFamily, StageOutcome, Task, TaskError, TaskStatus};

/// One generated clip as a client downloads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct OutputDocument {
    /// Presigned, short-lived; a new GET of the result gives a fresh one.
    pub url: String,
    pub expires_at: DateTime<Utc>,
    pub content_type: String,
    pub duration: f64,
    pub sample_rate: u32,
    pub channels: u16,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsDocument {
    pub queue_ms: Option<u64>,
    pub inference_ms: Option<u64>,
    pub total_ms: Option<u64>,
}

/// The result document (`GET /v1/result/{task_id}` and the callback body).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskDocument {
    pub task_id: String,
    pub status: TaskStatus,
    #[serde(rename = "type")]
    pub family: ModelFamily,
    pub prompt: String,
    pub duration: f64,
    pub samples: u8,
    pub user_id: String,
    /// 0..1, updated while running.
    pub progress: f32,
    /// One per sample, in order; present when succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outputs: Option<Vec<OutputDocument>>,
    pub error: Option<TaskError>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub metrics: MetricsDocument,
}

impl TaskDocument {
    /// `outputs` must already be presigned, in sample order.
    pub fn of(task: &Task, outputs: Option<Vec<OutputDocument>>) -> Self {
        Self {
            task_id: task.id.to_string(),
            status: task.status,
            family: task.request.family,
            prompt: task.request.prompt.clone(),
            duration: task.request.duration,
            samples: task.request.samples,
            user_id: task.request.user_id.clone(),
            progress: if task.status == TaskStatus::Succeeded {
                1.0
            } else {
                task.progress
            },
            outputs,
            error: task.error.clone(),
            created_at: task.created_at,
            started_at: task.started_at,
            completed_at: task.completed_at,
            metrics: MetricsDocument {
                queue_ms: task.queue_ms(),
                inference_ms: task.inference_ms(),
                total_ms: task.total_ms(),
            },
        }
    }
}

/// The result document of a task, with outputs presigned afresh when it
/// succeeded (what `/v1/result` answers and the callback carries).
pub async fn document(
    ports: &Ports,
    url_ttl: std::time::Duration,
    task: &Task,
) -> Result<TaskDocument, BackendError> {
    let outputs = if task.status == TaskStatus::Succeeded {
        let mut outputs = Vec::with_capacity(task.stages.len());
        for stage in task.stages.iter().flatten() {
            if let StageOutcome::Succeeded { clip, .. } = stage {
                let url = ports.blobs.presign_get(&clip.blob_key, url_ttl).await?;
                outputs.push(OutputDocument {
                    url: url.url,
                    expires_at: url.expires_at,
                    content_type: clip.content_type.clone(),
                    duration: clip.duration,
                    sample_rate: clip.sample_rate,
                    channels: clip.channels,
                    bytes: clip.bytes,
                    sha256: clip.sha256.clone(),
                });
            }
        }
        Some(outputs)
    } else {
        None
    };
    Ok(TaskDocument::of(task, outputs))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskLinks {
    pub result: String,
    pub cancel: String,
}

/// The answer to a submit (`202`, or `200` for an idempotent replay).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SubmitDocument {
    pub task_id: String,
    pub status: TaskStatus,
    pub created_at: DateTime<Utc>,
    pub links: TaskLinks,
}

impl SubmitDocument {
    pub fn of(task: &Task) -> Self {
        Self {
            task_id: task.id.to_string(),
            status: task.status,
            created_at: task.created_at,
            links: TaskLinks {
                result: format!("/v1/result/{}", task.id),
                cancel: format!("/v1/cancel/{}", task.id),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StatsDocument {
    pub user_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub requests: u64,
    pub by_status: BTreeMap<String, u64>,
    pub by_type: BTreeMap<String, u64>,
    pub audio_seconds: f64,
    pub latency_ms: Percentiles,
    pub recent: Vec<RecentTask>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueDepthDocument {
    pub queued: u64,
    pub in_flight: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthDocument {
    /// "ok" or "degraded".
    pub status: String,
    pub version: String,
    /// Per backend: "ok" or "down".
    pub backends: BTreeMap<String, String>,
    /// Per model family.
    pub queues: BTreeMap<String, QueueDepthDocument>,
    /// Per model family: whether this deployment serves it, and its models
    /// (the default first).
    pub models: BTreeMap<String, FamilyHealthDocument>,
}

/// One family in `/health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FamilyHealthDocument {
    /// False when the family is not in DEPLOYED_TYPES, or when `serve` left
    /// it out because its model did not load (the log says why): its tasks
    /// answer 422 `model_not_deployed`.
    pub deployed: bool,
    pub models: Vec<String>,
}

/// The answer to `POST /v1/uploads` (`201`): where to PUT the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UploadDocument {
    /// Name it in a task as `"melody": {"upload_id": ...}`.
    pub upload_id: String,
    /// Signed and short-lived (presigned S3 in AWS, the API itself in the
    /// embedded mode).
    pub url: String,
    /// Always `PUT`.
    pub method: String,
    /// Headers the PUT must carry, as given (`Content-Type` among them); its
    /// body must be exactly the declared number of bytes.
    pub headers: BTreeMap<String, String>,
    /// When `url` stops working.
    pub expires_at: DateTime<Utc>,
}

/// One model of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelDocument {
    /// "music" or "audio": the `type` of the tasks it serves.
    pub family: ModelFamily,
    /// What a request's `model` names.
    pub id: String,
    /// The family's model when a request names none.
    pub default: bool,
    /// `null` where the API cannot know (a local checkpoint directory it
    /// has not loaded); the same for `channels` and `melody`.
    pub sample_rate: Option<u32>,
    pub channels: Option<u16>,
    /// Whether a task may send a `melody`.
    pub melody: Option<bool>,
    /// The longest `duration` a request for it may ask for, in seconds.
    pub max_duration: f64,
    pub formats: Vec<OutputFormat>,
    /// `cpu`, `cuda:0`, ...; `null` where the API cannot know.
    pub device: Option<String>,
    /// `f32`, `f16` or `bf16`.
    pub dtype: Option<String>,
}

/// `GET /v1/models`: what this deployment serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ModelsDocument {
    pub models: Vec<ModelDocument>,
}

/// The contract's error body: `{"error": {"code", "message", "field"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorDocument {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub code: crate::error_code::ErrorCode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
