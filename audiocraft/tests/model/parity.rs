//! Parity with Hugging Face `transformers` on the tiny random-weight
//! checkpoint in `tests/fixtures/tiny-musicgen`, whose references were
//! recorded by `tests/fixtures/make_musicgen_fixture.py`.

use std::path::PathBuf;

use super::fixtures::{fixture, max_abs_diff, musicgen, Reference};

use sound_creator_audiocraft::generation::{Continue, GenerateOptions, StepMode, PROGRESS_EVERY};
use sound_creator_audiocraft::sampling::Decoding;
use sound_creator_audiocraft::MusicGenEngine;
use sound_creator_core::audio::{AudioGenerator, ClipRequest, StepControl, StepObserver};
use sound_creator_core::request::GenerationParams;
use tch::Kind;

fn fixture_dir() -> PathBuf {
    fixture("tiny-musicgen")
}

fn engine(kind: Kind) -> MusicGenEngine {
    musicgen(&fixture_dir(), kind)
}

/// The engine with the decoding step CUDA graphs capture (device-side
/// positions, windowed attention), run eagerly.
fn device_indexed_engine() -> MusicGenEngine {
    let mut engine = engine(Kind::Float);
    engine.set_step_mode(StepMode::DeviceIndexed);
    engine
}

fn reference() -> (Reference, Vec<String>) {
    let reference = Reference::of(&fixture_dir());
    let prompts = reference.prompts.clone();
    (reference, prompts)
}

#[test]
fn tokenizer_matches_the_reference_ids_and_padding_mask() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let (ids, mask) = engine(Kind::Float).tokenize(&prompts).expect("tokenize");
    assert!(
        ids.equal(&reference["text_input_ids"]),
        "ids {ids} vs {}",
        reference["text_input_ids"]
    );
    assert!(mask.equal(&reference["text_attention_mask"]));
}

#[test]
fn decoder_logits_match_transformers_within_1e_4() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let engine = engine(Kind::Float);
    let cfg = engine.config().decoder.clone();
    let dec_ids = &reference["decoder_input_ids"]; // [batch * codebooks, len]
    let len = dec_ids.size()[1];
    let codes = dec_ids.view([-1, cfg.num_codebooks, len]);
    let logits = engine.logits(&prompts, &codes).expect("logits"); // [b, K, len, V]
    let expected = reference["logits"].view([-1, cfg.num_codebooks, len, cfg.vocab_size]);
    assert_eq!(logits.size(), expected.size());
    let diff = max_abs_diff(&logits, &expected);
    eprintln!("logits max abs diff vs transformers: {diff:e}");
    assert!(diff <= 1e-4, "max abs diff {diff}");
}

#[test]
fn greedy_guided_codes_match_transformers() {
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let expected = &reference["greedy_codes"]; // [batch, K, frames]
    let frames = expected.size()[2];
    assert!(frames >= 50);
    let options = GenerateOptions {
        decoding: Decoding::Greedy,
        guidance_scale: 3.0,
        seed: None,
    };
    let mut reports = Vec::new();
    let codes = engine(Kind::Float)
        .generate_codes(&prompts, frames, &options, &mut |done, total| {
            reports.push((done, total));
            Continue::Yes
        })
        .expect("generate");
    let steps = (frames + 3) as usize;
    let expected_reports: Vec<_> = (PROGRESS_EVERY..steps)
        .step_by(PROGRESS_EVERY)
        .chain([steps])
        .map(|done| (done, steps))
        .collect();
    assert_eq!(reports, expected_reports);
    assert_eq!(codes.size(), expected.size());
    let mismatches = codes.ne_tensor(expected).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(mismatches, 0, "ours {codes}\nreference {expected}");
}

#[test]
fn the_graph_step_run_eagerly_gives_the_reference_greedy_codes_and_the_same_samples() {
    // Device-side positions and windowed attention (masking the unwritten
    // slots) must compute what the host-indexed step computes: the step a
    // CUDA graph captures is this one.
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let expected = &reference["greedy_codes"];
    let frames = expected.size()[2];
    let greedy = GenerateOptions {
        decoding: Decoding::Greedy,
        guidance_scale: 3.0,
        seed: None,
    };
    let indexed = device_indexed_engine();
    let codes = indexed
        .generate_codes(&prompts, frames, &greedy, &mut |_, _| Continue::Yes)
        .expect("generate");
    let mismatches = codes.ne_tensor(expected).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(mismatches, 0, "ours {codes}\nreference {expected}");

    // Past one attention window, and sampled: the same draws, the same codes.
    let sampled = GenerateOptions {
        decoding: Decoding::Sample {
            temperature: 1.0,
            top_k: 20,
            top_p: 0.0,
        },
        guidance_scale: 3.0,
        seed: Some(5),
    };
    let frames = 140;
    let host = engine(Kind::Float)
        .generate_codes(&prompts, frames, &sampled, &mut |_, _| Continue::Yes)
        .expect("host-indexed");
    let device = indexed
        .generate_codes(&prompts, frames, &sampled, &mut |_, _| Continue::Yes)
        .expect("device-indexed");
    assert!(host.equal(&device), "host {host}\ndevice {device}");
}

#[test]
fn greedy_codes_are_the_same_in_bf16_for_most_steps() {
    // bf16 rounds the logits, so a near tie may flip; most codes must agree.
    let (reference, prompts) = reference();
    let prompts: Vec<&str> = prompts.iter().map(String::as_str).collect();
    let expected = &reference["greedy_codes"];
    let options = GenerateOptions {
        decoding: Decoding::Greedy,
        guidance_scale: 3.0,
        seed: None,
    };
    let codes = engine(Kind::BFloat16)
        .generate_codes(&prompts, expected.size()[2], &options, &mut |_, _| {
            Continue::Yes
        })
        .expect("generate");
    let same = codes
        .eq_tensor(expected)
        .to_kind(Kind::Float)
        .mean(Kind::Float)
        .double_value(&[]);
    assert!(same > 0.5, "only {same} of the codes agree");
}

struct Counting {
    steps: usize,
    stop_after: Option<usize>,
    last: Option<(usize, usize)>,
}

impl StepObserver for Counting {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl {
        assert!(done <= total);
        assert!(
            self.last.is_none_or(|(d, _)| d < done),
            "progress went back"
        );
        self.last = Some((done, total));
        self.steps += 1;
        match self.stop_after {
            Some(n) if self.steps >= n => StepControl::Stop,
            _ => StepControl::Continue,
        }
    }
}

#[test]
fn engine_returns_audible_clips_of_the_requested_durations() {
    let engine = engine(Kind::Float);
    let params = GenerationParams {
        seed: Some(3),
        ..GenerationParams::default()
    };
    let batch = vec![
        ClipRequest {
            prompt: "calm acoustic guitar".into(),
            duration: 1.0,
            params: params.clone(),
            melody: None,
        },
        ClipRequest {
            prompt: "dark techno bassline".into(),
            duration: 0.5,
            params,
            melody: None,
        },
    ];
    let mut observer = Counting {
        steps: 0,
        stop_after: None,
        last: None,
    };
    let clips = engine.generate(&batch, &mut observer).expect("generate");
    assert_eq!(observer.steps, (50 + 3usize).div_ceil(PROGRESS_EVERY));
    assert_eq!(observer.last, Some((53, 53)));
    assert_eq!(clips.len(), 2);
    for (clip, request) in clips.iter().zip(&batch) {
        assert_eq!(clip.sample_rate, 32_000);
        assert!(
            (clip.duration_seconds() - request.duration).abs() <= 1.0 / 50.0,
            "{}",
            clip.duration_seconds()
        );
        let rms = (clip
            .samples
            .iter()
            .map(|s| f64::from(*s).powi(2))
            .sum::<f64>()
            / clip.samples.len() as f64)
            .sqrt();
        assert!(rms > 1e-4, "silent clip (rms {rms})");
    }
}

#[test]
fn the_same_seed_gives_the_same_clip() {
    let engine = engine(Kind::Float);
    let params = GenerationParams {
        seed: Some(11),
        ..GenerationParams::default()
    };
    let request = ClipRequest {
        prompt: "happy ukulele".into(),
        duration: 0.3,
        params,
        melody: None,
    };
    let a = engine.generate_with_codes(
        std::slice::from_ref(&request),
        &mut Counting {
            steps: 0,
            stop_after: None,
            last: None,
        },
    );
    let b = engine.generate_with_codes(
        &[request],
        &mut Counting {
            steps: 0,
            stop_after: None,
            last: None,
        },
    );
    assert_eq!(a.expect("a")[0].codes, b.expect("b")[0].codes);
}

#[test]
fn a_stop_from_the_observer_cancels_the_generation() {
    let engine = engine(Kind::Float);
    let request = ClipRequest {
        prompt: "epic".into(),
        duration: 1.0,
        params: GenerationParams::default(),
        melody: None,
    };
    let mut observer = Counting {
        steps: 0,
        stop_after: Some(3),
        last: None,
    };
    let err = engine
        .generate(&[request], &mut observer)
        .expect_err("canceled");
    assert!(
        matches!(err, sound_creator_core::audio::GenerationError::Canceled),
        "{err}"
    );
    assert_eq!(observer.steps, 3);
}

#[test]
fn too_long_or_empty_durations_are_rejected() {
    let engine = engine(Kind::Float);
    // Past 300 s no deployment may go (longer than the window is fine).
    for duration in [0.0, -1.0, f64::NAN, 300.5] {
        let request = ClipRequest {
            prompt: "x".into(),
            duration,
            params: GenerationParams::default(),
            melody: None,
        };
        let err = engine
            .generate(
                &[request],
                &mut Counting {
                    steps: 0,
                    stop_after: None,
                    last: None,
                },
            )
            .expect_err("rejected");
        assert!(
            matches!(err, sound_creator_core::audio::GenerationError::Rejected(_)),
            "{duration}: {err}"
        );
    }
}
