//! `kill -9` of `sound-creator serve` (embedded mode) while jobs are
//! mid-generation, then a restart on the same data directory: every task
//! still ends with one output set, one stats row and one webhook id. The
//! moment of the kill is read off the worker's own log (its "generating"
//! line for the eighth task), not guessed from a status poll, so each run
//! kills at the same point of the work. The AWS-mode counterpart is in
//! `aws_mode.rs`.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use common::{music, App, CallbackReceiver, TOKEN};
use serde_json::json;

const TASKS: usize = 20;
const KILL_AT: usize = 8;
const LONG: Duration = Duration::from_secs(300);

/// Tasks whose generation the log shows started, in order.
fn started(log: &str, ids: &[String]) -> Vec<String> {
    let mut seen = Vec::new();
    for line in log.lines().filter(|l| l.contains("generating")) {
        if let Some(id) = ids.iter().find(|id| line.contains(id.as_str())) {
            if !seen.contains(id) {
                seen.push(id.clone());
            }
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_mid_generation_loses_and_doubles_nothing() {
    let receiver = CallbackReceiver::start(0).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let data = dir.path().join("data");
    let app = App::spawn_logged(
        &data,
        &[("MARKETPLACE_CALLBACK", receiver.url.as_str())],
        log.clone(),
    );

    let mut ids = Vec::new();
    for i in 0..TASKS {
        let mut body = music(&format!("killed mid generation {i}"), 1.0);
        body["user_id"] = json!("kill-9");
        ids.push(app.submit(&body).await);
    }

    let deadline = Instant::now() + LONG;
    loop {
        let begun = started(&app.log_text(), &ids);
        if begun.len() >= KILL_AT {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} tasks started generating: {}",
            begun.len(),
            app.log_text()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // SIGKILL, then the same data directory again.
    let app = app.restart();
    let relog = app.log_text();
    let begun = started(&relog, &ids);
    assert!(begun.len() >= KILL_AT, "{relog}");

    for id in &ids {
        let doc = app.wait_final(id, LONG).await;
        assert_eq!(doc["status"], "succeeded", "{doc}");
        let outputs = doc["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "one output set: {doc}");
        let bytes = app.download(outputs[0]["url"].as_str().unwrap()).await;
        assert!(bytes.starts_with(b"RIFF"), "a WAV file for {id}");
    }

    // One stats row per task.
    let deadline = Instant::now() + LONG;
    loop {
        let (status, _, stats) = app.get("/v1/stats?user_id=kill-9", Some(TOKEN)).await;
        assert_eq!(status, StatusCode::OK, "{stats}");
        if stats["requests"] == json!(TASKS) {
            assert_eq!(stats["by_status"]["succeeded"], json!(TASKS), "{stats}");
            break;
        }
        assert!(
            stats["requests"].as_u64().unwrap_or_default() < TASKS as u64,
            "more stats rows than tasks: {stats}"
        );
        assert!(
            Instant::now() < deadline,
            "stats never reached {TASKS}: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // One webhook id per task, and one for each task: a delivery repeated
    // across the kill carries the same id.
    let want: BTreeSet<String> = ids.iter().map(|id| format!("msg_{id}")).collect();
    let deadline = Instant::now() + LONG;
    loop {
        let got: BTreeSet<String> = receiver.calls().into_iter().map(|c| c.webhook_id).collect();
        assert!(got.is_subset(&want), "callbacks for unknown ids: {got:?}");
        if got == want {
            break;
        }
        if Instant::now() >= deadline {
            let missing: Vec<&String> = want.difference(&got).collect();
            let log = app.log_text();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| missing.iter().any(|m| l.contains(&m["msg_".len()..])))
                .collect();
            panic!(
                "{} of {TASKS} tasks called back; missing {missing:?}; their log lines:\n{}",
                got.len(),
                lines.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut per_task: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for call in receiver.calls() {
        let doc: serde_json::Value = serde_json::from_str(&call.body).unwrap();
        let task = doc["task_id"].as_str().unwrap().to_owned();
        per_task.entry(task).or_default().insert(call.webhook_id);
    }
    assert_eq!(per_task.len(), TASKS);
    assert!(per_task.values().all(|ids| ids.len() == 1), "{per_task:?}");
}
