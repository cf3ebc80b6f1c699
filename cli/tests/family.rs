//! The contract of issue 11 end to end, against the real `sound-creator
//! serve` binary on the embedded backends with the tiny MusicGen checkpoint:
//! uploads (`POST /v1/uploads` and the signed PUT), `melody`, `format`,
//! `normalization`, `model` and `GET /v1/models`.
//!
//! Every output format is decoded by an independent decoder, Python's
//! soundfile (libsndfile's FLAC, mpg123 and libvorbis readers; installed by
//! scripts/setup.sh), run as `SOUND_CREATOR_PYTHON`, else `python3`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::process::Command;
use std::time::Duration;

use axum::http::StatusCode;
use common::{music, repo_root, tiny_model, App, OTHER_TOKEN, TOKEN};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const LONG: Duration = Duration::from_secs(120);

fn assert_error(status: StatusCode, doc: &Value, want_status: StatusCode, want_code: &str) {
    assert_eq!(status, want_status, "{doc}");
    assert_eq!(doc["error"]["code"], want_code, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{doc}"
    );
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(repo_root().join("tests/fixtures/uploads").join(name)).unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Asks for an upload and answers its document.
async fn new_upload(app: &App, token: &str, content_type: &str, bytes: usize) -> Value {
    let (status, _, doc) = app
        .post(
            "/v1/uploads",
            Some(token),
            &json!({"content_type": content_type, "bytes": bytes}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{doc}");
    doc
}

/// PUTs `body` to an upload's link with `content_type`.
async fn put(app: &App, upload: &Value, content_type: &str, body: Vec<u8>) -> (u16, Value) {
    let response = app
        .client
        .put(upload["url"].as_str().unwrap())
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// What the independent decoder read from a file.
struct Probe {
    sample_rate: u64,
    channels: u64,
    frames: u64,
    samples: Vec<f32>,
}

fn soundfile_probe(bytes: &[u8], extension: &str) -> Probe {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("clip.{extension}"));
    let out = dir.path().join("decoded.f32");
    std::fs::write(&file, bytes).unwrap();
    let python = std::env::var("SOUND_CREATOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = repo_root().join("audio/tests/support/soundfile_probe.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&file)
        .arg(&out)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python}: {err}"));
    assert!(
        output.status.success(),
        "the independent decoder (Python's soundfile, run with {python}) failed; \
         `eval \"$(bash scripts/setup.sh)\"` installs it into .venv:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    let samples = std::fs::read(&out)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Probe {
        sample_rate: info["sample_rate"].as_u64().unwrap(),
        channels: info["channels"].as_u64().unwrap(),
        frames: info["frames"].as_u64().unwrap(),
        samples,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_take_allowed_types_and_sizes_and_the_put_must_match_what_was_declared() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[("MAX_UPLOAD_BYTES", "100000")]);
    let mp3 = fixture("a4-44k-stereo.mp3");

    let doc = new_upload(&app, TOKEN, "audio/mpeg", mp3.len()).await;
    let id = doc["upload_id"].as_str().unwrap();
    assert!(id.starts_with("up_"), "{doc}");
    assert_eq!(doc["method"], "PUT");
    assert_eq!(doc["headers"], json!({"Content-Type": "audio/mpeg"}));
    let url = doc["url"].as_str().unwrap();
    assert!(
        url.starts_with(&format!("{}/v1/files/uploads/{id}?", app.base)),
        "{url}"
    );
    assert!(doc["expires_at"].as_str().is_some());

    // Declared too large, of a type not on the list, malformed, no token.
    let (status, _, err) = app
        .post(
            "/v1/uploads",
            Some(TOKEN),
            &json!({"content_type": "audio/wav", "bytes": 100_001}),
        )
        .await;
    assert_error(
        status,
        &err,
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
    );
    let (status, _, err) = app
        .post(
            "/v1/uploads",
            Some(TOKEN),
            &json!({"content_type": "video/mp4", "bytes": 10}),
        )
        .await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "unsupported_upload_type",
    );
    assert_eq!(err["error"]["field"], "content_type");
    let (status, _, err) = app
        .post(
            "/v1/uploads",
            Some(TOKEN),
            &json!({"content_type": "audio/wav", "bytes": 0}),
        )
        .await;
    assert_error(status, &err, StatusCode::BAD_REQUEST, "invalid_field");
    let (status, _, _) = app
        .post(
            "/v1/uploads",
            None,
            &json!({"content_type": "audio/wav", "bytes": 10}),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The PUT must carry the declared type and exactly the declared bytes.
    let (status, err) = put(&app, &doc, "audio/wav", mp3.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (415, json!("upload_type_mismatch"))
    );
    let mut longer = mp3.clone();
    longer.push(0);
    let (status, err) = put(&app, &doc, "audio/mpeg", longer).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (413, json!("upload_too_large"))
    );
    let (status, err) = put(&app, &doc, "audio/mpeg", mp3[..100].to_vec()).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (400, json!("upload_size_mismatch"))
    );
    let tampered = json!({"url": url.replace("bytes=", "bytes=1")});
    let (status, err) = put(&app, &tampered, "audio/mpeg", mp3.clone()).await;
    assert_eq!(
        (status, err["error"]["code"].clone()),
        (403, json!("invalid_signature"))
    );
    let (status, _) = put(&app, &doc, "audio/mpeg", mp3.clone()).await;
    assert_eq!(status, 200);
    // A link to PUT is no link to GET.
    let response = app.client.get(url).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_melody_must_name_an_upload_of_this_key_that_was_put_and_a_model_that_takes_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let flac = fixture("a4-44k-stereo.flac");
    let with_melody = |upload_id: &str| {
        let mut body = music("follow this tune", 0.5);
        body["melody"] = json!({"upload_id": upload_id});
        body
    };

    // Unknown, and another client key's: 404.
    let (status, _, err) = app
        .post(
            "/v1/call",
            Some(TOKEN),
            &with_melody("up_0190b7c28f9e7c3a9d1e123456789abc"),
        )
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "upload_not_found");
    assert_eq!(err["error"]["field"], "melody.upload_id");
    let theirs = new_upload(&app, OTHER_TOKEN, "audio/flac", flac.len()).await;
    assert_eq!(put(&app, &theirs, "audio/flac", flac.clone()).await.0, 200);
    let (status, _, err) = app
        .post(
            "/v1/call",
            Some(TOKEN),
            &with_melody(theirs["upload_id"].as_str().unwrap()),
        )
        .await;
    assert_error(status, &err, StatusCode::NOT_FOUND, "upload_not_found");

    // Asked for but never PUT: 422.
    let mine = new_upload(&app, TOKEN, "audio/flac", flac.len()).await;
    let mine_id = mine["upload_id"].as_str().unwrap();
    let (status, _, err) = app
        .post("/v1/call", Some(TOKEN), &with_melody(mine_id))
        .await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "upload_missing",
    );

    // PUT, but the tiny model does not condition on a melody: 422.
    assert_eq!(put(&app, &mine, "audio/flac", flac).await.0, 200);
    let (status, _, err) = app
        .post("/v1/call", Some(TOKEN), &with_melody(mine_id))
        .await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "melody_not_supported",
    );
    assert_eq!(err["error"]["field"], "melody");
    // And a melody is for music only.
    let mut audio = with_melody(mine_id);
    audio["type"] = json!("audio");
    let (status, _, err) = app.post("/v1/call", Some(TOKEN), &audio).await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "melody_not_supported",
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_format_decodes_to_the_clip_and_none_is_todays_wav_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[]);
    let duration = 0.5;
    let mut ids = Vec::new();
    for (format, normalization) in [
        (None, None),
        (Some("wav"), Some("none")),
        (Some("flac"), None),
        (Some("mp3"), None),
        (Some("ogg"), None),
        (Some("wav"), Some("peak")),
        (Some("flac"), Some("loudness")),
    ] {
        let mut body = music("p", duration);
        if let Some(format) = format {
            body["format"] = json!(format);
        }
        if let Some(normalization) = normalization {
            body["normalization"] = json!(normalization);
        }
        ids.push((
            format.unwrap_or("wav"),
            normalization,
            app.submit(&body).await,
        ));
    }

    // Today's output: the one-clip CLI (core's WAV writer) with the same
    // model, prompt, seed and sampling defaults.
    let cli_wav = dir.path().join("cli.wav");
    let status = Command::new(env!("CARGO_BIN_EXE_sound-creator"))
        .args(["generate", "--model"])
        .arg(tiny_model())
        .args(["--prompt", "p", "--duration", "0.5", "--seed", "7", "--out"])
        .arg(&cli_wav)
        .status()
        .unwrap();
    assert!(status.success());
    let todays = std::fs::read(&cli_wav).unwrap();

    let mut plain: Option<Vec<f32>> = None;
    for (format, normalization, id) in ids {
        let label = format!("{format} {normalization:?}");
        let doc = app.wait_final(&id, LONG).await;
        assert_eq!(doc["status"], "succeeded", "{label}: {doc}");
        let output = &doc["outputs"][0];
        let response = app
            .client
            .get(output["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.headers()["content-type"],
            output["content_type"].as_str().unwrap(),
            "{label}"
        );
        let bytes = response.bytes().await.unwrap().to_vec();
        assert_eq!(output["bytes"], bytes.len() as u64, "{label}");
        assert_eq!(output["sha256"], sha256(&bytes), "{label}");
        assert!(
            output["url"]
                .as_str()
                .unwrap()
                .contains(&format!("clip-0.{format}")),
            "{label}"
        );
        assert_eq!(
            output["duration"], duration,
            "{label}: the audio's duration"
        );
        assert_eq!(
            (output["sample_rate"].clone(), output["channels"].clone()),
            (json!(32000), json!(1))
        );

        let probe = soundfile_probe(&bytes, format);
        assert_eq!((probe.sample_rate, probe.channels), (32000, 1), "{label}");
        assert_eq!(probe.frames, 16_000, "{label}: length");
        let peak = probe.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.0, "{label}: not silent");

        match (format, normalization) {
            ("wav", None | Some("none")) => {
                assert_eq!(bytes, todays, "{label}: bit for bit today's WAV");
                plain = Some(probe.samples);
            }
            ("flac", None) => {
                assert_eq!(
                    Some(&probe.samples),
                    plain.as_ref(),
                    "FLAC holds exactly the WAV's samples"
                );
            }
            ("wav", Some("peak")) => {
                // -1 dBFS, quantized to 16 bits.
                assert!((peak - 0.891).abs() < 0.001, "peak {peak}");
            }
            _ => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_lists_what_serve_loaded_and_model_picks_one() {
    let dir = tempfile::tempdir().unwrap();
    // A second deployed model: the same tiny checkpoint under another path.
    let second = dir.path().join("tiny-copy");
    std::os::unix::fs::symlink(tiny_model(), &second).unwrap();
    let second = second.display().to_string();
    let data = dir.path().join("data");
    let app = App::spawn(
        &data,
        &[
            ("MUSIC_GEN_MODELS", second.as_str()),
            ("MAX_DURATION", "60"),
        ],
    );

    let (status, _, _) = app.get("/v1/models", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, doc) = app.get("/v1/models", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    let models = doc["models"].as_array().unwrap();
    assert_eq!(models.len(), 2, "{doc}");
    let tiny = tiny_model().display().to_string();
    for (model, id, default) in [(&models[0], &tiny, true), (&models[1], &second, false)] {
        // Past its 30 s window MusicGen goes on window by window: only
        // MAX_DURATION caps a clip.
        assert_eq!(
            model,
            &json!({"family": "music", "id": id, "default": default, "sample_rate": 32000,
                "channels": 1, "melody": false, "max_duration": 60.0,
                "formats": ["wav", "flac", "mp3", "ogg"], "device": "cpu", "dtype": "f32"}),
        );
    }

    let mut body = music("the second model", 0.3);
    body["model"] = json!(second);
    let id = app.submit(&body).await;
    assert_eq!(app.wait_final(&id, LONG).await["status"], "succeeded");

    body["model"] = json!("facebook/musicgen-large");
    let (status, _, err) = app.post("/v1/call", Some(TOKEN), &body).await;
    assert_error(
        status,
        &err,
        StatusCode::UNPROCESSABLE_ENTITY,
        "model_not_deployed",
    );
    assert_eq!(err["error"]["field"], "model");
    // Past MAX_DURATION: 400.
    let (status, _, err) = app
        .post("/v1/call", Some(TOKEN), &music("too long for it", 61.0))
        .await;
    assert_error(
        status,
        &err,
        StatusCode::BAD_REQUEST,
        "duration_out_of_range",
    );

    // The OpenAPI document describes the new routes and fields.
    let (_, _, openapi) = app.get("/v1/openapi.json", None).await;
    for path in ["/v1/uploads", "/v1/models"] {
        assert!(openapi["paths"][path].is_object(), "openapi lacks {path}");
    }
    let call = &openapi["components"]["schemas"]["CallRequest"]["properties"];
    assert_eq!(
        call["format"]["enum"],
        json!(["wav", "flac", "mp3", "ogg", null])
    );
    assert_eq!(
        call["normalization"]["enum"],
        json!(["none", "loudness", "peak", "clip", null])
    );
    // Neither deployed model takes a melody: the document offers none.
    assert!(call.get("melody").is_none(), "{call}");
    assert_eq!(
        openapi["components"]["schemas"]["UploadRequest"]["properties"]["bytes"]["maximum"],
        json!(20 * 1024 * 1024)
    );
}
