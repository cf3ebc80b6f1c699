//! The service's metrics, each declared once here: name, kind, unit, help
//! and labels, and the few functions that record them where things happen
//! (the API, the task service, the worker, the completion step).
//!
//! Figures go through the `metrics` facade, as logs go through `tracing`:
//! the binary installs the exporter (Prometheus text on `METRICS_ADDR`, or
//! CloudWatch Embedded Metric Format lines in Lambda), and with none
//! installed, recording costs next to nothing. So this module knows no
//! exporter, and it must never take a label whose values are unbounded
//! (task ids, prompts, user ids, client keys): every label here ranges over
//! a small fixed set (family, status, error code, route template, method).
//!
//! Names follow the Prometheus conventions: a `sound_creator_` prefix, base
//! units (seconds), `_total` on counters and on nothing else.

use std::time::Duration;

use metrics::{counter, gauge, histogram, Unit};

use crate::family::ModelFamily;
use crate::task::{Task, TaskStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric the service records.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: MetricKind,
    pub unit: Unit,
    pub help: &'static str,
    pub labels: &'static [&'static str],
    /// Histograms: the upper bounds of their buckets.
    pub buckets: &'static [f64],
}

/// Latencies from a few milliseconds (an HTTP answer) to ten minutes (a
/// long clip on a CPU).
const SECONDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// A decoding step: tens of microseconds (a tiny model) to a second.
const STEP_SECONDS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Audio per task: a second to four 300 s samples.
const AUDIO_SECONDS: &[f64] = &[1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 1200.0];
const BATCH_SIZES: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0];

macro_rules! metrics {
    ($($ident:ident = $name:literal, $kind:ident, $unit:ident, [$($label:literal),*], $buckets:expr, $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $ident: Metric = Metric {
                name: $name,
                kind: MetricKind::$kind,
                unit: Unit::$unit,
                help: $help,
                labels: &[$($label),*],
                buckets: $buckets,
            };
        )*
        /// Every metric, in the order of the documentation.
        pub const ALL: &[Metric] = &[$($ident,)*];
    };
}

metrics! {
    HTTP_REQUESTS = "sound_creator_http_requests_total", Counter, Count, ["route", "method", "status"], &[],
        "HTTP responses of the API by route template, method and status code.";
    HTTP_REQUEST_DURATION = "sound_creator_http_request_duration_seconds", Histogram, Seconds, ["route", "method"], SECONDS,
        "Time from a request's arrival to its response's head.";
    TASKS_SUBMITTED = "sound_creator_tasks_submitted_total", Counter, Count, ["family"], &[],
        "Tasks created (an idempotent replay creates none).";
    TASKS_FINISHED = "sound_creator_tasks_finished_total", Counter, Count, ["family", "status"], &[],
        "Tasks that reached a final status: succeeded, failed, canceled or expired (counted by the completion step).";
    TASK_FAILURES = "sound_creator_task_failures_total", Counter, Count, ["family", "code"], &[],
        "Failed tasks by error code.";
    TASK_QUEUE = "sound_creator_task_queue_seconds", Histogram, Seconds, ["family"], SECONDS,
        "Final tasks that started: time from submission to the start of the first job (the result's queue_ms).";
    TASK_INFERENCE = "sound_creator_task_inference_seconds", Histogram, Seconds, ["family"], SECONDS,
        "Final tasks with a generated clip: inference time of the slowest job (the result's inference_ms).";
    TASK_LATENCY = "sound_creator_task_latency_seconds", Histogram, Seconds, ["family", "status"], SECONDS,
        "Final tasks: time from submission to the final status (the result's total_ms).";
    TASK_AUDIO = "sound_creator_task_audio_seconds", Histogram, Seconds, ["family"], AUDIO_SECONDS,
        "Succeeded tasks: seconds of audio in their outputs, all samples; the `_sum` is the audio generated (a float, which a counter cannot hold).";
    DECODING_STEPS = "sound_creator_decoding_steps_total", Counter, Count, ["family"], &[],
        "Decoder steps run by this worker; a batch of clips steps together, so a batched step counts once.";
    DECODING_STEP = "sound_creator_decoding_step_seconds", Histogram, Seconds, ["family"], STEP_SECONDS,
        "Per generated batch: its inference time (text encoding, decoding and audio decoding) over its decoding steps.";
    WORKER_BATCH_SIZE = "sound_creator_worker_batch_size", Histogram, Count, ["family"], BATCH_SIZES,
        "Jobs generated together in one batched forward pass.";
    CALLBACKS = "sound_creator_callbacks_total", Counter, Count, ["outcome"], &[],
        "Callback delivery attempts: delivered, retry (failed, tried again later) or gave_up (failed for the last time).";
    QUEUE_JOBS = "sound_creator_queue_jobs", Gauge, Count, ["family", "state"], &[],
        "Jobs in the family's queue at scrape time: queued (waiting) or in_flight (received by a worker).";
}

/// Registers every metric's unit and help with the installed exporter.
pub fn describe() {
    for metric in ALL {
        match metric.kind {
            MetricKind::Counter => {
                metrics::describe_counter!(metric.name, metric.unit, metric.help)
            }
            MetricKind::Gauge => metrics::describe_gauge!(metric.name, metric.unit, metric.help),
            MetricKind::Histogram => {
                metrics::describe_histogram!(metric.name, metric.unit, metric.help)
            }
        }
    }
}

/// One answer of the API. `route` is the route's template
/// (`/v1/result/{task_id}`), never the path a client sent.
pub fn http_response(route: &str, method: &str, status: u16, elapsed: Duration) {
    counter!(HTTP_REQUESTS.name, "route" => route.to_owned(), "method" => method.to_owned(), "status" => status.to_string())
        .increment(1);
    histogram!(HTTP_REQUEST_DURATION.name, "route" => route.to_owned(), "method" => method.to_owned())
        .record(elapsed.as_secs_f64());
}

pub fn task_submitted(family: ModelFamily) {
    counter!(TASKS_SUBMITTED.name, "family" => family.as_str()).increment(1);
}

/// A task that became final: its outcome, its timings and the audio it
/// produced. The caller calls it once per task (the completion step, when
/// a stage makes the task final or a final status is announced to it).
pub fn task_finished(task: &Task) {
    let family = task.request.family.as_str();
    let status = task.status.as_str();
    counter!(TASKS_FINISHED.name, "family" => family, "status" => status).increment(1);
    if task.status == TaskStatus::Failed {
        let code = task.error.as_ref().map_or("unknown", |e| e.code.as_str());
        counter!(TASK_FAILURES.name, "family" => family, "code" => code).increment(1);
    }
    let seconds = |ms: u64| ms as f64 / 1000.0;
    if let Some(ms) = task.queue_ms() {
        histogram!(TASK_QUEUE.name, "family" => family).record(seconds(ms));
    }
    if let Some(ms) = task.inference_ms() {
        histogram!(TASK_INFERENCE.name, "family" => family).record(seconds(ms));
    }
    if let Some(ms) = task.total_ms() {
        histogram!(TASK_LATENCY.name, "family" => family, "status" => status).record(seconds(ms));
    }
    if task.status == TaskStatus::Succeeded {
        histogram!(TASK_AUDIO.name, "family" => family).record(task.audio_seconds());
    }
}

/// One batch the worker generated: its size, the decoding steps it ran and
/// its inference time.
pub fn batch_generated(family: ModelFamily, jobs: usize, steps: usize, inference: Duration) {
    let family = family.as_str();
    histogram!(WORKER_BATCH_SIZE.name, "family" => family).record(jobs as f64);
    if steps > 0 {
        counter!(DECODING_STEPS.name, "family" => family).increment(steps as u64);
        histogram!(DECODING_STEP.name, "family" => family)
            .record(inference.as_secs_f64() / steps as f64);
    }
}

/// What became of one callback delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallbackAttempt {
    Delivered,
    Retry,
    GaveUp,
}

pub fn callback_attempted(outcome: CallbackAttempt) {
    let outcome = match outcome {
        CallbackAttempt::Delivered => "delivered",
        CallbackAttempt::Retry => "retry",
        CallbackAttempt::GaveUp => "gave_up",
    };
    counter!(CALLBACKS.name, "outcome" => outcome).increment(1);
}

/// The depth of a family's job queue, as read at scrape time.
pub fn queue_depth(family: ModelFamily, queued: u64, in_flight: u64) {
    let family = family.as_str();
    gauge!(QUEUE_JOBS.name, "family" => family, "state" => "queued").set(queued as f64);
    gauge!(QUEUE_JOBS.name, "family" => family, "state" => "in_flight").set(in_flight as f64);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_conventions() {
        for metric in ALL {
            assert!(metric.name.starts_with("sound_creator_"), "{}", metric.name);
            assert_eq!(
                metric.name.ends_with("_total"),
                metric.kind == MetricKind::Counter,
                "{}: `_total` is for counters and only counters",
                metric.name
            );
            if metric.unit == Unit::Seconds {
                assert!(
                    metric.name.ends_with("_seconds"),
                    "{}: a time is in seconds and says so",
                    metric.name
                );
            }
            assert_eq!(
                metric.kind == MetricKind::Histogram,
                !metric.buckets.is_empty(),
                "{}: histograms and only histograms have buckets",
                metric.name
            );
            assert!(metric.buckets.windows(2).all(|w| w[0] < w[1]));
        }
        let mut names: Vec<_> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a metric is declared twice");
    }
}
