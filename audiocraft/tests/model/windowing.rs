//! Clips longer than the model's window, generated window by window as
//! audiocraft's `_generate_tokens` does with `extend_stride`.
//!
//! Against a reference run of the same algorithm with `transformers` on the
//! tiny mono and stereo fixtures (`tests/fixtures/windowing-reference`, made
//! by `tests/fixtures/make_windowing_reference.py`: 0.8 s windows with a
//! 0.48 s stride over a 2 s clip, greedy, guidance 3), so the seams are
//! where audiocraft puts them and every window is prompted as there; and a
//! 75 s clip on the tiny model with MusicGen's own 30 s / 18 s windows,
//! checked for length, progress, and continuity at the seams.

use std::path::Path;

use sound_creator_audiocraft::windowing::{Window, Windowing};
use sound_creator_audiocraft::MusicGenEngine;
use sound_creator_core::audio::{
    AudioGenerator, ClipRequest, GenerationError, StepControl, StepObserver,
};
use sound_creator_core::request::GenerationParams;
use tch::{Kind, Tensor};

use super::fixtures::{fixture, musicgen};

fn engine(dir: &Path) -> MusicGenEngine {
    musicgen(dir, Kind::Float)
}

fn greedy() -> GenerationParams {
    GenerationParams {
        temperature: 0.0,
        cfg_coef: 3.0,
        ..GenerationParams::default()
    }
}

/// Records every report and stops after `stop_after` of them.
struct Reports {
    seen: Vec<(usize, usize)>,
    stop_after: Option<usize>,
}

impl StepObserver for Reports {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl {
        self.seen.push((done, total));
        match self.stop_after {
            Some(n) if self.seen.len() >= n => StepControl::Stop,
            _ => StepControl::Continue,
        }
    }
}

#[test]
fn windowed_codes_match_the_reference_run_on_mono_and_stereo() {
    let dir = fixture("windowing-reference");
    let reference =
        Tensor::read_safetensors(dir.join("reference.safetensors")).expect("reference tensors");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("reference.json")).expect("json"))
            .expect("json");
    let prompts: Vec<String> = json["prompts"]
        .as_array()
        .expect("prompts")
        .iter()
        .map(|p| p.as_str().expect("str").to_owned())
        .collect();
    let duration = json["duration"].as_f64().expect("duration");
    for name in ["tiny-musicgen", "tiny-musicgen-stereo"] {
        let meta = &json["fixtures"][name];
        let windowing = Windowing {
            window: meta["window_frames"].as_i64().expect("window"),
            stride: meta["stride_frames"].as_i64().expect("stride"),
        };
        let total = (duration * 50.0) as i64;
        // The plan is audiocraft's, window for window.
        let expected_plan: Vec<Window> = meta["windows"]
            .as_array()
            .expect("windows")
            .iter()
            .map(|w| Window {
                start: w["start"].as_i64().expect("start"),
                prompt: w["prompt"].as_i64().expect("prompt"),
                frames: w["frames"].as_i64().expect("frames"),
            })
            .collect();
        assert_eq!(windowing.plan(total), expected_plan, "{name}");

        let mut engine = engine(&fixture(name));
        engine.set_windowing(windowing);
        let batch: Vec<ClipRequest> = prompts
            .iter()
            .map(|p| ClipRequest::new(p.clone(), duration, greedy()))
            .collect();
        let mut reports = Reports {
            seen: Vec::new(),
            stop_after: None,
        };
        let clips = engine
            .generate_with_codes(&batch, &mut reports)
            .expect("generate");
        let expected = reference
            .iter()
            .find(|(key, _)| key == &format!("{name}_codes"))
            .map(|(_, t)| t)
            .expect("reference codes");
        for (row, clip) in clips.iter().enumerate() {
            let expected =
                Vec::<Vec<i64>>::try_from(expected.get(row as i64)).expect("reference row");
            assert_eq!(clip.codes, expected, "{name}, clip {row}");
            let channels = usize::from(clip.clip.channels);
            assert_eq!(clip.clip.samples.len(), channels * 64_000, "{name}");
        }
        // Progress runs over the windows as one count: each window's steps
        // after its prompt (frames + delays - 1 - prompt).
        // 4 codebooks per channel in both fixtures.
        let delays = 4;
        let total_steps: usize = expected_plan
            .iter()
            .map(|w| (w.frames + delays - 1 - w.prompt) as usize)
            .sum();
        assert!(
            reports.seen.windows(2).all(|p| p[0].0 < p[1].0),
            "{:?}",
            reports.seen
        );
        assert!(reports.seen.iter().all(|&(_, t)| t == total_steps));
        assert_eq!(reports.seen.last(), Some(&(total_steps, total_steps)));
    }
}

#[test]
fn a_75_s_clip_is_continuous_across_its_seams_and_cancels_between_steps() {
    let engine = engine(&fixture("tiny-musicgen"));
    assert_eq!(
        engine.info().max_duration,
        None,
        "only MAX_DURATION caps a clip"
    );
    let windowing = engine.windowing();
    assert_eq!((windowing.window, windowing.stride), (1500, 900));
    let params = GenerationParams {
        seed: Some(75),
        ..GenerationParams::default()
    };
    let request = ClipRequest::new("steady synth pad", 75.0, params);
    let mut reports = Reports {
        seen: Vec::new(),
        stop_after: None,
    };
    let mut clips = engine
        .generate_with_codes(std::slice::from_ref(&request), &mut reports)
        .expect("generate");
    let clip = clips.pop().expect("a clip");
    assert_eq!(clip.clip.samples.len(), 75 * 32_000);
    assert_eq!(clip.codes[0].len(), 3750);
    // Windows of 1500 frames, 900 new each after the first: 1503 + 903 +
    // 903 + 453 steps.
    let total = 1503 + 903 + 903 + 453;
    assert_eq!(reports.seen.last(), Some(&(total, total)));
    assert!(reports.seen.windows(2).all(|p| p[0].0 < p[1].0));

    // Continuity: at each seam (30 s, 48 s, 66 s) the clip goes on as
    // audio does elsewhere: no jump between neighbouring samples beyond the
    // largest in the second around it, and no gap of silence.
    let samples = &clip.clip.samples;
    let step = |i: usize| (samples[i] - samples[i - 1]).abs();
    let rms = |range: std::ops::Range<usize>| {
        let n = range.len() as f64;
        (samples[range]
            .iter()
            .map(|&s| f64::from(s).powi(2))
            .sum::<f64>()
            / n)
            .sqrt()
    };
    for seam_s in [30usize, 48, 66] {
        let seam = seam_s * 32_000;
        let around = (seam - 16_000..seam + 16_000)
            .filter(|&i| i.abs_diff(seam) > 64)
            .map(step)
            .fold(0f32, f32::max);
        let at = (seam - 64..seam + 64).map(step).fold(0f32, f32::max);
        assert!(
            at <= 1.5 * around,
            "seam at {seam_s} s: a jump of {at} (elsewhere at most {around})"
        );
        let (before, after) = (rms(seam - 16_000..seam), rms(seam..seam + 16_000));
        assert!(
            before > 1e-4 && after > 1e-4,
            "silence at {seam_s} s: {before} {after}"
        );
        assert!(
            before / after < 10.0 && after / before < 10.0,
            "level jump at {seam_s} s"
        );
    }
    // And no pad or start code (64) leaks into the codes at a seam.
    for seam in [1500usize, 2400, 3300] {
        assert!(clip
            .codes
            .iter()
            .all(|row| row[seam - 4..seam + 4].iter().all(|&c| c < 64)));
    }

    // A stop in the second window cancels the whole clip.
    let mut stopping = Reports {
        seen: Vec::new(),
        stop_after: Some(1503 / 8 + 10),
    };
    let err = engine
        .generate(std::slice::from_ref(&request), &mut stopping)
        .expect_err("canceled");
    assert!(matches!(err, GenerationError::Canceled), "{err}");
    let (done, _) = *stopping.seen.last().expect("reports");
    assert!(done > 1503 && done < 1503 + 903, "stopped at step {done}");
}

#[test]
fn a_long_melody_clip_follows_the_melody_window_by_window() {
    // The melody fixture on short windows: each window is conditioned on
    // the melody from its own start time (wrapping around the 4 s melody).
    let dir = fixture("tiny-musicgen-melody");
    let mut engine = engine(&dir);
    engine.set_windowing(Windowing {
        window: 40,
        stride: 24,
    });
    let bytes = std::fs::read(dir.join("melody.wav")).expect("melody.wav");
    let (_, samples) = sound_creator_core::audio::decode_wav(&bytes).expect("wav");
    let melody = sound_creator_core::audio::MelodyInput {
        samples: samples.iter().map(|&s| f32::from(s) / 32768.0).collect(),
        sample_rate: sound_creator_core::audio::MELODY_SAMPLE_RATE,
    };
    let mut request = ClipRequest::new("epic orchestral music", 2.0, greedy());
    request.melody = Some(melody);
    let mut reports = Reports {
        seen: Vec::new(),
        stop_after: None,
    };
    let clips = engine
        .generate_with_codes(&[request], &mut reports)
        .expect("generate");
    assert_eq!(clips[0].clip.samples.len(), 64_000);
    assert_eq!(clips[0].codes[0].len(), 100);
    let total = 43 + 27 + 27 + 15;
    assert_eq!(reports.seen.last(), Some(&(total, total)));
}
