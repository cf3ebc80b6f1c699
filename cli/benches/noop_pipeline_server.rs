//! The pipeline benchmark's server: `sound-creator serve`, assembled by the
//! same code (`server::serve_with`), with a generator that returns silence
//! at once instead of running a model.
//!
//! It exists so that `bench/pipeline_bench.sh` can set the pipeline beside
//! Celery running a no-op task on equal terms: with a real model, even the
//! tiny fixture's 8-15 ms per generation caps throughput before the pipeline
//! does. It is a benchmark harness, never a way to serve: `serve` itself
//! refuses to start without a loadable model.
//!
//! Run by the benchmark script as
//! `cargo bench -p sound-creator --bench noop_pipeline_server -- --port 0 ...`
//! (the same flags as `sound-creator serve`).

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use sound_creator::server::{check_serving, serve_with, Parts};
use sound_creator::ServeArgs;
use sound_creator_core::audio::{
    AudioGenerator, Clip, ClipRequest, GenerationError, ModelInfo, StepObserver,
};

/// MusicGen's output format, so the WAVs are the same size as real ones.
const SAMPLE_RATE: u32 = 32_000;

struct Silence;

impl AudioGenerator for Silence {
    fn info(&self) -> ModelInfo {
        ModelInfo {
            dtype: "none".to_owned(),
            ..ModelInfo::cpu("silence (pipeline benchmark)", SAMPLE_RATE, 50.0)
        }
    }

    fn generate(
        &self,
        batch: &[ClipRequest],
        _observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError> {
        Ok(batch
            .iter()
            .map(|request| Clip::silence(request.duration, SAMPLE_RATE))
            .collect())
    }
}

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    serve: ServeArgs,
    /// Added by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    sound_creator::telemetry::init(false);
    let run = || -> anyhow::Result<()> {
        let mut settings = sound_creator_settings::Settings::from_env()?;
        args.serve.apply(&mut settings);
        check_serving(&settings)?;
        let generators = settings
            .service
            .deployed
            .iter()
            .map(|family| (*family, Arc::new(Silence) as Arc<dyn AudioGenerator>))
            .collect();
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve_with(settings, Parts::All, generators))
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
