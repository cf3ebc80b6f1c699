//! MusicGen-melody: MusicGen conditioned on a melody's chromagram as well
//! as on text (`facebook/musicgen-melody`, `-melody-large`,
//! `-stereo-melody*`).
//!
//! Follows "Simple and Controllable Music Generation" (Copet et al., 2023),
//! section 2.3 (melody conditioning), as implemented by Hugging Face
//! `transformers` (`models/musicgen_melody/modeling_musicgen_melody.py`:
//! `MusicgenMelodyForConditionalGeneration`), whose checkpoint layout is the
//! one loaded here. Unlike MusicGen the decoder has no cross-attention: the
//! conditioning is *prepended* to the decoder's input. It is the melody's
//! one-hot chroma (12 bins per 4096-sample hop at 32 kHz, made by the audio
//! crate as transformers' feature extractor makes it) projected by
//! `audio_enc_to_dec_proj` and tiled or cut to `chroma_length` frames (235,
//! 30 s), followed by the T5 encoding of the prompt projected by
//! `enc_to_dec_proj` and multiplied by the prompt's attention mask. The
//! decoder attends over it causally with no padding mask, as transformers'
//! `generate` does.
//!
//! The null condition for classifier-free guidance, and the melody of a
//! clip asked for without one: text states of zeros, and a chroma whose
//! every frame has bin 0 set (`null_audio_hidden_states`), projected.
//!
//! The shared layers are those of MusicGen ([`crate::decoder`], built
//! without cross-attention, [`crate::t5`], [`crate::encodec`]); decoding
//! goes through [`crate::generation::decode`] with a [`Source::Prefix`].

use serde::Deserialize;
use sound_creator_audio::{fit_chroma_length, melody_chroma, melody_window, Chromagram};
use tch::{nn, Device, Kind, TchError, Tensor};

use crate::config::MusicgenConfig;
use crate::decoder::{IntraOpThreads, Linear, MusicgenDecoder};
use crate::encodec::EncodecDecoder;
use crate::generation::{
    decode, decode_channels, Continue, GenerateError, GenerateOptions, Source, StepMode,
};
use crate::t5::T5Encoder;
use crate::tokenizer::EncodedPrompts;

/// The `config.json` of a `MusicgenMelodyForConditionalGeneration`
/// checkpoint: MusicGen's sections plus the chroma settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MusicgenMelodyConfig {
    #[serde(flatten)]
    pub base: MusicgenConfig,
    /// Chroma bins per frame (12).
    #[serde(default = "MusicgenMelodyConfig::default_num_chroma")]
    pub num_chroma: i64,
    /// Chroma frames the condition is tiled or cut to (235: 30 s).
    #[serde(default = "MusicgenMelodyConfig::default_chroma_length")]
    pub chroma_length: i64,
}

impl MusicgenMelodyConfig {
    fn default_num_chroma() -> i64 {
        12
    }
    fn default_chroma_length() -> i64 {
        235
    }

    /// Whether a `config.json` describes a melody checkpoint (its
    /// `model_type` or `architectures`).
    pub fn describes(config: &serde_json::Value) -> bool {
        config["model_type"].as_str() == Some("musicgen_melody")
            || config["architectures"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|v| v.as_str() == Some("MusicgenMelodyForConditionalGeneration"))
            })
    }

    pub fn validate(&self) -> Result<(), String> {
        self.base.validate()?;
        if self.num_chroma != 12 {
            return Err(format!(
                "num_chroma {}: the melody chromagram has 12 bins",
                self.num_chroma
            ));
        }
        if self.chroma_length < 1 {
            return Err("chroma_length must be positive".to_owned());
        }
        Ok(())
    }

    /// Text projection, as `transformers` decides it for this model: the
    /// widths differ.
    fn has_enc_to_dec_proj(&self) -> bool {
        self.base.text_encoder.d_model != self.base.decoder.hidden_size
    }

    fn has_audio_enc_to_dec_proj(&self) -> bool {
        self.num_chroma != self.base.decoder.hidden_size
    }
}

/// The melody a clip is conditioned on, as chroma frames
/// [`MusicgenMelodyConfig::chroma_length`] long, or none (the null melody).
#[derive(Debug, Clone, PartialEq)]
pub struct MelodyChroma(pub Option<Chromagram>);

impl MelodyChroma {
    /// The chroma of a whole melody for a clip of one window, as
    /// transformers' feature extractor sees it (cut at 30 s), fitted to
    /// `chroma_length` (tiled when shorter, cut when longer).
    pub fn whole(samples: &[f32], chroma_length: usize) -> Self {
        if samples.is_empty() {
            return MelodyChroma(None);
        }
        MelodyChroma(Some(fit_chroma_length(
            &melody_chroma(samples),
            chroma_length,
        )))
    }

    /// The chroma for one window of a long clip: `window` samples starting
    /// `start` samples into the clip's time line, the melody wrapping
    /// around when it is shorter (audiocraft's `_generate_tokens`:
    /// `ref_wav[..., positions % wav_length]`), fitted to `chroma_length`.
    pub fn window(samples: &[f32], start: usize, window: usize, chroma_length: usize) -> Self {
        if samples.is_empty() {
            return MelodyChroma(None);
        }
        MelodyChroma(Some(fit_chroma_length(
            &melody_chroma(&melody_window(samples, start, window)),
            chroma_length,
        )))
    }
}

/// The whole model, all reading from one VarStore laid out as the
/// checkpoint.
#[derive(Debug)]
pub struct MusicgenMelodyModel {
    text_encoder: T5Encoder,
    enc_to_dec_proj: Option<Linear>,
    audio_enc_to_dec_proj: Option<Linear>,
    decoder: MusicgenDecoder,
    audio: EncodecDecoder,
    cfg: MusicgenMelodyConfig,
    step_mode: StepMode,
}

impl MusicgenMelodyModel {
    /// Creates every variable the model reads under `vs` (the VarStore root);
    /// load the checkpoint into the store, then call
    /// [`MusicgenMelodyModel::fuse`].
    pub fn new(vs: nn::Path, cfg: &MusicgenMelodyConfig) -> Result<Self, String> {
        cfg.validate()?;
        let base = &cfg.base;
        let hidden = base.decoder.hidden_size;
        let text_encoder = T5Encoder::new(&vs / "text_encoder", &base.text_encoder)?;
        let enc_to_dec_proj = cfg.has_enc_to_dec_proj().then(|| {
            Linear::new(
                &vs / "enc_to_dec_proj",
                base.text_encoder.d_model,
                hidden,
                true,
            )
        });
        let audio_enc_to_dec_proj = cfg
            .has_audio_enc_to_dec_proj()
            .then(|| Linear::new(&vs / "audio_enc_to_dec_proj", cfg.num_chroma, hidden, true));
        let decoder = MusicgenDecoder::without_cross_attention(&vs / "decoder", &base.decoder)
            .map_err(|e| e.to_string())?;
        let audio = EncodecDecoder::new(&vs / "audio_encoder", &base.audio_encoder)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            text_encoder,
            enc_to_dec_proj,
            audio_enc_to_dec_proj,
            decoder,
            audio,
            cfg: cfg.clone(),
            step_mode: StepMode::for_device(vs.device(), true),
        })
    }

    /// Lays the decoder's weights out for decoding; run once after loading
    /// and after any change of the VarStore's kind.
    pub fn fuse(&mut self) -> Result<(), TchError> {
        self.decoder.fuse()
    }

    pub fn config(&self) -> &MusicgenMelodyConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &MusicgenDecoder {
        &self.decoder
    }

    pub fn step_mode(&self) -> StepMode {
        self.step_mode
    }

    pub fn set_step_mode(&mut self, mode: StepMode) {
        self.step_mode = mode;
    }

    /// One intra-op thread on the CPU, as [`crate::generation::MusicgenModel`]
    /// runs (see there).
    fn on_cpu(&self) -> bool {
        self.decoder.device() == Device::Cpu
    }

    /// The projected text states [batch, len, hidden], each padded position
    /// zeroed by the attention mask.
    fn text_states(&self, prompts: &EncodedPrompts) -> Result<Tensor, TchError> {
        let hidden = self
            .text_encoder
            .forward(&prompts.input_ids, &prompts.attention_mask)?;
        let hidden = match &self.enc_to_dec_proj {
            Some(proj) => proj.forward(&hidden)?,
            None => hidden,
        };
        let mask = prompts
            .attention_mask
            .f_to_device(hidden.device())?
            .f_to_kind(hidden.kind())?
            .f_unsqueeze(-1)?;
        hidden.f_mul(&mask)
    }

    /// The projected chroma [batch, chroma_length, hidden] of each clip's
    /// melody, the null melody (bin 0 in every frame) where it has none.
    fn chroma_states(&self, melodies: &[MelodyChroma]) -> Result<Tensor, TchError> {
        let length = self.cfg.chroma_length;
        let bins = self.cfg.num_chroma;
        let device = self.decoder.device();
        let rows = melodies
            .iter()
            .map(|m| match &m.0 {
                Some(c) => {
                    let fitted = fit_chroma_length(c, length as usize);
                    Tensor::f_from_slice(&fitted.values)?.f_view([length, bins])
                }
                None => null_chroma(length, bins),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let chroma = Tensor::f_stack(&rows, 0)?.f_to_device(device)?;
        self.project_chroma(&chroma)
    }

    fn project_chroma(&self, chroma: &Tensor) -> Result<Tensor, TchError> {
        match &self.audio_enc_to_dec_proj {
            Some(proj) => proj.forward(chroma),
            None => Ok(chroma.shallow_clone()),
        }
    }

    /// The decoder's prefix [rows, chroma_length + text len, hidden]: the
    /// projected chroma, then the projected text; with `guided`, followed
    /// by the null condition of every clip.
    pub fn condition(
        &self,
        prompts: &EncodedPrompts,
        melodies: &[MelodyChroma],
        guided: bool,
    ) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let batch = prompts.input_ids.size2()?.0;
        if melodies.len() as i64 != batch {
            return Err(TchError::Shape(format!(
                "{} melodies for {batch} prompts",
                melodies.len()
            )));
        }
        let text = self.text_states(prompts)?;
        let chroma = self.chroma_states(melodies)?.f_to_kind(text.kind())?;
        let cond = Tensor::f_cat(&[&chroma, &text], 1)?;
        if !guided {
            return Ok(cond);
        }
        let null_melodies = vec![MelodyChroma(None); melodies.len()];
        let null_chroma = self.chroma_states(&null_melodies)?.f_to_kind(text.kind())?;
        let null = Tensor::f_cat(&[&null_chroma, &text.f_zeros_like()?], 1)?;
        Tensor::f_cat(&[&cond, &null], 0)
    }

    /// Teacher-forced logits [batch, codebooks, len, vocab] of the decoder
    /// positions for `codes` [batch, codebooks, len], without guidance
    /// (the reference's `forward`, less the prefix's positions).
    pub fn logits(
        &self,
        prompts: &EncodedPrompts,
        melodies: &[MelodyChroma],
        codes: &Tensor,
    ) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let prefix = self.condition(prompts, melodies, false)?;
        let (_, _, len) = codes.size3()?;
        let mut state = self
            .decoder
            .start_prefixed(&prefix, prefix.size3()?.1 + len)?;
        self.decoder.forward(codes, &mut state)
    }

    /// Generates `frames` frames of codes per clip, the first of them
    /// `prompt` [batch, codebooks, prompt frames] when given (a window of a
    /// long clip): [batch, codebooks, frames] i64 on the CPU, delay pattern
    /// removed, prompt included.
    pub fn generate(
        &self,
        prompts: &EncodedPrompts,
        melodies: &[MelodyChroma],
        prompt: Option<&Tensor>,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let guided = options.guidance_scale > 1.0;
        let prefix = self.condition(prompts, melodies, guided)?;
        decode(
            &self.decoder,
            Source::Prefix {
                states: &prefix,
                guided,
            },
            prompt,
            frames,
            options,
            self.step_mode,
            on_step,
        )
    }

    /// Audio [batch, channels, samples] f32 on the CPU for `codes`
    /// [batch, codebooks, frames] (interleaved left/right when stereo).
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        decode_channels(&self.audio, codes, self.cfg.base.decoder.audio_channels)
    }
}

/// `null_audio_hidden_states`: `length` frames of `bins` bins with bin 0 set.
fn null_chroma(length: i64, bins: i64) -> Result<Tensor, TchError> {
    let null = Tensor::f_zeros([length, bins], (Kind::Float, Device::Cpu))?;
    let _ = null.f_narrow(1, 0, 1)?.f_fill_(1.0)?;
    Ok(null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_melody_fixture_config_parses_as_a_melody_checkpoint() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-musicgen-melody/config.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture config");
        let json: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert!(MusicgenMelodyConfig::describes(&json));
        let cfg: MusicgenMelodyConfig = serde_json::from_value(json).expect("parses");
        cfg.validate().expect("valid");
        assert_eq!((cfg.num_chroma, cfg.chroma_length), (12, 235));
        let mono = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-musicgen/config.json"
        );
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(mono).expect("config")).expect("json");
        assert!(!MusicgenMelodyConfig::describes(&json));
    }

    #[test]
    fn a_window_past_the_melody_wraps_around_it() {
        // 1 s of melody, a 3 s window starting 2.5 s in: audiocraft's
        // `positions % wav_length`.
        let samples: Vec<f32> = (0..32_000).map(|i| (i as f32 * 0.05).sin()).collect();
        let MelodyChroma(Some(whole)) = MelodyChroma::whole(&samples, 235) else {
            panic!("a melody");
        };
        assert_eq!(whole.frames(), 235);
        let MelodyChroma(Some(later)) = MelodyChroma::window(&samples, 80_000, 96_000, 235) else {
            panic!("a melody");
        };
        let expected = fit_chroma_length(
            &melody_chroma(&melody_window(&samples, 80_000, 96_000)),
            235,
        );
        assert_eq!(later, expected);
        assert_eq!(MelodyChroma::whole(&[], 235), MelodyChroma(None));
    }
}
