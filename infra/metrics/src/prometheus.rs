//! `GET /metrics` in the Prometheus text format, on a listener of its own
//! (`METRICS_ADDR`), so that the figures are never reachable through the
//! public API's port or its gateway. No authentication: bind it to an
//! address only the scraper reaches.
//!
//! Counters and histograms are recorded as things happen; the queue depth
//! gauges are read from the queue when a scrape asks, so a process that
//! only serves the API still reports them. A failing queue leaves the last
//! value in place (and a warning in the log): a scrape never fails for it.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sound_creator_core::family::ModelFamily;
use sound_creator_core::metrics::{self as catalogue, MetricKind};
use sound_creator_core::ports::{JobQueue, QueueName};

/// What a scrape reads: the recorder's figures and, when given, the queue
/// whose depths the gauges show.
#[derive(Clone)]
pub struct MetricsEndpoint {
    handle: PrometheusHandle,
    queue: Option<Arc<dyn JobQueue>>,
}

/// Installs the Prometheus recorder as the process's metrics recorder,
/// with every histogram's buckets from the catalogue. Once per process.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let mut builder = PrometheusBuilder::new();
    for metric in catalogue::ALL {
        if metric.kind == MetricKind::Histogram {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(metric.name.to_owned()), metric.buckets)
                .with_context(|| format!("buckets of {}", metric.name))?;
        }
    }
    let handle = builder
        .install_recorder()
        .context("cannot install the Prometheus metrics recorder")?;
    catalogue::describe();
    Ok(handle)
}

impl MetricsEndpoint {
    pub fn new(handle: PrometheusHandle) -> Self {
        Self {
            handle,
            queue: None,
        }
    }

    /// Report this queue's job depths per family at each scrape.
    pub fn with_queue(mut self, queue: Arc<dyn JobQueue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// The text a scrape gets.
    pub async fn render(&self) -> String {
        if let Some(queue) = &self.queue {
            for family in ModelFamily::ALL {
                match queue.depth(QueueName::Jobs(family)).await {
                    Ok(depth) => catalogue::queue_depth(family, depth.queued, depth.in_flight),
                    Err(e) => {
                        tracing::warn!(%family, error = %e, "cannot read the queue depth for /metrics")
                    }
                }
            }
        }
        // Histograms keep their samples until upkeep folds them in.
        self.handle.run_upkeep();
        self.handle.render()
    }

    pub fn router(self) -> Router {
        Router::new()
            .route("/metrics", get(scrape))
            .with_state(self)
    }
}

async fn scrape(State(endpoint): State<MetricsEndpoint>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        endpoint.render().await,
    )
}

/// Binds `addr` and serves `GET /metrics` there until `shutdown` resolves.
/// Returns the bound address (port 0 picks a free one) once listening.
pub async fn start(
    addr: SocketAddr,
    endpoint: MetricsEndpoint,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on METRICS_ADDR={addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, endpoint.router())
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "the metrics listener failed");
        }
    });
    tracing::info!(addr = %bound, "metrics on http://{bound}/metrics");
    Ok(bound)
}
