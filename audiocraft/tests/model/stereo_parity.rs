//! Parity of the stereo MusicGen layout with Hugging Face `transformers` on
//! the tiny random-weight checkpoint in `tests/fixtures/tiny-musicgen-stereo`
//! (8 codebooks, left and right interleaved, a mono EnCodec per channel),
//! whose references were recorded by
//! `tests/fixtures/make_musicgen_stereo_fixture.py`.

use std::path::PathBuf;

use super::fixtures::{fixture, max_abs_diff, musicgen, Reference};

use sound_creator_audiocraft::generation::{Continue, GenerateOptions, StepMode};
use sound_creator_audiocraft::sampling::Decoding;
use sound_creator_audiocraft::MusicGenEngine;
use sound_creator_core::audio::{AudioGenerator, ClipRequest, RunToEnd};
use sound_creator_core::request::GenerationParams;
use tch::{Kind, Tensor};

fn fixture_dir() -> PathBuf {
    fixture("tiny-musicgen-stereo")
}

fn engine() -> MusicGenEngine {
    musicgen(&fixture_dir(), Kind::Float)
}

fn reference() -> (Reference, Vec<String>) {
    let reference = Reference::of(&fixture_dir());
    let prompts = reference.prompts.clone();
    (reference, prompts)
}

#[test]
fn stereo_logits_match_transformers_within_1e_4() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let engine = engine();
    assert_eq!(engine.info().channels, 2);
    let cfg = engine.config().decoder.clone();
    assert_eq!(cfg.num_codebooks, 8);
    let dec_ids = &reference["decoder_input_ids"];
    let len = dec_ids.size()[1];
    let codes = dec_ids.view([-1, cfg.num_codebooks, len]);
    let logits = engine.logits(&prompts, &codes).expect("logits");
    let expected = reference["logits"].view([-1, cfg.num_codebooks, len, cfg.vocab_size]);
    assert_eq!(logits.size(), expected.size());
    let diff = max_abs_diff(&logits, &expected);
    eprintln!("stereo logits max abs diff vs transformers: {diff:e}");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn stereo_greedy_codes_match_transformers_in_both_step_modes() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let expected = &reference["greedy_codes"]; // [batch, 8, frames], interleaved
    let frames = expected.size()[2];
    let options = GenerateOptions {
        decoding: Decoding::Greedy,
        guidance_scale: 3.0,
        seed: None,
    };
    let mut engine = engine();
    for mode in [StepMode::Eager, StepMode::DeviceIndexed] {
        engine.set_step_mode(mode);
        let mut reports = Vec::new();
        let codes = engine
            .generate_codes(&prompts, frames, &options, &mut |done, total| {
                reports.push((done, total));
                Continue::Yes
            })
            .expect("generate");
        // Each left/right pair shares a delay: frames + 4 - 1 steps, not + 7.
        assert_eq!(
            reports.last(),
            Some(&((frames + 3) as usize, (frames + 3) as usize))
        );
        assert_eq!(codes.size(), expected.size());
        let mismatches = codes.ne_tensor(expected).sum(Kind::Int64).int64_value(&[]);
        assert_eq!(
            mismatches, 0,
            "{mode:?}: ours {codes}\nreference {expected}"
        );
    }
}

#[test]
fn each_channel_decodes_its_own_codebooks_as_transformers_does() {
    let (reference, _) = reference();
    let engine = engine();
    for (codes, audio) in [
        ("encodec_codes", "encodec_audio"),
        ("greedy_codes", "greedy_audio"),
    ] {
        let ours = engine.decode_audio(&reference[codes]).expect("decode");
        let expected = &reference[audio]; // [batch, 2, samples]
        assert_eq!(ours.size(), expected.size(), "{audio}");
        let diff = max_abs_diff(&ours, expected);
        eprintln!("{audio} max abs diff vs transformers: {diff:e}");
        assert!(diff <= 1e-4, "{audio}: max abs diff {diff}");
    }
}

#[test]
fn a_stereo_clip_has_two_interleaved_channels() {
    let (reference, prompts) = reference();
    let engine = engine();
    let params = GenerationParams {
        temperature: 0.0,
        cfg_coef: 3.0,
        ..GenerationParams::default()
    };
    // 0.74 s: the reference's 37 frames, both prompts padded as there.
    let batch: Vec<ClipRequest> = prompts
        .iter()
        .map(|p| ClipRequest::new(p.clone(), 0.74, params.clone()))
        .collect();
    let clips = engine
        .generate_with_codes(&batch, &mut RunToEnd)
        .expect("generate");
    let audio = &reference["greedy_audio"]; // [batch, 2, samples]
    for (row, clip) in clips.iter().enumerate() {
        assert_eq!((clip.clip.channels, clip.clip.sample_rate), (2, 32_000));
        let samples = (0.74f64 * 32_000.0).round() as usize;
        assert_eq!(clip.clip.samples.len(), 2 * samples);
        assert!((clip.clip.duration_seconds() - 0.74).abs() < 1e-9);
        let expected_codes =
            Vec::<Vec<i64>>::try_from(reference["greedy_codes"].get(row as i64)).expect("codes");
        assert_eq!(clip.codes, expected_codes, "clip {row}");
        // Frame-major: left, right, left, right...
        let ours = Tensor::from_slice(&clip.clip.samples)
            .view([samples as i64, 2])
            .transpose(0, 1);
        let expected = audio.get(row as i64).narrow(1, 0, samples as i64);
        let diff = max_abs_diff(&ours, &expected);
        assert!(diff <= 1e-4, "clip {row}: max abs diff {diff}");
        // Two different channels, not one copied.
        assert!(max_abs_diff(&ours.get(0), &ours.get(1)) > 1e-3);
    }
}
