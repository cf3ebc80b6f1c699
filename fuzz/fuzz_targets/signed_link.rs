//! Arbitrary text as a signed link's path and query, read the way the API's
//! `/v1/files/{key}` route reads them, then verified with the embedded
//! mode's signatures. A forged signature must never match, the link the
//! signer makes for the same parts must, and no key that could leave the
//! blob directory may pass the key check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::link_signature::{
    download_signature, matches, put_signature, validate_blob_key,
};

const SECRET: &[u8] = b"fuzzing-signing-key-0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (key, query) = text.split_once('?').unwrap_or((&text, ""));
    let (mut expires, mut signature, mut content_type, mut bytes) = (None, None, None, None);
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "expires" => expires = value.parse::<i64>().ok(),
            "signature" => signature = Some(value.into_owned()),
            "content_type" => content_type = Some(value.into_owned()),
            "bytes" => bytes = value.parse::<u64>().ok(),
            _ => {}
        }
    }
    if validate_blob_key(key).is_ok() {
        assert!(!key.split('/').any(|s| s == ".." || s == "." || s.is_empty()));
        assert!(!key.starts_with('/') && !key.contains('\\'));
    }
    let (Some(expires), Some(signature)) = (expires, signature) else {
        return;
    };
    let genuine = download_signature(SECRET, key, expires);
    assert!(matches(&genuine, &genuine));
    if signature != genuine {
        assert!(!matches(&genuine, &signature));
    }
    if let (Some(content_type), Some(bytes)) = (content_type, bytes) {
        let put = put_signature(SECRET, key, expires, &content_type, bytes);
        assert_ne!(put, genuine, "a download signature is never an upload one");
        if signature != put {
            assert!(!matches(&put, &signature));
        }
    }
});
