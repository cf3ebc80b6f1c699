//! The ECS task-protection adapter against an HTTP server on loopback that
//! answers as the ECS container agent's endpoint does (the real agent only
//! runs inside an ECS task): the request it sends, and the agent's failure
//! answers turned into errors.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::put;
use axum::{Json, Router};
use serde_json::{json, Value};
use sound_creator_aws::task_protection::EcsTaskProtection;
use sound_creator_core::ports::ScaleInProtection;

type Log = Arc<Mutex<Vec<Value>>>;

/// Records each PUT body; answers like the agent, or with the agent's
/// failure document when `fail` is set.
async fn start_agent(fail: bool) -> (String, Log) {
    let log: Log = Arc::default();
    let router = Router::new()
        .route(
            "/api/task-1/task-protection/v1/state",
            put(
                |State((log, fail)): State<(Log, bool)>, Json(body): Json<Value>| async move {
                    let enabled = body["ProtectionEnabled"].as_bool().unwrap_or(false);
                    log.lock().expect("lock").push(body);
                    if fail {
                        (
                            StatusCode::OK,
                            Json(json!({"failure": {"Arn": "arn:aws:ecs:us-east-1:1:task/c/t", "Reason": "TASK_NOT_VALID"}})),
                        )
                    } else {
                        (
                            StatusCode::OK,
                            Json(json!({"protection": {"ProtectionEnabled": enabled, "ExpirationDate": "2030-01-01T00:00:00Z", "TaskArn": "arn:aws:ecs:us-east-1:1:task/c/t"}})),
                        )
                    }
                },
            ),
        )
        .with_state((log.clone(), fail));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let uri = format!("http://{}/api/task-1", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
    (uri, log)
}

fn adapter(uri: &str, minutes: &str) -> EcsTaskProtection {
    let settings = sound_creator_settings::from_pairs(&[
        ("WORKER_TASK_PROTECTION", "true"),
        ("WORKER_TASK_PROTECTION_MINUTES", minutes),
        ("ECS_AGENT_URI", uri),
    ])
    .expect("valid settings")
    .worker
    .task_protection
    .expect("protection on");
    EcsTaskProtection::new(&settings).expect("adapter")
}

#[tokio::test]
async fn protect_and_unprotect_put_the_agents_documented_bodies() {
    let (uri, log) = start_agent(false).await;
    let protection = adapter(&uri, "45");
    protection.protect().await.expect("protect");
    protection.unprotect().await.expect("unprotect");
    assert_eq!(
        *log.lock().expect("lock"),
        vec![
            json!({"ProtectionEnabled": true, "ExpiresInMinutes": 45}),
            json!({"ProtectionEnabled": false}),
        ]
    );
    assert_eq!(protection.lasts(), Duration::from_secs(45 * 60));
}

#[tokio::test]
async fn an_agent_failure_and_an_absent_agent_are_errors_naming_the_cause() {
    let (uri, _) = start_agent(true).await;
    let err = adapter(&uri, "60").protect().await.expect_err("a failure");
    assert!(err.to_string().contains("TASK_NOT_VALID"), "{err}");

    // Nothing listens on the port of a listener just dropped.
    let free = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gone = format!("http://{}/api/task-1", free.local_addr().expect("addr"));
    drop(free);
    let err = adapter(&gone, "60")
        .unprotect()
        .await
        .expect_err("no agent");
    assert!(err.to_string().contains("did not answer"), "{err}");
}
