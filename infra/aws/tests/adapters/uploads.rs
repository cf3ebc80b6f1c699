//! Uploads in AWS mode against moto: the S3 presigned PUT (its signature
//! covers the declared type and size; a PUT through it lands the bytes,
//! which HEAD and GET then see), and the DynamoDB upload records beside the
//! tasks, with their TTL attribute.

use crate::common;

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::Utc;
use sound_creator_aws::dynamodb::TTL_ATTRIBUTE;
use sound_creator_aws::dynamodb_uploads::DynamoUploads;
use sound_creator_aws::s3::S3Blobs;
use sound_creator_aws::{provision, sdk_config};
use sound_creator_core::media::UploadFormat;
use sound_creator_core::ports::{upload_key, BlobStore, UploadInserted, UploadStore};
use sound_creator_core::task::Tenant;
use sound_creator_core::upload::{Upload, UploadId};

#[tokio::test]
async fn a_presigned_put_signs_type_and_size_and_lands_the_bytes() {
    let settings = common::settings();
    provision(&settings).await.expect("provision against moto");
    let blobs = S3Blobs::new(&sdk_config(&settings).await, &settings);
    let key = upload_key(&UploadId::generate());
    let bytes: Vec<u8> = (0..=255u8).cycle().take(30_000).collect();

    assert_eq!(
        blobs.size(&key).await.expect("head"),
        None,
        "not yet uploaded"
    );
    assert_eq!(blobs.get(&key).await.expect("get"), None);

    let presigned = blobs
        .presign_put(
            &key,
            "audio/flac",
            bytes.len() as u64,
            Duration::from_secs(300),
        )
        .await
        .expect("presign");
    let url = url::Url::parse(&presigned.url).expect("a URL");
    let query: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    let signed = query
        .get("X-Amz-SignedHeaders")
        .expect("SigV4 query signing");
    for header in ["content-length", "content-type", "host"] {
        assert!(
            signed.split(';').any(|h| h == header),
            "{header} not signed: {signed}"
        );
    }
    assert!(url.path().ends_with(&key), "{url}");
    assert_eq!(
        presigned.headers.get("Content-Type").map(String::as_str),
        Some("audio/flac")
    );
    assert!(!presigned
        .headers
        .keys()
        .any(|h| h.eq_ignore_ascii_case("content-length")));
    let lifetime = presigned.expires_at - Utc::now();
    assert!((290..=300).contains(&lifetime.num_seconds()), "{lifetime}");

    let client = reqwest::Client::new();
    let mut put = client.put(&presigned.url).body(bytes.clone());
    for (name, value) in &presigned.headers {
        put = put.header(name, value);
    }
    let response = put.send().await.expect("PUT presigned");
    assert!(response.status().is_success(), "{}", response.status());

    assert_eq!(
        blobs.size(&key).await.expect("head"),
        Some(bytes.len() as u64)
    );
    assert_eq!(blobs.get(&key).await.expect("get"), Some(bytes));
}

fn upload(tenant: &str) -> Upload {
    let id = UploadId::generate();
    let now = Utc::now();
    Upload {
        blob_key: upload_key(&id),
        id,
        tenant: Tenant::new(tenant),
        format: UploadFormat::Mpeg,
        bytes: 4096,
        created_at: now,
        put_expires_at: now + chrono::Duration::hours(1),
        retain_until: now + chrono::Duration::days(7),
    }
}

#[tokio::test]
async fn an_upload_record_is_written_once_beside_the_tasks_with_its_ttl() {
    let settings = common::settings();
    provision(&settings).await.expect("provision against moto");
    let uploads = DynamoUploads::new(&sdk_config(&settings).await, &settings);
    let record = upload("acme");

    assert_eq!(
        uploads.insert(&record).await.expect("insert"),
        UploadInserted::Created
    );
    let mut other = record.clone();
    other.tenant = Tenant::new("intruder");
    assert_eq!(
        uploads.insert(&other).await.expect("insert again"),
        UploadInserted::Exists
    );
    assert_eq!(
        uploads.get(&record.id).await.expect("get"),
        Some(record.clone())
    );
    assert_eq!(uploads.get(&UploadId::generate()).await.expect("get"), None);

    let item = uploads
        .raw_item(&record.id)
        .await
        .expect("raw")
        .expect("an item");
    assert_eq!(
        item.get("pk"),
        Some(&AttributeValue::S(format!("upload#{}", record.id)))
    );
    assert_eq!(item.get("tenant"), Some(&AttributeValue::S("acme".into())));
    assert_eq!(
        item.get(TTL_ATTRIBUTE),
        Some(&AttributeValue::N(
            record.retain_until.timestamp().to_string()
        )),
        "DynamoDB drops it after its retention"
    );
}
