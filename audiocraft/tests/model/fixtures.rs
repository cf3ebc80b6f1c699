//! The committed tiny fixtures and their recorded references, as every
//! model test reads them: one place that knows where they live, how an
//! engine loads one offline, and how the reference files are laid out.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use sound_creator_audiocraft::generation::GenerateOptions;
use sound_creator_audiocraft::hub::HubSettings;
use sound_creator_audiocraft::sampling::Decoding;
use sound_creator_audiocraft::MusicGenEngine;
use tch::{Device, Kind, Tensor};

/// `tests/fixtures/<name>` of the repository.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// MusicGen on the CPU from the checkpoint in `dir`, never touching the hub.
pub fn musicgen(dir: &Path, kind: Kind) -> MusicGenEngine {
    let cache = tempfile::tempdir().expect("tempdir");
    MusicGenEngine::load(
        dir.to_str().expect("utf-8 path"),
        cache.path(),
        &HubSettings::offline(),
        Device::Cpu,
        kind,
    )
    .unwrap_or_else(|e| panic!("load {}: {e}", dir.display()))
}

/// What a fixture script recorded with the reference implementation:
/// `reference/reference.safetensors` and the prompts of `reference.json`.
pub struct Reference {
    pub prompts: Vec<String>,
    pub tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn of(fixture_dir: &Path) -> Self {
        let dir = fixture_dir.join("reference");
        let tensors = Tensor::read_safetensors(dir.join("reference.safetensors"))
            .expect("reference tensors")
            .into_iter()
            .collect();
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("reference.json")).expect("reference.json"),
        )
        .expect("json");
        let prompts = json["prompts"]
            .as_array()
            .expect("prompts")
            .iter()
            .map(|p| p.as_str().expect("str").to_owned())
            .collect();
        Self { prompts, tensors }
    }
}

impl std::ops::Index<&str> for Reference {
    type Output = Tensor;

    fn index(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("the reference has no {name}"))
    }
}

/// Largest absolute difference, in f64 (broadcasting as libtorch does).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a.to_kind(Kind::Double) - b.to_kind(Kind::Double))
        .abs()
        .max()
        .double_value(&[])
}

/// Argmax decoding with `guidance_scale`, as the references were recorded.
pub fn greedy(guidance_scale: f64) -> GenerateOptions {
    GenerateOptions {
        decoding: Decoding::Greedy,
        guidance_scale,
        seed: None,
    }
}
