//! Tasks: what a client asked for, where it stands, and what it produced.
//!
//! A task is the unit the marketplace sees (one `task_id`); it fans out into
//! one job per requested sample (a *stage*, in the seed's words). The status
//! machine lives here and nowhere else: adapters store a task as an opaque
//! document with a version number and never decide a transition themselves.

use std::fmt;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error_code::ErrorCode;
pub use crate::family::ModelFamily;
use crate::request::TaskRequest;

/// Opaque task identifier: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(String);

impl TaskId {
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Accepts any id a client may send back to us; unknown ids simply are not
    /// found. Rejects what could never be one of ours, so garbage does not
    /// reach a backend query.
    pub fn parse(raw: &str) -> Option<Self> {
        let ok = !raw.is_empty()
            && raw.len() <= 64
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The client key's name: each key in `API_KEYS` is its own tenant, and
/// `MARKETPLACE_TOKEN` is the tenant `marketplace`. Tasks never cross tenants.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Tenant(String);

impl Tenant {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `queued → running → succeeded | failed | canceled`, and `expired` when the
/// queue deadline (`ttl_seconds`) passes before any job starts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
    Expired,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Succeeded,
        TaskStatus::Failed,
        TaskStatus::Canceled,
        TaskStatus::Expired,
    ];

    pub fn is_final(self) -> bool {
        !matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }

    /// The only edges of the status machine; [`Task::transition`] is the
    /// only code that changes a status, and it asks this first.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        matches!(
            (self, next),
            (Queued, Running)
                | (Queued, Canceled)
                | (Queued, Expired)
                | (Queued, Failed)
                | (Running, Succeeded)
                | (Running, Failed)
                | (Running, Canceled)
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Canceled => "canceled",
            TaskStatus::Expired => "expired",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        TaskStatus::ALL.into_iter().find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a task or one of its stages failed, in the contract's `{code, message}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskError {
    pub code: ErrorCode,
    pub message: String,
}

impl TaskError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A status change the machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a {from} task cannot become {to}")]
pub struct IllegalTransition {
    pub from: TaskStatus,
    pub to: TaskStatus,
}

/// Where one generated clip lives and what it is. The download URL is not
/// stored: it is presigned afresh on every read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipOutput {
    pub blob_key: String,
    pub content_type: String,
    pub duration: f64,
    pub sample_rate: u32,
    pub channels: u16,
    pub bytes: u64,
    pub sha256: String,
}

/// The outcome of one stage (one sample's job).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum StageOutcome {
    Succeeded { clip: ClipOutput, inference_ms: u64 },
    Failed { error: TaskError },
}

/// Whether the client still has to be called back for this task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CallbackState {
    /// Neither the task nor the deployment names a callback URL.
    #[default]
    NotRequested,
    /// Will be called back once the task is final.
    Pending,
    /// A delivery is queued (possibly being retried).
    Scheduled,
    Delivered,
    /// Every retry failed; the result stays readable through `/v1/result`.
    GaveUp,
}

/// How far one stage's decoding has gone: `done` of `total` steps (the
/// model's frames, over every window of an extended clip).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StageSteps {
    pub done: u32,
    pub total: u32,
}

/// A task record as the task store keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: TaskId,
    pub tenant: Tenant,
    pub request: TaskRequest,
    pub status: TaskStatus,
    /// 0..=1, the mean progress of the stages.
    pub progress: f32,
    /// One slot per sample, in order; `None` until that stage finishes.
    pub stages: Vec<Option<StageOutcome>>,
    pub stage_progress: Vec<f32>,
    /// Decoding steps per stage, written in the same write as
    /// `stage_progress` (so `GET /v1/events` can say `step` of `steps`
    /// without a write of its own); empty until a worker reports.
    #[serde(default)]
    pub stage_steps: Vec<StageSteps>,
    pub error: Option<TaskError>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// Not started by then => `expired` (from `ttl_seconds`).
    pub queue_deadline: Option<DateTime<Utc>>,
    /// Readable until then; afterwards `404 expired_result` (from `RESULT_TTL`).
    pub retain_until: Option<DateTime<Utc>>,
    pub idempotency_key: Option<String>,
    /// SHA-256 of the canonical request body, to tell a replay from a reuse.
    pub request_fingerprint: String,
    pub callback: CallbackState,
    /// Where the callback goes: the task's own URL or `MARKETPLACE_CALLBACK`.
    pub callback_url: Option<String>,
    /// Set once the task's jobs are on the queue; a replayed submit (same
    /// idempotency key) re-sends them when an earlier send failed.
    #[serde(default)]
    pub jobs_enqueued: bool,
    /// Optimistic-concurrency version, bumped by every write. Stores compare
    /// it so that two writers never both apply a transition.
    pub version: u64,
}

impl Task {
    /// Moves the task to `to`: the one place a status changes. Refuses an
    /// edge [`TaskStatus::can_become`] does not allow, and stamps what goes
    /// with the new status: the start time, or for a final status the
    /// completion time, how long the result is kept, and the error (`error`
    /// for `failed`; fixed ones for `canceled` and `expired`).
    pub fn transition(
        &mut self,
        to: TaskStatus,
        error: Option<TaskError>,
        now: DateTime<Utc>,
        result_ttl: ChronoDuration,
    ) -> Result<(), IllegalTransition> {
        if !self.status.can_become(to) {
            return Err(IllegalTransition {
                from: self.status,
                to,
            });
        }
        self.status = to;
        match to {
            TaskStatus::Queued => {}
            TaskStatus::Running => {
                self.started_at.get_or_insert(now);
            }
            TaskStatus::Succeeded
            | TaskStatus::Failed
            | TaskStatus::Canceled
            | TaskStatus::Expired => {
                self.completed_at = Some(now);
                self.retain_until = Some(now.checked_add_signed(result_ttl).unwrap_or(now));
                self.error = match to {
                    TaskStatus::Canceled => Some(TaskError::new(
                        ErrorCode::Canceled,
                        "the task was canceled by the client",
                    )),
                    TaskStatus::Expired => Some(TaskError::new(
                        ErrorCode::Expired,
                        "the task was not started before its ttl_seconds passed",
                    )),
                    TaskStatus::Failed => Some(error.unwrap_or_else(|| {
                        TaskError::new(ErrorCode::InternalError, "the task failed")
                    })),
                    _ => None,
                };
            }
        }
        Ok(())
    }

    pub fn samples(&self) -> usize {
        self.stages.len()
    }

    pub fn all_stages_done(&self) -> bool {
        self.stages.iter().all(Option::is_some)
    }

    /// The id every callback delivery of this task carries (Standard Webhooks
    /// `webhook-id`): derived, so retries and redeliveries share it.
    pub fn webhook_id(&self) -> String {
        format!("msg_{}", self.id)
    }

    pub fn queue_ms(&self) -> Option<u64> {
        let started = self.started_at?;
        Some(millis_between(self.created_at, started))
    }

    pub fn total_ms(&self) -> Option<u64> {
        let completed = self.completed_at?;
        Some(millis_between(self.created_at, completed))
    }

    /// Inference time of the slowest stage: stages run in parallel on
    /// different workers, so the sum would overstate the wait.
    pub fn inference_ms(&self) -> Option<u64> {
        self.stages
            .iter()
            .flatten()
            .filter_map(|s| match s {
                StageOutcome::Succeeded { inference_ms, .. } => Some(*inference_ms),
                StageOutcome::Failed { .. } => None,
            })
            .max()
    }

    /// Seconds of audio produced (all samples).
    pub fn audio_seconds(&self) -> f64 {
        self.stages
            .iter()
            .flatten()
            .map(|s| match s {
                StageOutcome::Succeeded { clip, .. } => clip.duration,
                StageOutcome::Failed { .. } => 0.0,
            })
            .sum()
    }

    pub fn outputs(&self) -> Vec<&ClipOutput> {
        self.stages
            .iter()
            .flatten()
            .filter_map(|s| match s {
                StageOutcome::Succeeded { clip, .. } => Some(clip),
                StageOutcome::Failed { .. } => None,
            })
            .collect()
    }
}

pub fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// A settings duration as a time span on the task clock; beyond chrono's
/// range it saturates (a result kept "forever").
pub fn to_chrono(d: std::time::Duration) -> ChronoDuration {
    ChronoDuration::from_std(d).unwrap_or(ChronoDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_have_no_way_out() {
        for from in TaskStatus::ALL.into_iter().filter(|s| s.is_final()) {
            for to in TaskStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be impossible");
            }
        }
    }

    #[test]
    fn a_running_task_cannot_expire_or_go_back_to_the_queue() {
        assert!(!TaskStatus::Running.can_become(TaskStatus::Expired));
        assert!(!TaskStatus::Running.can_become(TaskStatus::Queued));
        assert!(TaskStatus::Queued.can_become(TaskStatus::Expired));
    }

    #[test]
    fn a_transition_is_applied_exactly_when_the_machine_allows_it() {
        for from in TaskStatus::ALL {
            for to in TaskStatus::ALL {
                let mut task = sample_task(from);
                let before = task.clone();
                let now = task.created_at + ChronoDuration::seconds(5);
                let result = task.transition(to, None, now, ChronoDuration::hours(1));
                if from.can_become(to) {
                    assert!(result.is_ok(), "{from} -> {to}");
                    assert_eq!(task.status, to);
                    assert_eq!(task.completed_at.is_some(), to.is_final(), "{from} -> {to}");
                    assert_eq!(
                        task.error.is_some(),
                        matches!(
                            to,
                            TaskStatus::Failed | TaskStatus::Canceled | TaskStatus::Expired
                        ),
                        "{from} -> {to}"
                    );
                    if to.is_final() {
                        assert_eq!(task.retain_until, Some(now + ChronoDuration::hours(1)));
                    }
                } else {
                    assert_eq!(result, Err(IllegalTransition { from, to }));
                    assert_eq!(task, before, "a refused transition changes nothing");
                }
            }
        }
    }

    #[test]
    fn starting_keeps_the_first_start_time_and_failing_keeps_the_given_error() {
        let mut task = sample_task(TaskStatus::Queued);
        let t0 = task.created_at;
        task.transition(TaskStatus::Running, None, t0, ChronoDuration::zero())
            .unwrap();
        let error = TaskError::new(ErrorCode::EngineError, "out of memory");
        task.transition(
            TaskStatus::Failed,
            Some(error.clone()),
            t0 + ChronoDuration::seconds(1),
            ChronoDuration::zero(),
        )
        .unwrap();
        assert_eq!(task.started_at, Some(t0));
        assert_eq!(task.error, Some(error));
    }

    fn sample_task(status: TaskStatus) -> Task {
        let request = crate::request::CallRequest {
            family: ModelFamily::Music,
            prompt: "p".into(),
            duration: 1.0,
            samples: 1,
            user_id: "u".into(),
            params: Default::default(),
            format: Default::default(),
            normalization: Default::default(),
            model: None,
            melody: None,
            callback_url: None,
            ttl_seconds: None,
        };
        Task {
            id: TaskId::generate(),
            tenant: Tenant::new("t"),
            request,
            status,
            progress: 0.0,
            stages: vec![None],
            stage_progress: vec![0.0],
            stage_steps: Vec::new(),
            error: None,
            created_at: Utc::now(),
            started_at: None,
            completed_at: None,
            queue_deadline: None,
            retain_until: None,
            idempotency_key: None,
            request_fingerprint: String::new(),
            callback: CallbackState::NotRequested,
            callback_url: None,
            jobs_enqueued: true,
            version: 1,
        }
    }

    #[test]
    fn status_names_round_trip() {
        for s in TaskStatus::ALL {
            assert_eq!(TaskStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn task_ids_are_sortable_by_creation() {
        let a = TaskId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = TaskId::generate();
        assert!(a < b);
    }

    #[test]
    fn garbage_task_ids_are_rejected_before_reaching_a_backend() {
        assert!(TaskId::parse("").is_none());
        assert!(TaskId::parse("../../etc/passwd").is_none());
        assert!(TaskId::parse(&"a".repeat(65)).is_none());
        assert!(TaskId::parse("0190b7c2-8f9e-7c3a-9d1e-123456789abc").is_some());
    }
}
