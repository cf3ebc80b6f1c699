//! The HTTP contract, end to end: the real `sound-creator serve` binary on
//! the embedded backends with the tiny MusicGen checkpoint, spoken to over
//! HTTP on loopback.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{music, App, CallbackReceiver, OTHER_TOKEN, TOKEN, WEBHOOK_SECRET};
use serde_json::{json, Value};
use sound_creator_core::audio::decode_wav;
use sound_creator_core::webhook::WebhookSecret;

const LONG: Duration = Duration::from_secs(120);

fn assert_error(status: StatusCode, doc: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{doc}");
    assert_eq!(doc["error"]["code"], want_code, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_but_health_and_openapi_needs_a_valid_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let routes: [(&str, &str); 7] = [
        ("POST", "/v1/call"),
        ("POST", "/v1/generate"),
        ("GET", "/v1/result/0190b7c2-8f9e-7c3a-9d1e-123456789abc"),
        ("POST", "/v1/result"),
        ("POST", "/v1/cancel/0190b7c2-8f9e-7c3a-9d1e-123456789abc"),
        ("GET", "/v1/stats"),
        ("GET", "/v1/stats?user_id=x"),
    ];
    for (method, path) in routes {
        for token in [None, Some("wrong-token"), Some("")] {
            let mut req = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .json(&music("x", 1.0));
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let resp = req.send().await.unwrap();
            assert_eq!(
                resp.status().as_u16(),
                401,
                "{method} {path} with {token:?}"
            );
            assert_eq!(resp.headers()["www-authenticate"], "Bearer");
            let doc: Value = resp.json().await.unwrap();
            assert_eq!(doc["error"]["code"], "unauthorized");
        }
    }
    let (status, _, _) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, doc) = app.get("/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    for path in [
        "/v1/call",
        "/v1/generate",
        "/v1/result/{task_id}",
        "/v1/result",
        "/v1/cancel/{task_id}",
        "/v1/stats",
        "/health",
    ] {
        assert!(doc["paths"][path].is_object(), "openapi lacks {path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_contract_error_has_its_status_and_code() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[("MAX_BODY_BYTES", "2048")]);

    // 400: malformed JSON, and a bad field naming the field.
    let resp = app
        .client
        .post(app.url("/v1/call"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"type\": ")
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let doc: Value = resp.json().await.unwrap();
    assert_error(
        StatusCode::from_u16(status.as_u16()).unwrap(),
        &doc,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );

    let mut body = music(&"é".repeat(140), 5.0);
    let (status, _, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_error(status, &doc, StatusCode::BAD_REQUEST, "prompt_too_long");
    assert_eq!(
        doc["error"]["message"],
        "prompt has 140 characters; the limit is 100"
    );
    assert_eq!(doc["error"]["field"], "prompt");

    body = music("ok", 31.0);
    let (status, _, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_error(
        status,
        &doc,
        StatusCode::BAD_REQUEST,
        "duration_out_of_range",
    );

    // 404: unknown task, and garbage ids.
    for id in ["0190b7c2-8f9e-7c3a-9d1e-123456789abc", "..%2F..%2Fetc", "x"] {
        let (status, _, doc) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
        assert_error(status, &doc, StatusCode::NOT_FOUND, "task_not_found");
    }

    // 413: over MAX_BODY_BYTES.
    let big = json!({"type": "music", "prompt": "x".repeat(4000), "duration": 1, "user_id": "u"});
    let (status, _, doc) = app.post("/v1/call", Some(TOKEN), &big).await;
    assert_error(
        status,
        &doc,
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
    );

    // 415: not JSON.
    let resp = app
        .client
        .post(app.url("/v1/call"))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("type=music")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 415);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["error"]["code"],
        "unsupported_media_type"
    );

    // 422: well-formed but unsupported.
    let mut body = music("rain on a tin roof", 3.0);
    body["type"] = json!("audio");
    let (status, _, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_error(
        status,
        &doc,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_not_deployed",
    );
    let mut body = music("x", 1.0);
    body["format"] = json!("aiff");
    let (status, _, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_error(
        status,
        &doc,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_format",
    );

    // 409: cancel of a finished task.
    let id = app.submit(&music("short", 0.2)).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "succeeded");
    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{id}"), Some(TOKEN), &json!({}))
        .await;
    assert_error(status, &doc, StatusCode::CONFLICT, "task_already_final");

    // Unknown routes and wrong methods still answer in the contract's shape.
    let (status, _, doc) = app.get("/v2/nothing", Some(TOKEN)).await;
    assert_error(status, &doc, StatusCode::NOT_FOUND, "not_found");
    let (status, _, doc) = app.get("/v1/call", Some(TOKEN)).await;
    assert_error(
        status,
        &doc,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limits_and_full_queues_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[("RATE_LIMIT_PER_MINUTE", "3")]);
    let mut last = None;
    for _ in 0..4 {
        last = Some(app.get("/v1/stats", Some(TOKEN)).await);
    }
    let (status, headers, doc) = last.unwrap();
    assert_error(status, &doc, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(
        headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    let (status, _, _) = app.get("/v1/stats", Some(OTHER_TOKEN)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another client key has its own budget"
    );

    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[("MAX_QUEUED_JOBS", "2")]);
    let mut body = music("long one", 30.0);
    body["samples"] = json!(2);
    let (status, _, _) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let mut saw_full = false;
    for _ in 0..3 {
        let (status, headers, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_error(status, &doc, StatusCode::TOO_MANY_REQUESTS, "queue_full");
            assert!(headers.contains_key("retry-after"));
            saw_full = true;
            break;
        }
    }
    assert!(saw_full, "a full queue must refuse new tasks");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_client_key_cannot_see_or_cancel_a_task() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let id = app.submit(&music("mine", 0.2)).await;
    let (status, _, doc) = app
        .get(&format!("/v1/result/{id}"), Some(OTHER_TOKEN))
        .await;
    assert_error(status, &doc, StatusCode::NOT_FOUND, "task_not_found");
    let (status, _, doc) = app
        .post("/v1/result", Some(OTHER_TOKEN), &json!({"task_id": id}))
        .await;
    assert_error(status, &doc, StatusCode::NOT_FOUND, "task_not_found");
    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{id}"), Some(OTHER_TOKEN), &json!({}))
        .await;
    assert_error(status, &doc, StatusCode::NOT_FOUND, "task_not_found");
    let (_, _, stats) = app.get("/v1/stats", Some(OTHER_TOKEN)).await;
    assert_eq!(stats["requests"], 0, "{stats}");
    // The owner still sees it, through both forms of the result call.
    app.wait_final(&id, LONG).await;
    let (status, _, doc) = app
        .post("/v1/result", Some(TOKEN), &json!({"task_id": id}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["task_id"], id.as_str());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_replays_with_the_same_body_and_conflicts_with_another() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let send = |body: Value| {
        let req = app
            .client
            .post(app.url("/v1/call"))
            .bearer_auth(TOKEN)
            .header("idempotency-key", "order-1")
            .json(&body);
        async move {
            let resp = req.send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (first_status, first) = send(music("idempotent", 0.2)).await;
    assert_eq!(first_status, 202);
    let (second_status, second) = send(music("idempotent", 0.2)).await;
    assert_eq!(second_status, 200);
    assert_eq!(first["task_id"], second["task_id"]);
    let (third_status, third) = send(music("something else", 0.2)).await;
    assert_eq!(third_status, 409);
    assert_eq!(third["error"]["code"], "idempotency_key_reused");
    // The key belongs to the client key: another tenant may use it too.
    let resp = app
        .client
        .post(app.url("/v1/call"))
        .bearer_auth(OTHER_TOKEN)
        .header("idempotency-key", "order-1")
        .json(&music("idempotent", 0.2))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_with_three_samples_succeeds_with_three_downloadable_wavs_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let mut body = music("three takes of a drum loop", 0.5);
    body["samples"] = json!(3);
    let id = app.submit(&body).await;
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["progress"], 1.0);
    let outputs = doc["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 3);
    let mut hashes = Vec::new();
    for (i, output) in outputs.iter().enumerate() {
        let url = output["url"].as_str().unwrap();
        assert!(
            url.contains(&format!("clip-{i}.wav")),
            "outputs in sample order: {url}"
        );
        let bytes = app.download(url).await;
        let (header, samples) = decode_wav(&bytes).unwrap();
        assert_eq!(header.sample_rate, 32000);
        assert_eq!(header.channels, 1);
        assert_eq!(bytes.len() as u64, output["bytes"].as_u64().unwrap());
        assert!(
            (header.frames as f64 / 32000.0 - 0.5).abs() <= 0.02 + 1e-9,
            "duration within a frame"
        );
        assert!(samples.iter().any(|s| *s != 0), "not silent");
        hashes.push(output["sha256"].as_str().unwrap().to_owned());
    }
    hashes.dedup();
    assert_eq!(
        hashes.len(),
        3,
        "each sample is a different clip (seed + index)"
    );
    let metrics = &doc["metrics"];
    assert!(metrics["total_ms"].as_u64().unwrap() >= metrics["inference_ms"].as_u64().unwrap());

    // A tampered link is refused; the result gives a fresh link each time.
    let url = outputs[0]["url"].as_str().unwrap();
    let tampered = url.replace("clip-0", "clip-1");
    assert_eq!(
        app.client
            .get(&tampered)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        403
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_task_and_a_running_task_can_both_be_canceled() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = CallbackReceiver::start(0).await;
    let app = App::spawn(dir.path(), &[]);
    let mut long = music("a very long piece", 30.0);
    long["callback_url"] = json!(receiver.url);
    let running = app.submit(&long).await;
    let queued = app.submit(&long).await;
    app.wait_status(&running, "running", LONG).await;

    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{queued}"), Some(TOKEN), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "canceled");

    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{running}"), Some(TOKEN), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "canceled");

    // The worker frees itself at its next step: a new short task finishes
    // long before the canceled 30 s one would have.
    let next = app.submit(&music("next", 0.2)).await;
    assert_eq!(
        app.wait_final(&next, Duration::from_secs(60)).await["status"],
        "succeeded"
    );
    let doc = app.wait_final(&running, LONG).await;
    assert_eq!(
        doc["status"], "canceled",
        "a canceled task stays canceled: {doc}"
    );

    // Canceled tasks are final: they are called back and counted.
    let calls = receiver.wait_for(2, LONG).await;
    let mut ids: Vec<_> = calls.iter().map(|c| c.webhook_id.clone()).collect();
    ids.sort();
    let mut want = vec![format!("msg_{running}"), format!("msg_{queued}")];
    want.sort();
    assert_eq!(ids, want);
    let (_, _, stats) = app.get("/v1/stats", Some(TOKEN)).await;
    assert_eq!(stats["by_status"]["canceled"], 2, "{stats}");
}

#[tokio::test(flavor = "multi_thread")]
async fn results_survive_a_process_restart_and_queued_tasks_still_run() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let done = app.submit(&music("before the restart", 0.2)).await;
    let before = app.wait_final(&done, LONG).await;
    assert_eq!(before["status"], "succeeded");
    let pending = app.submit(&music("queued across the restart", 0.2)).await;
    let app = app.restart();
    let after = app.wait_final(&done, LONG).await;
    assert_eq!(after["status"], "succeeded");
    assert_eq!(
        after["outputs"][0]["sha256"],
        before["outputs"][0]["sha256"]
    );
    let url = after["outputs"][0]["url"].as_str().unwrap();
    assert_eq!(
        app.client.get(url).send().await.unwrap().status().as_u16(),
        200,
        "old files are served after a restart"
    );
    assert_eq!(
        app.wait_final(&pending, LONG).await["status"],
        "succeeded",
        "no queued task is lost"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_callback_receiver_gets_the_same_signed_webhook_id_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = CallbackReceiver::start(2).await;
    let app = App::spawn(
        dir.path(),
        &[("MARKETPLACE_CALLBACK", receiver.url.as_str())],
    );
    let id = app.submit(&music("call me back", 0.2)).await;
    let calls = receiver.wait_for(3, LONG).await;
    assert_eq!(
        calls.iter().map(|c| c.answered).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let secret = WebhookSecret::parse(WEBHOOK_SECRET).unwrap();
    for call in &calls {
        assert_eq!(call.webhook_id, format!("msg_{id}"));
        assert!(
            secret.verify(
                &call.webhook_id,
                call.timestamp,
                &call.body,
                &call.signature
            ),
            "signature must verify"
        );
        let doc: Value = serde_json::from_str(&call.body).unwrap();
        assert_eq!(doc["task_id"], id.as_str());
        assert_eq!(doc["status"], "succeeded");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.calls().len(),
        3,
        "no delivery after the successful one"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_not_started_before_its_ttl_expires() {
    let dir = tempfile::tempdir().unwrap();
    // The API alone: nothing picks the job up, so the deadline passes.
    let app = App::spawn_as("api", dir.path(), &[]);
    let mut body = music("too late", 1.0);
    body["ttl_seconds"] = json!(1);
    let id = app.submit(&body).await;
    let (_, _, doc) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
    assert_eq!(doc["status"], "queued");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, _, doc) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["status"], "expired", "{doc}");
    assert_eq!(doc["error"]["code"], "expired");

    // A worker that gets the job later drops it; the task stays expired and
    // is counted once.
    let app = app.restart_as("serve");
    let fresh = app.submit(&music("after", 0.2)).await;
    app.wait_final(&fresh, LONG).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "expired");
    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (_, _, stats) = app.get("/v1/stats", Some(TOKEN)).await;
        if stats["by_status"]["expired"] == 1 && stats["requests"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn generate_waits_for_the_result_and_stats_count_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let mut body = music("wait for me", 0.2);
    body["wait_seconds"] = json!(60);
    let (status, _, doc) = app.post("/v1/generate", Some(TOKEN), &body).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["status"], "succeeded");
    assert_eq!(doc["outputs"].as_array().unwrap().len(), 1);

    let mut quick = music("do not wait", 10.0);
    quick["wait_seconds"] = json!(0);
    let (status, _, doc) = app.post("/v1/generate", Some(TOKEN), &quick).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
    let (status, _, doc) = app.post("/v1/generate", Some(TOKEN), &json!({"type": "music", "prompt": "x", "duration": 1, "user_id": "u", "wait_seconds": 61})).await;
    assert_error(status, &doc, StatusCode::BAD_REQUEST, "invalid_field");

    let deadline = std::time::Instant::now() + LONG;
    loop {
        let (status, _, stats) = app.get("/v1/stats?user_id=user-42", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK);
        if stats["requests"] == 2 {
            assert_eq!(stats["by_type"]["music"], 2);
            assert!(stats["audio_seconds"].as_f64().unwrap() > 10.0);
            assert!(stats["latency_ms"]["p50"].as_u64().is_some());
            assert_eq!(stats["recent"].as_array().unwrap().len(), 2);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stats never counted both tasks: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _, doc) = app.get("/v1/stats?from=yesterday", Some(TOKEN)).await;
    assert_error(status, &doc, StatusCode::BAD_REQUEST, "invalid_query");
    let (_, _, stats) = app.get("/v1/stats?user_id=nobody", Some(TOKEN)).await;
    assert_eq!(stats["requests"], 0);
}
