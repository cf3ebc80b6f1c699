//! A backend that goes down gives clients `503` with `Retry-After` (never a
//! hang or a 500), and the service recovers by itself when it comes back,
//! losing no task. Runs against the servers of `tests/env/up.sh`, taking
//! them down and up with `tests/env/stop-start.sh`; kept in its own test
//! binary so no other test sees the outage.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{
    music, repo_root, require_aws_env, run_to_end, tiny_model, unique_aws_names, App, TOKEN,
};
use serde_json::json;

const LONG: Duration = Duration::from_secs(180);

fn backend(name: &str, action: &str) {
    let status = Command::new("bash")
        .arg(repo_root().join("tests/env/stop-start.sh"))
        .args([name, action])
        .status()
        .expect("run stop-start.sh");
    assert!(status.success(), "stop-start.sh {name} {action} failed");
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + LONG;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} never happened");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backends_that_go_down_answer_503_and_the_service_recovers_by_itself() {
    require_aws_env();
    let mut env = unique_aws_names("down");
    for (k, v) in [
        ("MARKETPLACE_TOKEN", TOKEN),
        ("MODEL_DEVICE", "cpu"),
        ("SQS_VISIBILITY_TIMEOUT", "3"),
    ] {
        env.push((k.into(), v.into()));
    }
    env.push(("MUSIC_GEN_MODEL".into(), tiny_model().display().to_string()));
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_to_end(&["provision"], &env_refs);
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn_full("serve", &["--backend", "aws"], dir.path(), &env_refs);
    // Postgres outlives a test run: a user of this run alone.
    let table = env
        .iter()
        .find(|(k, _)| k == "DYNAMODB_TABLE")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let user = format!("aws-down-{table}");
    let mut body = music("survives outages", 0.3);
    body["user_id"] = json!(user);

    // Postgres down: stats answer 503 with Retry-After; tasks still run.
    backend("postgres", "stop");
    let started = Instant::now();
    let (status, headers, doc) = app
        .get(&format!("/v1/stats?user_id={user}"), Some(TOKEN))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    assert_eq!(doc["error"]["code"], "backend_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails fast, no hang"
    );
    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["backends"]["stats"], "down");
    let id = app.submit(&body).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "succeeded");

    // Back up: the completion step's stats write, retried from the queue,
    // lands; the task was not lost.
    backend("postgres", "start");
    eventually("stats after Postgres came back", || async {
        let (status, _, stats) = app
            .get(&format!("/v1/stats?user_id={user}"), Some(TOKEN))
            .await;
        status == StatusCode::OK && stats["requests"] == 1
    })
    .await;

    // Redis down: health says so, results are still served from DynamoDB.
    backend("redis", "stop");
    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(health["backends"]["cache"], "down");
    let (status, _, doc) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let during = app.submit(&body).await;
    assert_eq!(
        app.wait_final(&during, LONG).await["status"],
        "succeeded",
        "the cache is not on the critical path"
    );
    backend("redis", "start");
    eventually("health after Redis came back", || async {
        app.get("/health", None).await.0 == StatusCode::OK
    })
    .await;

    // SQS/DynamoDB/S3 (moto) down: submits answer 503 with Retry-After.
    backend("moto", "stop");
    let started = Instant::now();
    let (status, headers, doc) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{doc}");
    assert_eq!(doc["error"]["code"], "backend_unavailable");
    assert!(headers.contains_key("retry-after"));
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "fails fast, no hang"
    );
    // moto keeps state in memory: once back it is provisioned again, and the
    // same running process takes tasks again without a restart.
    backend("moto", "start");
    run_to_end(&["provision"], &env_refs);
    let after = app.submit(&body).await;
    assert_eq!(app.wait_final(&after, LONG).await["status"], "succeeded");
}
