//! The generator port and the audio it returns, plus the 16-bit WAV
//! encoding the one-clip CLI writes (the service encodes through
//! `sound-creator-audio`, whose WAV is these same bytes).
//!
//! Generation is synchronous and CPU/GPU bound: callers run it on a blocking
//! thread. The engine reports its decoding progress to a [`StepObserver`]
//! every few steps, which is how progress is published and how a canceled
//! job stops within those few steps.
//!
//! What an engine receives and must honour is written here, on
//! [`ClipRequest`], [`MelodyInput`] and [`ModelInfo`]: the worker decodes
//! uploads, normalizes and encodes; the engine only generates.

use serde::{Deserialize, Serialize};

use crate::request::GenerationParams;

/// The rate of [`MelodyInput::samples`]: MusicGen-melody's chroma is
/// computed on 32 kHz audio.
pub const MELODY_SAMPLE_RATE: u32 = 32_000;

/// One clip to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRequest {
    pub prompt: String,
    /// Seconds. May exceed the model's window (30 s for MusicGen) when
    /// [`ModelInfo::max_duration`] allows it: the engine then generates
    /// window by window (audiocraft's `extend_stride`), and reports the
    /// steps of all windows to the observer as one count.
    pub duration: f64,
    pub params: GenerationParams,
    /// The melody to condition on, or `None`.
    ///
    /// A generator whose [`ModelInfo::melody`] is false must answer
    /// [`GenerationError::Rejected`] for a batch holding any request with a
    /// melody (the worker refuses such jobs before calling it, but the
    /// engine must not silently ignore one). A melody model given `None`
    /// conditions on "no melody" the way transformers'
    /// `MusicgenMelodyForConditionalGeneration.generate` does when it gets no
    /// `input_features`. One batch may mix requests with and without a
    /// melody.
    #[serde(default)]
    pub melody: Option<MelodyInput>,
}

impl ClipRequest {
    /// A request without a melody.
    pub fn new(prompt: impl Into<String>, duration: f64, params: GenerationParams) -> Self {
        Self {
            prompt: prompt.into(),
            duration,
            params,
            melody: None,
        }
    }
}

/// An uploaded melody, as the worker hands it to the engine: the whole
/// upload (up to the decoder's limit of 300 s), decoded, averaged to mono
/// and resampled to [`MELODY_SAMPLE_RATE`] by
/// `sound_creator_audio::melody_input`. Never empty.
///
/// The engine makes MusicGen-melody's conditioning from it with the audio
/// crate, as transformers does: for a clip that fits one window,
/// `fit_chroma_length(&melody_chroma(&samples), chroma_length)` (n_fft
/// 16384, hop 4096, 12 bins, argmax one-hot; `chroma_length` from the
/// checkpoint's config, 235 frames for 30 s; tiled when the melody is
/// shorter, cut when longer); for a window of a longer clip that starts
/// `offset` seconds into it, the same of
/// `melody_window(&samples, offset * 32000, 30 * 32000)` (audiocraft's
/// `_generate_tokens`: the melody follows the clip's time line and wraps
/// around when it is shorter).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MelodyInput {
    /// Mono, nominally in [-1, 1].
    pub samples: Vec<f32>,
    /// Always [`MELODY_SAMPLE_RATE`].
    pub sample_rate: u32,
}

impl MelodyInput {
    pub fn duration_seconds(&self) -> f64 {
        self.samples.len() as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Generated audio: `channels` interleaved channels of samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

impl Clip {
    /// `seconds` of mono silence: what the generators that stand in for a
    /// model (tests, the pipeline benchmark) return.
    pub fn silence(seconds: f64, sample_rate: u32) -> Self {
        Self {
            samples: vec![0.0; (seconds * f64::from(sample_rate)) as usize],
            sample_rate,
            channels: 1,
        }
    }

    pub fn duration_seconds(&self) -> f64 {
        let frames = self.samples.len() / usize::from(self.channels.max(1));
        frames as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// What a loaded model is and can do: for logs, `GET /v1/models`, and the
/// checks made at submit time (`model`, `melody`, `duration`) and by the
/// worker before it hands a job to the engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Hub id or directory it was loaded from, exactly as the setting
    /// (`MUSIC_GEN_MODEL`, `MUSIC_GEN_MODELS`, ...) names it: the id a
    /// request's `model` gives and a job carries.
    pub name: String,
    /// Of the clips it returns.
    pub sample_rate: u32,
    /// Of the clips it returns: 2 for the stereo checkpoints.
    pub channels: u16,
    /// Audio frames (codec steps) per second: one decoding step each.
    pub frame_rate: f64,
    /// Whether requests may carry a [`ClipRequest::melody`]
    /// (`facebook/musicgen-melody`, `-melody-large`, `-stereo-melody*`).
    #[serde(default)]
    pub melody: bool,
    /// The longest clip, in seconds, it makes; `None` when it has no limit
    /// of its own (longer clips are generated window by window), leaving
    /// `MAX_DURATION` the only cap.
    #[serde(default)]
    pub max_duration: Option<f64>,
    /// Where the model runs, as the device setting spells it: `cpu`, `cuda:0`.
    #[serde(default)]
    pub device: String,
    /// The GPU's name when `device` is a CUDA device (`NVIDIA H200`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// The decoder's precision: `f32`, `f16` or `bf16`.
    #[serde(default)]
    pub dtype: String,
}

impl ModelInfo {
    /// A mono model on the CPU in f32, without melody or a length limit of
    /// its own: how the generators that stand in for a model describe
    /// themselves.
    pub fn cpu(name: impl Into<String>, sample_rate: u32, frame_rate: f64) -> Self {
        Self {
            name: name.into(),
            sample_rate,
            channels: 1,
            frame_rate,
            melody: false,
            max_duration: None,
            device: "cpu".to_owned(),
            gpu: None,
            dtype: "f32".to_owned(),
        }
    }
}

/// Whether the engine should carry on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepControl {
    Continue,
    Stop,
}

/// Told about decoding progress every few steps (steps done so far, of
/// `total`), and after the last one; answering [`StepControl::Stop`] ends
/// the generation with [`GenerationError::Canceled`] and frees the device.
pub trait StepObserver: Send {
    fn on_step(&mut self, done: usize, total: usize) -> StepControl;
}

/// An observer that never stops anything (the CLI's one-clip mode).
pub struct RunToEnd;

impl StepObserver for RunToEnd {
    fn on_step(&mut self, _done: usize, _total: usize) -> StepControl {
        StepControl::Continue
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerationError {
    #[error("generation was canceled")]
    Canceled,
    /// The request cannot be served by this model (e.g. too long for it).
    #[error("{0}")]
    Rejected(String),
    /// The engine failed (device error, out of memory, ...); retrying may help.
    #[error("{0}")]
    Engine(String),
}

/// The port to a text-to-audio model. One call may serve several prompts in
/// one batched forward pass; results come back in request order.
pub trait AudioGenerator: Send + Sync {
    fn info(&self) -> ModelInfo;

    fn generate(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<Clip>, GenerationError>;
}

/// Encodes a clip as a RIFF/WAVE file with 16-bit signed PCM samples.
/// Samples outside [-1, 1] are clipped rather than wrapped.
pub fn encode_wav(clip: &Clip) -> Vec<u8> {
    let channels = clip.channels.max(1);
    let data_len = (clip.samples.len() * 2) as u32;
    let byte_rate = clip.sample_rate * u32::from(channels) * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&clip.sample_rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in &clip.samples {
        let s = if s.is_finite() {
            s.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        out.extend_from_slice(&((s * 32767.0).round() as i16).to_le_bytes());
    }
    out
}

/// The header fields of a 16-bit PCM WAV file, as read back by tests and by
/// the benchmark to check what was served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WavHeader {
    pub channels: u16,
    pub sample_rate: u32,
    pub bits_per_sample: u16,
    pub frames: u32,
}

/// Reads a canonical 44-byte-header WAV and returns its header and samples.
pub fn decode_wav(bytes: &[u8]) -> Result<(WavHeader, Vec<i16>), String> {
    if bytes.len() < 44 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([bytes[i], bytes[i + 1]]);
    let u32_at =
        |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    if &bytes[12..16] != b"fmt " || u16_at(20) != 1 {
        return Err("not PCM".into());
    }
    let channels = u16_at(22);
    let sample_rate = u32_at(24);
    let bits_per_sample = u16_at(34);
    if &bytes[36..40] != b"data" {
        return Err("no data chunk after fmt".into());
    }
    let data_len = u32_at(40) as usize;
    if u32_at(4) as usize != 36 + data_len || bytes.len() != 44 + data_len {
        return Err("chunk sizes do not match the file length".into());
    }
    if bits_per_sample != 16 || channels == 0 {
        return Err(format!("expected 16-bit samples, found {bits_per_sample}"));
    }
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    let frames = (samples.len() / usize::from(channels)) as u32;
    Ok((
        WavHeader {
            channels,
            sample_rate,
            bits_per_sample,
            frames,
        },
        samples,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wav_round_trips_with_a_correct_header() {
        let clip = Clip {
            samples: vec![0.0, 0.5, -0.5, 1.0, -1.0, 2.0, f32::NAN],
            sample_rate: 32000,
            channels: 1,
        };
        let bytes = encode_wav(&clip);
        assert_eq!(bytes.len(), 44 + 14);
        let (header, samples) = decode_wav(&bytes).unwrap();
        assert_eq!(
            header,
            WavHeader {
                channels: 1,
                sample_rate: 32000,
                bits_per_sample: 16,
                frames: 7
            }
        );
        assert_eq!(samples, vec![0, 16384, -16384, 32767, -32767, 32767, 0]);
    }

    #[test]
    fn truncated_or_foreign_files_are_rejected() {
        let bytes = encode_wav(&Clip {
            samples: vec![0.1; 10],
            sample_rate: 16000,
            channels: 1,
        });
        assert!(decode_wav(&bytes[..50]).is_err());
        assert!(
            decode_wav(b"ID3 not a wav file at all, but long enough to have a header").is_err()
        );
    }

    #[test]
    fn clip_duration_counts_frames_not_samples() {
        let clip = Clip {
            samples: vec![0.0; 64000],
            sample_rate: 32000,
            channels: 2,
        };
        assert_eq!(clip.duration_seconds(), 1.0);
    }
}
