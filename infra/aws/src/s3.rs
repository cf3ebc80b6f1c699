//! S3 as the blob store for generated audio and uploaded melodies. Clips are
//! written once under `core::ports::clip_key` (`tasks/<task>/clip-<i>.<ext>`)
//! and downloaded straight from S3 through short-lived presigned GET URLs;
//! uploads go straight to S3 through presigned PUT URLs under
//! `core::ports::upload_key` (`uploads/<upload_id>`), whose signature covers
//! `Content-Type` and `Content-Length`, so S3 itself refuses a PUT of another
//! type or size. The API never proxies audio bytes. With an endpoint
//! override (moto, LocalStack) addressing is path-style, since emulators do
//! not serve virtual hosts.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use chrono::Utc;
use sound_creator_core::ports::{
    Backend, BackendError, BlobStore, PortResult, PresignedUpload, PresignedUrl,
};

use crate::{sdk_unavailable, AwsSettings};

/// SigV4 presigned URLs live at most a week.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct S3Blobs {
    client: Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(sdk: &SdkConfig, settings: &AwsSettings) -> Self {
        Self {
            client: client(sdk, settings),
            bucket: settings.s3_bucket.clone(),
        }
    }
}

pub fn client(sdk: &SdkConfig, settings: &AwsSettings) -> Client {
    let mut config = aws_sdk_s3::config::Builder::from(sdk);
    if let Some(endpoint) = settings.s3_endpoint() {
        config = config.endpoint_url(endpoint).force_path_style(true);
    }
    Client::from_conf(config.build())
}

fn unavailable(err: impl std::error::Error + 'static) -> BackendError {
    sdk_unavailable(Backend::Blobs, &err)
}

#[async_trait]
impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, bytes: Vec<u8>, content_type: &str) -> PortResult<()> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> PortResult<Option<Vec<u8>>> {
        let found = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let object = match found {
            Ok(object) => object,
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => {
                return Ok(None)
            }
            Err(err) => return Err(unavailable(err)),
        };
        let bytes = object.body.collect().await.map_err(unavailable)?;
        Ok(Some(bytes.into_bytes().to_vec()))
    }

    async fn size(&self, key: &str) -> PortResult<Option<u64>> {
        let found = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        match found {
            Ok(head) => Ok(Some(
                head.content_length()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
            )),
            // HEAD has no body, so a missing key is a bare 404.
            Err(err) if err.as_service_error().is_some_and(|e| e.is_not_found()) => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    async fn presign_put(
        &self,
        key: &str,
        content_type: &str,
        bytes: u64,
        expires_in: Duration,
    ) -> PortResult<PresignedUpload> {
        let expires_in = expires_in.clamp(Duration::from_secs(1), MAX_PRESIGN);
        let config = PresigningConfig::expires_in(expires_in).map_err(unavailable)?;
        let length = i64::try_from(bytes).map_err(|_| {
            BackendError::unavailable(Backend::Blobs, format!("{bytes} bytes is no object size"))
        })?;
        let now = Utc::now();
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(content_type)
            .content_length(length)
            .presigned(config)
            .await
            .map_err(unavailable)?;
        // Every header the signature covers must be sent as signed; the
        // client's HTTP library sets Content-Length (and Host) itself.
        let headers = request
            .headers()
            .filter(|(name, _)| {
                !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("host")
            })
            .map(|(name, value)| {
                let name = if name.eq_ignore_ascii_case("content-type") {
                    "Content-Type".to_owned()
                } else {
                    name.to_owned()
                };
                (name, value.to_owned())
            })
            .collect();
        Ok(PresignedUpload {
            url: request.uri().to_owned(),
            headers,
            expires_at: now
                + chrono::Duration::from_std(expires_in)
                    .unwrap_or_else(|_| chrono::Duration::seconds(1)),
        })
    }

    async fn presign_get(&self, key: &str, expires_in: Duration) -> PortResult<PresignedUrl> {
        let expires_in = expires_in.clamp(Duration::from_secs(1), MAX_PRESIGN);
        let config = PresigningConfig::expires_in(expires_in).map_err(unavailable)?;
        let now = Utc::now();
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(unavailable)?;
        let expires_at = now
            + chrono::Duration::from_std(expires_in)
                .unwrap_or_else(|_| chrono::Duration::seconds(1));
        Ok(PresignedUrl {
            url: request.uri().to_owned(),
            expires_at,
        })
    }

    async fn ping(&self) -> PortResult<()> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
