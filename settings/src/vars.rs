//! Every environment variable sound-creator reads, declared once: its name
//! (the seed's where the seed names one), its default, what it means and
//! which part of the service uses it. The reader in `lib.rs` takes defaults
//! from here, the settings table in the README is generated from here
//! (`sound-creator settings`), and a test checks that the reader reads
//! exactly these variables.

/// Which part of the service a setting belongs to (and the sub-struct of
/// [`crate::Settings`] it fills).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Concern {
    Api,
    Tasks,
    Callbacks,
    Worker,
    Models,
    Embedded,
    Aws,
    Telemetry,
}

impl Concern {
    pub fn as_str(self) -> &'static str {
        match self {
            Concern::Api => "api",
            Concern::Tasks => "tasks",
            Concern::Callbacks => "callbacks",
            Concern::Worker => "worker",
            Concern::Models => "models",
            Concern::Embedded => "embedded",
            Concern::Aws => "aws",
            Concern::Telemetry => "telemetry",
        }
    }
}

/// One environment variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Var {
    pub name: &'static str,
    /// The value used when the variable is unset or empty, as it would be
    /// written in the environment; `None` when there is none, or when it is
    /// computed (then `doc` says how).
    pub default: Option<&'static str>,
    pub doc: &'static str,
    pub concern: Concern,
    /// Never logged; in Lambda it may come from Secrets Manager through
    /// `<NAME>_SECRET_ARN`.
    pub secret: bool,
}

macro_rules! vars {
    ($($ident:ident = $name:literal, $default:expr, $concern:ident, $secret:literal, $doc:literal;)*) => {
        $(
            #[doc = $doc]
            pub const $ident: Var = Var {
                name: $name,
                default: $default,
                doc: $doc,
                concern: Concern::$concern,
                secret: $secret,
            };
        )*
        /// Every variable, in the order of the settings table.
        pub const ALL: &[Var] = &[$($ident,)*];
    };
}

vars! {
    APP_API_PORT = "APP_API_PORT", Some("8007"), Api, false,
        "API port (`--port` overrides; 0 picks a free one).";
    BIND_HOST = "BIND_HOST", Some("0.0.0.0"), Api, false,
        "Address the API listens on (`--host` overrides); the default is every interface.";
    PUBLIC_BASE_URL = "PUBLIC_BASE_URL", None, Api, false,
        "Embedded mode: base of the signed download links (default `http://127.0.0.1:<port>`).";
    API_NAME = "API_NAME", Some("AudioCraft"), Api, false,
        "Service name, the title of the OpenAPI document.";
    API_VERSION = "API_VERSION", None, Api, false,
        "Version reported by `/health` and the OpenAPI document (default: the crate version).";
    MARKETPLACE_TOKEN = "MARKETPLACE_TOKEN", None, Api, true,
        "The client key of the tenant `marketplace`.";
    API_KEYS = "API_KEYS", None, Api, true,
        "More client keys, `name:token,name:token`; each name is a tenant.";
    MAX_BODY_BYTES = "MAX_BODY_BYTES", Some("65536"), Api, false,
        "Request body limit; larger bodies answer 413.";
    RATE_LIMIT_PER_MINUTE = "RATE_LIMIT_PER_MINUTE", Some("0"), Api, false,
        "Requests a minute per client key (0: no limit); over it, 429 with Retry-After.";
    HTTP_HEADER_TIMEOUT_MS = "HTTP_HEADER_TIMEOUT_MS", Some("10000"), Api, false,
        "How long a connection may take to send a request's headers before it is closed (slow clients, slowloris).";
    HTTP_BODY_TIMEOUT_MS = "HTTP_BODY_TIMEOUT_MS", Some("30000"), Api, false,
        "How long a request's body may take to arrive; slower bodies answer 408 `request_timeout`.";
    MAX_CONNECTIONS = "MAX_CONNECTIONS", Some("1024"), Api, false,
        "Open client connections the API serves at once; more wait to be accepted.";
    MAX_PROMPT_LEN = "MAX_PROMPT_LEN", Some("100"), Tasks, false,
        "Prompt limit, in Unicode characters.";
    MAX_DURATION = "MAX_DURATION", Some("30"), Tasks, false,
        "Longest clip in seconds, at most 300 (past a model's 30 s window, MusicGen generates window by window); AudioGen clips are capped at 10.";
    MAX_UPLOAD_BYTES = "MAX_UPLOAD_BYTES", Some("20971520"), Tasks, false,
        "Largest file `POST /v1/uploads` accepts (a melody to condition on); larger ones answer 413 `upload_too_large`.";
    DEPLOYED_TYPES = "DEPLOYED_TYPES", Some("music,audio"), Tasks, false,
        "Families this deployment serves (`music`, `audio`, comma separated); others answer 422 `model_not_deployed`. Unset, `serve` serves each family whose model loads and logs why one is left out (and `/health` shows it); set, a model that fails to load stops the process.";
    MAX_QUEUED_JOBS = "MAX_QUEUED_JOBS", Some("0"), Tasks, false,
        "429 `queue_full` past this many waiting jobs per family (0: no cap).";
    RESULT_TTL = "RESULT_TTL", Some("604800"), Tasks, false,
        "Seconds a finished task stays readable; afterwards 404 `expired_result`.";
    URL_TTL = "URL_TTL", Some("3600"), Tasks, false,
        "Seconds a download link is valid.";
    STAGE_CACHE_TTL = "STAGE_CACHE_TTL", Some("3600"), Tasks, false,
        "Seconds a job's result stays in the result cache.";
    FINAL_CACHE_TTL = "FINAL_CACHE_TTL", Some("86400"), Tasks, false,
        "AWS mode: seconds a final result stays in the result cache (Redis).";
    MARKETPLACE_CALLBACK = "MARKETPLACE_CALLBACK", None, Callbacks, true,
        "Default callback URL, for tasks that name none.";
    CALLBACK_ALLOWED_HOSTS = "CALLBACK_ALLOWED_HOSTS", None, Callbacks, false,
        "Hosts a per-task `callback_url` may name, comma separated (MARKETPLACE_CALLBACK's host is always allowed).";
    WEBHOOK_SECRET = "WEBHOOK_SECRET", None, Callbacks, true,
        "`whsec_<base64>` key that signs callbacks (Standard Webhooks); unsigned when unset.";
    CALLBACK_RETRY_BASE_MS = "CALLBACK_RETRY_BASE_MS", Some("20000"), Callbacks, false,
        "Delay before the first callback retry; doubled for each one after.";
    CALLBACK_MAX_ATTEMPTS = "CALLBACK_MAX_ATTEMPTS", Some("6"), Callbacks, false,
        "Callback deliveries tried in all (6 span about ten minutes).";
    CALLBACK_TIMEOUT_MS = "CALLBACK_TIMEOUT_MS", Some("10000"), Callbacks, false,
        "How long one callback attempt may take.";
    WORKER_MAX_BATCH = "WORKER_MAX_BATCH", Some("1"), Worker, false,
        "Jobs generated together in one batched forward pass (`--max-batch` overrides).";
    JOB_MAX_ATTEMPTS = "JOB_MAX_ATTEMPTS", Some("3"), Worker, false,
        "Times a job is started before its stage fails `job_failed_repeatedly`; every queue dead-letters a message after this many receives plus two.";
    WORKER_TASK_PROTECTION = "WORKER_TASK_PROTECTION", Some("false"), Worker, false,
        "`true`: hold ECS task scale-in protection while jobs are in hand (needs ECS_AGENT_URI).";
    WORKER_TASK_PROTECTION_MINUTES = "WORKER_TASK_PROTECTION_MINUTES", Some("60"), Worker, false,
        "How long one scale-in protection lasts unless renewed (1 to 2880).";
    ECS_AGENT_URI = "ECS_AGENT_URI", None, Worker, false,
        "Set by ECS in every container: the task's agent endpoint.";
    LIVENESS_FILE = "LIVENESS_FILE", None, Worker, false,
        "`worker`, `completion`: a file refreshed every 10 s, for container health checks.";
    MUSIC_GEN_MODEL = "MUSIC_GEN_MODEL", Some("facebook/musicgen-small"), Models, false,
        "MusicGen model for `type: \"music\"`: a hub id or a local directory (Hugging Face layout).";
    MUSIC_GEN_MODELS = "MUSIC_GEN_MODELS", None, Models, false,
        "More MusicGen models served beside MUSIC_GEN_MODEL (the default), comma separated; a request picks one with `model`. Every music worker loads them all.";
    AUDIO_GEN_MODEL = "AUDIO_GEN_MODEL", Some("facebook/audiogen-medium"), Models, false,
        "AudioGen model for `type: \"audio\"`: a hub id or a local directory.";
    AUDIO_GEN_MODELS = "AUDIO_GEN_MODELS", None, Models, false,
        "More AudioGen models served beside AUDIO_GEN_MODEL, comma separated, as MUSIC_GEN_MODELS.";
    CACHE_MODEL_DIR = "CACHE_MODEL_DIR", Some("model_hub"), Models, false,
        "Where hub downloads go.";
    MODEL_DEVICE = "MODEL_DEVICE", Some("auto"), Models, false,
        "`auto` (CUDA when available), `cpu`, `cuda` or `cuda:N` (`--device` overrides).";
    MODEL_DTYPE = "MODEL_DTYPE", Some("f32"), Models, false,
        "Decoder precision: `f32`, `f16` or `bf16` (`--dtype` overrides).";
    MODEL_CUDA_GRAPHS = "MODEL_CUDA_GRAPHS", Some("true"), Models, false,
        "CUDA: replay each decoding step as a captured CUDA graph; `false` runs every step eagerly (`--no-cuda-graphs`).";
    HF_ENDPOINT = "HF_ENDPOINT", Some("https://huggingface.co"), Models, false,
        "The Hugging Face hub to download from.";
    HF_TOKEN = "HF_TOKEN", None, Models, true,
        "Token for gated or private hub repositories.";
    HF_HUB_OFFLINE = "HF_HUB_OFFLINE", Some("false"), Models, false,
        "`1`/`true`: never download; use local directories and the cache only.";
    BACKEND = "BACKEND", Some("embedded"), Embedded, false,
        "`embedded` (SQLite and local files) or `aws` (SQS, S3, DynamoDB, Redis, Postgres); `--backend` overrides.";
    DATA_DIR = "DATA_DIR", Some(".data/sound-creator"), Embedded, false,
        "Embedded mode: where the database and audio files live (`--data-dir` overrides).";
    AWS_REGION_NAME = "AWS_REGION_NAME", None, Aws, false,
        "AWS region (the seed's name); when unset, AWS_REGION.";
    AWS_REGION = "AWS_REGION", Some("us-east-1"), Aws, false,
        "AWS region when AWS_REGION_NAME is unset (Lambda sets it).";
    AWS_ACCESS_KEY = "AWS_ACCESS_KEY", None, Aws, false,
        "Access key id; with AWS_SECRET_KEY, else the SDK's default chain (instance or task role).";
    AWS_SECRET_KEY = "AWS_SECRET_KEY", None, Aws, true,
        "Secret access key, with AWS_ACCESS_KEY.";
    AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL", None, Aws, false,
        "An emulator for every AWS service (moto, LocalStack).";
    AWS_ENDPOINT_URL_SQS = "AWS_ENDPOINT_URL_SQS", None, Aws, false,
        "SQS endpoint, overriding AWS_ENDPOINT_URL.";
    AWS_ENDPOINT_URL_S3 = "AWS_ENDPOINT_URL_S3", None, Aws, false,
        "S3 endpoint, overriding AWS_ENDPOINT_URL.";
    AWS_ENDPOINT_URL_DYNAMODB = "AWS_ENDPOINT_URL_DYNAMODB", None, Aws, false,
        "DynamoDB endpoint, overriding AWS_ENDPOINT_URL.";
    SQS_QUEUE_PREFIX = "SQS_QUEUE_PREFIX", Some("sound-creator-"), Aws, false,
        "Queue names are `<prefix>music-jobs`, `<prefix>audio-jobs`, `<prefix>completions` (and `-dlq`).";
    SQS_VISIBILITY_TIMEOUT = "SQS_VISIBILITY_TIMEOUT", Some("120"), Aws, false,
        "Seconds a received job stays invisible; the worker's heartbeat renews it at a third.";
    S3_BUCKET = "S3_BUCKET", Some("sound-creator-audio"), Aws, false,
        "Bucket for the audio files.";
    DYNAMODB_TABLE = "DYNAMODB_TABLE", Some("sound-creator-tasks"), Aws, false,
        "Table for the task records.";
    REDIS_HOST = "REDIS_HOST", Some("127.0.0.1"), Aws, false,
        "Result cache host.";
    REDIS_PORT = "REDIS_PORT", Some("6379"), Aws, false,
        "Result cache port.";
    REDIS_DB_NAME = "REDIS_DB_NAME", Some("0"), Aws, false,
        "Result cache database number.";
    POSTGRES_HOST = "POSTGRES_HOST", Some("127.0.0.1"), Aws, false,
        "Statistics database host.";
    POSTGRES_PORT = "POSTGRES_PORT", Some("5432"), Aws, false,
        "Statistics database port.";
    POSTGRES_USER = "POSTGRES_USER", Some("postgres"), Aws, false,
        "Statistics database user.";
    POSTGRES_PASSWORD = "POSTGRES_PASSWORD", None, Aws, true,
        "Statistics database password.";
    POSTGRES_DB = "POSTGRES_DB", Some("sound_creator"), Aws, false,
        "Statistics database name.";
    LOG_JSON = "LOG_JSON", Some("false"), Telemetry, false,
        "`true`: log JSON lines (`--log-json` too); otherwise text, coloured only on a terminal.";
    RUST_LOG = "RUST_LOG", Some("info"), Telemetry, false,
        "Log filter, e.g. `info,sound_creator_worker=debug`.";
    METRICS_ADDR = "METRICS_ADDR", None, Telemetry, false,
        "`host:port` of the Prometheus `GET /metrics` listener of `serve`, `api`, `worker`, `completion` and `api-server`, never the API's port (e.g. `127.0.0.1:9090`; port 0 picks a free one); unset: off. The Lambdas write the same figures as CloudWatch Embedded Metric Format log lines instead.";
}

/// The suffix that names a secret's Secrets Manager reference in Lambda.
pub const SECRET_ARN_SUFFIX: &str = "_SECRET_ARN";
