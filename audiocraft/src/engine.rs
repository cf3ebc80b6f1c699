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
//!
//! One engine serves every MusicGen checkpoint: text-only
//! (`MusicgenForConditionalGeneration`, [`MusicgenModel`]) or melody
//! (`MusicgenMelodyForConditionalGeneration`, [`MusicgenMelodyModel`]), mono
//! or stereo (8 codebooks interleaved left/right, 2-channel clips). A clip
//! longer than the 30 s window is generated window by window
//! ([`crate::windowing`]), its progress counted over all windows as one.

use std::path::Path;
use std::sync::Mutex;

use sound_creator_core::audio::{ClipRequest, GenerationError, ModelInfo, StepObserver};
use sound_creator_core::settings::Limits;
use tch::{nn, Device, Kind, Tensor};

use crate::batching::{
    all_generated, audio_generator_port, batch_progress, cut_clip, first_line, generate_error,
    group_by_params, options_for, torch_error, ClipSlot, GeneratedClip,
};
use crate::checkpoint::{resolve_model_dir, Checkpoint, LoadError};
use crate::config::MusicgenConfig;
use crate::cuda;
use crate::generation::{
    Continue, DelayPattern, GenerateError, GenerateOptions, MusicgenModel, StepMode,
};
use crate::hub::HubSettings;
use crate::musicgen_melody::{MelodyChroma, MusicgenMelodyConfig, MusicgenMelodyModel};
use crate::tokenizer::{EncodedPrompts, T5Tokenizer};
use crate::windowing::Windowing;

/// The model a checkpoint holds.
#[derive(Debug)]
enum Model {
    Text(MusicgenModel),
    Melody(MusicgenMelodyModel),
}

impl Model {
    fn step_mode(&self) -> StepMode {
        match self {
            Model::Text(m) => m.step_mode(),
            Model::Melody(m) => m.step_mode(),
        }
    }

    fn set_step_mode(&mut self, mode: StepMode) {
        match self {
            Model::Text(m) => m.set_step_mode(mode),
            Model::Melody(m) => m.set_step_mode(mode),
        }
    }

    /// Positions one generation may use beyond the codes' own (the melody
    /// model's prefix), for the window's length.
    fn max_positions(&self) -> i64 {
        match self {
            Model::Text(m) => m.decoder().max_positions(),
            Model::Melody(m) => m.decoder().max_positions(),
        }
    }

    /// Codes [batch, codebooks, frames], `prompt`'s frames first when given.
    /// A text model is only called with no melody.
    fn generate(
        &self,
        prompts: &EncodedPrompts,
        melodies: &[MelodyChroma],
        prompt: Option<&Tensor>,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        match self {
            Model::Text(m) => m.continue_codes(prompts, prompt, frames, options, on_step),
            Model::Melody(m) => m.generate(prompts, melodies, prompt, frames, options, on_step),
        }
    }

    fn logits(
        &self,
        prompts: &EncodedPrompts,
        melodies: &[MelodyChroma],
        codes: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        match self {
            Model::Text(m) => m.logits(prompts, codes),
            Model::Melody(m) => m.logits(prompts, melodies, codes),
        }
    }

    fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, tch::TchError> {
        match self {
            Model::Text(m) => m.decode_audio(codes),
            Model::Melody(m) => m.decode_audio(codes),
        }
    }
}

struct Loaded {
    model: Model,
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
    /// `chroma_length` of a melody checkpoint.
    chroma_length: Option<i64>,
    windowing: Windowing,
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

/// The seed of window `index` of a long clip: the request's seed for the
/// first (so a clip of one window is what it always was), then distinct
/// streams, the same on every run.
fn window_seed(seed: Option<u64>, index: usize) -> Option<u64> {
    seed.map(|s| s ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
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
        let raw: serde_json::Value = checkpoint.config()?;
        let melody_cfg: Option<MusicgenMelodyConfig> = if MusicgenMelodyConfig::describes(&raw) {
            Some(checkpoint.config()?)
        } else {
            None
        };
        let cfg: MusicgenConfig = match &melody_cfg {
            Some(m) => m.base.clone(),
            None => checkpoint.config()?,
        };
        let tokenizer = T5Tokenizer::from_file(&checkpoint.tokenizer_file()?)
            .map_err(|e| model_err(e.to_string()))?;

        let mut vs = nn::VarStore::new(device);
        let mut built = match &melody_cfg {
            Some(m) => Model::Melody(MusicgenMelodyModel::new(vs.root(), m).map_err(model_err)?),
            None => Model::Text(MusicgenModel::new(vs.root(), &cfg).map_err(model_err)?),
        };
        checkpoint.load_into(&mut vs)?;
        if kind != Kind::Float {
            let mut decoder = vs.root() / "decoder";
            decoder.set_kind(kind);
        }
        // After the kind change: converting later would undo the fusion.
        match &mut built {
            Model::Text(m) => m.fuse(),
            Model::Melody(m) => m.fuse(),
        }
        .map_err(|e| model_err(first_line(&e)))?;
        let frame_rate = cfg.audio_encoder.frame_rate() as f64;
        let gpu = cuda::device_name(device);
        let channels = cfg.decoder.audio_channels.max(1);
        // The window is the decoder's positions less the delays and, for the
        // melody model, its prefix (the chroma frames and a long prompt's
        // tokens).
        let delays = cfg.decoder.num_codebooks / channels;
        let max_frames = built.max_positions()
            - delays
            - melody_cfg
                .as_ref()
                .map_or(0, |m| m.chroma_length + crate::decoder::PREFIX_POSITIONS);
        let windowing = Windowing::musicgen(frame_rate, max_frames);
        let info = ModelInfo {
            name: model.to_owned(),
            sample_rate: cfg.audio_encoder.sampling_rate,
            channels: u16::try_from(channels).unwrap_or(1),
            frame_rate,
            melody: melody_cfg.is_some(),
            // Longer clips are generated window by window: only
            // MAX_DURATION caps them.
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
            channels,
            melody = info.melody,
            window_frames = windowing.window,
            step_mode = ?built.step_mode(),
            "MusicGen loaded"
        );
        Ok(Self {
            loaded: Mutex::new(Loaded {
                model: built,
                tokenizer,
                _vs: vs,
            }),
            info,
            cfg,
            chroma_length: melody_cfg.as_ref().map(|m| m.chroma_length),
            windowing,
            device,
            kind,
        })
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

    /// How clips longer than one window are generated.
    pub fn windowing(&self) -> Windowing {
        self.windowing
    }

    /// Replaces the windowing (tests run the algorithm on short windows).
    pub fn set_windowing(&mut self, windowing: Windowing) {
        self.windowing = windowing;
    }

    /// Longest clip, in seconds, one window holds; longer ones are
    /// generated window by window.
    pub fn window_duration(&self) -> f64 {
        self.windowing.window as f64 / self.info.frame_rate
    }

    /// Decoding steps a generation of `frames` frames after `prompt` known
    /// ones takes.
    fn steps_for(&self, frames: i64, prompt: i64) -> usize {
        let channels = self.cfg.decoder.audio_channels.max(1);
        let delays = self.cfg.decoder.num_codebooks / channels;
        let pattern = DelayPattern::for_channels(
            frames.max(delays),
            self.cfg.decoder.num_codebooks,
            channels,
            0,
        );
        (pattern.steps() - prompt).max(0) as usize
    }

    /// The melody conditioning of each clip of a group for `window` of a
    /// clip planned as `windows` windows.
    fn melodies_for(
        &self,
        requests: &[&ClipRequest],
        window: &crate::windowing::Window,
        windows: usize,
    ) -> Vec<MelodyChroma> {
        let Some(length) = self.chroma_length else {
            return vec![MelodyChroma(None); requests.len()];
        };
        let length = length as usize;
        let rate = f64::from(sound_creator_core::audio::MELODY_SAMPLE_RATE);
        let start = (window.start as f64 / self.info.frame_rate * rate) as usize;
        let span = (self.windowing.window as f64 / self.info.frame_rate * rate) as usize;
        requests
            .iter()
            .map(|r| match &r.melody {
                None => MelodyChroma(None),
                Some(m) if windows == 1 => MelodyChroma::whole(&m.samples, length),
                Some(m) => MelodyChroma::window(&m.samples, start, span, length),
            })
            .collect()
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
            if request.duration > Limits::MAX_DURATION_CEILING {
                return Err(GenerationError::Rejected(format!(
                    "duration {:.2} s exceeds the {} s any deployment allows",
                    request.duration,
                    Limits::MAX_DURATION_CEILING
                )));
            }
            if let Some(melody) = &request.melody {
                if melody.samples.is_empty()
                    || melody.sample_rate != sound_creator_core::audio::MELODY_SAMPLE_RATE
                {
                    return Err(GenerationError::Rejected(format!(
                        "a melody must be non-empty {} Hz audio, got {} samples at {} Hz",
                        sound_creator_core::audio::MELODY_SAMPLE_RATE,
                        melody.samples.len(),
                        melody.sample_rate
                    )));
                }
            }
        }
        let groups = group_by_params(batch);
        // A group is generated to its longest clip, in the windows of that.
        let frames_of = |members: &[usize]| {
            members
                .iter()
                .map(|&i| self.frames_for(batch[i].duration))
                .max()
                .unwrap_or(1)
        };
        let steps_of = |members: &[usize]| -> usize {
            self.windowing
                .plan(frames_of(members))
                .iter()
                .map(|w| self.steps_for(w.frames, w.prompt))
                .sum()
        };
        let total: usize = groups.iter().map(|(_, m)| steps_of(m)).sum();

        let loaded = self.lock()?;
        let mut results: Vec<Option<GeneratedClip>> = (0..batch.len()).map(|_| None).collect();
        let mut done_before = 0usize;
        for (params, members) in &groups {
            let requests: Vec<&ClipRequest> = members.iter().map(|&i| &batch[i]).collect();
            let prompts: Vec<&str> = requests.iter().map(|r| r.prompt.as_str()).collect();
            let encoded = loaded.encode(&prompts)?;
            let plan = self.windowing.plan(frames_of(members));
            let mut clip_codes: Option<Tensor> = None;
            let mut prompt: Option<Tensor> = None;
            for (index, window) in plan.iter().enumerate() {
                let melodies = self.melodies_for(&requests, window, plan.len());
                let options = options_for(params, window_seed(params.seed, index));
                let mut on_step = batch_progress(observer, done_before, total);
                let codes = loaded
                    .model
                    .generate(
                        &encoded,
                        &melodies,
                        prompt.as_ref(),
                        window.frames,
                        &options,
                        &mut on_step,
                    )
                    .map_err(generate_error)?;
                done_before += self.steps_for(window.frames, window.prompt);
                let new = codes
                    .f_narrow(2, window.prompt, window.new_frames())
                    .map_err(torch_error)?;
                clip_codes = Some(match clip_codes {
                    None => new,
                    Some(before) => Tensor::f_cat(&[before, new], 2).map_err(torch_error)?,
                });
                // The next window's context: this one's frames after the stride.
                let stride = self.windowing.stride;
                prompt = (window.frames > stride)
                    .then(|| codes.f_narrow(2, stride, window.frames - stride))
                    .transpose()
                    .map_err(torch_error)?;
            }
            let codes = clip_codes.ok_or_else(|| {
                GenerationError::Engine("a clip was planned without windows".to_owned())
            })?;
            let audio = loaded.model.decode_audio(&codes).map_err(torch_error)?;
            for (row, &i) in members.iter().enumerate() {
                let slot = ClipSlot {
                    row: row as i64,
                    request: &batch[i],
                    frames: self.frames_for(batch[i].duration),
                    sample_rate: self.info.sample_rate,
                    channels: self.info.channels,
                };
                results[i] = Some(cut_clip(&audio, &codes, &slot)?);
            }
        }
        all_generated(results)
    }

    /// Teacher-forced logits for the parity tests: `codes` [batch, codebooks, len].
    pub fn logits(&self, prompts: &[&str], codes: &Tensor) -> Result<Tensor, GenerationError> {
        self.logits_with_melody(prompts, &self.no_melodies(prompts.len()), codes)
    }

    /// [`MusicGenEngine::logits`] of a melody model, each prompt with its
    /// melody (a text model takes only `MelodyChroma(None)`).
    pub fn logits_with_melody(
        &self,
        prompts: &[&str],
        melodies: &[MelodyChroma],
        codes: &Tensor,
    ) -> Result<Tensor, GenerationError> {
        self.check_melodies(prompts.len(), melodies)?;
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        loaded
            .model
            .logits(&encoded, melodies, codes)
            .map_err(torch_error)
    }

    /// The melody model's decoder prefix for `prompts` and `melodies`,
    /// without guidance: what `transformers` returns as
    /// `encoder_hidden_states`.
    pub fn melody_condition(
        &self,
        prompts: &[&str],
        melodies: &[MelodyChroma],
    ) -> Result<Tensor, GenerationError> {
        self.check_melodies(prompts.len(), melodies)?;
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        match &loaded.model {
            Model::Melody(m) => m.condition(&encoded, melodies, false).map_err(torch_error),
            Model::Text(_) => Err(GenerationError::Rejected(format!(
                "model {} does not condition on a melody",
                self.info.name
            ))),
        }
    }

    /// Codes only (no audio) for `prompts`, for tests and the benchmark.
    pub fn generate_codes(
        &self,
        prompts: &[&str],
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerationError> {
        self.generate_codes_with_melody(
            prompts,
            &self.no_melodies(prompts.len()),
            frames,
            options,
            on_step,
        )
    }

    /// [`MusicGenEngine::generate_codes`] with a melody per prompt, in one
    /// window.
    pub fn generate_codes_with_melody(
        &self,
        prompts: &[&str],
        melodies: &[MelodyChroma],
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerationError> {
        self.check_melodies(prompts.len(), melodies)?;
        let loaded = self.lock()?;
        let encoded = loaded.encode(prompts)?;
        loaded
            .model
            .generate(&encoded, melodies, None, frames, options, on_step)
            .map_err(generate_error)
    }

    fn no_melodies(&self, n: usize) -> Vec<MelodyChroma> {
        vec![MelodyChroma(None); n]
    }

    fn check_melodies(
        &self,
        prompts: usize,
        melodies: &[MelodyChroma],
    ) -> Result<(), GenerationError> {
        if melodies.len() != prompts {
            return Err(GenerationError::Rejected(format!(
                "{} melodies for {prompts} prompts",
                melodies.len()
            )));
        }
        if !self.info.melody && melodies.iter().any(|m| m.0.is_some()) {
            return Err(GenerationError::Rejected(format!(
                "model {} does not condition on a melody",
                self.info.name
            )));
        }
        Ok(())
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
        loaded.model.decode_audio(codes).map_err(torch_error)
    }
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

audio_generator_port!(MusicGenEngine);
