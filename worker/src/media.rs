//! The worker's audio work around generation, with the audio crate: the
//! melody a job names, read from its upload and made into what the engine
//! takes ([`load_melody`]); and a generated clip made into the file the
//! client downloads ([`render`]: the request's normalization, then its
//! format).
//!
//! Both are CPU-bound and run on blocking threads. A client's file must
//! never panic the worker or pass for a service failure: whatever is wrong
//! with a melody upload is a [`MelodyError::Invalid`], which fails the stage
//! `invalid_melody` with a message fit to show the client.

use sound_creator_audio::{
    decode_upload, encode, melody_input, normalize, Clip as AudioClip, DecodeLimits,
};
use sound_creator_core::audio::{Clip, MelodyInput, MELODY_SAMPLE_RATE};
use sound_creator_core::media::{Normalization, OutputFormat};
use sound_creator_core::ports::{BackendError, Ports};
use sound_creator_core::request::MelodyRequest;

/// Why a job's melody could not be had.
#[derive(Debug)]
pub enum MelodyError {
    /// The upload is gone or is not audio this service can read: the
    /// client's to fix.
    Invalid(String),
    /// A backend failed; the job is tried again.
    Backend(BackendError),
}

impl From<BackendError> for MelodyError {
    fn from(e: BackendError) -> Self {
        MelodyError::Backend(e)
    }
}

/// Reads the upload `melody` names and decodes it to the engine's melody
/// input: mono at [`MELODY_SAMPLE_RATE`], at most `max_bytes` of file and
/// the audio crate's 300 s of audio.
pub async fn load_melody(
    ports: &Ports,
    melody: &MelodyRequest,
    max_bytes: u64,
) -> Result<MelodyInput, MelodyError> {
    let id = &melody.upload_id;
    let upload =
        ports.uploads.get(id).await?.ok_or_else(|| {
            MelodyError::Invalid(format!("the melody upload {id} is no longer kept"))
        })?;
    let bytes = ports
        .blobs
        .get(&upload.blob_key)
        .await?
        .ok_or_else(|| MelodyError::Invalid(format!("the melody upload {id} has no file")))?;
    let content_type = upload.format.content_type();
    let limits = DecodeLimits {
        max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
        ..DecodeLimits::default()
    };
    let decoded = tokio::task::spawn_blocking(move || {
        let decoded = decode_upload(&bytes, content_type, &limits)?;
        melody_input(&decoded.clip)
    })
    .await
    .map_err(|e| MelodyError::Invalid(format!("the melody could not be decoded: {e}")))?;
    let samples = decoded.map_err(|e| MelodyError::Invalid(format!("melody upload {id}: {e}")))?;
    if samples.is_empty() {
        return Err(MelodyError::Invalid(format!(
            "melody upload {id}: the file holds no audio"
        )));
    }
    Ok(MelodyInput {
        samples,
        sample_rate: MELODY_SAMPLE_RATE,
    })
}

/// A clip as stored: the file and what the result says about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub extension: &'static str,
    /// Of the audio itself, in seconds.
    pub duration: f64,
    pub sample_rate: u32,
    pub channels: u16,
}

/// Levels `clip` as `normalization` says, then encodes it as `format`.
/// With `none` and `wav` the bytes are exactly those the service always
/// served (`core::audio::encode_wav`).
pub async fn render(
    clip: Clip,
    format: OutputFormat,
    normalization: Normalization,
) -> Result<Rendered, String> {
    tokio::task::spawn_blocking(move || {
        let mut clip = AudioClip {
            samples: clip.samples,
            sample_rate: clip.sample_rate,
            channels: clip.channels,
        };
        normalize(&mut clip, normalization)
            .map_err(|e| format!("{normalization} normalization failed: {e}"))?;
        let encoded = encode(&clip, format).map_err(|e| e.to_string())?;
        Ok(Rendered {
            content_type: encoded.content_type(),
            extension: encoded.extension(),
            bytes: encoded.bytes,
            duration: clip.duration_seconds(),
            sample_rate: clip.sample_rate,
            channels: clip.channels,
        })
    })
    .await
    .unwrap_or_else(|e| Err(format!("encoding panicked: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sound_creator_core::audio::encode_wav;

    fn clip(channels: u16) -> Clip {
        // Out of range and non-finite samples too: what a model may return.
        let mut samples: Vec<f32> = (0..3200 * usize::from(channels))
            .map(|i| ((i as f32) * 0.013).sin() * 1.3)
            .collect();
        samples[5] = f32::NAN;
        samples[6] = f32::INFINITY;
        Clip {
            samples,
            sample_rate: 32_000,
            channels,
        }
    }

    #[tokio::test]
    async fn none_and_wav_are_the_bytes_the_service_always_served() {
        for channels in [1, 2] {
            let clip = clip(channels);
            let rendered = render(clip.clone(), OutputFormat::Wav, Normalization::None)
                .await
                .unwrap();
            assert_eq!(rendered.bytes, encode_wav(&clip), "{channels} channels");
            assert_eq!(
                (rendered.content_type, rendered.extension, rendered.channels),
                ("audio/wav", "wav", channels)
            );
            assert!((rendered.duration - 0.1).abs() < 1e-9);
        }
    }

    #[tokio::test]
    async fn each_format_gets_its_own_type_and_extension() {
        for format in OutputFormat::ALL {
            let rendered = render(clip(2), format, Normalization::Peak).await.unwrap();
            assert_eq!(rendered.content_type, format.content_type());
            assert_eq!(rendered.extension, format.extension());
            assert_eq!((rendered.sample_rate, rendered.channels), (32_000, 2));
        }
    }

    #[tokio::test]
    async fn a_normalization_changes_the_level_and_nothing_else() {
        let plain = render(clip(1), OutputFormat::Wav, Normalization::None)
            .await
            .unwrap();
        let peak = render(clip(1), OutputFormat::Wav, Normalization::Peak)
            .await
            .unwrap();
        assert_eq!(plain.bytes.len(), peak.bytes.len());
        assert_ne!(plain.bytes, peak.bytes);
    }
}
