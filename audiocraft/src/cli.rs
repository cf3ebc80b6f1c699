//! `sound-creator generate`: one clip from one prompt, straight to a WAV file.
//!
//! The command the lead wires into the `sound-creator` binary; it exists so a
//! model can be tried (and compared with the reference) without the job
//! service. It must never write a partial WAV: the file is written only after
//! generation succeeded. It shows the decoding progress on stderr: a bar
//! when a person watches the terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use sound_creator_core::audio::{encode_wav, ClipRequest, StepControl, StepObserver};
use sound_creator_core::request::GenerationParams;
use tch::{Device, Kind};

use crate::audiogen::{is_audiocraft_export, AudioGenEngine};
use crate::batching::{CodesGenerator, GeneratedClip};
use crate::engine::MusicGenEngine;
use crate::hub::HubSettings;

#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// Hub id (e.g. facebook/musicgen-small, facebook/audiogen-medium) or
    /// local checkpoint directory (default: MUSIC_GEN_MODEL). AudioGen is
    /// recognised by its files (state_dict.bin and compression_state_dict.bin).
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub prompt: String,
    /// Seconds of audio.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seed for sampling; the same seed gives the same clip on the same hardware.
    #[arg(long, conflicts_with = "greedy")]
    pub seed: Option<u64>,
    /// Argmax decoding instead of sampling.
    #[arg(long)]
    pub greedy: bool,
    /// Classifier-free guidance scale (1 disables guidance).
    #[arg(long, default_value_t = 3.0)]
    pub cfg: f64,
    #[arg(long, default_value_t = 250)]
    pub top_k: u32,
    /// Nucleus mass; 0 disables top-p.
    #[arg(long, default_value_t = 0.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// f32, f16 or bf16 (the decoder's precision).
    #[arg(long, default_value = "f32")]
    pub dtype: String,
    /// Run every decoding step eagerly instead of replaying a captured CUDA
    /// graph (CUDA only).
    #[arg(long)]
    pub no_cuda_graphs: bool,
    #[arg(long)]
    pub out: PathBuf,
    /// Also write the codes as JSON `[codebook][frame]`, delay pattern removed.
    #[arg(long)]
    pub codes_out: Option<PathBuf>,
    /// Where hub downloads are kept (default: CACHE_MODEL_DIR).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
}

/// Parses `cpu`, `cuda` or `cuda:N`.
pub fn parse_device(text: &str) -> anyhow::Result<Device> {
    match text {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => Ok(Device::Cuda(index)),
            _ => anyhow::bail!("unknown device `{other}` (expected cpu, cuda or cuda:N)"),
        },
    }
}

/// Parses `f32`, `f16` or `bf16`.
pub fn parse_dtype(text: &str) -> anyhow::Result<Kind> {
    match text {
        "f32" | "fp32" | "float32" => Ok(Kind::Float),
        "f16" | "fp16" | "float16" => Ok(Kind::Half),
        "bf16" | "bfloat16" => Ok(Kind::BFloat16),
        other => anyhow::bail!("unknown dtype `{other}` (expected f32, f16 or bf16)"),
    }
}

/// Generates the clip `args` describe; `default_model` and `cache_dir` are
/// the deployment's settings, used where `args` names none.
pub fn run_generate(
    args: &GenerateArgs,
    default_model: &str,
    cache_dir: &Path,
    hub: &HubSettings,
) -> anyhow::Result<()> {
    let model = args.model.as_deref().unwrap_or(default_model);
    let cache_dir = args.cache_dir.as_deref().unwrap_or(cache_dir);
    let device = parse_device(&args.device)?;
    if let Device::Cuda(_) = device {
        anyhow::ensure!(
            tch::Cuda::is_available(),
            "--device {} asked for, but CUDA is not available",
            args.device
        );
    }
    let kind = parse_dtype(&args.dtype)?;
    let params = GenerationParams {
        temperature: if args.greedy { 0.0 } else { args.temperature },
        top_k: args.top_k,
        top_p: args.top_p,
        cfg_coef: args.cfg,
        seed: args.seed,
    };
    let request = ClipRequest {
        prompt: args.prompt.clone(),
        duration: args.duration,
        params,
        melody: None,
    };
    let started = std::time::Instant::now();
    let mut progress: Box<dyn StepObserver> = if std::io::stderr().is_terminal() {
        Box::new(ProgressBarView::new())
    } else {
        Box::new(ProgressLines::new(std::io::stderr()))
    };
    let mut engine: Box<dyn CodesGenerator> = if is_audiogen(model, cache_dir) {
        Box::new(
            AudioGenEngine::load(model, cache_dir, hub, device, kind)
                .with_context(|| format!("Failed to load the AudioGen model {model}"))?,
        )
    } else {
        Box::new(
            MusicGenEngine::load(model, cache_dir, hub, device, kind)
                .with_context(|| format!("Failed to load model {model}"))?,
        )
    };
    engine.use_cuda_graphs(!args.no_cuda_graphs);
    let GeneratedClip { clip, codes } = engine
        .clips_with_codes(&[request], progress.as_mut())
        .context("Failed to generate the clip")?
        .pop()
        .context("the engine returned no clip")?;
    drop(progress);
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "clip generated");

    std::fs::write(&args.out, encode_wav(&clip))
        .with_context(|| format!("Failed to write {}", args.out.display()))?;
    if let Some(path) = &args.codes_out {
        let json = serde_json::to_vec(&codes).context("Failed to serialise the codes")?;
        std::fs::write(path, json)
            .with_context(|| format!("Failed to write {}", path.display()))?;
    }
    Ok(())
}

/// Whether `model` is an AudioGen model, from its files: a local directory
/// (or a cached copy of a hub id) holding AudioCraft's two export files. A
/// hub id not downloaded yet is taken by its name (`*audiogen*`).
pub fn is_audiogen(model: &str, cache_dir: &Path) -> bool {
    let local = Path::new(model);
    if local.is_dir() {
        return is_audiocraft_export(local);
    }
    let cached = cache_dir.join(model.replace('/', "--"));
    if cached.is_dir() {
        return is_audiocraft_export(&cached);
    }
    model
        .rsplit('/')
        .next()
        .is_some_and(|name| name.to_ascii_lowercase().contains("audiogen"))
}

/// Decoding progress as an indicatif bar on stderr, for a terminal.
struct ProgressBarView {
    bar: indicatif::ProgressBar,
}

impl ProgressBarView {
    fn new() -> Self {
        let bar = indicatif::ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "decoding [{bar:30}] {pos}/{len} steps {per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        Self { bar }
    }
}

impl StepObserver for ProgressBarView {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        StepControl::Continue
    }
}

impl Drop for ProgressBarView {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

/// Decoding progress as plain lines, for a log file or a pipe: one each
/// tenth of the way and one at the end, so a long clip does not flood the
/// log with a line every few steps.
pub struct ProgressLines<W: Write + Send> {
    out: W,
    started: Instant,
    tenths_reported: Option<usize>,
}

impl<W: Write + Send> ProgressLines<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            started: Instant::now(),
            tenths_reported: None,
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write + Send> StepObserver for ProgressLines<W> {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl {
        let tenths = (done * 10).checked_div(total).unwrap_or(0);
        if self
            .tenths_reported
            .is_none_or(|reported| tenths > reported)
            || done == total
        {
            if self.tenths_reported == Some(10) {
                return StepControl::Continue;
            }
            self.tenths_reported = Some(tenths);
            let percent = (done * 100).checked_div(total).unwrap_or(0);
            // A progress line that cannot be written is not worth failing
            // the clip for.
            let _ = writeln!(
                self.out,
                "decoding: step {done}/{total} ({percent}%), {:.1} s",
                self.started.elapsed().as_secs_f64()
            );
        }
        StepControl::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_progress_is_a_plain_line_each_tenth_of_the_way() {
        let mut lines = ProgressLines::new(Vec::new());
        // As the engine reports: every 8 steps, and the last one.
        let total = 203;
        let mut done = 8;
        while done < total {
            assert_eq!(lines.on_step(done, total), StepControl::Continue);
            done += 8;
        }
        lines.on_step(total, total);
        let text = String::from_utf8(lines.into_inner()).expect("utf-8");
        let steps: Vec<&str> = text
            .lines()
            .map(|line| {
                assert!(line.starts_with("decoding: step "), "{line:?}");
                assert!(!line.contains('\x1b'), "no escape codes: {line:?}");
                line.split_whitespace().nth(2).expect("step")
            })
            .collect();
        assert_eq!(
            steps,
            [
                "8/203", "24/203", "48/203", "64/203", "88/203", "104/203", "128/203", "144/203",
                "168/203", "184/203", "203/203"
            ],
            "{text}"
        );
        assert!(
            text.lines().last().is_some_and(|l| l.contains("(100%)")),
            "{text}"
        );
    }

    #[test]
    fn devices_and_dtypes_parse_or_fail_with_a_message() {
        assert_eq!(parse_device("cpu").expect("cpu"), Device::Cpu);
        assert_eq!(parse_device("cuda:1").expect("cuda:1"), Device::Cuda(1));
        assert!(parse_device("tpu").is_err());
        assert_eq!(parse_dtype("bf16").expect("bf16"), Kind::BFloat16);
        assert!(parse_dtype("f8").is_err());
    }
}
