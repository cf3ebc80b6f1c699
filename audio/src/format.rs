//! The names the API uses for audio: the output `format`, the
//! `normalization`, and the content types an upload may have.
//!
//! They are written once, in `sound_creator_core::media` (request parsing,
//! the OpenAPI document and `GET /v1/models` read them there too), and
//! re-exported here so this crate's functions take the same types.

pub use sound_creator_core::media::{Normalization, OutputFormat, ParseError, UploadFormat};
