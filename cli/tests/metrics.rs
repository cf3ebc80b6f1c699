//! `GET /metrics` on `METRICS_ADDR`, end to end: the real `sound-creator
//! serve` with the tiny MusicGen checkpoint runs a few tasks (succeeded,
//! canceled, refused), and the scrape's counters match what happened.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{music, App, CallbackReceiver, TOKEN};
use serde_json::json;

const LONG: Duration = Duration::from_secs(120);

/// One sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the text format (no escaped quotes in our label values).
fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split(',')
                .filter(|pair| !pair.is_empty())
                .map(|pair| {
                    let (k, v) = pair.split_once('=').unwrap();
                    (k.to_owned(), v.trim_matches('"').to_owned())
                })
                .collect();
            Sample {
                name: name.to_owned(),
                labels,
                value: value.parse().unwrap(),
            }
        })
        .collect()
}

struct Scrape {
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the one series named `name` with these labels (others
    /// may be present); 0 when there is none, as Prometheus reads a series
    /// that was never incremented.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let matching: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert!(
            matching.len() <= 1,
            "{name} {labels:?} names several series: {matching:?}"
        );
        matching.first().map_or(0.0, |s| s.value)
    }
}

async fn scrape(url: &str) -> Scrape {
    let response = reqwest::get(url).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        response.headers()
    );
    let text = response.text().await.unwrap();
    let samples = parse(&text);
    Scrape { text, samples }
}

/// Scrapes until `ready` holds (the completion step and the worker finish
/// a little after the API has answered).
async fn scrape_until(url: &str, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + LONG;
    loop {
        let scrape = scrape(url).await;
        if ready(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the metrics never got there:\n{}",
            scrape.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_count_the_tasks_requests_and_audio_the_service_handled() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = CallbackReceiver::start(0).await;
    let app = App::spawn(dir.path(), &[("METRICS_ADDR", "127.0.0.1:0")]);
    let metrics_url = app
        .banner
        .split_whitespace()
        .map(|w| w.trim_end_matches(')'))
        .find(|w| w.ends_with("/metrics"))
        .unwrap_or_else(|| panic!("serve did not say where its metrics are: {}", app.banner))
        .to_owned();
    assert!(
        !metrics_url.starts_with(&app.base),
        "{metrics_url} is the API's own port"
    );

    // Not on the public port.
    let (status, _, _) = app.get("/metrics", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Two tasks that succeed (three clips), each with a callback.
    let mut one = music("one clip", 0.2);
    one["callback_url"] = json!(receiver.url);
    let mut two = music("two clips", 0.4);
    two["samples"] = json!(2);
    two["callback_url"] = json!(receiver.url);
    let one = app.submit(&one).await;
    let two = app.submit(&two).await;
    let mut audio_seconds = 0.0;
    for id in [&one, &two] {
        let doc = app.wait_final(id, LONG).await;
        assert_eq!(doc["status"], "succeeded", "{doc}");
        for output in doc["outputs"].as_array().unwrap() {
            audio_seconds += output["duration"].as_f64().unwrap();
        }
    }
    receiver.wait_for(2, LONG).await;

    // One canceled while running.
    let long = app.submit(&music("a very long piece", 30.0)).await;
    app.wait_status(&long, "running", LONG).await;
    let (status, _, doc) = app
        .post(&format!("/v1/cancel/{long}"), Some(TOKEN), &json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{doc}");

    // Refused: no token, a prompt over the limit, a path that is no route.
    let (status, _, _) = app.post("/v1/call", None, &music("x", 1.0)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = app
        .post("/v1/call", Some(TOKEN), &music(&"é".repeat(140), 1.0))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _, _) = app.get("/no/such/route/0190b7c2", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let music_family = [("family", "music")];
    let m = scrape_until(&metrics_url, |m| {
        m.value(
            "sound_creator_tasks_finished_total",
            &[("family", "music"), ("status", "canceled")],
        ) == 1.0
            // The canceled job's batch is counted once the worker let go of it.
            && m.value("sound_creator_worker_batch_size_count", &music_family) == 4.0
    })
    .await;
    let text = &m.text;

    assert_eq!(
        m.value("sound_creator_tasks_submitted_total", &music_family),
        3.0,
        "{text}"
    );
    let finished = |status| {
        m.value(
            "sound_creator_tasks_finished_total",
            &[("family", "music"), ("status", status)],
        )
    };
    assert_eq!(finished("succeeded"), 2.0, "{text}");
    assert_eq!(finished("failed"), 0.0, "{text}");

    let http = |method, route, status| {
        m.value(
            "sound_creator_http_requests_total",
            &[("method", method), ("route", route), ("status", status)],
        )
    };
    assert_eq!(http("POST", "/v1/call", "202"), 3.0, "{text}");
    assert_eq!(http("POST", "/v1/call", "401"), 1.0, "{text}");
    assert_eq!(http("POST", "/v1/call", "400"), 1.0, "{text}");
    assert_eq!(http("POST", "/v1/cancel/{task_id}", "200"), 1.0, "{text}");
    assert_eq!(
        http("GET", "unmatched", "404"),
        2.0,
        "/metrics and the made-up path: {text}"
    );
    assert!(http("GET", "/v1/result/{task_id}", "200") >= 2.0, "{text}");
    assert!(
        !text.contains(&one) && !text.contains("é") && !text.contains(TOKEN),
        "no task id, prompt or token in a label: {text}"
    );

    // Timings: every final task has a latency, every started one a queue
    // wait, every one that generated audio an inference time.
    assert_eq!(
        m.value(
            "sound_creator_task_latency_seconds_count",
            &[("family", "music"), ("status", "succeeded")]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        m.value(
            "sound_creator_task_latency_seconds_count",
            &[("family", "music"), ("status", "canceled")]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        m.value("sound_creator_task_queue_seconds_count", &music_family),
        3.0,
        "{text}"
    );
    assert_eq!(
        m.value("sound_creator_task_inference_seconds_count", &music_family),
        2.0,
        "{text}"
    );
    let audio = m.value("sound_creator_task_audio_seconds_sum", &music_family);
    assert!(
        (audio - audio_seconds).abs() < 1e-6,
        "{audio} != {audio_seconds}: {text}"
    );
    assert_eq!(
        m.value("sound_creator_task_audio_seconds_count", &music_family),
        2.0
    );

    // The worker: one job a batch (WORKER_MAX_BATCH=1), steps counted.
    assert_eq!(
        m.value("sound_creator_worker_batch_size_sum", &music_family),
        4.0,
        "{text}"
    );
    let steps = m.value("sound_creator_decoding_steps_total", &music_family);
    assert!(steps > 0.0, "{text}");
    assert_eq!(
        m.value("sound_creator_decoding_step_seconds_count", &music_family),
        4.0,
        "{text}"
    );
    assert_eq!(
        m.value("sound_creator_callbacks_total", &[("outcome", "delivered")]),
        2.0,
        "{text}"
    );
    // Read from the queue at scrape time.
    assert_eq!(
        m.value(
            "sound_creator_queue_jobs",
            &[("family", "music"), ("state", "queued")]
        ),
        0.0,
        "{text}"
    );
    assert!(
        text.contains("sound_creator_queue_jobs{family=\"music\",state=\"queued\"} 0")
            || text.contains("sound_creator_queue_jobs{state=\"queued\",family=\"music\"} 0"),
        "{text}"
    );
    // Help and type lines come from the catalogue.
    assert!(
        text.contains("# TYPE sound_creator_tasks_submitted_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE sound_creator_task_latency_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# HELP sound_creator_http_requests_total "),
        "{text}"
    );
}
