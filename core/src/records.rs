//! Changing task records safely: a read-modify-write loop over the task
//! store's compare-and-swap, and the domain's named changes (start a stage,
//! record a stage, cancel, expire, ...). Every status transition in the
//! system goes through here, and each one through [`Task::transition`], so
//! each is checked against the status machine and applied exactly once
//! however many workers, deliveries or API calls race for it.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use crate::ports::{Backend, BackendError, PortResult, TaskStore};
use crate::task::{CallbackState, StageOutcome, StageSteps, Task, TaskError, TaskId, TaskStatus};

/// What a change function decided.
pub enum Change<T> {
    /// Write the modified task and return `T`.
    Write(T),
    /// Leave the record as it was and return `T`.
    Keep(T),
}

const MAX_ATTEMPTS: usize = 32;

/// Applies `change` to the current record until the compare-and-swap wins.
/// Returns `None` when the task does not exist. `change` may run several
/// times (once per lost race), each time on a fresh copy.
pub async fn update<T>(
    store: &dyn TaskStore,
    id: &TaskId,
    change: impl FnMut(&mut Task) -> Change<T>,
) -> PortResult<Option<(Task, T)>> {
    update_seeded(store, id, None, change).await
}

/// [`update`] whose first attempt starts from `known`, a copy the caller
/// has just read or written and that is probably still current, instead of
/// reading it again. If it is stale the swap loses and the loop reads the
/// record as usual, so a wrong guess costs one statement, never a lost write.
/// A `Keep` decided on the copy is checked against a fresh read too.
pub async fn update_from<T>(
    store: &dyn TaskStore,
    known: &Task,
    change: impl FnMut(&mut Task) -> Change<T>,
) -> PortResult<Option<(Task, T)>> {
    update_seeded(store, &known.id, Some(known.clone()), change).await
}

async fn update_seeded<T>(
    store: &dyn TaskStore,
    id: &TaskId,
    mut seed: Option<Task>,
    mut change: impl FnMut(&mut Task) -> Change<T>,
) -> PortResult<Option<(Task, T)>> {
    for _ in 0..MAX_ATTEMPTS {
        let (current, seeded) = match seed.take() {
            Some(known) => (known, true),
            None => match store.get(id).await? {
                Some(current) => (current, false),
                None => return Ok(None),
            },
        };
        let mut next = current.clone();
        match change(&mut next) {
            Change::Keep(_) if seeded => continue,
            Change::Keep(value) => return Ok(Some((current, value))),
            Change::Write(value) => {
                next.version = current.version + 1;
                if store.replace(&next, current.version).await? {
                    return Ok(Some((next, value)));
                }
            }
        }
    }
    Err(BackendError::unavailable(
        Backend::Tasks,
        format!("task {id} is too contended to update"),
    ))
}

/// What a worker should do with a job it received.
#[derive(Debug, Clone, PartialEq)]
pub enum StageStart {
    /// Generate: the task is running (this call may have started it).
    Run,
    /// The stage already has a result (a duplicate delivery): do nothing.
    AlreadyDone,
    /// The task is final (canceled, failed, expired): do nothing.
    TaskFinal(TaskStatus),
    /// The queue deadline passed before the task started: it is now expired.
    JustExpired,
}

/// A worker picked up stage `index`: moves a queued task to running, or
/// expires it when its deadline has passed.
pub async fn start_stage(
    store: &dyn TaskStore,
    id: &TaskId,
    index: usize,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, StageStart)>> {
    update(store, id, |task| {
        if task.status.is_final() {
            return Change::Keep(StageStart::TaskFinal(task.status));
        }
        if task.stages.get(index).is_none_or(Option::is_some) {
            return Change::Keep(StageStart::AlreadyDone);
        }
        if task.status != TaskStatus::Queued {
            return Change::Keep(StageStart::Run);
        }
        let (to, outcome) = if task.queue_deadline.is_some_and(|d| d < now) {
            (TaskStatus::Expired, StageStart::JustExpired)
        } else {
            (TaskStatus::Running, StageStart::Run)
        };
        match task.transition(to, None, now, result_ttl) {
            Ok(()) => Change::Write(outcome),
            Err(_) => Change::Keep(StageStart::TaskFinal(task.status)),
        }
    })
    .await
}

/// Expires a queued task whose deadline passed (a read noticed it before any
/// worker did). Returns whether this call expired it.
pub async fn expire_if_due(
    store: &dyn TaskStore,
    id: &TaskId,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, bool)>> {
    update(store, id, |task| {
        let due = task.status == TaskStatus::Queued && task.queue_deadline.is_some_and(|d| d < now);
        if due
            && task
                .transition(TaskStatus::Expired, None, now, result_ttl)
                .is_ok()
        {
            Change::Write(true)
        } else {
            Change::Keep(false)
        }
    })
    .await
}

/// Progress of one stage, 0..=1. Progress never goes backwards and is not
/// written for a task that is no longer running.
pub async fn set_stage_progress(
    store: &dyn TaskStore,
    id: &TaskId,
    index: usize,
    progress: f32,
    steps: StageSteps,
) -> PortResult<Option<TaskStatus>> {
    let updated = update(store, id, |task| {
        let Some(slot) = task.stage_progress.get_mut(index) else {
            return Change::Keep(());
        };
        if task.status != TaskStatus::Running || progress <= *slot {
            return Change::Keep(());
        }
        *slot = progress.clamp(0.0, 1.0);
        task.progress = mean(&task.stage_progress);
        // Records written before steps were kept have none: size them now.
        let stages = task.stage_progress.len();
        task.stage_steps.resize(stages, StageSteps::default());
        task.stage_steps[index] = steps;
        Change::Write(())
    })
    .await?;
    Ok(updated.map(|(task, ())| task.status))
}

fn mean(values: &[f32]) -> f32 {
    if values.is_empty() {
        0.0
    } else {
        values.iter().sum::<f32>() / values.len() as f32
    }
}

/// Result of recording a stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageRecorded {
    /// Newly recorded; if it was the last stage the task is now final.
    Recorded { task_became_final: bool },
    /// This stage already had a result (a duplicate delivery), whether or
    /// not the task is final by now.
    Duplicate,
    /// The task was already final (canceled, expired): nothing to record.
    TaskWasFinal,
}

/// Records a stage's outcome exactly once and, when it is the last one,
/// makes the task final: `succeeded` if every stage succeeded, else `failed`
/// with the first stage error.
pub async fn record_stage(
    store: &dyn TaskStore,
    id: &TaskId,
    index: usize,
    outcome: &StageOutcome,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, StageRecorded)>> {
    update(store, id, |task| {
        // A stage that already has its result is a duplicate even when the
        // task is final: most often this very stage made it final and the
        // step that recorded it died before the final effects (stats row,
        // callback) were all done. The caller runs them again on a
        // duplicate; answering "the task was final" here would leave the
        // callback unsent for good.
        let Some(slot) = task.stages.get_mut(index) else {
            return Change::Keep(StageRecorded::Duplicate);
        };
        if slot.is_some() {
            return Change::Keep(StageRecorded::Duplicate);
        }
        if task.status.is_final() {
            return Change::Keep(StageRecorded::TaskWasFinal);
        }
        *slot = Some(outcome.clone());
        if let Some(p) = task.stage_progress.get_mut(index) {
            *p = 1.0;
        }
        task.progress = mean(&task.stage_progress);
        // A result can overtake its own start (another worker started the
        // stage, this delivery finished it): the task ran either way.
        if task.status == TaskStatus::Queued
            && task
                .transition(TaskStatus::Running, None, now, result_ttl)
                .is_err()
        {
            return Change::Keep(StageRecorded::TaskWasFinal);
        }
        if !task.all_stages_done() {
            return Change::Write(StageRecorded::Recorded {
                task_became_final: false,
            });
        }
        let first_error = task.stages.iter().flatten().find_map(|s| match s {
            StageOutcome::Failed { error } => Some(error.clone()),
            StageOutcome::Succeeded { .. } => None,
        });
        let to = if first_error.is_some() {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        };
        match task.transition(to, first_error, now, result_ttl) {
            Ok(()) => Change::Write(StageRecorded::Recorded {
                task_became_final: true,
            }),
            Err(_) => Change::Keep(StageRecorded::TaskWasFinal),
        }
    })
    .await
}

/// Outcome of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    Canceled,
    AlreadyFinal(TaskStatus),
}

pub async fn cancel(
    store: &dyn TaskStore,
    id: &TaskId,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, CancelOutcome)>> {
    update(store, id, |task| {
        match task.transition(TaskStatus::Canceled, None, now, result_ttl) {
            Ok(()) => Change::Write(CancelOutcome::Canceled),
            Err(refused) => Change::Keep(CancelOutcome::AlreadyFinal(refused.from)),
        }
    })
    .await
}

/// Fails a task that cannot be run at all (e.g. a job that kept crashing
/// its worker). Stages already recorded are kept. Returns whether this call
/// failed it.
pub async fn fail(
    store: &dyn TaskStore,
    id: &TaskId,
    error: TaskError,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, bool)>> {
    update(store, id, |task| {
        match task.transition(TaskStatus::Failed, Some(error.clone()), now, result_ttl) {
            Ok(()) => Change::Write(true),
            Err(_) => Change::Keep(false),
        }
    })
    .await
}

/// Moves the callback state `from` → `to`; returns whether this call did.
pub async fn set_callback_state(
    store: &dyn TaskStore,
    id: &TaskId,
    from: &[CallbackState],
    to: CallbackState,
) -> PortResult<bool> {
    let updated = update(store, id, |task| {
        if from.contains(&task.callback) {
            task.callback = to;
            Change::Write(true)
        } else {
            Change::Keep(false)
        }
    })
    .await?;
    Ok(updated.is_some_and(|(_, changed)| changed))
}

/// Notes that `task`'s jobs are all on the queue. `task` is the record as
/// the caller last saw it (usually just inserted), which saves a read.
pub async fn mark_jobs_enqueued(store: &dyn TaskStore, task: &Task) -> PortResult<()> {
    update_from(store, task, |task| {
        if task.jobs_enqueued {
            Change::Keep(())
        } else {
            task.jobs_enqueued = true;
            Change::Write(())
        }
    })
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use async_trait::async_trait;

    use super::*;
    use crate::error_code::ErrorCode;
    use crate::ports::Inserted;
    use crate::request::CallRequest;
    use crate::task::{ClipOutput, ModelFamily, Tenant};

    /// A compare-and-swap task store in memory: enough to test the logic of
    /// this module (the real stores have their own adapter tests).
    #[derive(Default)]
    struct MemoryTasks(Mutex<HashMap<TaskId, Task>>);

    #[async_trait]
    impl TaskStore for MemoryTasks {
        async fn insert(&self, task: &Task) -> PortResult<Inserted> {
            self.0.lock().unwrap().insert(task.id.clone(), task.clone());
            Ok(Inserted::Created)
        }
        async fn get(&self, id: &TaskId) -> PortResult<Option<Task>> {
            Ok(self.0.lock().unwrap().get(id).cloned())
        }
        async fn replace(&self, task: &Task, expected_version: u64) -> PortResult<bool> {
            let mut tasks = self.0.lock().unwrap();
            match tasks.get(&task.id) {
                Some(current) if current.version == expected_version => {
                    tasks.insert(task.id.clone(), task.clone());
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn ping(&self) -> PortResult<()> {
            Ok(())
        }
    }

    fn ttl() -> ChronoDuration {
        ChronoDuration::hours(1)
    }

    fn new_task(samples: usize) -> Task {
        let now = Utc::now();
        Task {
            id: TaskId::generate(),
            tenant: Tenant::new("t"),
            request: CallRequest {
                family: ModelFamily::Music,
                prompt: "p".into(),
                duration: 1.0,
                samples: samples as u8,
                user_id: "u".into(),
                params: Default::default(),
                format: Default::default(),
                normalization: Default::default(),
                model: None,
                melody: None,
                callback_url: None,
                ttl_seconds: None,
            },
            status: TaskStatus::Queued,
            progress: 0.0,
            stages: vec![None; samples],
            stage_progress: vec![0.0; samples],
            stage_steps: Vec::new(),
            error: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            queue_deadline: None,
            retain_until: None,
            idempotency_key: None,
            request_fingerprint: String::new(),
            callback: CallbackState::Pending,
            callback_url: None,
            jobs_enqueued: true,
            version: 1,
        }
    }

    /// A store holding one task of `samples` stages brought to `status`.
    async fn store_with(status: TaskStatus, samples: usize) -> (MemoryTasks, TaskId) {
        let store = MemoryTasks::default();
        let mut task = new_task(samples);
        let now = Utc::now();
        match status {
            TaskStatus::Queued => {}
            TaskStatus::Running => task.transition(status, None, now, ttl()).unwrap(),
            final_status => {
                if final_status != TaskStatus::Expired && final_status != TaskStatus::Canceled {
                    task.transition(TaskStatus::Running, None, now, ttl())
                        .unwrap();
                }
                let error = (final_status == TaskStatus::Failed)
                    .then(|| TaskError::new(ErrorCode::EngineError, "boom"));
                task.transition(final_status, error, now, ttl()).unwrap();
            }
        }
        let id = task.id.clone();
        store.insert(&task).await.unwrap();
        (store, id)
    }

    fn clip() -> StageOutcome {
        StageOutcome::Succeeded {
            clip: ClipOutput {
                blob_key: "k".into(),
                content_type: "audio/wav".into(),
                duration: 1.0,
                sample_rate: 32000,
                channels: 1,
                bytes: 44,
                sha256: "0".into(),
            },
            inference_ms: 5,
        }
    }

    fn failure() -> StageOutcome {
        StageOutcome::Failed {
            error: TaskError::new(ErrorCode::GenerationRejected, "too long"),
        }
    }

    async fn status_of(store: &MemoryTasks, id: &TaskId) -> TaskStatus {
        store.get(id).await.unwrap().unwrap().status
    }

    #[tokio::test]
    async fn starting_a_stage_from_every_status() {
        for from in TaskStatus::ALL {
            let (store, id) = store_with(from, 2).await;
            let (_, outcome) = start_stage(&store, &id, 0, Utc::now(), ttl())
                .await
                .unwrap()
                .unwrap();
            let expected = match from {
                TaskStatus::Queued | TaskStatus::Running => StageStart::Run,
                other => StageStart::TaskFinal(other),
            };
            assert_eq!(outcome, expected, "from {from}");
            let after = if from == TaskStatus::Queued {
                TaskStatus::Running
            } else {
                from
            };
            assert_eq!(status_of(&store, &id).await, after, "from {from}");
        }
    }

    #[tokio::test]
    async fn a_queued_task_past_its_deadline_expires_when_a_worker_or_a_reader_sees_it() {
        for reader in [false, true] {
            let store = MemoryTasks::default();
            let mut task = new_task(1);
            task.queue_deadline = Some(Utc::now() - ChronoDuration::seconds(1));
            store.insert(&task).await.unwrap();
            if reader {
                let (expired, did) = expire_if_due(&store, &task.id, Utc::now(), ttl())
                    .await
                    .unwrap()
                    .unwrap();
                assert!(did);
                assert!(expired.retain_until.is_some());
            } else {
                let (expired, outcome) = start_stage(&store, &task.id, 0, Utc::now(), ttl())
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(outcome, StageStart::JustExpired);
                assert!(
                    expired.retain_until.is_some(),
                    "an expired result is kept for RESULT_TTL, not forever"
                );
            }
            let stored = store.get(&task.id).await.unwrap().unwrap();
            assert_eq!(stored.status, TaskStatus::Expired);
            assert_eq!(stored.error.map(|e| e.code), Some(ErrorCode::Expired));
        }
        // A running task never expires.
        let (store, id) = store_with(TaskStatus::Running, 1).await;
        let (_, did) = expire_if_due(&store, &id, Utc::now(), ttl())
            .await
            .unwrap()
            .unwrap();
        assert!(!did);
    }

    #[tokio::test]
    async fn recording_every_stage_makes_the_task_final_with_the_first_error() {
        let (store, id) = store_with(TaskStatus::Running, 3).await;
        for (index, outcome) in [(1, failure()), (0, clip())] {
            let (_, recorded) = record_stage(&store, &id, index, &outcome, Utc::now(), ttl())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                recorded,
                StageRecorded::Recorded {
                    task_became_final: false
                }
            );
        }
        let (task, recorded) = record_stage(&store, &id, 2, &clip(), Utc::now(), ttl())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            recorded,
            StageRecorded::Recorded {
                task_became_final: true
            }
        );
        assert_eq!(task.status, TaskStatus::Failed);
        assert_eq!(
            task.error.map(|e| e.code),
            Some(ErrorCode::GenerationRejected)
        );
        assert_eq!(task.progress, 1.0);

        // Redelivered after the task became final: still a duplicate, so the
        // caller finishes the final effects a crash may have cut short.
        let (_, again) = record_stage(&store, &id, 2, &clip(), Utc::now(), ttl())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, StageRecorded::Duplicate);
    }

    #[tokio::test]
    async fn recording_a_stage_from_every_status() {
        for from in TaskStatus::ALL {
            let (store, id) = store_with(from, 1).await;
            let (task, recorded) = record_stage(&store, &id, 0, &clip(), Utc::now(), ttl())
                .await
                .unwrap()
                .unwrap();
            if from.is_final() {
                assert_eq!(recorded, StageRecorded::TaskWasFinal, "from {from}");
                assert_eq!(task.status, from);
            } else {
                assert_eq!(
                    recorded,
                    StageRecorded::Recorded {
                        task_became_final: true
                    },
                    "from {from}"
                );
                assert_eq!(task.status, TaskStatus::Succeeded);
                assert!(task.started_at.is_some());
            }
        }
        let (store, id) = store_with(TaskStatus::Running, 2).await;
        record_stage(&store, &id, 0, &clip(), Utc::now(), ttl())
            .await
            .unwrap();
        let (_, dup) = record_stage(&store, &id, 0, &failure(), Utc::now(), ttl())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(dup, StageRecorded::Duplicate);
        let (_, out_of_range) = record_stage(&store, &id, 9, &clip(), Utc::now(), ttl())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out_of_range, StageRecorded::Duplicate);
    }

    #[tokio::test]
    async fn cancel_and_fail_from_every_status() {
        for from in TaskStatus::ALL {
            let (store, id) = store_with(from, 1).await;
            let (task, outcome) = cancel(&store, &id, Utc::now(), ttl())
                .await
                .unwrap()
                .unwrap();
            if from.is_final() {
                assert_eq!(outcome, CancelOutcome::AlreadyFinal(from));
                assert_eq!(task.status, from);
            } else {
                assert_eq!(outcome, CancelOutcome::Canceled);
                assert_eq!(status_of(&store, &id).await, TaskStatus::Canceled);
            }

            let (store, id) = store_with(from, 1).await;
            let error = TaskError::new(ErrorCode::JobFailedRepeatedly, "crashed");
            let (_, failed) = fail(&store, &id, error.clone(), Utc::now(), ttl())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(failed, !from.is_final(), "from {from}");
            let stored = store.get(&id).await.unwrap().unwrap();
            if !from.is_final() {
                assert_eq!(stored.status, TaskStatus::Failed);
                assert_eq!(stored.error, Some(error));
            } else {
                assert_eq!(stored.status, from);
            }
        }
        let store = MemoryTasks::default();
        assert!(cancel(&store, &TaskId::generate(), Utc::now(), ttl())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn progress_only_grows_and_only_while_running() {
        let (store, id) = store_with(TaskStatus::Running, 2).await;
        let steps = |done| StageSteps { done, total: 100 };
        set_stage_progress(&store, &id, 0, 0.5, steps(50))
            .await
            .unwrap();
        set_stage_progress(&store, &id, 0, 0.25, steps(25))
            .await
            .unwrap();
        let task = store.get(&id).await.unwrap().unwrap();
        assert_eq!(task.stage_progress, vec![0.5, 0.0]);
        assert_eq!(task.progress, 0.25);
        assert_eq!(task.stage_steps, vec![steps(50), StageSteps::default()]);
        let (store, id) = store_with(TaskStatus::Canceled, 1).await;
        assert_eq!(
            set_stage_progress(&store, &id, 0, 0.5, StageSteps::default())
                .await
                .unwrap(),
            Some(TaskStatus::Canceled)
        );
        assert_eq!(store.get(&id).await.unwrap().unwrap().progress, 0.0);
    }

    #[tokio::test]
    async fn concurrent_stage_results_are_all_kept() {
        let (store, id) = store_with(TaskStatus::Running, 4).await;
        let store = std::sync::Arc::new(store);
        let writers = (0..4).map(|index| {
            let (store, id) = (store.clone(), id.clone());
            tokio::spawn(async move {
                record_stage(store.as_ref(), &id, index, &clip(), Utc::now(), ttl()).await
            })
        });
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        let task = store.get(&id).await.unwrap().unwrap();
        assert!(task.all_stages_done());
        assert_eq!(task.status, TaskStatus::Succeeded);
    }

    #[tokio::test]
    async fn callback_state_moves_only_from_the_given_states() {
        let (store, id) = store_with(TaskStatus::Succeeded, 1).await;
        assert!(set_callback_state(
            &store,
            &id,
            &[CallbackState::Pending],
            CallbackState::Scheduled
        )
        .await
        .unwrap());
        assert!(!set_callback_state(
            &store,
            &id,
            &[CallbackState::Pending],
            CallbackState::Scheduled
        )
        .await
        .unwrap());
        assert!(set_callback_state(
            &store,
            &id,
            &[CallbackState::Pending, CallbackState::Scheduled],
            CallbackState::Delivered
        )
        .await
        .unwrap());
        assert_eq!(
            store.get(&id).await.unwrap().unwrap().callback,
            CallbackState::Delivered
        );
    }
}
