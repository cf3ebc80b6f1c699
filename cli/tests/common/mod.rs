//! Test harness: starts the real `sound-creator serve` binary on port 0 with
//! its own data directory and the tiny MusicGen checkpoint, and a real HTTP
//! callback receiver, all on loopback.

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};

pub const TOKEN: &str = "test-marketplace-token";
pub const OTHER_TOKEN: &str = "acme-token";
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("cli/ has a parent")
        .to_path_buf()
}

pub fn tiny_model() -> PathBuf {
    repo_root().join("tests/fixtures/tiny-musicgen")
}

pub fn tiny_audiogen() -> PathBuf {
    repo_root().join("tests/fixtures/tiny-audiogen")
}

pub struct App {
    pub base: String,
    /// The line `serve` printed when it was ready.
    pub banner: String,
    pub data_dir: PathBuf,
    child: Child,
    env: Vec<(String, String)>,
    subcommand: &'static str,
    extra_args: Vec<String>,
    /// Where stderr goes when the test reads the service's log (appended
    /// to across restarts); inherited otherwise.
    pub log: Option<PathBuf>,
    pub client: reqwest::Client,
}

/// The test settings plus `extra_env` (which wins).
fn test_env(extra_env: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("MARKETPLACE_TOKEN".into(), TOKEN.into()),
        ("API_KEYS".into(), format!("acme:{OTHER_TOKEN}")),
        ("MUSIC_GEN_MODEL".into(), tiny_model().display().to_string()),
        ("MODEL_DEVICE".into(), "cpu".into()),
        // No test may download a model: the default AudioGen is then
        // left out at once (DEPLOYED_TYPES unset), as on a machine
        // without its weights.
        ("HF_HUB_OFFLINE".into(), "1".into()),
        ("CALLBACK_ALLOWED_HOSTS".into(), "127.0.0.1".into()),
        ("CALLBACK_RETRY_BASE_MS".into(), "200".into()),
        ("WEBHOOK_SECRET".into(), WEBHOOK_SECRET.into()),
        ("RUST_LOG".into(), "info".into()),
    ];
    for (k, v) in extra_env {
        env.retain(|(name, _)| name != k);
        env.push((k.to_string(), v.to_string()));
    }
    env
}

impl App {
    /// Starts `sound-creator serve` with the test settings plus `extra_env`.
    pub fn spawn(data_dir: &Path, extra_env: &[(&str, &str)]) -> App {
        Self::spawn_as("serve", data_dir, extra_env)
    }

    /// `serve` (everything) or `api` (the API alone: nothing runs the jobs).
    pub fn spawn_as(subcommand: &'static str, data_dir: &Path, extra_env: &[(&str, &str)]) -> App {
        Self::spawn_full(subcommand, &[], data_dir, extra_env)
    }

    /// Any subcommand with extra arguments (e.g. `--backend aws`).
    pub fn spawn_full(
        subcommand: &'static str,
        extra_args: &[&str],
        data_dir: &Path,
        extra_env: &[(&str, &str)],
    ) -> App {
        let args = extra_args.iter().map(|a| a.to_string()).collect();
        Self::start(
            subcommand,
            args,
            data_dir.to_path_buf(),
            test_env(extra_env),
            None,
        )
    }

    /// `serve` with its log (stderr, no colours) kept in `log`.
    pub fn spawn_logged(data_dir: &Path, extra_env: &[(&str, &str)], log: PathBuf) -> App {
        Self::start(
            "serve",
            Vec::new(),
            data_dir.to_path_buf(),
            test_env(extra_env),
            Some(log),
        )
    }

    /// The service's log so far (see [`App::spawn_logged`]).
    pub fn log_text(&self) -> String {
        self.log
            .as_ref()
            .and_then(|l| std::fs::read_to_string(l).ok())
            .unwrap_or_default()
    }

    /// Sends SIGTERM, what ECS and Docker send before SIGKILL.
    pub fn terminate(&self) {
        terminate(&self.child);
    }

    /// The exit status, once the process has exited within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, within)
    }

    fn start(
        subcommand: &'static str,
        extra_args: Vec<String>,
        data_dir: PathBuf,
        env: Vec<(String, String)>,
        log: Option<PathBuf>,
    ) -> App {
        let mut command = Command::new(env!("CARGO_BIN_EXE_sound-creator"));
        command
            .args([subcommand, "--port", "0", "--host", "127.0.0.1"])
            .args(&extra_args)
            .arg("--data-dir")
            .arg(&data_dir)
            .env_remove("MARKETPLACE_CALLBACK")
            .env_remove("DEPLOYED_TYPES")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some(log) = &log {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("log file");
            command.stderr(file).env("NO_COLOR", "1");
        }
        for (k, v) in &env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("start sound-creator serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the listening line");
        let base = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("serve did not say where it listens: {line:?}"))
            .to_owned();
        App {
            base,
            banner: line.trim_end().to_owned(),
            data_dir,
            child,
            env,
            subcommand,
            extra_args,
            log,
            client: reqwest::Client::new(),
        }
    }

    /// Stops the process (SIGKILL: nothing gets a chance to clean up) and
    /// starts it again on the same data directory.
    pub fn restart(self) -> App {
        let subcommand = self.subcommand;
        self.restart_as(subcommand)
    }

    pub fn restart_as(mut self, subcommand: &'static str) -> App {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (data_dir, env, args, log) = (
            self.data_dir.clone(),
            std::mem::take(&mut self.env),
            std::mem::take(&mut self.extra_args),
            self.log.take(),
        );
        Self::start(subcommand, args, data_dir, env, log)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_parts(req.send().await.expect("request")).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        into_parts(req.send().await.expect("request")).await
    }

    /// The bytes behind a presigned download URL (no bearer token: the
    /// signature is the credential).
    pub async fn download(&self, url: &str) -> Vec<u8> {
        let response = self.client.get(url).send().await.expect("download");
        assert!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        response.bytes().await.expect("download body").to_vec()
    }

    pub async fn submit(&self, body: &Value) -> String {
        let (status, _, doc) = self.post("/v1/call", Some(TOKEN), body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{doc}");
        doc["task_id"].as_str().expect("task_id").to_owned()
    }

    /// Polls the result until the task is final.
    pub async fn wait_final(&self, task_id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, _, doc) = self
                .get(&format!("/v1/result/{task_id}"), Some(TOKEN))
                .await;
            assert_eq!(status, StatusCode::OK, "{doc}");
            let state = doc["status"].as_str().unwrap_or_default().to_owned();
            if !matches!(state.as_str(), "queued" | "running") {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} still {state} after {within:?}: {doc}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, task_id: &str, wanted: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (_, _, doc) = self
                .get(&format!("/v1/result/{task_id}"), Some(TOKEN))
                .await;
            if doc["status"] == wanted {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "task {task_id} never became {wanted}: {doc}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn into_parts(resp: reqwest::Response) -> (StatusCode, HeaderMap, Value) {
    let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
    let mut headers = HeaderMap::new();
    for (k, v) in resp.headers() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(v.as_bytes()),
        ) {
            headers.insert(name, value);
        }
    }
    let bytes = resp.bytes().await.expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| json!({"raw": String::from_utf8_lossy(&bytes)}));
    (status, headers, body)
}

pub fn music(prompt: &str, duration: f64) -> Value {
    json!({"type": "music", "prompt": prompt, "duration": duration, "user_id": "user-42", "params": {"seed": 7}})
}

/// One callback the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub webhook_id: String,
    pub timestamp: i64,
    pub signature: String,
    pub body: String,
    pub answered: u16,
}

/// A real HTTP server on loopback that records callbacks and answers 500
/// to the first `fail_first` of them.
#[derive(Clone)]
pub struct CallbackReceiver {
    pub url: String,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl CallbackReceiver {
    pub async fn start(fail_first: usize) -> CallbackReceiver {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let state = (received.clone(), fail_first);
        let router = axum::Router::new()
            .route(
                "/hook",
                post(
                    |State((log, fail_first)): State<(Arc<Mutex<Vec<Received>>>, usize)>,
                     headers: HeaderMap,
                     body: String| async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let mut log = log.lock().expect("lock");
                        let answered = if log.len() < fail_first { 500 } else { 200 };
                        log.push(Received {
                            webhook_id: header("webhook-id"),
                            timestamp: header("webhook-timestamp").parse().unwrap_or_default(),
                            signature: header("webhook-signature"),
                            body,
                            answered,
                        });
                        StatusCode::from_u16(answered).expect("status")
                    },
                ),
            )
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        CallbackReceiver { url, received }
    }

    pub fn calls(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }

    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let calls = self.calls();
            if calls.len() >= count {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "only {} callbacks after {within:?}",
                calls.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Sends `child` SIGTERM, what ECS sends a task it stops (scale-in,
/// deployment, instance draining) and Docker before SIGKILL.
fn terminate(child: &Child) {
    // The shell's own `kill`: no procps needed.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .expect("run sh -c kill");
    assert!(status.success(), "kill -TERM failed");
}

/// `child`'s exit status, once it has exited within `within`.
fn wait_exit(child: &mut Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn counts<'a>(items: impl Iterator<Item = &'a str>) -> HashMap<&'a str, usize> {
    let mut map = HashMap::new();
    for item in items {
        *map.entry(item).or_insert(0) += 1;
    }
    map
}

/// A background `sound-creator` process that serves no HTTP (a worker, the
/// completion loop), its stderr kept in a file for the test to read.
pub struct Process {
    child: Child,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(args: &[&str], env: &[(&str, &str)], log: PathBuf) -> Process {
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_sound-creator"));
        command
            .args(args)
            .stdout(Stdio::null())
            .stderr(file)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1");
        for (k, v) in env {
            command.env(k, v);
        }
        Process {
            child: command.spawn().expect("spawn sound-creator"),
            log,
        }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM, what ECS and Docker send before SIGKILL.
    pub fn terminate(&self) {
        terminate(&self.child);
    }

    /// The exit status, once the process has exited within `within`.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        wait_exit(&mut self.child, within)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `sound-creator` to completion (e.g. `provision`) and asserts success.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sound-creator"));
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().expect("run sound-creator");
    assert!(
        out.status.success(),
        "sound-creator {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The AWS-mode test environment (moto, redis-server, PostgreSQL) started
/// by `tests/env/up.sh`. Its absence is a failure, never a silent skip.
pub fn require_aws_env() {
    for name in ["AWS_ENDPOINT_URL", "REDIS_PORT", "POSTGRES_PORT"] {
        assert!(
            std::env::var(name).is_ok_and(|v| !v.is_empty()),
            "{name} is not set: start the test servers first with `bash tests/env/up.sh && source .data/test-env/env.sh` (tests/run-all.sh does this)"
        );
    }
}

/// Names of queues, bucket and table unique to one test, so tests share the
/// servers without sharing state.
pub fn unique_aws_names(label: &str) -> Vec<(String, String)> {
    let suffix = format!(
        "{label}{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
            % 0xffff_ffff
    );
    vec![
        ("SQS_QUEUE_PREFIX".into(), format!("{suffix}-")),
        ("S3_BUCKET".into(), format!("bucket-{suffix}")),
        ("DYNAMODB_TABLE".into(), format!("tasks-{suffix}")),
    ]
}

/// An HTTP server on loopback that answers as the ECS container agent's
/// task-protection endpoint does (`PUT $ECS_AGENT_URI/task-protection/v1/state`)
/// and records each `ProtectionEnabled` it is sent, in order. The real agent
/// only runs inside an ECS task.
pub struct FakeEcsAgent {
    /// What the worker gets as `ECS_AGENT_URI`.
    pub uri: String,
    states: Arc<Mutex<Vec<bool>>>,
}

impl FakeEcsAgent {
    pub async fn start() -> FakeEcsAgent {
        let states: Arc<Mutex<Vec<bool>>> = Arc::default();
        let router = axum::Router::new()
            .route(
                "/api/task/task-protection/v1/state",
                axum::routing::put(
                    |State(states): State<Arc<Mutex<Vec<bool>>>>,
                     axum::Json(body): axum::Json<Value>| async move {
                        let enabled = body["ProtectionEnabled"].as_bool().unwrap_or(false);
                        states.lock().expect("lock").push(enabled);
                        axum::Json(json!({"protection": {
                            "ProtectionEnabled": enabled,
                            "ExpirationDate": "2030-01-01T00:00:00Z",
                            "TaskArn": "arn:aws:ecs:us-east-1:000000000000:task/workers/0123"
                        }}))
                    },
                ),
            )
            .with_state(states.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri = format!("http://{}/api/task", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, router).await.expect("serve") });
        FakeEcsAgent { uri, states }
    }

    pub fn states(&self) -> Vec<bool> {
        self.states.lock().expect("lock").clone()
    }

    /// Waits until the recorded states are `want`.
    pub async fn wait_for(&self, want: &[bool], within: Duration) {
        let deadline = Instant::now() + within;
        while self.states() != want {
            assert!(
                Instant::now() < deadline,
                "the agent was sent {:?}, not {want:?}",
                self.states()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
