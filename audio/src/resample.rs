//! Channel downmix and sample-rate conversion (rubato's FFT resampler).
//!
//! Used to bring an uploaded melody to the model's 32 kHz mono, and an output
//! to a rate an encoder needs. It must never change the length of a clip
//! other than by the rate ratio, nor shift it: rubato's startup delay is
//! trimmed, so the output lines up with the input to within half a sample
//! (rubato trims whole output frames).

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

use crate::{AudioError, Clip};

/// The rate MusicGen-melody's chroma extractor works at (declared with the
/// generator port, whose melody input is at this rate).
pub use sound_creator_core::audio::MELODY_SAMPLE_RATE;

/// Frames per chunk the resampler works on; its FFT sizes follow from this
/// and the two rates.
const CHUNK_FRAMES: usize = 1024;

/// Makes samples safe for the arithmetic downstream: non-finite ones become
/// 0, magnitudes are capped at 1e6 (full scale is 1).
pub(crate) fn sanitize(samples: &mut [f32]) {
    let cap = crate::decode::MAX_SAMPLE_MAGNITUDE;
    for sample in samples {
        *sample = if sample.is_finite() {
            sample.clamp(-cap, cap)
        } else {
            0.0
        };
    }
}

fn is_sane(sample: f32) -> bool {
    sample.is_finite() && sample.abs() <= crate::decode::MAX_SAMPLE_MAGNITUDE
}

/// Averages the channels into one, as transformers' feature extractor
/// (`stereo.mean(dim=0)`) and audiocraft's `convert_audio_channels` do.
pub fn downmix_to_mono(clip: &Clip) -> Clip {
    let channels = usize::from(clip.channels.max(1));
    let samples = if channels == 1 {
        clip.samples.clone()
    } else {
        clip.samples
            .chunks_exact(channels)
            .map(|frame| frame.iter().sum::<f32>() / channels as f32)
            .collect()
    };
    Clip {
        samples,
        sample_rate: clip.sample_rate,
        channels: 1,
    }
}

/// Resamples every channel of `clip` to `target_rate`. The output has
/// `ceil(frames * target_rate / sample_rate)` frames. Non-finite input
/// samples are taken as 0 and magnitudes past 1e6 as 1e6 (rubato's FFT
/// would otherwise overflow and panic).
pub fn resample(clip: &Clip, target_rate: u32) -> Result<Clip, AudioError> {
    clip.check()?;
    if target_rate == 0 {
        return Err(AudioError::Resample("the target rate is 0 Hz".into()));
    }
    if clip.sample_rate == target_rate || clip.samples.is_empty() {
        return Ok(Clip {
            samples: clip.samples.clone(),
            sample_rate: target_rate,
            channels: clip.channels,
        });
    }
    let channels = usize::from(clip.channels);
    let frames = clip.frames();
    let sanitized;
    let samples = if clip.samples.iter().all(|&s| is_sane(s)) {
        &clip.samples
    } else {
        sanitized = {
            let mut copy = clip.samples.clone();
            sanitize(&mut copy);
            copy
        };
        &sanitized
    };
    let mut resampler = Fft::<f32>::new(
        clip.sample_rate as usize,
        target_rate as usize,
        CHUNK_FRAMES,
        channels,
        FixedSync::Input,
    )
    .map_err(|err| AudioError::Resample(err.to_string()))?;
    let input = InterleavedSlice::new(samples, channels, frames)
        .map_err(|err| AudioError::Resample(err.to_string()))?;
    let output = resampler
        .process_all(&input, frames, None)
        .map_err(|err| AudioError::Resample(err.to_string()))?;
    Ok(Clip {
        samples: output.take_data(),
        sample_rate: target_rate,
        channels: clip.channels,
    })
}

/// What the melody chromagram is computed from: `clip` averaged to mono and
/// resampled to [`MELODY_SAMPLE_RATE`].
///
/// transformers resamples with torchaudio's windowed sinc (rolloff 0.945) and
/// audiocraft with julius; this uses rubato, so the samples differ from
/// theirs by the filters' small differences in the stop band, which the
/// chroma's argmax does not see.
pub fn melody_input(clip: &Clip) -> Result<Vec<f32>, AudioError> {
    clip.check()?;
    let mono = downmix_to_mono(clip);
    Ok(resample(&mono, MELODY_SAMPLE_RATE)?.samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, rate: u32, seconds: f64) -> Vec<f32> {
        let n = (seconds * f64::from(rate)) as usize;
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    #[test]
    fn downmix_averages_the_channels() {
        let clip = Clip {
            samples: vec![1.0, 0.0, 0.5, -0.5],
            sample_rate: 8000,
            channels: 2,
        };
        assert_eq!(downmix_to_mono(&clip).samples, vec![0.5, 0.0]);
    }

    #[test]
    fn resampling_keeps_the_length_ratio_and_the_phase() {
        let rate_in = 44_100;
        let input = Clip {
            samples: sine(440.0, rate_in, 1.0),
            sample_rate: rate_in,
            channels: 1,
        };
        let out = resample(&input, 32_000).unwrap();
        assert_eq!(out.sample_rate, 32_000);
        assert_eq!(out.samples.len(), 32_000);
        // The delay is trimmed: the output is the same sine, sampled anew,
        // shifted by less than half a sample.
        let deviation = |lag: f64| {
            (500..31_500)
                .map(|i| {
                    let t = (i as f64 + lag) / 32_000.0;
                    (f64::from(out.samples[i]) - (2.0 * std::f64::consts::PI * 440.0 * t).sin())
                        .abs()
                })
                .fold(0.0, f64::max)
        };
        let best = (-10..=10)
            .map(|step| deviation(f64::from(step) / 20.0))
            .fold(f64::INFINITY, f64::min);
        assert!(best < 5e-3, "largest deviation {best}");
    }

    #[test]
    fn stereo_resampling_keeps_the_channels_apart() {
        let left = sine(300.0, 48_000, 0.5);
        let samples = left.iter().flat_map(|&l| [l, 0.0]).collect();
        let input = Clip {
            samples,
            sample_rate: 48_000,
            channels: 2,
        };
        let out = resample(&input, 16_000).unwrap();
        assert_eq!(out.frames(), 8_000);
        let right_energy: f32 = out.samples.iter().skip(1).step_by(2).map(|s| s * s).sum();
        let left_energy: f32 = out.samples.iter().step_by(2).map(|s| s * s).sum();
        assert!(right_energy < 1e-6 && left_energy > 3_000.0);
    }

    #[test]
    fn non_finite_and_huge_samples_do_not_break_the_resampler() {
        let mut samples = sine(440.0, 44_100, 0.5);
        samples[100] = f32::NAN;
        samples[200] = f32::INFINITY;
        samples[300] = 7.7e34;
        samples[400] = -3.0e38;
        let clip = Clip {
            samples,
            sample_rate: 44_100,
            channels: 1,
        };
        let out = resample(&clip, 32_000).unwrap();
        assert!(out.samples.iter().all(|s| s.is_finite()));
    }

    #[test]
    fn melody_input_is_mono_at_32_khz() {
        let clip = Clip {
            samples: vec![0.25; 2 * 22_050],
            sample_rate: 22_050,
            channels: 2,
        };
        let wav = melody_input(&clip).unwrap();
        assert_eq!(wav.len(), 32_000);
        assert!((wav[16_000] - 0.25).abs() < 1e-3);
    }
}
