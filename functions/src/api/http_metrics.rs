//! Counts every answer of the API by route template, method and status,
//! and times it. The outermost layer, so that answers made by the other
//! layers (a body over the limit, a caught panic) are counted too. A path
//! no route matched counts as `unmatched`: the metrics never carry what a
//! client typed.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use sound_creator_core::metrics;

pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::http_response(
        &route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
