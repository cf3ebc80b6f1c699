//! The AWS shape end to end, against real servers on loopback started by
//! `tests/env/up.sh`: moto (SQS, S3, DynamoDB), redis-server and PostgreSQL.
//! The real `sound-creator` binary runs as API, worker(s) and completion,
//! each its own process, with the tiny MusicGen checkpoint.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{
    music, repo_root, require_aws_env, run_to_end, tiny_audiogen, tiny_model, unique_aws_names,
    App, CallbackReceiver, FakeEcsAgent, Process, OTHER_TOKEN, TOKEN,
};
use serde_json::{json, Value};
use sound_creator_core::audio::decode_wav;

const LONG: Duration = Duration::from_secs(180);

/// Settings shared by every process of one test: unique resource names on
/// the shared servers, the tiny model, fast retries.
struct Deployment {
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
}

impl Deployment {
    fn new(label: &str, extra: &[(&str, &str)]) -> Deployment {
        require_aws_env();
        let mut env = unique_aws_names(label);
        for (k, v) in [
            ("MARKETPLACE_TOKEN", TOKEN),
            ("MODEL_DEVICE", "cpu"),
            ("CALLBACK_ALLOWED_HOSTS", "127.0.0.1"),
            ("CALLBACK_RETRY_BASE_MS", "200"),
            ("SQS_VISIBILITY_TIMEOUT", "4"),
        ] {
            env.push((k.into(), v.into()));
        }
        env.push(("MUSIC_GEN_MODEL".into(), tiny_model().display().to_string()));
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let deployment = Deployment {
            env,
            dir: tempfile::tempdir().expect("tempdir"),
        };
        run_to_end(&["provision"], &deployment.env_refs());
        deployment
    }

    fn env_refs(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn api(&self) -> App {
        App::spawn_full(
            "api",
            &["--backend", "aws"],
            self.dir.path(),
            &self.env_refs(),
        )
    }

    fn serve(&self) -> App {
        App::spawn_full(
            "serve",
            &["--backend", "aws"],
            self.dir.path(),
            &self.env_refs(),
        )
    }

    fn worker(&self, name: &str) -> Process {
        self.worker_with(name, &[])
    }

    fn worker_with(&self, name: &str, extra: &[(&str, &str)]) -> Process {
        let mut env = self.env_refs();
        env.extend_from_slice(extra);
        Process::spawn(
            &["worker", "--backend", "aws", "--family", "music"],
            &env,
            self.dir.path().join(format!("{name}.log")),
        )
    }

    fn completion(&self) -> Process {
        Process::spawn(
            &["completion", "--backend", "aws"],
            &self.env_refs(),
            self.dir.path().join("completion.log"),
        )
    }

    /// A marketplace user of this deployment alone: Postgres outlives a
    /// test run, so a fixed id would count an earlier run's tasks.
    fn user(&self, label: &str) -> String {
        format!("{label}-{}", self.var("DYNAMODB_TABLE"))
    }

    fn var(&self, name: &str) -> String {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

fn task_body(user: &str, prompt: &str, duration: f64) -> Value {
    let mut body = music(prompt, duration);
    body["user_id"] = json!(user);
    body
}

async fn wait_stats(app: &App, user: &str, requests: u64) -> Value {
    let deadline = Instant::now() + LONG;
    loop {
        let (status, _, stats) = app
            .get(&format!("/v1/stats?user_id={user}"), Some(TOKEN))
            .await;
        if status == StatusCode::OK && stats["requests"] == requests {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "stats for {user} never reached {requests}: {status} {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counts the worker log lines that start generating `task_id`.
fn generations(logs: &[String], task_id: &str) -> usize {
    logs.iter()
        .flat_map(|l| l.lines())
        .filter(|l| l.contains("generating") && l.contains(task_id))
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_runs_through_sqs_s3_dynamodb_redis_and_postgres() {
    let deployment = Deployment::new("e2e", &[("FINAL_CACHE_TTL", "2")]);
    let user = deployment.user("aws-e2e");
    let app = deployment.serve();
    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");

    let id = app
        .submit(&task_body(&user, "through every backend", 0.5))
        .await;
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let url = doc["outputs"][0]["url"].as_str().unwrap();
    assert!(
        url.contains(&deployment.var("S3_BUCKET")),
        "an S3 presigned URL: {url}"
    );
    let bytes = app.download(url).await;
    let (header, samples) = decode_wav(&bytes).unwrap();
    assert_eq!(header.sample_rate, 32000);
    assert!(samples.iter().any(|s| *s != 0));

    let stats = wait_stats(&app, &user, 1).await;
    assert_eq!(stats["by_status"]["succeeded"], 1);

    // The final result in Redis expires (FINAL_CACHE_TTL=2 s); the result is
    // still served, from the task record in DynamoDB.
    let redis = redis::Client::open(format!(
        "redis://127.0.0.1:{}/",
        std::env::var("REDIS_PORT").unwrap()
    ))
    .unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let key = format!("sound-creator:final:{id}");
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(exists, "the final result is cached in Redis");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists, "the cached result expired");
    let (status, _, again) = app.get(&format!("/v1/result/{id}"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["status"], "succeeded");
    assert_eq!(again["outputs"][0]["sha256"], doc["outputs"][0]["sha256"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_duplicate_sqs_message_and_a_killed_worker_each_end_with_one_output_one_stats_row_one_callback(
) {
    let receiver = CallbackReceiver::start(0).await;
    let deployment = Deployment::new("dup", &[("MARKETPLACE_CALLBACK", receiver.url.as_str())]);
    let user = deployment.user("aws-dup");
    let app = deployment.api();
    let _completion = deployment.completion();
    let mut first = deployment.worker("worker-1");

    // A worker killed mid-job: its message reappears after the visibility
    // timeout and another worker finishes the task. The kill follows the
    // worker's own "generating" line, not the API's "running" status: the
    // task stays running after the generation until the completion step
    // runs, so a status poll slowed by a loaded machine could see "running"
    // only once the job was already done and deleted.
    let killed = app.submit(&task_body(&user, "killed mid job", 30.0)).await;
    let deadline = Instant::now() + LONG;
    while generations(&[first.log_text()], &killed) == 0 {
        assert!(
            Instant::now() < deadline,
            "worker-1 never started {killed}: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill();
    let second = deployment.worker("worker-2");
    let doc = app.wait_final(&killed, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["outputs"].as_array().unwrap().len(), 1);
    let logs = [first.log_text(), second.log_text()];
    assert_eq!(
        generations(&logs, &killed),
        2,
        "started once, then again after the kill"
    );

    // The same SQS message twice: send the job's message again by hand.
    let twice = app.submit(&task_body(&user, "delivered twice", 0.3)).await;
    let aws = sound_creator_settings::Settings::from_lookup(|name| {
        deployment
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    })
    .unwrap()
    .aws;
    let backends = sound_creator_aws::AwsBackends::connect(&aws).await.unwrap();
    let task = backends
        .tasks
        .get(&sound_creator_core::task::TaskId::parse(&twice).unwrap())
        .await
        .unwrap()
        .unwrap();
    let job = sound_creator_core::messages::Job::for_task(&task).remove(0);
    backends
        .queue
        .send(
            sound_creator_core::ports::QueueName::Jobs(
                sound_creator_core::task::ModelFamily::Music,
            ),
            &sound_creator_core::messages::encode(&job),
            Duration::ZERO,
        )
        .await
        .unwrap();
    assert_eq!(app.wait_final(&twice, LONG).await["status"], "succeeded");

    let stats = wait_stats(&app, &user, 2).await;
    assert_eq!(stats["by_status"]["succeeded"], 2, "one stats row per task");
    let calls = receiver.wait_for(2, LONG).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls_after = receiver.calls();
    assert_eq!(calls_after.len(), calls.len(), "no late extra callbacks");
    let mut ids: Vec<_> = calls_after.iter().map(|c| c.webhook_id.clone()).collect();
    ids.sort();
    let mut want = vec![format!("msg_{killed}"), format!("msg_{twice}")];
    want.sort();
    assert_eq!(ids, want, "one callback per task");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_longer_than_the_visibility_timeout_is_not_delivered_twice_while_its_worker_lives() {
    // A batch of four 40 s clips in one forward pass: long enough to outlive
    // a 1 s visibility timeout several times over, even with the tiny model.
    let deployment = Deployment::new(
        "hb",
        &[
            ("SQS_VISIBILITY_TIMEOUT", "1"),
            ("WORKER_MAX_BATCH", "4"),
            ("MAX_DURATION", "40"),
        ],
    );
    let app = deployment.api();
    let _completion = deployment.completion();
    let one = deployment.worker("worker-a");
    let two = deployment.worker("worker-b");
    let mut body = task_body("aws-hb", "longer than the visibility timeout", 40.0);
    body["samples"] = json!(4);
    let id = app.submit(&body).await;
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let inference_ms = doc["metrics"]["inference_ms"].as_u64().unwrap();
    assert!(
        inference_ms > 1500,
        "the job ({inference_ms} ms) outlived the 1 s visibility timeout"
    );
    assert_eq!(
        generations(&[one.log_text(), two.log_text()], &id),
        4,
        "each of the 4 jobs ran once: the heartbeat kept them from a second worker"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sigterm_mid_job_hands_the_job_back_and_a_new_worker_completes_it_once_with_scale_in_protection_held(
) {
    // A visibility timeout far past the test's patience: only the worker's
    // own release brings the job back in time for the second worker.
    let receiver = CallbackReceiver::start(0).await;
    let deployment = Deployment::new(
        "term",
        &[
            ("MARKETPLACE_CALLBACK", receiver.url.as_str()),
            ("SQS_VISIBILITY_TIMEOUT", "900"),
        ],
    );
    let app = deployment.api();
    let _completion = deployment.completion();
    let (agent_one, agent_two) = (FakeEcsAgent::start().await, FakeEcsAgent::start().await);
    let protected = |agent: &FakeEcsAgent| {
        vec![
            ("WORKER_TASK_PROTECTION".to_owned(), "true".to_owned()),
            ("ECS_AGENT_URI".to_owned(), agent.uri.clone()),
        ]
    };
    let env_one = protected(&agent_one);
    let env_one: Vec<(&str, &str)> = env_one
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut first = deployment.worker_with("worker-1", &env_one);

    // A 30 s clip takes the tiny model seconds on a CPU: SIGTERM lands
    // mid-generation, after the worker's own "generating" line.
    // The stats database outlives a test run: a user of this run only.
    let user = deployment.var("DYNAMODB_TABLE");
    let id = app
        .submit(&task_body(&user, "stopped by a scale-in", 30.0))
        .await;
    let deadline = Instant::now() + LONG;
    while generations(&[first.log_text()], &id) == 0 {
        assert!(
            Instant::now() < deadline,
            "worker-1 never started {id}: {}",
            first.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        agent_one.states(),
        vec![true],
        "protected before the job started, once"
    );
    first.terminate();
    let status = first.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
        panic!(
            "worker-1 still runs 30 s after SIGTERM: {}",
            first.log_text()
        )
    });
    assert!(
        status.success(),
        "worker-1 exited with {status}: {}",
        first.log_text()
    );
    let log = first.log_text();
    assert!(log.contains("worker stopped"), "{log}");
    assert!(
        log.contains("job handed back to the queue"),
        "the job was handed back, not finished: {log}"
    );

    let env_two = protected(&agent_two);
    let env_two: Vec<(&str, &str)> = env_two
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let second = deployment.worker_with("worker-2", &env_two);
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    assert_eq!(doc["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(
        generations(&[log, second.log_text()], &id),
        2,
        "started by worker-1, handed back at SIGTERM, run again by worker-2"
    );
    // Idle again: worker-2 lets go of its protection once the queue is empty.
    agent_two.wait_for(&[true, false], LONG).await;

    let stats = wait_stats(&app, &user, 1).await;
    assert_eq!(stats["by_status"]["succeeded"], 1, "one stats row");
    receiver.wait_for(1, LONG).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ids: Vec<_> = receiver
        .calls()
        .iter()
        .map(|c| c.webhook_id.clone())
        .collect();
    assert_eq!(ids, vec![format!("msg_{id}")], "one callback");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_go_to_s3_through_a_presigned_put_and_the_api_learns_models_from_settings_and_the_catalog(
) {
    // The API alone, as in Lambda: it loads no model, so it describes the
    // deployed ones from the settings and the catalog of published
    // checkpoints (the tiny directory is not in it).
    let deployment = Deployment::new(
        "up",
        &[
            ("MUSIC_GEN_MODELS", "facebook/musicgen-melody"),
            ("API_KEYS", &format!("acme:{OTHER_TOKEN}")),
        ],
    );
    let app = deployment.api();
    let tiny = tiny_model().display().to_string();

    let (status, _, doc) = app.get("/v1/models", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(
        doc,
        json!({"models": [
            {"family": "music", "id": tiny, "default": true, "sample_rate": null, "channels": null,
             "melody": null, "max_duration": 30.0, "formats": ["wav", "flac", "mp3", "ogg"],
             "device": "cpu", "dtype": "f32"},
            {"family": "music", "id": "facebook/musicgen-melody", "default": false, "sample_rate": 32000,
             "channels": 1, "melody": true, "max_duration": 30.0,
             "formats": ["wav", "flac", "mp3", "ogg"], "device": "cpu", "dtype": "f32"},
            {"family": "audio", "id": "facebook/audiogen-medium", "default": true, "sample_rate": 16000,
             "channels": 1, "melody": false, "max_duration": 10.0,
             "formats": ["wav", "flac", "mp3", "ogg"], "device": "cpu", "dtype": "f32"}
        ]})
    );

    // The upload link is a presigned S3 PUT on the emulator.
    let flac =
        std::fs::read(repo_root().join("tests/fixtures/uploads/a4-44k-stereo.flac")).unwrap();
    let (status, _, upload) = app
        .post(
            "/v1/uploads",
            Some(TOKEN),
            &json!({"content_type": "audio/flac", "bytes": flac.len()}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{upload}");
    let url = upload["url"].as_str().unwrap();
    let upload_id = upload["upload_id"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&deployment.var("AWS_ENDPOINT_URL")) || url.contains("127.0.0.1"),
        "{url}"
    );
    assert!(
        url.contains(&deployment.var("S3_BUCKET")) && url.contains("X-Amz-Signature"),
        "{url}"
    );
    assert!(url.contains(&format!("uploads/{upload_id}")), "{url}");

    let melody_task = |upload_id: &str, model: &str| {
        let mut body = task_body("aws-up", "follow it", 0.5);
        body["model"] = json!(model);
        body["melody"] = json!({"upload_id": upload_id});
        body
    };
    // Not PUT yet: S3 has no such object.
    let (status, _, err) = app
        .post(
            "/v1/call",
            Some(TOKEN),
            &melody_task(&upload_id, "facebook/musicgen-melody"),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert_eq!(err["error"]["code"], "upload_missing");

    let mut put = app.client.put(url).body(flac);
    for (name, value) in upload["headers"].as_object().unwrap() {
        put = put.header(name.as_str(), value.as_str().unwrap());
    }
    let response = put.send().await.unwrap();
    assert!(response.status().is_success(), "{}", response.status());

    // Another client key's upload is not found; this key's now works.
    let (status, _, err) = app
        .post(
            "/v1/call",
            Some(OTHER_TOKEN),
            &melody_task(&upload_id, "facebook/musicgen-melody"),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{err}");
    assert_eq!(err["error"]["code"], "upload_not_found");
    let mut body = melody_task(&upload_id, "facebook/musicgen-melody");
    body["format"] = json!("ogg");
    let id = app.submit(&body).await;

    // The job on SQS is a version 2 message naming the model and melody,
    // as the task record in DynamoDB does.
    let aws = sound_creator_settings::Settings::from_lookup(|name| {
        deployment
            .env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
    })
    .unwrap()
    .aws;
    let backends = sound_creator_aws::AwsBackends::connect(&aws).await.unwrap();
    let task = backends
        .tasks
        .get(&sound_creator_core::task::TaskId::parse(&id).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        task.request.model.as_deref(),
        Some("facebook/musicgen-melody")
    );
    assert!(backends
        .uploads
        .get(&sound_creator_core::upload::UploadId::parse(&upload_id).unwrap())
        .await
        .unwrap()
        .is_some_and(|u| u.tenant.as_str() == "marketplace"));
    let queue =
        sound_creator_core::ports::QueueName::Jobs(sound_creator_core::task::ModelFamily::Music);
    let deliveries = backends
        .queue
        .receive(queue, 1, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(deliveries.len(), 1);
    assert!(
        deliveries[0].body.starts_with("{\"v\":2,"),
        "{}",
        deliveries[0].body
    );
    let job: sound_creator_core::messages::Job =
        sound_creator_core::messages::decode(&deliveries[0].body).unwrap();
    assert_eq!(job.model.as_deref(), Some("facebook/musicgen-melody"));
    assert_eq!(
        job.melody.map(|m| m.upload_id.to_string()),
        Some(upload_id.clone())
    );
    assert_eq!(job.format.as_str(), "ogg");

    // The default model's capabilities are not known to this API (a local
    // directory): it lets the melody through, and the worker decides.
    let (status, _, doc) = app
        .post("/v1/call", Some(TOKEN), &melody_task(&upload_id, &tiny))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_audio_task_runs_on_the_audio_queue_and_yields_a_16_khz_clip_in_s3() {
    let model = tiny_audiogen().display().to_string();
    let deployment = Deployment::new("audiogen", &[("AUDIO_GEN_MODEL", &model)]);
    let user = deployment.user("aws-audiogen");
    let app = deployment.serve();
    let (status, _, health) = app.get("/health", None).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    assert_eq!(health["models"]["audio"]["deployed"], true, "{health}");

    let mut body = task_body(&user, "a car horn in traffic", 0.4);
    body["type"] = json!("audio");
    let id = app.submit(&body).await;
    let doc = app.wait_final(&id, LONG).await;
    assert_eq!(doc["status"], "succeeded", "{doc}");
    let url = doc["outputs"][0]["url"].as_str().unwrap();
    assert!(url.contains(&deployment.var("S3_BUCKET")), "{url}");
    let (header, samples) = decode_wav(&app.download(url).await).unwrap();
    assert_eq!((header.sample_rate, header.channels), (16_000, 1));
    assert_eq!(samples.len(), 6400);
    let stats = wait_stats(&app, &user, 1).await;
    assert_eq!(stats["by_status"]["succeeded"], 1);
}
