//! Uploads: request media a client puts into storage before it names it in
//! a task (today, the melody a MusicGen-melody task conditions on).
//!
//! `POST /v1/uploads` records an [`Upload`] owned by the client key that
//! made it and answers with a short-lived signed PUT link; the bytes then go
//! straight to the blob store (S3, or the embedded mode's local files served
//! by the API), never through a request body of the JSON API. A task that
//! names the upload is checked against the record (owner, retention) and
//! against the blob store (was it ever uploaded?). The record says what was
//! declared; it is never updated, so it needs no status machine.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::media::UploadFormat;
use crate::task::Tenant;

/// `up_` and a UUIDv7 in hex: sortable, and never mistaken for a task id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UploadId(String);

impl UploadId {
    pub const PREFIX: &'static str = "up_";

    pub fn generate() -> Self {
        Self(format!("{}{}", Self::PREFIX, uuid::Uuid::now_v7().simple()))
    }

    /// Accepts anything that could be one of ours; unknown ids are simply
    /// not found. What could never be one is refused before it reaches a
    /// backend query or a blob key.
    pub fn parse(raw: &str) -> Option<Self> {
        let rest = raw.strip_prefix(Self::PREFIX)?;
        let ok = !rest.is_empty()
            && raw.len() <= 64
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UploadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An upload as `POST /v1/uploads` declared it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Upload {
    pub id: UploadId,
    /// The client key that made it; no other may use it.
    pub tenant: Tenant,
    /// The declared content type; the PUT must carry it.
    pub format: UploadFormat,
    /// The declared size; the PUT must be exactly this long.
    pub bytes: u64,
    /// Where the bytes go ([`crate::ports::upload_key`]).
    pub blob_key: String,
    pub created_at: DateTime<Utc>,
    /// When the PUT link stops working.
    pub put_expires_at: DateTime<Utc>,
    /// Tasks may name it until then (`RESULT_TTL` after it was made);
    /// afterwards it is as if it never existed.
    pub retain_until: DateTime<Utc>,
}

impl Upload {
    /// Whether `tenant` may use it at `now`: its owner, within retention.
    pub fn usable_by(&self, tenant: &Tenant, now: DateTime<Utc>) -> bool {
        &self.tenant == tenant && now <= self.retain_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ids_are_prefixed_and_parse_back() {
        let id = UploadId::generate();
        assert!(id.as_str().starts_with("up_"), "{id}");
        assert_eq!(UploadId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.as_str().len(), 3 + 32);
    }

    #[test]
    fn what_could_never_be_an_upload_id_is_refused() {
        for raw in [
            "",
            "up_",
            "0190b7c2-8f9e-7c3a-9d1e-123456789abc",
            "up_../x",
            "up_a/b",
            "up_ä",
            &format!("up_{}", "a".repeat(62)),
        ] {
            assert_eq!(UploadId::parse(raw), None, "{raw:?}");
        }
        assert!(UploadId::parse("up_01J0ABC").is_some());
    }
}
