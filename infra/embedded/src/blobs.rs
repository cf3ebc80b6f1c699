//! Audio files on the local disk, and the signed links the API serves them
//! through (the embedded stand-in for S3 presigned URLs).
//!
//! A key maps to `<data_dir>/blobs/<key>`; only plain relative keys made of
//! `[A-Za-z0-9._-]` segments are accepted, so no key can leave that
//! directory. Files are written to a temporary name and renamed, so a reader
//! never sees half a clip. A link is
//! `{public_base_url}/v1/files/{key}?expires=<unix>&signature=<hex>` with the
//! signature an HMAC-SHA256 of `key + "\n" + expires`; it is checked in
//! constant time, and the signing key never leaves this module.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sound_creator_core::ports::{
    Backend, BackendError, BlobStore, Download, PortResult, PresignedUpload, PresignedUrl,
    PutAuthorization, PutLink, SignedDownloads, SignedUploads,
};

pub use crate::link_signature::validate_blob_key;
use crate::link_signature::{download_signature, hex, matches, put_signature};

fn unavailable(err: impl std::fmt::Display) -> BackendError {
    BackendError::unavailable(Backend::Blobs, err)
}

/// The content type a download is served with, from the key's extension.
pub fn content_type_for(key: &str) -> &'static str {
    let extension = key
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase());
    match extension.as_deref() {
        Some("wav") => "audio/wav",
        Some("mp3") => "audio/mpeg",
        Some("flac") => "audio/flac",
        Some("ogg") => "audio/ogg",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    let pairs = text.as_bytes().chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let digit = |b: u8| char::from(b).to_digit(16);
    pairs
        .map(|pair| u8::try_from(digit(pair[0])? << 4 | digit(pair[1])?).ok())
        .collect()
}

/// Reads the persisted download key, or creates it (mode 0600) on first use.
pub(crate) fn load_or_create_key(path: &Path) -> anyhow::Result<Vec<u8>> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(mut file) => {
            let mut key = vec![0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut key);
            file.write_all(format!("{}\n", hex(&key)).as_bytes())
                .and_then(|()| file.sync_all())
                .with_context(|| format!("Failed to write the download key {}", path.display()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("Failed to read the download key {}", path.display()))?;
            match unhex(text.trim()) {
                Some(key) if !key.is_empty() => Ok(key),
                // Replacing it would silently break every link handed out.
                _ => anyhow::bail!(
                    "the download key {} is not hex; remove it to make a new one",
                    path.display()
                ),
            }
        }
        Err(e) => {
            Err(e).with_context(|| format!("Failed to create the download key {}", path.display()))
        }
    }
}

pub struct LocalBlobs {
    root: PathBuf,
    secret: Vec<u8>,
    public_base_url: RwLock<String>,
}

impl LocalBlobs {
    pub(crate) fn open(
        root: PathBuf,
        secret: Vec<u8>,
        public_base_url: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root)
            .with_context(|| format!("Failed to create the blob directory {}", root.display()))?;
        Ok(Self {
            root,
            secret,
            public_base_url: RwLock::new(trim_base(public_base_url)),
        })
    }

    /// The directory files are kept in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn set_public_base_url(&self, url: &str) {
        let mut base = self
            .public_base_url
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *base = trim_base(url);
    }

    pub fn public_base_url(&self) -> String {
        self.public_base_url
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn path_of(&self, key: &str) -> PortResult<PathBuf> {
        validate_blob_key(key)
            .map_err(|why| unavailable(format!("refused blob key {key:?}: {why}")))?;
        Ok(self.root.join(key))
    }

    fn signature(&self, key: &str, expires: i64) -> String {
        download_signature(&self.secret, key, expires)
    }

    fn signature_matches(&self, key: &str, expires: i64, given: &str) -> bool {
        matches(&self.signature(key, expires), given)
    }

    fn put_signature(&self, key: &str, expires: i64, content_type: &str, bytes: u64) -> String {
        put_signature(&self.secret, key, expires, content_type, bytes)
    }

    /// Link expiry `expires_in` from now, as unix seconds and a time.
    fn expiry(expires_in: Duration) -> PortResult<(i64, DateTime<Utc>)> {
        let seconds = i64::try_from(expires_in.as_secs()).unwrap_or(i64::MAX / 2);
        let expires = Utc::now().timestamp().saturating_add(seconds);
        let expires_at = DateTime::from_timestamp(expires, 0)
            .ok_or_else(|| unavailable(format!("link expiry {expires} is out of range")))?;
        Ok((expires, expires_at))
    }
}

/// `value` as a query component (RFC 3986 unreserved characters kept).
fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn trim_base(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

#[async_trait]
impl BlobStore for LocalBlobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, _content_type: &str) -> PortResult<()> {
        let path = self.path_of(key)?;
        let dir = path.parent().unwrap_or(&self.root).to_owned();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("blob");
        let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::now_v7()));
        // One trip to the blocking pool for the whole write: each `tokio::fs`
        // call is a trip of its own (six per blob), and on a busy server the
        // thread hand-offs cost more than the writes.
        let written = tokio::task::spawn_blocking(move || {
            let write = || -> std::io::Result<()> {
                std::fs::create_dir_all(&dir)?;
                // No fsync: the database beside it runs WAL with
                // synchronous=NORMAL (no fsync per commit), so syncing the
                // file bought no durability the row pointing at it has, and
                // cost about 2 ms p50 / 11 ms p99 on every job
                // (bench/PIPELINE.md). The rename still makes the file
                // appear whole or not at all.
                std::fs::write(&temp, &bytes)?;
                std::fs::rename(&temp, &path)
            };
            let written = write();
            if written.is_err() {
                let _ = std::fs::remove_file(&temp);
            }
            written
        })
        .await;
        let failed = match written {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(), // the write panicked or the runtime is stopping
        };
        Err(unavailable(format!("failed to store blob {key}: {failed}")))
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let path = self.path_of(key)?;
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(format!("failed to read blob {key}: {e}"))),
        }
    }

    async fn size(&self, key: &str) -> PortResult<Option<u64>> {
        let path = self.path_of(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => Ok(Some(meta.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(unavailable(format!("failed to look at blob {key}: {e}"))),
        }
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        bytes: u64,
        expires_in: Duration,
    ) -> PortResult<PresignedUpload> {
        self.path_of(key)?;
        let (expires, expires_at) = Self::expiry(expires_in)?;
        let url = format!(
            "{}/v1/files/{key}?expires={expires}&content_type={}&bytes={bytes}&signature={}",
            self.public_base_url(),
            query_escape(content_type),
            self.put_signature(key, expires, content_type, bytes)
        );
        Ok(PresignedUpload {
            url,
            headers: [("Content-Type".to_owned(), content_type.to_owned())].into(),
            expires_at,
        })
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> PortResult<PresignedUrl> {
        self.path_of(key)?;
        let (expires, expires_at) = Self::expiry(expires_in)?;
        let url = format!(
            "{}/v1/files/{key}?expires={expires}&signature={}",
            self.public_base_url(),
            self.signature(key, expires)
        );
        Ok(PresignedUrl { url, expires_at })
    }

    async fn ping(&self) -> PortResult<()> {
        let meta = tokio::fs::metadata(&self.root).await.map_err(unavailable)?;
        if meta.is_dir() {
            Ok(())
        } else {
            Err(unavailable(format!(
                "{} is not a directory",
                self.root.display()
            )))
        }
    }
}

#[async_trait]
impl SignedDownloads for LocalBlobs {
    async fn open(&self, key: &str, expires: i64, signature: &str) -> PortResult<Download> {
        // A key we would never sign is refused before touching the disk.
        if validate_blob_key(key).is_err() || !self.signature_matches(key, expires, signature) {
            return Ok(Download::Forbidden);
        }
        if expires < Utc::now().timestamp() {
            return Ok(Download::Expired);
        }
        match tokio::fs::read(self.root.join(key)).await {
            Ok(bytes) => Ok(Download::Found {
                bytes,
                content_type: content_type_for(key).to_owned(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Download::Missing),
            Err(e) => Err(unavailable(format!("failed to read blob {key}: {e}"))),
        }
    }
}

impl SignedUploads for LocalBlobs {
    fn authorize_put(&self, key: &str, link: &PutLink) -> PutAuthorization {
        if validate_blob_key(key).is_err() {
            return PutAuthorization::Forbidden;
        }
        let expected = self.put_signature(key, link.expires, &link.content_type, link.bytes);
        if !matches(&expected, &link.signature) {
            return PutAuthorization::Forbidden;
        }
        if link.expires < Utc::now().timestamp() {
            return PutAuthorization::Expired;
        }
        PutAuthorization::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_could_leave_the_blob_directory_are_refused() {
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/./b",
            "a\\b",
            "a b",
            "tasks/x/.hidden",
            "ü.wav",
        ] {
            assert!(validate_blob_key(key).is_err(), "{key:?} must be refused");
        }
        assert!(validate_blob_key("tasks/0190b7c2-8f9e/clip-0.wav").is_ok());
    }

    #[test]
    fn hex_round_trips() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex(&bytes), "0001abff");
        assert_eq!(unhex("0001abff").as_deref(), Some(&bytes[..]));
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("+f"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn query_components_are_escaped() {
        assert_eq!(query_escape("audio/mpeg"), "audio%2Fmpeg");
        assert_eq!(query_escape("a b&c=d"), "a%20b%26c%3Dd");
    }

    #[test]
    fn content_types_follow_the_extension() {
        assert_eq!(content_type_for("tasks/a/clip-0.wav"), "audio/wav");
        assert_eq!(content_type_for("tasks/a/clip-0.WAV"), "audio/wav");
        assert_eq!(content_type_for("tasks/a/clip"), "application/octet-stream");
    }
}
