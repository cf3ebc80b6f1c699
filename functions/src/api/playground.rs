//! The playground: one static page (HTML, CSS and plain JavaScript, no build
//! step and no outside library) compiled into the binary, so `GET /` serves
//! it wherever the router runs, the Lambda included. It is only a client of
//! the public API; it holds no secret and the server gives it nothing the
//! API would not. The token the user types stays in the tab's
//! `sessionStorage` and travels only in `Authorization` headers.

use axum::extract::Path;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use sound_creator_core::error_code::ErrorCode;

use super::error::ApiError;

const INDEX_HTML: &str = include_str!("playground/index.html");
/// The page's own files, by the name under `/playground/`.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("playground/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("playground/style.css"),
    ),
];

/// Scripts and styles only from this origin, so nothing injected into a
/// prompt or a result can run; audio may come from the presigned storage
/// links, which are on another origin in AWS (S3), and uploads go there.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; media-src 'self' blob: http: https:; connect-src 'self' http: https:; \
     frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// `GET /`.
pub async fn page() -> Response {
    with_headers(INDEX_HTML, "text/html; charset=utf-8")
}

/// `GET /playground/{file}`.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| with_headers(body, content_type))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such playground file"))
}

fn with_headers(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // Small and versioned with the binary: revalidate rather than cache long.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
