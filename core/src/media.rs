//! The names the API uses for audio: the output `format`, the
//! `normalization`, and the content types an upload may have.
//!
//! Each enum is the one place its spellings, content types and file
//! extensions are written: request parsing, the OpenAPI document, the
//! worker's encoder (through `sound-creator-audio`, which re-exports these)
//! and `GET /v1/models` all take them from here. Nothing here encodes or
//! decodes audio; that is the audio crate's job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A value that is not one of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} must be one of {expected}; got \"{value}\"")]
pub struct ParseError {
    /// The request field the value came from (`format`, `normalization`,
    /// `content_type`).
    pub field: &'static str,
    pub value: String,
    /// The accepted spellings, comma separated.
    pub expected: &'static str,
}

/// The container and codec a generated clip is served in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// RIFF/WAVE, 16-bit PCM: exactly the bytes the service served before
    /// formats existed.
    #[default]
    Wav,
    /// FLAC, lossless, of the same 16-bit samples as the WAV.
    Flac,
    /// MPEG-1/2 Layer III (LAME), constant bit rate, with a LAME/Info tag so
    /// decoders trim the encoder's delay and padding (gapless).
    Mp3,
    /// Ogg Vorbis (libvorbis aoTuV), quality-based variable bit rate.
    Ogg,
}

impl OutputFormat {
    pub const ALL: [OutputFormat; 4] = [
        OutputFormat::Wav,
        OutputFormat::Flac,
        OutputFormat::Mp3,
        OutputFormat::Ogg,
    ];
    /// The spellings, in the order of [`OutputFormat::ALL`] (the request
    /// field's choices).
    pub const NAMES: [&'static str; 4] = ["wav", "flac", "mp3", "ogg"];
    const EXPECTED: &'static str = "wav, flac, mp3, ogg";

    /// The spelling in requests and results.
    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Parses a request's `format` (exact, lower case, as the contract
    /// writes it).
    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|format| format.as_str() == value)
            .ok_or_else(|| ParseError {
                field: "format",
                value: value.to_string(),
                expected: Self::EXPECTED,
            })
    }

    /// The `Content-Type` a stored output is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Wav => "audio/wav",
            OutputFormat::Flac => "audio/flac",
            OutputFormat::Mp3 => "audio/mpeg",
            OutputFormat::Ogg => "audio/ogg",
        }
    }

    /// The file name extension (without the dot) of a stored output.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for OutputFormat {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// What is done to a generated clip's level before it is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Normalization {
    /// Nothing: the samples as the model made them (the default, and
    /// today's output bit for bit).
    #[default]
    None,
    /// EBU R128 integrated loudness to -14 LUFS, the gain capped so the true
    /// peak stays at or below -1 dBTP (`sound_creator_audio::normalize`).
    Loudness,
    /// The largest sample to -1 dBFS.
    Peak,
    /// Hard clip to [-1, 1] (and non-finite samples to 0).
    Clip,
}

impl Normalization {
    pub const ALL: [Normalization; 4] = [
        Normalization::None,
        Normalization::Loudness,
        Normalization::Peak,
        Normalization::Clip,
    ];
    /// The spellings, in the order of [`Normalization::ALL`].
    pub const NAMES: [&'static str; 4] = ["none", "loudness", "peak", "clip"];
    const EXPECTED: &'static str = "none, loudness, peak, clip";

    pub fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    pub fn parse(value: &str) -> Result<Self, ParseError> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == value)
            .ok_or_else(|| ParseError {
                field: "normalization",
                value: value.to_string(),
                expected: Self::EXPECTED,
            })
    }
}

impl fmt::Display for Normalization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Normalization {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The content types `POST /v1/uploads` accepts (the contract's allow-list).
///
/// The type only steers the decoder's first guess: the file's own bytes
/// decide how it is read, so a mislabelled file still decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum UploadFormat {
    #[serde(rename = "audio/wav")]
    Wav,
    #[serde(rename = "audio/flac")]
    Flac,
    #[serde(rename = "audio/mpeg")]
    Mpeg,
    #[serde(rename = "audio/ogg")]
    Ogg,
}

impl UploadFormat {
    pub const ALL: [UploadFormat; 4] = [
        UploadFormat::Wav,
        UploadFormat::Flac,
        UploadFormat::Mpeg,
        UploadFormat::Ogg,
    ];
    /// The content types, in the order of [`UploadFormat::ALL`] (the
    /// upload request's choices).
    pub const CONTENT_TYPES: [&'static str; 4] =
        ["audio/wav", "audio/flac", "audio/mpeg", "audio/ogg"];
    const EXPECTED: &'static str = "audio/wav, audio/flac, audio/mpeg, audio/ogg";

    pub fn content_type(self) -> &'static str {
        Self::CONTENT_TYPES[self as usize]
    }

    /// The usual file extension, the decoder's hint.
    pub fn extension(self) -> &'static str {
        match self {
            UploadFormat::Wav => "wav",
            UploadFormat::Flac => "flac",
            UploadFormat::Mpeg => "mp3",
            UploadFormat::Ogg => "ogg",
        }
    }

    /// Parses a `Content-Type`: one of the four, in any case, with any
    /// parameters (`audio/ogg; codecs=vorbis`) ignored.
    pub fn parse(content_type: &str) -> Result<Self, ParseError> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|format| format.content_type() == essence)
            .ok_or_else(|| ParseError {
                field: "content_type",
                value: content_type.to_string(),
                expected: Self::EXPECTED,
            })
    }
}

impl fmt::Display for UploadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.content_type())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_back_to_its_value() {
        for format in OutputFormat::ALL {
            assert_eq!(OutputFormat::parse(format.as_str()), Ok(format));
            assert_eq!(format.to_string().parse::<OutputFormat>(), Ok(format));
        }
        for n in Normalization::ALL {
            assert_eq!(Normalization::parse(n.as_str()), Ok(n));
        }
        for upload in UploadFormat::ALL {
            assert_eq!(UploadFormat::parse(upload.content_type()), Ok(upload));
        }
    }

    #[test]
    fn defaults_are_todays_output() {
        assert_eq!(OutputFormat::default(), OutputFormat::Wav);
        assert_eq!(Normalization::default(), Normalization::None);
    }

    #[test]
    fn content_types_and_extensions_are_the_contracts() {
        let table: Vec<_> = OutputFormat::ALL
            .iter()
            .map(|f| (f.as_str(), f.content_type(), f.extension()))
            .collect();
        assert_eq!(
            table,
            [
                ("wav", "audio/wav", "wav"),
                ("flac", "audio/flac", "flac"),
                ("mp3", "audio/mpeg", "mp3"),
                ("ogg", "audio/ogg", "ogg"),
            ]
        );
    }

    #[test]
    fn unknown_values_name_the_field_and_the_choices() {
        let err = OutputFormat::parse("WAV").unwrap_err();
        assert_eq!(
            err.to_string(),
            "format must be one of wav, flac, mp3, ogg; got \"WAV\""
        );
        let err = Normalization::parse("").unwrap_err();
        assert_eq!(err.field, "normalization");
        assert!(UploadFormat::parse("video/mp4").is_err());
    }

    #[test]
    fn serde_spells_them_as_the_api_does() {
        for format in OutputFormat::ALL {
            let json = serde_json::to_string(&format).unwrap();
            assert_eq!(json, format!("\"{format}\""));
        }
        for n in Normalization::ALL {
            assert_eq!(serde_json::to_string(&n).unwrap(), format!("\"{n}\""));
        }
        for upload in UploadFormat::ALL {
            let json = serde_json::to_string(&upload).unwrap();
            assert_eq!(json, format!("\"{}\"", upload.content_type()));
        }
    }

    #[test]
    fn upload_content_types_ignore_case_and_parameters() {
        assert_eq!(
            UploadFormat::parse("Audio/OGG; codecs=vorbis"),
            Ok(UploadFormat::Ogg)
        );
        assert_eq!(UploadFormat::parse(" audio/mpeg "), Ok(UploadFormat::Mpeg));
    }
}
