//! The melody chromagram against what transformers'
//! `MusicgenMelodyFeatureExtractor` computed on the same samples (recorded
//! by tests/fixtures/make_chroma_fixture.py into tests/fixtures/melody-chroma):
//! at 32 kHz mono exactly, and through resampling and downmix roughly.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use serde_json::Value;
use sound_creator_audio::{
    decode_upload, fit_chroma_length, melody_chroma, melody_input, ChromaConfig, ChromaExtractor,
    DecodeLimits,
};

fn fixture(name: &str) -> (Vec<f32>, Value) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/melody-chroma");
    let wav = std::fs::read(dir.join(format!("{name}.wav"))).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let decoded = decode_upload(&wav, "audio/wav", &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.clip.sample_rate, 32_000);
    assert_eq!(decoded.clip.channels, 1);
    assert_eq!(
        decoded.clip.samples.len() as u64,
        expected["samples"].as_u64().unwrap()
    );
    // The extractor was fed int16 / 32768, and so is this side.
    let pcm: Vec<i16> = wav[44..]
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    assert!(decoded
        .clip
        .samples
        .iter()
        .zip(&pcm)
        .all(|(&s, &p)| s == f32::from(p) / 32768.0));
    (decoded.clip.samples, expected)
}

fn check_case(name: &str) {
    let (wav, expected) = fixture(name);
    let extractor = ChromaExtractor::new(ChromaConfig::musicgen_melody());
    let normalized = extractor.normalized_chroma(&wav);
    let frames = expected["frames"].as_u64().unwrap() as usize;
    assert_eq!(normalized.frames(), frames, "{name}: frame count");
    assert_eq!(normalized.num_chroma, 12);

    let hot: Vec<usize> = expected["one_hot_bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let one_hot = melody_chroma(&wav);
    assert_eq!(one_hot.argmax(), hot, "{name}: one-hot frames");
    assert!(one_hot.values.iter().all(|&v| v == 0.0 || v == 1.0));
    assert_eq!(one_hot.values.iter().sum::<f32>(), frames as f32);

    let reference = expected["normalised_chroma"].as_array().unwrap();
    let mut worst = 0.0f64;
    for (t, row) in reference.iter().enumerate() {
        for (c, v) in row.as_array().unwrap().iter().enumerate() {
            let diff = (f64::from(normalized.frame(t)[c]) - v.as_f64().unwrap()).abs();
            worst = worst.max(diff);
        }
    }
    eprintln!("{name}: largest difference from transformers {worst:.2e}");
    // torch computes in f32, this side in f64: differences are rounding.
    assert!(worst < 1e-5, "{name}: largest difference {worst}");
}

#[test]
fn chroma_of_a_melody_matches_transformers() {
    check_case("tones");
}

#[test]
fn chroma_of_a_clip_shorter_than_one_window_matches_transformers() {
    check_case("short");
}

#[test]
fn the_recorded_chroma_tiles_to_the_models_235_frames() {
    let (wav, expected) = fixture("tones");
    let chroma = fit_chroma_length(&melody_chroma(&wav), 235);
    assert_eq!(chroma.frames(), 235);
    let hot = expected["one_hot_bin"].as_array().unwrap();
    let argmax = chroma.argmax();
    for (t, bin) in argmax.iter().enumerate() {
        assert_eq!(*bin as u64, hot[t % hot.len()].as_u64().unwrap());
    }
}

#[test]
fn chroma_of_a_44k_stereo_upload_agrees_with_transformers_through_resampling() {
    // transformers resamples with torchaudio's windowed sinc and this crate
    // with rubato; the downmix is the same mean. The one-hot frames must be
    // identical, the values only close.
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/melody-chroma");
    let flac = std::fs::read(dir.join("stereo-44k.flac")).unwrap();
    let expected: Value =
        serde_json::from_slice(&std::fs::read(dir.join("stereo-44k.json")).unwrap()).unwrap();
    let decoded = decode_upload(&flac, "audio/flac", &DecodeLimits::default()).unwrap();
    assert_eq!(decoded.clip.sample_rate, 44_100);
    assert_eq!(decoded.clip.channels, 2);
    assert_eq!(
        decoded.clip.frames() as u64,
        expected["samples"].as_u64().unwrap()
    );
    let wav = melody_input(&decoded.clip).unwrap();
    let normalized = ChromaExtractor::new(ChromaConfig::musicgen_melody()).normalized_chroma(&wav);
    assert_eq!(
        normalized.frames() as u64,
        expected["frames"].as_u64().unwrap()
    );
    let hot: Vec<usize> = expected["one_hot_bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(normalized.argmax(), hot);
    let mut worst = 0.0f64;
    for (t, row) in expected["normalised_chroma"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        for (c, v) in row.as_array().unwrap().iter().enumerate() {
            worst = worst.max((f64::from(normalized.frame(t)[c]) - v.as_f64().unwrap()).abs());
        }
    }
    eprintln!("stereo-44k: largest difference from transformers {worst:.2e}");
    assert!(worst < 5e-3, "largest difference {worst}");
}
