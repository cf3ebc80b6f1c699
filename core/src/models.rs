//! The models a deployment serves: per family, which ids a request's
//! `model` may name, which one is the family's default, and what each can
//! do (sample rate, channels, melody, longest clip). This is the one source
//! of `GET /v1/models` and of the submit-time checks of `model`, `melody`
//! and `duration`.
//!
//! Where it is learned:
//! - a process that loads the models (`serve`) describes them from the
//!   generators' own [`ModelInfo`] ([`DeployedModel::loaded`]): the truth,
//!   device and precision included;
//! - an API that loads none (the Lambda function, `sound-creator api`) from
//!   the settings that name the deployed models, with the properties of the
//!   published AudioCraft checkpoints in [`CATALOG`]
//!   ([`DeployedModel::configured`]). A model the catalog does not know (a
//!   local directory) has unknown capabilities: its requests pass the API
//!   and the worker, which has loaded it, decides (`generation_rejected`).
//!
//! Nothing here loads a model or reads a file.

use std::collections::BTreeSet;

use crate::audio::ModelInfo;
use crate::family::ModelFamily;
use crate::media::OutputFormat;
use crate::settings::Limits;
use crate::view::{ModelDocument, ModelsDocument};

/// A published AudioCraft checkpoint, as the Hugging Face hub serves it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Checkpoint {
    pub id: &'static str,
    pub family: ModelFamily,
    pub sample_rate: u32,
    pub channels: u16,
    /// Conditions on a melody (the chroma of an uploaded clip).
    pub melody: bool,
    /// The longest clip it makes; `None`: longer than its 30 s window is
    /// made window by window (audiocraft's `extend_stride`).
    pub max_duration: Option<f64>,
}

const fn musicgen(id: &'static str, channels: u16, melody: bool) -> Checkpoint {
    Checkpoint {
        id,
        family: ModelFamily::Music,
        sample_rate: 32_000,
        channels,
        melody,
        max_duration: None,
    }
}

/// The published checkpoints sound-creator can serve, with their
/// `config.json` properties (EnCodec rate and channels; the melody models'
/// chroma conditioning).
pub const CATALOG: &[Checkpoint] = &[
    musicgen("facebook/musicgen-small", 1, false),
    musicgen("facebook/musicgen-medium", 1, false),
    musicgen("facebook/musicgen-large", 1, false),
    musicgen("facebook/musicgen-melody", 1, true),
    musicgen("facebook/musicgen-melody-large", 1, true),
    musicgen("facebook/musicgen-stereo-small", 2, false),
    musicgen("facebook/musicgen-stereo-medium", 2, false),
    musicgen("facebook/musicgen-stereo-large", 2, false),
    musicgen("facebook/musicgen-stereo-melody", 2, true),
    musicgen("facebook/musicgen-stereo-melody-large", 2, true),
    Checkpoint {
        id: "facebook/audiogen-medium",
        family: ModelFamily::Audio,
        sample_rate: 16_000,
        channels: 1,
        melody: false,
        max_duration: Some(Limits::AUDIO_MAX_DURATION),
    },
];

/// The published checkpoint with this hub id.
pub fn published(id: &str) -> Option<&'static Checkpoint> {
    CATALOG.iter().find(|c| c.id == id)
}

/// What the checks at submit time need to know of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Capabilities {
    pub sample_rate: u32,
    pub channels: u16,
    pub melody: bool,
    /// Its own limit, if any; `MAX_DURATION` (and AudioGen's 10 s) apply
    /// on top.
    pub max_duration: Option<f64>,
}

/// One model of one family that this deployment serves.
#[derive(Debug, Clone, PartialEq)]
pub struct DeployedModel {
    pub family: ModelFamily,
    /// The hub id or directory, as the setting names it: what `model` says.
    pub id: String,
    /// The family's model when a request names none.
    pub default: bool,
    /// `None` when this process cannot know (a local directory it did not
    /// load).
    pub capabilities: Option<Capabilities>,
    /// `cpu`, `cuda:0`, ...; `None` when not known here (`auto` on a
    /// process that did not load the model).
    pub device: Option<String>,
    /// `f32`, `f16` or `bf16`.
    pub dtype: Option<String>,
}

impl DeployedModel {
    /// A model this process has loaded, described by the generator itself.
    pub fn loaded(family: ModelFamily, default: bool, info: &ModelInfo) -> Self {
        let known = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Self {
            family,
            id: info.name.clone(),
            default,
            capabilities: Some(Capabilities {
                sample_rate: info.sample_rate,
                channels: info.channels,
                melody: info.melody,
                max_duration: info.max_duration,
            }),
            device: known(&info.device),
            dtype: known(&info.dtype),
        }
    }

    /// A model the settings name but this process does not load: its
    /// capabilities come from [`CATALOG`] when it is a published checkpoint;
    /// `device` and `dtype` are the workers' settings (`MODEL_DEVICE`
    /// `auto` is not known here).
    pub fn configured(
        family: ModelFamily,
        id: &str,
        default: bool,
        device: &str,
        dtype: &str,
    ) -> Self {
        Self {
            family,
            id: id.to_owned(),
            default,
            capabilities: published(id)
                .filter(|c| c.family == family)
                .map(|c| Capabilities {
                    sample_rate: c.sample_rate,
                    channels: c.channels,
                    melody: c.melody,
                    max_duration: c.max_duration,
                }),
            device: (!device.is_empty() && device != "auto").then(|| device.to_owned()),
            dtype: (!dtype.is_empty()).then(|| dtype.to_owned()),
        }
    }

    /// Whether it conditions on a melody; `None` when not known here.
    pub fn melody(&self) -> Option<bool> {
        self.capabilities.as_ref().map(|c| c.melody)
    }

    /// The longest clip a request for this model may ask for.
    pub fn max_duration(&self, limits: &Limits) -> f64 {
        let cap = limits.max_duration_for(self.family);
        match self.capabilities.as_ref().and_then(|c| c.max_duration) {
            Some(own) => cap.min(own),
            None => cap,
        }
    }

    pub fn document(&self, limits: &Limits) -> ModelDocument {
        let capabilities = self.capabilities.as_ref();
        ModelDocument {
            family: self.family,
            id: self.id.clone(),
            default: self.default,
            sample_rate: capabilities.map(|c| c.sample_rate),
            channels: capabilities.map(|c| c.channels),
            melody: capabilities.map(|c| c.melody),
            max_duration: self.max_duration(limits),
            formats: OutputFormat::ALL.to_vec(),
            device: self.device.clone(),
            dtype: self.dtype.clone(),
        }
    }
}

/// Every model of a deployment, in the order the settings name them (each
/// family's default first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DeployedModels {
    models: Vec<DeployedModel>,
}

impl DeployedModels {
    pub fn new(models: Vec<DeployedModel>) -> Self {
        Self { models }
    }

    pub fn all(&self) -> &[DeployedModel] {
        &self.models
    }

    pub fn default_for(&self, family: ModelFamily) -> Option<&DeployedModel> {
        self.models
            .iter()
            .find(|m| m.family == family && m.default)
            .or_else(|| self.models.iter().find(|m| m.family == family))
    }

    /// The model of `family` with this id.
    pub fn find(&self, family: ModelFamily, id: &str) -> Option<&DeployedModel> {
        self.models
            .iter()
            .find(|m| m.family == family && m.id == id)
    }

    /// The ids of `family`'s models, for messages.
    pub fn ids(&self, family: ModelFamily) -> Vec<&str> {
        self.models
            .iter()
            .filter(|m| m.family == family)
            .map(|m| m.id.as_str())
            .collect()
    }

    /// `GET /v1/models`: the models of the families deployed here.
    pub fn document(&self, limits: &Limits, deployed: &BTreeSet<ModelFamily>) -> ModelsDocument {
        ModelsDocument {
            models: self
                .models
                .iter()
                .filter(|m| deployed.contains(&m.family))
                .map(|m| m.document(limits))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_duration: f64) -> Limits {
        Limits {
            max_prompt_len: 100,
            max_duration,
            max_upload_bytes: 1024,
        }
    }

    #[test]
    fn the_catalog_has_each_published_checkpoint_once_with_its_properties() {
        let ids: BTreeSet<&str> = CATALOG.iter().map(|c| c.id).collect();
        assert_eq!(ids.len(), CATALOG.len());
        let melody: Vec<&str> = CATALOG.iter().filter(|c| c.melody).map(|c| c.id).collect();
        assert_eq!(
            melody,
            [
                "facebook/musicgen-melody",
                "facebook/musicgen-melody-large",
                "facebook/musicgen-stereo-melody",
                "facebook/musicgen-stereo-melody-large"
            ]
        );
        for c in CATALOG {
            assert_eq!(c.channels == 2, c.id.contains("stereo"), "{}", c.id);
        }
        assert_eq!(
            published("facebook/audiogen-medium").map(|c| c.sample_rate),
            Some(16_000)
        );
    }

    #[test]
    fn a_configured_model_takes_the_catalog_properties_or_none() {
        let melody = DeployedModel::configured(
            ModelFamily::Music,
            "facebook/musicgen-stereo-melody",
            false,
            "auto",
            "f16",
        );
        assert_eq!(melody.melody(), Some(true));
        assert_eq!(melody.capabilities.as_ref().map(|c| c.channels), Some(2));
        assert_eq!(melody.device, None, "auto is not known to an API");
        assert_eq!(melody.dtype.as_deref(), Some("f16"));
        let local =
            DeployedModel::configured(ModelFamily::Music, "/models/mine", true, "cuda", "f32");
        assert_eq!(local.capabilities, None);
        assert_eq!(local.device.as_deref(), Some("cuda"));
        // A checkpoint of the other family is not taken for one of this one.
        let wrong =
            DeployedModel::configured(ModelFamily::Music, "facebook/audiogen-medium", true, "", "");
        assert_eq!(wrong.capabilities, None);
    }

    #[test]
    fn the_longest_clip_is_the_family_cap_within_the_model_own_limit() {
        let long = limits(300.0);
        let music =
            DeployedModel::configured(ModelFamily::Music, "facebook/musicgen-small", true, "", "");
        assert_eq!(music.max_duration(&long), 300.0);
        let audio =
            DeployedModel::configured(ModelFamily::Audio, "facebook/audiogen-medium", true, "", "");
        assert_eq!(audio.max_duration(&long), 10.0);
        let info = ModelInfo {
            name: "tiny".into(),
            sample_rate: 32_000,
            channels: 1,
            frame_rate: 50.0,
            melody: false,
            max_duration: Some(40.88),
            device: "cpu".into(),
            gpu: None,
            dtype: "f32".into(),
        };
        let loaded = DeployedModel::loaded(ModelFamily::Music, true, &info);
        assert_eq!(loaded.max_duration(&long), 40.88);
        assert_eq!(loaded.max_duration(&limits(30.0)), 30.0);
        assert_eq!(loaded.device.as_deref(), Some("cpu"));
    }

    #[test]
    fn the_default_is_the_marked_one_and_ids_are_per_family() {
        let models = DeployedModels::new(vec![
            DeployedModel::configured(ModelFamily::Music, "facebook/musicgen-small", true, "", ""),
            DeployedModel::configured(
                ModelFamily::Music,
                "facebook/musicgen-melody",
                false,
                "",
                "",
            ),
            DeployedModel::configured(ModelFamily::Audio, "facebook/audiogen-medium", true, "", ""),
        ]);
        assert_eq!(
            models
                .default_for(ModelFamily::Music)
                .map(|m| m.id.as_str()),
            Some("facebook/musicgen-small")
        );
        assert!(models
            .find(ModelFamily::Audio, "facebook/musicgen-melody")
            .is_none());
        assert_eq!(models.ids(ModelFamily::Music).len(), 2);
        let deployed = [ModelFamily::Music].into_iter().collect();
        let doc = models.document(&limits(30.0), &deployed);
        assert_eq!(doc.models.len(), 2, "only deployed families are listed");
        assert_eq!(doc.models[1].melody, Some(true));
        assert_eq!(doc.models[0].formats, OutputFormat::ALL.to_vec());
    }
}
