//! One handler per route of the contract. Each is thin: extract, call the
//! task service, answer. The `#[utoipa::path]` attributes are the source of
//! the OpenAPI document served at `/v1/openapi.json`.

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::media::UploadFormat;
use sound_creator_core::ports::{Download, PutAuthorization, PutLink};
use sound_creator_core::request::{
    CallRequest, GenerateRequest, ResultRequest, StatsRequest, UploadRequest,
};
use sound_creator_core::service::Submitted;
use sound_creator_core::task::Tenant;
use sound_creator_core::view::{
    ErrorDocument, HealthDocument, ModelsDocument, StatsDocument, SubmitDocument, TaskDocument,
    UploadDocument,
};

use super::error::ApiError;
use super::extract::{read_body, BodyError, IdempotencyKey, JsonBody, TaskIdPath};
use super::AppState;

// The request bodies' schemas are generated from the field declarations
// the parsers use (`sound_creator_core::request`) and put in by
// `openapi::document`; the attributes here describe the answers.

/// Submit a generation task; answers at once.
#[utoipa::path(
    post, path = "/v1/call", tag = "tasks",
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
    let settings = &state.service.settings;
    let request = CallRequest::parse(&body, &settings.limits, &settings.callbacks)?;
    let submitted = state
        .service
        .submit(&tenant, request, key.as_deref())
        .await?;
    Ok(match submitted {
        Submitted::Created(doc) => (StatusCode::ACCEPTED, Json(doc)).into_response(),
        Submitted::Replayed(doc) => (StatusCode::OK, Json(doc)).into_response(),
    })
}

/// Submit a task and wait for it: 200 with the result when it finishes within
/// `wait_seconds`, else 202 with the task so the caller can poll.
#[utoipa::path(
    post, path = "/v1/generate", tag = "tasks",
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
    let settings = &state.service.settings;
    let GenerateRequest { call, wait } =
        GenerateRequest::parse(&body, &settings.limits, &settings.callbacks)?;
    let submitted = state.service.submit(&tenant, call, key.as_deref()).await?;
    let task_id = match submitted {
        Submitted::Created(doc) | Submitted::Replayed(doc) => doc.task_id,
    };
    let doc = state
        .service
        .wait_until_final(&tenant, &task_id, wait)
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
    let ResultRequest { task_id } = ResultRequest::parse(&body, &state.service.settings.limits)?;
    Ok(Json(state.service.result(&tenant, &task_id).await?))
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
    let request = StatsRequest::parse(
        query.as_deref().unwrap_or_default(),
        &state.service.settings.limits,
    )?;
    Ok(Json(state.service.stats(&tenant, request).await?))
}

/// Ask for a signed PUT link for a file a task will name (a melody); the
/// bytes go straight to storage.
#[utoipa::path(
    post, path = "/v1/uploads", tag = "uploads",
    responses(
        (status = 201, description = "PUT the file's bytes to `url` with `headers`, then name `upload_id` in a task", body = UploadDocument),
        (status = 400, body = ErrorDocument), (status = 401, body = ErrorDocument),
        (status = 413, description = "Over MAX_UPLOAD_BYTES (`upload_too_large`)", body = ErrorDocument),
        (status = 415, body = ErrorDocument),
        (status = 422, description = "Not an allowed content type (`unsupported_upload_type`)", body = ErrorDocument),
        (status = 503, body = ErrorDocument),
    ),
    security(("bearer" = []))
)]
pub async fn create_upload(
    State(state): State<AppState>,
    Extension(tenant): Extension<Tenant>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request = UploadRequest::parse(&body, &state.service.settings.limits)?;
    let doc = state.service.create_upload(&tenant, request).await?;
    Ok((StatusCode::CREATED, Json(doc)).into_response())
}

/// The models this deployment serves, per family, and what each can do.
#[utoipa::path(
    get, path = "/v1/models", tag = "service",
    responses((status = 200, body = ModelsDocument), (status = 401, body = ErrorDocument)),
    security(("bearer" = []))
)]
pub async fn models(State(state): State<AppState>) -> Json<ModelsDocument> {
    Json(state.service.models())
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
    if let Some(seconds) = ErrorCode::BackendUnavailable
        .retry_after_seconds()
        .filter(|_| status != StatusCode::OK)
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

/// Serves a presigned link of the embedded mode (local files). The signature
/// and expiry in the query are the authorization; no bearer token.
#[utoipa::path(
    get, path = "/v1/files/{key}", tag = "files",
    params(
        ("key" = String, Path, description = "The stored file's key, as the signed link names it"),
        ("expires" = Option<i64>, Query, description = "Unix time the link stops working"),
        ("signature" = Option<String>, Query, description = "The link's signature"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "audio/*", body = Vec<u8>),
        (status = 403, description = "A signature that does not match (`invalid_signature`) or an expired link (`link_expired`)", body = ErrorDocument),
        (status = 404, description = "No such file", body = ErrorDocument),
        (status = 503, body = ErrorDocument),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let Some(downloads) = state.downloads.clone() else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such route"));
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
            ErrorCode::InvalidSignature,
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
            ErrorCode::LinkExpired,
            "this link has expired; read the result again for a fresh one",
        )),
        Download::Forbidden => Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "the link's signature does not match",
        )),
        Download::Missing => Err(ApiError::new(ErrorCode::NotFound, "no such file")),
    }
}

/// Takes the PUT of a presigned upload link of the embedded mode (local
/// files). The link's signature covers the key, expiry, declared type and
/// size: the request must carry that `Content-Type` and exactly that many
/// bytes, read no further than that.
#[utoipa::path(
    put, path = "/v1/files/{key}", tag = "files",
    params(
        ("key" = String, Path, description = "The upload's key, as the signed link names it"),
        ("expires" = Option<i64>, Query, description = "Unix time the link stops working"),
        ("content_type" = Option<String>, Query, description = "The declared type"),
        ("bytes" = Option<u64>, Query, description = "The declared size"),
        ("signature" = Option<String>, Query, description = "The link's signature"),
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Exactly the declared bytes, sent with the declared `Content-Type`"),
    responses(
        (status = 200, description = "Stored"),
        (status = 400, description = "Fewer bytes than declared (`upload_size_mismatch`)", body = ErrorDocument),
        (status = 403, description = "A signature that does not match or an expired link", body = ErrorDocument),
        (status = 408, description = "The body did not arrive within HTTP_BODY_TIMEOUT_MS", body = ErrorDocument),
        (status = 413, description = "More bytes than declared (`upload_too_large`)", body = ErrorDocument),
        (status = 415, description = "Another Content-Type than declared (`upload_type_mismatch`)", body = ErrorDocument),
        (status = 503, body = ErrorDocument),
    )
)]
pub async fn upload_file(
    State(state): State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Some(uploads) = state.uploads.clone() else {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "files are uploaded to storage directly here; use the url POST /v1/uploads gives",
        ));
    };
    let (mut expires, mut content_type, mut bytes, mut signature) = (None, None, None, None);
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match name.as_ref() {
            "expires" => expires = value.parse::<i64>().ok(),
            "content_type" => content_type = Some(value.into_owned()),
            "bytes" => bytes = value.parse::<u64>().ok(),
            "signature" => signature = Some(value.into_owned()),
            _ => {}
        }
    }
    let (Some(expires), Some(content_type), Some(bytes), Some(signature)) =
        (expires, content_type, bytes, signature)
    else {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "the link is missing its expiry, type, size or signature",
        ));
    };
    let link = PutLink {
        expires,
        content_type,
        bytes,
        signature,
    };
    match uploads.authorize_put(&key, &link) {
        PutAuthorization::Allowed => {}
        PutAuthorization::Expired => {
            return Err(ApiError::new(
                ErrorCode::LinkExpired,
                "this upload link has expired; ask POST /v1/uploads for a new one",
            ))
        }
        PutAuthorization::Forbidden => {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "the link's signature does not match",
            ))
        }
    }
    let sent_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let same_type = UploadFormat::parse(sent_type)
        .ok()
        .is_some_and(|sent| sent.content_type() == link.content_type);
    if !same_type {
        return Err(ApiError::new(
            ErrorCode::UploadTypeMismatch,
            format!(
                "this upload was declared as {}; send it with `Content-Type: {}`, not {sent_type:?}",
                link.content_type, link.content_type
            ),
        ));
    }
    let too_large = || {
        ApiError::new(
            ErrorCode::UploadTooLarge,
            format!(
                "this upload was declared as {} bytes; the body is longer",
                link.bytes
            ),
        )
    };
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared_length.is_some_and(|n| n > link.bytes) {
        return Err(too_large());
    }
    let limit = usize::try_from(link.bytes).map_err(|_| too_large())?;
    let received = read_body(body, limit, state.api.body_timeout)
        .await
        .map_err(|e| match e {
            BodyError::TooLong => too_large(),
            other => other.into(),
        })?;
    if received.len() as u64 != link.bytes {
        return Err(ApiError::new(
            ErrorCode::UploadSizeMismatch,
            format!(
                "this upload was declared as {} bytes; the body has {}",
                link.bytes,
                received.len()
            ),
        ));
    }
    state
        .service
        .ports
        .blobs
        .put(&key, received.to_vec(), &link.content_type)
        .await?;
    Ok(StatusCode::OK.into_response())
}

pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route; see /v1/openapi.json")
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this route does not take that method; see /v1/openapi.json",
    )
}
