//! Level normalization of a generated clip before it is encoded: the
//! request's `normalization`.
//!
//! `none` must leave every sample bit for bit as the model made it (the
//! default keeps today's output). The other modes never make a clip clip:
//! `loudness` caps its gain so the true peak stays at or below
//! [`TRUE_PEAK_CEILING_DBTP`], so a clip with a spike ends quieter than the
//! target rather than distorted. A silent clip is left as it is (its
//! loudness is -inf; no gain could reach a target from it), and so is one
//! shorter than EBU R128's 400 ms measuring block, which has no integrated
//! loudness.

use ebur128::{EbuR128, Mode};

use crate::{AudioError, Clip, Normalization};

/// EBU R128 integrated loudness target of `loudness`, the level streaming
/// services play music at.
pub const LOUDNESS_TARGET_LUFS: f64 = -14.0;
/// The highest true peak `loudness` may leave, in dB relative to full scale
/// (EBU R128's recommendation for lossy delivery).
pub const TRUE_PEAK_CEILING_DBTP: f64 = -1.0;
/// The largest sample after `peak`.
pub const PEAK_TARGET_DBFS: f64 = -1.0;

/// Applies `how` to `clip` in place.
pub fn normalize(clip: &mut Clip, how: Normalization) -> Result<(), AudioError> {
    match how {
        Normalization::None => Ok(()),
        Normalization::Clip => {
            for s in &mut clip.samples {
                *s = if s.is_finite() {
                    s.clamp(-1.0, 1.0)
                } else {
                    0.0
                };
            }
            Ok(())
        }
        Normalization::Peak => {
            clip.check()?;
            zero_non_finite(clip);
            let peak = clip.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            if peak > 0.0 {
                apply_gain(clip, db_to_gain(PEAK_TARGET_DBFS) / f64::from(peak));
            }
            Ok(())
        }
        Normalization::Loudness => {
            clip.check()?;
            zero_non_finite(clip);
            let (loudness, true_peak) = measure(clip)?;
            if !loudness.is_finite() || true_peak <= 0.0 {
                return Ok(());
            }
            let gain_db = (LOUDNESS_TARGET_LUFS - loudness)
                .min(TRUE_PEAK_CEILING_DBTP - 20.0 * true_peak.log10());
            apply_gain(clip, db_to_gain(gain_db));
            Ok(())
        }
    }
}

/// Integrated loudness (LUFS; -inf for silence) and the largest true peak of
/// any channel (linear).
pub(crate) fn measure(clip: &Clip) -> Result<(f64, f64), AudioError> {
    let failed = |err: ebur128::Error| AudioError::InvalidClip(format!("loudness meter: {err}"));
    let mut meter = EbuR128::new(
        u32::from(clip.channels),
        clip.sample_rate,
        Mode::I | Mode::TRUE_PEAK,
    )
    .map_err(failed)?;
    meter.add_frames_f32(&clip.samples).map_err(failed)?;
    let loudness = meter.loudness_global().map_err(failed)?;
    let mut true_peak = 0.0f64;
    for channel in 0..u32::from(clip.channels) {
        true_peak = true_peak.max(meter.true_peak(channel).map_err(failed)?);
    }
    Ok((loudness, true_peak))
}

fn db_to_gain(db: f64) -> f64 {
    10f64.powf(db / 20.0)
}

fn apply_gain(clip: &mut Clip, gain: f64) {
    for s in &mut clip.samples {
        *s = (f64::from(*s) * gain) as f32;
    }
}

fn zero_non_finite(clip: &mut Clip) {
    for s in &mut clip.samples {
        if !s.is_finite() {
            *s = 0.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(amplitude: f32, freq: f64, rate: u32, seconds: f64, channels: u16) -> Clip {
        let n = (seconds * f64::from(rate)) as usize;
        let samples = (0..n)
            .flat_map(|i| {
                let s = amplitude
                    * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin() as f32;
                std::iter::repeat_n(s, usize::from(channels))
            })
            .collect();
        Clip {
            samples,
            sample_rate: rate,
            channels,
        }
    }

    fn peak(clip: &Clip) -> f32 {
        clip.samples.iter().fold(0.0, |m, s| m.max(s.abs()))
    }

    #[test]
    fn a_sine_measures_its_known_loudness() {
        // EBU Tech 3341 case 1: a 1 kHz stereo sine at -23 dBFS reads -23 LUFS;
        // the same sine in one channel reads 3.01 dB less.
        let amplitude = 10f32.powf(-23.0 / 20.0);
        let (stereo, _) = measure(&sine(amplitude, 1000.0, 48_000, 20.0, 2)).unwrap();
        assert!((stereo + 23.0).abs() < 0.1, "{stereo}");
        let (mono, _) = measure(&sine(amplitude, 1000.0, 32_000, 20.0, 1)).unwrap();
        assert!((mono + 26.01).abs() < 0.1, "{mono}");
    }

    #[test]
    fn loudness_brings_a_sine_to_minus_14_lufs() {
        // A mono 1 kHz sine at amplitude 0.1 is -23.0 LUFS: +9 dB to go,
        // i.e. amplitude 0.1 * 10^(9/20) = 0.2818; its true peak -11 dBTP is
        // far from the ceiling.
        let mut clip = sine(0.1, 1000.0, 32_000, 10.0, 1);
        normalize(&mut clip, Normalization::Loudness).unwrap();
        let (loudness, _) = measure(&clip).unwrap();
        assert!((loudness - LOUDNESS_TARGET_LUFS).abs() < 0.05, "{loudness}");
        assert!((peak(&clip) - 0.2818).abs() < 0.002, "{}", peak(&clip));
    }

    #[test]
    fn loudness_never_pushes_a_spike_past_the_true_peak_ceiling() {
        let mut clip = sine(0.01, 440.0, 32_000, 5.0, 1);
        clip.samples[40_000] = 50.0;
        normalize(&mut clip, Normalization::Loudness).unwrap();
        let (loudness, true_peak) = measure(&clip).unwrap();
        assert!(20.0 * true_peak.log10() <= TRUE_PEAK_CEILING_DBTP + 1e-3);
        assert!(peak(&clip) < 1.0);
        // The ceiling, not the target, set the gain.
        assert!(loudness < LOUDNESS_TARGET_LUFS - 3.0, "{loudness}");
    }

    #[test]
    fn silence_stays_silent_in_every_mode() {
        for how in Normalization::ALL {
            let mut clip = Clip {
                samples: vec![0.0; 64_000],
                sample_rate: 32_000,
                channels: 2,
            };
            normalize(&mut clip, how).unwrap();
            assert!(clip.samples.iter().all(|&s| s == 0.0), "{how}");
        }
    }

    #[test]
    fn a_clip_shorter_than_one_measuring_block_is_left_as_it_is() {
        let original = sine(0.1, 1000.0, 32_000, 0.3, 1);
        let mut clip = original.clone();
        normalize(&mut clip, Normalization::Loudness).unwrap();
        assert_eq!(clip, original);
    }

    #[test]
    fn peak_puts_the_largest_sample_at_minus_1_dbfs() {
        let mut clip = sine(0.01, 440.0, 16_000, 1.0, 2);
        clip.samples[100] = -3.0;
        normalize(&mut clip, Normalization::Peak).unwrap();
        assert!((peak(&clip) - 0.891_25).abs() < 1e-4);
        assert!((clip.samples[100] + 0.891_25).abs() < 1e-4);
    }

    #[test]
    fn clip_bounds_samples_and_zeroes_non_finite_ones() {
        let mut clip = Clip {
            samples: vec![0.5, 7.0, -1.5, f32::NAN, f32::INFINITY, -0.25],
            sample_rate: 32_000,
            channels: 1,
        };
        normalize(&mut clip, Normalization::Clip).unwrap();
        assert_eq!(clip.samples, vec![0.5, 1.0, -1.0, 0.0, 0.0, -0.25]);
    }

    #[test]
    fn none_is_the_identity_bit_for_bit() {
        let original = Clip {
            samples: vec![0.1, f32::NAN, 3.0, -0.0, f32::MIN_POSITIVE],
            sample_rate: 32_000,
            channels: 1,
        };
        let mut clip = original.clone();
        normalize(&mut clip, Normalization::None).unwrap();
        let bits = |c: &Clip| c.samples.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&clip), bits(&original));
    }
}
