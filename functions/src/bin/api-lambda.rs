//! The HTTP API as a Lambda function behind an API Gateway HTTP API
//! (payload format 2.0): the same axum router as `sound-creator api`, served
//! by `lambda_http`. Backends are connected once per cold start. Metrics
//! leave as CloudWatch EMF log lines, flushed after every response (the
//! runtime may freeze the function as soon as it has answered).

use std::sync::Arc;

use sound_creator_core::service::TaskService;
use sound_creator_functions::api::{app, AppState};
use sound_creator_functions::lambda::{init_tracing, FunctionEnvironment};
use sound_creator_metrics::emf::EmfRecorder;

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    init_tracing();
    let emf = EmfRecorder::install()?;
    let FunctionEnvironment { ports, settings } =
        FunctionEnvironment::from_env().await.inspect_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "the API function cannot start");
        })?;
    let service = Arc::new(TaskService::new(ports, Arc::new(settings.service)));
    // API Gateway (HTTP API) buffers a Lambda's whole answer, so a held
    // event stream would arrive only at its end: answer the events so far
    // and let the client reconnect (docs/deploy.md).
    let state = AppState::new(service, Arc::new(settings.api), None).with_event_snapshots();
    let router = app(state).layer(axum::middleware::map_response(
        move |response: axum::response::Response| {
            emf.flush();
            async move { response }
        },
    ));
    lambda_http::run(router).await
}
