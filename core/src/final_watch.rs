//! Tells waiters in this process that a task has become final, so that
//! `POST /v1/generate` answers as soon as the completion step records the
//! last stage instead of on its next poll of the task store.
//!
//! A worker in this process also says when it starts a task, so an event
//! stream shows `running` and the first progress at once rather than on its
//! next poll of a queued task (a short clip can run start to end between two
//! such polls).
//!
//! It is only an early wake-up: the task store stays the truth, and a waiter
//! always reads the task again after a signal. Where the completion step runs
//! in another process (Lambda), no signal ever comes and waiters fall back to
//! polling; [`FinalWatch::completion_is_local`] says which case applies.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::task::TaskId;

/// What a waiter has been told of a task so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Started,
    Final,
}

#[derive(Default)]
pub struct FinalWatch {
    waiting: Mutex<HashMap<TaskId, watch::Sender<Phase>>>,
    completion_is_local: AtomicBool,
}

/// A waiter's subscription; dropping it forgets the task when no one else
/// waits for it. It holds the watch, so a long-lived waiter (an event
/// stream) can keep one from before a read of the task to after it.
pub struct FinalSubscription {
    watch: Arc<FinalWatch>,
    task_id: TaskId,
    receiver: watch::Receiver<Phase>,
}

impl FinalWatch {
    /// Called by a completion loop running in this process: from then on a
    /// final task is always signalled here.
    pub fn mark_completion_local(&self) {
        self.completion_is_local.store(true, Ordering::Release);
    }

    pub fn completion_is_local(&self) -> bool {
        self.completion_is_local.load(Ordering::Acquire)
    }

    /// Subscribe before reading the task, so that a signal sent between the
    /// read and the wait is not missed.
    pub fn subscribe(self: &Arc<Self>, task_id: &TaskId) -> FinalSubscription {
        let receiver = self
            .lock()
            .entry(task_id.clone())
            .or_insert_with(|| watch::channel(Phase::Waiting).0)
            .subscribe();
        FinalSubscription {
            watch: Arc::clone(self),
            task_id: task_id.clone(),
            receiver,
        }
    }

    /// The task is final: wake whoever waits for it.
    pub fn signal(&self, task_id: &TaskId) {
        if let Some(sender) = self.lock().remove(task_id) {
            let _ = sender.send(Phase::Final);
        }
    }

    /// A worker has started the task: wake whoever waits for any change.
    pub fn started(&self, task_id: &TaskId) {
        if let Some(sender) = self.lock().get(task_id) {
            sender.send_if_modified(|phase| {
                let was_waiting = *phase == Phase::Waiting;
                if was_waiting {
                    *phase = Phase::Started;
                }
                was_waiting
            });
        }
    }

    /// How many tasks have waiters: entries must not leak.
    #[cfg(test)]
    fn watched(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, watch::Sender<Phase>>> {
        // A panic while holding this lock cannot leave the map inconsistent
        // (each operation is one insert or remove), so poisoning is ignored.
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl FinalSubscription {
    /// Resolves when the task has been signalled final (at once if it
    /// already was). Cancel-safe: use it under a timeout.
    pub async fn signalled(&mut self) {
        // An error means the sender was dropped, which only `signal` does.
        let _ = self.receiver.wait_for(|phase| *phase == Phase::Final).await;
    }

    /// Resolves when the task has started or become final since this
    /// subscription was taken. Cancel-safe: use it under a timeout.
    pub async fn changed(&mut self) {
        // An error means the sender was dropped, which only `signal` does.
        let _ = self.receiver.changed().await;
    }
}

impl Drop for FinalSubscription {
    fn drop(&mut self) {
        let mut waiting = self.watch.lock();
        if let Some(sender) = waiting.get(&self.task_id) {
            // Our receiver is still alive here, hence `<= 1`.
            if sender.receiver_count() <= 1 {
                waiting.remove(&self.task_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_wakes_the_subscribed_waiter_and_forgets_the_task() {
        let watch = Arc::new(FinalWatch::default());
        let id = TaskId::generate();
        let mut subscription = watch.subscribe(&id);
        watch.signal(&id);
        tokio::time::timeout(Duration::from_secs(1), subscription.signalled())
            .await
            .expect("woken");
        drop(subscription);
        assert_eq!(watch.watched(), 0);
    }

    #[tokio::test]
    async fn a_start_wakes_a_waiter_for_any_change_but_not_one_for_the_final() {
        let watch = Arc::new(FinalWatch::default());
        let id = TaskId::generate();
        let mut any = watch.subscribe(&id);
        let mut last = watch.subscribe(&id);
        watch.started(&id);
        tokio::time::timeout(Duration::from_secs(1), any.changed())
            .await
            .expect("woken by the start");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), last.signalled())
                .await
                .is_err(),
            "a start is not the end"
        );
        watch.signal(&id);
        tokio::time::timeout(Duration::from_secs(1), last.signalled())
            .await
            .expect("woken by the end");
        drop((any, last));
        assert_eq!(watch.watched(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_leaves_no_entry_behind() {
        let watch = Arc::new(FinalWatch::default());
        let id = TaskId::generate();
        let first = watch.subscribe(&id);
        let mut second = watch.subscribe(&id);
        drop(first);
        assert_eq!(watch.watched(), 1, "the second waiter still waits");
        assert!(
            tokio::time::timeout(Duration::from_millis(20), second.signalled())
                .await
                .is_err(),
            "no signal was sent"
        );
        drop(second);
        assert_eq!(watch.watched(), 0);
    }

    #[tokio::test]
    async fn a_signal_for_a_task_nobody_waits_for_is_a_no_op() {
        let watch = Arc::new(FinalWatch::default());
        watch.signal(&TaskId::generate());
        assert_eq!(watch.watched(), 0);
        assert!(!watch.completion_is_local());
        watch.mark_completion_local();
        assert!(watch.completion_is_local());
    }
}
