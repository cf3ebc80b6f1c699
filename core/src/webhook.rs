//! Callback signing the way Standard Webhooks sign: `webhook-id`,
//! `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256>` over
//! `id.timestamp.body`, with a `whsec_`-prefixed base64 secret.
//!
//! The secret never appears in `Debug` output or logs.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// The signing key. Built from `WEBHOOK_SECRET`.
#[derive(Clone)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(<redacted>)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("WEBHOOK_SECRET must be `whsec_` followed by base64")]
    NotBase64,
    #[error("WEBHOOK_SECRET is empty")]
    Empty,
}

impl WebhookSecret {
    /// Accepts the Standard Webhooks form `whsec_<base64>`; any other string
    /// is used as raw key bytes (some senders configure plain secrets).
    pub fn parse(raw: &str) -> Result<Self, SecretError> {
        let key = match raw.strip_prefix("whsec_") {
            Some(encoded) => BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?,
            None => raw.as_bytes().to_vec(),
        };
        if key.is_empty() {
            return Err(SecretError::Empty);
        }
        Ok(Self(key))
    }

    /// `v1,<base64 signature>` of `id.timestamp.body`.
    pub fn sign(&self, webhook_id: &str, timestamp: i64, body: &str) -> String {
        format!(
            "v1,{}",
            BASE64.encode(self.mac(webhook_id, timestamp, body))
        )
    }

    /// Checks a `webhook-signature` header (which may list several
    /// space-separated signatures) in constant time.
    pub fn verify(&self, webhook_id: &str, timestamp: i64, body: &str, header: &str) -> bool {
        let expected = self.mac(webhook_id, timestamp, body);
        header
            .split(' ')
            .filter_map(|sig| sig.strip_prefix("v1,"))
            .any(|encoded| {
                BASE64
                    .decode(encoded)
                    .map(|given| given.ct_eq(&expected).into())
                    .unwrap_or(false)
            })
    }

    fn mac(&self, webhook_id: &str, timestamp: i64, body: &str) -> Vec<u8> {
        // new_from_slice accepts keys of any length for HMAC.
        let mut mac = match HmacSha256::new_from_slice(&self.0) {
            Ok(mac) => mac,
            Err(_) => return Vec::new(),
        };
        mac.update(format!("{webhook_id}.{timestamp}.").as_bytes());
        mac.update(body.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }
}

/// Delay before retry `attempt` (1-based: the first retry is attempt 2):
/// base, 2x, 4x, ... so that with the default 20 s base, six tries span
/// about ten minutes (0, 20 s, 40 s, 80 s, 160 s, 320 s).
pub fn retry_delay(base: std::time::Duration, attempt: u32) -> std::time::Duration {
    let exponent = attempt.saturating_sub(2).min(16);
    base.saturating_mul(1 << exponent)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example from the Standard Webhooks specification.
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TS: i64 = 1614265330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert_eq!(secret.sign(SPEC_ID, SPEC_TS, SPEC_BODY), SPEC_SIG);
        assert!(secret.verify(SPEC_ID, SPEC_TS, SPEC_BODY, &format!("v1,bogus {SPEC_SIG}")));
    }

    #[test]
    fn a_changed_body_id_or_timestamp_fails_verification() {
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert!(!secret.verify(SPEC_ID, SPEC_TS, "{}", SPEC_SIG));
        assert!(!secret.verify("msg_other", SPEC_TS, SPEC_BODY, SPEC_SIG));
        assert!(!secret.verify(SPEC_ID, SPEC_TS + 1, SPEC_BODY, SPEC_SIG));
        assert!(!secret.verify(SPEC_ID, SPEC_TS, SPEC_BODY, "v1,%%%not-base64"));
    }

    #[test]
    fn bad_secrets_are_refused_and_never_printed() {
        assert_eq!(
            WebhookSecret::parse("whsec_!!!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(WebhookSecret::parse("").unwrap_err(), SecretError::Empty);
        let secret = WebhookSecret::parse(SPEC_SECRET).unwrap();
        assert!(!format!("{secret:?}").contains("MfKQ"));
    }

    #[test]
    fn retries_back_off_exponentially_over_about_ten_minutes() {
        let base = std::time::Duration::from_secs(20);
        let delays: Vec<u64> = (2..=6).map(|a| retry_delay(base, a).as_secs()).collect();
        assert_eq!(delays, vec![20, 40, 80, 160, 320]);
        assert_eq!(delays.iter().sum::<u64>(), 620);
    }
}
