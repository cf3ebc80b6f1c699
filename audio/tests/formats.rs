//! Every output format, checked by an independent decoder (Python's
//! soundfile, i.e. libsndfile's own FLAC, mpg123 and libvorbis readers,
//! installed by scripts/setup.sh) for length, rate and channels, and decoded
//! back by this crate's own decoder.
//!
//! The Python interpreter is `SOUND_CREATOR_PYTHON`, else `python3` on PATH
//! (the project's .venv once `eval "$(bash scripts/setup.sh)"` has run).

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sound_creator_audio::{decode_upload, encode, Clip, DecodeLimits, OutputFormat};

/// A few harmonic tones, a different one per channel so a swap would show;
/// an odd frame count, so no encoder block size divides it.
fn test_clip(sample_rate: u32, channels: u16) -> Clip {
    let frames = (sample_rate as usize * 13) / 10 + 7;
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        let t = i as f64 / f64::from(sample_rate);
        for ch in 0..channels {
            let f = if ch == 0 { 440.0 } else { 660.0 };
            let s = 0.4 * (2.0 * std::f64::consts::PI * f * t).sin()
                + 0.2 * (2.0 * std::f64::consts::PI * 2.0 * f * t).sin();
            samples.push(s as f32);
        }
    }
    Clip {
        samples,
        sample_rate,
        channels,
    }
}

struct Probe {
    info: Value,
    samples: Vec<f32>,
}

fn soundfile_decode(bytes: &[u8], extension: &str) -> Probe {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(format!("clip.{extension}"));
    let out = dir.path().join("decoded.f32");
    std::fs::write(&file, bytes).unwrap();
    let python = std::env::var("SOUND_CREATOR_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/soundfile_probe.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg(&file)
        .arg(&out)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {python}: {err}"));
    assert!(
        output.status.success(),
        "the independent decoder (Python's soundfile, run with {python}) failed; \
         `eval \"$(bash scripts/setup.sh)\"` installs it into .venv:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let info: Value = serde_json::from_slice(&output.stdout).unwrap();
    let raw = std::fs::read(&out).unwrap();
    let samples = raw
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Probe { info, samples }
}

/// The clip as the WAV holds it: 16-bit, read back as i16 / 32768 (how both
/// libsndfile and symphonia turn 16-bit PCM into floats).
fn as_pcm16_floats(clip: &Clip) -> Vec<f32> {
    clip.samples
        .iter()
        .map(|&s| f32::from((s.clamp(-1.0, 1.0) * 32767.0).round() as i16) / 32768.0)
        .collect()
}

/// Signal-to-noise ratio in dB of `decoded` against `reference`, sample for
/// sample with no shift: a lossy decoder that did not trim the encoder's
/// delay would score near 0.
fn snr_db(reference: &[f32], decoded: &[f32]) -> f64 {
    let signal: f64 = reference.iter().map(|&s| f64::from(s).powi(2)).sum();
    let noise: f64 = reference
        .iter()
        .zip(decoded)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    10.0 * (signal / noise.max(1e-30)).log10()
}

fn check_format(format: OutputFormat, sample_rate: u32, channels: u16) {
    let clip = test_clip(sample_rate, channels);
    let encoded = encode(&clip, format).unwrap();
    assert_eq!(encoded.content_type(), format.content_type());
    let label = format!("{format} {sample_rate} Hz x{channels}");

    let probe = soundfile_decode(&encoded.bytes, encoded.extension());
    assert_eq!(
        probe.info["sample_rate"], sample_rate,
        "{label}: {}",
        probe.info
    );
    assert_eq!(probe.info["channels"], channels, "{label}: {}", probe.info);
    assert_eq!(
        probe.info["frames"].as_u64().unwrap() as usize,
        clip.frames(),
        "{label}: frames, {}",
        probe.info
    );

    let own = decode_upload(
        &encoded.bytes,
        format.content_type(),
        &DecodeLimits::default(),
    )
    .unwrap_or_else(|err| panic!("{label}: own decoder: {err}"));
    assert_eq!(own.clip.sample_rate, sample_rate, "{label}");
    assert_eq!(own.clip.channels, channels, "{label}");
    assert_eq!(
        own.clip.frames(),
        clip.frames(),
        "{label}: own decoder's frames"
    );
    assert!(!own.truncated);

    match format {
        OutputFormat::Wav | OutputFormat::Flac => {
            let pcm = as_pcm16_floats(&clip);
            assert_eq!(probe.samples, pcm, "{label}: soundfile's samples");
            assert_eq!(own.clip.samples, pcm, "{label}: own decoder's samples");
        }
        OutputFormat::Mp3 | OutputFormat::Ogg => {
            let theirs = snr_db(&clip.samples, &probe.samples);
            let ours = snr_db(&clip.samples, &own.clip.samples);
            eprintln!("{label}: SNR {theirs:.1} dB (soundfile), {ours:.1} dB (own decoder)");
            assert!(
                theirs > 15.0,
                "{label}: soundfile's decode is {theirs:.1} dB SNR"
            );
            assert!(ours > 15.0, "{label}: own decode is {ours:.1} dB SNR");
        }
    }
}

#[test]
fn wav_decodes_independently_mono_and_stereo_at_32_and_16_khz() {
    for (rate, channels) in [(32_000, 1), (32_000, 2), (16_000, 1), (16_000, 2)] {
        check_format(OutputFormat::Wav, rate, channels);
    }
}

#[test]
fn flac_decodes_independently_to_the_wavs_exact_samples() {
    for (rate, channels) in [(32_000, 1), (32_000, 2), (16_000, 1), (16_000, 2)] {
        check_format(OutputFormat::Flac, rate, channels);
    }
}

#[test]
fn mp3_decodes_independently_with_the_clips_exact_length() {
    for (rate, channels) in [(32_000, 1), (32_000, 2), (16_000, 1), (16_000, 2)] {
        check_format(OutputFormat::Mp3, rate, channels);
    }
}

#[test]
fn ogg_vorbis_decodes_independently_with_the_clips_exact_length() {
    for (rate, channels) in [(32_000, 1), (32_000, 2), (16_000, 1), (16_000, 2)] {
        check_format(OutputFormat::Ogg, rate, channels);
    }
}

#[test]
fn wav_is_byte_identical_to_the_encoder_outputs_always_went_through() {
    let mut clip = test_clip(32_000, 2);
    clip.samples[3] = 1.7;
    clip.samples[8] = -4.0;
    clip.samples[10] = f32::NAN;
    clip.samples[11] = f32::NEG_INFINITY;
    clip.samples[12] = -1.0;
    let core_clip = sound_creator_core::audio::Clip {
        samples: clip.samples.clone(),
        sample_rate: clip.sample_rate,
        channels: clip.channels,
    };
    let ours = encode(&clip, OutputFormat::Wav).unwrap();
    assert_eq!(
        ours.bytes,
        sound_creator_core::audio::encode_wav(&core_clip)
    );
    let mono = test_clip(16_000, 1);
    let core_mono = sound_creator_core::audio::Clip {
        samples: mono.samples.clone(),
        sample_rate: 16_000,
        channels: 1,
    };
    assert_eq!(
        encode(&mono, OutputFormat::Wav).unwrap().bytes,
        sound_creator_core::audio::encode_wav(&core_mono)
    );
}
