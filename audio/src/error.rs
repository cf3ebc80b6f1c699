//! The one error type of the audio crate.
//!
//! Messages are single lines that can be shown to a client as they are (an
//! upload that will not decode becomes the task error `invalid_melody` with
//! this message); they never include the file's bytes.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AudioError {
    /// The upload is larger than the caller allows.
    #[error("the audio file is {bytes} bytes; the limit is {limit}")]
    TooLarge { bytes: usize, limit: usize },
    /// The file is not audio in a format this crate reads, or is corrupt.
    #[error("the audio file could not be decoded: {0}")]
    Undecodable(String),
    /// The file is readable audio, but of a kind this service does not take
    /// (a codec, rate or channel layout outside what it supports).
    #[error("the audio file is not supported: {0}")]
    Unsupported(String),
    /// A clip handed to a filter or an encoder is malformed (a bug upstream,
    /// not the client's fault).
    #[error("invalid clip: {0}")]
    InvalidClip(String),
    /// An encoder refused the clip or failed.
    #[error("{format} encoding failed: {message}")]
    Encode {
        format: &'static str,
        message: String,
    },
    /// The resampler could not be built or failed.
    #[error("resampling failed: {0}")]
    Resample(String),
}

impl AudioError {
    /// Whether the error is about the input file, i.e. the client's to fix,
    /// rather than a failure of this service.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            AudioError::TooLarge { .. } | AudioError::Undecodable(_) | AudioError::Unsupported(_)
        )
    }
}
