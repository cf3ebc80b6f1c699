//! The HTTP API with the AWS backends as a plain server on `APP_API_PORT`,
//! for containers (docker/Dockerfile.api, the LocalStack compose file, ECS
//! Fargate): the same router and settings as `api-lambda`, without linking
//! libtorch as the full `sound-creator` binary does. `GET /metrics` on
//! `METRICS_ADDR` when set.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use sound_creator_core::service::TaskService;
use sound_creator_functions::api::{app, AppState};
use sound_creator_functions::connections::{self, ConnectionLimits};
use sound_creator_functions::lambda::{init_tracing, FunctionEnvironment};
use sound_creator_metrics::prometheus::{self, MetricsEndpoint};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    init_tracing();
    let FunctionEnvironment { ports, settings } = FunctionEnvironment::from_env().await?;
    if let Some(addr) = settings.telemetry.metrics_addr {
        let endpoint = MetricsEndpoint::new(prometheus::install()?).with_queue(ports.queue.clone());
        prometheus::start(addr, endpoint, shutdown_signal()).await?;
    }
    let addr: SocketAddr = format!("{}:{}", settings.api.bind_host, settings.api.port)
        .parse()
        .context("BIND_HOST is not an IP address")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("Failed to listen on {addr}"))?;
    tracing::info!(%addr, "API listening");
    let service = Arc::new(TaskService::new(ports, Arc::new(settings.service)));
    let limits = ConnectionLimits::of(&settings.api);
    // Open event streams end on shutdown, or the graceful stop would wait
    // for every watched task to finish.
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let state =
        AppState::new(service.clone(), Arc::new(settings.api), None).with_shutdown(shutdown);
    connections::serve(listener, app(state), limits, async move {
        shutdown_signal().await;
        stop.cancel();
        service.stop_waiting();
    })
    .await;
    tracing::info!("API stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM (what `docker stop` and ECS send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
