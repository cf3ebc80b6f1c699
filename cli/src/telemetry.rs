//! Logging: human-readable text, JSON lines with `--log-json` or
//! `LOG_JSON=true` (what CloudWatch and most log shippers want). `RUST_LOG`
//! sets the filter. Colours only when stderr is a terminal, so log files
//! and CI output carry no escape codes.

use std::io::IsTerminal;

use sound_creator_settings::TelemetrySettings;
use tracing_subscriber::EnvFilter;

/// Starts logging to stderr. Reads only the telemetry settings, so that a
/// mistake in the others can still be logged.
pub fn init(log_json_flag: bool) {
    let telemetry = TelemetrySettings::from_env().unwrap_or(TelemetrySettings {
        log_json: false,
        log_filter: "info".into(),
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
