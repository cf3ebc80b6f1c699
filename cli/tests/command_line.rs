//! The command line as a new user meets it: `generate`'s progress when
//! nobody watches a terminal, logs without colour codes in a file, the
//! binary starting from a fresh shell (no `LD_LIBRARY_PATH`), the settings
//! that the README documents doing what it says, and the repository's copy
//! of the contract.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{repo_root, tiny_model, App};

fn sound_creator() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sound-creator"));
    // What a user's shell would have: none of the harness's colour hints.
    command.env_remove("NO_COLOR").env_remove("CLICOLOR_FORCE");
    command
}

#[test]
fn generate_without_a_terminal_prints_plain_progress_lines_and_logs_without_colours() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("clip.wav");
    let output = sound_creator()
        .args([
            "generate",
            "--prompt",
            "a short test",
            "--duration",
            "1",
            "--seed",
            "3",
        ])
        .arg("--model")
        .arg(tiny_model())
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(out.metadata().unwrap().len() > 44, "a WAV with samples");

    let progress: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("decoding: step "))
        .collect();
    assert!(progress.len() >= 2, "{stderr}");
    assert!(progress.len() <= 11, "a line each tenth at most: {stderr}");
    let last = progress.last().unwrap();
    assert!(last.contains("(100%)"), "{stderr}");
    let steps = |line: &str| -> (usize, usize) {
        let field = line.split_whitespace().nth(2).unwrap();
        let (done, total) = field.split_once('/').unwrap();
        (done.parse().unwrap(), total.parse().unwrap())
    };
    let (done, total) = steps(last);
    assert_eq!(done, total, "{stderr}");
    assert!(
        progress.windows(2).all(|w| steps(w[0]).0 < steps(w[1]).0),
        "steps only go up: {stderr}"
    );
    // The log line of the finished clip is there, plain.
    assert!(stderr.contains("clip generated"), "{stderr}");
    assert!(
        !output.stderr.contains(&0x1b),
        "an escape code in output meant for a file: {stderr:?}"
    );
}

#[test]
fn the_binary_finds_libtorch_through_its_runpath_without_ld_library_path() {
    let binary = Path::new(env!("CARGO_BIN_EXE_sound-creator"));
    let libtorch = env!("SC_LIBTORCH_LIB");
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .unwrap();
    assert!(dynamic.status.success());
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    let runpath = dynamic
        .lines()
        .find(|l| l.contains("(RUNPATH)") || l.contains("(RPATH)"))
        .unwrap_or_else(|| panic!("no RUNPATH in {}:\n{dynamic}", binary.display()));
    assert!(runpath.contains(libtorch), "{runpath} lacks {libtorch}");

    // A fresh shell: no LD_LIBRARY_PATH; the settings table needs libtorch
    // loaded like every other command.
    let output = sound_creator()
        .arg("settings")
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("| `METRICS_ADDR` |"));
}

#[tokio::test(flavor = "multi_thread")]
async fn api_name_is_the_title_of_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let app = App::spawn(dir.path(), &[("API_NAME", "Sound Shop")]);
    let (_, _, doc) = app.get("/v1/openapi.json", None).await;
    assert_eq!(doc["info"]["title"], "Sound Shop", "{doc}");
}

#[test]
fn the_repository_copy_of_the_contract_is_the_shared_contract() {
    let ours = std::fs::read_to_string(repo_root().join("docs/api-contract.md")).unwrap();
    assert!(ours.starts_with("# sound-creator HTTP API contract"));
    // The shared original lives beside the checkouts of the people who
    // write the service; a clone elsewhere has only its own copy.
    let shared = repo_root()
        .ancestors()
        .map(|dir| dir.join("shared/api-contract.md"))
        .find(|path| path.exists());
    match shared {
        Some(path) => assert!(
            std::fs::read_to_string(&path).unwrap() == ours,
            "docs/api-contract.md differs from {}: copy it again",
            path.display()
        ),
        None => eprintln!(
            "no shared contract above {}; nothing to compare",
            repo_root().display()
        ),
    }
}
