//! The one place where failures become HTTP answers, always in the
//! contract's shape `{"error": {"code", "message", "field"}}`.
//!
//! Backend details are logged, never sent: the client learns which kind of
//! backend is down and when to come back, not its address or driver error.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sound_creator_core::ports::BackendError;
use sound_creator_core::request::RequestErrorKind;
use sound_creator_core::service::ServiceError;
use sound_creator_core::view::{ErrorBody, ErrorDocument};

/// Seconds a client is asked to wait when a backend is down.
const BACKEND_RETRY_AFTER_SECONDS: u64 = 5;
const QUEUE_FULL_RETRY_AFTER_SECONDS: u64 = 10;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<String>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after: None,
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
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer <token>` header is required",
        )
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Request(e) => {
                let status = match e.kind {
                    RequestErrorKind::Invalid => StatusCode::BAD_REQUEST,
                    RequestErrorKind::Unsupported => StatusCode::UNPROCESSABLE_ENTITY,
                };
                ApiError {
                    status,
                    code: e.code,
                    message: e.message,
                    field: e.field,
                    retry_after: None,
                }
            }
            ServiceError::NotFound(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "task_not_found",
                format!("no task {id:?} for this client key"),
            ),
            ServiceError::ResultExpired(id) => ApiError::new(
                StatusCode::NOT_FOUND,
                "expired_result",
                format!("the result of task {id} is no longer kept (RESULT_TTL passed)"),
            ),
            ServiceError::AlreadyFinal { id, status } => ApiError::new(
                StatusCode::CONFLICT,
                "task_already_final",
                format!("task {id} is already {status}"),
            ),
            ServiceError::IdempotencyKeyReused => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request body",
            ),
            ServiceError::NotDeployed(family) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "model_not_deployed",
                format!("{family} generation is not deployed on this service"),
            )
            .with_field("type"),
            ServiceError::QueueFull(family) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "queue_full",
                format!("the {family} queue is full; try again later"),
            )
            .with_retry_after(QUEUE_FULL_RETRY_AFTER_SECONDS),
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
                    StatusCode::SERVICE_UNAVAILABLE,
                    "backend_unavailable",
                    format!("the {backend} backend is unavailable; try again shortly"),
                )
                .with_retry_after(BACKEND_RETRY_AFTER_SECONDS)
            }
            BackendError::Corrupt { .. } => {
                tracing::error!(error = %err, "stored data could not be read");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal_error",
                    "stored data could not be read",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorDocument {
            error: ErrorBody {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
