//! sound-creator's settings: read from the environment once at start-up
//! into one typed [`Settings`] with a part per concern (API, tasks and
//! callbacks, worker, models, embedded, AWS, telemetry), and handed down;
//! no other code reads the environment.
//!
//! Each variable is declared once in [`vars`] with its name (the seed's where
//! the seed names one: `MAX_PROMPT_LEN`, `MUSIC_GEN_MODEL`, `REDIS_HOST`,
//! ...), default and meaning; the README's settings table is generated from
//! the same declarations. Secrets are held in types whose `Debug` output is
//! redacted, so a settings dump in a log leaks nothing, and client tokens are
//! compared in constant time.

pub mod vars;

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use sound_creator_core::family::ModelFamily;
use sound_creator_core::models::{DeployedModel, DeployedModels};
use sound_creator_core::settings::{CallbackSettings, Limits, ServiceSettings};
use sound_creator_core::task::Tenant;
use sound_creator_core::webhook::WebhookSecret;
use subtle::ConstantTimeEq;

use crate::vars::{Var, ALL};

// ---------------------------------------------------------------------------
// The settings

#[derive(Debug, Clone)]
pub struct Settings {
    pub api: ApiSettings,
    /// Request limits, retention, deployed families, callbacks: what the
    /// domain needs.
    pub service: ServiceSettings,
    pub worker: WorkerSettings,
    pub models: ModelSettings,
    pub backend: BackendKind,
    pub embedded: EmbeddedSettings,
    pub aws: AwsSettings,
    pub telemetry: TelemetrySettings,
}

#[derive(Debug, Clone)]
pub struct ApiSettings {
    pub port: u16,
    pub bind_host: String,
    /// Embedded mode: where clients reach the signed download links.
    pub public_base_url: Option<String>,
    pub client_keys: ClientKeys,
    pub max_body_bytes: usize,
    /// Per client key; 0 turns the limit off.
    pub rate_limit_per_minute: u32,
    /// Time a connection has to send a request's headers.
    pub header_timeout: Duration,
    /// Time a request's body has to arrive.
    pub body_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
}

#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Jobs generated together in one batched forward pass.
    pub max_batch: usize,
    /// A job started this many times without finishing fails its stage.
    pub max_attempts: u32,
    /// ECS task scale-in protection while jobs are in hand; `None`: off.
    pub task_protection: Option<TaskProtectionSettings>,
    /// Refreshed every few seconds for a container health check.
    pub liveness_file: Option<PathBuf>,
}

/// How the worker asks ECS not to stop it while it has a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskProtectionSettings {
    /// The ECS agent's endpoint (`ECS_AGENT_URI`), without a trailing `/`.
    pub agent_uri: String,
    /// How long one protection lasts unless renewed; ECS allows 1 to 2880.
    pub expires_in_minutes: u32,
}

impl WorkerSettings {
    /// Receives after which a queue moves a message to its dead-letter
    /// queue: one receive more than the worker needs to fail the stage, and
    /// one more for a crash while it does.
    pub fn max_receives(&self) -> u32 {
        self.max_attempts.saturating_add(2)
    }
}

#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// MusicGen's default model.
    pub music_gen_model: String,
    /// More MusicGen models (without the default; no repeats).
    pub music_gen_models: Vec<String>,
    pub audio_gen_model: String,
    pub audio_gen_models: Vec<String>,
    pub cache_model_dir: PathBuf,
    /// `auto`, `cpu`, `cuda` or `cuda:N`; checked where a model is loaded.
    pub device: String,
    /// `f32`, `f16` or `bf16`; checked where a model is loaded.
    pub dtype: String,
    /// Replay decoding steps as CUDA graphs where the device allows.
    pub cuda_graphs: bool,
    pub hub: HubSettings,
    /// Whether DEPLOYED_TYPES was set. When it was not, `serve` leaves out
    /// (with a warning) a family whose model cannot be loaded, instead of
    /// refusing to start: a MusicGen-only machine needs no AudioGen weights.
    pub deployed_types_set: bool,
}

impl ModelSettings {
    /// The model configured for `family`.
    pub fn model_for(&self, family: ModelFamily) -> &str {
        match family {
            ModelFamily::Music => &self.music_gen_model,
            ModelFamily::Audio => &self.audio_gen_model,
        }
    }

    /// Every model of `family`, its default first.
    pub fn models_for(&self, family: ModelFamily) -> Vec<&str> {
        let more = match family {
            ModelFamily::Music => &self.music_gen_models,
            ModelFamily::Audio => &self.audio_gen_models,
        };
        std::iter::once(self.model_for(family))
            .chain(more.iter().map(String::as_str))
            .collect()
    }

    /// The models every family serves, as an API that loads none knows
    /// them (the catalog's properties for published checkpoints).
    pub fn deployed_models(&self) -> DeployedModels {
        let mut models = Vec::new();
        for family in ModelFamily::ALL {
            for (i, id) in self.models_for(family).into_iter().enumerate() {
                models.push(DeployedModel::configured(
                    family,
                    id,
                    i == 0,
                    &self.device,
                    &self.dtype,
                ));
            }
        }
        DeployedModels::new(models)
    }

    /// The setting that names `family`'s model, for messages.
    pub fn variable_for(family: ModelFamily) -> &'static str {
        match family {
            ModelFamily::Music => vars::MUSIC_GEN_MODEL.name,
            ModelFamily::Audio => vars::AUDIO_GEN_MODEL.name,
        }
    }
}

/// Where and how to reach the Hugging Face hub.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub endpoint: String,
    pub token: Option<Secret>,
    /// Never touch the network.
    pub offline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// SQLite and local files under the data directory: no outside services.
    Embedded,
    /// SQS, S3, DynamoDB, Redis and Postgres (or LocalStack/moto).
    Aws,
}

impl FromStr for BackendKind {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw {
            "embedded" => Ok(BackendKind::Embedded),
            "aws" => Ok(BackendKind::Aws),
            other => Err(format!("{other:?} is not a backend; use embedded or aws")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EmbeddedSettings {
    pub data_dir: PathBuf,
}

/// The AWS-mode backends: SQS, S3, DynamoDB, plus Redis and Postgres.
#[derive(Debug, Clone)]
pub struct AwsSettings {
    pub region: String,
    /// With `secret_key`; when absent the SDK's default credential chain is
    /// used (instance or task role in AWS).
    pub access_key: Option<String>,
    pub secret_key: Option<Secret>,
    /// An emulator (moto, LocalStack) for all services, and per-service
    /// overrides.
    pub endpoint_url: Option<String>,
    pub sqs_endpoint_url: Option<String>,
    pub s3_endpoint_url: Option<String>,
    pub dynamodb_endpoint_url: Option<String>,
    /// Queue names are `<prefix><QueueName::as_str()>`.
    pub sqs_queue_prefix: String,
    /// The queues' default visibility timeout, set by `provision`.
    pub sqs_visibility_timeout: Duration,
    /// Receives before a message goes to the DLQ: derived from
    /// `JOB_MAX_ATTEMPTS` ([`WorkerSettings::max_receives`]).
    pub sqs_max_receive_count: u32,
    pub s3_bucket: String,
    pub dynamodb_table: String,
    pub redis_host: String,
    pub redis_port: u16,
    /// A database number.
    pub redis_db: i64,
    pub postgres_host: String,
    pub postgres_port: u16,
    pub postgres_user: String,
    pub postgres_password: Secret,
    pub postgres_db: String,
    /// How long opening a connection may take before the backend counts as
    /// down.
    pub connect_timeout: Duration,
    /// How long one call may take (long polls get their wait on top).
    pub operation_timeout: Duration,
}

impl AwsSettings {
    pub fn sqs_endpoint(&self) -> Option<&str> {
        self.sqs_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    pub fn dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }
}

#[derive(Debug, Clone)]
pub struct TelemetrySettings {
    pub log_json: bool,
    /// An `EnvFilter` directive, e.g. `info`.
    pub log_filter: String,
    /// Where `GET /metrics` listens; `None`: no metrics listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

// ---------------------------------------------------------------------------
// Secrets and client keys

/// A value that must never reach a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A bearer token, compared in constant time and never printed.
#[derive(Clone)]
pub struct Token(Secret);

impl Token {
    pub fn new(raw: impl Into<String>) -> Self {
        Self(Secret::new(raw))
    }

    pub fn matches(&self, presented: &str) -> bool {
        // ct_eq on slices of different lengths returns false without
        // comparing contents; the length of a token is not a secret worth
        // hiding, its bytes are.
        self.0
            .expose()
            .as_bytes()
            .ct_eq(presented.as_bytes())
            .into()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// The client keys: `MARKETPLACE_TOKEN` (tenant `marketplace`) and the
/// `name:token` pairs of `API_KEYS`.
#[derive(Debug, Clone, Default)]
pub struct ClientKeys(Vec<(Tenant, Token)>);

impl ClientKeys {
    pub fn new(keys: Vec<(Tenant, Token)>) -> Self {
        Self(keys)
    }

    /// The tenant whose token this is. Every key is compared (no early exit)
    /// so the time taken does not tell which key came close.
    pub fn tenant_for(&self, presented: &str) -> Option<Tenant> {
        let mut found = None;
        for (tenant, token) in &self.0 {
            if token.matches(presented) && found.is_none() {
                found = Some(tenant.clone());
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

// ---------------------------------------------------------------------------
// Reading

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting {name}: {message}")]
pub struct SettingsError {
    pub name: &'static str,
    pub message: String,
}

/// The process environment, as a lookup: the only `std::env::var` of the
/// workspace (tests aside).
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

impl Settings {
    pub fn from_env() -> Result<Self, SettingsError> {
        Self::from_lookup(process_env)
    }

    /// Reads every setting through `lookup` (the environment, a map in
    /// tests, or the environment overlaid with secrets in Lambda). Empty
    /// values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let env = Reader {
            lookup: &lookup,
            read: RefCell::default(),
        };
        env.settings()
    }

    /// The settings of every secret variable that is not set directly but
    /// names a reference in `<NAME>_SECRET_ARN` (Lambda reads those from
    /// Secrets Manager at cold start): `(name, raw reference)`.
    pub fn secret_references(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Vec<(&'static str, String)> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        ALL.iter()
            .filter(|var| var.secret && get(var.name).is_none())
            .filter_map(|var| {
                get(&format!("{}{}", var.name, vars::SECRET_ARN_SUFFIX)).map(|r| (var.name, r))
            })
            .collect()
    }
}

impl TelemetrySettings {
    /// Just the logging settings, so logging can start before the rest is
    /// read (and report what is wrong with it).
    pub fn from_env() -> Result<Self, SettingsError> {
        let env = Reader {
            lookup: &process_env,
            read: RefCell::default(),
        };
        env.telemetry()
    }
}

/// Reads declared variables, noting which were read (for the test that the
/// declarations and the reader agree).
struct Reader<'a> {
    lookup: &'a dyn Fn(&str) -> Option<String>,
    read: RefCell<BTreeSet<&'static str>>,
}

impl Reader<'_> {
    /// The value set, or the declared default.
    fn raw(&self, var: &Var) -> Option<String> {
        self.read.borrow_mut().insert(var.name);
        (self.lookup)(var.name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .or_else(|| var.default.map(str::to_owned))
    }

    fn string(&self, var: &Var) -> String {
        self.raw(var).unwrap_or_default()
    }

    fn optional(&self, var: &Var) -> Option<String> {
        self.raw(var)
    }

    fn parse<T: FromStr>(&self, var: &Var) -> Result<T, SettingsError> {
        let raw = self.raw(var).ok_or_else(|| SettingsError {
            name: var.name,
            message: "is required".into(),
        })?;
        raw.parse().map_err(|_| SettingsError {
            name: var.name,
            message: format!("{raw:?} is not a valid value"),
        })
    }

    fn seconds(&self, var: &Var) -> Result<Duration, SettingsError> {
        Ok(Duration::from_secs(self.parse(var)?))
    }

    fn millis(&self, var: &Var) -> Result<Duration, SettingsError> {
        Ok(Duration::from_millis(self.parse(var)?))
    }

    fn flag(&self, var: &Var) -> Result<bool, SettingsError> {
        let raw = self.string(var).to_ascii_lowercase();
        match raw.as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" | "" => Ok(false),
            _ => Err(SettingsError {
                name: var.name,
                message: format!("{raw:?} is not true or false"),
            }),
        }
    }

    fn list(&self, var: &Var) -> Vec<String> {
        self.string(var)
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn settings(&self) -> Result<Settings, SettingsError> {
        let worker = self.worker()?;
        let models = self.models()?;
        let mut service = self.service()?;
        service.models = models.deployed_models();
        Ok(Settings {
            api: self.api()?,
            service,
            models,
            backend: self
                .string(&vars::BACKEND)
                .parse()
                .map_err(|message| SettingsError {
                    name: vars::BACKEND.name,
                    message,
                })?,
            embedded: EmbeddedSettings {
                data_dir: PathBuf::from(self.string(&vars::DATA_DIR)),
            },
            aws: self.aws(&worker)?,
            worker,
            telemetry: self.telemetry()?,
        })
    }

    fn worker(&self) -> Result<WorkerSettings, SettingsError> {
        let protect = self.flag(&vars::WORKER_TASK_PROTECTION)?;
        let minutes: u32 = self.parse(&vars::WORKER_TASK_PROTECTION_MINUTES)?;
        let agent_uri = self
            .optional(&vars::ECS_AGENT_URI)
            .map(|uri| uri.trim_end_matches('/').to_owned());
        let task_protection = if protect {
            if !(1..=2880).contains(&minutes) {
                return Err(SettingsError {
                    name: vars::WORKER_TASK_PROTECTION_MINUTES.name,
                    message: format!(
                        "must be a whole number of minutes from 1 to 2880, not {minutes}"
                    ),
                });
            }
            let agent_uri = agent_uri.ok_or_else(|| SettingsError {
                name: vars::WORKER_TASK_PROTECTION.name,
                message: "is true but ECS_AGENT_URI is not set: task scale-in protection needs the ECS container agent (run in an ECS task, or set WORKER_TASK_PROTECTION=false)".into(),
            })?;
            Some(TaskProtectionSettings {
                agent_uri,
                expires_in_minutes: minutes,
            })
        } else {
            None
        };
        Ok(WorkerSettings {
            max_batch: self.parse::<usize>(&vars::WORKER_MAX_BATCH)?.max(1),
            max_attempts: self.parse::<u32>(&vars::JOB_MAX_ATTEMPTS)?.max(1),
            task_protection,
            liveness_file: self.optional(&vars::LIVENESS_FILE).map(PathBuf::from),
        })
    }

    fn telemetry(&self) -> Result<TelemetrySettings, SettingsError> {
        Ok(TelemetrySettings {
            log_json: self.flag(&vars::LOG_JSON)?,
            log_filter: self.string(&vars::RUST_LOG),
            metrics_addr: self
                .optional(&vars::METRICS_ADDR)
                .map(|raw| {
                    raw.parse().map_err(|_| SettingsError {
                        name: vars::METRICS_ADDR.name,
                        message: format!(
                            "{raw:?} is not an IP address and port, e.g. 127.0.0.1:9090"
                        ),
                    })
                })
                .transpose()?,
        })
    }

    fn api(&self) -> Result<ApiSettings, SettingsError> {
        let mut keys = Vec::new();
        if let Some(token) = self.optional(&vars::MARKETPLACE_TOKEN) {
            keys.push((Tenant::new("marketplace"), Token::new(token)));
        }
        for pair in self.list(&vars::API_KEYS) {
            let invalid = |message: &str| SettingsError {
                name: vars::API_KEYS.name,
                message: message.into(),
            };
            let (name, token) = pair
                .split_once(':')
                .ok_or_else(|| invalid("expected name:token pairs separated by commas"))?;
            let (name, token) = (name.trim(), token.trim());
            if name.is_empty() || token.is_empty() {
                return Err(invalid("a name or token is empty"));
            }
            keys.push((Tenant::new(name), Token::new(token)));
        }
        Ok(ApiSettings {
            port: self.parse(&vars::APP_API_PORT)?,
            bind_host: self.string(&vars::BIND_HOST),
            public_base_url: self.optional(&vars::PUBLIC_BASE_URL),
            client_keys: ClientKeys::new(keys),
            max_body_bytes: self.parse(&vars::MAX_BODY_BYTES)?,
            rate_limit_per_minute: self.parse(&vars::RATE_LIMIT_PER_MINUTE)?,
            header_timeout: self.millis(&vars::HTTP_HEADER_TIMEOUT_MS)?,
            body_timeout: self.millis(&vars::HTTP_BODY_TIMEOUT_MS)?,
            max_connections: self.parse::<usize>(&vars::MAX_CONNECTIONS)?.max(1),
        })
    }

    fn service(&self) -> Result<ServiceSettings, SettingsError> {
        let max_duration: f64 = self.parse(&vars::MAX_DURATION)?;
        if !(max_duration.is_finite()
            && (Limits::MIN_DURATION..=Limits::MAX_DURATION_CEILING).contains(&max_duration))
        {
            return Err(SettingsError {
                name: vars::MAX_DURATION.name,
                message: format!(
                    "must be a number of seconds from {} to {}",
                    Limits::MIN_DURATION,
                    Limits::MAX_DURATION_CEILING
                ),
            });
        }
        let max_upload_bytes: u64 = self.parse(&vars::MAX_UPLOAD_BYTES)?;
        if max_upload_bytes == 0 {
            return Err(SettingsError {
                name: vars::MAX_UPLOAD_BYTES.name,
                message: "must be at least 1".into(),
            });
        }
        let deployed = self
            .list(&vars::DEPLOYED_TYPES)
            .iter()
            .map(|s| {
                ModelFamily::parse(s).ok_or_else(|| SettingsError {
                    name: vars::DEPLOYED_TYPES.name,
                    message: format!("unknown type {s:?}; use music and/or audio"),
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        let max_queued: u64 = self.parse(&vars::MAX_QUEUED_JOBS)?;
        Ok(ServiceSettings {
            api_name: self.string(&vars::API_NAME),
            api_version: self
                .optional(&vars::API_VERSION)
                .unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            limits: Limits {
                max_prompt_len: self.parse(&vars::MAX_PROMPT_LEN)?,
                max_duration,
                max_upload_bytes,
            },
            deployed,
            // Filled from the model settings by `settings()`.
            models: DeployedModels::default(),
            max_queued_jobs: (max_queued > 0).then_some(max_queued),
            result_ttl: self.seconds(&vars::RESULT_TTL)?,
            url_ttl: self.seconds(&vars::URL_TTL)?,
            stage_cache_ttl: self.seconds(&vars::STAGE_CACHE_TTL)?,
            final_cache_ttl: self.seconds(&vars::FINAL_CACHE_TTL)?,
            callbacks: self.callbacks()?,
        })
    }

    fn callbacks(&self) -> Result<CallbackSettings, SettingsError> {
        let marketplace_callback = self.optional(&vars::MARKETPLACE_CALLBACK);
        if let Some(raw) = &marketplace_callback {
            let invalid = |message: String| SettingsError {
                name: vars::MARKETPLACE_CALLBACK.name,
                message,
            };
            let parsed = url::Url::parse(raw).map_err(|e| invalid(e.to_string()))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(invalid("must be an http(s) URL".into()));
            }
        }
        let webhook_secret = self
            .optional(&vars::WEBHOOK_SECRET)
            .map(|raw| {
                WebhookSecret::parse(&raw).map_err(|e| SettingsError {
                    name: vars::WEBHOOK_SECRET.name,
                    message: e.to_string(),
                })
            })
            .transpose()?;
        Ok(CallbackSettings {
            marketplace_callback,
            allowed_hosts: self
                .list(&vars::CALLBACK_ALLOWED_HOSTS)
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            webhook_secret,
            retry_base: self.millis(&vars::CALLBACK_RETRY_BASE_MS)?,
            max_attempts: self.parse::<u32>(&vars::CALLBACK_MAX_ATTEMPTS)?.max(1),
            timeout: self.millis(&vars::CALLBACK_TIMEOUT_MS)?,
        })
    }

    fn models(&self) -> Result<ModelSettings, SettingsError> {
        let music_gen_model = self.string(&vars::MUSIC_GEN_MODEL);
        let audio_gen_model = self.string(&vars::AUDIO_GEN_MODEL);
        let more = |var: &Var, default: &str| -> Vec<String> {
            let mut seen = BTreeSet::from([default.to_owned()]);
            self.list(var)
                .into_iter()
                .filter(|m| seen.insert(m.clone()))
                .collect()
        };
        Ok(ModelSettings {
            music_gen_models: more(&vars::MUSIC_GEN_MODELS, &music_gen_model),
            audio_gen_models: more(&vars::AUDIO_GEN_MODELS, &audio_gen_model),
            music_gen_model,
            audio_gen_model,
            cache_model_dir: PathBuf::from(self.string(&vars::CACHE_MODEL_DIR)),
            device: self.string(&vars::MODEL_DEVICE),
            dtype: self.string(&vars::MODEL_DTYPE),
            cuda_graphs: self.flag(&vars::MODEL_CUDA_GRAPHS)?,
            hub: HubSettings {
                endpoint: self.string(&vars::HF_ENDPOINT),
                token: self.optional(&vars::HF_TOKEN).map(Secret::new),
                offline: self.flag(&vars::HF_HUB_OFFLINE)?,
            },
            deployed_types_set: (self.lookup)(vars::DEPLOYED_TYPES.name)
                .is_some_and(|v| !v.trim().is_empty()),
        })
    }

    fn aws(&self, worker: &WorkerSettings) -> Result<AwsSettings, SettingsError> {
        let access_key = self.optional(&vars::AWS_ACCESS_KEY);
        let secret_key = self.optional(&vars::AWS_SECRET_KEY).map(Secret::new);
        if access_key.is_some() != secret_key.is_some() {
            return Err(SettingsError {
                name: vars::AWS_ACCESS_KEY.name,
                message: "set both AWS_ACCESS_KEY and AWS_SECRET_KEY, or neither (to use the default credential chain)".into(),
            });
        }
        // Both are read whether or not the first is set, so the declared
        // variables and the read ones always agree.
        let (seed_region, region) = (
            self.optional(&vars::AWS_REGION_NAME),
            self.string(&vars::AWS_REGION),
        );
        let region = seed_region.unwrap_or(region);
        Ok(AwsSettings {
            region,
            access_key,
            secret_key,
            endpoint_url: self.optional(&vars::AWS_ENDPOINT_URL),
            sqs_endpoint_url: self.optional(&vars::AWS_ENDPOINT_URL_SQS),
            s3_endpoint_url: self.optional(&vars::AWS_ENDPOINT_URL_S3),
            dynamodb_endpoint_url: self.optional(&vars::AWS_ENDPOINT_URL_DYNAMODB),
            sqs_queue_prefix: self.string(&vars::SQS_QUEUE_PREFIX),
            sqs_visibility_timeout: self.seconds(&vars::SQS_VISIBILITY_TIMEOUT)?,
            sqs_max_receive_count: worker.max_receives(),
            s3_bucket: self.string(&vars::S3_BUCKET),
            dynamodb_table: self.string(&vars::DYNAMODB_TABLE),
            redis_host: self.string(&vars::REDIS_HOST),
            redis_port: self.parse(&vars::REDIS_PORT)?,
            redis_db: self.parse(&vars::REDIS_DB_NAME)?,
            postgres_host: self.string(&vars::POSTGRES_HOST),
            postgres_port: self.parse(&vars::POSTGRES_PORT)?,
            postgres_user: self.string(&vars::POSTGRES_USER),
            postgres_password: Secret::new(self.string(&vars::POSTGRES_PASSWORD)),
            postgres_db: self.string(&vars::POSTGRES_DB),
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(10),
        })
    }
}

// ---------------------------------------------------------------------------
// Documentation

/// The settings table of the README, generated from the declarations.
pub fn markdown_table() -> String {
    let mut out = String::from("| setting | default | part | meaning |\n|---|---|---|---|\n");
    for var in ALL {
        let default = var.default.map_or("—".to_owned(), |d| format!("`{d}`"));
        let secret = if var.secret {
            format!(
                " Secret: never logged; in Lambda it may come from `{}{}`.",
                var.name,
                vars::SECRET_ARN_SUFFIX
            )
        } else {
            String::new()
        };
        out.push_str(&format!(
            "| `{}` | {default} | {} | {}{secret} |\n",
            var.name,
            var.concern.as_str(),
            var.doc
        ));
    }
    out
}

/// Settings as a map, for tests of the parts that take [`Settings`].
pub fn from_pairs(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Settings::from_lookup(|k| map.get(k).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, SettingsError> {
        from_pairs(pairs)
    }

    #[test]
    fn the_seed_defaults_apply_when_nothing_is_set() {
        let s = settings(&[]).unwrap();
        assert_eq!(s.api.port, 8007);
        assert_eq!(s.service.limits.max_prompt_len, 100);
        assert_eq!(s.service.limits.max_duration, 30.0);
        assert_eq!(s.models.music_gen_model, "facebook/musicgen-small");
        assert_eq!(s.models.audio_gen_model, "facebook/audiogen-medium");
        assert_eq!(s.service.result_ttl, Duration::from_secs(604_800));
        assert_eq!(s.api.max_body_bytes, 65_536);
        assert_eq!(
            s.service.deployed,
            [ModelFamily::Music, ModelFamily::Audio]
                .into_iter()
                .collect()
        );
        assert!(!s.models.deployed_types_set);
        assert_eq!(s.service.api_name, "AudioCraft");
        assert_eq!(s.backend, BackendKind::Embedded);
        assert_eq!(s.aws.region, "us-east-1");
    }

    #[test]
    fn the_reader_reads_exactly_the_declared_variables() {
        let env = |_: &str| None;
        let reader = Reader {
            lookup: &env,
            read: RefCell::default(),
        };
        reader.settings().unwrap();
        let read = reader.read.into_inner();
        let declared: BTreeSet<&str> = ALL.iter().map(|v| v.name).collect();
        assert_eq!(read, declared);
        assert_eq!(declared.len(), ALL.len(), "a variable is declared twice");
    }

    #[test]
    fn metrics_listen_only_where_metrics_addr_says() {
        assert_eq!(settings(&[]).unwrap().telemetry.metrics_addr, None);
        let s = settings(&[("METRICS_ADDR", "127.0.0.1:9090")]).unwrap();
        assert_eq!(
            s.telemetry.metrics_addr,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        let err = settings(&[("METRICS_ADDR", "localhost")]).unwrap_err();
        assert_eq!(err.name, "METRICS_ADDR");
    }

    #[test]
    fn every_declared_default_is_valid() {
        // Reading with nothing set parses every default; this also fails if
        // a default is removed from a setting that has no fallback.
        assert!(settings(&[]).is_ok());
    }

    #[test]
    fn retry_limits_come_from_one_setting() {
        let s = settings(&[("JOB_MAX_ATTEMPTS", "4")]).unwrap();
        assert_eq!(s.worker.max_attempts, 4);
        assert_eq!(s.worker.max_receives(), 6);
        assert_eq!(s.aws.sqs_max_receive_count, 6);
        let default = settings(&[]).unwrap();
        assert_eq!(
            (
                default.worker.max_attempts,
                default.aws.sqs_max_receive_count
            ),
            (3, 5)
        );
    }

    #[test]
    fn task_protection_is_off_unless_asked_for_and_then_needs_the_agent() {
        assert_eq!(settings(&[]).unwrap().worker.task_protection, None);
        let off = settings(&[
            ("WORKER_TASK_PROTECTION", "false"),
            ("ECS_AGENT_URI", "http://169.254.170.2/api/x"),
        ]);
        assert_eq!(off.unwrap().worker.task_protection, None);
        let on = settings(&[
            ("WORKER_TASK_PROTECTION", "true"),
            ("ECS_AGENT_URI", "http://169.254.170.2/api/abc/"),
        ]);
        assert_eq!(
            on.unwrap().worker.task_protection,
            Some(TaskProtectionSettings {
                agent_uri: "http://169.254.170.2/api/abc".into(),
                expires_in_minutes: 60
            })
        );
        let no_agent = settings(&[("WORKER_TASK_PROTECTION", "true")]).unwrap_err();
        assert!(no_agent.message.contains("ECS_AGENT_URI"), "{no_agent}");
        for bad in ["0", "2881", "ten"] {
            let err = settings(&[
                ("WORKER_TASK_PROTECTION", "true"),
                ("WORKER_TASK_PROTECTION_MINUTES", bad),
                ("ECS_AGENT_URI", "http://x"),
            ])
            .unwrap_err();
            assert_eq!(err.name, "WORKER_TASK_PROTECTION_MINUTES", "{bad}");
        }
        assert!(settings(&[("WORKER_TASK_PROTECTION", "perhaps")]).is_err());
    }

    #[test]
    fn the_deployed_models_are_the_default_and_the_extra_ones() {
        let s = settings(&[
            (
                "MUSIC_GEN_MODELS",
                "facebook/musicgen-melody, facebook/musicgen-small ,/m/x,/m/x",
            ),
            ("MODEL_DTYPE", "f16"),
        ])
        .unwrap();
        assert_eq!(
            s.models.models_for(ModelFamily::Music),
            [
                "facebook/musicgen-small",
                "facebook/musicgen-melody",
                "/m/x"
            ],
            "the default first, no repeats"
        );
        let models = &s.service.models;
        let default = models.default_for(ModelFamily::Music).unwrap();
        assert_eq!(default.id, "facebook/musicgen-small");
        assert_eq!(default.melody(), Some(false));
        let melody = models
            .find(ModelFamily::Music, "facebook/musicgen-melody")
            .unwrap();
        assert_eq!((melody.melody(), melody.default), (Some(true), false));
        assert_eq!(
            models.find(ModelFamily::Music, "/m/x").unwrap().melody(),
            None
        );
        assert_eq!(melody.dtype.as_deref(), Some("f16"));
        assert_eq!(
            models
                .default_for(ModelFamily::Audio)
                .map(|m| m.id.as_str()),
            Some("facebook/audiogen-medium")
        );
    }

    #[test]
    fn long_clips_and_upload_sizes_have_bounds() {
        let s = settings(&[("MAX_DURATION", "300")]).unwrap();
        assert_eq!(s.service.limits.max_duration, 300.0);
        assert_eq!(
            settings(&[]).unwrap().service.limits.max_upload_bytes,
            20 * 1024 * 1024
        );
        for (name, value) in [("MAX_DURATION", "300.5"), ("MAX_UPLOAD_BYTES", "0")] {
            assert_eq!(settings(&[(name, value)]).unwrap_err().name, name);
        }
    }

    #[test]
    fn marketplace_token_and_api_keys_are_separate_tenants() {
        let s = settings(&[
            ("MARKETPLACE_TOKEN", "m-secret"),
            ("API_KEYS", "acme:a-secret, beta:b-secret"),
        ])
        .unwrap();
        let keys = &s.api.client_keys;
        assert_eq!(
            keys.tenant_for("m-secret"),
            Some(Tenant::new("marketplace"))
        );
        assert_eq!(keys.tenant_for("b-secret"), Some(Tenant::new("beta")));
        assert_eq!(keys.tenant_for("b-secre"), None);
        assert_eq!(keys.tenant_for(""), None);
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        for (name, value) in [
            ("MAX_PROMPT_LEN", "lots"),
            ("API_KEYS", "no-colon"),
            ("WEBHOOK_SECRET", "whsec_???"),
            ("MAX_DURATION", "-3"),
            ("DEPLOYED_TYPES", "video"),
            ("REDIS_DB_NAME", "cache"),
            ("BACKEND", "gcp"),
            ("HF_HUB_OFFLINE", "maybe"),
            ("MARKETPLACE_CALLBACK", "ftp://x"),
        ] {
            assert_eq!(
                settings(&[(name, value)]).unwrap_err().name,
                name,
                "{name}={value}"
            );
        }
        assert_eq!(
            settings(&[("AWS_ACCESS_KEY", "AKIA1")]).unwrap_err().name,
            "AWS_ACCESS_KEY"
        );
    }

    #[test]
    fn empty_values_count_as_unset_and_lambda_sets_the_region() {
        let s = settings(&[("REDIS_PORT", ""), ("AWS_REGION_NAME", " ")]).unwrap();
        assert_eq!(s.aws.redis_port, 6379);
        assert_eq!(s.aws.region, "us-east-1");
        let s = settings(&[("AWS_REGION", "eu-west-1")]).unwrap();
        assert_eq!(s.aws.region, "eu-west-1");
        let s = settings(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_REGION_NAME", "ap-south-1"),
        ])
        .unwrap();
        assert_eq!(s.aws.region, "ap-south-1");
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = settings(&[
            ("MARKETPLACE_TOKEN", "super-secret-token"),
            ("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
            ("AWS_ACCESS_KEY", "AKIA1"),
            ("AWS_SECRET_KEY", "hunter2"),
            ("POSTGRES_PASSWORD", "pg-pass"),
            ("HF_TOKEN", "hf_secret"),
        ])
        .unwrap();
        let dump = format!("{s:?}");
        for secret in [
            "super-secret-token",
            "MfKQ9r8",
            "hunter2",
            "pg-pass",
            "hf_secret",
        ] {
            assert!(!dump.contains(secret), "{secret} leaked");
        }
    }

    #[test]
    fn secrets_not_set_directly_may_name_a_secret_reference() {
        let vars = HashMap::from([
            ("MARKETPLACE_TOKEN", "direct"),
            ("MARKETPLACE_TOKEN_SECRET_ARN", "arn:token"),
            ("POSTGRES_PASSWORD_SECRET_ARN", "arn:rds#password"),
            ("WEBHOOK_SECRET_SECRET_ARN", ""),
            ("REDIS_HOST_SECRET_ARN", "arn:not-a-secret-setting"),
        ]);
        let refs = Settings::secret_references(|name| vars.get(name).map(|v| (*v).to_owned()));
        assert_eq!(
            refs,
            vec![("POSTGRES_PASSWORD", "arn:rds#password".to_owned())]
        );
    }

    #[test]
    fn the_readme_table_is_the_generated_one() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
            .expect("README.md");
        let begin = "<!-- settings:begin (generated by `sound-creator settings`) -->\n";
        let end = "<!-- settings:end -->";
        let start = readme.find(begin).expect("README has the settings markers") + begin.len();
        let stop = readme[start..].find(end).expect("end marker") + start;
        assert_eq!(
            &readme[start..stop],
            markdown_table(),
            "README's settings table is stale: paste the output of `sound-creator settings`"
        );
    }
}
