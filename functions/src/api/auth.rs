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
use axum::response::Response;
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::task::Tenant;

use super::error::ApiError;
use super::AppState;

pub async fn require_client_key(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_owned())
        })
        .ok_or_else(ApiError::unauthorized)?;
    let tenant = state
        .api
        .client_keys
        .tenant_for(&presented)
        .ok_or_else(ApiError::unauthorized)?;
    if let Err(wait_seconds) = state.rate_limiter.admit(&tenant) {
        return Err(ApiError::new(
            ErrorCode::RateLimited,
            format!(
                "too many requests for this client key; the limit is {} a minute",
                state.rate_limiter.per_minute
            ),
        )
        .with_retry_after(wait_seconds));
    }
    req.extensions_mut().insert(tenant);
    Ok(next.run(req).await)
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
