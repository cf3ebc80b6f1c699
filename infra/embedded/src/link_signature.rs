//! The signatures of the embedded mode's signed links, and the keys they
//! may name: pure functions of the signing key and the link's parts, with
//! no I/O, so the fuzz crate compiles this very file (`fuzz/src/lib.rs`).
//!
//! A download link signs `key + "\n" + expires`; an upload link signs
//! `PUT`, the key, expiry, content type and size, each followed by `"\n"`.
//! Signatures are lowercase hex HMAC-SHA256, compared in constant time.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

const MAX_KEY_LEN: usize = 512;

/// Why a key is refused, or `Ok` for a key that names a file under the
/// blob directory and nothing else.
pub fn validate_blob_key(key: &str) -> Result<(), &'static str> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err("blob keys must be 1 to 512 characters");
    }
    for segment in key.split('/') {
        if segment.is_empty() {
            return Err("blob keys are relative paths without empty segments");
        }
        if segment.starts_with('.') {
            // Also rules out `.` and `..`, and our own temporary files.
            return Err("blob key segments must not start with a dot");
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return Err("blob keys may only hold letters, digits, '.', '_', '-' and '/'");
        }
    }
    Ok(())
}

pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn mac_of<'a>(secret: &[u8], parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    for part in parts {
        mac.update(part);
    }
    hex(&mac.finalize().into_bytes())
}

/// The signature of a download link for `key` until `expires`.
pub fn download_signature(secret: &[u8], key: &str, expires: i64) -> String {
    let expires = expires.to_string();
    mac_of(secret, [key.as_bytes(), b"\n", expires.as_bytes()])
}

/// The signature of an upload link: a PUT of exactly `bytes` bytes of
/// `content_type` to `key` until `expires`.
pub fn put_signature(
    secret: &[u8],
    key: &str,
    expires: i64,
    content_type: &str,
    bytes: u64,
) -> String {
    let (expires, bytes) = (expires.to_string(), bytes.to_string());
    mac_of(
        secret,
        [
            b"PUT".as_slice(),
            b"\n",
            key.as_bytes(),
            b"\n",
            expires.as_bytes(),
            b"\n",
            content_type.as_bytes(),
            b"\n",
            bytes.as_bytes(),
            b"\n",
        ],
    )
}

/// Whether `given` is `expected`, in time independent of where they differ.
pub fn matches(expected: &str, given: &str) -> bool {
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}
