//! Callbacks against real HTTP receivers on the embedded backends: a
//! tenant whose receiver hangs delays only its own callbacks (never another
//! tenant's tasks becoming final) and holds no more than its lanes; and a
//! password in a callback URL never reaches a log line.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::post;
use serde_json::json;
use sound_creator_core::audio::{
    AudioGenerator, Clip, ClipRequest, GenerationError, ModelInfo, StepObserver,
};
use sound_creator_core::ports::{CallbackSender, Ports};
use sound_creator_core::request::CallRequest;
use sound_creator_core::service::{Submitted, TaskService};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_webhook::HttpCallbackSender;
use sound_creator_worker::completion_loop::CallbackLanes;
use sound_creator_worker::{CompletionLoop, ExecutionOutcome, Worker, WorkerConfig};
use tokio::sync::Notify;

/// Makes a short silent clip at once.
struct InstantGenerator;

impl AudioGenerator for InstantGenerator {
    fn info(&self) -> ModelInfo {
        ModelInfo::cpu("instant", 32_000, 50.0)
    }

    fn generate(
        &self,
        batch: &[ClipRequest],
        _observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError> {
        Ok(batch
            .iter()
            .map(|r| Clip::silence(r.duration, 32_000))
            .collect())
    }
}

/// A receiver that holds every request until released, counting how many
/// it holds at once.
struct HangingReceiver {
    url: String,
    release: Arc<Notify>,
    released: Arc<std::sync::atomic::AtomicBool>,
    holding: Arc<AtomicUsize>,
    most_held: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl HangingReceiver {
    async fn start() -> HangingReceiver {
        let release = Arc::new(Notify::new());
        let released = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let holding = Arc::new(AtomicUsize::new(0));
        let most_held = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let state = (
            release.clone(),
            released.clone(),
            holding.clone(),
            most_held.clone(),
            answered.clone(),
        );
        let router = axum::Router::new().route(
            "/slow",
            post(move || {
                let (release, released, holding, most_held, answered) = state.clone();
                async move {
                    let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                    most_held.fetch_max(now, Ordering::SeqCst);
                    while !released.load(Ordering::SeqCst) {
                        let _ = tokio::time::timeout(Duration::from_millis(50), release.notified())
                            .await;
                    }
                    holding.fetch_sub(1, Ordering::SeqCst);
                    answered.fetch_add(1, Ordering::SeqCst);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/slow", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        HangingReceiver {
            url,
            release,
            released,
            holding,
            most_held,
            answered,
        }
    }

    fn let_go(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.release.notify_waiters();
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    ports: Ports,
    settings: Arc<ServiceSettings>,
    service: TaskService,
}

impl Harness {
    async fn new(callback_timeout_ms: &str) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let all = sound_creator_settings::from_pairs(&[
            ("MARKETPLACE_TOKEN", "t"),
            ("CALLBACK_ALLOWED_HOSTS", "127.0.0.1"),
            ("CALLBACK_RETRY_BASE_MS", "50"),
            ("CALLBACK_TIMEOUT_MS", callback_timeout_ms),
            ("MUSIC_GEN_MODEL", "instant"),
        ])
        .unwrap();
        let options = EmbeddedOptions {
            visibility_timeout: Duration::from_secs(30),
            max_receives: all.worker.max_receives(),
            poll_interval: Duration::from_millis(20),
            ..EmbeddedOptions::default()
        };
        let store = EmbeddedStore::open(dir.path(), options).await.unwrap();
        let sender: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(all.service.callbacks.timeout).unwrap());
        let ports = store.ports(sender);
        let settings = Arc::new(all.service.clone());
        Harness {
            service: TaskService::new(ports.clone(), settings.clone()),
            ports,
            settings,
            _dir: dir,
        }
    }

    async fn submit(&self, tenant: &str, callback_url: Option<&str>) -> TaskId {
        let mut body = json!({"type": "music", "prompt": "p", "duration": 0.1, "user_id": "u1"});
        if let Some(url) = callback_url {
            body["callback_url"] = json!(url);
        }
        let request =
            CallRequest::parse(&body, &self.settings.limits, &self.settings.callbacks).unwrap();
        let Submitted::Created(doc) = self
            .service
            .submit(&Tenant::new(tenant), request, None)
            .await
            .unwrap()
        else {
            panic!("a new task")
        };
        TaskId::parse(&doc.task_id).unwrap()
    }

    fn worker(&self) -> Worker {
        let mut config = WorkerConfig::new(ModelFamily::Music, 1, 3, Duration::from_secs(30));
        config.poll_wait = Duration::from_millis(50);
        Worker::new(
            self.ports.clone(),
            self.settings.clone(),
            Arc::new(InstantGenerator),
            config,
        )
    }

    fn completion(&self, lanes: CallbackLanes) -> CompletionLoop {
        let mut completion = CompletionLoop::new(self.ports.clone(), self.settings.clone());
        completion.poll_wait = Duration::from_millis(50);
        completion.callbacks = Arc::new(lanes);
        completion
    }

    async fn status(&self, id: &TaskId) -> TaskStatus {
        self.ports.tasks.get(id).await.unwrap().unwrap().status
    }
}

async fn eventually(what: &str, within: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_receiver_delays_only_its_own_tenant_and_holds_no_more_than_its_lanes() {
    let h = Harness::new("60000").await;
    let receiver = HangingReceiver::start().await;
    let mut lanes = CallbackLanes::new(8, 2);
    lanes.retry_in = Duration::from_millis(100);
    let stop = stop_signal();
    let worker = h.worker();
    let completion = h.completion(lanes);
    let (worker_stop, completion_stop) = (stop.clone(), stop.clone());
    let worker_run = tokio::spawn(async move { worker.run(worker_stop.notified_owned()).await });
    let completion_run =
        tokio::spawn(async move { completion.run(completion_stop.notified_owned()).await });

    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(h.submit("slow-tenant", Some(&receiver.url)).await);
    }
    eventually(
        "the slow tenant's receiver holding two callbacks",
        Duration::from_secs(60),
        async || receiver.holding.load(Ordering::SeqCst) == 2,
    )
    .await;

    // While the receiver holds them, another tenant's tasks finish.
    let mut quick = Vec::new();
    for _ in 0..3 {
        quick.push(h.submit("quick-tenant", None).await);
    }
    for id in &quick {
        eventually(
            "another tenant's task succeeding",
            Duration::from_secs(60),
            async || h.status(id).await == TaskStatus::Succeeded,
        )
        .await;
    }
    assert_eq!(receiver.answered.load(Ordering::SeqCst), 0, "still held");
    assert_eq!(
        receiver.most_held.load(Ordering::SeqCst),
        2,
        "a tenant holds no more than its two lanes"
    );

    receiver.let_go();
    eventually(
        "all four slow callbacks delivered",
        Duration::from_secs(60),
        async || receiver.answered.load(Ordering::SeqCst) == 4,
    )
    .await;
    for id in &slow {
        assert_eq!(h.status(id).await, TaskStatus::Succeeded);
    }
    stop.notify_waiters();
    let _ = worker_run.await;
    let _ = completion_run.await;
}

/// A stop signal the loops take as a future (`Notify`, no extra crates).
fn stop_signal() -> Arc<Notify> {
    Arc::new(Notify::new())
}

/// Log lines written by the test's subscriber.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_password_in_a_callback_url_never_reaches_a_log_line() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new("2000").await;
    // One receiver that fails (a retry warning carries the URL), one port
    // with nothing listening (a connection error), then the last attempt.
    let failing = axum::Router::new().route("/hook", post(|| async { StatusCode::BAD_GATEWAY }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, failing).await.unwrap() });
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let answered_500 = h
        .submit(
            "marketplace",
            Some(&format!(
                "http://user:s3cretpw@127.0.0.1:{port}/hook?token=t0ken&order=7"
            )),
        )
        .await;
    let refused = h
        .submit(
            "marketplace",
            Some(&format!("http://user:s3cretpw@127.0.0.1:{closed}/hook")),
        )
        .await;
    let worker = h.worker();
    let completion = h.completion(CallbackLanes::default());
    for _ in 0..200 {
        let jobs = worker.try_execute_jobs().await.unwrap();
        let events = completion.try_execute_events().await.unwrap();
        let settled =
            h.status(&answered_500).await.is_final() && h.status(&refused).await.is_final();
        if settled && jobs == ExecutionOutcome::EmptyQueue && events == ExecutionOutcome::EmptyQueue
        {
            break;
        }
    }
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("callback failed"),
        "the failures were logged: {text}"
    );
    assert!(
        text.contains("***@127.0.0.1"),
        "the URL is still shown: {text}"
    );
    assert!(
        text.contains("order=7"),
        "the harmless query is kept: {text}"
    );
    assert!(!text.contains("s3cretpw"), "a password was logged: {text}");
    assert!(!text.contains("t0ken"), "a token was logged: {text}");
}
