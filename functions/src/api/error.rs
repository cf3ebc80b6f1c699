//! The one place where failures become HTTP answers, always in the
//! contract's shape `{"error": {"code", "message", "field"}}`. The status and
//! `Retry-After` come from the [`ErrorCode`] (see
//! `sound_creator_core::error_code`), so no handler picks a status itself.
//!
//! Backend details are logged, never sent: the client learns which kind of
//! backend is down and when to come back, not its address or driver error.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::ports::BackendError;
use sound_creator_core::request::RequestError;
use sound_creator_core::service::ServiceError;
use sound_creator_core::view::{ErrorBody, ErrorDocument};

#[derive(Debug)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub field: Option<String>,
    /// Seconds for `Retry-After`; the code's own policy unless a caller
    /// knows better (the rate limiter knows when the next token comes).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            field: None,
            retry_after: code.retry_after_seconds(),
        }
    }

    pub fn with_field(mut self, field: &str) -> Self {
        self.field = Some(field.to_owned());
        self
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn unauthorized() -> Self {
        Self::new(
            ErrorCode::Unauthorized,
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.code
            .http_status()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        ApiError {
            field: e.field,
            ..ApiError::new(e.code, e.message)
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let code = err.code();
        match err {
            ServiceError::Request(e) => e.into(),
            ServiceError::NotFound(id) => {
                ApiError::new(code, format!("no task {id:?} for this client key"))
            }
            ServiceError::ResultExpired(id) => ApiError::new(
                code,
                format!("the result of task {id} is no longer kept (RESULT_TTL passed)"),
            ),
            ServiceError::AlreadyFinal { id, status } => {
                ApiError::new(code, format!("task {id} is already {status}"))
            }
            ServiceError::IdempotencyKeyReused => ApiError::new(
                code,
                "this Idempotency-Key was already used with a different request body",
            ),
            ServiceError::NotDeployed(family) => ApiError::new(
                code,
                format!("{family} generation is not deployed on this service"),
            )
            .with_field("type"),
            ServiceError::QueueFull(family) => {
                ApiError::new(code, format!("the {family} queue is full; try again later"))
            }
            ServiceError::Backend(e) => e.into(),
        }
    }
}

impl From<BackendError> for ApiError {
    fn from(err: BackendError) -> Self {
        match &err {
            BackendError::Unavailable { backend, .. } => {
                tracing::warn!(error = %err, "backend unavailable");
                ApiError::new(
                    ErrorCode::BackendUnavailable,
                    format!("the {backend} backend is unavailable; try again shortly"),
                )
            }
            BackendError::Corrupt { .. } => {
                tracing::error!(error = %err, "stored data could not be read");
                ApiError::new(ErrorCode::InternalError, "stored data could not be read")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorDocument {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
