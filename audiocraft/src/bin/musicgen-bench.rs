//! Times MusicGen decoding on one checkpoint and prints one JSON line; driven
//! by `bench/musicgen_bench.py`, which runs `transformers` on the same weights.
//!
//! Usage: musicgen-bench <model dir> <f32|f16|bf16> <seconds> [runs]

use std::time::Instant;

use anyhow::Context;
use sound_creator_audiocraft::cli::parse_dtype;
use sound_creator_audiocraft::generation::{Continue, GenerateOptions};
use sound_creator_audiocraft::sampling::Decoding;
use sound_creator_audiocraft::MusicGenEngine;
use tch::Device;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() >= 4,
        "usage: musicgen-bench <model dir> <f32|f16|bf16> <seconds> [runs]"
    );
    let kind = parse_dtype(&args[2])?;
    let seconds: f64 = args[3].parse().context("seconds")?;
    let runs: usize = args
        .get(4)
        .map(|r| r.parse())
        .transpose()
        .context("runs")?
        .unwrap_or(2);
    let cache = std::env::temp_dir();
    let load_started = Instant::now();
    let engine = MusicGenEngine::load(
        &args[1],
        &cache,
        &sound_creator_audiocraft::hub::HubSettings::offline(),
        Device::Cpu,
        kind,
    )?;
    let load_s = load_started.elapsed().as_secs_f64();
    let frames = engine.frames_for(seconds);
    let options = GenerateOptions {
        decoding: Decoding::Sample {
            temperature: 1.0,
            top_k: 250,
            top_p: 0.0,
        },
        guidance_scale: 3.0,
        seed: Some(1),
    };
    let mut best: Option<(f64, f64, usize)> = None;
    for _ in 0..runs {
        let started = Instant::now();
        let mut first_step: Option<Instant> = None;
        let mut last_step = started;
        let mut steps = 0usize;
        let codes = engine.generate_codes(
            &["lo-fi hip hop beat with warm piano chords"],
            frames,
            &options,
            &mut |_, _| {
                let now = Instant::now();
                first_step.get_or_insert(now);
                last_step = now;
                steps += 1;
                Continue::Yes
            },
        )?;
        let audio = engine.decode_audio(&codes)?;
        let total = started.elapsed().as_secs_f64();
        anyhow::ensure!(audio.size()[2] > 0, "no audio");
        // Steady-state step time: between the first and the last step, so
        // the text encoder and cache setup do not count.
        let per_step = first_step
            .map(|f| (last_step - f).as_secs_f64() / (steps.saturating_sub(1).max(1)) as f64)
            .unwrap_or(f64::NAN);
        if best.is_none_or(|(b, _, _)| per_step < b) {
            best = Some((per_step, total, steps));
        }
    }
    let (per_step, total, steps) = best.context("no run")?;
    println!(
        "{}",
        serde_json::json!({
            "ms_per_step": per_step * 1e3,
            "total_s": total,
            "steps": steps,
            "audio_s": seconds,
            "rtf": total / seconds,
            "load_s": load_s,
            "threads": tch::get_num_threads(),
            "gemv_threads": rayon::current_num_threads(),
        })
    );
    Ok(())
}
