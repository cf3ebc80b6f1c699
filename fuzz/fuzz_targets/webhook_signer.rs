//! Arbitrary inputs of the webhook signer: a `WEBHOOK_SECRET` (`whsec_`
//! base64 or raw), a webhook id, a body and a timestamp; and an arbitrary
//! `webhook-signature` header to verify. A signature the signer makes must
//! verify, a changed body must not, nothing may panic. The same bytes go
//! through the URL redaction every callback log line uses, which must never
//! let a password through.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_core::redact;
use sound_creator_core::webhook::WebhookSecret;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let (secret, id, header, body) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let timestamp = i64::from(data.len() as u32) * 1_000_003 - 1_700_000_000;
    if let Ok(secret) = WebhookSecret::parse(secret) {
        let signature = secret.sign(id, timestamp, body);
        assert!(secret.verify(id, timestamp, body, &signature));
        assert!(!secret.verify(id, timestamp, &format!("{body}x"), &signature));
        let _ = secret.verify(id, timestamp, body, header);
    }
    let shown = redact::url(&text);
    if let Ok(url) = url::Url::parse(&text) {
        // Not at all, anywhere: a password a client repeats in the path or
        // the query is hidden there too (see redact.rs for the length).
        if let Some(password) = url.password().filter(|p| p.chars().count() >= 4) {
            assert!(!shown.contains(password), "{shown}");
        }
    }
});
