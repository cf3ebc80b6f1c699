//! What a hostile or a heavy client can do to the API, against the real
//! server (`connections::serve` on a loopback port, the embedded backends in
//! a temporary directory): the queue cap under concurrent submits, a
//! keep-alive connection after `429`, `/v1/generate` waiters at shutdown,
//! slow and half-sent requests, the connection cap, requests hyper cannot
//! parse, and every answer being one the OpenAPI document lists.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sound_creator_core::error_code::ErrorCode;
use sound_creator_core::ports::{CallbackSender, QueueName, StatsRow, StatsStore};
use sound_creator_core::service::TaskService;
use sound_creator_core::task::{ModelFamily, TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_functions::api::{app, AppState};
use sound_creator_functions::connections::{self, ConnectionLimits};
use sound_creator_settings::Settings;
use sound_creator_webhook::HttpCallbackSender;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

const TOKEN: &str = "test-marketplace-token";
const OTHER_TOKEN: &str = "acme-token";

/// A running API: its address, its service, and the switch that stops it.
struct Server {
    addr: std::net::SocketAddr,
    service: Arc<TaskService>,
    store: EmbeddedStore,
    stop: Option<oneshot::Sender<()>>,
    stopped: Option<tokio::task::JoinHandle<()>>,
    openapi: Value,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(extra: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .unwrap();
        let callbacks: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(Duration::from_secs(2)).unwrap());
        let ports = store.ports(callbacks);
        let keys = format!("acme:{OTHER_TOKEN}");
        let mut pairs = vec![("MARKETPLACE_TOKEN", TOKEN), ("API_KEYS", keys.as_str())];
        pairs.extend_from_slice(extra);
        let settings: Settings = sound_creator_settings::from_pairs(&pairs).unwrap();
        let service = Arc::new(TaskService::new(ports, Arc::new(settings.service.clone())));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = app(AppState::new(
            service.clone(),
            Arc::new(settings.api.clone()),
            None,
        ));
        let openapi = sound_creator_functions::api::openapi::document(&settings.service, false);
        let (stop, stopping) = oneshot::channel::<()>();
        let waiters = service.clone();
        let limits = ConnectionLimits::of(&settings.api);
        // As `sound-creator serve` does: the shutdown signal also releases
        // the `/v1/generate` waiters.
        let stopped = tokio::spawn(connections::serve(listener, router, limits, async move {
            let _ = stopping.await;
            waiters.stop_waiting();
        }));
        Server {
            addr,
            service,
            store,
            stop: Some(stop),
            stopped: Some(stopped),
            openapi,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stops the server and waits until it has drained.
    async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(stopped) = self.stopped.take() {
            tokio::time::timeout(Duration::from_secs(30), stopped)
                .await
                .expect("the server stops")
                .unwrap();
        }
    }

    async fn queued(&self, family: ModelFamily) -> u64 {
        let ports = self.store.ports(Arc::new(
            HttpCallbackSender::new(Duration::from_secs(1)).unwrap(),
        ));
        ports
            .queue
            .depth(QueueName::Jobs(family))
            .await
            .unwrap()
            .queued
    }
}

fn music(prompt: &str) -> Value {
    json!({"type": "music", "prompt": prompt, "duration": 1, "user_id": "user-42"})
}

/// One HTTP/1.1 answer read off a raw connection: status, head, body.
async fn read_answer(stream: &mut TcpStream) -> Option<(u16, String, String)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let status = head.get(9..12)?.parse().ok()?;
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&buf[head_end..head_end + length]).into_owned();
    Some((status, head, body))
}

fn error_code(body: &str) -> String {
    let doc: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("a JSON body: {body:?}"));
    doc["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_submits_never_queue_more_jobs_than_the_cap() {
    let server = Server::start(&[("MAX_QUEUED_JOBS", "5")]).await;
    let client = reqwest::Client::new();
    let submits = (0..16).map(|i| {
        let (client, url) = (client.clone(), server.url("/v1/call"));
        tokio::spawn(async move {
            let response = client
                .post(url)
                .bearer_auth(TOKEN)
                .json(&music(&format!("submit {i}")))
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            (status, body)
        })
    });
    let mut accepted = 0;
    for submit in submits.collect::<Vec<_>>() {
        let (status, body) = submit.await.unwrap();
        match status {
            202 => accepted += 1,
            429 => assert_eq!(body["error"]["code"], "queue_full", "{body}"),
            other => panic!("{other}: {body}"),
        }
    }
    assert_eq!(accepted, 5, "exactly the cap is admitted");
    assert_eq!(server.queued(ModelFamily::Music).await, 5);
}

/// F1: a stats window at the ends of the years the API takes (1 and 9999)
/// is answered, not refused as `503 backend_unavailable`; a year past them
/// is the client's mistake, a `400` on the field.
#[tokio::test]
async fn stats_windows_at_the_ends_of_the_accepted_years_are_answered() {
    let server = Server::start(&[]).await;
    // No worker runs here, so the row a finished task leaves is written
    // straight to the store.
    let now = chrono::Utc::now();
    server
        .store
        .stats()
        .record(&StatsRow {
            task_id: TaskId::generate(),
            tenant: Tenant::new("marketplace"),
            user_id: "user-42".into(),
            family: ModelFamily::Music,
            status: TaskStatus::Succeeded,
            duration: 1.0,
            samples: 1,
            audio_seconds: 1.0,
            created_at: now,
            completed_at: Some(now),
            queue_ms: Some(1),
            inference_ms: Some(1),
            total_ms: Some(2),
        })
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let get = |query: &str| {
        let request = client
            .get(server.url(&format!("/v1/stats?{query}")))
            .bearer_auth(TOKEN);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    for (query, requests) in [
        ("to=9999-12-31T23:59:59Z", 1),
        ("from=0001-01-01T00:00:00Z", 1),
        ("from=0001-01-01T00:00:00Z&to=9999-12-31T23:59:59Z", 1),
        ("from=5000-01-01T00:00:00Z&to=9999-12-31T23:59:59Z", 0),
        ("from=0001-01-01T00:00:00Z&to=1000-01-01T00:00:00Z", 0),
    ] {
        let (status, body) = get(query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["requests"], requests, "{query}: {body}");
    }
    for (query, field) in [
        ("to=10000-01-01T00:00:00Z", "to"),
        ("from=0000-12-31T23:59:59Z", "from"),
    ] {
        let (status, body) = get(query).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_keep_alive_connection_survives_429_rate_limited_with_unread_bodies() {
    let server = Server::start(&[("RATE_LIMIT_PER_MINUTE", "2")]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let body = music("on one connection").to_string();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        // The body in its own write, after the headers, so that it is not
        // already buffered when the rate limiter answers.
        let head = format!(
            "POST /v1/call HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        stream.write_all(body.as_bytes()).await.unwrap();
        let (status, head, answer) = read_answer(&mut stream)
            .await
            .unwrap_or_else(|| panic!("the connection was dropped after {statuses:?}"));
        assert!(!head.contains("connection: close"), "{head}");
        if status == 429 {
            assert_eq!(error_code(&answer), "rate_limited");
            assert!(head.contains("retry-after: "), "{head}");
        }
        statuses.push(status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        28,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_pending_generate_answers_202_at_once_when_the_server_stops() {
    // Nothing runs the jobs here, so the task stays queued for the whole
    // minute the client asked to wait.
    let mut server = Server::start(&[]).await;
    let mut body = music("waited on at shutdown");
    body["wait_seconds"] = json!(60);
    let (client, url) = (reqwest::Client::new(), server.url("/v1/generate"));
    let waiting = tokio::spawn(async move {
        let response = client
            .post(url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !waiting.is_finished(),
        "the waiter waits while the server runs"
    );
    let stopping = Instant::now();
    server.stop().await;
    let (status, doc) = waiting.await.unwrap();
    assert_eq!(status, 202, "{doc}");
    assert_eq!(doc["status"], "queued");
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "the server drained in {:?}, not after the waiter's minute",
        stopping.elapsed()
    );
    // Still readable: the task is durable, only the wait ended.
    let id = doc["task_id"].as_str().unwrap();
    let tenant = sound_creator_core::task::Tenant::new("marketplace");
    assert_eq!(
        server.service.result(&tenant, id).await.unwrap().status,
        sound_creator_core::task::TaskStatus::Queued
    );
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let server = Server::start(&[("HTTP_HEADER_TIMEOUT_MS", "300")]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: ")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(
        read.is_ok(),
        "still open 10 s after a 300 ms header timeout"
    );
}

#[tokio::test]
async fn a_body_that_stops_arriving_answers_408_request_timeout() {
    let server = Server::start(&[("HTTP_BODY_TIMEOUT_MS", "300")]).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v1/call HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"type\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut stream))
        .await
        .expect("an answer well before 10 s");
    let (status, _, body) = answer.expect("an answer, not a dropped connection");
    assert_eq!(status, 408);
    assert_eq!(error_code(&body), "request_timeout");
}

#[tokio::test]
async fn connections_past_the_cap_wait_until_one_closes() {
    let server = Server::start(&[("MAX_CONNECTIONS", "2")]).await;
    let request = b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n";
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    for held in [&mut first, &mut second] {
        held.write_all(request).await.unwrap();
        assert_eq!(read_answer(held).await.unwrap().0, 200);
    }
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(request).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(700), read_answer(&mut third)).await;
    assert!(
        early.is_err(),
        "a third connection is served while two are held"
    );
    drop(first);
    let answer = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut third))
        .await
        .expect("served once a place is free");
    assert_eq!(answer.unwrap().0, 200);
}

#[tokio::test]
async fn requests_hyper_cannot_parse_get_the_contract_error_shape() {
    let server = Server::start(&[]).await;
    let long_uri = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70_000));
    let many_headers = format!(
        "GET /health HTTP/1.1\r\nhost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("x-h{i}: v\r\n"))
            .collect::<String>()
    );
    for (request, status, code) in [
        ("NOT A REQUEST LINE\r\n\r\n".to_owned(), 400, "bad_request"),
        (long_uri, 414, "uri_too_long"),
        (many_headers, 431, "headers_too_large"),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = stream.write_all(request.as_bytes()).await;
        let (got, head, body) = read_answer(&mut stream).await.expect("an answer");
        assert_eq!(got, status, "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert_eq!(error_code(&body), code);
    }
}

/// The operation the document has for a concrete path.
fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    let paths = doc["paths"].as_object().unwrap();
    let template = paths
        .keys()
        .find(|t| {
            let (a, b): (Vec<_>, Vec<_>) = (t.split('/').collect(), path.split('/').collect());
            a.len() == b.len() && a.iter().zip(&b).all(|(x, y)| x == y || x.starts_with('{'))
        })
        .unwrap_or_else(|| panic!("{path} is not in the document"));
    &paths[template][method]
}

#[tokio::test]
async fn every_answer_the_server_gives_is_one_the_document_lists() {
    let server = Server::start(&[("RATE_LIMIT_PER_MINUTE", "6"), ("MAX_QUEUED_JOBS", "1")]).await;
    let client = reqwest::Client::new();
    let unknown = "01900000-0000-7000-8000-000000000000";
    let mut cases: Vec<(&str, String, Option<&str>, Option<String>)> = vec![
        (
            "post",
            "/v1/call".into(),
            Some(TOKEN),
            Some(music("documented").to_string()),
        ),
        (
            "post",
            "/v1/call".into(),
            Some(TOKEN),
            Some(music("over the cap").to_string()),
        ),
        (
            "post",
            "/v1/call".into(),
            Some(TOKEN),
            Some("{not json".into()),
        ),
        (
            "post",
            "/v1/call".into(),
            Some(TOKEN),
            Some(r#"{"type":"music","bogus":1}"#.into()),
        ),
        (
            "post",
            "/v1/call".into(),
            None,
            Some(music("no key").to_string()),
        ),
        (
            "get",
            format!("/v1/result/{unknown}"),
            Some(OTHER_TOKEN),
            None,
        ),
        (
            "post",
            format!("/v1/cancel/{unknown}"),
            Some(OTHER_TOKEN),
            None,
        ),
        (
            "get",
            "/v1/stats?from=0000-01-01T00:00:00Z".into(),
            Some(OTHER_TOKEN),
            None,
        ),
        (
            "get",
            "/v1/stats?user_id=user-42".into(),
            Some(OTHER_TOKEN),
            None,
        ),
        (
            "post",
            "/v1/uploads".into(),
            Some(OTHER_TOKEN),
            Some(r#"{"content_type":"audio/wav","bytes":0}"#.into()),
        ),
        ("get", "/v1/models".into(), Some(OTHER_TOKEN), None),
        (
            "post",
            "/v1/result".into(),
            Some(OTHER_TOKEN),
            Some(format!(r#"{{"task_id":"{unknown}"}}"#)),
        ),
        ("get", "/health".into(), None, None),
    ];
    // Past the rate limit: every protected route answers 429 alike.
    for _ in 0..2 {
        cases.push(("get", "/v1/models".into(), Some(TOKEN), None));
        cases.push(("get", format!("/v1/result/{unknown}"), Some(TOKEN), None));
        cases.push(("get", "/v1/stats".into(), Some(TOKEN), None));
        cases.push(("post", format!("/v1/cancel/{unknown}"), Some(TOKEN), None));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (method, path, token, body) in cases {
        let mut request = match method {
            "get" => client.get(server.url(&path)),
            _ => client.post(server.url(&path)),
        };
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let retry_after = response.headers().contains_key("retry-after");
        let answer: Value = response.json().await.unwrap();
        let route = path.split('?').next().unwrap();
        let documented =
            &operation(&server.openapi, route, method)["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which the document does not list: {answer}"
        );
        assert_eq!(
            retry_after,
            documented["headers"]["Retry-After"].is_object(),
            "{method} {path} {status}: Retry-After sent and documented alike"
        );
        if let Some(code) = answer["error"]["code"].as_str() {
            let code = ErrorCode::parse(code).unwrap();
            assert_eq!(code.http_status(), Some(status), "{code}");
            seen.insert(code);
        }
    }
    for code in [
        ErrorCode::QueueFull,
        ErrorCode::RateLimited,
        ErrorCode::Unauthorized,
        ErrorCode::InvalidJson,
        ErrorCode::UnknownField,
        ErrorCode::TaskNotFound,
        ErrorCode::InvalidQuery,
    ] {
        assert!(seen.contains(&code), "the cases reached {code}: {seen:?}");
    }
}
