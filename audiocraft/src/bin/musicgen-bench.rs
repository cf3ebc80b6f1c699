//! The model side of the MusicGen and AudioGen benchmarks: times generation
//! on one checkpoint, or prints greedy codes for a parity check, as JSON
//! lines. An AudioGen directory (AudioCraft's `state_dict.bin` and
//! `compression_state_dict.bin`) is recognised by its files.
//! Driven by `bench/musicgen_bench.py` (CPU) and `bench/gpu/run.py` (GPU),
//! which run `transformers` on the same weights in the same run. It prints
//! numbers only; it never judges them.
//!
//! ```text
//! musicgen-bench time  --model DIR [--device cuda] [--dtype f32,bf16] [--batch 1,8] [--seconds 2,10] [--runs 2]
//! musicgen-bench codes --model DIR [--device cuda] [--dtype f32] --frames 50 --prompt P [--prompt P2]
//! ```

use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use sound_creator_audiocraft::audiogen::is_audiocraft_export;
use sound_creator_audiocraft::cli::{parse_device, parse_dtype};
use sound_creator_audiocraft::engine::{device_label, dtype_label};
use sound_creator_audiocraft::generation::StepMode;
use sound_creator_audiocraft::generation::{Continue, GenerateOptions};
use sound_creator_audiocraft::sampling::Decoding;
use sound_creator_audiocraft::{AudioGenEngine, MusicGenEngine};
use sound_creator_core::audio::{AudioGenerator, GenerationError, ModelInfo};
use tch::{Device, Kind, Tensor};

/// Either model, behind the few calls the benchmark makes.
enum Engine {
    Music(Box<MusicGenEngine>),
    Audio(Box<AudioGenEngine>),
}

impl Engine {
    fn info(&self) -> ModelInfo {
        match self {
            Engine::Music(e) => e.info(),
            Engine::Audio(e) => e.info(),
        }
    }

    fn frames_for(&self, seconds: f64) -> i64 {
        match self {
            Engine::Music(e) => e.frames_for(seconds),
            Engine::Audio(e) => e.frames_for(seconds),
        }
    }

    fn step_mode(&self) -> Option<StepMode> {
        match self {
            Engine::Music(e) => e.step_mode(),
            Engine::Audio(e) => e.step_mode(),
        }
    }

    fn generate_codes(
        &self,
        prompts: &[&str],
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerationError> {
        match self {
            Engine::Music(e) => e.generate_codes(prompts, frames, options, on_step),
            Engine::Audio(e) => e.generate_codes(prompts, frames, options, on_step),
        }
    }

    fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, GenerationError> {
        match self {
            Engine::Music(e) => e.decode_audio(codes),
            Engine::Audio(e) => e.decode_audio(codes),
        }
    }
}

#[derive(Parser, Debug)]
#[command(name = "musicgen-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Time generation (codes, then audio) for each dtype, batch and clip
    /// length; one JSON line each.
    Time(TimeArgs),
    /// Print the codes of one generation as JSON `[clip][codebook][frame]`.
    Codes(CodesArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// A MusicGen checkpoint directory in the Hugging Face layout, or an
    /// AudioGen one (state_dict.bin, compression_state_dict.bin, t5/).
    #[arg(long)]
    model: String,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Run every decoding step eagerly (CUDA only).
    #[arg(long)]
    no_cuda_graphs: bool,
    /// Classifier-free guidance scale.
    #[arg(long, default_value_t = 3.0)]
    cfg: f64,
}

#[derive(Args, Debug)]
struct TimeArgs {
    #[command(flatten)]
    common: Common,
    /// Comma-separated dtypes, each loaded in turn.
    #[arg(long, default_value = "f32", value_delimiter = ',')]
    dtype: Vec<String>,
    #[arg(long, default_value = "1", value_delimiter = ',')]
    batch: Vec<usize>,
    /// Clip lengths in seconds.
    #[arg(long, default_value = "2", value_delimiter = ',')]
    seconds: Vec<f64>,
    /// Timed runs per (batch, length); the best is reported too.
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// An untimed generation of this length first, per batch size (on
    /// CUDA: context, kernels and allocator pools warm).
    #[arg(long, default_value_t = 0.3)]
    warmup_seconds: f64,
    /// Greedy decoding instead of sampling with top_k 250.
    #[arg(long)]
    greedy: bool,
}

#[derive(Args, Debug)]
struct CodesArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value = "f32")]
    dtype: String,
    #[arg(long)]
    frames: i64,
    /// One per clip.
    #[arg(long, required = true)]
    prompt: Vec<String>,
    /// Sample with this seed (top_k 250) instead of greedy decoding.
    #[arg(long)]
    seed: Option<u64>,
}

const PROMPTS: [&str; 4] = [
    "lo-fi hip hop beat with warm piano chords",
    "epic orchestral music with choir",
    "dark techno bassline at 128 bpm",
    "calm acoustic guitar melody",
];

fn main() -> anyhow::Result<()> {
    // Warnings (a capture that fell back to eager steps) go to stderr,
    // where the benchmark scripts pick them up.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    match Cli::parse().command {
        Command::Time(args) => time(&args),
        Command::Codes(args) => codes(&args),
    }
}

fn load(common: &Common, kind: Kind) -> anyhow::Result<(Engine, Device, f64)> {
    let device = parse_device(&common.device)?;
    if device.is_cuda() {
        anyhow::ensure!(
            tch::Cuda::is_available(),
            "--device {} asked for, but CUDA is not available to this binary",
            common.device
        );
    }
    let started = Instant::now();
    let cache = std::env::temp_dir();
    let hub = sound_creator_audiocraft::hub::HubSettings::offline();
    let failed = || format!("Failed to load {}", common.model);
    let engine = if is_audiocraft_export(std::path::Path::new(&common.model)) {
        let mut engine =
            AudioGenEngine::load(&common.model, &cache, &hub, device, kind).with_context(failed)?;
        engine.set_cuda_graphs(!common.no_cuda_graphs);
        Engine::Audio(Box::new(engine))
    } else {
        let mut engine =
            MusicGenEngine::load(&common.model, &cache, &hub, device, kind).with_context(failed)?;
        engine.set_cuda_graphs(!common.no_cuda_graphs);
        Engine::Music(Box::new(engine))
    };
    Ok((engine, device, started.elapsed().as_secs_f64()))
}

/// Waits for the device, so that host clocks measure its work.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn time(args: &TimeArgs) -> anyhow::Result<()> {
    let decoding = if args.greedy {
        Decoding::Greedy
    } else {
        Decoding::Sample {
            temperature: 1.0,
            top_k: 250,
            top_p: 0.0,
        }
    };
    let options = GenerateOptions {
        decoding,
        guidance_scale: args.common.cfg,
        seed: Some(1),
    };
    for dtype in &args.dtype {
        let kind = parse_dtype(dtype)?;
        let (engine, device, load_s) = load(&args.common, kind)?;
        let info = engine.info();
        for &batch in &args.batch {
            anyhow::ensure!(batch >= 1, "batch sizes start at 1");
            let prompts: Vec<&str> = (0..batch).map(|i| PROMPTS[i % PROMPTS.len()]).collect();
            if args.warmup_seconds > 0.0 {
                let frames = engine.frames_for(args.warmup_seconds);
                let codes =
                    engine.generate_codes(&prompts, frames, &options, &mut |_, _| Continue::Yes)?;
                let _ = engine.decode_audio(&codes)?;
                sync(device);
            }
            for &seconds in &args.seconds {
                let frames = engine.frames_for(seconds);
                let mut runs = Vec::new();
                for _ in 0..args.runs.max(1) {
                    runs.push(timed_run(&engine, device, &prompts, frames, &options)?);
                }
                let best = runs
                    .iter()
                    .min_by(|a, b| a.total_s.total_cmp(&b.total_s))
                    .context("no run")?;
                println!(
                    "{}",
                    json!({
                        "device": info.device,
                        "gpu": info.gpu,
                        "dtype": dtype_label(kind),
                        "step_mode": engine.step_mode().map(|m| format!("{m:?}")),
                        "batch": batch,
                        "seconds": seconds,
                        "frames": frames,
                        "steps": best.steps,
                        "total_s": best.total_s,
                        "codes_s": best.codes_s,
                        "audio_s": best.audio_s,
                        "runs_total_s": runs.iter().map(|r| r.total_s).collect::<Vec<_>>(),
                        "ms_per_step_reported": best.ms_per_step_reported,
                        "load_s": load_s,
                        "threads": tch::get_num_threads(),
                        "gemv_threads": rayon::current_num_threads(),
                    })
                );
            }
        }
        drop(engine);
    }
    Ok(())
}

struct Run {
    total_s: f64,
    codes_s: f64,
    audio_s: f64,
    steps: usize,
    /// Between the first and last progress report: the steady-state step
    /// time on a CPU, where reports come as steps finish. On CUDA a report
    /// trails the host, so time by differencing clip lengths instead.
    ms_per_step_reported: Option<f64>,
}

fn timed_run(
    engine: &Engine,
    device: Device,
    prompts: &[&str],
    frames: i64,
    options: &GenerateOptions,
) -> anyhow::Result<Run> {
    sync(device);
    let started = Instant::now();
    let mut reports: Vec<(usize, Instant)> = Vec::new();
    let mut steps = 0;
    let codes = engine.generate_codes(prompts, frames, options, &mut |done, total| {
        reports.push((done, Instant::now()));
        steps = total;
        Continue::Yes
    })?;
    let codes_s = started.elapsed().as_secs_f64();
    let audio = engine.decode_audio(&codes)?;
    sync(device);
    let total_s = started.elapsed().as_secs_f64();
    anyhow::ensure!(audio.size()[2] > 0, "no audio");
    let ms_per_step_reported = match (reports.first(), reports.last()) {
        (Some((d0, t0)), Some((d1, t1))) if d1 > d0 => {
            Some((*t1 - *t0).as_secs_f64() * 1e3 / (d1 - d0) as f64)
        }
        _ => None,
    };
    Ok(Run {
        total_s,
        codes_s,
        audio_s: total_s - codes_s,
        steps,
        ms_per_step_reported,
    })
}

fn codes(args: &CodesArgs) -> anyhow::Result<()> {
    let kind = parse_dtype(&args.dtype)?;
    let (engine, _, _) = load(&args.common, kind)?;
    let options = GenerateOptions {
        decoding: match args.seed {
            None => Decoding::Greedy,
            Some(_) => Decoding::Sample {
                temperature: 1.0,
                top_k: 250,
                top_p: 0.0,
            },
        },
        guidance_scale: args.common.cfg,
        seed: args.seed,
    };
    let prompts: Vec<&str> = args.prompt.iter().map(String::as_str).collect();
    let codes =
        engine.generate_codes(&prompts, args.frames, &options, &mut |_, _| Continue::Yes)?;
    let codes = Vec::<Vec<Vec<i64>>>::try_from(codes.f_contiguous()?)
        .context("codes are [clip][codebook][frame]")?;
    let info = engine.info();
    println!(
        "{}",
        json!({
            "device": device_label(parse_device(&args.common.device)?),
            "gpu": info.gpu,
            "dtype": dtype_label(kind),
            "step_mode": engine.step_mode().map(|m| format!("{m:?}")),
            "codes": codes,
        })
    );
    Ok(())
}
