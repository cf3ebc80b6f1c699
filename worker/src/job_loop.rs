//! The job loop of a GPU worker (seed: `AudioGenerationSerivce.run`): take
//! jobs of one model family off the queue, generate their audio with the
//! model each job names (a worker loads every model of its family), store
//! the file in the job's format and normalization, keep the stage result in
//! the result cache, and tell the completion step. A job with a melody gets
//! its upload decoded first; one that will not decode fails
//! `invalid_melody`. The same loop runs on the embedded queue and on SQS.
//!
//! At-least-once delivery is made safe here and in the task records: a job
//! whose stage already has a result is dropped, an output is written to a
//! key derived from the task and sample (so a rerun overwrites, never adds),
//! and the message is deleted only after its effects are recorded. While a
//! job runs, a heartbeat keeps its message invisible so no other worker
//! starts it; on shutdown, the job in hand stops at its next decoding step
//! and its message goes back to the queue. With a scale-in protection port
//! (ECS task scale-in protection), the worker holds protection from the
//! first job it receives until its queue is empty, so a scale-in never picks
//! a worker with a job in hand.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};
use sound_creator_core::audio::{
    AudioGenerator, Clip, GenerationError, MelodyInput, StepControl, StepObserver,
};
use sound_creator_core::completion::announce_final;
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::messages::{decode, encode, CompletionEvent, Job};
use sound_creator_core::metrics;
use sound_creator_core::ports::{
    clip_key, BackendError, Delivery, Ports, QueueName, ScaleInProtection,
};
use sound_creator_core::records::{self, StageStart};
use sound_creator_core::settings::ServiceSettings;
use sound_creator_core::task::{
    to_chrono, ClipOutput, ModelFamily, StageOutcome, StageSteps, TaskError, TaskStatus,
};
use tokio::sync::watch;

use crate::media::{load_melody, render, MelodyError};
use crate::protection::ProtectionHold;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub family: ModelFamily,
    /// The queue's visibility timeout; the heartbeat renews it at a third.
    pub visibility_timeout: Duration,
    /// Jobs generated together in one batched forward pass.
    pub max_batch: usize,
    /// A job received this many times without finishing fails its stage
    /// (the worker crashed on it, or it keeps failing).
    pub max_attempts: u32,
    /// Long-poll wait of one receive.
    pub poll_wait: Duration,
    /// How often progress is written and cancellation checked.
    pub progress_interval: Duration,
}

impl WorkerConfig {
    /// A worker for `family` with the deployment's batch size and attempt
    /// limit (`WORKER_MAX_BATCH`, `JOB_MAX_ATTEMPTS`) on a queue whose
    /// visibility timeout is `visibility_timeout`.
    pub fn new(
        family: ModelFamily,
        max_batch: usize,
        max_attempts: u32,
        visibility_timeout: Duration,
    ) -> Self {
        Self {
            family,
            visibility_timeout,
            max_batch: max_batch.max(1),
            max_attempts: max_attempts.max(1),
            // Long enough to cost nothing when idle, short enough that a
            // stopping worker is not held up by its poll.
            poll_wait: Duration::from_secs(10),
            progress_interval: Duration::from_millis(250),
        }
    }
}

/// What one turn of the loop did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionOutcome {
    /// Messages handled (finished, dropped as duplicates, failed or released).
    Handled(usize),
    EmptyQueue,
}

pub struct Worker {
    ports: Ports,
    settings: Arc<ServiceSettings>,
    /// The family's models, its default first; a job names one by its
    /// `ModelInfo::name`.
    generators: Vec<Arc<dyn AudioGenerator>>,
    config: WorkerConfig,
    /// Set on shutdown: the running batch stops at its next step.
    stopping: Arc<AtomicBool>,
    protection: ProtectionHold,
}

/// A received job that is to be generated.
struct Runnable {
    job: Job,
    delivery: Delivery,
    canceled: Arc<AtomicBool>,
    /// The model the job names.
    generator: Arc<dyn AudioGenerator>,
    /// The job's melody, decoded.
    melody: Option<MelodyInput>,
}

/// A batch the generator is done with, whose clips are still to be stored
/// and recorded.
struct Generated {
    batch: Vec<Runnable>,
    result: Result<Vec<Clip>, GenerationError>,
    inference_ms: u64,
}

impl Worker {
    pub fn new(
        ports: Ports,
        settings: Arc<ServiceSettings>,
        generator: Arc<dyn AudioGenerator>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            ports,
            settings,
            generators: vec![generator],
            config,
            stopping: Arc::new(AtomicBool::new(false)),
            protection: ProtectionHold::new(None),
        }
    }

    /// Serves these models of the family too, beside the default one given
    /// to [`Worker::new`] (`MUSIC_GEN_MODELS`, `AUDIO_GEN_MODELS`).
    pub fn with_more_models(mut self, more: Vec<Arc<dyn AudioGenerator>>) -> Self {
        self.generators.extend(more);
        self
    }

    /// The generator a job asks for: its `model`, or the default one.
    fn generator_for(&self, job: &Job) -> Result<Arc<dyn AudioGenerator>, TaskError> {
        let Some(wanted) = job.model.as_deref() else {
            return self.generators.first().cloned().ok_or_else(|| {
                TaskError::new(ErrorCode::GenerationRejected, "this worker has no model")
            });
        };
        self.generators
            .iter()
            .find(|g| g.info().name == wanted)
            .cloned()
            .ok_or_else(|| {
                let loaded: Vec<String> = self.generators.iter().map(|g| g.info().name).collect();
                TaskError::new(
                    ErrorCode::GenerationRejected,
                    format!(
                        "model {wanted:?} is not loaded by this {} worker (it serves {}); the API and the workers disagree on the deployed models",
                        self.config.family,
                        loaded.join(", ")
                    ),
                )
            })
    }

    /// Holds `protection` while jobs are in hand (see the module docs).
    pub fn with_scale_in_protection(mut self, protection: Arc<dyn ScaleInProtection>) -> Self {
        self.protection = ProtectionHold::new(Some(protection));
        self
    }

    fn queue(&self) -> QueueName {
        QueueName::Jobs(self.config.family)
    }

    /// Runs until `shutdown` resolves; the batch in hand finishes its current
    /// step and goes back to the queue.
    ///
    /// The turns overlap: while one batch's clips are uploaded and recorded
    /// (tens of milliseconds of S3, SQS and Redis calls in AWS mode), the
    /// next batch is already received and generating, so the device does not
    /// wait for the network.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) {
        let stopping = self.stopping.clone();
        let family = self.config.family;
        let models: Vec<String> = self.generators.iter().map(|g| g.info().name).collect();
        tracing::info!(%family, models = %models.join(", "), "worker started");
        let work = async {
            let mut backoff = Duration::from_millis(200);
            let mut finishing: Vec<Generated> = Vec::new();
            while !self.stopping.load(Ordering::SeqCst) {
                let previous = std::mem::take(&mut finishing);
                let (finished, turn) =
                    tokio::join!(self.finish_batches(previous), self.receive_and_generate());
                // A job not finished stays in the queue and comes back after
                // its visibility timeout.
                let mut failed = false;
                if let Err(e) = finished {
                    tracing::warn!(%family, error = %e, "could not record a generated batch; its unrecorded jobs will be delivered again");
                    failed = true;
                }
                match turn {
                    Ok((ExecutionOutcome::EmptyQueue, generated)) if generated.is_empty() => {
                        // Nothing in hand, and the previous batch is recorded.
                        self.protection.let_go().await;
                    }
                    Ok((_, generated)) => finishing = generated,
                    Err(e) => {
                        tracing::warn!(%family, error = %e, "worker could not reach a backend; retrying");
                        failed = true;
                    }
                }
                if failed {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                } else {
                    backoff = Duration::from_millis(200);
                }
            }
            if let Err(e) = self.finish_batches(finishing).await {
                tracing::warn!(%family, error = %e, "could not record the last batch; its jobs will be delivered again");
            }
        };
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => {}
            () = shutdown => {
                stopping.store(true, Ordering::SeqCst);
                // Let the batch in hand reach its next step and hand its
                // messages back; an idle long poll just ends.
                let _ = tokio::time::timeout(Duration::from_secs(30), work).await;
            }
        }
        tracing::info!(%family, "worker stopped");
    }

    /// One turn: receive up to a batch of jobs and carry each to an end
    /// (done, dropped, failed, or released for a retry).
    pub async fn try_execute_jobs(&self) -> Result<ExecutionOutcome, BackendError> {
        let (outcome, generated) = self.receive_and_generate().await?;
        self.finish_batches(generated).await?;
        if outcome == ExecutionOutcome::EmptyQueue {
            self.protection.let_go().await;
        }
        Ok(outcome)
    }

    /// Records batches in turn; the first failure stops (the unrecorded
    /// jobs are delivered again).
    async fn finish_batches(&self, batches: Vec<Generated>) -> Result<(), BackendError> {
        for generated in batches {
            self.finish_batch(generated).await?;
        }
        Ok(())
    }

    /// Receives up to a batch of jobs, settles those that need no generation
    /// and generates the rest: one batch per model named, one after another.
    async fn receive_and_generate(
        &self,
    ) -> Result<(ExecutionOutcome, Vec<Generated>), BackendError> {
        let deliveries = self
            .ports
            .queue
            .receive(self.queue(), self.config.max_batch, self.config.poll_wait)
            .await?;
        if deliveries.is_empty() {
            return Ok((ExecutionOutcome::EmptyQueue, Vec::new()));
        }
        self.protection.hold().await;
        let handled = deliveries.len();
        let mut by_model: Vec<Vec<Runnable>> = Vec::new();
        for delivery in deliveries {
            if let Some(job) = self.admit(delivery).await? {
                match by_model
                    .iter_mut()
                    .find(|group| Arc::ptr_eq(&group[0].generator, &job.generator))
                {
                    Some(group) => group.push(job),
                    None => by_model.push(vec![job]),
                }
            }
        }
        // One heartbeat for every message in hand: a model's batch may wait
        // for another's to generate first.
        let heartbeat = self.spawn_heartbeat(by_model.iter().flatten());
        let mut generated = Vec::with_capacity(by_model.len());
        for batch in by_model {
            generated.push(self.generate_batch(batch).await);
        }
        heartbeat.abort();
        Ok((ExecutionOutcome::Handled(handled), generated))
    }

    /// Decides what to do with one delivery before any generation.
    async fn admit(&self, delivery: Delivery) -> Result<Option<Runnable>, BackendError> {
        let queue = self.queue();
        let job: Job = match decode(&delivery.body) {
            Ok(job) => job,
            Err(e) => {
                // Poison: leave it to the queue's dead-letter redrive.
                tracing::error!(message_id = %delivery.message_id, receive_count = delivery.receive_count, error = %e, "dropping an unreadable job message to the dead-letter queue");
                return Ok(None);
            }
        };
        if job.family != self.config.family {
            tracing::error!(task_id = %job.task_id, "a {} job arrived on the {} queue; failing its stage", job.family, self.config.family);
            self.finish_stage(
                &job,
                &delivery,
                StageOutcome::Failed {
                    error: TaskError::new(
                        ErrorCode::WrongQueue,
                        "the job was sent to another model family's queue",
                    ),
                },
            )
            .await?;
            return Ok(None);
        }
        if delivery.receive_count > self.config.max_attempts {
            tracing::error!(task_id = %job.task_id, index = job.index, receive_count = delivery.receive_count, "job keeps failing; failing its stage");
            let error = TaskError::new(
                ErrorCode::JobFailedRepeatedly,
                format!("the job was started {} times without finishing (worker crash, out of memory or a persistent engine error)", delivery.receive_count - 1),
            );
            self.finish_stage(&job, &delivery, StageOutcome::Failed { error })
                .await?;
            return Ok(None);
        }
        match records::start_stage(
            self.ports.tasks.as_ref(),
            &job.task_id,
            job.index,
            Utc::now(),
            to_chrono(self.settings.result_ttl),
        )
        .await?
        {
            None => {
                // The task record may not be visible yet (it is written before
                // the jobs are sent, but stores can lag); look again later.
                tracing::warn!(task_id = %job.task_id, "job for an unknown task; will look again");
                self.ports
                    .queue
                    .extend_visibility(queue, &delivery.receipt, Duration::from_secs(5))
                    .await?;
                Ok(None)
            }
            Some((_, StageStart::AlreadyDone | StageStart::TaskFinal(_))) => {
                self.ports.queue.delete(queue, &delivery.receipt).await?;
                Ok(None)
            }
            Some((task, StageStart::JustExpired)) => {
                tracing::info!(task_id = %task.id, "task expired before it started");
                announce_final(&self.ports, &task.id).await?;
                self.ports.queue.delete(queue, &delivery.receipt).await?;
                Ok(None)
            }
            Some((task, StageStart::Run)) => {
                // Event streams in this process show `running` now, not on
                // their next poll.
                self.ports.finals.started(&task.id);
                self.prepare(job, delivery).await
            }
        }
    }

    /// Finds the job's model and decodes its melody; a job neither can
    /// serve fails its stage here, before any generation.
    async fn prepare(
        &self,
        job: Job,
        delivery: Delivery,
    ) -> Result<Option<Runnable>, BackendError> {
        let generator = match self.generator_for(&job) {
            Ok(generator) => generator,
            Err(error) => {
                tracing::error!(task_id = %job.task_id, error = %error.message, "job names a model this worker does not serve");
                self.finish_stage(&job, &delivery, StageOutcome::Failed { error })
                    .await?;
                return Ok(None);
            }
        };
        let melody = match &job.melody {
            None => None,
            Some(_) if !generator.info().melody => {
                let error = TaskError::new(
                    ErrorCode::GenerationRejected,
                    format!(
                        "model {} does not condition on a melody",
                        generator.info().name
                    ),
                );
                self.finish_stage(&job, &delivery, StageOutcome::Failed { error })
                    .await?;
                return Ok(None);
            }
            Some(melody) => {
                match load_melody(&self.ports, melody, self.settings.limits.max_upload_bytes).await
                {
                    Ok(input) => Some(input),
                    Err(MelodyError::Backend(e)) => return Err(e),
                    Err(MelodyError::Invalid(message)) => {
                        tracing::info!(task_id = %job.task_id, %message, "the melody upload cannot be used");
                        let error = TaskError::new(ErrorCode::InvalidMelody, message);
                        self.finish_stage(&job, &delivery, StageOutcome::Failed { error })
                            .await?;
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(Runnable {
            job,
            delivery,
            canceled: Arc::new(AtomicBool::new(false)),
            generator,
            melody,
        }))
    }

    /// Generates a batch of jobs that all name the same model.
    async fn generate_batch(&self, mut batch: Vec<Runnable>) -> Generated {
        for r in &batch {
            tracing::info!(task_id = %r.job.task_id, index = r.job.index, receive_count = r.delivery.receive_count, model = %r.generator.info().name, melody = r.melody.is_some(), "generating");
        }
        let requests: Vec<_> = batch
            .iter_mut()
            .map(|r| {
                let mut request = r.job.clip_request();
                request.melody = r.melody.take();
                request
            })
            .collect();
        let (progress_tx, progress_rx) = watch::channel((0usize, 0usize));
        // The steps the batch ran, read once it is over (for the metrics).
        let steps_run = progress_tx.subscribe();
        let all_canceled = Arc::new(AtomicBool::new(false));

        let monitor = self.spawn_progress_monitor(&batch, progress_rx, all_canceled.clone());

        let generator = batch[0].generator.clone();
        let mut observer = BatchObserver {
            progress: progress_tx,
            all_canceled,
            stopping: self.stopping.clone(),
        };
        let started = std::time::Instant::now();
        let result =
            tokio::task::spawn_blocking(move || generator.generate(&requests, &mut observer))
                .await
                .unwrap_or_else(|e| {
                    Err(GenerationError::Engine(format!(
                        "the generator panicked: {e}"
                    )))
                });
        let inference = started.elapsed();
        let inference_ms = inference.as_millis() as u64;
        monitor.abort();
        let (steps, _) = *steps_run.borrow();
        metrics::batch_generated(self.config.family, batch.len(), steps, inference);
        Generated {
            batch,
            result,
            inference_ms,
        }
    }

    /// Stores and records a generated batch's clips, or hands its jobs back.
    async fn finish_batch(&self, generated: Generated) -> Result<(), BackendError> {
        let queue = self.queue();
        let Generated {
            batch,
            result,
            inference_ms,
        } = generated;
        match result {
            Ok(clips) => {
                // The clips of a batch are stored and recorded side by side,
                // so the last job of a batch does not wait for the others'
                // writes. Each job's own steps keep their order.
                if clips.len() != batch.len() {
                    // A generator bug; the jobs go back rather than be
                    // matched with the wrong clips.
                    tracing::error!(jobs = batch.len(), clips = clips.len(), "the generator returned another number of clips than asked; the jobs go back to the queue");
                    for runnable in &batch {
                        self.ports
                            .queue
                            .release(queue, &runnable.delivery.receipt)
                            .await?;
                    }
                    return Ok(());
                }
                let finishing = batch.iter().zip(clips).map(|(runnable, clip)| async move {
                    if runnable.canceled.load(Ordering::SeqCst) {
                        return self
                            .ports
                            .queue
                            .delete(queue, &runnable.delivery.receipt)
                            .await;
                    }
                    let outcome = self.store_clip(&runnable.job, clip, inference_ms).await?;
                    self.finish_stage(&runnable.job, &runnable.delivery, outcome)
                        .await
                });
                for finished in join_all(finishing).await {
                    finished?;
                }
            }
            Err(GenerationError::Canceled) => {
                for runnable in &batch {
                    if runnable.canceled.load(Ordering::SeqCst) {
                        self.ports
                            .queue
                            .delete(queue, &runnable.delivery.receipt)
                            .await?;
                    } else {
                        // Stopped for shutdown: hand the job to another worker.
                        tracing::info!(task_id = %runnable.job.task_id, index = runnable.job.index, "stopped for shutdown; job handed back to the queue");
                        self.ports
                            .queue
                            .release(queue, &runnable.delivery.receipt)
                            .await?;
                    }
                }
            }
            Err(GenerationError::Rejected(message)) => {
                for runnable in &batch {
                    let error = TaskError::new(ErrorCode::GenerationRejected, message.clone());
                    self.finish_stage(
                        &runnable.job,
                        &runnable.delivery,
                        StageOutcome::Failed { error },
                    )
                    .await?;
                }
            }
            Err(GenerationError::Engine(message)) => {
                tracing::error!(error = %message, "generation failed; the jobs go back to the queue");
                for runnable in &batch {
                    if runnable.delivery.receive_count >= self.config.max_attempts {
                        let error = TaskError::new(ErrorCode::EngineError, message.clone());
                        self.finish_stage(
                            &runnable.job,
                            &runnable.delivery,
                            StageOutcome::Failed { error },
                        )
                        .await?;
                    } else {
                        self.ports
                            .queue
                            .release(queue, &runnable.delivery.receipt)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Levels and encodes the clip as the job asks, writes the file and
    /// describes it (the file's own size and sha256, the audio's real
    /// duration and channels). The key depends only on the task, sample and
    /// format, so a rerun of the same job overwrites its own output.
    async fn store_clip(
        &self,
        job: &Job,
        clip: Clip,
        inference_ms: u64,
    ) -> Result<StageOutcome, BackendError> {
        let rendered = match render(clip, job.format, job.normalization).await {
            Ok(rendered) => rendered,
            Err(message) => {
                tracing::error!(task_id = %job.task_id, %message, "the clip could not be encoded");
                return Ok(StageOutcome::Failed {
                    error: TaskError::new(
                        ErrorCode::EngineError,
                        format!("the clip could not be made into {}: {message}", job.format),
                    ),
                });
            }
        };
        let sha256 = Sha256::digest(&rendered.bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let key = clip_key(&job.task_id, job.index, rendered.extension);
        let output = ClipOutput {
            blob_key: key.clone(),
            content_type: rendered.content_type.to_owned(),
            duration: rendered.duration,
            sample_rate: rendered.sample_rate,
            channels: rendered.channels,
            bytes: rendered.bytes.len() as u64,
            sha256,
        };
        self.ports
            .blobs
            .put(&key, rendered.bytes, rendered.content_type)
            .await?;
        Ok(StageOutcome::Succeeded {
            clip: output,
            inference_ms,
        })
    }

    /// Records a stage's outcome: the temporary result in the cache, the
    /// event for the completion step, then (only then) the message deleted.
    async fn finish_stage(
        &self,
        job: &Job,
        delivery: &Delivery,
        outcome: StageOutcome,
    ) -> Result<(), BackendError> {
        if let Err(e) = self
            .ports
            .cache
            .put_stage(
                &job.task_id,
                job.index,
                &outcome,
                self.settings.stage_cache_ttl,
            )
            .await
        {
            tracing::warn!(task_id = %job.task_id, error = %e, "could not cache the stage result");
        }
        let event = CompletionEvent::StageFinished {
            task_id: job.task_id.clone(),
            index: job.index,
            outcome,
        };
        self.ports
            .queue
            .send(QueueName::Completions, &encode(&event), Duration::ZERO)
            .await?;
        self.ports
            .queue
            .delete(self.queue(), &delivery.receipt)
            .await
    }

    /// Renews the visibility of every message of the batch at a third of the
    /// timeout, so a long generation is not handed to a second worker.
    fn spawn_heartbeat<'a>(
        &self,
        jobs: impl Iterator<Item = &'a Runnable>,
    ) -> tokio::task::JoinHandle<()> {
        let queue = self.ports.queue.clone();
        let name = self.queue();
        let timeout = self.config.visibility_timeout;
        let receipts: Vec<String> = jobs.map(|r| r.delivery.receipt.clone()).collect();
        tokio::spawn(async move {
            let period = (timeout / 3).max(Duration::from_millis(100));
            loop {
                tokio::time::sleep(period).await;
                for receipt in &receipts {
                    if let Err(e) = queue.extend_visibility(name, receipt, timeout).await {
                        tracing::warn!(error = %e, "heartbeat could not extend a job's visibility");
                    }
                }
            }
        })
    }

    /// Writes progress and watches for cancellation while the batch runs.
    fn spawn_progress_monitor(
        &self,
        batch: &[Runnable],
        mut progress: watch::Receiver<(usize, usize)>,
        all_canceled: Arc<AtomicBool>,
    ) -> tokio::task::JoinHandle<()> {
        let tasks = self.ports.tasks.clone();
        let interval = self.config.progress_interval;
        let jobs: Vec<_> = batch
            .iter()
            .map(|r| (r.job.task_id.clone(), r.job.index, r.canceled.clone()))
            .collect();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let (done, total) = *progress.borrow_and_update();
                let fraction = if total == 0 {
                    0.0
                } else {
                    done as f32 / total as f32
                };
                for (task_id, index, canceled) in &jobs {
                    let steps = StageSteps {
                        done: u32::try_from(done).unwrap_or(u32::MAX),
                        total: u32::try_from(total).unwrap_or(u32::MAX),
                    };
                    match records::set_stage_progress(
                        tasks.as_ref(),
                        task_id,
                        *index,
                        fraction.min(0.99),
                        steps,
                    )
                    .await
                    {
                        Ok(Some(TaskStatus::Running)) => {}
                        Ok(_) => canceled.store(true, Ordering::SeqCst),
                        Err(e) => tracing::warn!(%task_id, error = %e, "could not record progress"),
                    }
                }
                if jobs.iter().all(|(_, _, c)| c.load(Ordering::SeqCst)) {
                    all_canceled.store(true, Ordering::SeqCst);
                }
            }
        })
    }
}

struct BatchObserver {
    progress: watch::Sender<(usize, usize)>,
    all_canceled: Arc<AtomicBool>,
    stopping: Arc<AtomicBool>,
}

impl StepObserver for BatchObserver {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl {
        self.progress.send_replace((done, total));
        if self.all_canceled.load(Ordering::SeqCst) || self.stopping.load(Ordering::SeqCst) {
            StepControl::Stop
        } else {
            StepControl::Continue
        }
    }
}
