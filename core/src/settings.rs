//! The domain's part of the settings: request limits, how long results and
//! links live, which families are deployed, and how callbacks are sent.
//!
//! Only the shapes live here. They are filled once at start-up by the
//! `sound-creator-settings` crate, the one place that reads the environment
//! and declares each setting's name and default; nothing in the domain reads
//! the environment itself. Secrets are held in types whose `Debug` output is
//! redacted, so a settings dump in a log leaks nothing.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::family::ModelFamily;
use crate::models::DeployedModels;
use crate::webhook::WebhookSecret;

/// Limits a deployment puts on requests (the seed's `MAX_PROMPT_LEN` and
/// `MAX_DURATION`, `MAX_UPLOAD_BYTES`, and the rest of the contract's
/// bounds).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Counted in Unicode characters, not bytes.
    pub max_prompt_len: usize,
    /// Seconds, for every family; AudioGen is capped lower by its model, and
    /// a model may have a lower limit of its own (`GET /v1/models`).
    pub max_duration: f64,
    /// The largest upload `POST /v1/uploads` accepts.
    pub max_upload_bytes: u64,
}

impl Limits {
    /// AudioGen was trained on 10 s clips and cannot make longer ones.
    pub const AUDIO_MAX_DURATION: f64 = 10.0;
    /// The most `MAX_DURATION` may be set to: clips longer than a model's
    /// 30 s window are made window by window, and the melody decoder reads
    /// at most this much of an upload.
    pub const MAX_DURATION_CEILING: f64 = 300.0;
    /// Shorter clips are not worth a job (and a few frames are no audio).
    pub const MIN_DURATION: f64 = 0.1;
    pub const MAX_SAMPLES: u8 = 4;
    /// A queue deadline longer than the result's retention makes no sense.
    pub const MAX_TTL_SECONDS: u64 = 7 * 24 * 3600;
    pub const MAX_USER_ID_LEN: usize = 128;

    /// The longest clip `family` may ask for here.
    pub fn max_duration_for(&self, family: ModelFamily) -> f64 {
        match family {
            ModelFamily::Music => self.max_duration,
            ModelFamily::Audio => self.max_duration.min(Self::AUDIO_MAX_DURATION),
        }
    }
}

/// Who is called back when a task is final, and how.
#[derive(Debug, Clone)]
pub struct CallbackSettings {
    /// The seed's `MARKETPLACE_CALLBACK`: called when a task names none.
    pub marketplace_callback: Option<String>,
    /// Hosts a per-task `callback_url` may name (lower case); the
    /// marketplace callback's host is always allowed.
    pub allowed_hosts: Vec<String>,
    /// Signs every delivery when set (Standard Webhooks).
    pub webhook_secret: Option<WebhookSecret>,
    /// Delay before the first retry; doubled for each one after.
    pub retry_base: Duration,
    /// Deliveries tried in all before giving up.
    pub max_attempts: u32,
    /// How long one delivery may take.
    pub timeout: Duration,
}

impl CallbackSettings {
    /// Whether a per-task callback URL may name `host` (lower case).
    pub fn allows_host(&self, host: &str) -> bool {
        let marketplace_host = self
            .marketplace_callback
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        self.allowed_hosts
            .iter()
            .any(|h| h.eq_ignore_ascii_case(host))
            || marketplace_host.as_deref() == Some(host)
    }
}

/// What the task service, the completion step and the workers need to know
/// about the deployment.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The seed's `API_NAME` and `API_VERSION`.
    pub api_name: String,
    pub api_version: String,
    pub limits: Limits,
    /// Families this deployment serves; others answer 422.
    pub deployed: BTreeSet<ModelFamily>,
    /// The models of those families (a request's `model`, `GET /v1/models`):
    /// from the settings and the catalog, replaced by the loaded generators'
    /// own description in a process that loads them.
    pub models: DeployedModels,
    /// Submits are refused with 429 once this many jobs of a family are
    /// queued or being submitted.
    pub max_queued_jobs: Option<u64>,
    /// How long a finished task stays readable (`RESULT_TTL`).
    pub result_ttl: Duration,
    /// How long a presigned download URL is valid.
    pub url_ttl: Duration,
    /// How long a stage result stays in the result cache.
    pub stage_cache_ttl: Duration,
    /// How long the final result stays in the result cache.
    pub final_cache_ttl: Duration,
    pub callbacks: CallbackSettings,
}
