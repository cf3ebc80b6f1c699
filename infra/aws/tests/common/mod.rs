//! Shared by the integration tests: the settings of the local test
//! environment (`tests/env/up.sh`), unique names so tests never share a
//! queue, bucket, table or tenant, and task fixtures.
//!
//! The tests never skip: without a running environment they fail and say
//! how to start one. They also refuse any endpoint that is not loopback, so
//! they can never touch a real AWS account.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use chrono::Utc;
use sound_creator_aws::AwsSettings;
use sound_creator_core::request::{GenerationParams, OutputFormat, TaskRequest};
use sound_creator_core::task::{CallbackState, ModelFamily, Task, TaskId, TaskStatus, Tenant};

const HOW_TO_START: &str =
    "the test environment is not running: start it with `bash tests/env/up.sh && source .data/test-env/env.sh` \
     (and stop it with `bash tests/env/down.sh`)";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn env_file() -> PathBuf {
    std::env::var_os("SC_TEST_ENV_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".data/test-env/env.sh"))
}

/// The variables of the test environment: the process environment when it
/// has been sourced, else the env file `up.sh` wrote.
pub fn test_env() -> HashMap<String, String> {
    let path = env_file();
    if std::env::var_os("AWS_ENDPOINT_URL").is_some()
        && std::env::var_os("SC_TEST_ENV_DIR").is_some()
    {
        assert!(
            path.exists(),
            "{HOW_TO_START} (this shell sourced {}, which has been torn down since)",
            path.display()
        );
        return std::env::vars().collect();
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{HOW_TO_START} (no {})", path.display()));
    text.lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Settings for one test: its own queue prefix, bucket and table.
pub fn settings() -> AwsSettings {
    settings_with(&[])
}

pub fn settings_with(overrides: &[(&str, &str)]) -> AwsSettings {
    let mut vars = test_env();
    let endpoint = vars
        .get("AWS_ENDPOINT_URL")
        .cloned()
        .unwrap_or_else(|| panic!("{HOW_TO_START} (AWS_ENDPOINT_URL unset)"));
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "refusing to run tests against {endpoint}: only a loopback emulator is allowed"
    );
    for name in ["SC_TEST_MOTO_PORT", "REDIS_PORT", "POSTGRES_PORT"] {
        let port: u16 = vars
            .get(name)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{HOW_TO_START} ({name} unset)"));
        let address = SocketAddr::from(([127, 0, 0, 1], port));
        assert!(
            TcpStream::connect_timeout(&address, Duration::from_millis(500)).is_ok(),
            "{HOW_TO_START} (nothing answers on {address} ({name}); did a previous run crash?)"
        );
    }
    let unique = unique("t");
    vars.insert("SQS_QUEUE_PREFIX".into(), format!("{unique}-"));
    vars.insert("S3_BUCKET".into(), unique.clone());
    vars.insert("DYNAMODB_TABLE".into(), unique);
    for (k, v) in overrides {
        vars.insert((*k).to_owned(), (*v).to_owned());
    }
    sound_creator_settings::Settings::from_lookup(|name| vars.get(name).cloned())
        .expect("test settings are valid")
        .aws
}

pub fn unique(prefix: &str) -> String {
    // The tail of a UUIDv7 is random; its head is the clock.
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}{}", &id[id.len() - 12..])
}

/// Takes one backend of the test environment down or brings it back.
pub fn backend(name: &str, action: &str) {
    let script = repo_root().join("tests/env/stop-start.sh");
    let vars = test_env();
    let status = Command::new("bash")
        .arg(&script)
        .arg(name)
        .arg(action)
        .envs(vars.iter().filter(|(k, _)| k.starts_with("SC_TEST_")))
        .status()
        .expect("bash runs");
    assert!(
        status.success(),
        "{} {name} {action} failed",
        script.display()
    );
}

pub fn task(tenant: &Tenant, samples: u8) -> Task {
    let request = TaskRequest {
        family: ModelFamily::Music,
        prompt: "lofi hip hop beat with warm piano".into(),
        duration: 8.0,
        samples,
        user_id: "user-42".into(),
        params: GenerationParams::default(),
        format: OutputFormat::Wav,
        normalization: Default::default(),
        model: None,
        melody: None,
        callback_url: None,
        ttl_seconds: None,
    };
    Task {
        id: TaskId::generate(),
        tenant: tenant.clone(),
        request_fingerprint: request.fingerprint(),
        request,
        status: TaskStatus::Queued,
        progress: 0.0,
        stages: vec![None; usize::from(samples)],
        stage_progress: vec![0.0; usize::from(samples)],
        stage_steps: Vec::new(),
        error: None,
        created_at: Utc::now(),
        started_at: None,
        completed_at: None,
        queue_deadline: None,
        retain_until: None,
        idempotency_key: None,
        callback: CallbackState::NotRequested,
        callback_url: None,
        jobs_enqueued: false,
        version: 1,
    }
}
