//! The Lambda entry points fed with recorded events (`tests/events/`):
//! API Gateway HTTP API (payload format 2.0) requests go through
//! `lambda_http`'s own conversion into the router, and an SQS batch from the
//! completions queue goes through `handle_completion_batch`. The backends are
//! the real embedded ones (SQLite + local files) in a temporary directory.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_lambda_events::event::sqs::SqsEvent;
use axum::http::{header, StatusCode};
use http_body_util::BodyExt;
use lambda_http::request::LambdaRequest;
use lambda_http::{Adapter, LambdaEvent, Service};
use serde_json::{json, Value};
use sound_creator_core::ports::{CallbackSender, Ports};
use sound_creator_core::request::CallRequest;
use sound_creator_core::service::{Submitted, TaskService};
use sound_creator_core::task::{TaskId, TaskStatus, Tenant};
use sound_creator_embedded::{EmbeddedOptions, EmbeddedStore};
use sound_creator_functions::api::{app, AppState};
use sound_creator_functions::lambda::handle_completion_batch;
use sound_creator_settings::Settings;
use sound_creator_webhook::HttpCallbackSender;
use tower::ServiceExt;

const TOKEN: &str = "test-marketplace-token";

struct Backends {
    store: EmbeddedStore,
    ports: Ports,
    settings: Arc<Settings>,
    _dir: tempfile::TempDir,
}

impl Backends {
    async fn open() -> Backends {
        let dir = tempfile::tempdir().expect("temporary directory");
        let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())
            .await
            .expect("open the embedded store");
        let callbacks: Arc<dyn CallbackSender> =
            Arc::new(HttpCallbackSender::new(Duration::from_secs(2)).expect("HTTP client"));
        let ports = store.ports(callbacks);
        let vars = HashMap::from([("MARKETPLACE_TOKEN", TOKEN)]);
        let settings = Settings::from_lookup(|name| vars.get(name).map(|v| (*v).to_owned()))
            .expect("valid settings");
        Backends {
            store,
            ports,
            settings: Arc::new(settings),
            _dir: dir,
        }
    }

    fn service(&self) -> Arc<TaskService> {
        Arc::new(TaskService::new(
            self.ports.clone(),
            Arc::new(self.settings.service.clone()),
        ))
    }

    fn router(&self) -> axum::Router {
        app(AppState::new(
            self.service(),
            Arc::new(self.settings.api.clone()),
            None,
        ))
    }
}

fn recorded_event(name: &str) -> Value {
    let path = format!("{}/tests/events/{name}", env!("CARGO_MANIFEST_DIR"));
    let raw = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Replaces the request body, keeping `content-length` truthful.
fn with_body(mut event: Value, body: &str) -> Value {
    event["body"] = Value::String(body.to_owned());
    event["headers"]["content-length"] = Value::String(body.len().to_string());
    event
}

/// Sends an API Gateway event through `lambda_http`'s request conversion
/// into the router, as `lambda_http::run` does, and reads the answer.
async fn send(router: axum::Router, event: &Value) -> (StatusCode, axum::http::HeaderMap, Value) {
    let request =
        lambda_http::request::from_str(&event.to_string()).expect("a valid API Gateway v2 event");
    let response = router
        .oneshot(request)
        .await
        .expect("the router never fails");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("read the body")
        .to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("a JSON body, got {:?}", String::from_utf8_lossy(&bytes)));
    (status, headers, body)
}

#[tokio::test]
async fn health_answers_200_through_api_gateway_when_every_backend_answers() {
    let backends = Backends::open().await;
    let (status, _, body) = send(
        backends.router(),
        &recorded_event("apigw-v2-get-health.json"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "ok");
    for backend in ["queue", "tasks", "cache", "stats", "blobs"] {
        assert_eq!(body["backends"][backend], "ok", "{body}");
    }
    assert_eq!(
        body["queues"]["music"],
        json!({"queued": 0, "in_flight": 0})
    );
}

#[tokio::test]
async fn health_answers_503_with_retry_after_when_a_backend_is_down() {
    let backends = Backends::open().await;
    backends.store.close().await;
    let (status, headers, body) = send(
        backends.router(),
        &recorded_event("apigw-v2-get-health.json"),
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(headers.contains_key(header::RETRY_AFTER));
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["backends"]["tasks"], "down", "{body}");
}

#[tokio::test]
async fn a_call_without_a_bearer_token_is_refused_with_401() {
    let backends = Backends::open().await;
    let mut event = recorded_event("apigw-v2-post-call.json");
    event["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("authorization");
    let (status, _, body) = send(backends.router(), &event).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert!(
        body["error"]["code"].is_string(),
        "contract error shape: {body}"
    );
}

#[tokio::test]
async fn a_call_with_a_wrong_token_is_refused_with_401() {
    let backends = Backends::open().await;
    let mut event = recorded_event("apigw-v2-post-call.json");
    event["headers"]["authorization"] = json!("Bearer not-the-token");
    let (status, _, body) = send(backends.router(), &event).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
}

#[tokio::test]
async fn a_call_with_malformed_json_is_refused_with_400() {
    let backends = Backends::open().await;
    let event = with_body(
        recorded_event("apigw-v2-post-call.json"),
        r#"{"type": "music", "prompt": "#,
    );
    let (status, _, body) = send(backends.router(), &event).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["code"].is_string() && body["error"]["message"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn a_call_with_a_bearer_token_is_accepted_with_202_and_its_task_is_stored() {
    let backends = Backends::open().await;
    let (status, _, body) = send(
        backends.router(),
        &recorded_event("apigw-v2-post-call.json"),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "queued");
    let task_id = body["task_id"].as_str().expect("task_id");
    assert_eq!(body["links"]["result"], format!("/v1/result/{task_id}"));

    let id = TaskId::parse(task_id).expect("a task id");
    let task = backends
        .ports
        .tasks
        .get(&id)
        .await
        .expect("task store answers")
        .expect("the task is stored");
    assert_eq!(task.request.prompt, "lofi hip hop beat with warm piano");
    assert_eq!(
        task.idempotency_key.as_deref(),
        Some("order-7f3a-2026-03-12")
    );
}

/// The whole trip `lambda_http::run` makes: the event as the runtime API
/// hands it over, and the response as API Gateway receives it.
#[tokio::test]
async fn api_gateway_receives_the_answer_in_the_payload_2_0_response_shape() {
    let backends = Backends::open().await;
    let mut event = recorded_event("apigw-v2-post-call.json");
    event["headers"]
        .as_object_mut()
        .expect("headers")
        .remove("authorization");
    let request: LambdaRequest =
        serde_json::from_value(event).expect("a valid API Gateway v2 event");

    let mut adapter = Adapter::from(backends.router());
    let response = adapter
        .call(LambdaEvent::new(request, lambda_http::Context::default()))
        .await
        .expect("the router never fails");
    let response = serde_json::to_value(&response).expect("serializable");

    assert_eq!(response["statusCode"], 401, "{response}");
    assert_eq!(response["isBase64Encoded"], false, "{response}");
    assert_eq!(
        response["headers"]["content-type"], "application/json",
        "{response}"
    );
    let body: Value =
        serde_json::from_str(response["body"].as_str().expect("a text body")).expect("JSON body");
    assert!(body["error"]["code"].is_string(), "{body}");
}

// ---------------------------------------------------------------------------
// The completions queue

/// The recorded batch with its first record aimed at a real task.
async fn recorded_batch_for(backends: &Backends) -> (TaskId, SqsEvent) {
    let settings = &backends.settings.service;
    let request = CallRequest::parse(
        &json!({"type": "music", "prompt": "rain on a tin roof, slow piano", "duration": 8, "user_id": "user-42"}),
        &settings.limits,
        &settings.callbacks,
    )
    .expect("a valid request");
    let submitted = backends
        .service()
        .submit(&Tenant::new("marketplace"), request, None)
        .await
        .expect("submit");
    let Submitted::Created(document) = submitted else {
        panic!("a new task")
    };
    let raw = recorded_event("sqs-completions-batch.json")
        .to_string()
        .replace("{{TASK_ID}}", &document.task_id);
    let event: SqsEvent = serde_json::from_str(&raw).expect("a valid SQS event");
    assert_eq!(event.records.len(), 3);
    (TaskId::parse(&document.task_id).expect("task id"), event)
}

fn reported_ids(response: &aws_lambda_events::event::sqs::SqsBatchResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect()
}

#[tokio::test]
async fn only_the_unreadable_record_of_a_batch_is_reported_as_failed() {
    let backends = Backends::open().await;
    let (task_id, event) = recorded_batch_for(&backends).await;

    let response =
        handle_completion_batch(&backends.ports, &backends.settings.service, event).await;

    assert_eq!(
        reported_ids(&response),
        vec!["5d2c9a0e-1b7f-4c3a-8e6d-9f0a1b2c3d02".to_owned()]
    );
    // The shape Lambda reads back with ReportBatchItemFailures.
    assert_eq!(
        serde_json::to_value(&response).expect("serializable"),
        json!({"batchItemFailures": [{"itemIdentifier": "5d2c9a0e-1b7f-4c3a-8e6d-9f0a1b2c3d02"}]})
    );
    let task = backends
        .ports
        .tasks
        .get(&task_id)
        .await
        .expect("task store answers")
        .expect("task");
    assert_eq!(task.status, TaskStatus::Succeeded);
    assert_eq!(task.outputs().len(), 1);
}

#[tokio::test]
async fn a_redelivered_batch_changes_nothing_and_still_reports_only_the_unreadable_record() {
    let backends = Backends::open().await;
    let (task_id, event) = recorded_batch_for(&backends).await;
    handle_completion_batch(&backends.ports, &backends.settings.service, event.clone()).await;
    let before = backends
        .ports
        .tasks
        .get(&task_id)
        .await
        .expect("answers")
        .expect("task");

    let response =
        handle_completion_batch(&backends.ports, &backends.settings.service, event).await;

    assert_eq!(
        reported_ids(&response),
        vec!["5d2c9a0e-1b7f-4c3a-8e6d-9f0a1b2c3d02".to_owned()]
    );
    let after = backends
        .ports
        .tasks
        .get(&task_id)
        .await
        .expect("answers")
        .expect("task");
    assert_eq!(after.status, TaskStatus::Succeeded);
    assert_eq!(after.completed_at, before.completed_at);
}

#[tokio::test]
async fn every_record_is_reported_for_retry_when_the_task_store_is_down() {
    let backends = Backends::open().await;
    let (_, event) = recorded_batch_for(&backends).await;
    let all: Vec<String> = event
        .records
        .iter()
        .filter_map(|r| r.message_id.clone())
        .collect();
    backends.store.close().await;

    let response =
        handle_completion_batch(&backends.ports, &backends.settings.service, event).await;

    assert_eq!(reported_ids(&response), all);
}
