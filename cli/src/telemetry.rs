//! Logging: human-readable text, JSON lines with `--log-json` or
//! `LOG_JSON=true` (what CloudWatch and most log shippers want). `RUST_LOG`
//! sets the filter. Colours only when stderr is a terminal, so log files
//! and CI output carry no escape codes. And metrics: `GET /metrics` on
//! `METRICS_ADDR` when it is set.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::sync::Arc;

use sound_creator_core::ports::JobQueue;
use sound_creator_metrics::prometheus::{self, MetricsEndpoint};
use sound_creator_settings::TelemetrySettings;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Installs the Prometheus recorder and serves `GET /metrics` on
/// `METRICS_ADDR` (queue depths read from `queue` at each scrape) until
/// `shutdown`; `None` when the setting is unset.
pub async fn start_metrics(
    telemetry: &TelemetrySettings,
    queue: Arc<dyn JobQueue>,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<SocketAddr>> {
    let Some(addr) = telemetry.metrics_addr else {
        return Ok(None);
    };
    let endpoint = MetricsEndpoint::new(prometheus::install()?).with_queue(queue);
    let bound = prometheus::start(addr, endpoint, shutdown.cancelled_owned()).await?;
    Ok(Some(bound))
}

/// Starts logging to stderr. Reads only the telemetry settings, so that a
/// mistake in the others can still be logged.
pub fn init(log_json_flag: bool) {
    let telemetry = TelemetrySettings::from_env().unwrap_or(TelemetrySettings {
        log_json: false,
        log_filter: "info".into(),
        metrics_addr: None,
    });
    let filter =
        EnvFilter::try_new(&telemetry.log_filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if log_json_flag || telemetry.log_json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
