//! Parity of MusicGen-melody with Hugging Face `transformers`
//! (`MusicgenMelodyForConditionalGeneration` and its feature extractor) on
//! the tiny random-weight checkpoint in `tests/fixtures/tiny-musicgen-melody`,
//! whose references were recorded by
//! `tests/fixtures/make_musicgen_melody_fixture.py`: the melody's chroma,
//! the decoder's prefix (projected chroma, then projected text), the
//! teacher-forced logits and greedy codes with and without a melody.

use std::path::PathBuf;

use super::fixtures::{fixture, greedy, max_abs_diff, musicgen, Reference};

use sound_creator_audio::{melody_chroma, Chromagram};
use sound_creator_audiocraft::generation::{Continue, StepMode};
use sound_creator_audiocraft::musicgen_melody::MelodyChroma;
use sound_creator_audiocraft::MusicGenEngine;
use sound_creator_core::audio::{
    decode_wav, AudioGenerator, ClipRequest, MelodyInput, RunToEnd, MELODY_SAMPLE_RATE,
};
use sound_creator_core::request::GenerationParams;
use tch::{Kind, Tensor};

fn fixture_dir() -> PathBuf {
    fixture("tiny-musicgen-melody")
}

fn engine() -> MusicGenEngine {
    musicgen(&fixture_dir(), Kind::Float)
}

fn reference() -> (Reference, Vec<String>) {
    let reference = Reference::of(&fixture_dir());
    let prompts = reference.prompts.clone();
    (reference, prompts)
}

/// melody.wav as the fixture script reads it: int16 / 32768.
fn melody_samples() -> Vec<f32> {
    let bytes = std::fs::read(fixture_dir().join("melody.wav")).expect("melody.wav");
    let (header, samples) = decode_wav(&bytes).expect("16-bit wav");
    assert_eq!(
        (header.channels, header.sample_rate),
        (1, MELODY_SAMPLE_RATE)
    );
    samples.iter().map(|&s| f32::from(s) / 32768.0).collect()
}

fn chroma_tensor(chroma: &Chromagram) -> Tensor {
    Tensor::from_slice(&chroma.values).view([-1, chroma.num_chroma as i64])
}

#[test]
fn the_melody_chroma_is_the_feature_extractors() {
    let (reference, _) = reference();
    let chroma = melody_chroma(&melody_samples());
    let expected = reference["melody_input_features"].get(0); // [frames, 12]
    let ours = chroma_tensor(&chroma);
    assert_eq!(ours.size(), expected.size());
    assert!(ours.equal(&expected), "ours {ours}\nreference {expected}");
}

#[test]
fn the_decoder_prefix_and_logits_match_transformers_within_1e_4() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let engine = engine();
    assert!(engine.info().melody);
    let melody = MelodyChroma::whole(&melody_samples(), 235);
    let melodies = vec![melody.clone(), melody];

    let prefix = engine
        .melody_condition(&prompts, &melodies)
        .expect("prefix");
    let expected = &reference["encoder_hidden_states"]; // [2, 235 + text, 64]
    assert_eq!(prefix.size(), expected.size());
    let diff = max_abs_diff(&prefix, expected);
    eprintln!("prefix max abs diff vs transformers: {diff:e}");
    assert!(diff <= 1e-4, "prefix max abs diff {diff}");

    let cfg = engine.config().decoder.clone();
    let dec_ids = &reference["decoder_input_ids"]; // [batch * codebooks, len]
    let len = dec_ids.size()[1];
    let codes = dec_ids.view([-1, cfg.num_codebooks, len]);
    let logits = engine
        .logits_with_melody(&prompts, &melodies, &codes)
        .expect("logits"); // [b, K, len, V]
    let expected = reference["logits"].view([-1, cfg.num_codebooks, len, cfg.vocab_size]);
    assert_eq!(logits.size(), expected.size());
    let diff = max_abs_diff(&logits, &expected);
    eprintln!("melody logits max abs diff vs transformers: {diff:e}");
    assert!(diff <= 1e-4, "logits max abs diff {diff}");
}

#[test]
fn greedy_codes_with_and_without_a_melody_match_transformers() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let mut engine = engine();
    let melody = MelodyChroma::whole(&melody_samples(), 235);
    let with = vec![melody.clone(), melody];
    let without = vec![MelodyChroma(None), MelodyChroma(None)];
    let runs = [
        ("greedy_codes_melody_cfg3", &with, 3.0),
        ("greedy_codes_melody_cfg1", &with, 1.0),
        ("greedy_codes_no_melody_cfg3", &without, 3.0),
    ];
    // The host-indexed step, then the one CUDA graphs capture (device-side
    // positions past the prefix), run eagerly.
    for mode in [StepMode::Eager, StepMode::DeviceIndexed] {
        engine.set_step_mode(mode);
        for (name, melodies, scale) in runs {
            let expected = &reference[name]; // [batch, K, frames]
            let frames = expected.size()[2];
            let codes = engine
                .generate_codes_with_melody(
                    &prompts,
                    melodies,
                    frames,
                    &greedy(scale),
                    &mut |_, _| Continue::Yes,
                )
                .expect("generate");
            assert_eq!(codes.size(), expected.size(), "{name}");
            let mismatches = codes.ne_tensor(expected).sum(Kind::Int64).int64_value(&[]);
            assert_eq!(
                mismatches, 0,
                "{mode:?} {name}: ours {codes}\nreference {expected}"
            );
        }
    }
    // The melody matters: conditioned and null-conditioned codes differ.
    assert!(!reference["greedy_codes_melody_cfg3"].equal(&reference["greedy_codes_no_melody_cfg3"]));
}

#[test]
fn clip_requests_with_an_uploaded_melody_get_the_reference_codes() {
    // The worker's path: the decoded melody as `MelodyInput`, its chroma
    // made by the engine. 0.58 s is the reference's 29 frames, and the four
    // requests pad their prompts as the reference batch does.
    let (reference, prompts) = reference();
    let engine = engine();
    let params = GenerationParams {
        temperature: 0.0,
        cfg_coef: 3.0,
        ..GenerationParams::default()
    };
    let melody = MelodyInput {
        samples: melody_samples(),
        sample_rate: MELODY_SAMPLE_RATE,
    };
    let mut batch = Vec::new();
    for with_melody in [true, false] {
        for prompt in &prompts {
            let mut request = ClipRequest::new(prompt.clone(), 0.58, params.clone());
            request.melody = with_melody.then(|| melody.clone());
            batch.push(request);
        }
    }
    let clips = engine
        .generate_with_codes(&batch, &mut RunToEnd)
        .expect("generate");
    assert_eq!(clips.len(), 4);
    for (i, clip) in clips.iter().enumerate() {
        assert_eq!((clip.clip.channels, clip.clip.sample_rate), (1, 32_000));
        assert_eq!(clip.clip.samples.len(), 18_560);
        let name = if i < 2 {
            "greedy_codes_melody_cfg3"
        } else {
            "greedy_codes_no_melody_cfg3"
        };
        let expected = Vec::<Vec<i64>>::try_from(reference[name].get((i % 2) as i64))
            .expect("reference codes");
        assert_eq!(clip.codes, expected, "request {i} ({name})");
    }

    // An empty melody is the request's fault.
    let mut empty = ClipRequest::new("x", 0.5, GenerationParams::default());
    empty.melody = Some(MelodyInput {
        samples: Vec::new(),
        sample_rate: MELODY_SAMPLE_RATE,
    });
    let err = engine
        .generate(&[empty], &mut RunToEnd)
        .expect_err("rejected");
    assert!(
        matches!(err, sound_creator_core::audio::GenerationError::Rejected(_)),
        "{err}"
    );
}
