//! The call request: parsing a client's JSON body into a checked
//! [`TaskRequest`], with the seed's limits.
//!
//! Parsing is done field by field over a JSON object rather than through a
//! derived `Deserialize`, so every rejection names the field it is about and
//! carries the contract's error code. Nothing here may panic on any input.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use crate::task::ModelFamily;

/// Limits a deployment puts on requests (the seed's `MAX_PROMPT_LEN` and
/// `MAX_DURATION`, and the rest of the contract's bounds).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Counted in Unicode characters, not bytes.
    pub max_prompt_len: usize,
    /// Seconds.
    pub max_duration: f64,
    /// AudioGen was trained on 10 s clips and cannot make longer ones.
    pub audio_max_duration: f64,
    pub max_samples: u8,
    pub max_ttl_seconds: u64,
    /// Hosts a per-task `callback_url` may name.
    pub callback_allowed_hosts: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_prompt_len: 100,
            max_duration: 30.0,
            audio_max_duration: 10.0,
            max_samples: 4,
            max_ttl_seconds: 7 * 24 * 3600,
            callback_allowed_hosts: Vec::new(),
        }
    }
}

/// The one audio format served today: 16-bit PCM WAV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum AudioFormat {
    #[default]
    Wav,
}

impl AudioFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            AudioFormat::Wav => "audio/wav",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            AudioFormat::Wav => "wav",
        }
    }
}

/// Sampling settings; the defaults are AudioCraft's.
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
        Self {
            temperature: 1.0,
            top_k: 250,
            top_p: 0.0,
            cfg_coef: 3.0,
            seed: None,
        }
    }
}

/// A checked generation request. Only [`parse_call_request`] builds one from
/// client input, so holding one means every limit was checked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRequest {
    #[serde(rename = "type")]
    pub family: ModelFamily,
    pub prompt: String,
    pub duration: f64,
    pub samples: u8,
    pub user_id: String,
    pub params: GenerationParams,
    pub format: AudioFormat,
    pub callback_url: Option<String>,
    pub ttl_seconds: Option<u64>,
}

impl TaskRequest {
    /// SHA-256 over the canonical JSON of the checked request: two bodies that
    /// mean the same thing (key order, defaults spelled out or not) match.
    pub fn fingerprint(&self) -> String {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        hex(&Sha256::digest(canonical))
    }
}

/// A rejected request, in the contract's error shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    pub kind: RequestErrorKind,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
}

/// `Invalid` answers 400; `Unsupported` (well-formed, but this deployment
/// cannot serve it) answers 422.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestErrorKind {
    Invalid,
    Unsupported,
}

impl RequestError {
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            kind: RequestErrorKind::Invalid,
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    pub fn unsupported(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        Self {
            kind: RequestErrorKind::Unsupported,
            code,
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }
}

const KNOWN_FIELDS: &[&str] = &[
    "type",
    "prompt",
    "duration",
    "samples",
    "user_id",
    "params",
    "format",
    "callback_url",
    "ttl_seconds",
];
const KNOWN_PARAMS: &[&str] = &["temperature", "top_k", "top_p", "cfg_coef", "seed"];
const MAX_USER_ID_LEN: usize = 128;

/// Checks a call body against the limits. `extra_fields` are accepted and
/// ignored (e.g. `/v1/generate`'s `wait_seconds`).
pub fn parse_call_request(
    body: &Value,
    limits: &Limits,
    marketplace_callback: Option<&str>,
    extra_fields: &[&str],
) -> Result<TaskRequest, RequestError> {
    let Some(object) = body.as_object() else {
        return Err(RequestError {
            kind: RequestErrorKind::Invalid,
            code: "invalid_body",
            message: "the request body must be a JSON object".into(),
            field: None,
        });
    };
    if let Some(unknown) = object
        .keys()
        .find(|k| !KNOWN_FIELDS.contains(&k.as_str()) && !extra_fields.contains(&k.as_str()))
    {
        return Err(RequestError::invalid(
            "unknown_field",
            unknown,
            format!(
                "unknown field `{unknown}`; expected one of {}",
                KNOWN_FIELDS.join(", ")
            ),
        ));
    }

    let raw_family = required_str(object, "type")?;
    let family = ModelFamily::parse(raw_family).ok_or_else(|| {
        RequestError::invalid(
            "invalid_type",
            "type",
            format!("type must be \"music\" or \"audio\", not {raw_family:?}"),
        )
    })?;

    let prompt = required_str(object, "prompt")?;
    if prompt.trim().is_empty() {
        return Err(RequestError::invalid(
            "prompt_empty",
            "prompt",
            "prompt must not be empty",
        ));
    }
    let prompt_chars = prompt.chars().count();
    if prompt_chars > limits.max_prompt_len {
        return Err(RequestError::invalid(
            "prompt_too_long",
            "prompt",
            format!(
                "prompt has {prompt_chars} characters; the limit is {}",
                limits.max_prompt_len
            ),
        ));
    }

    let duration = required_number(object, "duration")?;
    let family_cap = match family {
        ModelFamily::Music => limits.max_duration,
        ModelFamily::Audio => limits.max_duration.min(limits.audio_max_duration),
    };
    if !(duration > 0.0 && duration <= family_cap) {
        return Err(RequestError::invalid(
            "duration_out_of_range",
            "duration",
            format!("duration must be more than 0 and at most {family_cap} seconds for {family}, not {duration}"),
        ));
    }

    let samples = match optional_integer(object, "samples")? {
        None => 1,
        Some(n) if (1..=i128::from(limits.max_samples)).contains(&n) => n as u8,
        Some(n) => {
            return Err(RequestError::invalid(
                "samples_out_of_range",
                "samples",
                format!("samples must be 1 to {}, not {n}", limits.max_samples),
            ))
        }
    };

    let user_id = required_str(object, "user_id")?;
    if user_id.is_empty()
        || user_id.chars().count() > MAX_USER_ID_LEN
        || user_id.chars().any(char::is_control)
    {
        return Err(RequestError::invalid(
            "invalid_user_id",
            "user_id",
            format!("user_id must be 1 to {MAX_USER_ID_LEN} printable characters"),
        ));
    }

    let params = parse_params(object.get("params"))?;

    let format = match object.get("format") {
        None | Some(Value::Null) => AudioFormat::Wav,
        Some(Value::String(s)) if s == "wav" => AudioFormat::Wav,
        Some(Value::String(s)) => {
            return Err(RequestError::unsupported(
                "unsupported_format",
                "format",
                format!("format {s:?} is not supported; use \"wav\""),
            ))
        }
        Some(_) => return Err(wrong_type("format", "a string")),
    };

    let callback_url = match object.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(raw)) => Some(check_callback_url(
            raw,
            &limits.callback_allowed_hosts,
            marketplace_callback,
        )?),
        Some(_) => return Err(wrong_type("callback_url", "a string")),
    };

    let ttl_seconds = match optional_integer(object, "ttl_seconds")? {
        None => None,
        Some(n) if n >= 1 && n <= i128::from(limits.max_ttl_seconds) => Some(n as u64),
        Some(n) => {
            return Err(RequestError::invalid(
                "ttl_out_of_range",
                "ttl_seconds",
                format!(
                    "ttl_seconds must be 1 to {}, not {n}",
                    limits.max_ttl_seconds
                ),
            ))
        }
    };

    Ok(TaskRequest {
        family,
        prompt: prompt.to_owned(),
        duration,
        samples,
        user_id: user_id.to_owned(),
        params,
        format,
        callback_url,
        ttl_seconds,
    })
}

fn parse_params(raw: Option<&Value>) -> Result<GenerationParams, RequestError> {
    let mut params = GenerationParams::default();
    let object = match raw {
        None | Some(Value::Null) => return Ok(params),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(wrong_type("params", "an object")),
    };
    if let Some(unknown) = object.keys().find(|k| !KNOWN_PARAMS.contains(&k.as_str())) {
        return Err(RequestError::invalid(
            "unknown_field",
            &format!("params.{unknown}"),
            format!(
                "unknown parameter `{unknown}`; expected one of {}",
                KNOWN_PARAMS.join(", ")
            ),
        ));
    }
    let field = |name: &str| format!("params.{name}");
    if let Some(t) = optional_number(object, "temperature", &field("temperature"))? {
        if !(0.0..=10.0).contains(&t) {
            return Err(out_of_range(&field("temperature"), "0 to 10", t));
        }
        params.temperature = t;
    }
    if let Some(k) = optional_integer_named(object, "top_k", &field("top_k"))? {
        if !(0..=4096).contains(&k) {
            return Err(out_of_range(&field("top_k"), "0 to 4096", k));
        }
        params.top_k = k as u32;
    }
    if let Some(p) = optional_number(object, "top_p", &field("top_p"))? {
        if !(0.0..=1.0).contains(&p) {
            return Err(out_of_range(&field("top_p"), "0 to 1", p));
        }
        params.top_p = p;
    }
    if let Some(c) = optional_number(object, "cfg_coef", &field("cfg_coef"))? {
        if !(0.0..=30.0).contains(&c) {
            return Err(out_of_range(&field("cfg_coef"), "0 to 30", c));
        }
        params.cfg_coef = c;
    }
    if let Some(seed) = optional_integer_named(object, "seed", &field("seed"))? {
        if !(0..=i128::from(u64::MAX)).contains(&seed) {
            return Err(out_of_range(&field("seed"), "0 to 2^64-1", seed));
        }
        params.seed = Some(seed as u64);
    }
    Ok(params)
}

/// Only http(s) URLs whose host is on the allow-list (or is
/// `MARKETPLACE_CALLBACK`'s host): a callback must never be a way to make the
/// service call arbitrary addresses.
fn check_callback_url(
    raw: &str,
    allowed_hosts: &[String],
    marketplace_callback: Option<&str>,
) -> Result<String, RequestError> {
    let url = url::Url::parse(raw).map_err(|e| {
        RequestError::invalid(
            "invalid_callback_url",
            "callback_url",
            format!("callback_url is not a URL: {e}"),
        )
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(RequestError::invalid(
            "invalid_callback_url",
            "callback_url",
            "callback_url must be an http or https URL",
        ));
    }
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let marketplace_host = marketplace_callback
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    let allowed = allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&host))
        || marketplace_host.as_deref() == Some(host.as_str());
    if !allowed {
        return Err(RequestError::invalid(
            "callback_not_allowed",
            "callback_url",
            format!("callback host {host:?} is not on this deployment's allow-list"),
        ));
    }
    Ok(url.to_string())
}

fn required_str<'a>(object: &'a Map<String, Value>, name: &str) -> Result<&'a str, RequestError> {
    match object.get(name) {
        None | Some(Value::Null) => Err(missing(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(wrong_type(name, "a string")),
    }
}

fn required_number(object: &Map<String, Value>, name: &str) -> Result<f64, RequestError> {
    optional_number(object, name, name)?.ok_or_else(|| missing(name))
}

fn optional_number(
    object: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<f64>, RequestError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite())
            .map(Some)
            .ok_or_else(|| wrong_type(field, "a finite number")),
        Some(_) => Err(wrong_type(field, "a number")),
    }
}

fn optional_integer(object: &Map<String, Value>, name: &str) -> Result<Option<i128>, RequestError> {
    optional_integer_named(object, name, name)
}

/// Integers as JSON integers (or floats with no fraction, which some JSON
/// encoders emit for every number).
fn optional_integer_named(
    object: &Map<String, Value>,
    name: &str,
    field: &str,
) -> Result<Option<i128>, RequestError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i128::from(i)))
            } else if let Some(u) = n.as_u64() {
                Ok(Some(i128::from(u)))
            } else {
                match n.as_f64() {
                    Some(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e18 => {
                        Ok(Some(f as i128))
                    }
                    _ => Err(wrong_type(field, "an integer")),
                }
            }
        }
        Some(_) => Err(wrong_type(field, "an integer")),
    }
}

fn missing(field: &str) -> RequestError {
    RequestError::invalid("missing_field", field, format!("{field} is required"))
}

fn wrong_type(field: &str, expected: &str) -> RequestError {
    RequestError::invalid(
        "invalid_field",
        field,
        format!("{field} must be {expected}"),
    )
}

fn out_of_range(field: &str, range: &str, got: impl std::fmt::Display) -> RequestError {
    RequestError::invalid(
        "param_out_of_range",
        field,
        format!("{field} must be {range}, not {got}"),
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn limits() -> Limits {
        Limits {
            callback_allowed_hosts: vec!["hooks.example.com".into()],
            ..Limits::default()
        }
    }

    fn parse(body: Value) -> Result<TaskRequest, RequestError> {
        parse_call_request(&body, &limits(), Some("https://market.example.com/cb"), &[])
    }

    fn minimal() -> Value {
        json!({"type": "music", "prompt": "lofi beat", "duration": 8, "user_id": "user-42"})
    }

    #[test]
    fn a_minimal_request_gets_the_contract_defaults() {
        let req = parse(minimal()).unwrap();
        assert_eq!(req.samples, 1);
        assert_eq!(req.params, GenerationParams::default());
        assert_eq!(req.format, AudioFormat::Wav);
        assert_eq!(req.duration, 8.0);
    }

    #[test]
    fn prompt_length_is_counted_in_characters_not_bytes() {
        let mut body = minimal();
        body["prompt"] = json!("é".repeat(100)); // 200 bytes, 100 characters
        assert!(parse(body.clone()).is_ok());
        body["prompt"] = json!("é".repeat(140));
        let err = parse(body).unwrap_err();
        assert_eq!(err.code, "prompt_too_long");
        assert_eq!(err.message, "prompt has 140 characters; the limit is 100");
        assert_eq!(err.field.as_deref(), Some("prompt"));
    }

    #[test]
    fn audio_clips_are_capped_at_ten_seconds() {
        let mut body = minimal();
        body["type"] = json!("audio");
        body["duration"] = json!(10);
        assert!(parse(body.clone()).is_ok());
        body["duration"] = json!(10.5);
        assert_eq!(parse(body).unwrap_err().code, "duration_out_of_range");
    }

    #[test]
    fn durations_outside_zero_to_max_are_rejected() {
        for bad in [json!(0), json!(-1), json!(30.01), json!("8")] {
            let mut body = minimal();
            body["duration"] = bad.clone();
            let err = parse(body).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("duration"), "{bad}");
        }
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
        assert_eq!(parse(body).unwrap_err().code, "invalid_field");
    }

    #[test]
    fn missing_and_mistyped_fields_name_the_field() {
        let mut body = minimal();
        body.as_object_mut().unwrap().remove("user_id");
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("missing_field", Some("user_id"))
        );

        let mut body = minimal();
        body["prompt"] = json!(42);
        let err = parse(body).unwrap_err();
        assert_eq!(
            (err.code, err.field.as_deref()),
            ("invalid_field", Some("prompt"))
        );
    }

    #[test]
    fn unknown_fields_and_params_are_rejected() {
        let mut body = minimal();
        body["prompt_text"] = json!("x");
        assert_eq!(parse(body).unwrap_err().code, "unknown_field");
        let mut body = minimal();
        body["params"] = json!({"temprature": 1.0});
        let err = parse(body).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("params.temprature"));
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
    }

    #[test]
    fn an_unsupported_format_is_a_422_not_a_400() {
        let mut body = minimal();
        body["format"] = json!("mp3");
        let err = parse(body).unwrap_err();
        assert_eq!(err.kind, RequestErrorKind::Unsupported);
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
            "callback_not_allowed"
        );
        body["callback_url"] = json!("file:///etc/passwd");
        assert_eq!(parse(body).unwrap_err().code, "invalid_callback_url");
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
            assert_eq!(parse(body).unwrap_err().code, "invalid_body");
        }
    }
}
