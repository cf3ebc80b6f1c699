//! AudioGen on the tiny fixture that audiocraft 1.3.0 built and exported
//! (`tests/fixtures/make_audiogen_fixture.py`): parity with audiocraft's
//! own outputs in `reference/` (greedy guided codes identical; T5 states,
//! condition embeddings, logits and audio within 1e-4), and the one-line
//! load errors of a missing file, a truncated pickle, a wrong key and a
//! wrong shape.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sound_creator_audiocraft::audiogen::{
    is_audiocraft_export, AudioGenEngine, COMPRESSION_FILE, LM_FILE, T5_DIR,
};
use sound_creator_audiocraft::checkpoint::LoadError;
use sound_creator_audiocraft::generation::{Continue, StepMode};
use sound_creator_audiocraft::hub::HubSettings;
use sound_creator_core::audio::{
    AudioGenerator, ClipRequest, GenerationError, StepControl, StepObserver,
};
use sound_creator_core::request::GenerationParams;
use tch::{Device, Kind, Tensor};

use super::fixtures::{fixture, greedy, max_abs_diff, Reference};

const TOLERANCE: f64 = 1e-4;

fn fixture_dir() -> PathBuf {
    fixture("tiny-audiogen")
}

fn load(dir: &Path) -> Result<AudioGenEngine, LoadError> {
    let cache = tempfile::tempdir().expect("cache dir");
    AudioGenEngine::load(
        dir.to_str().expect("utf-8 path"),
        cache.path(),
        &HubSettings::offline(),
        Device::Cpu,
        Kind::Float,
    )
}

fn engine() -> AudioGenEngine {
    load(&fixture_dir()).expect("load the tiny AudioGen")
}

fn reference() -> Reference {
    Reference::of(&fixture_dir())
}

fn max_diff(got: &Tensor, want: &Tensor) -> f64 {
    assert_eq!(got.size(), want.size(), "shape");
    max_abs_diff(got, want)
}

#[test]
fn the_tiny_fixture_is_detected_as_an_audiocraft_export() {
    assert!(is_audiocraft_export(&fixture_dir()));
    assert!(!is_audiocraft_export(
        &fixture_dir().join("..").join("tiny-musicgen")
    ));
}

#[test]
fn text_conditioning_matches_audiocraft() {
    let engine = engine();
    let reference = reference();
    let prompts: Vec<&str> = reference.prompts.iter().map(String::as_str).collect();
    let n = prompts.len() as i64;
    engine
        .with_model(|model, tokenizer| {
            let encoded = tokenizer.encode_batch(&prompts).unwrap();
            let want_ids = &reference["text_input_ids"].narrow(0, 0, n);
            assert!(encoded.input_ids.equal(want_ids), "token ids differ");
            let want_mask = &reference["text_attention_mask"].narrow(0, 0, n);
            assert!(encoded.attention_mask.equal(want_mask), "masks differ");

            let hidden = model.encode_text(&encoded).unwrap();
            let want = &reference["t5_last_hidden_state"].narrow(0, 0, n);
            let diff = max_diff(&hidden, want);
            assert!(diff < TOLERANCE, "T5 states differ by {diff}");

            // The guided conditioning: the prompts' embeddings, then null rows
            // that are exactly zero, as audiocraft's 4-row batch.
            let cond = model.condition(&encoded, true).unwrap();
            let want = &reference["condition_embeds"];
            let diff = max_diff(&cond.states, want);
            assert!(diff < TOLERANCE, "condition embeddings differ by {diff}");
            let null = cond.states.narrow(0, n, n);
            assert_eq!(null.abs().max().double_value(&[]), 0.0);
            assert_eq!(cond.mask.min().int64_value(&[]), 1, "nothing is masked");
        })
        .unwrap();
}

#[test]
fn teacher_forced_logits_match_audiocraft() {
    let engine = engine();
    let reference = reference();
    let prompts: Vec<&str> = reference.prompts.iter().map(String::as_str).collect();
    engine
        .with_model(|model, tokenizer| {
            let encoded = tokenizer.encode_batch(&prompts).unwrap();
            let cond = model.condition(&encoded, true).unwrap();
            let logits = model.logits(&cond, &reference["lm_input_codes"]).unwrap();
            let diff = max_diff(&logits, &reference["lm_logits"]);
            assert!(diff < TOLERANCE, "logits differ by {diff}");
        })
        .unwrap();
}

#[test]
fn greedy_codes_with_and_without_guidance_are_audiocraft_s() {
    let mut engine = engine();
    let reference = reference();
    let prompts: Vec<&str> = reference.prompts.iter().map(String::as_str).collect();
    // Eager steps (the CPU's) and the device-indexed steps CUDA graphs replay.
    for mode in [StepMode::Eager, StepMode::DeviceIndexed] {
        engine.set_step_mode(mode);
        for (scale, name) in [(3.0, "greedy_codes_cfg3"), (1.0, "greedy_codes_cfg1")] {
            let want = &reference[name];
            let frames = want.size()[2];
            let codes = engine
                .with_model(|model, tokenizer| {
                    let encoded = tokenizer.encode_batch(&prompts).unwrap();
                    model
                        .generate(&encoded, frames, &greedy(scale), &mut |_, _| Continue::Yes)
                        .unwrap()
                })
                .unwrap();
            assert!(
                codes.equal(want),
                "{mode:?} {name}: codes differ from audiocraft's"
            );
        }
    }
}

#[test]
fn codec_audio_matches_audiocraft() {
    let engine = engine();
    let reference = reference();
    engine
        .with_model(|model, _| {
            for (codes, audio) in [
                ("codec_codes", "codec_audio"),
                ("greedy_codes_cfg3", "greedy_audio_cfg3"),
            ] {
                let got = model.decode_audio(&reference[codes]).unwrap();
                let diff = max_diff(&got, &reference[audio]);
                assert!(diff < TOLERANCE, "{audio} differs by {diff}");
            }
        })
        .unwrap();
}

struct Count(usize);

impl StepObserver for Count {
    fn on_step(&mut self, _done: usize, _total: usize) -> StepControl {
        self.0 += 1;
        StepControl::Continue
    }
}

struct StopAt(usize);

impl StepObserver for StopAt {
    fn on_step(&mut self, done: usize, _total: usize) -> StepControl {
        if done >= self.0 {
            StepControl::Stop
        } else {
            StepControl::Continue
        }
    }
}

fn request(prompt: &str, duration: f64) -> ClipRequest {
    ClipRequest {
        prompt: prompt.to_owned(),
        duration,
        params: GenerationParams {
            seed: Some(7),
            ..GenerationParams::default()
        },
        melody: None,
    }
}

#[test]
fn the_engine_makes_16_khz_clips_in_one_batch_and_stops_when_asked() {
    let engine = engine();
    let info = engine.info();
    assert_eq!(
        (info.sample_rate, info.channels, info.max_duration),
        (16_000, 1, Some(10.0))
    );
    let mut count = Count(0);
    let clips = engine
        .generate(
            &[request("a cat meowing", 0.5), request("a car horn", 0.3)],
            &mut count,
        )
        .expect("generate");
    assert_eq!(clips[0].samples.len(), 8000);
    assert_eq!(clips[1].samples.len(), 4800);
    assert!(clips.iter().all(|c| c.sample_rate == 16_000));
    assert!(clips[0].samples.iter().all(|s| s.is_finite()));
    assert!(count.0 > 0, "progress was reported");

    let err = engine
        .generate(&[request("rain", 1.0)], &mut StopAt(8))
        .unwrap_err();
    assert!(matches!(err, GenerationError::Canceled), "{err:?}");

    let err = engine
        .generate(&[request("rain", 10.5)], &mut Count(0))
        .unwrap_err();
    assert!(matches!(err, GenerationError::Rejected(_)), "{err:?}");
}

#[test]
fn sampling_with_a_seed_is_reproducible() {
    let engine = engine();
    let a = engine
        .generate_with_codes(&[request("thunder", 0.4)], &mut Count(0))
        .unwrap();
    let b = engine
        .generate_with_codes(&[request("thunder", 0.4)], &mut Count(0))
        .unwrap();
    assert_eq!(a[0].codes, b[0].codes);
}

// ---- load errors ----

fn one_line(err: &impl std::fmt::Display) -> String {
    let msg = err.to_string();
    assert!(!msg.contains('\n'), "not one line: {msg:?}");
    msg
}

/// A copy of the fixture's files (T5 included) that a test may break.
fn fixture_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    for file in [LM_FILE, COMPRESSION_FILE] {
        std::fs::copy(fixture_dir().join(file), dir.path().join(file)).expect("copy");
    }
    let t5 = dir.path().join(T5_DIR);
    std::fs::create_dir(&t5).unwrap();
    for entry in std::fs::read_dir(fixture_dir().join(T5_DIR)).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), t5.join(entry.file_name())).unwrap();
    }
    dir
}

fn load_err(dir: &Path) -> String {
    match load(dir) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => one_line(&e),
    }
}

/// Rewrites the pickle of a torch.save zip, entry by entry, with `edit`.
fn edit_pickle(path: &Path, edit: impl Fn(Vec<u8>) -> Vec<u8>) {
    let src = std::fs::read(path).unwrap();
    let mut zin = zip::ZipArchive::new(std::io::Cursor::new(src)).unwrap();
    let mut zout = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options =
        zip::write::FileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..zin.len() {
        let mut entry = zin.by_index(i).unwrap();
        let name = entry.name().to_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        let bytes = if name.ends_with("data.pkl") {
            edit(bytes)
        } else {
            bytes
        };
        zout.start_file(name, options).unwrap();
        zout.write_all(&bytes).unwrap();
    }
    zout.finish().unwrap();
}

/// Replaces the one occurrence of `from` with `to` (same length, so every
/// length prefix in the pickle stays right).
fn replace_once(bytes: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let hits: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "{:?} occurs {} times",
        String::from_utf8_lossy(from),
        hits.len()
    );
    let mut out = bytes;
    out[hits[0]..hits[0] + to.len()].copy_from_slice(to);
    out
}

#[test]
fn a_missing_file_is_a_one_line_error_naming_it() {
    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join(COMPRESSION_FILE)).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains(COMPRESSION_FILE) && msg.contains("not found"),
        "{msg}"
    );

    let dir = fixture_copy();
    std::fs::remove_file(dir.path().join(T5_DIR).join("model.safetensors")).unwrap();
    let msg = load_err(dir.path());
    assert!(
        msg.contains("t5") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn a_truncated_pickle_is_a_one_line_error_naming_the_file() {
    let dir = fixture_copy();
    let path = dir.path().join(LM_FILE);
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_err(dir.path());
    assert!(msg.contains(LM_FILE), "{msg}");
    assert!(msg.contains("truncated or corrupt"), "{msg}");

    let dir = fixture_copy();
    let path = dir.path().join(LM_FILE);
    edit_pickle(&path, |bytes| bytes[..bytes.len() / 3].to_vec());
    let msg = load_err(dir.path());
    assert!(msg.contains(LM_FILE) && msg.contains("truncated"), "{msg}");
}

#[test]
fn a_wrong_key_is_a_one_line_error_naming_file_and_key() {
    let dir = fixture_copy();
    let path = dir.path().join(LM_FILE);
    edit_pickle(&path, |bytes| {
        replace_once(bytes, b"out_norm.weight", b"out_norm.wEight")
    });
    let msg = load_err(dir.path());
    assert!(msg.contains(LM_FILE), "{msg}");
    assert!(
        msg.contains("`best_state.out_norm.weight` not found"),
        "{msg}"
    );

    // A key the model does not know (a bias AudioGen has none of).
    let dir = fixture_copy();
    let path = dir.path().join(COMPRESSION_FILE);
    edit_pickle(&path, |bytes| {
        replace_once(
            bytes,
            b"decoder.model.1.lstm.bias_hh_l1",
            b"decoder.model.1.lstm.bias_xx_l1",
        )
    });
    let msg = load_err(dir.path());
    assert!(msg.contains(COMPRESSION_FILE), "{msg}");
    assert!(msg.contains("decoder.model.1.lstm.bias_hh_l1"), "{msg}");
}

#[test]
fn a_wrong_shape_is_a_one_line_error_naming_file_and_key() {
    // xp.cfg says the LM is 32 wide; the weights are 64 wide.
    let dir = fixture_copy();
    let path = dir.path().join(LM_FILE);
    edit_pickle(&path, |bytes| {
        replace_once(bytes, b"\n  dim: 64\n", b"\n  dim: 32\n")
    });
    let msg = load_err(dir.path());
    assert!(msg.contains(LM_FILE), "{msg}");
    assert!(
        msg.contains("tensor `") && msg.contains("has shape"),
        "{msg}"
    );
    assert!(
        msg.contains("[64, 64]") && msg.contains("[64, 32]"),
        "{msg}"
    );
}
