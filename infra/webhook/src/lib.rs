//! Client callbacks over HTTP, signed the Standard Webhooks way.
//!
//! [`HttpCallbackSender`] makes one POST per delivery: the result document
//! as the body, `webhook-id`, `webhook-timestamp` and `webhook-signature`
//! headers (signed by the domain, see `sound_creator_core::webhook`). It
//! reports a non-2xx answer, a timeout or a connection failure as a
//! [`CallbackError`]; retrying is the domain's decision, not this crate's.
//! It never follows a redirect (a callback must not be bounced to a host
//! nobody allowed), and never logs the body, the signature or the URL's
//! credentials.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{CONTENT_TYPE, USER_AGENT};
use sound_creator_core::ports::{CallbackError, CallbackSender, WebhookDelivery};

/// `user-agent` of every callback.
pub const USER_AGENT_VALUE: &str = concat!("sound-creator/", env!("CARGO_PKG_VERSION"));

/// Sends callbacks with one shared `reqwest` client (rustls, no redirects).
#[derive(Debug, Clone)]
pub struct HttpCallbackSender {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpCallbackSender {
    /// `timeout` bounds a whole delivery: connecting, sending and reading
    /// the answer.
    pub fn new(timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT_VALUE)
            .build()?;
        Ok(Self { client, timeout })
    }

    fn failure(&self, delivery: &WebhookDelivery, reason: String) -> CallbackError {
        CallbackError {
            url: delivery.url.clone(),
            reason,
        }
    }

    /// Describes a transport error without echoing the URL (the error
    /// already carries it) or anything of the request.
    fn transport_reason(&self, err: &reqwest::Error) -> String {
        if err.is_timeout() {
            format!("no answer within {} ms (timeout)", self.timeout.as_millis())
        } else if err.is_connect() {
            format!("could not connect: {}", root_cause(err))
        } else if err.is_builder() {
            format!("not a usable callback URL: {}", root_cause(err))
        } else {
            format!("request failed: {}", root_cause(err))
        }
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[async_trait]
impl CallbackSender for HttpCallbackSender {
    async fn send(&self, delivery: &WebhookDelivery) -> Result<(), CallbackError> {
        let mut request = self
            .client
            .post(&delivery.url)
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, USER_AGENT_VALUE)
            .header("webhook-id", &delivery.webhook_id)
            .header("webhook-timestamp", delivery.timestamp.to_string());
        if !delivery.signature.is_empty() {
            request = request.header("webhook-signature", &delivery.signature);
        }
        let response = request
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| self.failure(delivery, self.transport_reason(&e)))?;

        let status = response.status();
        tracing::debug!(url = %sound_creator_core::redact::url(&delivery.url), webhook_id = %delivery.webhook_id, %status, "callback answered");
        if status.is_success() {
            return Ok(());
        }
        let reason = if status.is_redirection() {
            format!("answered {status}; redirects are not followed")
        } else {
            format!("answered {status}")
        };
        Err(self.failure(delivery, reason))
    }
}
