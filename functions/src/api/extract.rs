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
/// `MAX_BODY_BYTES`, `400` when it does not parse or repeats a key.
pub struct JsonBody(pub Value);

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
        let bytes: Bytes = axum::body::to_bytes(req.into_body(), limit)
            .await
            .map_err(|_| too_large())?;
        Ok(JsonBody(parse_json(&bytes)?))
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
