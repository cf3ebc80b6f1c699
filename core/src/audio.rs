//! The generator port and the audio it returns, plus the WAV encoding every
//! output goes through.
//!
//! Generation is synchronous and CPU/GPU bound: callers run it on a blocking
//! thread. The engine reports its decoding progress to a [`StepObserver`]
//! every few steps, which is how progress is published and how a canceled
//! job stops within those few steps.

use serde::{Deserialize, Serialize};

use crate::request::GenerationParams;

/// One clip to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipRequest {
    pub prompt: String,
    /// Seconds.
    pub duration: f64,
    pub params: GenerationParams,
}

/// Generated audio: `channels` interleaved channels of samples in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

impl Clip {
    pub fn duration_seconds(&self) -> f64 {
        let frames = self.samples.len() / usize::from(self.channels.max(1));
        frames as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// What a loaded model is, for logs, health and validation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Hub id or directory it was loaded from.
    pub name: String,
    pub sample_rate: u32,
    pub channels: u16,
    /// Audio frames (codec steps) per second: one decoding step each.
    pub frame_rate: f64,
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
