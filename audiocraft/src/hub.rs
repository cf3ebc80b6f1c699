//! Finding a model directory for `MUSIC_GEN_MODEL`: a local directory, a copy
//! already in the cache, or a download from the Hugging Face hub.
//!
//! The hub is only contacted when neither a local directory nor a complete
//! cached copy exists. Downloads go to `<cache_dir>/<org>--<name>/`, each file
//! written to a temporary name and renamed when complete, so an interrupted
//! download never leaves a file that looks finished. [`HubSettings`] says
//! where the hub is (`HF_ENDPOINT`), the token for gated or private
//! repositories (`HF_TOKEN`, never logged) and whether the network is
//! forbidden (`HF_HUB_OFFLINE`); the settings crate fills it. This module is
//! blocking on purpose: it runs once at worker start-up, before any job is
//! taken.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checkpoint::{
    shard_names, LoadError, CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE, WEIGHTS_INDEX_FILE,
};

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Files that are useful but whose absence does not make a model unusable.
const OPTIONAL_FILES: [&str; 2] = ["tokenizer_config.json", "generation_config.json"];

/// Returns a directory holding the checkpoint named by `model`.
///
/// `model` is either an existing local directory, used as is, or a hub id
/// such as `facebook/musicgen-small`, looked up in `cache_dir` (both the
/// Hugging Face cache layout `models--<org>--<name>/snapshots/<rev>/` and the
/// plain `<org>--<name>/` layout this function downloads into) and
/// downloaded from the hub `settings` name when absent.
pub fn resolve_model_dir(
    model: &str,
    cache_dir: &Path,
    settings: &HubSettings,
) -> Result<PathBuf, LoadError> {
    let local = Path::new(model);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let id = HubId::parse(model)?;
    if let Some(dir) = find_cached(&id, cache_dir) {
        tracing::info!(model, dir = %dir.display(), "using cached model");
        return Ok(dir);
    }
    Hub::new(settings).download(&id, cache_dir)
}

/// Returns a directory holding every one of `files`, for repositories that
/// are not in the Hugging Face MusicGen layout (AudioCraft's own
/// `state_dict.bin` + `compression_state_dict.bin`): `model` as a local
/// directory, a complete copy in `cache_dir`, or a download of the files
/// into `<cache_dir>/<org>--<name>/`, with a progress bar on a terminal.
pub fn resolve_repo_files(
    model: &str,
    cache_dir: &Path,
    settings: &HubSettings,
    files: &[&str],
) -> Result<PathBuf, LoadError> {
    let local = Path::new(model);
    if local.is_dir() {
        return Ok(local.to_path_buf());
    }
    let id = HubId::parse(model)?;
    let has_all = |dir: &Path| files.iter().all(|f| dir.join(f).is_file());
    if let Some(dir) = find_cached_with(&id, cache_dir, &has_all) {
        tracing::info!(model, dir = %dir.display(), "using cached model");
        return Ok(dir);
    }
    let hub = Hub::new(settings);
    if hub.offline {
        return Err(LoadError::Download {
            url: hub.url(&id, files.first().copied().unwrap_or_default()),
            reason: format!(
                "HF_HUB_OFFLINE is set and {} holds no complete copy",
                cache_dir.display()
            ),
        });
    }
    let dir = id.plain_dir(cache_dir);
    std::fs::create_dir_all(&dir).map_err(|e| LoadError::io(&dir, e))?;
    tracing::info!(model = %id, dir = %dir.display(), endpoint = %hub.endpoint, "downloading model");
    for file in files {
        hub.require(&id, &dir, file)?;
    }
    Ok(dir)
}

/// Where and how to reach the hub.
#[derive(Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL, e.g. `https://huggingface.co`.
    pub endpoint: String,
    /// Bearer token for gated or private repositories.
    pub token: Option<String>,
    /// Never touch the network.
    pub offline: bool,
}

impl HubSettings {
    /// Local directories and the cache only: for tests and tools that must
    /// never reach the network.
    pub fn offline() -> Self {
        HubSettings {
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            token: None,
            offline: true,
        }
    }
}

/// Hand-written so that the token never reaches a log line.
impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

/// A validated `<org>/<name>` repository id.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HubId {
    org: String,
    name: String,
}

impl HubId {
    fn parse(model: &str) -> Result<Self, LoadError> {
        let invalid = || LoadError::Model {
            model: model.to_owned(),
            reason: "not an existing directory, nor a hub id of the form <org>/<name>; \
                     use a local model directory or a hub id such as facebook/musicgen-small"
                .to_owned(),
        };
        let (org, name) = model.split_once('/').ok_or_else(invalid)?;
        let valid_part = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if valid_part(org) && valid_part(name) {
            Ok(HubId {
                org: org.to_owned(),
                name: name.to_owned(),
            })
        } else {
            Err(invalid())
        }
    }

    fn plain_dir(&self, cache_dir: &Path) -> PathBuf {
        cache_dir.join(format!("{}--{}", self.org, self.name))
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.org, self.name)
    }
}

/// A complete copy in `cache_dir`, preferring the Hugging Face cache's
/// `refs/main` snapshot, then any complete snapshot, then the plain layout.
fn find_cached(id: &HubId, cache_dir: &Path) -> Option<PathBuf> {
    find_cached_with(id, cache_dir, &is_complete)
}

/// [`find_cached`] with another test of completeness.
fn find_cached_with(
    id: &HubId,
    cache_dir: &Path,
    is_complete: &dyn Fn(&Path) -> bool,
) -> Option<PathBuf> {
    let repo_dir_name = format!("models--{}--{}", id.org, id.name);
    // `cache_dir` may be HF_HOME (with a `hub/` inside) or the hub cache itself.
    for hf_repo in [
        cache_dir.join(&repo_dir_name),
        cache_dir.join("hub").join(&repo_dir_name),
    ] {
        let snapshots = hf_repo.join("snapshots");
        if let Ok(rev) = std::fs::read_to_string(hf_repo.join("refs").join("main")) {
            let dir = snapshots.join(rev.trim());
            if is_complete(&dir) {
                return Some(dir);
            }
        }
        if let Ok(entries) = std::fs::read_dir(&snapshots) {
            let mut dirs: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            dirs.sort();
            if let Some(dir) = dirs.into_iter().find(|d| is_complete(d)) {
                return Some(dir);
            }
        }
    }
    let plain = id.plain_dir(cache_dir);
    is_complete(&plain).then_some(plain)
}

/// Whether a directory has everything a checkpoint needs (not whether the
/// files are sound; `Checkpoint::open` checks that).
fn is_complete(dir: &Path) -> bool {
    if !dir.join(CONFIG_FILE).is_file() || !dir.join(TOKENIZER_FILE).is_file() {
        return false;
    }
    if dir.join(WEIGHTS_FILE).is_file() {
        return true;
    }
    let index = dir.join(WEIGHTS_INDEX_FILE);
    index.is_file()
        && shard_names(&index).is_ok_and(|shards| shards.iter().all(|s| dir.join(s).is_file()))
}

/// Hub connection settings, read once from the environment.
struct Hub {
    endpoint: String,
    token: Option<String>,
    offline: bool,
    agent: ureq::Agent,
}

/// Outcome of one file download.
enum Fetched {
    Done,
    /// The hub answered 404: the file does not exist in this repository.
    Absent,
}

impl Hub {
    fn new(settings: &HubSettings) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(Duration::from_secs(15)))
            // A stalled transfer should fail rather than hang start-up forever;
            // a whole 2.4 GB download may still take long, so no global limit.
            .timeout_recv_body(Some(Duration::from_secs(120)))
            .http_status_as_error(false)
            .user_agent(concat!(
                "sound-creator-audiocraft/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .into();
        Hub {
            endpoint: settings.endpoint.trim_end_matches('/').to_owned(),
            token: settings.token.clone(),
            offline: settings.offline,
            agent,
        }
    }

    fn url(&self, id: &HubId, file: &str) -> String {
        format!("{}/{}/resolve/main/{}", self.endpoint, id, file)
    }

    /// Downloads whatever of the checkpoint is missing from the plain cache
    /// directory and returns that directory.
    fn download(&self, id: &HubId, cache_dir: &Path) -> Result<PathBuf, LoadError> {
        if self.offline {
            return Err(LoadError::Download {
                url: self.url(id, CONFIG_FILE),
                reason: format!(
                    "HF_HUB_OFFLINE is set and {} holds no complete copy",
                    cache_dir.display()
                ),
            });
        }
        let dir = id.plain_dir(cache_dir);
        std::fs::create_dir_all(&dir).map_err(|e| LoadError::io(&dir, e))?;
        tracing::info!(model = %id, dir = %dir.display(), endpoint = %self.endpoint, "downloading model");

        self.require(id, &dir, CONFIG_FILE)?;
        if !dir.join(WEIGHTS_FILE).is_file() && !dir.join(WEIGHTS_INDEX_FILE).is_file() {
            if let Fetched::Absent = self.fetch(id, &dir, WEIGHTS_FILE)? {
                self.require(id, &dir, WEIGHTS_INDEX_FILE)?;
            }
        }
        let index = dir.join(WEIGHTS_INDEX_FILE);
        if !dir.join(WEIGHTS_FILE).is_file() && index.is_file() {
            for shard in shard_names(&index)? {
                self.require(id, &dir, &shard)?;
            }
        }
        self.require(id, &dir, TOKENIZER_FILE)?;
        for file in OPTIONAL_FILES {
            if let Fetched::Absent = self.fetch(id, &dir, file)? {
                tracing::debug!(model = %id, file, "optional file not on the hub");
            }
        }
        Ok(dir)
    }

    /// Like [`Hub::fetch`], but a 404 is an error.
    fn require(&self, id: &HubId, dir: &Path, file: &str) -> Result<(), LoadError> {
        match self.fetch(id, dir, file)? {
            Fetched::Done => Ok(()),
            Fetched::Absent => Err(LoadError::Download {
                url: self.url(id, file),
                reason: "not found on the hub (wrong model id?)".to_owned(),
            }),
        }
    }

    /// Downloads `file` into `dir` unless it is already there.
    fn fetch(&self, id: &HubId, dir: &Path, file: &str) -> Result<Fetched, LoadError> {
        let target = dir.join(file);
        if target.is_file() {
            return Ok(Fetched::Done);
        }
        let url = self.url(id, file);
        let failed = |reason: String| LoadError::Download {
            url: url.clone(),
            reason,
        };

        let mut request = self.agent.get(&url);
        if let Some(token) = &self.token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let response = request.call().map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        match status.as_u16() {
            200 => {}
            404 => return Ok(Fetched::Absent),
            401 | 403 => {
                let hint = "gated or private model: accept its licence on the hub and set HF_TOKEN";
                return Err(failed(format!("HTTP {status} ({hint})")));
            }
            _ => return Err(failed(format!("HTTP {status}"))),
        }
        let total = response
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());

        let partial = dir.join(format!(".{file}.{}.part", std::process::id()));
        let result = write_body(response.into_body().into_reader(), &partial, file, total)
            .map_err(|e| failed(format!("writing {}: {e}", partial.display())))
            .and_then(|written| match total {
                Some(total) if total != written => Err(failed(format!(
                    "connection closed after {written} of {total} bytes"
                ))),
                _ => Ok(()),
            })
            .and_then(|()| {
                std::fs::rename(&partial, &target).map_err(|e| LoadError::io(&target, e))
            });
        if result.is_err() {
            // Best effort: a leftover part file is harmless, only wasted disk.
            let _ = std::fs::remove_file(&partial);
        }
        result.map(|()| Fetched::Done)
    }
}

/// Streams a response body to `path`, with a progress bar when a person is
/// watching stderr. Returns the number of bytes written.
fn write_body(
    mut body: impl Read,
    path: &Path,
    label: &str,
    total: Option<u64>,
) -> std::io::Result<u64> {
    let progress = if std::io::stderr().is_terminal() {
        let bar = match total {
            Some(total) => indicatif::ProgressBar::new(total),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(label.to_owned());
        Some(bar)
    } else {
        None
    };

    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut buffer = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buffer[..n])?;
        written += n as u64;
        if let Some(bar) = &progress {
            bar.set_position(written);
        }
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    if let Some(bar) = progress {
        bar.finish_and_clear();
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_org_slash_name() {
        assert_eq!(
            HubId::parse("facebook/musicgen-small").ok(),
            Some(HubId {
                org: "facebook".into(),
                name: "musicgen-small".into()
            })
        );
        for bad in ["musicgen-small", "a/b/c", "../x", "a/..", "/abs", "a/"] {
            assert!(HubId::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn a_complete_plain_cache_directory_is_found_without_network() {
        let cache = tempfile::tempdir().unwrap();
        let id = HubId::parse("org/model").unwrap();
        let dir = id.plain_dir(cache.path());
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(find_cached(&id, cache.path()), None);
        for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
            std::fs::write(dir.join(file), b"{}").unwrap();
        }
        assert_eq!(find_cached(&id, cache.path()), Some(dir));
    }

    #[test]
    fn the_hugging_face_cache_snapshot_of_refs_main_is_preferred() {
        let cache = tempfile::tempdir().unwrap();
        let id = HubId::parse("org/model").unwrap();
        let repo = cache.path().join("hub").join("models--org--model");
        let snapshot = repo.join("snapshots").join("abc123");
        std::fs::create_dir_all(&snapshot).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs").join("main"), "abc123\n").unwrap();
        for file in [CONFIG_FILE, TOKENIZER_FILE, WEIGHTS_FILE] {
            std::fs::write(snapshot.join(file), b"{}").unwrap();
        }
        assert_eq!(find_cached(&id, cache.path()), Some(snapshot));
    }
}
