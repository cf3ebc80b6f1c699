//! Loading the generators a deployment serves. A family that is deployed
//! but whose model cannot be loaded stops the process with a message that
//! says how to point it at a local checkpoint: the service never pretends to
//! generate audio it cannot.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use sound_creator_audiocraft::cli::{parse_device, parse_dtype};
use sound_creator_audiocraft::engine::MusicGenEngine;
use sound_creator_core::audio::AudioGenerator;
use sound_creator_core::settings::Settings;
use sound_creator_core::task::ModelFamily;

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// auto (CUDA when available), cpu, cuda or cuda:N.
    #[arg(long, env = "MODEL_DEVICE", default_value = "auto")]
    pub device: String,
    /// Weights precision: f32, f16 or bf16 (f16/bf16 are meant for CUDA).
    #[arg(long, env = "MODEL_DTYPE", default_value = "f32")]
    pub dtype: String,
    /// Jobs generated together in one batched forward pass.
    #[arg(long, env = "WORKER_MAX_BATCH", default_value_t = 1)]
    pub max_batch: usize,
    /// Capture each decoding step once as a CUDA graph and replay it (CUDA
    /// only); `false` runs every step eagerly.
    #[arg(long, env = "MODEL_CUDA_GRAPHS", default_value_t = true, action = clap::ArgAction::Set)]
    pub cuda_graphs: bool,
}

impl ModelArgs {
    pub fn device(&self) -> anyhow::Result<tch::Device> {
        match self.device.as_str() {
            "auto" => Ok(tch::Device::cuda_if_available()),
            other => parse_device(other),
        }
    }

    pub fn kind(&self) -> anyhow::Result<tch::Kind> {
        parse_dtype(&self.dtype)
    }
}

/// The setting that names a family's model.
pub fn model_variable(family: ModelFamily) -> &'static str {
    match family {
        ModelFamily::Music => "MUSIC_GEN_MODEL",
        ModelFamily::Audio => "AUDIO_GEN_MODEL",
    }
}

pub fn load_generator(
    family: ModelFamily,
    settings: &Settings,
    args: &ModelArgs,
) -> anyhow::Result<Arc<dyn AudioGenerator>> {
    let model = match family {
        ModelFamily::Music => &settings.music_gen_model,
        ModelFamily::Audio => &settings.audio_gen_model,
    };
    let variable = model_variable(family);
    let device = args.device()?;
    let kind = args.kind()?;
    tracing::info!(%family, model, ?device, ?kind, cuda_available = tch::Cuda::is_available(), "loading model");
    let mut engine = MusicGenEngine::load(model, Path::new(&settings.cache_model_dir), device, kind).with_context(|| {
        format!(
            "could not load the {family} model {model:?} ({variable}). Point {variable} at a local checkpoint \
             directory in the Hugging Face layout (config.json, model.safetensors, tokenizer.json) — for a quick \
             local run, {variable}=tests/fixtures/tiny-musicgen — or at a hub id on a machine that can reach the hub \
             (downloads go to CACHE_MODEL_DIR={})",
            settings.cache_model_dir
        )
    })?;
    engine.set_cuda_graphs(args.cuda_graphs);
    let info = engine.info();
    tracing::info!(
        %family,
        model,
        device = %info.device,
        gpu = info.gpu.as_deref().unwrap_or("-"),
        dtype = %info.dtype,
        step_mode = ?engine.step_mode(),
        "model ready"
    );
    Ok(Arc::new(engine))
}
