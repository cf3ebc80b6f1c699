//! The request bodies of the API, parsed once into checked values
//! ([`CallRequest`], [`GenerateRequest`], [`ResultRequest`],
//! [`StatsRequest`], [`UploadRequest`]): parse, don't validate.
//!
//! Every field a body takes is declared once, as a [`Field`]: its name, its
//! JSON shape and bounds, its default, what it means and which error code a
//! bad value gets. The parser reads fields only through those declarations,
//! and the OpenAPI schema of each body is generated from the same ones (with
//! the deployment's live limits), so the document cannot describe a field the
//! parser does not take, or a bound it does not apply. Nothing here may panic
//! on any input.

mod field;
mod json;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::error_code::ErrorCode;
use crate::family::ModelFamily;
pub use crate::media::{Normalization, OutputFormat, UploadFormat};
use crate::settings::{CallbackSettings, Limits};
use crate::upload::UploadId;

use field::{hex, percent_decode, Body};
pub use field::{object_schema, query_parameters, Bound, Field, Shape};
pub use json::parse_json;

// ---------------------------------------------------------------------------
// Checked values

/// Sampling settings; the defaults are AudioCraft's (see [`PARAM_FIELDS`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GenerationParams {
    /// Softmax temperature; 0 means greedy decoding.
    pub temperature: f64,
    /// Keep the k most likely codes (0: no top-k filter).
    pub top_k: u32,
    /// Nucleus sampling mass (0: no top-p filter).
    pub top_p: f64,
    /// Classifier-free guidance strength.
    pub cfg_coef: f64,
    /// Integer seed: the same seed gives the same audio on the same hardware.
    pub seed: Option<u64>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        // The declared defaults, so they are written in one place.
        Self {
            temperature: TEMPERATURE.default_number(),
            top_k: TOP_K.default_number() as u32,
            top_p: TOP_P.default_number(),
            cfg_coef: CFG_COEF.default_number(),
            seed: None,
        }
    }
}

/// A checked generation request (the body of `POST /v1/call`). Only
/// [`CallRequest::parse`] builds one from client input, so holding one means
/// every limit was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallRequest {
    #[serde(rename = "type")]
    pub family: ModelFamily,
    pub prompt: String,
    pub duration: f64,
    pub samples: u8,
    pub user_id: String,
    pub params: GenerationParams,
    pub format: OutputFormat,
    /// Left out of the stored JSON (and so of the fingerprint) when it is
    /// the default, so requests made before it existed keep their
    /// fingerprint.
    #[serde(default, skip_serializing_if = "is_default")]
    pub normalization: Normalization,
    /// The model that serves the task. As parsed, what the client named (or
    /// `None`); once submitted, the model the task service resolved it to
    /// (the family's default for `None`), which the jobs carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Music only: the upload to condition on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub melody: Option<MelodyRequest>,
    pub callback_url: Option<String>,
    pub ttl_seconds: Option<u64>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// `"melody": {"upload_id": "up_..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MelodyRequest {
    pub upload_id: UploadId,
}

/// `POST /v1/uploads`: what the client is about to PUT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UploadRequest {
    pub format: UploadFormat,
    /// Exactly the PUT body's length; at most `MAX_UPLOAD_BYTES`.
    pub bytes: u64,
}

/// The name tasks store their request under.
pub type TaskRequest = CallRequest;

/// `POST /v1/generate`: a call, and how long to wait for its result.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    pub call: CallRequest,
    pub wait: std::time::Duration,
}

/// `POST /v1/result` (the seed's form): which task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultRequest {
    pub task_id: String,
}

/// `GET /v1/stats`'s query.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StatsRequest {
    pub user_id: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

impl CallRequest {
    /// Checks a call body against the deployment's limits and callback
    /// allow-list.
    pub fn parse(
        body: &Value,
        limits: &Limits,
        callbacks: &CallbackSettings,
    ) -> Result<Self, RequestError> {
        let object = Body::new(body, CALL_FIELDS)?;
        Self::from_body(&object, limits, callbacks)
    }

    fn from_body(
        body: &Body<'_>,
        limits: &Limits,
        callbacks: &CallbackSettings,
    ) -> Result<Self, RequestError> {
        let family = TYPE
            .choice(body, ModelFamily::parse)?
            .ok_or_else(|| TYPE.missing())?;
        let prompt = PROMPT.text(body, limits)?.ok_or_else(|| PROMPT.missing())?;
        let duration = DURATION
            .number(body, limits)?
            .ok_or_else(|| DURATION.missing())?;
        let cap = limits.max_duration_for(family);
        if duration > cap {
            return Err(DURATION.error(format!(
                "duration must be at least {} and at most {cap} seconds for {family}, not {duration}",
                Limits::MIN_DURATION
            )));
        }
        let samples = SAMPLES
            .integer(body, limits)?
            .map_or(1, |n| u8::try_from(n).unwrap_or(Limits::MAX_SAMPLES));
        let user_id = USER_ID
            .text(body, limits)?
            .ok_or_else(|| USER_ID.missing())?;
        let params = match PARAMS.object(body)? {
            None => GenerationParams::default(),
            Some(params) => parse_params(&params, limits)?,
        };
        let format = FORMAT
            .choice(body, |raw| OutputFormat::parse(raw).ok())?
            .unwrap_or_default();
        let normalization = NORMALIZATION
            .choice(body, |raw| Normalization::parse(raw).ok())?
            .unwrap_or_default();
        let model = MODEL.text(body, limits)?;
        let melody = match MELODY.object(body)? {
            None => None,
            Some(melody) => Some(parse_melody(&melody, limits)?),
        };
        if melody.is_some() && family != ModelFamily::Music {
            return Err(RequestError::new(
                ErrorCode::MelodyNotSupported,
                Some(MELODY.name),
                format!("a melody conditions music only, not {family}"),
            ));
        }
        let callback_url = match CALLBACK_URL.text(body, limits)? {
            None => None,
            Some(raw) => Some(check_callback_url(&raw, callbacks)?),
        };
        let ttl_seconds = TTL_SECONDS
            .integer(body, limits)?
            .map(|n| u64::try_from(n).unwrap_or(Limits::MAX_TTL_SECONDS));
        Ok(Self {
            family,
            prompt,
            duration,
            samples,
            user_id,
            params,
            format,
            normalization,
            model,
            melody,
            callback_url,
            ttl_seconds,
        })
    }

    /// SHA-256 over the canonical JSON of the checked request: two bodies that
    /// mean the same thing (key order, defaults spelled out or not) match.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(canonical))
    }
}

impl GenerateRequest {
    pub fn parse(
        body: &Value,
        limits: &Limits,
        callbacks: &CallbackSettings,
    ) -> Result<Self, RequestError> {
        let object = Body::new(body, GENERATE_FIELDS)?;
        let call = CallRequest::from_body(&object, limits, callbacks)?;
        let wait = WAIT_SECONDS
            .number(&object, limits)?
            .unwrap_or_else(|| WAIT_SECONDS.default_number());
        Ok(Self {
            call,
            wait: std::time::Duration::from_secs_f64(wait),
        })
    }
}

impl UploadRequest {
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, RequestError> {
        let object = Body::new(body, UPLOAD_FIELDS)?;
        let format = UPLOAD_CONTENT_TYPE
            .choice(&object, |raw| UploadFormat::parse(raw).ok())?
            .ok_or_else(|| UPLOAD_CONTENT_TYPE.missing())?;
        let bytes = match UPLOAD_BYTES.integer(&object, limits) {
            Ok(bytes) => bytes.ok_or_else(|| UPLOAD_BYTES.missing())?,
            // Only "too many" is a 413: an empty or negative size is just a
            // bad field.
            Err(e) if e.code == ErrorCode::UploadTooLarge => {
                let below = object
                    .get(UPLOAD_BYTES.name)
                    .and_then(Value::as_f64)
                    .is_some_and(|n| n < 1.0);
                return Err(if below {
                    RequestError {
                        code: ErrorCode::InvalidField,
                        ..e
                    }
                } else {
                    e
                });
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            format,
            bytes: u64::try_from(bytes).unwrap_or(u64::MAX),
        })
    }
}

impl ResultRequest {
    pub fn parse(body: &Value, limits: &Limits) -> Result<Self, RequestError> {
        let object = Body::new(body, RESULT_FIELDS)?;
        let task_id = TASK_ID
            .text(&object, limits)?
            .ok_or_else(|| TASK_ID.missing())?;
        Ok(Self { task_id })
    }
}

impl StatsRequest {
    /// Parses a raw query string: the parameters are the same kind of
    /// declared fields as a body's, carried as text.
    pub fn parse(query: &str, limits: &Limits) -> Result<Self, RequestError> {
        let mut object = Map::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name, "query")?;
            let value = percent_decode(raw_value, &name)?;
            if object.contains_key(&name) {
                return Err(RequestError::new(
                    ErrorCode::InvalidQuery,
                    Some(&name),
                    format!("`{name}` is given more than once"),
                ));
            }
            // An empty `user_id=` means "all users", as if absent; an empty
            // bound is not a time, and is refused as one.
            if !(value.is_empty() && name == STATS_USER_ID.name) {
                object.insert(name, Value::String(value));
            }
        }
        let object = Value::Object(object);
        let body = Body::new(&object, STATS_FIELDS).map_err(RequestError::into_query_error)?;
        let user_id = STATS_USER_ID.text(&body, limits)?;
        let from = STATS_FROM.time(&body)?;
        let to = STATS_TO.time(&body)?;
        if let (Some(f), Some(t)) = (from, to) {
            if f > t {
                return Err(STATS_FROM.error("`from` is after `to`".into()));
            }
        }
        Ok(Self { user_id, from, to })
    }
}

fn parse_melody(melody: &Body<'_>, limits: &Limits) -> Result<MelodyRequest, RequestError> {
    let path = format!("{}.{}", MELODY.name, UPLOAD_ID.name);
    let raw = UPLOAD_ID.text(melody, limits)?.ok_or_else(|| {
        RequestError::new(
            ErrorCode::MissingField,
            Some(&path),
            format!("{path} is required"),
        )
    })?;
    // An id that could never be one of ours is simply not found, as for
    // tasks.
    let upload_id = UploadId::parse(&raw).ok_or_else(|| {
        RequestError::new(
            ErrorCode::UploadNotFound,
            Some(&path),
            format!("no upload {raw:?} for this client key"),
        )
    })?;
    Ok(MelodyRequest { upload_id })
}

fn parse_params(params: &Body<'_>, limits: &Limits) -> Result<GenerationParams, RequestError> {
    let defaults = GenerationParams::default();
    Ok(GenerationParams {
        temperature: TEMPERATURE
            .number(params, limits)?
            .unwrap_or(defaults.temperature),
        top_k: TOP_K
            .integer(params, limits)?
            .map_or(defaults.top_k, |k| u32::try_from(k).unwrap_or(u32::MAX)),
        top_p: TOP_P.number(params, limits)?.unwrap_or(defaults.top_p),
        cfg_coef: CFG_COEF
            .number(params, limits)?
            .unwrap_or(defaults.cfg_coef),
        seed: SEED
            .integer(params, limits)?
            .map(|s| u64::try_from(s).unwrap_or(u64::MAX)),
    })
}

/// Only http(s) URLs whose host is on the allow-list (or is
/// `MARKETPLACE_CALLBACK`'s host): a callback must never be a way to make the
/// service call arbitrary addresses.
fn check_callback_url(raw: &str, callbacks: &CallbackSettings) -> Result<String, RequestError> {
    let invalid = |message: String| {
        RequestError::new(
            ErrorCode::InvalidCallbackUrl,
            Some(CALLBACK_URL.name),
            message,
        )
    };
    let url =
        url::Url::parse(raw).map_err(|e| invalid(format!("callback_url is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("callback_url must be an http or https URL".into()));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    if !callbacks.allows_host(&host) {
        return Err(RequestError::new(
            ErrorCode::CallbackNotAllowed,
            Some(CALLBACK_URL.name),
            format!("callback host {host:?} is not on this deployment's allow-list"),
        ));
    }
    Ok(url.to_string())
}

// ---------------------------------------------------------------------------
// Errors

/// A rejected request, in the contract's error shape. The HTTP status comes
/// from the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
}

impl RequestError {
    pub fn new(code: ErrorCode, field: Option<&str>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: field.map(str::to_owned),
        }
    }

    /// In a query string, a body's `unknown_field`/`missing_field` reads as
    /// a bad query.
    fn into_query_error(self) -> Self {
        Self {
            code: ErrorCode::InvalidQuery,
            ..self
        }
    }
}

// ---------------------------------------------------------------------------
// The bodies

pub const TYPE: Field = Field {
    name: "type",
    doc: "\"music\" (MusicGen) or \"audio\" (AudioGen).",
    required: true,
    shape: Shape::Choice {
        values: &["music", "audio"],
    },
    default: None,
    example: Some("\"music\""),
    out_of_range: ErrorCode::InvalidType,
};

pub const PROMPT: Field = Field {
    name: "prompt",
    doc: "What to generate. At most MAX_PROMPT_LEN Unicode characters, not all blank.",
    required: true,
    shape: Shape::Text {
        min_chars: 1,
        max_chars: Bound::MaxPromptLen,
        printable: false,
        blank: Some(ErrorCode::PromptEmpty),
    },
    default: None,
    example: Some("\"lofi hip hop beat with warm piano\""),
    out_of_range: ErrorCode::PromptTooLong,
};

pub const DURATION: Field = Field {
    name: "duration",
    doc: "Seconds of audio, at least 0.1 and at most MAX_DURATION.",
    required: true,
    shape: Shape::Number {
        min: Limits::MIN_DURATION,
        max: Bound::MaxDuration,
    },
    default: None,
    example: Some("8"),
    out_of_range: ErrorCode::DurationOutOfRange,
};

pub const SAMPLES: Field = Field {
    name: "samples",
    doc: "Clips to generate; each is a job, the results come back in order.",
    required: false,
    shape: Shape::Integer {
        min: 1,
        max: Bound::At(Limits::MAX_SAMPLES as f64),
    },
    default: Some("1"),
    example: None,
    out_of_range: ErrorCode::SamplesOutOfRange,
};

pub const USER_ID: Field = Field {
    name: "user_id",
    doc: "The marketplace's end user; used for stats.",
    required: true,
    shape: Shape::Text {
        min_chars: 1,
        max_chars: Bound::At(Limits::MAX_USER_ID_LEN as f64),
        printable: true,
        blank: None,
    },
    default: None,
    example: Some("\"user-42\""),
    out_of_range: ErrorCode::InvalidUserId,
};

pub const TEMPERATURE: Field = Field {
    name: "temperature",
    doc: "Softmax temperature; 0 means greedy decoding.",
    required: false,
    shape: Shape::Number {
        min: 0.0,
        max: Bound::At(10.0),
    },
    default: Some("1.0"),
    example: None,
    out_of_range: ErrorCode::ParamOutOfRange,
};

pub const TOP_K: Field = Field {
    name: "top_k",
    doc: "Keep the k most likely codes (0: no top-k filter).",
    required: false,
    shape: Shape::Integer {
        min: 0,
        max: Bound::At(4096.0),
    },
    default: Some("250"),
    example: None,
    out_of_range: ErrorCode::ParamOutOfRange,
};

pub const TOP_P: Field = Field {
    name: "top_p",
    doc: "Nucleus sampling mass (0: no top-p filter).",
    required: false,
    shape: Shape::Number {
        min: 0.0,
        max: Bound::At(1.0),
    },
    default: Some("0.0"),
    example: None,
    out_of_range: ErrorCode::ParamOutOfRange,
};

pub const CFG_COEF: Field = Field {
    name: "cfg_coef",
    doc: "Classifier-free guidance strength (1 or less: no guidance).",
    required: false,
    shape: Shape::Number {
        min: 0.0,
        max: Bound::At(30.0),
    },
    default: Some("3.0"),
    example: None,
    out_of_range: ErrorCode::ParamOutOfRange,
};

pub const SEED: Field = Field {
    name: "seed",
    doc: "Integer seed: the same seed gives the same audio on the same hardware. Sample i uses seed + i.",
    required: false,
    shape: Shape::Integer {
        min: 0,
        max: Bound::U64Max,
    },
    default: None,
    example: Some("7"),
    out_of_range: ErrorCode::ParamOutOfRange,
};

/// The fields of `params`; all optional.
pub const PARAM_FIELDS: &[&Field] = &[&TEMPERATURE, &TOP_K, &TOP_P, &CFG_COEF, &SEED];

pub const PARAMS: Field = Field {
    name: "params",
    doc: "Sampling parameters; each is optional and defaults to AudioCraft's.",
    required: false,
    shape: Shape::Object(PARAM_FIELDS),
    default: None,
    example: None,
    out_of_range: ErrorCode::InvalidField,
};

pub const FORMAT: Field = Field {
    name: "format",
    doc: "Output format: \"wav\" (16-bit PCM), \"flac\", \"mp3\" or \"ogg\" (Vorbis).",
    required: false,
    shape: Shape::Choice {
        values: &OutputFormat::NAMES,
    },
    default: Some("\"wav\""),
    example: None,
    out_of_range: ErrorCode::UnsupportedFormat,
};

pub const NORMALIZATION: Field = Field {
    name: "normalization",
    doc: "Level of the output: \"none\" (as the model made it), \"loudness\" (EBU R128, -14 LUFS, true peak at most -1 dBTP), \"peak\" (-1 dBFS) or \"clip\" (hard clip to full scale).",
    required: false,
    shape: Shape::Choice {
        values: &Normalization::NAMES,
    },
    default: Some("\"none\""),
    example: None,
    out_of_range: ErrorCode::InvalidField,
};

pub const MODEL: Field = Field {
    name: "model",
    doc: "One of the family's deployed models (GET /v1/models); null: the family's default.",
    required: false,
    shape: Shape::Text {
        min_chars: 1,
        max_chars: Bound::At(256.0),
        printable: true,
        blank: None,
    },
    default: None,
    example: Some("\"facebook/musicgen-melody\""),
    out_of_range: ErrorCode::InvalidField,
};

pub const UPLOAD_ID: Field = Field {
    name: "upload_id",
    doc: "What POST /v1/uploads answered; the bytes must have been PUT.",
    required: true,
    shape: Shape::Text {
        min_chars: 1,
        max_chars: Bound::At(64.0),
        printable: true,
        blank: None,
    },
    default: None,
    example: Some("\"up_0190b7c28f9e7c3a9d1e123456789abc\""),
    out_of_range: ErrorCode::UploadNotFound,
};

pub const MELODY_FIELDS: &[&Field] = &[&UPLOAD_ID];

pub const MELODY: Field = Field {
    name: "melody",
    doc: "Music only: an uploaded clip whose melody the music follows; the model must support melody conditioning (GET /v1/models).",
    required: false,
    shape: Shape::Object(MELODY_FIELDS),
    default: None,
    example: None,
    out_of_range: ErrorCode::InvalidField,
};

pub const UPLOAD_CONTENT_TYPE: Field = Field {
    name: "content_type",
    doc: "The type of the file to be PUT.",
    required: true,
    shape: Shape::Choice {
        values: &UploadFormat::CONTENT_TYPES,
    },
    default: None,
    example: Some("\"audio/mpeg\""),
    out_of_range: ErrorCode::UnsupportedUploadType,
};

pub const UPLOAD_BYTES: Field = Field {
    name: "bytes",
    doc: "The file's exact size; at most MAX_UPLOAD_BYTES.",
    required: true,
    shape: Shape::Integer {
        min: 1,
        max: Bound::MaxUploadBytes,
    },
    default: None,
    example: Some("1234567"),
    out_of_range: ErrorCode::UploadTooLarge,
};

pub const CALLBACK_URL: Field = Field {
    name: "callback_url",
    doc: "Where the result is POSTed when final; only hosts on the deployment's allow-list (CALLBACK_ALLOWED_HOSTS, MARKETPLACE_CALLBACK's host).",
    required: false,
    shape: Shape::Url,
    default: None,
    example: None,
    out_of_range: ErrorCode::InvalidCallbackUrl,
};

pub const TTL_SECONDS: Field = Field {
    name: "ttl_seconds",
    doc: "Queue deadline: a task not started by then ends \"expired\".",
    required: false,
    shape: Shape::Integer {
        min: 1,
        max: Bound::At(Limits::MAX_TTL_SECONDS as f64),
    },
    default: None,
    example: None,
    out_of_range: ErrorCode::TtlOutOfRange,
};

pub const WAIT_SECONDS: Field = Field {
    name: "wait_seconds",
    doc: "How long to wait for the result before answering 202.",
    required: false,
    shape: Shape::Number {
        min: 0.0,
        max: Bound::At(60.0),
    },
    default: Some("30"),
    example: None,
    out_of_range: ErrorCode::InvalidField,
};

pub const TASK_ID: Field = Field {
    name: "task_id",
    doc: "The id /v1/call returned.",
    required: true,
    shape: Shape::Text {
        min_chars: 1,
        max_chars: Bound::At(64.0),
        printable: true,
        blank: None,
    },
    default: None,
    example: None,
    out_of_range: ErrorCode::InvalidField,
};

pub const STATS_USER_ID: Field = Field {
    doc: "Only this end user's tasks; absent or empty: all users of this client key.",
    required: false,
    // Empty is allowed (all users), so the documented minimum is 0.
    shape: Shape::Text {
        min_chars: 0,
        max_chars: Bound::At(Limits::MAX_USER_ID_LEN as f64),
        printable: true,
        blank: None,
    },
    out_of_range: ErrorCode::InvalidQuery,
    ..USER_ID
};

pub const STATS_FROM: Field = Field {
    name: "from",
    doc: "Inclusive lower bound on created_at (RFC 3339).",
    required: false,
    shape: Shape::Time,
    default: None,
    example: Some("\"2026-01-01T00:00:00Z\""),
    out_of_range: ErrorCode::InvalidQuery,
};

pub const STATS_TO: Field = Field {
    name: "to",
    doc: "Inclusive upper bound on created_at (RFC 3339).",
    example: None,
    ..STATS_FROM
};

pub const CALL_FIELDS: &[&Field] = &[
    &TYPE,
    &PROMPT,
    &DURATION,
    &SAMPLES,
    &USER_ID,
    &PARAMS,
    &FORMAT,
    &NORMALIZATION,
    &MODEL,
    &MELODY,
    &CALLBACK_URL,
    &TTL_SECONDS,
];

pub const GENERATE_FIELDS: &[&Field] = &[
    &TYPE,
    &PROMPT,
    &DURATION,
    &SAMPLES,
    &USER_ID,
    &PARAMS,
    &FORMAT,
    &NORMALIZATION,
    &MODEL,
    &MELODY,
    &CALLBACK_URL,
    &TTL_SECONDS,
    &WAIT_SECONDS,
];

pub const UPLOAD_FIELDS: &[&Field] = &[&UPLOAD_CONTENT_TYPE, &UPLOAD_BYTES];

pub const RESULT_FIELDS: &[&Field] = &[&TASK_ID];

pub const STATS_FIELDS: &[&Field] = &[&STATS_USER_ID, &STATS_FROM, &STATS_TO];

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits {
            max_prompt_len: 100,
            max_duration: 30.0,
            max_upload_bytes: 20 * 1024 * 1024,
        }
    }

    fn callbacks() -> CallbackSettings {
        CallbackSettings {
            marketplace_callback: Some("https://market.example.com/cb".into()),
            allowed_hosts: vec!["hooks.example.com".into()],
            webhook_secret: None,
            retry_base: Duration::from_secs(1),
            max_attempts: 1,
            timeout: Duration::from_secs(1),
        }
    }

    fn parse(body: Value) -> Result<CallRequest, RequestError> {
        CallRequest::parse(&body, &limits(), &callbacks())
    }

    fn minimal() -> Value {
        json!({"type": "music", "prompt": "lofi beat", "duration": 8, "user_id": "user-42"})
    }

    #[test]
    fn a_minimal_request_gets_the_contract_defaults() {
        let req = parse(minimal()).unwrap();
        assert_eq!(req.samples, 1);
        assert_eq!(
            req.params,
            GenerationParams {
                temperature: 1.0,
                top_k: 250,
                top_p: 0.0,
                cfg_coef: 3.0,
                seed: None
            }
        );
        assert_eq!(req.format, OutputFormat::Wav);
        assert_eq!(req.normalization, Normalization::None);
        assert_eq!((req.model.as_deref(), req.melody.as_ref()), (None, None));
        assert_eq!(req.duration, 8.0);
    }

    #[test]
    fn prompt_length_is_counted_in_characters_not_bytes() {
        let mut body = minimal();
        body["prompt"] = json!("é".repeat(100)); // 200 bytes, 100 characters
        assert!(parse(body.clone()).is_ok());
        body["prompt"] = json!("é".repeat(140));
        let err = parse(body).unwrap_err();
        assert_eq!(err.code, ErrorCode::PromptTooLong);
        assert_eq!(err.message, "prompt has 140 characters; the limit is 100");
        assert_eq!(err.field.as_deref(), Some("prompt"));
    }

    #[test]
    fn a_prompt_of_blanks_or_zero_width_characters_is_empty() {
        for blank in ["", "   ", "\u{200B}\u{200B}", "\u{FEFF} \u{2060}"] {
            let mut body = minimal();
            body["prompt"] = json!(blank);
            assert_eq!(
                parse(body).unwrap_err().code,
                ErrorCode::PromptEmpty,
                "{blank:?}"
            );
        }
    }

    #[test]
    fn audio_clips_are_capped_at_ten_seconds() {
        let mut body = minimal();
        body["type"] = json!("audio");
        body["duration"] = json!(10);
        assert!(parse(body.clone()).is_ok());
        body["duration"] = json!(10.5);
        assert_eq!(parse(body).unwrap_err().code, ErrorCode::DurationOutOfRange);
    }

    #[test]
    fn durations_outside_the_floor_to_max_are_rejected() {
        for bad in [
            json!(0),
            json!(-1),
            json!(5e-324),
            json!(0.05),
            json!(30.01),
            json!("8"),
        ] {
            let mut body = minimal();
            body["duration"] = bad.clone();
            let err = parse(body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("duration"), "{bad}");
        }
        let mut body = minimal();
        body["duration"] = json!(0.1);
        assert!(parse(body).is_ok());
    }

    #[test]
    fn samples_must_be_one_to_four() {
        for (n, ok) in [(0, false), (1, true), (4, true), (5, false)] {
            let mut body = minimal();
            body["samples"] = json!(n);
            assert_eq!(parse(body).is_ok(), ok, "samples {n}");
        }
        let mut body = minimal();
        body["samples"] = json!(1.5);
        assert_eq!(parse(body).unwrap_err().code, ErrorCode::InvalidField);
    }

    #[test]
    fn missing_and_mistyped_fields_name_the_field() {
        let mut body = minimal();
        body.as_object_mut().unwrap().remove("user_id");
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (ErrorCode::MissingField, Some("user_id"))
        );

        let mut body = minimal();
        body["prompt"] = json!(42);
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (ErrorCode::InvalidField, Some("prompt"))
        );
    }

    #[test]
    fn unknown_fields_and_params_are_rejected() {
        let mut body = minimal();
        body["prompt_text"] = json!("x");
        assert_eq!(parse(body).unwrap_err().code, ErrorCode::UnknownField);
        let mut body = minimal();
        body["params"] = json!({"temprature": 1.0});
        let err = parse(body).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("params.temprature"));
        let mut body = minimal();
        body["wait_seconds"] = json!(3);
        assert_eq!(
            parse(body).unwrap_err().code,
            ErrorCode::UnknownField,
            "wait_seconds belongs to /v1/generate only"
        );
    }

    #[test]
    fn params_are_range_checked() {
        for (name, value) in [
            ("temperature", json!(-1)),
            ("top_p", json!(1.5)),
            ("top_k", json!(-3)),
            ("seed", json!(-1)),
            ("seed", json!(1.5)),
        ] {
            let mut body = minimal();
            body["params"] = json!({ name: value });
            let err = parse(body).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some(format!("params.{name}").as_str())
            );
        }
        let mut body = minimal();
        body["params"] = json!({"seed": 7, "top_k": 50, "cfg_coef": 1.5});
        let req = parse(body).unwrap();
        assert_eq!(req.params.seed, Some(7));
        assert_eq!(req.params.top_k, 50);
        let mut body = minimal();
        body["params"] = json!({"seed": u64::MAX});
        assert_eq!(parse(body).unwrap().params.seed, Some(u64::MAX));
    }

    #[test]
    fn an_unsupported_format_is_a_422_not_a_400() {
        let mut body = minimal();
        body["format"] = json!("aiff");
        let err = parse(body).unwrap_err();
        assert_eq!(err.code, ErrorCode::UnsupportedFormat);
        assert_eq!(err.code.http_status(), Some(422));
        let mut body = minimal();
        body["format"] = json!(3);
        assert_eq!(parse(body).unwrap_err().code, ErrorCode::InvalidField);
    }

    #[test]
    fn every_format_and_normalization_is_taken_by_its_name() {
        for format in OutputFormat::ALL {
            let mut body = minimal();
            body["format"] = json!(format.as_str());
            assert_eq!(parse(body).unwrap().format, format);
        }
        for n in Normalization::ALL {
            let mut body = minimal();
            body["normalization"] = json!(n.as_str());
            assert_eq!(parse(body).unwrap().normalization, n);
        }
        let mut body = minimal();
        body["normalization"] = json!("louder");
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (ErrorCode::InvalidField, Some("normalization"))
        );
    }

    #[test]
    fn model_and_melody_are_read_and_melody_is_for_music_only() {
        let mut body = minimal();
        body["model"] = json!("facebook/musicgen-melody");
        body["melody"] = json!({"upload_id": "up_0190b7c28f9e"});
        let req = parse(body.clone()).unwrap();
        assert_eq!(req.model.as_deref(), Some("facebook/musicgen-melody"));
        assert_eq!(
            req.melody.map(|m| m.upload_id.to_string()).as_deref(),
            Some("up_0190b7c28f9e")
        );

        body["type"] = json!("audio");
        body["duration"] = json!(5);
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            (ErrorCode::MelodyNotSupported, Some("melody"))
        );

        for (melody, code, field) in [
            (json!({}), ErrorCode::MissingField, "melody.upload_id"),
            (
                json!({"upload_id": 3}),
                ErrorCode::InvalidField,
                "melody.upload_id",
            ),
            (
                json!({"upload_id": "../x"}),
                ErrorCode::UploadNotFound,
                "melody.upload_id",
            ),
            (
                json!({"upload_id": "up_1", "x": 1}),
                ErrorCode::UnknownField,
                "melody.x",
            ),
            (json!("up_1"), ErrorCode::InvalidField, "melody"),
        ] {
            let mut body = minimal();
            body["melody"] = melody.clone();
            let err = parse(body).unwrap_err();
            assert_eq!(
                (err.code, err.field.as_deref()),
                (code, Some(field)),
                "{melody}"
            );
        }
        let mut body = minimal();
        body["model"] = json!("");
        assert_eq!(parse(body).unwrap_err().field.as_deref(), Some("model"));
    }

    #[test]
    fn new_fields_at_their_defaults_keep_the_old_fingerprint() {
        let plain = parse(minimal()).unwrap();
        let mut body = minimal();
        body["normalization"] = json!("none");
        body["model"] = json!(null);
        body["melody"] = json!(null);
        assert_eq!(parse(body).unwrap().fingerprint(), plain.fingerprint());
        // What a task stored before these fields existed still reads.
        let stored = json!({"type": "music", "prompt": "p", "duration": 1.0, "samples": 1,
            "user_id": "u", "params": GenerationParams::default(), "format": "wav",
            "callback_url": null, "ttl_seconds": null});
        let old: CallRequest = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!(old.normalization, Normalization::None);
        assert_eq!(serde_json::to_value(&old).unwrap(), stored);
    }

    #[test]
    fn uploads_declare_an_allowed_type_and_a_size_within_the_limit() {
        let limits = limits();
        let ok = UploadRequest::parse(
            &json!({"content_type": "audio/mpeg", "bytes": 1234}),
            &limits,
        )
        .unwrap();
        assert_eq!((ok.format, ok.bytes), (UploadFormat::Mpeg, 1234));
        let max = limits.max_upload_bytes;
        assert!(
            UploadRequest::parse(&json!({"content_type": "audio/wav", "bytes": max}), &limits)
                .is_ok()
        );
        for (body, code, status) in [
            (
                json!({"content_type": "audio/wav", "bytes": max + 1}),
                ErrorCode::UploadTooLarge,
                413,
            ),
            (
                json!({"content_type": "video/mp4", "bytes": 10}),
                ErrorCode::UnsupportedUploadType,
                422,
            ),
            (
                json!({"content_type": "audio/wav", "bytes": 0}),
                ErrorCode::InvalidField,
                400,
            ),
            (
                json!({"content_type": "audio/wav", "bytes": -5}),
                ErrorCode::InvalidField,
                400,
            ),
            (
                json!({"content_type": "audio/wav", "bytes": 1.5}),
                ErrorCode::InvalidField,
                400,
            ),
            (
                json!({"content_type": "audio/wav"}),
                ErrorCode::MissingField,
                400,
            ),
            (json!({"bytes": 10}), ErrorCode::MissingField, 400),
            (
                json!({"content_type": "audio/wav", "bytes": 1, "name": "x"}),
                ErrorCode::UnknownField,
                400,
            ),
        ] {
            let err = UploadRequest::parse(&body, &limits).unwrap_err();
            assert_eq!(err.code, code, "{body}");
            assert_eq!(err.code.http_status(), Some(status), "{body}");
        }
        let schema = object_schema(UPLOAD_FIELDS, &limits);
        assert_eq!(schema["properties"]["bytes"]["maximum"], json!(max));
        assert_eq!(
            schema["properties"]["content_type"]["enum"],
            json!(["audio/wav", "audio/flac", "audio/mpeg", "audio/ogg"])
        );
    }

    #[test]
    fn callbacks_only_go_to_allowed_hosts() {
        let mut body = minimal();
        body["callback_url"] = json!("https://hooks.example.com/done");
        assert!(parse(body.clone()).is_ok());
        body["callback_url"] = json!("https://market.example.com/other");
        assert!(
            parse(body.clone()).is_ok(),
            "MARKETPLACE_CALLBACK's host is always allowed"
        );
        body["callback_url"] = json!("http://169.254.169.254/latest/meta-data");
        assert_eq!(
            parse(body.clone()).unwrap_err().code,
            ErrorCode::CallbackNotAllowed
        );
        body["callback_url"] = json!("file:///etc/passwd");
        assert_eq!(parse(body).unwrap_err().code, ErrorCode::InvalidCallbackUrl);
    }

    #[test]
    fn the_fingerprint_ignores_key_order_and_spelled_out_defaults() {
        let a = parse(minimal()).unwrap();
        let b = parse(json!({"user_id": "user-42", "duration": 8.0, "samples": 1, "prompt": "lofi beat", "type": "music", "format": "wav"})).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut other = minimal();
        other["prompt"] = json!("jazz");
        assert_ne!(a.fingerprint(), parse(other).unwrap().fingerprint());
    }

    #[test]
    fn non_object_bodies_are_rejected() {
        for body in [json!([]), json!("x"), json!(null), json!(1)] {
            assert_eq!(parse(body).unwrap_err().code, ErrorCode::InvalidBody);
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let err = parse_json(br#"{"prompt": "a", "prompt": "b"}"#).unwrap_err();
        assert_eq!(err.code, ErrorCode::DuplicateField);
        assert_eq!(err.field.as_deref(), Some("prompt"));
        let err = parse_json(br#"{"params": {"seed": 1, "seed": 2}}"#).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("params.seed"));
        assert_eq!(
            parse_json(b"{\"a\": ").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_json(b"{} {}").unwrap_err().code,
            ErrorCode::InvalidJson
        );
        assert_eq!(
            parse_json(br#"{"a": [1, {"b": 2}]}"#).unwrap(),
            json!({"a": [1, {"b": 2}]})
        );
    }

    #[test]
    fn generate_takes_the_call_fields_plus_a_bounded_wait() {
        let mut body = minimal();
        let req = GenerateRequest::parse(&body, &limits(), &callbacks()).unwrap();
        assert_eq!(req.wait, Duration::from_secs(30));
        body["wait_seconds"] = json!(2.5);
        let req = GenerateRequest::parse(&body, &limits(), &callbacks()).unwrap();
        assert_eq!(req.wait, Duration::from_millis(2500));
        body["wait_seconds"] = json!(61);
        let err = GenerateRequest::parse(&body, &limits(), &callbacks()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("wait_seconds"));
    }

    #[test]
    fn stats_queries_are_bounded_and_strict() {
        let q =
            StatsRequest::parse("user_id=user-42&from=2026-01-01T00:00:00Z", &limits()).unwrap();
        assert_eq!(q.user_id.as_deref(), Some("user-42"));
        assert!(q.from.is_some() && q.to.is_none());
        assert_eq!(
            StatsRequest::parse("user_id=", &limits()).unwrap().user_id,
            None
        );
        assert!(StatsRequest::parse("to=9999-12-31T23:59:59Z", &limits()).is_ok());
        for bad in [
            "to=",
            "from=",
            "to=10000-01-01T00:00:00Z",
            "from=0000-12-31T23:59:59Z",
            "from=yesterday",
            "user_id=%ff",
            "user_id=a&user_id=b",
            "from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "colour=red",
        ] {
            let err = StatsRequest::parse(bad, &limits()).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidQuery, "{bad}");
            assert_eq!(err.code.http_status(), Some(400), "{bad}");
        }
        let q = StatsRequest::parse("user_id=caf%C3%A9+bar", &limits()).unwrap();
        assert_eq!(q.user_id.as_deref(), Some("café bar"));
    }

    #[test]
    fn the_schema_documents_exactly_the_fields_and_bounds_the_parser_applies() {
        let schema = object_schema(CALL_FIELDS, &limits());
        let documented: Vec<&str> = schema["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut accepted: Vec<&str> = CALL_FIELDS.iter().map(|f| f.name).collect();
        accepted.sort_unstable();
        let mut documented_sorted = documented.clone();
        documented_sorted.sort_unstable();
        assert_eq!(documented_sorted, accepted);
        assert_eq!(
            schema["required"],
            json!(["type", "prompt", "duration", "user_id"])
        );
        assert_eq!(schema["properties"]["prompt"]["maxLength"], json!(100));
        assert_eq!(schema["properties"]["duration"]["maximum"], json!(30));
        assert_eq!(schema["properties"]["samples"]["maximum"], json!(4));
        assert_eq!(
            schema["properties"]["params"]["properties"]["seed"]["maximum"],
            json!(u64::MAX)
        );
        assert!(schema["properties"]["params"].get("required").is_none());

        // Every documented field, set alone to its example or default or a
        // bound, is accepted by the parser.
        for field in CALL_FIELDS.iter().filter(|f| !f.required) {
            let value = match field.name {
                "params" => json!({"seed": 5}),
                "model" => json!("facebook/musicgen-small"),
                "melody" => json!({"upload_id": "up_1"}),
                "callback_url" => json!("https://hooks.example.com/x"),
                "ttl_seconds" => json!(60),
                _ => field
                    .default
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null),
            };
            let mut body = minimal();
            body[field.name] = value;
            assert!(parse(body).is_ok(), "{}", field.name);
        }
        for field in PARAM_FIELDS {
            let max = &schema["properties"]["params"]["properties"][field.name]["maximum"];
            let mut body = minimal();
            body["params"] = json!({ field.name: max });
            assert!(parse(body).is_ok(), "params.{} at its maximum", field.name);
        }
    }

    #[test]
    fn the_stats_window_schema_names_the_years_the_parser_takes() {
        let schema = object_schema(STATS_FIELDS, &limits());
        for name in ["from", "to"] {
            let field = &schema["properties"][name];
            assert_eq!(field["format"], "date-time");
            let examples = field["examples"].as_array().unwrap();
            assert_eq!(examples.len(), 2, "{name}");
            for example in examples {
                let query = format!("{name}={}", example.as_str().unwrap());
                assert!(StatsRequest::parse(&query, &limits()).is_ok(), "{query}");
            }
            // The pattern refuses what the parser refuses for its year alone.
            assert_eq!(field["pattern"], "^(?!0000-)");
            assert!(
                StatsRequest::parse(&format!("{name}=0000-06-01T00:00:00Z"), &limits()).is_err()
            );
            assert!(field["description"]
                .as_str()
                .unwrap()
                .contains("years 1 to 9999"));
        }
    }
}
