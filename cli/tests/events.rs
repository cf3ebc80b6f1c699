//! `GET /v1/events/{task_id}` end to end: the real `sound-creator serve` on
//! the embedded backends with the tiny MusicGen checkpoint, read over HTTP
//! as a client reads server-sent events.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{music, App, OTHER_TOKEN, TOKEN};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(180);

/// One server-sent event: its name and its JSON data.
#[derive(Debug)]
struct Sse {
    event: String,
    data: Value,
}

/// Reads the whole stream: returns only once the server has ended it.
async fn read_events(app: &App, task_id: &str, token: &str) -> (String, Vec<Sse>, bool) {
    let response = app
        .client
        .get(app.url(&format!("/v1/events/{task_id}")))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = tokio::time::timeout(LONG, response.text())
        .await
        .expect("the stream ends after the result event")
        .unwrap();
    let mut events = Vec::new();
    let mut retry = false;
    for block in body.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut event, mut data) = (String::from("message"), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("data:") {
                data.push_str(v.trim_start());
            } else if line.starts_with("retry:") {
                retry = true;
            }
        }
        if !data.is_empty() {
            let data = serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"));
            events.push(Sse { event, data });
        }
    }
    (content_type, events, retry)
}

fn statuses(events: &[Sse]) -> Vec<&str> {
    events
        .iter()
        .filter(|e| e.event == "status")
        .map(|e| e.data["status"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn events_come_in_order_and_the_stream_ends_with_the_result() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let id = app.submit(&music("a slow evolving pad", 20.0)).await;
    let (content_type, events, retry) = read_events(&app, &id, TOKEN).await;
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    assert!(retry, "the stream tells clients when to reconnect");

    assert_eq!(events[0].event, "status", "{events:?}");
    let seen = statuses(&events);
    let order = ["queued", "running", "succeeded"];
    let ranks: Vec<usize> = seen
        .iter()
        .map(|s| order.iter().position(|o| o == s).unwrap())
        .collect();
    // In order; `queued` again only when its queue's depth moved.
    assert!(ranks.windows(2).all(|w| w[0] <= w[1]), "in order: {seen:?}");
    for once in ["running", "succeeded"] {
        assert_eq!(
            seen.iter().filter(|s| **s == once).count(),
            1,
            "{once} once: {seen:?}"
        );
    }
    assert_eq!(seen.last(), Some(&"succeeded"), "{seen:?}");
    assert!(seen.contains(&"running"), "{seen:?}");

    // Progress only while running, never backwards, in decoding steps.
    let running_at = events
        .iter()
        .position(|e| e.event == "status" && e.data["status"] == "running")
        .unwrap();
    let succeeded_at = events
        .iter()
        .position(|e| e.event == "status" && e.data["status"] == "succeeded")
        .unwrap();
    let progress: Vec<(usize, &Value)> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.event == "progress")
        .map(|(i, e)| (i, &e.data))
        .collect();
    assert!(
        !progress.is_empty(),
        "a 20 s clip reports progress: {events:?}"
    );
    let mut last = -1.0;
    for (i, p) in &progress {
        assert!(running_at < *i && *i < succeeded_at, "{events:?}");
        let fraction = p["progress"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&fraction) && fraction >= last, "{p}");
        last = fraction;
        let (step, steps) = (p["step"].as_u64().unwrap(), p["steps"].as_u64().unwrap());
        assert!(step <= steps, "{p}");
    }
    let reported = progress.iter().rfind(|(_, p)| p["steps"] != 0);
    let (_, reported) = reported.expect("the worker reports its steps");
    // 20 s at MusicGen's 50 frames per second.
    assert!(reported["steps"].as_u64().unwrap() >= 1000, "{reported}");

    let result = events.last().unwrap();
    assert_eq!(result.event, "result", "the result is the last event");
    assert_eq!(
        events.iter().filter(|e| e.event == "result").count(),
        1,
        "{events:?}"
    );
    let (_, _, polled) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
    assert_eq!(result.data["task_id"], json!(id));
    assert_eq!(result.data["status"], "succeeded");
    assert_eq!(result.data["progress"], 1.0);
    assert_eq!(
        result.data["outputs"][0]["sha256"],
        polled["outputs"][0]["sha256"]
    );
    assert_eq!(result.data["metrics"], polled["metrics"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_task_streams_its_status_and_result_and_ends_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let id = app.submit(&music("a short blip", 0.5)).await;
    app.wait_final(&id, LONG).await;
    let (_, events, _) =
        tokio::time::timeout(Duration::from_secs(10), read_events(&app, &id, TOKEN))
            .await
            .expect("no waiting for a final task");
    let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(names, ["status", "result"], "{events:?}");
    assert_eq!(events[0].data["status"], "succeeded");
    assert_eq!(events[1].data["outputs"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canceled_task_streams_canceled_then_its_result_and_ends() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let id = app.submit(&music("a very long piece", 30.0)).await;
    app.wait_status(&id, "running", LONG).await;
    let reader = {
        let (base, id) = (app.base.clone(), id.clone());
        tokio::spawn(async move {
            let response = reqwest::Client::new()
                .get(format!("{base}/v1/events/{id}"))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            tokio::time::timeout(LONG, response.text()).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{id}"), Some(TOKEN), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let body = reader
        .await
        .unwrap()
        .expect("the stream ends once the task is canceled")
        .unwrap();
    let last = body
        .split("\n\n")
        .filter(|b| b.contains("data:"))
        .last()
        .unwrap();
    assert!(last.starts_with("event: result"), "{body}");
    assert!(last.contains("\"status\":\"canceled\""), "{body}");
    assert!(
        body.contains("event: status\ndata: {\"task_id\":"),
        "{body}"
    );
    assert!(body.contains("\"status\":\"canceled\"}"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn another_client_key_gets_404_for_a_tasks_events() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let id = app.submit(&music("mine", 0.5)).await;
    let path = format!("/v1/events/{id}");

    let (status, _, doc) = app.get(&path, Some(OTHER_TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
    assert_eq!(doc["error"]["code"], "task_not_found");
    assert!(
        !doc.to_string().contains("mine"),
        "nothing of the task leaks: {doc}"
    );

    let (status, _, doc) = app.get(&path, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{doc}");
    let (status, _, doc) = app
        .get(
            "/v1/events/0190b7c2-8f9e-7c3a-9d1e-123456789abc",
            Some(TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
    assert_eq!(doc["error"]["code"], "task_not_found");
    // The owner still reads it.
    let (_, events, _) = read_events(&app, &id, TOKEN).await;
    assert_eq!(events.last().unwrap().event, "result");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_playground_is_served_at_the_root_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn_as("api", dir.path(), &[]);
    let page = app.client.get(app.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    let html = page.text().await.unwrap();
    for asset in ["/playground/app.js", "/playground/style.css"] {
        assert!(html.contains(asset), "{asset}");
        let response = app.client.get(app.url(asset)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{asset}");
    }
    let (status, _, doc) = app.get("/playground/nope.js", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{doc}");
}
