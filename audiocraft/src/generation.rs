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
//! Everything here runs under `no_grad`; the caller's step callback is asked
//! after every step whether to go on, so a canceled job stops within one step.

use tch::{nn, Kind, TchError, Tensor};

use crate::config::MusicgenConfig;
use crate::decoder::{IntraOpThreads, Linear, MusicgenDecoder};
use crate::encodec::EncodecDecoder;
use crate::sampling::{guide, select, Decoding, SplitMix64};
use crate::t5::T5Encoder;
use crate::tokenizer::EncodedPrompts;

/// The delay pattern of one generation: `codebooks` rows of `length`
/// positions, position 0 being the start column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayPattern {
    pub codebooks: i64,
    pub length: i64,
    pub pad: i64,
}

impl DelayPattern {
    /// The pattern that yields `frames` frames per codebook
    /// (`transformers`' `max_length` = frames + codebooks).
    pub fn for_frames(frames: i64, codebooks: i64, pad: i64) -> Self {
        Self {
            codebooks,
            length: frames + codebooks,
            pad,
        }
    }

    pub fn frames(&self) -> i64 {
        self.length - self.codebooks
    }

    /// Decoding steps: every position after the start column.
    pub fn steps(&self) -> i64 {
        self.length - 1
    }

    /// The code forced at (`codebook`, `position`), or `None` where the model's
    /// prediction is kept.
    pub fn forced(&self, codebook: i64, position: i64) -> Option<i64> {
        let before_start = position <= codebook;
        let after_end = position >= self.length - self.codebooks + 1 + codebook;
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

    /// Undoes the delay: `sequence` [batch, codebooks, length] ->
    /// [batch, codebooks, frames], frame f of codebook k read at position f+k+1.
    pub fn revert(&self, sequence: &Tensor) -> Result<Tensor, TchError> {
        let frames = self.frames();
        let rows = (0..self.codebooks)
            .map(|k| sequence.f_select(1, k)?.f_narrow(-1, k + 1, frames))
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

/// What the step callback answers.
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

/// The whole model: T5 text encoder, projection, decoder and EnCodec decoder,
/// all reading from one VarStore laid out as the checkpoint.
#[derive(Debug)]
pub struct MusicgenModel {
    text_encoder: T5Encoder,
    enc_to_dec_proj: Option<Linear>,
    decoder: MusicgenDecoder,
    audio: EncodecDecoder,
    cfg: MusicgenConfig,
}

impl MusicgenModel {
    /// Creates every variable the model reads under `vs` (the VarStore root);
    /// load the checkpoint into the store afterwards.
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
        Ok(Self {
            text_encoder,
            enc_to_dec_proj,
            decoder,
            audio,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &MusicgenConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &MusicgenDecoder {
        &self.decoder
    }

    /// T5's last hidden state [batch, len, d_model], before the projection.
    pub fn encode_text(&self, prompts: &EncodedPrompts) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
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

    /// Teacher-forced logits [batch, codebooks, len, vocab] for `codes`
    /// [batch, codebooks, len], without guidance (the reference's `forward`).
    pub fn logits(&self, prompts: &EncodedPrompts, codes: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        let hidden = self.project(&self.encode_text(prompts)?)?;
        let (_, _, len) = codes.size3()?;
        let mut state = self.decoder.start(&hidden, &prompts.attention_mask, len)?;
        self.decoder.forward(codes, &mut state)
    }

    /// Generates `frames` frames of codes for each prompt: [batch, codebooks,
    /// frames] i64 on the CPU, delay pattern removed. `on_step(done, total)` is
    /// called after every decoding step.
    pub fn generate(
        &self,
        prompts: &EncodedPrompts,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        let _guard = tch::no_grad_guard();
        let dcfg = &self.cfg.decoder;
        let codebooks = dcfg.num_codebooks;
        if frames < 1 {
            return Err(GenerateError::Rejected(
                "at least one frame must be generated".to_owned(),
            ));
        }
        // transformers skips the pattern below 2K-1 positions; generating a
        // few frames more and trimming keeps one code path.
        let pattern = DelayPattern::for_frames(frames.max(codebooks), codebooks, dcfg.pad_token());
        if pattern.length > dcfg.max_position_embeddings {
            return Err(GenerateError::Rejected(format!(
                "{} frames need {} decoding positions; the model supports {}",
                frames, pattern.length, dcfg.max_position_embeddings
            )));
        }

        let hidden = self.encode_text(prompts)?;
        let guided = options.guidance_scale > 1.0;
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
        let states = self.project(&states)?;
        let mut state = self.decoder.start(&states, &mask, pattern.length)?;

        let batch = prompts.input_ids.size2()?.0;
        let device = states.device();
        let forced = pattern.mask().f_to_device(device)?;
        let sequence = Tensor::f_full(
            [batch, codebooks, pattern.length],
            dcfg.bos_token(),
            (Kind::Int64, device),
        )?;
        let mut rng = options
            .seed
            .map(SplitMix64::new)
            .unwrap_or_else(SplitMix64::from_entropy);
        let total = pattern.steps() as usize;
        let mut current = sequence.f_narrow(2, 0, 1)?;
        // The sampling ops of a step are as small as the decoder's.
        let _threads = (device == tch::Device::Cpu).then(IntraOpThreads::one);
        for position in 1..pattern.length {
            let input = if guided {
                Tensor::f_cat(&[&current, &current], 0)?
            } else {
                current.shallow_clone()
            };
            let logits = self.decoder.forward(&input, &mut state)?; // [b', K, 1, V]
            let logits = guide(&logits.f_squeeze_dim(2)?, options.guidance_scale)?; // [b, K, V]
            let vocab = logits.size().last().copied().unwrap_or(0);
            let next = select(
                &logits.f_reshape([batch * codebooks, vocab])?,
                options.decoding,
                &mut rng,
            )?
            .f_view([batch, codebooks])?;
            let column = forced
                .f_select(1, position)?
                .f_unsqueeze(0)?
                .f_expand([batch, codebooks], false)?;
            let next = next.f_where_self(&column.f_eq(-1)?, &column)?;
            sequence
                .f_narrow(2, position, 1)?
                .f_copy_(&next.f_unsqueeze(2)?)?;
            current = next.f_unsqueeze(2)?;
            if on_step(position as usize, total) == Continue::Stop {
                return Err(GenerateError::Canceled);
            }
        }
        let codes = pattern.revert(&sequence)?.f_narrow(2, 0, frames)?;
        Ok(codes.f_to_device(tch::Device::Cpu)?)
    }

    /// EnCodec audio [batch, channels, samples] f32 on the CPU for `codes`
    /// [batch, codebooks, frames].
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, TchError> {
        let _guard = tch::no_grad_guard();
        self.audio
            .decode(codes)?
            .f_to_kind(Kind::Float)?
            .f_to_device(tch::Device::Cpu)
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
