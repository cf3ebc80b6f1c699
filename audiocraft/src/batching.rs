//! What every AudioCraft engine does the same way when it serves a batch of
//! clip requests: group the clips that can share one forward pass per step,
//! count progress over the whole batch, cut each clip's audio and codes out
//! of its row, and turn libtorch errors into the port's.
//!
//! MusicGen ([`crate::engine`]) and AudioGen ([`crate::audiogen`]) differ in
//! what they condition on and in how long one generation may be; everything
//! here is the part they share, so it is written once.

use sound_creator_core::audio::{Clip, ClipRequest, GenerationError, StepControl, StepObserver};
use sound_creator_core::request::GenerationParams;
use tch::Tensor;

use crate::generation::{Continue, GenerateError, GenerateOptions};
use crate::sampling::Decoding;

/// A generated clip with the codes it was decoded from.
#[derive(Debug)]
pub struct GeneratedClip {
    pub clip: Clip,
    /// `[codebook][frame]`, delay pattern removed (interleaved left/right
    /// when stereo).
    pub codes: Vec<Vec<i64>>,
}

/// The batch's clips grouped by sampling settings, in first-seen order: one
/// forward pass serves a group, groups run one after another.
pub fn group_by_params(batch: &[ClipRequest]) -> Vec<(GenerationParams, Vec<usize>)> {
    let mut groups: Vec<(GenerationParams, Vec<usize>)> = Vec::new();
    for (i, request) in batch.iter().enumerate() {
        match groups.iter_mut().find(|(p, _)| *p == request.params) {
            Some((_, members)) => members.push(i),
            None => groups.push((request.params.clone(), vec![i])),
        }
    }
    groups
}

/// How one generation of a group samples; `seed` is the group's (or, for a
/// window of a long clip, that window's).
pub fn options_for(params: &GenerationParams, seed: Option<u64>) -> GenerateOptions {
    GenerateOptions {
        decoding: Decoding::from_params(params.temperature, params.top_k, params.top_p),
        guidance_scale: params.cfg_coef,
        seed,
    }
}

/// The per-step callback of one generation, reporting progress over the
/// whole batch: `done_before` steps of earlier generations, `total` in all.
pub fn batch_progress(
    observer: &mut dyn StepObserver,
    done_before: usize,
    total: usize,
) -> impl FnMut(usize, usize) -> Continue + '_ {
    move |done, _| match observer.on_step(done_before + done, total) {
        StepControl::Continue => Continue::Yes,
        StepControl::Stop => Continue::Stop,
    }
}

/// Where a clip sits in a group's generation and what it is.
pub struct ClipSlot<'a> {
    /// Its row in the group's audio and codes.
    pub row: i64,
    pub request: &'a ClipRequest,
    /// Its own frames (the group ran to its longest clip).
    pub frames: i64,
    pub sample_rate: u32,
    pub channels: u16,
}

/// Clip `slot` cut out of a group's `audio` [batch, channels, samples] and
/// `codes` [batch, codebooks, frames]: its own duration, samples
/// interleaved by channel.
pub fn cut_clip(
    audio: &Tensor,
    codes: &Tensor,
    slot: &ClipSlot<'_>,
) -> Result<GeneratedClip, GenerationError> {
    let samples = (slot.request.duration * f64::from(slot.sample_rate)).round() as i64;
    let wave = audio.f_get(slot.row).map_err(torch_error)?;
    let samples = samples.min(wave.size()[1]);
    let wave = wave
        .f_narrow(1, 0, samples)
        .and_then(|w| w.f_narrow(0, 0, i64::from(slot.channels)))
        .and_then(|w| w.f_transpose(0, 1))
        .and_then(|w| w.f_contiguous())
        .and_then(|w| w.f_view([-1]))
        .map_err(torch_error)?;
    let clip_codes = codes
        .f_get(slot.row)
        .and_then(|c| c.f_narrow(1, 0, slot.frames))
        .and_then(|c| c.f_contiguous())
        .map_err(torch_error)?;
    Ok(GeneratedClip {
        clip: Clip {
            samples: Vec::<f32>::try_from(wave).map_err(torch_error)?,
            sample_rate: slot.sample_rate,
            channels: slot.channels,
        },
        codes: Vec::<Vec<i64>>::try_from(clip_codes).map_err(torch_error)?,
    })
}

/// Every clip of the batch, in request order; a hole is an engine defect.
pub fn all_generated(
    results: Vec<Option<GeneratedClip>>,
) -> Result<Vec<GeneratedClip>, GenerationError> {
    results
        .into_iter()
        .map(|r| {
            r.ok_or_else(|| {
                GenerationError::Engine("a clip of the batch was not generated".to_owned())
            })
        })
        .collect()
}

/// libtorch appends a C++ backtrace; the first line is the useful part.
pub fn first_line(err: &tch::TchError) -> String {
    err.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

pub fn torch_error(err: tch::TchError) -> GenerationError {
    GenerationError::Engine(first_line(&err))
}

pub fn generate_error(err: GenerateError) -> GenerationError {
    match err {
        GenerateError::Canceled => GenerationError::Canceled,
        GenerateError::Rejected(reason) => GenerationError::Rejected(reason),
        GenerateError::Torch(err) => torch_error(err),
    }
}

/// An engine that can also say which codes each clip was decoded from (the
/// `generate` command's `--codes-out`, the parity tests), whatever its model.
pub trait CodesGenerator: sound_creator_core::audio::AudioGenerator {
    /// Like `AudioGenerator::generate`, also returning each clip's codes.
    fn clips_with_codes(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<GeneratedClip>, GenerationError>;

    /// Whether decoding steps on CUDA are captured as graphs.
    fn use_cuda_graphs(&mut self, on: bool);

    /// How its decoding steps run, for the logs.
    fn decoding_step_mode(&self) -> Option<crate::generation::StepMode>;
}

/// The [`sound_creator_core::audio::AudioGenerator`] port (the clips
/// without their codes) and [`CodesGenerator`] for an engine with `info`
/// and the inherent `generate_with_codes` and `set_cuda_graphs`.
macro_rules! audio_generator_port {
    ($engine:ty) => {
        impl $crate::batching::CodesGenerator for $engine {
            fn clips_with_codes(
                &self,
                batch: &[sound_creator_core::audio::ClipRequest],
                observer: &mut dyn sound_creator_core::audio::StepObserver,
            ) -> Result<Vec<$crate::batching::GeneratedClip>, GenerationError> {
                self.generate_with_codes(batch, observer)
            }

            fn use_cuda_graphs(&mut self, on: bool) {
                self.set_cuda_graphs(on);
            }

            fn decoding_step_mode(&self) -> Option<$crate::generation::StepMode> {
                self.step_mode()
            }
        }

        impl sound_creator_core::audio::AudioGenerator for $engine {
            fn info(&self) -> sound_creator_core::audio::ModelInfo {
                self.info.clone()
            }

            fn generate(
                &self,
                batch: &[sound_creator_core::audio::ClipRequest],
                observer: &mut dyn sound_creator_core::audio::StepObserver,
            ) -> Result<Vec<sound_creator_core::audio::Clip>, GenerationError> {
                Ok(self
                    .generate_with_codes(batch, observer)?
                    .into_iter()
                    .map(|g| g.clip)
                    .collect())
            }
        }
    };
}
pub(crate) use audio_generator_port;

#[cfg(test)]
mod tests {
    use super::*;

    fn request(seed: u64) -> ClipRequest {
        ClipRequest {
            prompt: "p".to_owned(),
            duration: 1.0,
            params: GenerationParams {
                seed: Some(seed),
                ..GenerationParams::default()
            },
            melody: None,
        }
    }

    #[test]
    fn clips_with_the_same_settings_share_a_group_in_first_seen_order() {
        let batch = [request(2), request(1), request(2), request(3), request(1)];
        let groups: Vec<(Option<u64>, Vec<usize>)> = group_by_params(&batch)
            .into_iter()
            .map(|(p, m)| (p.seed, m))
            .collect();
        assert_eq!(
            groups,
            vec![
                (Some(2), vec![0, 2]),
                (Some(1), vec![1, 4]),
                (Some(3), vec![3])
            ]
        );
    }

    #[test]
    fn a_clip_is_cut_to_its_duration_and_interleaved_by_channel() {
        // Two rows of stereo audio, 4 samples a channel at 4 Hz.
        let audio = Tensor::arange(16, (tch::Kind::Float, tch::Device::Cpu)).view([2, 2, 4]);
        let codes = Tensor::arange(12, (tch::Kind::Int64, tch::Device::Cpu)).view([2, 2, 3]);
        let mut req = request(1);
        req.duration = 0.5;
        let slot = ClipSlot {
            row: 1,
            request: &req,
            frames: 2,
            sample_rate: 4,
            channels: 2,
        };
        let clip = cut_clip(&audio, &codes, &slot).expect("cut");
        // Row 1: left 8..12, right 12..16; the first 2 samples of each.
        assert_eq!(clip.clip.samples, vec![8.0, 12.0, 9.0, 13.0]);
        assert_eq!(clip.clip.channels, 2);
        assert_eq!(clip.codes, vec![vec![6, 7], vec![9, 10]]);
    }

    #[test]
    fn a_missing_clip_is_an_engine_error() {
        assert!(matches!(
            all_generated(vec![None]),
            Err(GenerationError::Engine(_))
        ));
    }
}
