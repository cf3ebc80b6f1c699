//! At-least-once delivery made safe, on the real embedded backends (SQLite
//! and files in a temp dir), the real tiny MusicGen engine and a real HTTP
//! callback receiver: a job delivered twice and every completion event
//! delivered twice still give one output set, one stats row and one
//! callback id. Also: the worker holds scale-in protection while it has
//! jobs and lets go of it once its queue is empty.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use chrono::Utc;
use serde_json::json;
use sound_creator_audiocraft::engine::MusicGenEngine;
use sound_creator_core::messages::{decode, encode, CompletionEvent, Job};
use sound_creator_core::ports::{
    CallbackSender, Ports, ProtectionError, QueueName, ScaleInProtection, StatsQuery, StatsRow,
};
use sound_creator_core::records::{self, StageRecorded};
use sound_creator_core::request::CallRequest;
use sound_creator_core::service::{Submitted, TaskService};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{to_chrono, CallbackState, ModelFamily, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_settings::Settings;
use sound_creator_webhook::HttpCallbackSender;
use sound_creator_worker::{CompletionLoop, ExecutionOutcome, Worker, WorkerConfig};

async fn callback_receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = ids.clone();
    let router = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap| {
            let log = log.clone();
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(id);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, ids)
}

fn tiny_model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-musicgen")
        .display()
        .to_string()
}

/// The embedded backends in a temp dir, a service whose callbacks go to
/// `hook_url`, a worker on the tiny model, and one submitted task.
struct Rig {
    dir: tempfile::TempDir,
    settings: Arc<ServiceSettings>,
    ports: Ports,
    worker: Worker,
    tenant: Tenant,
    task_id: TaskId,
}

impl Rig {
    async fn with_one_task(hook_url: &str, prompt: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let all_settings = Settings::from_lookup(|name| match name {
            "MARKETPLACE_TOKEN" => Some("t".into()),
            "MARKETPLACE_CALLBACK" => Some(hook_url.to_owned()),
            "MUSIC_GEN_MODEL" => Some(tiny_model()),
            _ => None,
        })
        .unwrap();
        let settings = Arc::new(all_settings.service.clone());
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap();
        let callbacks: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(Duration::from_secs(5)).unwrap());
        let ports = store.ports(callbacks);
        let service = TaskService::new(ports.clone(), settings.clone());
        let tenant = Tenant::new("marketplace");

        let body = json!({"type": "music", "prompt": prompt, "duration": 0.3, "user_id": "u1", "params": {"seed": 1}});
        let request = CallRequest::parse(&body, &settings.limits, &settings.callbacks).unwrap();
        let Submitted::Created(doc) = service.submit(&tenant, request, None).await.unwrap() else {
            panic!("created")
        };
        let task_id = TaskId::parse(&doc.task_id).unwrap();

        let engine = MusicGenEngine::load(
            &tiny_model(),
            dir.path(),
            &sound_creator_audiocraft::hub::HubSettings::offline(),
            tch::Device::Cpu,
            tch::Kind::Float,
        )
        .unwrap();
        let mut config = WorkerConfig::new(
            ModelFamily::Music,
            1,
            all_settings.worker.max_attempts,
            Duration::from_secs(30),
        );
        config.poll_wait = Duration::from_millis(100);
        let worker = Worker::new(ports.clone(), settings.clone(), Arc::new(engine), config);
        Rig {
            dir,
            settings,
            ports,
            worker,
            tenant,
            task_id,
        }
    }

    fn completion_loop(&self) -> CompletionLoop {
        let mut completion = CompletionLoop::new(self.ports.clone(), self.settings.clone());
        completion.poll_wait = Duration::from_millis(100);
        completion.batch = 1;
        completion
    }

    /// Runs the completion loop until the queue and its callbacks are done.
    async fn drain_completions(&self) {
        let completion = self.completion_loop();
        for _ in 0..50 {
            if completion.try_execute_events().await.unwrap() == ExecutionOutcome::EmptyQueue {
                return;
            }
        }
        panic!("completion events keep coming");
    }

    async fn stats_rows(&self) -> u64 {
        self.ports
            .stats
            .summarize(&StatsQuery {
                tenant: self.tenant.clone(),
                user_id: None,
                from: None,
                to: None,
                recent_limit: 10,
            })
            .await
            .unwrap()
            .requests
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_and_its_events_delivered_twice_yield_one_output_one_stats_row_and_one_callback() {
    let (hook_url, callback_ids) = callback_receiver().await;
    let rig = Rig::with_one_task(&hook_url, "twice").await;
    let (ports, worker, task_id) = (&rig.ports, &rig.worker, &rig.task_id);

    // The queue delivers the job a second time (as SQS may).
    let task = ports.tasks.get(task_id).await.unwrap().unwrap();
    let job = Job::for_task(&task).remove(0);
    ports
        .queue
        .send(
            QueueName::Jobs(ModelFamily::Music),
            &encode(&job),
            Duration::ZERO,
        )
        .await
        .unwrap();

    // Both deliveries are worked before any completion runs: the worst case.
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );
    assert_eq!(
        worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::EmptyQueue
    );

    // Every completion event is delivered twice too.
    let completion = rig.completion_loop();
    let mut rounds = 0;
    loop {
        let deliveries = ports
            .queue
            .receive(QueueName::Completions, 1, Duration::from_millis(100))
            .await
            .unwrap();
        let Some(delivery) = deliveries.into_iter().next() else {
            break;
        };
        let event: CompletionEvent = decode(&delivery.body).unwrap();
        ports
            .queue
            .send(QueueName::Completions, &encode(&event), Duration::ZERO)
            .await
            .unwrap();
        ports
            .queue
            .release(QueueName::Completions, &delivery.receipt)
            .await
            .unwrap();
        completion.try_execute_events().await.unwrap();
        completion.try_execute_events().await.unwrap();
        rounds += 1;
        assert!(rounds < 20, "completion events keep coming");
    }

    let task = ports.tasks.get(task_id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    let blobs: Vec<_> =
        std::fs::read_dir(rig.dir.path().join("blobs/tasks").join(task_id.as_str()))
            .unwrap()
            .collect();
    assert_eq!(blobs.len(), 1, "one output set");
    assert_eq!(rig.stats_rows().await, 1, "one stats row");
    assert_eq!(
        *callback_ids.lock().unwrap(),
        vec![format!("msg_{task_id}")],
        "one callback"
    );
}

/// The crash `kill_recovery` found: the completion step recorded the last
/// stage (the task is final) and wrote the stats row, then died before it
/// scheduled the callback. The redelivered event must finish the job, not
/// be taken for a late stage of a task that was already final.
#[tokio::test(flavor = "multi_thread")]
async fn a_stage_event_redelivered_after_a_crash_past_the_final_record_still_calls_back() {
    let (hook_url, callback_ids) = callback_receiver().await;
    let rig = Rig::with_one_task(&hook_url, "cut short").await;
    let (ports, task_id) = (&rig.ports, &rig.task_id);
    assert_eq!(
        rig.worker.try_execute_jobs().await.unwrap(),
        ExecutionOutcome::Handled(1)
    );

    // What the dead step did before the kill, by hand: it received the
    // event, recorded the stage and the stats row.
    let delivery = ports
        .queue
        .receive(QueueName::Completions, 1, Duration::from_millis(100))
        .await
        .unwrap()
        .remove(0);
    let CompletionEvent::StageFinished { index, outcome, .. } = decode(&delivery.body).unwrap()
    else {
        panic!("a stage event: {}", delivery.body)
    };
    let (task, recorded) = records::record_stage(
        ports.tasks.as_ref(),
        task_id,
        index,
        &outcome,
        Utc::now(),
        to_chrono(rig.settings.result_ttl),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        recorded,
        StageRecorded::Recorded {
            task_became_final: true
        }
    );
    ports.stats.record(&StatsRow::of(&task)).await.unwrap();
    // Its visibility timeout ends: the event is delivered again.
    ports
        .queue
        .release(QueueName::Completions, &delivery.receipt)
        .await
        .unwrap();

    rig.drain_completions().await;
    let task = ports.tasks.get(task_id).await.unwrap().unwrap();
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.callback, CallbackState::Delivered);
    assert_eq!(rig.stats_rows().await, 1, "one stats row");
    assert_eq!(
        *callback_ids.lock().unwrap(),
        vec![format!("msg_{task_id}")],
        "the callback, once"
    );
}

/// Records what the worker asks of the scale-in protection port.
struct RecordedProtection {
    calls: Mutex<Vec<bool>>,
    lasts: Duration,
}

#[async_trait::async_trait]
impl ScaleInProtection for RecordedProtection {
    async fn protect(&self) -> Result<(), ProtectionError> {
        self.calls.lock().unwrap().push(true);
        Ok(())
    }
    async fn unprotect(&self) -> Result<(), ProtectionError> {
        self.calls.lock().unwrap().push(false);
        Ok(())
    }
    fn lasts(&self) -> Duration {
        self.lasts
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_in_protection_is_asked_once_per_busy_spell_renewed_when_due_and_lifted_on_an_empty_queue(
) {
    let dir = tempfile::tempdir().unwrap();
    let all_settings =
        Settings::from_lookup(|name| (name == "MARKETPLACE_TOKEN").then(|| "t".to_owned()))
            .unwrap();
    let settings = Arc::new(all_settings.service.clone());
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
        .await
        .unwrap();
    let callbacks: Arc<dyn CallbackSender> =
        Arc::new(HttpCallbackSender::new(Duration::from_secs(5)).unwrap());
    let ports = store.ports(callbacks);
    let service = TaskService::new(ports.clone(), settings.clone());
    let tenant = Tenant::new("marketplace");
    let engine: Arc<MusicGenEngine> = Arc::new(
        MusicGenEngine::load(
            &tiny_model(),
            dir.path(),
            &sound_creator_audiocraft::hub::HubSettings::offline(),
            tch::Device::Cpu,
            tch::Kind::Float,
        )
        .unwrap(),
    );
    let mut config = WorkerConfig::new(
        ModelFamily::Music,
        1,
        all_settings.worker.max_attempts,
        Duration::from_secs(30),
    );
    config.poll_wait = Duration::from_millis(100);

    // Three jobs, one per batch, then an empty queue: protected once for the
    // whole busy spell, lifted once. `lasts` zero: renewed every batch.
    for (lasts, want) in [
        (Duration::from_secs(3600), vec![true, false]),
        (Duration::ZERO, vec![true, true, true, false]),
    ] {
        let body = json!({"type": "music", "prompt": "busy", "duration": 0.2, "samples": 3, "user_id": "u1"});
        let request = CallRequest::parse(&body, &settings.limits, &settings.callbacks).unwrap();
        service.submit(&tenant, request, None).await.unwrap();
        let protection = Arc::new(RecordedProtection {
            calls: Mutex::default(),
            lasts,
        });
        let worker = Worker::new(
            ports.clone(),
            settings.clone(),
            engine.clone(),
            config.clone(),
        )
        .with_scale_in_protection(protection.clone());
        for _ in 0..3 {
            assert_eq!(
                worker.try_execute_jobs().await.unwrap(),
                ExecutionOutcome::Handled(1)
            );
        }
        assert_eq!(
            *protection.calls.lock().unwrap(),
            vec![true; want.len() - 1]
        );
        assert_eq!(
            worker.try_execute_jobs().await.unwrap(),
            ExecutionOutcome::EmptyQueue
        );
        assert_eq!(
            worker.try_execute_jobs().await.unwrap(),
            ExecutionOutcome::EmptyQueue
        );
        assert_eq!(*protection.calls.lock().unwrap(), want, "lasts {lasts:?}");
    }
}
