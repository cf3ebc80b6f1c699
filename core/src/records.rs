//! Changing task records safely: a read-modify-write loop over the task
//! store's compare-and-swap, and the domain's named changes (start a stage,
//! record a stage, cancel, expire, ...). Every status transition in the
//! system goes through here, so each one is applied exactly once however
//! many workers, deliveries or API calls race for it.

use chrono::{DateTime, Duration as ChronoDuration, Utc};

use crate::ports::{Backend, BackendError, PortResult, TaskStore};
use crate::task::{CallbackState, StageOutcome, Task, TaskError, TaskId, TaskStatus};

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
) -> PortResult<Option<(Task, StageStart)>> {
    update(store, id, |task| {
        if task.status.is_final() {
            return Change::Keep(StageStart::TaskFinal(task.status));
        }
        if task.stages.get(index).is_none_or(Option::is_some) {
            return Change::Keep(StageStart::AlreadyDone);
        }
        match task.status {
            TaskStatus::Queued if task.queue_deadline.is_some_and(|d| d < now) => {
                expire(task, now);
                Change::Write(StageStart::JustExpired)
            }
            TaskStatus::Queued => {
                task.status = TaskStatus::Running;
                task.started_at = Some(now);
                Change::Write(StageStart::Run)
            }
            _ => Change::Keep(StageStart::Run),
        }
    })
    .await
}

fn expire(task: &mut Task, now: DateTime<Utc>) {
    task.status = TaskStatus::Expired;
    task.completed_at = Some(now);
    task.error = Some(TaskError::new(
        "expired",
        "the task was not started before its ttl_seconds passed",
    ));
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
        if task.status == TaskStatus::Queued && task.queue_deadline.is_some_and(|d| d < now) {
            expire(task, now);
            task.retain_until = Some(now + result_ttl);
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
    /// This stage already had a result (duplicate delivery).
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
        if task.status.is_final() {
            return Change::Keep(StageRecorded::TaskWasFinal);
        }
        let Some(slot) = task.stages.get_mut(index) else {
            return Change::Keep(StageRecorded::Duplicate);
        };
        if slot.is_some() {
            return Change::Keep(StageRecorded::Duplicate);
        }
        *slot = Some(outcome.clone());
        if let Some(p) = task.stage_progress.get_mut(index) {
            *p = 1.0;
        }
        task.progress = mean(&task.stage_progress);
        if task.started_at.is_none() {
            task.started_at = Some(now);
        }
        if task.status == TaskStatus::Queued {
            task.status = TaskStatus::Running;
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
        task.status = if first_error.is_some() {
            TaskStatus::Failed
        } else {
            TaskStatus::Succeeded
        };
        task.error = first_error;
        task.completed_at = Some(now);
        task.retain_until = Some(now + result_ttl);
        Change::Write(StageRecorded::Recorded {
            task_became_final: true,
        })
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
        if task.status.is_final() {
            return Change::Keep(CancelOutcome::AlreadyFinal(task.status));
        }
        task.status = TaskStatus::Canceled;
        task.completed_at = Some(now);
        task.retain_until = Some(now + result_ttl);
        task.error = Some(TaskError::new(
            "canceled",
            "the task was canceled by the client",
        ));
        Change::Write(CancelOutcome::Canceled)
    })
    .await
}

/// Fails a task that cannot be run at all (e.g. a job that kept crashing
/// its worker). Stages already recorded are kept.
pub async fn fail(
    store: &dyn TaskStore,
    id: &TaskId,
    error: TaskError,
    now: DateTime<Utc>,
    result_ttl: ChronoDuration,
) -> PortResult<Option<(Task, bool)>> {
    update(store, id, |task| {
        if task.status.is_final() {
            return Change::Keep(false);
        }
        task.status = TaskStatus::Failed;
        task.error = Some(error.clone());
        task.completed_at = Some(now);
        task.retain_until = Some(now + result_ttl);
        Change::Write(true)
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
