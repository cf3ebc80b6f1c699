//! `HttpCallbackSender` against a real HTTP server on loopback.

// Test helpers (not only #[test] functions) may unwrap: a failure is the
// test failing, with the panic message pointing at the line.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::post;
use axum::Router;
use sound_creator_core::ports::{CallbackSender, WebhookDelivery};
use sound_creator_core::webhook::WebhookSecret;
use sound_creator_webhook::{HttpCallbackSender, USER_AGENT_VALUE};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Debug, Clone)]
struct Received {
    path: &'static str,
    headers: HeaderMap,
    body: String,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A callback receiver on 127.0.0.1:0 that records what reaches `/ok`.
async fn spawn_receiver() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route("/ok", post(record))
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        )
        .route(
            "/redirect",
            post(|| async { Redirect::temporary("/ok").into_response() }),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (base, log)
}

async fn record(State(log): State<Log>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let body = String::from_utf8_lossy(&body).into_owned();
    log.lock().unwrap().push(Received {
        path: "/ok",
        headers,
        body,
    });
    StatusCode::NO_CONTENT
}

fn delivery(url: String, signed: bool) -> WebhookDelivery {
    let body = r#"{"task_id":"abc","status":"succeeded"}"#.to_owned();
    let webhook_id = "msg_abc".to_owned();
    let timestamp = 1_700_000_000;
    let signature = if signed {
        WebhookSecret::parse(SECRET)
            .unwrap()
            .sign(&webhook_id, timestamp, &body)
    } else {
        String::new()
    };
    WebhookDelivery {
        url,
        webhook_id,
        timestamp,
        signature,
        body,
    }
}

fn sender(timeout: Duration) -> HttpCallbackSender {
    HttpCallbackSender::new(timeout).unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("missing header {name}"))
}

#[tokio::test]
async fn a_delivery_carries_the_body_and_a_signature_the_receiver_can_verify() {
    let (base, log) = spawn_receiver().await;
    let sent = delivery(format!("{base}/ok"), true);

    sender(Duration::from_secs(5))
        .send(&sent)
        .await
        .expect("a 204 is a success");

    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.path, "/ok");
    assert_eq!(got.body, sent.body);
    assert_eq!(header(&got.headers, "content-type"), "application/json");
    assert_eq!(header(&got.headers, "user-agent"), USER_AGENT_VALUE);
    assert!(USER_AGENT_VALUE.starts_with("sound-creator/"));
    let id = header(&got.headers, "webhook-id");
    let timestamp: i64 = header(&got.headers, "webhook-timestamp").parse().unwrap();
    let signature = header(&got.headers, "webhook-signature");
    assert_eq!(id, "msg_abc");
    let secret = WebhookSecret::parse(SECRET).unwrap();
    assert!(secret.verify(id, timestamp, &got.body, signature));
}

#[tokio::test]
async fn an_unsigned_delivery_has_no_signature_header() {
    let (base, log) = spawn_receiver().await;

    sender(Duration::from_secs(5))
        .send(&delivery(format!("{base}/ok"), false))
        .await
        .unwrap();

    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert!(received[0].headers.get("webhook-signature").is_none());
    assert!(received[0].headers.get("webhook-id").is_some());
}

#[tokio::test]
async fn a_500_answer_is_an_error_naming_the_status() {
    let (base, _log) = spawn_receiver().await;
    let url = format!("{base}/fail");

    let err = sender(Duration::from_secs(5))
        .send(&delivery(url.clone(), true))
        .await
        .unwrap_err();

    assert_eq!(err.url, url);
    assert!(err.reason.contains("500"), "reason was {:?}", err.reason);
}

#[tokio::test]
async fn a_slow_receiver_times_out() {
    let (base, _log) = spawn_receiver().await;
    let started = std::time::Instant::now();

    let err = sender(Duration::from_millis(300))
        .send(&delivery(format!("{base}/slow"), true))
        .await
        .unwrap_err();

    assert!(
        err.reason.contains("timeout"),
        "reason was {:?}",
        err.reason
    );
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (base, log) = spawn_receiver().await;

    let err = sender(Duration::from_secs(5))
        .send(&delivery(format!("{base}/redirect"), true))
        .await
        .unwrap_err();

    assert!(err.reason.contains("307"), "reason was {:?}", err.reason);
    assert!(
        log.lock().unwrap().is_empty(),
        "the redirect target must not be called"
    );
}

#[tokio::test]
async fn an_unreachable_receiver_is_an_error_not_a_panic() {
    // Bind then drop: nothing listens on that port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let err = sender(Duration::from_secs(2))
        .send(&delivery(format!("http://{addr}/ok"), true))
        .await
        .unwrap_err();

    assert!(!err.reason.is_empty());
}
