//! What the worker does around generation, on the real embedded backends
//! (SQLite and files in a temp dir) with recording generators: each job
//! goes to the model it names; a melody upload is decoded to 32 kHz mono
//! and handed to the engine, and one that will not decode fails the task
//! `invalid_melody`; a melody job for a model without melody support fails
//! `generation_rejected`; and the stored file is in the job's format and
//! normalization, with the content type, extension, size, sha256, channels
//! and duration of what was stored.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sound_creator_core::audio::{
    AudioGenerator, Clip, ClipRequest, GenerationError, ModelInfo, StepObserver,
};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::models::{DeployedModel, DeployedModels};
use sound_creator_core::ports::{CallbackSender, Ports, QueueName};
use sound_creator_core::request::{CallRequest, UploadRequest};
use sound_creator_core::service::{Submitted, TaskService};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{ModelFamily, StageOutcome, Task, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_webhook::HttpCallbackSender;
use sound_creator_worker::{CompletionLoop, ExecutionOutcome, Worker, WorkerConfig};

/// A generator that records what it was asked and answers a 440 Hz tone at
/// its own level, so its clips tell which model made them.
struct Recorder {
    name: &'static str,
    melody: bool,
    channels: u16,
    level: f32,
    seen: Mutex<Vec<ClipRequest>>,
}

impl Recorder {
    fn new(name: &'static str, melody: bool, channels: u16, level: f32) -> Arc<Self> {
        Arc::new(Self {
            name,
            melody,
            channels,
            level,
            seen: Mutex::default(),
        })
    }

    fn seen(&self) -> Vec<ClipRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl AudioGenerator for Recorder {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            channels: self.channels,
            melody: self.melody,
            ..ModelInfo::cpu(self.name, 32_000, 50.0)
        }
    }

    fn generate(
        &self,
        batch: &[ClipRequest],
        _observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError> {
        self.seen.lock().unwrap().extend(batch.iter().cloned());
        Ok(batch
            .iter()
            .map(|r| {
                let frames = (r.duration * 32_000.0).round() as usize;
                let samples = (0..frames)
                    .flat_map(|i| {
                        let s = self.level
                            * (2.0 * std::f32::consts::PI * 440.0 * i as f32 / 32_000.0).sin();
                        std::iter::repeat_n(s, usize::from(self.channels))
                    })
                    .collect();
                Clip {
                    samples,
                    sample_rate: 32_000,
                    channels: self.channels,
                }
            })
            .collect())
    }
}

struct Harness {
    _dir: tempfile::TempDir,
    ports: Ports,
    settings: Arc<ServiceSettings>,
    service: TaskService,
    completion: CompletionLoop,
    tenant: Tenant,
}

impl Harness {
    /// The service knows `generators` as the music models (the first the
    /// default), as `serve` describes its loaded models.
    async fn new(generators: &[Arc<Recorder>]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let all = sound_creator_settings::from_pairs(&[("MARKETPLACE_TOKEN", "t")]).unwrap();
        let mut service_settings = all.service.clone();
        service_settings.models = DeployedModels::new(
            generators
                .iter()
                .enumerate()
                .map(|(i, g)| DeployedModel::loaded(ModelFamily::Music, i == 0, &g.info()))
                .collect(),
        );
        let settings = Arc::new(service_settings);
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap();
        let sender: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(Duration::from_secs(5)).unwrap());
        let ports = store.ports(sender);
        let mut completion = CompletionLoop::new(ports.clone(), settings.clone());
        completion.poll_wait = Duration::from_millis(50);
        Self {
            service: TaskService::new(ports.clone(), settings.clone()),
            completion,
            ports,
            settings,
            tenant: Tenant::new("marketplace"),
            _dir: dir,
        }
    }

    fn worker(&self, generators: &[Arc<Recorder>]) -> Worker {
        let mut config = WorkerConfig::new(ModelFamily::Music, 4, 2, Duration::from_secs(30));
        config.poll_wait = Duration::from_millis(50);
        let more = generators[1..]
            .iter()
            .map(|g| g.clone() as Arc<dyn AudioGenerator>)
            .collect();
        Worker::new(
            self.ports.clone(),
            self.settings.clone(),
            generators[0].clone(),
            config,
        )
        .with_more_models(more)
    }

    async fn submit(&self, body: Value) -> TaskId {
        let request =
            CallRequest::parse(&body, &self.settings.limits, &self.settings.callbacks).unwrap();
        let Submitted::Created(doc) = self
            .service
            .submit(&self.tenant, request, None)
            .await
            .unwrap()
        else {
            panic!("a new task")
        };
        TaskId::parse(&doc.task_id).unwrap()
    }

    /// An upload whose bytes are `bytes` (stored as the PUT would).
    async fn upload(&self, content_type: &str, bytes: Vec<u8>) -> String {
        let request = UploadRequest::parse(
            &json!({"content_type": content_type, "bytes": bytes.len()}),
            &self.settings.limits,
        )
        .unwrap();
        let doc = self
            .service
            .create_upload(&self.tenant, request)
            .await
            .unwrap();
        let key = format!("uploads/{}", doc.upload_id);
        self.ports
            .blobs
            .put(&key, bytes, content_type)
            .await
            .unwrap();
        doc.upload_id
    }

    async fn run_all(&self, worker: &Worker) {
        while worker.try_execute_jobs().await.unwrap() != ExecutionOutcome::EmptyQueue {}
        while self.completion.try_execute_events().await.unwrap() != ExecutionOutcome::EmptyQueue {}
    }

    async fn task(&self, id: &TaskId) -> Task {
        self.ports.tasks.get(id).await.unwrap().unwrap()
    }
}

fn music(extra: Value) -> Value {
    let mut body = json!({"type": "music", "prompt": "p", "duration": 0.5, "user_id": "u1"});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/uploads")
            .join(name),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_job_goes_to_the_model_it_names_and_none_means_the_default() {
    let small = Recorder::new("small", false, 1, 0.1);
    let other = Recorder::new("other", false, 1, 0.2);
    let h = Harness::new(&[small.clone(), other.clone()]).await;
    let default = h.submit(music(json!({}))).await;
    let named = h.submit(music(json!({"model": "other"}))).await;
    assert_eq!(
        h.task(&default).await.request.model.as_deref(),
        Some("small"),
        "the stored task says which model serves it"
    );
    h.run_all(&h.worker(&[small.clone(), other.clone()])).await;
    assert_eq!((small.seen().len(), other.seen().len()), (1, 1));
    assert_eq!(h.task(&default).await.status, TaskStatus::Succeeded);
    assert_eq!(h.task(&named).await.status, TaskStatus::Succeeded);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_for_a_model_this_worker_does_not_load_fails_generation_rejected() {
    let small = Recorder::new("small", false, 1, 0.1);
    let other = Recorder::new("other", false, 1, 0.2);
    // The API knows "other"; this worker was started without it.
    let h = Harness::new(&[small.clone(), other]).await;
    let id = h.submit(music(json!({"model": "other"}))).await;
    h.run_all(&h.worker(std::slice::from_ref(&small))).await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed);
    let error = task.error.unwrap();
    assert_eq!(error.code, ErrorCode::GenerationRejected);
    assert!(error.message.contains("\"other\""), "{}", error.message);
    assert!(small.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_melody_upload_reaches_the_engine_as_32_khz_mono() {
    let melody = Recorder::new("melody", true, 1, 0.1);
    let h = Harness::new(std::slice::from_ref(&melody)).await;
    // 0.5 s of 44.1 kHz stereo FLAC.
    let upload = h.upload("audio/flac", fixture("a4-44k-stereo.flac")).await;
    let with = h
        .submit(music(
            json!({"melody": {"upload_id": upload}, "samples": 2}),
        ))
        .await;
    let without = h.submit(music(json!({}))).await;
    h.run_all(&h.worker(std::slice::from_ref(&melody))).await;
    assert_eq!(h.task(&with).await.status, TaskStatus::Succeeded);
    assert_eq!(h.task(&without).await.status, TaskStatus::Succeeded);

    let seen = melody.seen();
    assert_eq!(seen.len(), 3);
    let melodies: Vec<_> = seen.iter().filter_map(|r| r.melody.as_ref()).collect();
    assert_eq!(
        melodies.len(),
        2,
        "both samples of the task, not the other task"
    );
    for input in melodies {
        assert_eq!(input.sample_rate, 32_000);
        assert!(
            input.samples.len().abs_diff(16_000) <= 1,
            "0.5 s at 32 kHz: {}",
            input.samples.len()
        );
        let peak = input.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!((0.3..0.5).contains(&peak), "the A4 tone's level: {peak}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_melody_that_will_not_decode_fails_the_task_invalid_melody() {
    let melody = Recorder::new("melody", true, 1, 0.1);
    let h = Harness::new(std::slice::from_ref(&melody)).await;
    let upload = h
        .upload(
            "audio/mpeg",
            b"this is not an mp3 file, whatever it says".to_vec(),
        )
        .await;
    let id = h
        .submit(music(json!({"melody": {"upload_id": upload}})))
        .await;
    h.run_all(&h.worker(std::slice::from_ref(&melody))).await;
    let task = h.task(&id).await;
    assert_eq!(task.status, TaskStatus::Failed, "{task:?}");
    let error = task.error.unwrap();
    assert_eq!(error.code, ErrorCode::InvalidMelody);
    assert!(error.message.contains(&upload), "{}", error.message);
    assert!(
        error.message.contains("could not be decoded"),
        "{}",
        error.message
    );
    assert!(melody.seen().is_empty(), "nothing was generated");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_melody_job_for_a_model_without_melody_fails_generation_rejected() {
    // The API let it through (it could not know the model's capabilities);
    // the worker, which has loaded the model, refuses it.
    let plain = Recorder::new("local-dir", false, 1, 0.1);
    let h = Harness::new(std::slice::from_ref(&plain)).await;
    let mut settings = (*h.settings).clone();
    settings.models = DeployedModels::new(vec![DeployedModel::configured(
        ModelFamily::Music,
        "local-dir",
        true,
        "",
        "",
    )]);
    let service = TaskService::new(h.ports.clone(), Arc::new(settings.clone()));
    let upload = h.upload("audio/flac", fixture("a4-44k-stereo.flac")).await;
    let body = music(json!({"melody": {"upload_id": upload}}));
    let request = CallRequest::parse(&body, &settings.limits, &settings.callbacks).unwrap();
    let Submitted::Created(doc) = service.submit(&h.tenant, request, None).await.unwrap() else {
        panic!("created")
    };
    let id = TaskId::parse(&doc.task_id).unwrap();
    h.run_all(&h.worker(std::slice::from_ref(&plain))).await;
    let task = h.task(&id).await;
    assert_eq!(
        task.error.map(|e| e.code),
        Some(ErrorCode::GenerationRejected)
    );
    assert!(plain.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stored_file_is_in_the_jobs_format_and_described_as_stored() {
    let stereo = Recorder::new("stereo", false, 2, 0.5);
    let h = Harness::new(std::slice::from_ref(&stereo)).await;
    let mut ids = Vec::new();
    for (format, normalization) in [
        ("wav", "none"),
        ("flac", "peak"),
        ("mp3", "loudness"),
        ("ogg", "clip"),
    ] {
        let body = music(json!({"format": format, "normalization": normalization}));
        ids.push((format, h.submit(body).await));
    }
    h.run_all(&h.worker(std::slice::from_ref(&stereo))).await;
    for (format, id) in ids {
        let task = h.task(&id).await;
        assert_eq!(task.status, TaskStatus::Succeeded, "{format}: {task:?}");
        let Some(StageOutcome::Succeeded { clip, .. }) = &task.stages[0] else {
            panic!("{format}: a clip")
        };
        assert!(
            clip.blob_key.ends_with(&format!("clip-0.{format}")),
            "{}",
            clip.blob_key
        );
        let stored = h.ports.blobs.get(&clip.blob_key).await.unwrap().unwrap();
        assert_eq!(clip.bytes, stored.len() as u64, "{format}");
        let sha: String = Sha256::digest(&stored)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(clip.sha256, sha, "{format}");
        assert_eq!((clip.channels, clip.sample_rate), (2, 32_000), "{format}");
        assert!(
            (clip.duration - 0.5).abs() < 1e-9,
            "{format}: {}",
            clip.duration
        );
        let want = match format {
            "wav" => "audio/wav",
            "flac" => "audio/flac",
            "mp3" => "audio/mpeg",
            _ => "audio/ogg",
        };
        assert_eq!(clip.content_type, want);
    }
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
