//! Where the service's metrics go. The figures themselves are declared and
//! recorded in `sound_creator_core::metrics` through the `metrics` facade;
//! this crate holds the two exporters a binary installs, one per process:
//!
//! - [`prometheus`]: `GET /metrics` in the Prometheus text format on its own
//!   listener (`METRICS_ADDR`), never on the API's port, for `serve` and
//!   the long-running AWS-mode processes (API server, workers, completion).
//! - [`emf`]: CloudWatch Embedded Metric Format JSON lines on stdout, for
//!   the Lambdas, where nothing can scrape a port and CloudWatch Logs turns
//!   such lines into metrics.
//!
//! Nothing here decides what is measured, and nothing else knows either
//! format.

pub mod emf;
pub mod prometheus;
