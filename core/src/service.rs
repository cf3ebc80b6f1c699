//! The task service: what the API does for each route (seed:
//! `AudioCraftAppAPI.call` / `.result`, `BaseAppAPI.stats`), over the ports.
//!
//! It knows nothing of HTTP: it takes checked values and returns documents or
//! a [`ServiceError`] that the API maps to a status code in one place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{Duration as ChronoDuration, Utc};

use crate::admission::QueueAdmission;
use crate::error_code::ErrorCode;
use crate::messages::{encode, Job};
use crate::models::DeployedModel;
use crate::ports::{
    upload_key, Backend, BackendError, Inserted, Ports, QueueName, StatsQuery, UploadInserted,
};
use crate::records::{self, CancelOutcome};
use crate::request::{CallRequest, MelodyRequest, RequestError, StatsRequest, UploadRequest};
use crate::settings::ServiceSettings;
use crate::task::{to_chrono, CallbackState, ModelFamily, Task, TaskId, TaskStatus, Tenant};
use crate::upload::{Upload, UploadId};
use crate::view::{
    document, FamilyHealthDocument, HealthDocument, ModelsDocument, QueueDepthDocument,
    StatsDocument, SubmitDocument, TaskDocument, UploadDocument,
};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("task {0} not found")]
    NotFound(String),
    #[error("the result of task {0} has expired")]
    ResultExpired(String),
    #[error("task {id} is already {status}")]
    AlreadyFinal { id: String, status: TaskStatus },
    #[error("this Idempotency-Key was already used with a different request body")]
    IdempotencyKeyReused,
    #[error("{0} generation is not deployed here")]
    NotDeployed(ModelFamily),
    #[error("the {0} queue is full; try again later")]
    QueueFull(ModelFamily),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A successful submit: new (202) or the replay of an idempotent one (200).
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    Created(SubmitDocument),
    Replayed(SubmitDocument),
}

impl ServiceError {
    /// The contract's code for this error; the HTTP status and Retry-After
    /// follow from it.
    pub fn code(&self) -> ErrorCode {
        match self {
            ServiceError::Request(e) => e.code,
            ServiceError::NotFound(_) => ErrorCode::TaskNotFound,
            ServiceError::ResultExpired(_) => ErrorCode::ExpiredResult,
            ServiceError::AlreadyFinal { .. } => ErrorCode::TaskAlreadyFinal,
            ServiceError::IdempotencyKeyReused => ErrorCode::IdempotencyKeyReused,
            ServiceError::NotDeployed(_) => ErrorCode::ModelNotDeployed,
            ServiceError::QueueFull(_) => ErrorCode::QueueFull,
            ServiceError::Backend(BackendError::Unavailable { .. }) => {
                ErrorCode::BackendUnavailable
            }
            ServiceError::Backend(BackendError::Corrupt { .. }) => ErrorCode::InternalError,
        }
    }
}

pub struct TaskService {
    pub ports: Ports,
    pub settings: Arc<ServiceSettings>,
    admission: QueueAdmission,
    /// `true` once the process is stopping: `/v1/generate` waiters answer
    /// at once instead of holding the shutdown up.
    stopping: tokio::sync::watch::Sender<bool>,
}

impl TaskService {
    pub fn new(ports: Ports, settings: Arc<ServiceSettings>) -> Self {
        Self {
            ports,
            settings,
            admission: QueueAdmission::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        }
    }

    /// The process is stopping (SIGTERM): every `/v1/generate` waiter, now
    /// and later, gets its task's current state (a `202` to keep polling)
    /// at once, so the server can drain within the orchestrator's grace
    /// period. The tasks themselves are durable and carry on elsewhere.
    pub fn stop_waiting(&self) {
        self.stopping.send_replace(true);
    }

    fn result_ttl(&self) -> ChronoDuration {
        to_chrono(self.settings.result_ttl)
    }

    /// Records a checked request as a task, then queues one job per sample.
    ///
    /// Before anything is written, the request is checked against what the
    /// deployment serves: the `model` (resolved to the family's default when
    /// absent, and stored so), the model's own duration limit, and the
    /// `melody` (a model that conditions on one, an upload of this client
    /// key that was PUT).
    pub async fn submit(
        &self,
        tenant: &Tenant,
        mut request: CallRequest,
        idempotency_key: Option<&str>,
    ) -> Result<Submitted, ServiceError> {
        let family = request.family;
        if !self.settings.deployed.contains(&family) {
            return Err(ServiceError::NotDeployed(family));
        }
        // The client's request as sent: a replay that names the default
        // model matches one that named none only if both resolve alike,
        // which they do; the resolved id is stored, not fingerprinted.
        let fingerprint = request.fingerprint();
        let model = self.resolve_model(&request)?;
        if let Some(model) = model {
            self.check_duration(&request, model)?;
        }
        // The upload first: a reference that is not the client's (404) or
        // not there (422) is wrong whatever the model.
        if let Some(melody) = &request.melody {
            self.check_melody_upload(tenant, melody).await?;
            if let Some(model) = model {
                self.check_melody_model(model)?;
            }
        }
        if let Some(model) = model {
            request.model = Some(model.id.clone());
        }
        // Held until the jobs are queued (or the submit fails): see
        // `admission` for why the cap needs it.
        let _reservation = match self.settings.max_queued_jobs {
            Some(max) => Some(
                self.admission
                    .reserve(
                        self.ports.queue.as_ref(),
                        family,
                        u64::from(request.samples),
                        max,
                    )
                    .await?
                    .ok_or(ServiceError::QueueFull(family))?,
            ),
            None => None,
        };

        let now = Utc::now();
        let callback_url = request
            .callback_url
            .clone()
            .or_else(|| self.settings.callbacks.marketplace_callback.clone());
        let samples = usize::from(request.samples);
        let task = Task {
            id: TaskId::generate(),
            tenant: tenant.clone(),
            status: TaskStatus::Queued,
            progress: 0.0,
            stages: vec![None; samples],
            stage_progress: vec![0.0; samples],
            stage_steps: Vec::new(),
            error: None,
            created_at: now,
            started_at: None,
            completed_at: None,
            queue_deadline: request
                .ttl_seconds
                .map(|s| now + ChronoDuration::seconds(s as i64)),
            retain_until: None,
            idempotency_key: idempotency_key.map(str::to_owned),
            request_fingerprint: fingerprint,
            callback: if callback_url.is_some() {
                CallbackState::Pending
            } else {
                CallbackState::NotRequested
            },
            callback_url,
            jobs_enqueued: false,
            version: 1,
            request,
        };

        match self.ports.tasks.insert(&task).await? {
            Inserted::Created => {
                crate::metrics::task_submitted(family);
                self.enqueue_jobs(&task).await?;
                Ok(Submitted::Created(SubmitDocument::of(&task)))
            }
            Inserted::Existing(existing) => {
                if existing.request_fingerprint != task.request_fingerprint {
                    return Err(ServiceError::IdempotencyKeyReused);
                }
                // An earlier submit stored the task but could not queue its
                // jobs (the queue was down): finish that now.
                if !existing.jobs_enqueued && existing.status == TaskStatus::Queued {
                    self.enqueue_jobs(&existing).await?;
                }
                Ok(Submitted::Replayed(SubmitDocument::of(&existing)))
            }
        }
    }

    /// The deployed model a request names, or its family's default. `None`
    /// when this process knows no model of the family at all (then the
    /// worker's default serves it).
    fn resolve_model(&self, request: &CallRequest) -> Result<Option<&DeployedModel>, ServiceError> {
        let models = &self.settings.models;
        let family = request.family;
        let Some(requested) = request.model.as_deref() else {
            return Ok(models.default_for(family));
        };
        if let Some(model) = models.find(family, requested) {
            return Ok(Some(model));
        }
        let deployed = models.ids(family);
        Err(RequestError::new(
            ErrorCode::ModelNotDeployed,
            Some("model"),
            if deployed.is_empty() {
                format!("model {requested:?} is not deployed here")
            } else {
                format!(
                    "model {requested:?} is not a {family} model deployed here; deployed: {}",
                    deployed.join(", ")
                )
            },
        )
        .into())
    }

    /// A model with a limit of its own below `MAX_DURATION` (the request's
    /// field already checked that one).
    fn check_duration(
        &self,
        request: &CallRequest,
        model: &DeployedModel,
    ) -> Result<(), ServiceError> {
        let max = model.max_duration(&self.settings.limits);
        if request.duration > max {
            return Err(RequestError::new(
                ErrorCode::DurationOutOfRange,
                Some("duration"),
                format!(
                    "duration must be at most {max} seconds for model {}, not {}",
                    model.id, request.duration
                ),
            )
            .into());
        }
        Ok(())
    }

    /// Where the model's capabilities are known here, one without melody
    /// conditioning is refused now; where they are not, the worker decides.
    fn check_melody_model(&self, model: &DeployedModel) -> Result<(), ServiceError> {
        if model.melody() != Some(false) {
            return Ok(());
        }
        let able: Vec<&str> = self
            .settings
            .models
            .all()
            .iter()
            .filter(|m| m.family == model.family && m.melody() == Some(true))
            .map(|m| m.id.as_str())
            .collect();
        let hint = if able.is_empty() {
            "no model deployed here does".to_owned()
        } else {
            format!("name one that does with `model`: {}", able.join(", "))
        };
        Err(RequestError::new(
            ErrorCode::MelodyNotSupported,
            Some("melody"),
            format!("model {} does not condition on a melody; {hint}", model.id),
        )
        .into())
    }

    /// The upload must be this client key's, within its retention, and PUT.
    async fn check_melody_upload(
        &self,
        tenant: &Tenant,
        melody: &MelodyRequest,
    ) -> Result<(), ServiceError> {
        let field = "melody.upload_id";
        let id = &melody.upload_id;
        let upload = self
            .ports
            .uploads
            .get(id)
            .await?
            .filter(|u| u.usable_by(tenant, Utc::now()))
            .ok_or_else(|| {
                RequestError::new(
                    ErrorCode::UploadNotFound,
                    Some(field),
                    format!("no upload {id} for this client key"),
                )
            })?;
        if self.ports.blobs.size(&upload.blob_key).await?.is_none() {
            return Err(RequestError::new(
                ErrorCode::UploadMissing,
                Some(field),
                format!(
                    "upload {id} has no file yet: PUT its bytes to the url POST /v1/uploads gave, then submit"
                ),
            )
            .into());
        }
        Ok(())
    }

    /// `POST /v1/uploads`: records an upload for `tenant` and signs the PUT
    /// that carries its bytes (valid for `URL_TTL`).
    pub async fn create_upload(
        &self,
        tenant: &Tenant,
        request: UploadRequest,
    ) -> Result<UploadDocument, ServiceError> {
        let id = UploadId::generate();
        let blob_key = upload_key(&id);
        let content_type = request.format.content_type();
        let link = self
            .ports
            .blobs
            .presign_put(
                &blob_key,
                content_type,
                request.bytes,
                self.settings.url_ttl,
            )
            .await?;
        let now = Utc::now();
        let upload = Upload {
            id: id.clone(),
            tenant: tenant.clone(),
            format: request.format,
            bytes: request.bytes,
            blob_key,
            created_at: now,
            put_expires_at: link.expires_at,
            retain_until: now.checked_add_signed(self.result_ttl()).unwrap_or(now),
        };
        if self.ports.uploads.insert(&upload).await? == UploadInserted::Exists {
            // A UUIDv7 collision is not a thing; a store that says so is
            // broken, and the link must not be handed out twice.
            return Err(BackendError::corrupt(
                Backend::Tasks,
                format!("upload {id} already exists"),
            )
            .into());
        }
        Ok(UploadDocument {
            upload_id: id.to_string(),
            url: link.url,
            method: "PUT".into(),
            headers: link.headers,
            expires_at: link.expires_at,
        })
    }

    /// `GET /v1/models`.
    pub fn models(&self) -> ModelsDocument {
        self.settings
            .models
            .document(&self.settings.limits, &self.settings.deployed)
    }

    async fn enqueue_jobs(&self, task: &Task) -> Result<(), ServiceError> {
        for job in Job::for_task(task) {
            self.ports
                .queue
                .send(QueueName::Jobs(job.family), &encode(&job), Duration::ZERO)
                .await?;
        }
        records::mark_jobs_enqueued(self.ports.tasks.as_ref(), task).await?;
        Ok(())
    }

    /// The task as its owner may see it. Another tenant's task is "not found".
    /// With `cached` (and `Ports::cache_final_results`), a final result in the
    /// result cache saves the task-store read; a cache miss or a cache outage
    /// falls back to the store.
    pub(crate) async fn owned_task(
        &self,
        tenant: &Tenant,
        raw_id: &str,
        cached: bool,
    ) -> Result<Task, ServiceError> {
        let not_found = || ServiceError::NotFound(raw_id.chars().take(64).collect());
        let id = TaskId::parse(raw_id).ok_or_else(not_found)?;
        let from_cache = if cached && self.ports.cache_final_results {
            match self.ports.cache.get_final(&id).await {
                Ok(hit) => hit.filter(|t| t.status.is_final()),
                Err(e) => {
                    tracing::warn!(error = %e, "result cache read failed; reading the task store");
                    None
                }
            }
        } else {
            None
        };
        let task = match from_cache {
            Some(task) => task,
            None => self.ports.tasks.get(&id).await?.ok_or_else(not_found)?,
        };
        if &task.tenant != tenant {
            return Err(not_found());
        }
        if task.retain_until.is_some_and(|until| until < Utc::now()) {
            return Err(ServiceError::ResultExpired(id.to_string()));
        }
        Ok(task)
    }

    /// `GET /v1/result/{id}`: the result document with fresh download URLs.
    pub async fn result(
        &self,
        tenant: &Tenant,
        raw_id: &str,
    ) -> Result<TaskDocument, ServiceError> {
        let mut task = self.owned_task(tenant, raw_id, true).await?;
        if task.status == TaskStatus::Queued && task.queue_deadline.is_some_and(|d| d < Utc::now())
        {
            // Nobody started it in time; say so now rather than when a
            // worker gets to its job.
            if let Some((expired, true)) = records::expire_if_due(
                self.ports.tasks.as_ref(),
                &task.id,
                Utc::now(),
                self.result_ttl(),
            )
            .await?
            {
                task = expired;
                self.announce_final(&task.id).await?;
            }
        }
        document(&self.ports, self.settings.url_ttl, &task)
            .await
            .map_err(Into::into)
    }

    /// `POST /v1/cancel/{id}`.
    pub async fn cancel(
        &self,
        tenant: &Tenant,
        raw_id: &str,
    ) -> Result<TaskDocument, ServiceError> {
        let task = self.owned_task(tenant, raw_id, false).await?;
        match records::cancel(
            self.ports.tasks.as_ref(),
            &task.id,
            Utc::now(),
            self.result_ttl(),
        )
        .await?
        {
            None => Err(ServiceError::NotFound(task.id.to_string())),
            Some((_, CancelOutcome::AlreadyFinal(status))) => Err(ServiceError::AlreadyFinal {
                id: task.id.to_string(),
                status,
            }),
            Some((canceled, CancelOutcome::Canceled)) => {
                self.announce_final(&canceled.id).await?;
                document(&self.ports, self.settings.url_ttl, &canceled)
                    .await
                    .map_err(Into::into)
            }
        }
    }

    /// Hands the final effects (stats, cached result, callback) of a task
    /// that became final here to the completion step.
    async fn announce_final(&self, id: &TaskId) -> Result<(), ServiceError> {
        Ok(crate::completion::announce_final(&self.ports, id).await?)
    }

    /// Waits until the task is final or `wait` passes (`/v1/generate`).
    ///
    /// With the completion step in this process, the waiter sleeps until it
    /// signals the task final and reads the store once more; the slow poll
    /// beside it only catches what no signal announces (a cancel through
    /// another API instance). Otherwise it polls, capped low so that a client
    /// learns of completion within ~25 ms.
    pub async fn wait_until_final(
        &self,
        tenant: &Tenant,
        raw_id: &str,
        wait: Duration,
    ) -> Result<TaskDocument, ServiceError> {
        let deadline = tokio::time::Instant::now() + wait;
        let local = self.ports.finals.completion_is_local();
        let mut subscription = TaskId::parse(raw_id).map(|id| self.ports.finals.subscribe(&id));
        let mut pause = Duration::from_millis(5);
        let mut stopping = self.stopping.subscribe();
        loop {
            let doc = self.result(tenant, raw_id).await?;
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if doc.status.is_final() || left.is_zero() || *stopping.borrow_and_update() {
                return Ok(doc);
            }
            let waited = async {
                match subscription.as_mut() {
                    Some(subscription) if local => {
                        let pause = left.min(Duration::from_secs(1));
                        let _ = tokio::time::timeout(pause, subscription.signalled()).await;
                    }
                    _ => {
                        tokio::time::sleep(pause.min(left)).await;
                        pause = (pause * 2).min(Duration::from_millis(25));
                    }
                }
            };
            tokio::select! {
                () = waited => {}
                // Read the state once more and answer with it.
                _ = stopping.changed() => {}
            }
        }
    }

    pub async fn stats(
        &self,
        tenant: &Tenant,
        request: StatsRequest,
    ) -> Result<StatsDocument, ServiceError> {
        let StatsRequest { user_id, from, to } = request;
        let query = StatsQuery {
            tenant: tenant.clone(),
            user_id: user_id.clone(),
            from,
            to,
            recent_limit: 10,
        };
        let summary = self.ports.stats.summarize(&query).await?;
        Ok(StatsDocument {
            user_id,
            from,
            to,
            requests: summary.requests,
            by_status: summary.by_status,
            by_type: summary.by_type,
            audio_seconds: summary.audio_seconds,
            latency_ms: summary.latency_ms,
            recent: summary.recent,
        })
    }

    /// Reaches every backend; `ok` only when all answer.
    pub async fn health(&self) -> HealthDocument {
        let p = &self.ports;
        let (tasks, cache, stats, blobs) = tokio::join!(
            p.tasks.ping(),
            p.cache.ping(),
            p.stats.ping(),
            p.blobs.ping()
        );
        let mut backends = BTreeMap::new();
        let mut queues = BTreeMap::new();
        let mut queue_ok = true;
        for family in ModelFamily::ALL {
            match p.queue.depth(QueueName::Jobs(family)).await {
                Ok(d) => {
                    queues.insert(
                        family.to_string(),
                        QueueDepthDocument {
                            queued: d.queued,
                            in_flight: d.in_flight,
                        },
                    );
                }
                Err(_) => queue_ok = false,
            }
        }
        let state = |ok: bool| if ok { "ok" } else { "down" }.to_string();
        backends.insert(Backend::Queue.to_string(), state(queue_ok));
        backends.insert(Backend::Tasks.to_string(), state(tasks.is_ok()));
        backends.insert(Backend::Cache.to_string(), state(cache.is_ok()));
        backends.insert(Backend::Stats.to_string(), state(stats.is_ok()));
        backends.insert(Backend::Blobs.to_string(), state(blobs.is_ok()));
        let all_ok = backends.values().all(|s| s == "ok");
        let models = ModelFamily::ALL
            .into_iter()
            .map(|family| {
                let doc = FamilyHealthDocument {
                    deployed: self.settings.deployed.contains(&family),
                    models: self
                        .settings
                        .models
                        .ids(family)
                        .into_iter()
                        .map(str::to_owned)
                        .collect(),
                };
                (family.to_string(), doc)
            })
            .collect();
        HealthDocument {
            status: if all_ok { "ok" } else { "degraded" }.into(),
            version: self.settings.api_version.clone(),
            backends,
            queues,
            models,
        }
    }
}
