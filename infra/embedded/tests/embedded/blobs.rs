use std::time::Duration;

use sound_creator_core::ports::{clip_key, BlobStore, Download, SignedDownloads};
use sound_creator_core::task::TaskId;
use sound_creator_embedded::{EmbeddedOptions, DOWNLOAD_KEY_FILE};

use crate::support::{open, quick_options};

/// The parts of a presigned link that the API's file route passes on.
pub struct Link {
    pub base: String,
    pub key: String,
    pub expires: i64,
    pub signature: String,
}

pub fn parse_link(url: &str) -> Link {
    let (path, query) = url.split_once('?').expect("a query string");
    let (base, key) = path.split_once("/v1/files/").expect("the files route");
    let mut expires = None;
    let mut signature = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("expires", v)) => expires = Some(v.parse().unwrap()),
            Some(("signature", v)) => signature = Some(v.to_owned()),
            _ => panic!("unexpected query pair {pair}"),
        }
    }
    Link {
        base: base.to_owned(),
        key: key.to_owned(),
        expires: expires.unwrap(),
        signature: signature.unwrap(),
    }
}

fn a_clip_key() -> String {
    clip_key(&TaskId::generate(), 0, "wav")
}

#[tokio::test]
async fn a_stored_clip_comes_back_through_its_presigned_link() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    store.set_public_base_url("http://127.0.0.1:40123/");
    let blobs = store.blobs();
    let key = a_clip_key();
    let audio = b"RIFF....WAVEfmt ".to_vec();

    blobs.put(&key, audio.clone(), "audio/wav").await.unwrap();
    blobs.put(&key, audio.clone(), "audio/wav").await.unwrap();
    let presigned = blobs
        .presign_get(&key, Duration::from_secs(600))
        .await
        .unwrap();
    let link = parse_link(&presigned.url);

    assert_eq!(link.base, "http://127.0.0.1:40123");
    assert_eq!(link.key, key);
    assert_eq!(presigned.expires_at.timestamp(), link.expires);
    assert_eq!(
        blobs
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Found {
            bytes: audio,
            content_type: "audio/wav".to_owned()
        }
    );
    assert!(dir.path().join("blobs").join(&key).is_file());
    blobs.ping().await.unwrap();
}

#[tokio::test]
async fn an_expired_link_answers_expired() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let blobs = store.blobs();
    let key = a_clip_key();
    blobs.put(&key, vec![1, 2, 3], "audio/wav").await.unwrap();
    let link = parse_link(&blobs.presign_get(&key, Duration::ZERO).await.unwrap().url);

    tokio::time::sleep(Duration::from_millis(1100)).await;

    assert_eq!(
        blobs
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Expired
    );
}

#[tokio::test]
async fn a_tampered_link_is_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let blobs = store.blobs();
    let key = a_clip_key();
    let other = a_clip_key();
    blobs.put(&key, vec![1], "audio/wav").await.unwrap();
    blobs.put(&other, vec![2], "audio/wav").await.unwrap();
    let link = parse_link(
        &blobs
            .presign_get(&key, Duration::from_secs(60))
            .await
            .unwrap()
            .url,
    );

    let mut flipped = link.signature.clone().into_bytes();
    flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    assert_eq!(
        blobs.open(&link.key, link.expires, &flipped).await.unwrap(),
        Download::Forbidden
    );
    assert_eq!(
        blobs
            .open(&link.key, link.expires + 3600, &link.signature)
            .await
            .unwrap(),
        Download::Forbidden
    );
    assert_eq!(
        blobs
            .open(&other, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Forbidden
    );
    assert_eq!(
        blobs.open(&link.key, link.expires, "").await.unwrap(),
        Download::Forbidden
    );
}

#[tokio::test]
async fn a_signed_link_to_a_file_that_is_not_there_answers_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let blobs = store.blobs();
    let link = parse_link(
        &blobs
            .presign_get(&a_clip_key(), Duration::from_secs(60))
            .await
            .unwrap()
            .url,
    );

    assert_eq!(
        blobs
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Missing
    );
}

#[tokio::test]
async fn keys_that_could_escape_the_blob_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), quick_options()).await;
    let blobs = store.blobs();
    std::fs::write(dir.path().join("secret.txt"), "do not serve").unwrap();

    for key in [
        "../secret.txt",
        "/etc/passwd",
        "tasks/../../secret.txt",
        "tasks//x.wav",
        "a b.wav",
        "",
    ] {
        assert!(
            blobs.put(key, vec![0], "audio/wav").await.is_err(),
            "put {key:?}"
        );
        assert!(
            blobs
                .presign_get(key, Duration::from_secs(60))
                .await
                .is_err(),
            "presign {key:?}"
        );
        assert_eq!(
            blobs.open(key, i64::MAX, "00").await.unwrap(),
            Download::Forbidden,
            "open {key:?}"
        );
    }
    assert!(!dir.path().join("secret.txt.tmp").exists());
}

#[tokio::test]
async fn the_generated_signing_key_is_private_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = a_clip_key();
    let link = {
        let store = open(dir.path(), quick_options()).await;
        store.blobs().put(&key, vec![9], "audio/wav").await.unwrap();
        let link = parse_link(
            &store
                .blobs()
                .presign_get(&key, Duration::from_secs(60))
                .await
                .unwrap()
                .url,
        );
        store.close().await;
        link
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DOWNLOAD_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let reopened = open(dir.path(), quick_options()).await;

    assert!(matches!(
        reopened
            .blobs()
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Found { .. }
    ));
}

#[tokio::test]
async fn a_configured_signing_secret_is_used_instead_of_the_key_file() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        download_secret: Some(b"shared secret".to_vec()),
        ..quick_options()
    };
    let first = open(dir.path(), options.clone()).await;
    let second = open(other_dir.path(), options).await;
    let key = a_clip_key();
    second
        .blobs()
        .put(&key, vec![7], "audio/wav")
        .await
        .unwrap();

    let link = parse_link(
        &first
            .blobs()
            .presign_get(&key, Duration::from_secs(60))
            .await
            .unwrap()
            .url,
    );

    assert!(!dir.path().join(DOWNLOAD_KEY_FILE).exists());
    assert!(matches!(
        second
            .blobs()
            .open(&link.key, link.expires, &link.signature)
            .await
            .unwrap(),
        Download::Found { .. }
    ));
}
