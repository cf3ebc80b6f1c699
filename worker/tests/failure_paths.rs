//! Every way a job can fail, on the real embedded backends (SQLite and files
//! in a temp dir) and a real HTTP callback receiver, with a scripted
//! generator that fails as told: a job on the wrong family's queue, a job
//! that keeps crashing its worker, a request the model rejects, an engine
//! error that persists, and a worker stopped mid-job. Each failure must end
//! the task `failed` with its own error code, a stats row and one callback;
//! a stopped worker must hand its job back, to be finished by another.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::routing::post;
use serde_json::{json, Value};
use sound_creator_core::audio::{
    AudioGenerator, Clip, ClipRequest, GenerationError, ModelInfo, StepControl, StepObserver,
};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::messages::{encode, Job};
use sound_creator_core::ports::{CallbackSender, Ports, QueueName, StatsQuery};
use sound_creator_core::request::CallRequest;
use sound_creator_core::service::{Submitted, TaskService};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{ModelFamily, Task, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_webhook::HttpCallbackSender;
use sound_creator_worker::{CompletionLoop, ExecutionOutcome, Worker, WorkerConfig};

/// What the scripted generator does on its next call.
#[derive(Debug, Clone)]
enum Script {
    Succeed,
    Reject(&'static str),
    EngineError(&'static str),
    /// Reports steps until the observer says stop, then ends canceled.
    RunUntilStopped,
}

struct ScriptedGenerator {
    script: Mutex<VecDeque<Script>>,
    calls: AtomicUsize,
}

impl ScriptedGenerator {
    fn new(script: &[Script]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.iter().cloned().collect()),
            calls: AtomicUsize::new(0),
        })
    }
}

impl AudioGenerator for ScriptedGenerator {
    fn info(&self) -> ModelInfo {
        ModelInfo::cpu("scripted", 32_000, 50.0)
    }

    fn generate(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Script::Succeed);
        match next {
            Script::Succeed => Ok(batch
                .iter()
                .map(|r| Clip {
                    samples: vec![0.1; (r.duration * 32_000.0) as usize],
                    sample_rate: 32_000,
                    channels: 1,
                })
                .collect()),
            Script::Reject(why) => Err(GenerationError::Rejected(why.into())),
            Script::EngineError(why) => Err(GenerationError::Engine(why.into())),
            Script::RunUntilStopped => {
                for step in 0.. {
                    if observer.on_step(step, usize::MAX) == StepControl::Stop {
                        return Err(GenerationError::Canceled);
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                unreachable!("the loop only ends by returning")
            }
        }
    }
}

/// A callback receiver that records each delivery's `webhook-id` and body.
async fn callback_receiver() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let log: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let seen = log.clone();
    let router = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: Bytes| {
            let seen = seen.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.lock().unwrap().push((id, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, log)
}

struct Harness {
    _dir: tempfile::TempDir,
    ports: Ports,
    settings: Arc<ServiceSettings>,
    service: TaskService,
    completion: CompletionLoop,
    callbacks: Arc<Mutex<Vec<(String, Value)>>>,
    max_attempts: u32,
}

impl Harness {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (hook, callbacks) = callback_receiver().await;
        let all = sound_creator_settings::from_pairs(&[
            ("MARKETPLACE_TOKEN", "t"),
            ("MARKETPLACE_CALLBACK", &hook),
            ("JOB_MAX_ATTEMPTS", "2"),
            // The model the jobs name: the scripted generator.
            ("MUSIC_GEN_MODEL", "scripted"),
        ])
        .unwrap();
        let options = EmbeddedOptions {
            visibility_timeout: Duration::from_millis(300),
            max_receives: all.worker.max_receives(),
            poll_interval: Duration::from_millis(20),
            ..EmbeddedOptions::default()
        };
        let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
        let sender: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(Duration::from_secs(5)).unwrap());
        let ports = store.ports(sender);
        let settings = Arc::new(all.service.clone());
        let mut completion = CompletionLoop::new(ports.clone(), settings.clone());
        completion.poll_wait = Duration::from_millis(50);
        Self {
            service: TaskService::new(ports.clone(), settings.clone()),
            completion,
            ports,
            settings,
            callbacks,
            max_attempts: all.worker.max_attempts,
            _dir: dir,
        }
    }

    fn worker(&self, family: ModelFamily, generator: Arc<ScriptedGenerator>) -> Worker {
        let mut config =
            WorkerConfig::new(family, 1, self.max_attempts, Duration::from_millis(300));
        config.poll_wait = Duration::from_millis(50);
        config.progress_interval = Duration::from_millis(20);
        Worker::new(self.ports.clone(), self.settings.clone(), generator, config)
    }

    async fn submit(&self) -> TaskId {
        let body = json!({"type": "music", "prompt": "p", "duration": 0.2, "user_id": "u1"});
        let request =
            CallRequest::parse(&body, &self.settings.limits, &self.settings.callbacks).unwrap();
        let Submitted::Created(doc) = self
            .service
            .submit(&Tenant::new("marketplace"), request, None)
            .await
            .unwrap()
        else {
            panic!("a new task")
        };
        TaskId::parse(&doc.task_id).unwrap()
    }

    async fn task(&self, id: &TaskId) -> Task {
        self.ports.tasks.get(id).await.unwrap().unwrap()
    }

    /// Runs the completion step until its queue is empty (callback retries
    /// included, which the receiver answers at once).
    async fn complete(&self) {
        for _ in 0..50 {
            if self.completion.try_execute_events().await.unwrap() == ExecutionOutcome::EmptyQueue {
                return;
            }
        }
        panic!("the completions queue did not drain");
    }

    /// The task ended `failed` with `code`, with one stats row saying so and
    /// one callback carrying the same error.
    async fn assert_failed_everywhere(&self, id: &TaskId, code: ErrorCode) {
        self.complete().await;
        let task = self.task(id).await;
        assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
        assert_eq!(task.error.as_ref().map(|e| e.code), Some(code), "{task:?}");

        let stats = self
            .ports
            .stats
            .summarize(&StatsQuery {
                tenant: Tenant::new("marketplace"),
                user_id: None,
                from: None,
                to: None,
                recent_limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(stats.by_status.get("failed"), Some(&1), "{stats:?}");
        assert_eq!(stats.requests, 1);

        let callbacks = self.callbacks.lock().unwrap().clone();
        assert_eq!(callbacks.len(), 1, "{callbacks:?}");
        assert_eq!(callbacks[0].0, format!("msg_{id}"));
        assert_eq!(callbacks[0].1["status"], "failed");
        assert_eq!(callbacks[0].1["error"]["code"], code.as_str());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_on_another_familys_queue_fails_its_task_with_wrong_queue() {
    let h = Harness::new().await;
    let id = h.submit().await;
    // The task's music job, and the same job misrouted to the audio queue
    // (drained first, since the audio worker runs first).
    let job = Job::for_task(&h.task(&id).await).remove(0);
    h.ports
        .queue
        .send(
            QueueName::Jobs(ModelFamily::Audio),
            &encode(&job),
            Duration::ZERO,
        )
        .await
        .unwrap();
    let generator = ScriptedGenerator::new(&[]);
    let audio = h.worker(ModelFamily::Audio, generator.clone());
    assert_eq!(
        audio.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(
        generator.calls.load(Ordering::SeqCst),
        0,
        "nothing was generated"
    );
    h.assert_failed_everywhere(&id, ErrorCode::WrongQueue).await;

    // The correctly routed job finds the task final and is dropped.
    let music = h.worker(ModelFamily::Music, generator.clone());
    assert_eq!(
        music.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(generator.calls.load(Ordering::SeqCst), 0);
    assert_eq!(
        h.ports
            .queue
            .depth(QueueName::Jobs(ModelFamily::Music))
            .await
            .unwrap()
            .queued,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_that_keeps_crashing_its_worker_fails_with_job_failed_repeatedly() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let queue = QueueName::Jobs(ModelFamily::Music);
    // Workers that die mid-job: the message is received and never finished,
    // JOB_MAX_ATTEMPTS (2) times.
    for _ in 0..h.max_attempts {
        let deliveries = h
            .ports
            .queue
            .receive(queue, 1, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(deliveries.len(), 1);
        h.ports
            .queue
            .release(queue, &deliveries[0].receipt)
            .await
            .unwrap();
    }
    let generator = ScriptedGenerator::new(&[]);
    let worker = h.worker(ModelFamily::Music, generator.clone());
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(
        generator.calls.load(Ordering::SeqCst),
        0,
        "a poisoned job is not run again"
    );
    h.assert_failed_everywhere(&id, ErrorCode::JobFailedRepeatedly)
        .await;
    assert_eq!(
        h.ports.queue.depth(queue).await.unwrap(),
        Default::default()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_the_model_rejects_fails_at_once_with_generation_rejected() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let generator = ScriptedGenerator::new(&[Script::Reject("too long for this model")]);
    let worker = h.worker(ModelFamily::Music, generator.clone());
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(
        generator.calls.load(Ordering::SeqCst),
        1,
        "a rejection is not retried"
    );
    h.assert_failed_everywhere(&id, ErrorCode::GenerationRejected)
        .await;
    assert_eq!(
        h.task(&id).await.error.unwrap().message,
        "too long for this model"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_engine_error_is_retried_then_fails_with_engine_error() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let generator = ScriptedGenerator::new(&[
        Script::EngineError("CUDA out of memory"),
        Script::EngineError("CUDA out of memory"),
    ]);
    let worker = h.worker(ModelFamily::Music, generator.clone());
    // First attempt: released for another try, the task still running.
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    h.complete().await;
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    // Second (last) attempt: the stage fails.
    let mut outcome = ExecutionOutcome::EmptyQueue;
    for _ in 0..40 {
        outcome = worker.try_execute_jobs().await.unwrap();
        if outcome != ExecutionOutcome::EmptyQueue {
            break;
        }
    }
    assert_eq!(outcome, ExecutionOutcome::Handled(1));
    assert_eq!(generator.calls.load(Ordering::SeqCst), 2);
    h.assert_failed_everywhere(&id, ErrorCode::EngineError)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_stopped_mid_job_hands_it_back_and_another_finishes_it() {
    let h = Harness::new().await;
    let id = h.submit().await;
    let queue = QueueName::Jobs(ModelFamily::Music);
    let stopping = h.worker(
        ModelFamily::Music,
        ScriptedGenerator::new(&[Script::RunUntilStopped]),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(stopping.run(async {
        let _ = stopped.await;
    }));
    // Wait until the job is in hand, then shut the worker down.
    for _ in 0..200 {
        if h.ports.queue.depth(queue).await.unwrap().in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.task(&id).await.status, TaskStatus::Running);
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the worker stops within a step, not after the job")
        .unwrap();
    let depth = h.ports.queue.depth(queue).await.unwrap();
    assert_eq!(
        (depth.queued, depth.in_flight),
        (1, 0),
        "the job is back in the queue at once"
    );
    h.complete().await;
    assert_eq!(
        h.task(&id).await.status,
        TaskStatus::Running,
        "a shutdown is not a failure"
    );
    assert!(h.callbacks.lock().unwrap().is_empty());

    let next = h.worker(
        ModelFamily::Music,
        ScriptedGenerator::new(&[Script::Succeed]),
    );
    assert_eq!(
        next.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    h.complete().await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(h.callbacks.lock().unwrap().len(), 1);
}
