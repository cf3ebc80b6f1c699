//! Bearer authentication and the per-client-key rate limit.
//!
//! Runs before any body is read, so an unauthenticated client learns nothing
//! about what its body would have done. Tokens are compared in constant time
//! (see `ClientKeys::tenant_for`) and never logged.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::task::Tenant;

use super::error::ApiError;
use super::AppState;

/// What every protected route may answer before its handler runs; the
/// OpenAPI document lists these on each of them.
pub const REFUSALS: [ErrorCode; 2] = [ErrorCode::Unauthorized, ErrorCode::RateLimited];

pub async fn require_client_key(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    match admit(&state, req).await {
        Ok(req) => next.run(req).await,
        Err((req, err)) => refuse_unread(req, err, state.api.max_body_bytes).await,
    }
}

/// How long a refused request's body may take to arrive before the
/// connection is closed instead.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Answers a request refused before its body was read. Left unread, the
/// body would sit in the connection in front of the client's next request:
/// hyper then drops the connection without a `Connection: close`, and a
/// keep-alive client's next request fails on a broken pipe. So the body is
/// read and thrown away when it is within `MAX_BODY_BYTES` and arrives
/// promptly; otherwise the answer says `Connection: close`.
async fn refuse_unread(req: Request, err: ApiError, limit: usize) -> Response {
    let drained =
        tokio::time::timeout(DRAIN_TIMEOUT, axum::body::to_bytes(req.into_body(), limit)).await;
    let mut response = err.into_response();
    if !matches!(drained, Ok(Ok(_))) {
        response.headers_mut().insert(
            header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

/// The request with its tenant, or the request back with why it is refused.
#[allow(clippy::result_large_err)] // the request travels back to be drained
async fn admit(state: &AppState, mut req: Request) -> Result<Request, (Request, ApiError)> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        });
    let Some(presented) = presented else {
        return Err((req, ApiError::unauthorized()));
    };
    let Some(tenant) = state.api.client_keys.tenant_for(&presented) else {
        return Err((req, ApiError::unauthorized()));
    };
    if let Err(wait_seconds) = state.rate_limiter.admit(&tenant) {
        let err = ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests for this client key; the limit is {} a minute",
                state.rate_limiter.per_minute
            ),
        )
        .with_retry_after(wait_seconds);
        return Err((req, err));
    }
    req.extensions_mut().insert(tenant);
    Ok(req)
}

/// A token bucket per tenant: `per_minute` requests a minute, bursting up to
/// the same number. `0` turns the limit off. In Lambda each instance keeps
/// its own buckets, so the limit there is per instance (API Gateway usage
/// plans are the global limit).
pub struct RateLimiter {
    pub per_minute: u32,
    buckets: Mutex<HashMap<Tenant, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(seconds to wait)` when the tenant has no token left.
    pub fn admit(&self, tenant: &Tenant) -> Result<(), u64> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets.entry(tenant.clone()).or_insert((capacity, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_over_its_budget_is_told_when_to_come_back() {
        let limiter = RateLimiter::new(2);
        let acme = Tenant::new("acme");
        assert!(limiter.admit(&acme).is_ok());
        assert!(limiter.admit(&acme).is_ok());
        let wait = limiter.admit(&acme).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(
            limiter.admit(&Tenant::new("other")).is_ok(),
            "buckets are per tenant"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::new(0);
        for _ in 0..1000 {
            assert!(limiter.admit(&Tenant::new("t")).is_ok());
        }
    }
}
