//! The S3 blob store against moto: a stored clip downloads through its
//! presigned URL, byte for byte.

use crate::common;

use std::time::Duration;

use chrono::Utc;
use sound_creator_aws::s3::S3Blobs;
use sound_creator_aws::{provision, sdk_config};
use sound_creator_core::ports::{clip_key, BackendError, BlobStore};
use sound_creator_core::task::TaskId;

#[tokio::test]
async fn a_stored_clip_downloads_through_its_presigned_url() {
    let settings = common::settings();
    provision(&settings).await.expect("provision against moto");
    let blobs = S3Blobs::new(&sdk_config(&settings).await, &settings);
    blobs.ping().await.expect("bucket exists");

    let key = clip_key(&TaskId::generate(), 0, "wav");
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    blobs
        .put(&key, bytes.clone(), "audio/wav")
        .await
        .expect("put");
    // Idempotent: the same key again leaves one object.
    blobs
        .put(&key, bytes.clone(), "audio/wav")
        .await
        .expect("put again");

    let presigned = blobs
        .presign_get(&key, Duration::from_secs(300))
        .await
        .expect("presign");
    assert!(
        presigned.url.contains(&settings.s3_bucket),
        "path-style URL names the bucket: {}",
        presigned.url
    );
    assert!(
        presigned.url.contains("X-Amz-Signature"),
        "{}",
        presigned.url
    );
    let lifetime = presigned.expires_at - Utc::now();
    assert!(
        lifetime.num_seconds() > 290 && lifetime.num_seconds() <= 300,
        "{lifetime}"
    );

    let response = reqwest::get(&presigned.url).await.expect("GET presigned");
    assert!(response.status().is_success(), "{}", response.status());
    assert_eq!(
        response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("audio/wav")
    );
    assert_eq!(response.bytes().await.expect("body").to_vec(), bytes);
}

#[tokio::test]
async fn ping_fails_for_a_missing_bucket() {
    let settings = common::settings();
    let blobs = S3Blobs::new(&sdk_config(&settings).await, &settings);
    assert!(matches!(
        blobs.ping().await,
        Err(BackendError::Unavailable { .. })
    ));
}
