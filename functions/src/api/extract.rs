//! Extractors whose rejections use the contract's error shape, so malformed
//! input gets the same answer format as a bad field (axum's own rejections
//! answer in plain text).

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use serde_json::Value;
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::request::parse_json;

use super::error::ApiError;
use super::AppState;

/// A JSON body: `415` when it is not declared as JSON, `413` over
/// `MAX_BODY_BYTES`, `408` when it is slower than `HTTP_BODY_TIMEOUT_MS`,
/// `400` when it does not parse or repeats a key.
pub struct JsonBody(pub Value);

/// What a route with a JSON body may answer before the body's fields are
/// looked at; the OpenAPI document lists these on each such route.
pub const JSON_BODY_REFUSALS: [ErrorCode; 5] = [
    ErrorCode::InvalidJson,
    ErrorCode::RequestTimeout,
    ErrorCode::BodyTooLarge,
    ErrorCode::UnsupportedMediaType,
    ErrorCode::BadRequest,
];

impl FromRequest<AppState> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|mime| {
                let mime = mime.trim().to_ascii_lowercase();
                mime == "application/json"
                    || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "send the body as JSON with `Content-Type: application/json`",
            ));
        }
        let limit = state.api.max_body_bytes;
        let too_large = || {
            ApiError::new(
                ErrorCode::BodyTooLarge,
                format!("the body is over the {limit}-byte limit"),
            )
        };
        if let Some(declared) = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok())
        {
            if declared > limit {
                return Err(too_large());
            }
        }
        let bytes: Bytes = read_body(req.into_body(), limit, state.api.body_timeout)
            .await
            .map_err(|e| match e {
                BodyError::TooLong => too_large(),
                other => other.into(),
            })?;
        Ok(JsonBody(parse_json(&bytes)?))
    }
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum BodyError {
    /// Longer than the limit.
    TooLong,
    /// Not all there within the body timeout (a slow or stalled client).
    TimedOut,
    /// The connection broke off mid-body.
    Broken,
}

impl From<BodyError> for ApiError {
    fn from(e: BodyError) -> Self {
        match e {
            BodyError::TooLong => ApiError::new(ErrorCode::BodyTooLarge, "the body is too large"),
            BodyError::TimedOut => ApiError::new(
                ErrorCode::RequestTimeout,
                "the request body did not arrive in time",
            ),
            BodyError::Broken => ApiError::new(ErrorCode::BadRequest, "the request body broke off"),
        }
    }
}

/// Reads a whole body of at most `limit` bytes within `timeout`: a client
/// that sends half a body and stops holds a connection for `timeout` at most.
pub async fn read_body(
    body: axum::body::Body,
    limit: usize,
    timeout: std::time::Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(BodyError::TimedOut),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_long {
                BodyError::TooLong
            } else {
                BodyError::Broken
            })
        }
    }
}

/// The `{task_id}` path segment. Any string is accepted here; ids that could
/// never be ours are answered `404` by the service.
pub struct TaskIdPath(pub String);

impl FromRequestParts<AppState> for TaskIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidTaskId,
                        format!("the task id in the path is unreadable: {e}"),
                    )
                    .with_field("task_id")
                })?;
        Ok(TaskIdPath(id))
    }
}

/// The optional `Idempotency-Key` header: printable ASCII, 1 to 255 bytes.
pub struct IdempotencyKey(pub Option<String>);

impl FromRequestParts<AppState> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let key = raw
            .to_str()
            .ok()
            .filter(|k| {
                !k.is_empty()
                    && k.len() <= 255
                    && k.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
            })
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidIdempotencyKey,
                    "Idempotency-Key must be 1 to 255 printable ASCII characters",
                )
                .with_field("Idempotency-Key")
            })?;
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}
