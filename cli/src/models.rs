//! Loading the generators a deployment serves. A family that is deployed
//! but whose model cannot be loaded stops the process with a message that
//! says how to point it at a local checkpoint: the service never pretends to
//! generate audio it cannot.

use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sound_creator_audiocraft::audiogen::AudioGenEngine;
use sound_creator_audiocraft::batching::CodesGenerator;
use sound_creator_audiocraft::cli::{parse_device, parse_dtype};
use sound_creator_audiocraft::engine::MusicGenEngine;
use sound_creator_audiocraft::hub::HubSettings;
use sound_creator_core::audio::AudioGenerator;
use sound_creator_core::task::ModelFamily;
use sound_creator_settings::{ModelSettings, Settings};

/// Flags that override the model settings.
#[derive(Args, Debug, Clone, Default)]
pub struct ModelArgs {
    /// auto (CUDA when available), cpu, cuda or cuda:N (MODEL_DEVICE).
    #[arg(long)]
    pub device: Option<String>,
    /// Weights precision: f32, f16 or bf16; f16/bf16 are meant for CUDA (MODEL_DTYPE).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Jobs generated together in one batched forward pass (WORKER_MAX_BATCH).
    #[arg(long)]
    pub max_batch: Option<usize>,
    /// Run every decoding step eagerly instead of replaying a captured CUDA
    /// graph (MODEL_CUDA_GRAPHS=false).
    #[arg(long)]
    pub no_cuda_graphs: bool,
}

impl ModelArgs {
    pub fn apply(&self, settings: &mut Settings) {
        if let Some(device) = &self.device {
            settings.models.device = device.clone();
        }
        if let Some(dtype) = &self.dtype {
            settings.models.dtype = dtype.clone();
        }
        if let Some(max_batch) = self.max_batch {
            settings.worker.max_batch = max_batch.max(1);
        }
        if self.no_cuda_graphs {
            settings.models.cuda_graphs = false;
        }
    }
}

/// The device `MODEL_DEVICE` names; `auto` is CUDA when available.
pub fn device(models: &ModelSettings) -> anyhow::Result<tch::Device> {
    match models.device.as_str() {
        "auto" => Ok(tch::Device::cuda_if_available()),
        other => parse_device(other),
    }
}

/// The hub the model crate downloads from, as the settings describe it.
pub fn hub_settings(models: &ModelSettings) -> HubSettings {
    HubSettings {
        endpoint: models.hub.endpoint.clone(),
        token: models.hub.token.as_ref().map(|t| t.expose().to_owned()),
        offline: models.hub.offline,
    }
}

/// Every model of `family` (`MUSIC_GEN_MODEL` and `MUSIC_GEN_MODELS`, or
/// the AudioGen pair), the default first.
pub fn load_generators(
    family: ModelFamily,
    models: &ModelSettings,
) -> anyhow::Result<Vec<Arc<dyn AudioGenerator>>> {
    models
        .models_for(family)
        .into_iter()
        .map(|model| load_model(family, model, models))
        .collect()
}

fn load_model(
    family: ModelFamily,
    model: &str,
    models: &ModelSettings,
) -> anyhow::Result<Arc<dyn AudioGenerator>> {
    let variable = ModelSettings::variable_for(family);
    let device = device(models)?;
    let kind = parse_dtype(&models.dtype)?;
    tracing::info!(%family, model, ?device, ?kind, cuda_available = tch::Cuda::is_available(), "loading model");
    let cache_dir = &models.cache_model_dir;
    let hub = hub_settings(models);
    let mut engine: Box<dyn CodesGenerator> = match family {
        ModelFamily::Music => Box::new(
            MusicGenEngine::load(model, cache_dir, &hub, device, kind).with_context(|| {
                format!(
                    "could not load the {family} model {model:?} ({variable}). Point {variable} at a local checkpoint \
                     directory in the Hugging Face layout (config.json, model.safetensors, tokenizer.json) — for a quick \
                     local run, {variable}=tests/fixtures/tiny-musicgen — or at a hub id on a machine that can reach the hub \
                     (downloads go to CACHE_MODEL_DIR={})",
                    cache_dir.display()
                )
            })?,
        ),
        // AudioCraft's own export (`state_dict.bin`,
        // `compression_state_dict.bin`) plus its T5 (`t5/` beside them, or
        // the hub repository its xp.cfg names).
        ModelFamily::Audio => Box::new(
            AudioGenEngine::load(model, cache_dir, &hub, device, kind).with_context(|| {
                format!(
                    "could not load the {family} model {model:?} ({variable}). Point {variable} at a local directory \
                     holding AudioCraft's state_dict.bin and compression_state_dict.bin (and a t5/ directory with \
                     the T5 in the Hugging Face layout, else it is downloaded) — for a quick local run, \
                     {variable}=tests/fixtures/tiny-audiogen — or at a hub id such as facebook/audiogen-medium \
                     on a machine that can reach the hub (downloads go to CACHE_MODEL_DIR={})",
                    cache_dir.display()
                )
            })?,
        ),
    };
    engine.use_cuda_graphs(models.cuda_graphs);
    let info = engine.info();
    tracing::info!(
        %family,
        model,
        device = %info.device,
        gpu = info.gpu.as_deref().unwrap_or("-"),
        dtype = %info.dtype,
        step_mode = ?engine.decoding_step_mode(),
        "model ready"
    );
    Ok(Arc::from(engine as Box<dyn AudioGenerator>))
}
