//! AudioGen through the service (issue 10), against the real `sound-creator
//! serve` binary on the embedded backends: `type: "audio"` on the tiny
//! AudioGen that audiocraft exported (`tests/fixtures/tiny-audiogen`) makes a
//! 16 kHz WAV through `/v1/call`, on the audio family's own queue, capped at
//! 10 s; `/health` and `/v1/models` list both families; and with
//! DEPLOYED_TYPES unset a machine without AudioGen weights still serves
//! music, saying in `/health` that audio is not deployed.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::{music, tiny_audiogen, App, TOKEN};
use serde_json::{json, Value};
use sound_creator_core::audio::decode_wav;

const LONG: Duration = Duration::from_secs(120);

fn audio(prompt: &str, duration: f64) -> Value {
    let mut body = music(prompt, duration);
    body["type"] = json!("audio");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audio_task_on_the_tiny_audiogen_yields_a_16_khz_wav_and_health_lists_both_families() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_audiogen().display().to_string();
    let app = App::spawn(dir.path(), &[("AUDIO_GEN_MODEL", &model)]);

    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["models"]["audio"]["deployed"], true, "{health}");
    assert_eq!(
        health["models"]["audio"]["models"],
        json!([model]),
        "{health}"
    );
    assert_eq!(health["models"]["music"]["deployed"], true, "{health}");
    assert!(health["queues"]["audio"].is_object(), "{health}");

    let (status, _, models) = app.get("/v1/models", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{models}");
    let audiogen = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["family"] == "audio")
        .unwrap_or_else(|| panic!("no audio model in {models}"))
        .clone();
    assert_eq!(audiogen["sample_rate"], 16000, "{audiogen}");
    assert_eq!(audiogen["max_duration"], 10.0, "{audiogen}");
    assert_eq!(audiogen["default"], true, "{audiogen}");

    let mut body = audio("a dog barking in the rain", 0.5);
    body["samples"] = json!(2);
    let id = app.submit(&body).await;
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["outputs"].as_array().unwrap().len(), 2, "{doc}");
    for output in doc["outputs"].as_array().unwrap() {
        let bytes = app.download(output["url"].as_str().unwrap()).await;
        let (header, samples) = decode_wav(&bytes).unwrap();
        assert_eq!((header.sample_rate, header.channels), (16_000, 1));
        assert_eq!(samples.len(), 8000, "0.5 s at 16 kHz");
        assert!(samples.iter().any(|s| *s != 0), "not silence");
    }

    // AudioGen's own cap, below MAX_DURATION (30 s).
    let (status, _, err) = app
        .post(
            "/v1/call",
            Some(TOKEN),
            &audio("too long for AudioGen", 11.0),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    assert_eq!(err["error"]["code"], "duration_out_of_range", "{err}");

    // Music still works beside it.
    let id = app.submit(&music("and some music", 0.3)).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_audiogen_weights_serve_still_serves_music_and_health_says_audio_is_not_deployed() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-audiogen-here");
    std::fs::create_dir(&missing).unwrap();
    let missing = missing.display().to_string();
    let app = App::spawn(dir.path(), &[("AUDIO_GEN_MODEL", &missing)]);

    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["models"]["music"]["deployed"], true, "{health}");
    assert_eq!(health["models"]["audio"]["deployed"], false, "{health}");

    let (status, _, err) = app
        .post("/v1/call", Some(TOKEN), &audio("rain on a tin roof", 2.0))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "model_not_deployed", "{err}");

    let id = app.submit(&music("music still plays", 0.3)).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "succeeded");
}
