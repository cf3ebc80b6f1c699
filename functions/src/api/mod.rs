//! The public HTTP API of `docs/api-contract.md`, as one axum `Router`
//! built by [`app`]. The same router is served by the local server
//! (`sound-creator serve` / `api`) and, in AWS, by `lambda_http` behind API
//! Gateway. Handlers never panic on client input and always answer in the
//! contract's error shape.

mod auth;
mod error;
mod events;
mod extract;
mod http_metrics;
pub mod openapi;
mod playground;
mod routes;

use std::sync::Arc;

use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{middleware, Json, Router};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::ports::{SignedDownloads, SignedUploads};
use sound_creator_core::redact;
use sound_creator_core::service::TaskService;
use sound_creator_settings::ApiSettings;
use tokio_util::sync::CancellationToken;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

pub use auth::RateLimiter;
pub use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub service: Arc<TaskService>,
    /// Client keys, body limit, rate limit.
    pub api: Arc<ApiSettings>,
    /// Present in the embedded mode, where the API serves presigned links.
    pub downloads: Option<Arc<dyn SignedDownloads>>,
    /// Present in the embedded mode, where the API takes the presigned
    /// upload PUTs (in AWS, S3 does).
    pub uploads: Option<Arc<dyn SignedUploads>>,
    pub rate_limiter: Arc<RateLimiter>,
    /// Whether `GET /v1/events` may hold the response open and stream.
    pub events: EventDelivery,
    /// Cancelled when the server stops: open event streams end then, so a
    /// graceful shutdown is not held up by them (clients reconnect).
    pub shutdown: CancellationToken,
}

/// How `GET /v1/events/{task_id}` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventDelivery {
    /// A `text/event-stream` held open until the result event.
    Stream,
    /// The events so far with `retry:`, at once: for a gateway that buffers
    /// the whole response (API Gateway in front of Lambda), where a held
    /// stream would arrive only when it ends. EventSource clients simply
    /// reconnect.
    Snapshot,
}

impl AppState {
    pub fn new(
        service: Arc<TaskService>,
        api: Arc<ApiSettings>,
        downloads: Option<Arc<dyn SignedDownloads>>,
    ) -> Self {
        let rate_limiter = Arc::new(RateLimiter::new(api.rate_limit_per_minute));
        Self {
            service,
            api,
            downloads,
            uploads: None,
            rate_limiter,
            events: EventDelivery::Stream,
            shutdown: CancellationToken::new(),
        }
    }

    /// For a deployment whose gateway buffers responses (Lambda).
    pub fn with_event_snapshots(mut self) -> Self {
        self.events = EventDelivery::Snapshot;
        self
    }

    /// End the event streams when `shutdown` is cancelled.
    pub fn with_shutdown(mut self, shutdown: CancellationToken) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Serve the presigned upload PUTs that `uploads` signs (the embedded
    /// mode).
    pub fn with_signed_uploads(mut self, uploads: Arc<dyn SignedUploads>) -> Self {
        self.uploads = Some(uploads);
        self
    }
}

pub fn app(state: AppState) -> Router {
    let openapi = Arc::new(openapi::document(
        &state.service.settings,
        state.downloads.is_some(),
    ));
    let protected = Router::new()
        .route(
            "/v1/call",
            post(routes::call).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/generate",
            post(routes::generate).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/result",
            post(routes::result_by_body).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/result/{task_id}",
            get(routes::result).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/cancel/{task_id}",
            post(routes::cancel).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/stats",
            get(routes::stats).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/uploads",
            post(routes::create_upload).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/models",
            get(routes::models).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/events/{task_id}",
            get(events::events).fallback(routes::method_not_allowed),
        )
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_client_key,
        ));
    Router::new()
        .route(
            "/",
            get(playground::page).fallback(routes::method_not_allowed),
        )
        .route(
            "/playground/{file}",
            get(playground::asset).fallback(routes::method_not_allowed),
        )
        .route(
            "/health",
            get(routes::health).fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/openapi.json",
            get(move || {
                let openapi = openapi.clone();
                async move { Json(openapi.as_ref().clone()) }
            })
            .fallback(routes::method_not_allowed),
        )
        .route(
            "/v1/files/{*key}",
            get(routes::download)
                .put(routes::upload_file)
                .fallback(routes::method_not_allowed),
        )
        .merge(protected)
        .fallback(routes::not_found)
        .with_state(state)
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::new(
                ErrorCode::InternalError,
                "the request could not be completed",
            )
            .into_response()
        }))
        .layer(
            // The default span logs the whole URI; a signed link's query is
            // a credential until it expires.
            TraceLayer::new_for_http().make_span_with(|req: &axum::extract::Request| {
                let target = req
                    .uri()
                    .path_and_query()
                    .map(|p| redact::target(p.as_str()))
                    .unwrap_or_default();
                tracing::debug_span!("request", method = %req.method(), uri = %target)
            }),
        )
        .layer(middleware::from_fn(http_metrics::record))
}
