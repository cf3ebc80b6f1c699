//! Upload records in SQLite and the signed PUT links of local files.

use std::time::Duration;

use chrono::Utc;
use sound_creator_core::media::UploadFormat;
use sound_creator_core::ports::{
    upload_key, BlobStore, PutAuthorization, PutLink, SignedUploads, UploadInserted, UploadStore,
};
use sound_creator_core::task::Tenant;
use sound_creator_core::upload::{Upload, UploadId};

use crate::support::{open, quick_options};

fn upload(tenant: &str) -> Upload {
    let id = UploadId::generate();
    let now = Utc::now();
    Upload {
        blob_key: upload_key(&id),
        id,
        tenant: Tenant::new(tenant),
        format: UploadFormat::Flac,
        bytes: 1234,
        created_at: now,
        put_expires_at: now + chrono::Duration::hours(1),
        retain_until: now + chrono::Duration::days(7),
    }
}

#[tokio::test]
async fn an_upload_record_is_written_once_and_read_back_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let uploads = store.uploads();
    let record = upload("acme");
    assert_eq!(
        uploads.insert(&record).await.unwrap(),
        UploadInserted::Created
    );
    let mut changed = record.clone();
    changed.tenant = Tenant::new("intruder");
    assert_eq!(
        uploads.insert(&changed).await.unwrap(),
        UploadInserted::Exists
    );
    store.close().await;

    let store = open(dir.path(), quick_options()).await;
    let read = store.uploads().get(&record.id).await.unwrap();
    assert_eq!(read, Some(record), "the first write stands, unchanged");
    assert_eq!(
        store.uploads().get(&UploadId::generate()).await.unwrap(),
        None
    );
}

/// The query of a PUT link, as the API's file route reads it.
fn put_link(url: &str) -> (String, PutLink) {
    let (path, query) = url.split_once('?').unwrap();
    let key = path.split_once("/v1/files/").unwrap().1.to_owned();
    let mut link = PutLink {
        expires: 0,
        content_type: String::new(),
        bytes: 0,
        signature: String::new(),
    };
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap();
        match name {
            "expires" => link.expires = value.parse().unwrap(),
            "content_type" => link.content_type = value.replace("%2F", "/"),
            "bytes" => link.bytes = value.parse().unwrap(),
            "signature" => link.signature = value.to_owned(),
            other => panic!("unexpected query parameter {other}"),
        }
    }
    (key, link)
}

#[tokio::test]
async fn a_put_link_allows_exactly_what_it_was_signed_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    store.set_public_base_url("http://127.0.0.1:40123");
    let blobs = store.blobs();
    let key = upload_key(&UploadId::generate());
    let presigned = blobs
        .presign_put(&key, "audio/mpeg", 5000, Duration::from_secs(600))
        .await
        .unwrap();
    assert!(presigned
        .url
        .starts_with("http://127.0.0.1:40123/v1/files/uploads/up_"));
    assert_eq!(presigned.headers["Content-Type"], "audio/mpeg");
    let (parsed_key, link) = put_link(&presigned.url);
    assert_eq!(parsed_key, key);
    assert_eq!(link.expires, presigned.expires_at.timestamp());
    assert_eq!(blobs.authorize_put(&key, &link), PutAuthorization::Allowed);

    // Any part changed, and the signature no longer matches.
    let tampered = [
        PutLink {
            bytes: 5001,
            ..link.clone()
        },
        PutLink {
            content_type: "audio/wav".into(),
            ..link.clone()
        },
        PutLink {
            expires: link.expires + 1,
            ..link.clone()
        },
    ];
    for bad in &tampered {
        assert_eq!(
            blobs.authorize_put(&key, bad),
            PutAuthorization::Forbidden,
            "{bad:?}"
        );
    }
    assert_eq!(
        blobs.authorize_put("uploads/up_other", &link),
        PutAuthorization::Forbidden
    );
    // A download link of the same key is no upload link.
    let download = blobs
        .presign_get(&key, Duration::from_secs(600))
        .await
        .unwrap();
    let signature = download.url.rsplit_once("signature=").unwrap().1.to_owned();
    assert_eq!(
        blobs.authorize_put(
            &key,
            &PutLink {
                signature,
                ..link.clone()
            }
        ),
        PutAuthorization::Forbidden
    );

    let expired = blobs
        .presign_put(&key, "audio/mpeg", 5000, Duration::ZERO)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, old) = put_link(&expired.url);
    assert_eq!(blobs.authorize_put(&key, &old), PutAuthorization::Expired);
}

#[tokio::test]
async fn a_blob_has_a_size_and_bytes_once_stored_and_none_before() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let blobs = store.blobs();
    let key = upload_key(&UploadId::generate());
    assert_eq!(blobs.size(&key).await.unwrap(), None);
    assert_eq!(blobs.get(&key).await.unwrap(), None);
    blobs.put(&key, vec![7; 321], "audio/wav").await.unwrap();
    assert_eq!(blobs.size(&key).await.unwrap(), Some(321));
    assert_eq!(blobs.get(&key).await.unwrap(), Some(vec![7; 321]));
    assert!(
        blobs.size("../escape").await.is_err(),
        "bad keys are refused"
    );
}
