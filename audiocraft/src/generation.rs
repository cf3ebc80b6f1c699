//! MusicGen text-to-codes generation: the codebook delay pattern, batched
//! classifier-free guidance and the decoding loop.
//!
//! Follows "Simple and Controllable Music Generation" (Copet et al., 2023),
//! section 2.2 ("delay" interleaving), as implemented by Hugging Face
//! `transformers` (`MusicgenForConditionalGeneration.generate` and
//! `MusicgenForCausalLM.build_delay_pattern_mask`/`apply_delay_pattern_mask`):
//! codebook k is shifted right by k+1 positions behind a pad/bos column, so a
//! clip of F frames takes F + K - 1 decoding steps; positions outside a
//! codebook's window are forced to the pad code whatever is sampled. With a
//! guidance scale above 1 the unconditional half of the batch sees the text
//! encoder output replaced by zeros (before `enc_to_dec_proj`) with an
//! all-zero attention mask, and both halves run in one forward pass.
//!
//! The decoding loop takes conditioning states and their mask, and returns
//! codes; it knows nothing of text. A step is a fixed chain of device work
//! over buffers allocated once per generation: the decoder's static caches,
//! the code sequence, the next input, and the uniform numbers sampling draws
//! from, copied to the device before the first step. So the host never
//! waits for the device inside the loop, and on CUDA a step is captured
//! once per attention window as a graph and replayed
//! ([`StepMode::CudaGraphs`]), with eager steps as the fallback.
//!
//! Everything here runs under `no_grad`. The caller's progress callback is
//! asked every [`PROGRESS_EVERY`] steps whether to go on, so a canceled job
//! stops within that many steps (plus the steps the device had queued).

use std::collections::VecDeque;

use tch::{nn, Device, Kind, TchError, Tensor};

use crate::config::MusicgenConfig;
use crate::cuda::{self, CudaError, CudaGraph, GraphPool, SideStream, StreamMark};
use crate::decoder::{DecoderState, IntraOpThreads, Linear, MusicgenDecoder, Span};
use crate::encodec::EncodecDecoder;
use crate::sampling::{draw_uniforms, guide, select, Decoding, SplitMix64};
use crate::t5::T5Encoder;
use crate::tokenizer::EncodedPrompts;

/// The delay pattern of one generation: `codebooks` rows of `length`
/// positions, position 0 being the start column. With 2 `channels` (the
/// stereo checkpoints) the codebooks interleave left and right, 0, 2, 4...
/// the left channel's levels and 1, 3, 5... the right's, and each left/right
/// pair shares one delay (`transformers`' `build_delay_pattern_mask` with
/// `audio_channels` 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayPattern {
    pub codebooks: i64,
    pub length: i64,
    pub pad: i64,
    pub channels: i64,
}

impl DelayPattern {
    /// The pattern that yields `frames` frames per codebook
    /// (`transformers`' `max_length` = frames + codebooks).
    pub fn for_frames(frames: i64, codebooks: i64, pad: i64) -> Self {
        Self::for_channels(frames, codebooks, 1, pad)
    }

    /// The pattern of `frames` frames for `codebooks` interleaved over
    /// `channels` (`max_length` = frames + codebooks / channels).
    pub fn for_channels(frames: i64, codebooks: i64, channels: i64, pad: i64) -> Self {
        let channels = channels.max(1);
        Self {
            codebooks,
            length: frames + codebooks / channels,
            pad,
            channels,
        }
    }

    /// Distinct delays: the codebooks of one channel.
    pub fn delays(&self) -> i64 {
        self.codebooks / self.channels.max(1)
    }

    /// How many positions `codebook` lags behind the frames.
    pub fn delay(&self, codebook: i64) -> i64 {
        codebook / self.channels.max(1)
    }

    pub fn frames(&self) -> i64 {
        self.length - self.delays()
    }

    /// Decoding steps: every position after the start column.
    pub fn steps(&self) -> i64 {
        self.length - 1
    }

    /// The sequence position of frame `frame` of `codebook`.
    pub fn position_of(&self, codebook: i64, frame: i64) -> i64 {
        frame + self.delay(codebook) + 1
    }

    /// The code forced at (`codebook`, `position`), or `None` where the model's
    /// prediction is kept.
    pub fn forced(&self, codebook: i64, position: i64) -> Option<i64> {
        let delay = self.delay(codebook);
        let before_start = position <= delay;
        let after_end = position >= self.length - self.delays() + 1 + delay;
        (before_start || after_end).then_some(self.pad)
    }

    /// [codebooks, length] i64: -1 where predicted, the pad code where forced
    /// (`transformers`' `decoder_delay_pattern_mask`).
    pub fn mask(&self) -> Tensor {
        let values: Vec<i64> = (0..self.codebooks)
            .flat_map(|k| (0..self.length).map(move |t| (k, t)))
            .map(|(k, t)| self.forced(k, t).unwrap_or(-1))
            .collect();
        Tensor::from_slice(&values).view([self.codebooks, self.length])
    }

    /// [batch, codebooks, length] i64: [`DelayPattern::mask`] with the
    /// frames of `prompt` [batch, codebooks, prompt frames] written at their
    /// delayed positions, so that decoding keeps them instead of sampling
    /// (audiocraft's `generate` with `prompt_tokens`: a known code is never
    /// replaced).
    pub fn mask_with_prompt(&self, prompt: &Tensor) -> Result<Tensor, TchError> {
        let (batch, codebooks, frames) = prompt.size3()?;
        if codebooks != self.codebooks || frames >= self.frames() {
            return Err(TchError::Shape(format!(
                "a prompt of {codebooks} codebooks x {frames} frames does not fit a pattern of {} x {}",
                self.codebooks,
                self.frames()
            )));
        }
        let mask = self
            .mask()
            .f_unsqueeze(0)?
            .f_repeat([batch, 1, 1])?
            .f_to_device(prompt.device())?;
        for k in 0..self.codebooks {
            mask.f_select(1, k)?
                .f_narrow(1, self.position_of(k, 0), frames)?
                .f_copy_(&prompt.f_select(1, k)?)?;
        }
        Ok(mask)
    }

    /// Undoes the delay: `sequence` [batch, codebooks, length] ->
    /// [batch, codebooks, frames], frame f of codebook k read at its delayed
    /// position.
    pub fn revert(&self, sequence: &Tensor) -> Result<Tensor, TchError> {
        let frames = self.frames();
        let rows = (0..self.codebooks)
            .map(|k| {
                sequence
                    .f_select(1, k)?
                    .f_narrow(-1, self.position_of(k, 0), frames)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::f_stack(&rows, 1)
    }
}

/// Why a generation ended without codes.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("generation was canceled")]
    Canceled,
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Torch(#[from] TchError),
}

impl From<CudaError> for GenerateError {
    fn from(err: CudaError) -> Self {
        GenerateError::Torch(err.into())
    }
}

/// What the progress callback answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continue {
    Yes,
    Stop,
}

/// Per-generation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerateOptions {
    pub decoding: Decoding,
    /// Classifier-free guidance scale; <= 1 disables guidance.
    pub guidance_scale: f64,
    pub seed: Option<u64>,
}

/// How decoding steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepMode {
    /// One eager step per position, positions known on the host: the CPU's
    /// mode, and CUDA's when graphs are off.
    Eager,
    /// Steps that read their position from the device and attend over
    /// windows of [`GRAPH_WINDOW`] positions, as captured graphs need, run
    /// eagerly: the graphs' arithmetic on any device.
    DeviceIndexed,
    /// [`StepMode::DeviceIndexed`] steps captured once per window as CUDA
    /// graphs and replayed; eager device-indexed steps where capture fails.
    CudaGraphs,
}

impl StepMode {
    /// The fastest mode for `device` in this build: graphs on CUDA when
    /// `cuda_graphs` allows them and the shim is compiled in.
    pub fn for_device(device: Device, cuda_graphs: bool) -> Self {
        if device.is_cuda() && cuda_graphs && cuda::graphs_compiled() {
            StepMode::CudaGraphs
        } else {
            StepMode::Eager
        }
    }
}

/// Positions per attention window in device-indexed steps: one graph per
/// window, each step attending over its whole window (later slots masked).
/// Larger windows mean fewer captures per generation and more masked keys
/// read per step.
pub const GRAPH_WINDOW: i64 = 128;

/// Progress is reported, and cancellation asked, every this many steps (and
/// after the last one).
pub const PROGRESS_EVERY: usize = 8;

/// What the decoder cross-attends to: `states` [rows, len, width], already
/// in the decoder's cross-attention width, and `mask` [rows, len] (1 =
/// attend). With guidance the rows are the conditional batch followed by
/// the unconditional one, so that both run in one forward pass.
#[derive(Debug)]
pub struct Conditioning {
    pub states: Tensor,
    pub mask: Tensor,
    pub guided: bool,
}

/// Where a generation's conditioning enters the decoder.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Cross-attended (MusicGen, AudioGen).
    Cross(&'a Conditioning),
    /// Prepended to the decoder's input (MusicGen-melody): `states` [rows,
    /// len, hidden], rows as in [`Conditioning`] (the conditional batch, then
    /// the unconditional one when `guided`).
    Prefix { states: &'a Tensor, guided: bool },
}

impl Source<'_> {
    fn rows(&self) -> Result<i64, TchError> {
        match self {
            Source::Cross(c) => Ok(c.states.size3()?.0),
            Source::Prefix { states, .. } => Ok(states.size3()?.0),
        }
    }

    fn guided(&self) -> bool {
        match self {
            Source::Cross(c) => c.guided,
            Source::Prefix { guided, .. } => *guided,
        }
    }

    /// Decoder positions the conditioning itself takes.
    fn positions(&self) -> Result<i64, TchError> {
        match self {
            Source::Cross(_) => Ok(0),
            Source::Prefix { states, .. } => Ok(states.size3()?.1),
        }
    }
}

/// The whole model: T5 text encoder, projection, decoder and EnCodec decoder,
/// all reading from one VarStore laid out as the checkpoint.
#[derive(Debug)]
pub struct MusicgenModel {
    text_encoder: T5Encoder,
    enc_to_dec_proj: Option<Linear>,
    decoder: MusicgenDecoder,
    audio: EncodecDecoder,
    cfg: MusicgenConfig,
    step_mode: StepMode,
}

impl MusicgenModel {
    /// Creates every variable the model reads under `vs` (the VarStore root);
    /// load the checkpoint into the store, then call [`MusicgenModel::fuse`].
    pub fn new(vs: nn::Path, cfg: &MusicgenConfig) -> Result<Self, String> {
        cfg.validate()?;
        let text_encoder = T5Encoder::new(&vs / "text_encoder", &cfg.text_encoder)?;
        let cross_in = if cfg.has_enc_to_dec_proj() {
            cfg.decoder.hidden_size
        } else {
            cfg.text_encoder.d_model
        };
        let enc_to_dec_proj = cfg.has_enc_to_dec_proj().then(|| {
            Linear::new(
                &vs / "enc_to_dec_proj",
                cfg.text_encoder.d_model,
                cfg.decoder.hidden_size,
                true,
            )
        });
        let decoder = MusicgenDecoder::new(&vs / "decoder", &cfg.decoder, cross_in)
            .map_err(|e| e.to_string())?;
        let audio = EncodecDecoder::new(&vs / "audio_encoder", &cfg.audio_encoder)
            .map_err(|e| e.to_string())?;
        let step_mode = StepMode::for_device(vs.device(), true);
        Ok(Self {
            text_encoder,
            enc_to_dec_proj,
            decoder,
            audio,
            cfg: cfg.clone(),
            step_mode,
        })
    }

    /// Lays the decoder's weights out for decoding; run once after loading
    /// and after any change of the VarStore's kind.
    pub fn fuse(&mut self) -> Result<(), TchError> {
        self.decoder.fuse()
    }

    pub fn config(&self) -> &MusicgenConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &MusicgenDecoder {
        &self.decoder
    }

    /// On the CPU every stage runs libtorch on one intra-op thread (see
    /// [`IntraOpThreads`]): measured on the 2-core benchmark machine with
    /// other builds running, two OpenMP threads made musicgen-small's EnCodec
    /// decode of a 2 s clip 4-5x slower than one (its LSTM 8x), and the tiny
    /// fixture's clip times jump between 0.05 and 6 s at random instead of
    /// growing with the clip. The decoder's large products keep their own
    /// thread pool ([`crate::gemv`]).
    fn on_cpu(&self) -> bool {
        self.decoder.device() == Device::Cpu
    }

    pub fn step_mode(&self) -> StepMode {
        self.step_mode
    }

    pub fn set_step_mode(&mut self, mode: StepMode) {
        self.step_mode = mode;
    }

    /// T5's last hidden state [batch, len, d_model], before the projection.
    pub fn encode_text(&self, prompts: &EncodedPrompts) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        self.text_encoder
            .forward(&prompts.input_ids, &prompts.attention_mask)
    }

    /// The states cross-attention reads: `enc_to_dec_proj` applied if the
    /// checkpoint has one. Zeros still come out as the projection's bias.
    pub fn project(&self, hidden: &Tensor) -> Result<Tensor, TchError> {
        match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(hidden),
            None => Ok(hidden.shallow_clone()),
        }
    }

    /// The text conditioning of `prompts`; with `guided`, followed by the
    /// null conditioning (zeroed encoder output, nothing attended).
    pub fn condition(
        &self,
        prompts: &EncodedPrompts,
        guided: bool,
    ) -> Result<Conditioning, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let hidden = self.encode_text(prompts)?;
        let (states, mask) = if guided {
            (
                Tensor::f_cat(&[&hidden, &hidden.f_zeros_like()?], 0)?,
                Tensor::f_cat(
                    &[
                        &prompts.attention_mask,
                        &prompts.attention_mask.f_zeros_like()?,
                    ],
                    0,
                )?,
            )
        } else {
            (hidden, prompts.attention_mask.shallow_clone())
        };
        Ok(Conditioning {
            states: self.project(&states)?,
            mask,
            guided,
        })
    }

    /// Teacher-forced logits [batch, codebooks, len, vocab] for `codes`
    /// [batch, codebooks, len], without guidance (the reference's `forward`).
    pub fn logits(&self, prompts: &EncodedPrompts, codes: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let hidden = self.project(&self.encode_text(prompts)?)?;
        let (_, _, len) = codes.size3()?;
        let mut state = self.decoder.start(&hidden, &prompts.attention_mask, len)?;
        self.decoder.forward(codes, &mut state)
    }

    /// Generates `frames` frames of codes for each prompt: [batch, codebooks,
    /// frames] i64 on the CPU, delay pattern removed. `on_step(done, total)`
    /// is called every [`PROGRESS_EVERY`] steps and after the last.
    pub fn generate(
        &self,
        prompts: &EncodedPrompts,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        self.continue_codes(prompts, None, frames, options, on_step)
    }

    /// [`MusicgenModel::generate`] whose first frames are `prompt` [batch,
    /// codebooks, prompt frames] when given (a window of a long clip); the
    /// result includes them.
    pub fn continue_codes(
        &self,
        prompts: &EncodedPrompts,
        prompt: Option<&Tensor>,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let conditioning = self.condition(prompts, options.guidance_scale > 1.0)?;
        decode(
            &self.decoder,
            Source::Cross(&conditioning),
            prompt,
            frames,
            options,
            self.step_mode,
            on_step,
        )
    }

    /// EnCodec audio [batch, channels, samples] f32 on the CPU for `codes`
    /// [batch, codebooks, frames] (interleaved left/right when stereo).
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        decode_channels(&self.audio, codes, self.cfg.decoder.audio_channels)
    }
}

/// Audio [batch, channels, samples] f32 on the CPU for `codes` [batch,
/// codebooks, frames]. With 2 `channels` the codebooks interleave left and
/// right and the (mono) EnCodec decodes each channel's codebooks on its own,
/// the results side by side as channels, as `transformers`' `generate` does
/// for the stereo checkpoints (left = codebooks 0, 2, ..., right = 1, 3, ...).
pub fn decode_channels(
    audio: &EncodecDecoder,
    codes: &Tensor,
    channels: i64,
) -> Result<Tensor, TchError> {
    let _guard = tch::no_grad_guard();
    let out = if channels <= 1 {
        audio.decode(codes)?
    } else {
        let (batch, codebooks, frames) = codes.size3()?;
        let per_channel = codes.f_view([batch, codebooks / channels, channels, frames])?;
        let decoded = (0..channels)
            .map(|c| audio.decode(&per_channel.f_select(2, c)?.f_contiguous()?))
            .collect::<Result<Vec<_>, _>>()?;
        Tensor::f_cat(&decoded, 1)?
    };
    out.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)
}

/// Decodes `frames` frames of codes per clip from `conditioning`:
/// [batch, codebooks, frames] i64 on the CPU, delay pattern removed. Any
/// model that feeds this decoder (text, or other conditioning mapped onto
/// cross-attention states) goes through here.
pub fn decode_codes(
    decoder: &MusicgenDecoder,
    conditioning: &Conditioning,
    frames: i64,
    options: &GenerateOptions,
    mode: StepMode,
    on_step: &mut dyn FnMut(usize, usize) -> Continue,
) -> Result<Tensor, GenerateError> {
    decode(
        decoder,
        Source::Cross(conditioning),
        None,
        frames,
        options,
        mode,
        on_step,
    )
}

/// The general decoding loop: `frames` frames per clip from `source`, the
/// first of them given by `prompt` [batch, codebooks, prompt frames] when
/// there is one (a continuation: the prompt is run through the decoder in
/// one teacher-forced pass, and only the frames after it are decoded step
/// by step). Returns [batch, codebooks, frames] i64 on the CPU, prompt
/// included, delay pattern removed. `on_step(done, total)` counts the steps
/// after the prompt.
pub fn decode(
    decoder: &MusicgenDecoder,
    source: Source<'_>,
    prompt: Option<&Tensor>,
    frames: i64,
    options: &GenerateOptions,
    mode: StepMode,
    on_step: &mut dyn FnMut(usize, usize) -> Continue,
) -> Result<Tensor, GenerateError> {
    let _guard = tch::no_grad_guard();
    let dcfg = decoder.config();
    let codebooks = dcfg.num_codebooks;
    let channels = dcfg.audio_channels.max(1);
    if frames < 1 {
        return Err(GenerateError::Rejected(
            "at least one frame must be generated".to_owned(),
        ));
    }
    // transformers skips the pattern below 2K-1 positions; generating a
    // few frames more and trimming keeps one code path.
    let pattern = DelayPattern::for_channels(
        frames.max(codebooks / channels),
        codebooks,
        channels,
        dcfg.pad_token(),
    );
    let offset = source.positions()?;
    if offset + pattern.length > decoder.max_positions() {
        return Err(GenerateError::Rejected(format!(
            "{} frames need {} decoding positions; the model supports {}",
            frames,
            offset + pattern.length,
            decoder.max_positions()
        )));
    }
    let prompt_frames = match prompt {
        Some(p) => p.size3()?.2,
        None => 0,
    };
    if prompt_frames >= frames {
        return Err(GenerateError::Rejected(format!(
            "a prompt of {prompt_frames} frames leaves nothing to generate in {frames}"
        )));
    }
    let device = decoder.device();
    // Set before the caches are allocated and the cross-attention projected:
    // even those few OpenMP regions leave a worker spinning on a core that
    // the loop needs.
    let _threads = (device == Device::Cpu).then(IntraOpThreads::one);
    let mut run = Run::start(decoder, source, pattern, prompt, options)?;
    // The prompt's positions were run in one pass; the steps start at its end.
    let first = prompt_frames;
    let total = (pattern.steps() - first) as usize;
    let mut progress = Progress {
        device,
        total,
        marks: VecDeque::new(),
        on_step,
    };
    let capacity = offset + pattern.length;
    let window_of = |t: i64| (((offset + t) / GRAPH_WINDOW + 1) * GRAPH_WINDOW).min(capacity);
    match mode {
        StepMode::Eager => {
            for t in first..pattern.steps() {
                run.step(At::Host(t))?;
                progress.queued((t - first) as usize + 1)?;
            }
        }
        StepMode::DeviceIndexed | StepMode::CudaGraphs => {
            let graphing = match mode {
                StepMode::CudaGraphs => match (GraphPool::new(device), SideStream::new(device)) {
                    (Ok(pool), Ok(side)) => Some((pool, side)),
                    (Err(err), _) | (_, Err(err)) => {
                        tracing::warn!(error = %err, "decoding without CUDA graphs");
                        None
                    }
                },
                _ => None,
            };
            let mut capturing = graphing.is_some();
            let mut graphs: Vec<(i64, CudaGraph)> = Vec::new();
            for t in first..pattern.steps() {
                let window = window_of(t);
                match &graphing {
                    // The warm-up: a real step, on the stream captures use.
                    Some((_, side)) if t == first => side.run(|| run.step(At::Device(window)))?,
                    Some((pool, side)) => {
                        if capturing && graphs.last().is_none_or(|(w, _)| *w != window) {
                            match CudaGraph::capture(side, pool, || run.step(At::Device(window))) {
                                Ok(graph) => graphs.push((window, graph)),
                                // Capturing runs nothing: the state is as it
                                // was, and eager steps carry on from it.
                                Err(err) => {
                                    tracing::warn!(error = %err, "decoding without CUDA graphs");
                                    capturing = false;
                                }
                            }
                        }
                        match graphs.last() {
                            Some((w, graph)) if *w == window => graph.replay()?,
                            _ => run.step(At::Device(window))?,
                        }
                    }
                    None => run.step(At::Device(window))?,
                }
                progress.queued((t - first) as usize + 1)?;
            }
        }
    }
    let codes = pattern.revert(&run.sequence)?.f_narrow(2, 0, frames)?;
    Ok(codes.f_to_device(Device::Cpu)?)
}

/// Where a step finds its position: the host's count, or the device-side
/// position (with the attention window it sees).
#[derive(Debug, Clone, Copy)]
enum At {
    Host(i64),
    Device(i64),
}

/// The buffers of one generation. Every step reads and writes them in
/// place, so a captured step replays against the same memory.
struct Run<'a> {
    decoder: &'a MusicgenDecoder,
    state: DecoderState,
    /// [batch, codebooks, length] i64, the bos column first.
    sequence: Tensor,
    /// The codes the next step reads: [rows, codebooks] i64, each clip's
    /// codes repeated for the unconditional half under guidance.
    input: Tensor,
    /// [batch, codebooks, length] i64: -1 where predicted, the pad code or
    /// the prompt's code where forced.
    forced: Tensor,
    /// [steps, batch * codebooks] f64 when sampling.
    uniforms: Option<Tensor>,
    decoding: Decoding,
    guidance_scale: f64,
    batch: i64,
    groups: i64,
    /// Decoder positions before the code sequence's (a prefixed condition):
    /// sequence position t is decoder position `offset + t`.
    offset: i64,
}

impl<'a> Run<'a> {
    fn start(
        decoder: &'a MusicgenDecoder,
        source: Source<'_>,
        pattern: DelayPattern,
        prompt: Option<&Tensor>,
        options: &GenerateOptions,
    ) -> Result<Self, GenerateError> {
        let dcfg = decoder.config();
        let device = decoder.device();
        let rows = source.rows()?;
        let groups = if source.guided() { 2 } else { 1 };
        if rows % groups != 0 || rows == 0 {
            return Err(GenerateError::Rejected(format!(
                "{rows} conditioning rows cannot be split into {groups} halves"
            )));
        }
        let batch = rows / groups;
        let codebooks = pattern.codebooks;
        let offset = source.positions()?;
        let mut state = match source {
            Source::Cross(c) => decoder.start(&c.states, &c.mask, pattern.length)?,
            Source::Prefix { states, .. } => {
                decoder.start_prefixed(states, offset + pattern.length)?
            }
        };
        let forced = match prompt {
            None => pattern
                .mask()
                .f_unsqueeze(0)?
                .f_repeat([batch, 1, 1])?
                .f_to_device(device)?,
            Some(p) => {
                if p.size3()?.0 != batch {
                    return Err(GenerateError::Rejected(format!(
                        "a prompt for {} clips given to a batch of {batch}",
                        p.size3()?.0
                    )));
                }
                pattern.mask_with_prompt(&p.f_to_device(device)?)?
            }
        };
        let bos = dcfg.bos_token();
        let mut sequence = Tensor::f_full(
            [batch, codebooks, pattern.length],
            bos,
            (Kind::Int64, device),
        )?;
        let mut input = Tensor::f_full([rows, codebooks], bos, (Kind::Int64, device))?;
        if let Some(p) = prompt {
            // The known codes in place (position 0 stays the start column),
            // the prompt's positions run in one pass, and the first step
            // reads the position after them.
            let first = p.size3()?.2;
            sequence = forced.f_where_self(&forced.f_ne(-1)?, &sequence)?;
            let _ = sequence.f_narrow(2, 0, 1)?.f_fill_(bos)?;
            let known = sequence.f_narrow(2, 0, first)?.f_repeat([groups, 1, 1])?;
            let _ = decoder.forward(&known, &mut state)?;
            input = sequence.f_select(2, first)?.f_repeat([groups, 1])?;
        }
        let uniforms = match options.decoding {
            Decoding::Greedy => None,
            Decoding::Sample { .. } => {
                let mut rng = options
                    .seed
                    .map(SplitMix64::new)
                    .unwrap_or_else(SplitMix64::from_entropy);
                Some(draw_uniforms(
                    &mut rng,
                    pattern.steps(),
                    batch * codebooks,
                    device,
                )?)
            }
        };
        Ok(Self {
            decoder,
            state,
            sequence,
            input,
            forced,
            uniforms,
            decoding: options.decoding,
            // With one group there is no unconditional half to guide from.
            guidance_scale: if groups == 2 {
                options.guidance_scale
            } else {
                1.0
            },
            batch,
            groups,
            offset,
        })
    }

    /// One decoding step: logits for the input codes, guidance, the choice
    /// of the next codes, the delay pattern's forced codes, and the writes
    /// of the result into the sequence and the next input. Nothing here
    /// waits for the device or reads the host, so it can be captured.
    fn step(&mut self, at: At) -> Result<(), TchError> {
        let span = match at {
            At::Host(t) => Span::Host {
                start: self.offset + t,
                len: 1,
            },
            At::Device(window) => Span::Device { window },
        };
        let logits = self.decoder.step(&self.input, &mut self.state, span)?; // [rows, K, V]
        let logits = guide(&logits, self.guidance_scale)?; // [batch, K, V]
        let (b, k, vocab) = logits.size3()?;
        // The step at sequence position t reads the sequence at t and writes
        // t + 1; on the device t is the decoder's position less the prefix.
        let (position, next_position) = match at {
            At::Host(_) => (None, None),
            At::Device(_) => {
                let t = if self.offset == 0 {
                    self.state.position().shallow_clone()
                } else {
                    self.state.position().f_sub_scalar(self.offset)?
                };
                let next = t.f_add_scalar(1)?;
                (Some(t), Some(next))
            }
        };
        let uniforms = match (&self.uniforms, at, &position) {
            (None, _, _) => None,
            (Some(u), At::Host(t), _) => Some(u.f_narrow(0, t, 1)?),
            (Some(u), At::Device(_), Some(t)) => Some(u.f_index_select(0, t)?),
            (Some(_), At::Device(_), None) => unreachable!("device steps have a position"),
        };
        let uniforms = uniforms.map(|u| u.f_view([b * k, 1])).transpose()?;
        let next = select(
            &logits.f_reshape([b * k, vocab])?,
            self.decoding,
            uniforms.as_ref(),
        )?
        .f_view([b, k])?;
        let column = match (at, &next_position) {
            (At::Host(t), _) => self.forced.f_narrow(2, t + 1, 1)?,
            (At::Device(_), Some(p)) => self.forced.f_index_select(2, p)?,
            (At::Device(_), None) => unreachable!("device steps have a next position"),
        }
        .f_view([b, k])?;
        let next = next.f_where_self(&column.f_eq(-1)?, &column)?;
        let written = next.f_unsqueeze(2)?;
        match (at, &next_position) {
            (At::Host(t), _) => self.sequence.f_narrow(2, t + 1, 1)?.f_copy_(&written)?,
            (At::Device(_), Some(p)) => {
                let _ = self.sequence.f_index_copy_(2, p, &written)?;
            }
            (At::Device(_), None) => unreachable!("device steps have a next position"),
        }
        self.input
            .f_view([self.groups, self.batch, k])?
            .f_copy_(&next.f_unsqueeze(0)?)?;
        if let At::Device(_) = at {
            self.state.advance()?;
        }
        Ok(())
    }
}

/// Reports progress every [`PROGRESS_EVERY`] steps. On CUDA the host runs
/// ahead of the device; a report waits for the mark left one report earlier,
/// so the device still has that many steps queued and never idles for it.
struct Progress<'a> {
    device: Device,
    total: usize,
    marks: VecDeque<(usize, StreamMark)>,
    on_step: &'a mut dyn FnMut(usize, usize) -> Continue,
}

impl Progress<'_> {
    /// Called once `queued` steps have been handed to the device.
    fn queued(&mut self, queued: usize) -> Result<(), GenerateError> {
        if !queued.is_multiple_of(PROGRESS_EVERY) && queued != self.total {
            return Ok(());
        }
        let last = queued == self.total;
        let done = match self.device {
            Device::Cuda(_) if cuda::graphs_compiled() => {
                self.marks
                    .push_back((queued, StreamMark::record(self.device)?));
                let keep = if last { 0 } else { 1 };
                let mut done = None;
                while self.marks.len() > keep {
                    if let Some((steps, mark)) = self.marks.pop_front() {
                        mark.wait()?;
                        done = Some(steps);
                    }
                }
                done
            }
            Device::Cuda(index) => {
                tch::Cuda::synchronize(index as i64);
                Some(queued)
            }
            _ => Some(queued),
        };
        match done {
            Some(done) if (self.on_step)(done, self.total) == Continue::Stop => {
                Err(GenerateError::Canceled)
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_pattern_matches_the_transformers_docstring() {
        // build_delay_pattern_mask's example: 4 codebooks, max_length 8.
        let pattern = DelayPattern {
            codebooks: 4,
            length: 8,
            pad: 9,
            channels: 1,
        };
        let mask = Vec::<i64>::try_from(pattern.mask().view([-1])).expect("mask");
        let p = 9;
        #[rustfmt::skip]
        let expected = vec![
            p, -1, -1, -1, -1, p, p, p,
            p, p, -1, -1, -1, -1, p, p,
            p, p, p, -1, -1, -1, -1, p,
            p, p, p, p, -1, -1, -1, -1,
        ];
        assert_eq!(mask, expected);
        assert_eq!(pattern.frames(), 4);
        assert_eq!(pattern.steps(), 7);
    }

    #[test]
    fn stereo_pairs_share_a_delay_and_a_prompt_is_written_at_its_delays() {
        // 2 channels x 2 levels interleaved: codebooks 0 and 1 (left and
        // right, level 0) are not delayed, 2 and 3 (level 1) by one.
        let pattern = DelayPattern::for_channels(3, 4, 2, 9);
        assert_eq!(
            (pattern.length, pattern.delays(), pattern.steps()),
            (5, 2, 4)
        );
        let mask = Vec::<i64>::try_from(pattern.mask().view([-1])).expect("mask");
        let p = 9;
        #[rustfmt::skip]
        let expected = vec![
            p, -1, -1, -1, p,
            p, -1, -1, -1, p,
            p, p, -1, -1, -1,
            p, p, -1, -1, -1,
        ];
        assert_eq!(mask, expected);
        // One prompt frame per codebook: 10, 11, 12, 13.
        let prompt = Tensor::from_slice(&[10i64, 11, 12, 13]).view([1, 4, 1]);
        let with = pattern.mask_with_prompt(&prompt).expect("prompted");
        let with = Vec::<i64>::try_from(with.view([-1])).expect("mask");
        #[rustfmt::skip]
        let expected = vec![
            p, 10, -1, -1, p,
            p, 11, -1, -1, p,
            p, p, 12, -1, -1,
            p, p, 13, -1, -1,
        ];
        assert_eq!(with, expected);
        // A prompt as long as the clip leaves nothing to generate.
        let whole = Tensor::zeros([1, 4, 3], (Kind::Int64, Device::Cpu));
        assert!(pattern.mask_with_prompt(&whole).is_err());
    }

    #[test]
    fn revert_reads_each_codebook_at_its_delay() {
        let pattern = DelayPattern::for_frames(3, 2, 9);
        // codebook 0: [bos, a0, a1, a2, pad]; codebook 1: [bos, pad, b0, b1, b2]
        let seq = Tensor::from_slice(&[9i64, 1, 2, 3, 9, 9, 9, 4, 5, 6]).view([1, 2, 5]);
        let codes = pattern.revert(&seq).expect("revert");
        assert_eq!(
            Vec::<i64>::try_from(codes.view([-1])).expect("vec"),
            vec![1, 2, 3, 4, 5, 6]
        );
    }
}
