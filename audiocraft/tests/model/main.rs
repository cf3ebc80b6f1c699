//! The model crate's integration tests: checkpoint loading and its errors,
//! parity with `transformers` on the committed tiny fixtures (MusicGen,
//! melody, stereo, long-clip windowing), and the link of the model
//! binaries. One test binary instead of many keeps the build small: each
//! links libtorch.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod audiogen;
mod checkpoint;
mod encodec_parity;
mod encodec_variants;
mod fixtures;
mod linking;
mod melody_parity;
mod parity;
mod stereo_parity;
mod torch_file;
mod windowing;
