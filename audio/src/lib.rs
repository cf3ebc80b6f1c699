//! Audio files in and out of sound-creator: decoding uploaded melodies,
//! resampling, the melody chromagram MusicGen-melody conditions on, loudness
//! normalization, and encoding the generated clips as WAV, FLAC, MP3 or Ogg.
//!
//! Everything here works on byte buffers and sample vectors: no file system,
//! no network, no async runtime, no libtorch, so the API and the worker can
//! both use it. Input decoding must never panic on a hostile file and must
//! stay within the [`DecodeLimits`] it is given; every failure is an
//! [`AudioError`] with a one-line message fit to show a client.
//!
//! The flow for a melody upload is
//! [`decode_upload`] → [`melody_input`] (mono, 32 kHz) → [`melody_chroma`]
//! → [`fit_chroma_length`]; for an output it is
//! [`normalize`] → [`encode`].
//!
//! ```
//! use sound_creator_audio::*;
//!
//! // A generated clip, levelled and encoded as the request asked.
//! let mut clip = Clip { samples: vec![0.1; 32_000], sample_rate: 32_000, channels: 1 };
//! normalize(&mut clip, Normalization::parse("peak")?)?;
//! let file = encode(&clip, OutputFormat::parse("mp3")?)?;
//! assert_eq!((file.content_type(), file.extension()), ("audio/mpeg", "mp3"));
//!
//! // An uploaded melody, as MusicGen-melody's 235 chroma frames.
//! let upload = decode_upload(&file.bytes, "audio/mpeg", &DecodeLimits::default())?;
//! let chroma = fit_chroma_length(&melody_chroma(&melody_input(&upload.clip)?), 235);
//! assert_eq!((chroma.frames(), chroma.num_chroma), (235, 12));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod chroma;
mod clip;
mod decode;
mod encode;
mod error;
mod format;
mod normalize;
mod resample;

pub use chroma::{
    fit_chroma_length, melody_chroma, melody_window, ChromaConfig, ChromaExtractor, Chromagram,
};
pub use clip::Clip;
pub use decode::{decode_upload, DecodeLimits, DecodedAudio};
pub use encode::{encode, EncodedAudio};
pub use error::AudioError;
pub use format::{Normalization, OutputFormat, ParseError, UploadFormat};
pub use normalize::{normalize, LOUDNESS_TARGET_LUFS, PEAK_TARGET_DBFS, TRUE_PEAK_CEILING_DBTP};
pub use resample::{downmix_to_mono, melody_input, resample, MELODY_SAMPLE_RATE};
