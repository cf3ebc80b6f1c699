//! One handler per route of the contract. Each is thin: extract, call the
//! task service, answer. The `#[utoipa::path]` attributes are the source of
//! the OpenAPI document served at `/v1/openapi.json`.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sound_creator_core::ports::Download;
use sound_creator_core::service::Submitted;
use sound_creator_core::task::Tenant;
use sound_creator_core::view::{
    ErrorDocument, HealthDocument, StatsDocument, SubmitDocument, TaskDocument,
};

use super::error::ApiError;
use super::extract::{IdempotencyKey, JsonBody, TaskIdPath};
use super::openapi::{CallRequestSchema, GenerateRequestSchema, ResultRequestSchema};
use super::AppState;

/// Submit a generation task; answers at once.
#[utoipa::path(
    post, path = "/v1/call", tag = "tasks",
    request_body = CallRequestSchema,
    params(("Idempotency-Key" = Option<String>, Header, description = "Same key and body returns the original task (200); another body 409")),
    responses(
        (status = 202, description = "Task queued", body = SubmitDocument),
        (status = 200, description = "Idempotent replay of an earlier submit", body = SubmitDocument),
        (status = 400, body = ErrorDocument), (status = 401, body = ErrorDocument), (status = 409, body = ErrorDocument),
        (status = 413, body = ErrorDocument), (status = 415, body = ErrorDocument), (status = 422, body = ErrorDocument),
        (status = 429, body = ErrorDocument), (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn call(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let submitted = state
        .service
        .submit(&tenant, &body, key.as_deref(), &[])
        .await?;
    Ok(match submitted {
        Submitted::Created(doc) => (StatusCode::ACCEPTED, Json(doc)).into_response(),
        Submitted::Replayed(doc) => (StatusCode::OK, Json(doc)).into_response(),
    })
}

const DEFAULT_WAIT_SECONDS: f64 = 30.0;
const MAX_WAIT_SECONDS: f64 = 60.0;

/// Submit a task and wait for it: 200 with the result when it finishes within
/// `wait_seconds`, else 202 with the task so the caller can poll.
#[utoipa::path(
    post, path = "/v1/generate", tag = "tasks",
    request_body = GenerateRequestSchema,
    params(("Idempotency-Key" = Option<String>, Header, description = "As for /v1/call")),
    responses(
        (status = 200, description = "Finished in time", body = TaskDocument),
        (status = 202, description = "Still queued or running; poll /v1/result", body = TaskDocument),
        (status = 400, body = ErrorDocument), (status = 401, body = ErrorDocument), (status = 409, body = ErrorDocument),
        (status = 413, body = ErrorDocument), (status = 415, body = ErrorDocument), (status = 422, body = ErrorDocument),
        (status = 429, body = ErrorDocument), (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn generate(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    IdempotencyKey(key): IdempotencyKey,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let wait = match body.get("wait_seconds") {
        None | Some(Value::Null) => DEFAULT_WAIT_SECONDS,
        Some(v) => v
            .as_f64()
            .filter(|w| (0.0..=MAX_WAIT_SECONDS).contains(w))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_field",
                    format!("wait_seconds must be a number from 0 to {MAX_WAIT_SECONDS}"),
                )
                .with_field("wait_seconds")
            })?,
    };
    let submitted = state
        .service
        .submit(&tenant, &body, key.as_deref(), &["wait_seconds"])
        .await?;
    let task_id = match submitted {
        Submitted::Created(doc) | Submitted::Replayed(doc) => doc.task_id,
    };
    let doc = state
        .service
        .wait_until_final(&tenant, &task_id, Duration::from_secs_f64(wait))
        .await?;
    let status = if doc.status.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((status, Json(doc)).into_response())
}

/// Read a task's result, with fresh presigned download URLs.
#[utoipa::path(
    get, path = "/v1/result/{task_id}", tag = "tasks",
    params(("task_id" = String, Path, description = "The id /v1/call returned")),
    responses(
        (status = 200, body = TaskDocument),
        (status = 401, body = ErrorDocument),
        (status = 404, description = "Unknown, not yours (`task_not_found`), or past RESULT_TTL (`expired_result`)", body = ErrorDocument),
        (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn result(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskDocument>, ApiError> {
    Ok(Json(state.service.result(&tenant, &id).await?))
}

/// The seed's form of the result call: `{"task_id": "..."}` in the body.
#[utoipa::path(
    post, path = "/v1/result", tag = "tasks",
    request_body = ResultRequestSchema,
    responses(
        (status = 200, body = TaskDocument),
        (status = 400, body = ErrorDocument), (status = 401, body = ErrorDocument), (status = 404, body = ErrorDocument),
        (status = 415, body = ErrorDocument), (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn result_by_body(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JsonBody(body): JsonBody,
) -> Result<Json<TaskDocument>, ApiError> {
    let id = match body.get("task_id") {
        Some(Value::String(id)) => id.clone(),
        None | Some(Value::Null) => {
            return Err(
                ApiError::bad_request("missing_field", "task_id is required").with_field("task_id"),
            )
        }
        Some(_) => {
            return Err(
                ApiError::bad_request("invalid_field", "task_id must be a string")
                    .with_field("task_id"),
            )
        }
    };
    Ok(Json(state.service.result(&tenant, &id).await?))
}

/// Cancel a queued or running task; a running job stops at its next
/// decoding step.
#[utoipa::path(
    post, path = "/v1/cancel/{task_id}", tag = "tasks",
    params(("task_id" = String, Path)),
    responses(
        (status = 200, description = "Canceled", body = TaskDocument),
        (status = 401, body = ErrorDocument), (status = 404, body = ErrorDocument),
        (status = 409, description = "Already finished", body = ErrorDocument), (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    TaskIdPath(id): TaskIdPath,
) -> Result<Json<TaskDocument>, ApiError> {
    Ok(Json(state.service.cancel(&tenant, &id).await?))
}

/// Request statistics for this client key, optionally per user and time range.
#[utoipa::path(
    get, path = "/v1/stats", tag = "stats",
    params(
        ("user_id" = Option<String>, Query, description = "Absent: all users of this client key"),
        ("from" = Option<String>, Query, description = "RFC 3339 lower bound on created_at"),
        ("to" = Option<String>, Query, description = "RFC 3339 upper bound on created_at"),
    ),
    responses(
        (status = 200, body = StatsDocument),
        (status = 400, body = ErrorDocument), (status = 401, body = ErrorDocument), (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn stats(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    RawQuery(query): RawQuery,
) -> Result<Json<StatsDocument>, ApiError> {
    let (mut user_id, mut from, mut to) = (None, None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "user_id" if !value.is_empty() => user_id = Some(value.into_owned()),
            "from" => from = Some(parse_time("from", &value)?),
            "to" => to = Some(parse_time("to", &value)?),
            _ => {}
        }
    }
    if let (Some(f), Some(t)) = (from, to) {
        if f > t {
            return Err(
                ApiError::bad_request("invalid_query", "`from` is after `to`").with_field("from"),
            );
        }
    }
    Ok(Json(state.service.stats(&tenant, user_id, from, to).await?))
}

fn parse_time(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_query",
                format!("{field} must be an RFC 3339 time, e.g. 2026-01-31T00:00:00Z"),
            )
            .with_field(field)
        })
}

/// Reachability of every backend and the depth of each queue. No auth.
#[utoipa::path(
    get, path = "/health", tag = "service",
    responses((status = 200, body = HealthDocument), (status = 503, description = "A backend is down", body = HealthDocument))
)]
pub async fn health(State(state): State<AppState>) -> Response {
    let doc = state.service.health().await;
    let status = if doc.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let mut response = (status, Json(doc)).into_response();
    if status != StatusCode::OK {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(5u64));
    }
    response
}

/// Serves a presigned link of the embedded mode (local files). The signature
/// and expiry in the query are the authorization; no bearer token.
pub async fn download(
    State(state): State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Some(downloads) = state.downloads.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route",
        ));
    };
    let (mut expires, mut signature) = (None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "expires" => expires = value.parse::<i64>().ok(),
            "signature" => signature = Some(value.into_owned()),
            _ => {}
        }
    }
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the link is missing its expiry or signature",
        ));
    };
    match downloads.open(&key, expires, &signature).await? {
        Download::Found {
            bytes,
            content_type,
        } => {
            let mut response = bytes.into_response();
            let headers = response.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&content_type) {
                headers.insert(header::CONTENT_TYPE, v);
            }
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=300"),
            );
            Ok(response)
        }
        Download::Expired => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "link_expired",
            "this link has expired; read the result again for a fresh one",
        )),
        Download::Forbidden => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_signature",
            "the link's signature does not match",
        )),
        Download::Missing => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such file",
        )),
    }
}

pub async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /v1/openapi.json",
    )
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /v1/openapi.json",
    )
}
