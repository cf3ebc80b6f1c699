//! [`MusicGenEngine`]: the MusicGen model behind the workspace's
//! [`AudioGenerator`] port.
//!
//! Loads a Hugging Face checkpoint (hub id or local directory) once, then
//! serves batches of clip requests: one batched forward pass per decoding
//! step for all prompts of a batch that share their sampling settings,
//! generated to the longest clip and trimmed per clip. The model sits behind
//! a mutex because a libtorch module is not meant to be driven from two
//! threads at once; callers run `generate` on a blocking thread.
//!
//! Precision: the decoder runs in the requested dtype (f32, f16 or bf16);
//! the T5 encoder (run once per batch, and known to overflow in f16) and the
//! EnCodec decoder stay in f32, and softmax/sampling are always f32.
//!
//! On CUDA the decoding steps are captured as CUDA graphs where the build
//! can ([`crate::generation::StepMode`]); [`MusicGenEngine::set_cuda_graphs`]
//! turns that off.

use std::path::Path;
use std::sync::Mutex;

use sound_creator_core::audio::{
    AudioGenerator, Clip, ClipRequest, GenerationError, ModelInfo, StepControl, StepObserver,
};
use sound_creator_core::request::GenerationParams;
use tch::{nn, Device, Kind, Tensor};

use crate::checkpoint::{resolve_model_dir, Checkpoint, LoadError};
use crate::config::MusicgenConfig;
use crate::cuda;
use crate::generation::{Continue, GenerateError, GenerateOptions, MusicgenModel, StepMode};
use crate::hub::HubSettings;
use crate::sampling::Decoding;
use crate::tokenizer::{EncodedPrompts, T5Tokenizer};

struct Loaded {
    model: MusicgenModel,
    tokenizer: T5Tokenizer,
    /// Owns the variables the model's tensors alias.
    _vs: nn::VarStore,
}

impl Loaded {
    /// A prompt the tokenizer refuses is the request's fault, not the engine's.
    fn encode(&self, prompts: &[&str]) -> Result<EncodedPrompts, GenerationError> {
        self.tokenizer
            .encode_batch(prompts)
            .map_err(|e| GenerationError::Rejected(e.to_string()))
    }
}

/// MusicGen on libtorch. `Send + Sync`; one generation runs at a time.
pub struct MusicGenEngine {
    loaded: Mutex<Loaded>,
    info: ModelInfo,
    cfg: MusicgenConfig,
    device: Device,
    kind: Kind,
}

impl std::fmt::Debug for MusicGenEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MusicGenEngine")
            .field("info", &self.info)
            .field("device", &self.device)
            .field("kind", &self.kind)
            .finish()
    }
}

/// A generated clip with the codes it was decoded from.
#[derive(Debug)]
pub struct GeneratedClip {
    pub clip: Clip,
    /// `[codebook][frame]`, delay pattern removed.
    pub codes: Vec<Vec<i64>>,
}

impl MusicGenEngine {
    /// Loads `model` (a hub id such as `facebook/musicgen-small`, found in
    /// `cache_dir` or downloaded from `hub`, or a local checkpoint directory)
    /// onto `device`, with the decoder in `kind`.
    pub fn load(
        model: &str,
        cache_dir: &Path,
        hub: &HubSettings,
        device: Device,
        kind: Kind,
    ) -> Result<Self, LoadError> {
        let model_err = |reason: String| LoadError::Model {
            model: model.to_owned(),
            reason,
        };
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16) {
            return Err(model_err(format!(
                "dtype {kind:?} is not supported (use f32, f16 or bf16)"
            )));
        }
        let dir = resolve_model_dir(model, cache_dir, hub)?;
        let checkpoint = Checkpoint::open(&dir)?;
        let cfg: MusicgenConfig = checkpoint.config()?;
        let tokenizer = T5Tokenizer::from_file(&checkpoint.tokenizer_file()?)
            .map_err(|e| model_err(e.to_string()))?;

        let mut vs = nn::VarStore::new(device);
        let mut built = MusicgenModel::new(vs.root(), &cfg).map_err(model_err)?;
        checkpoint.load_into(&mut vs)?;
        if kind != Kind::Float {
            let mut decoder = vs.root() / "decoder";
            decoder.set_kind(kind);
        }
        // After the kind change: converting later would undo the fusion.
        built.fuse().map_err(|e| model_err(first_line(&e)))?;
        let frame_rate = cfg.audio_encoder.frame_rate() as f64;
        let gpu = cuda::device_name(device);
        let info = ModelInfo {
            name: model.to_owned(),
            sample_rate: cfg.audio_encoder.sampling_rate,
            channels: u16::try_from(cfg.audio_encoder.audio_channels).unwrap_or(1),
            frame_rate,
            // No melody conditioning and no windowing yet: one window, as
            // long as the decoder's positions allow (set below).
            melody: false,
            max_duration: None,
            device: device_label(device),
            gpu: gpu.clone(),
            dtype: dtype_label(kind).to_owned(),
        };
        tracing::info!(
            model,
            dir = %dir.display(),
            device = %info.device,
            gpu = gpu.as_deref().unwrap_or("-"),
            dtype = %info.dtype,
            step_mode = ?built.step_mode(),
            "MusicGen loaded"
        );
        let mut engine = Self {
            loaded: Mutex::new(Loaded {
                model: built,
                tokenizer,
                _vs: vs,
            }),
            info,
            cfg,
            device,
            kind,
        };
        engine.info.max_duration = Some(engine.max_duration());
        Ok(engine)
    }

    pub fn config(&self) -> &MusicgenConfig {
        &self.cfg
    }

    /// Whether decoding steps on CUDA are captured as graphs (the default
    /// where the build has the CUDA shim). Off, every step runs eagerly.
    pub fn set_cuda_graphs(&mut self, on: bool) {
        self.set_step_mode(StepMode::for_device(self.device, on));
    }

    /// How decoding steps run; [`StepMode::DeviceIndexed`] runs the graphs'
    /// step eagerly on any device (for tests).
    pub fn set_step_mode(&mut self, mode: StepMode) {
        if let Ok(loaded) = self.loaded.get_mut() {
            loaded.model.set_step_mode(mode);
        }
    }

    pub fn step_mode(&self) -> Option<StepMode> {
        self.loaded.lock().ok().map(|l| l.model.step_mode())
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Loaded>, GenerationError> {
        self.loaded
            .lock()
            .map_err(|_| GenerationError::Engine("model lock poisoned".to_owned()))
    }

    /// Frames (decoding steps of output) for `duration` seconds.
    pub fn frames_for(&self, duration: f64) -> i64 {
        (duration * self.info.frame_rate).ceil() as i64
    }

    /// Longest clip, in seconds, the decoder's positions allow.
    pub fn max_duration(&self) -> f64 {
        let frames = self.cfg.decoder.max_position_embeddings - self.cfg.decoder.num_codebooks;
        frames as f64 / self.info.frame_rate
    }

    /// Like [`AudioGenerator::generate`], also returning each clip's codes.
    pub fn generate_with_codes(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<GeneratedClip>, GenerationError> {
        for request in batch {
            if request.melody.is_some() && !self.info.melody {
                return Err(GenerationError::Rejected(format!(
                    "model {} does not condition on a melody",
                    self.info.name
                )));
            }
            if !(request.duration.is_finite() && request.duration > 0.0) {
                return Err(GenerationError::Rejected(format!(
                    "duration {} is not a positive number",
                    request.duration
                )));
            }
            if request.duration > self.max_duration() {
                return Err(GenerationError::Rejected(format!(
                    "duration {:.2} s exceeds this model's limit of {:.2} s",
                    request.duration,
                    self.max_duration()
                )));
            }
        }
        // One forward pass serves clips with the same settings; clips with
        // different ones run one group after another.
        let mut groups: Vec<(GenerationParams, Vec<usize>)> = Vec::new();
        for (i, request) in batch.iter().enumerate() {
            match groups.iter_mut().find(|(p, _)| *p == request.params) {
                Some((_, members)) => members.push(i),
                None => groups.push((request.params.clone(), vec![i])),
            }
        }
        // A group is generated to its longest clip.
        let frames_of = |members: &[usize]| {
            members
                .iter()
                .map(|&i| self.frames_for(batch[i].duration))
                .max()
                .unwrap_or(1)
        };
        let steps_of = |members: &[usize]| {
            let frames = frames_of(members);
            (frames.max(self.cfg.decoder.num_codebooks) + self.cfg.decoder.num_codebooks - 1)
                as usize
        };
        let total: usize = groups.iter().map(|(_, m)| steps_of(m)).sum();

        let loaded = self.lock()?;
        let mut results: Vec<Option<GeneratedClip>> = (0..batch.len()).map(|_| None).collect();
        let mut done_before = 0usize;
        for (params, members) in &groups {
            let prompts: Vec<&str> = members.iter().map(|&i| batch[i].prompt.as_str()).collect();
            let encoded = loaded.encode(&prompts)?;
            let frames = frames_of(members);
            let options = GenerateOptions {
                decoding: Decoding::from_params(params.temperature, params.top_k, params.top_p),
                guidance_scale: params.cfg_coef,
                seed: params.seed,
            };
            let mut on_step =
                |done: usize, _steps: usize| match observer.on_step(done_before + done, total) {
                    StepControl::Continue => Continue::Yes,
                    StepControl::Stop => Continue::Stop,
                };
            let codes = loaded
                .model
                .generate(&encoded, frames, &options, &mut on_step)
                .map_err(map_generate_error)?;
            done_before += steps_of(members);
            let audio = loaded.model.decode_audio(&codes).map_err(engine_error)?;
            for (row, &i) in members.iter().enumerate() {
                let clip_frames = self.frames_for(batch[i].duration);
                let samples = (batch[i].duration * f64::from(self.info.sample_rate)).round() as i64;
                let wave = audio
                    .f_get(row as i64)
                    .and_then(|a| a.f_select(0, 0))
                    .map_err(engine_error)?;
                let samples = samples.min(wave.size()[0]);
                let wave = wave.f_narrow(0, 0, samples).map_err(engine_error)?;
                let codes_i = codes
                    .f_get(row as i64)
                    .and_then(|c| c.f_narrow(1, 0, clip_frames))
                    .map_err(engine_error)?;
                results[i] = Some(GeneratedClip {
                    clip: Clip {
                        samples: Vec::<f32>::try_from(wave.f_contiguous().map_err(engine_error)?)
                            .map_err(engine_error)?,
                        sample_rate: self.info.sample_rate,
                        channels: 1,
                    },
                    codes: Vec::<Vec<i64>>::try_from(codes_i.f_contiguous().map_err(engine_error)?)
                        .map_err(engine_error)?,
                });
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.ok_or_else(|| {
                    GenerationError::Engine("a clip of the batch was not generated".to_owned())
                })
            })
            .collect()
    }

    /// Teacher-forced logits for the parity tests: `codes` [batch, codebooks, len].
    pub fn logits(&self, prompts: &[&str], codes: &Tensor) -> Result<Tensor, GenerationError> {
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        loaded.model.logits(&encoded, codes).map_err(engine_error)
    }

    /// Codes only (no audio) for `prompts`, for tests and the benchmark.
    pub fn generate_codes(
        &self,
        prompts: &[&str],
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerationError> {
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        loaded
            .model
            .generate(&encoded, frames, options, on_step)
            .map_err(map_generate_error)
    }

    /// Token ids and mask the tokenizer produces for `prompts`.
    pub fn tokenize(&self, prompts: &[&str]) -> Result<(Tensor, Tensor), GenerationError> {
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        Ok((encoded.input_ids, encoded.attention_mask))
    }

    /// EnCodec audio [batch, channels, samples] for `codes`.
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, GenerationError> {
        let loaded = self.lock()?;
        loaded.model.decode_audio(codes).map_err(engine_error)
    }
}

/// libtorch appends a C++ backtrace; the first line is the useful part.
fn first_line(err: &tch::TchError) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

fn engine_error(err: tch::TchError) -> GenerationError {
    GenerationError::Engine(first_line(&err))
}

/// `cpu`, `cuda:0`, ... as the `--device` flag spells them.
pub fn device_label(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".to_owned(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// `f32`, `f16`, `bf16` as the `--dtype` flag spells them.
pub fn dtype_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Half => "f16",
        Kind::BFloat16 => "bf16",
        Kind::Float => "f32",
        _ => "other",
    }
}

fn map_generate_error(err: GenerateError) -> GenerationError {
    match err {
        GenerateError::Canceled => GenerationError::Canceled,
        GenerateError::Rejected(reason) => GenerationError::Rejected(reason),
        GenerateError::Torch(err) => engine_error(err),
    }
}

impl AudioGenerator for MusicGenEngine {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }

    fn generate(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError> {
        Ok(self
            .generate_with_codes(batch, observer)?
            .into_iter()
            .map(|g| g.clip)
            .collect())
    }
}
