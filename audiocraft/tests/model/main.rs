//! The model crate's integration tests: checkpoint loading and its errors,
//! and parity with `transformers` on the committed tiny fixtures. One test
//! binary instead of four keeps the build small: each links libtorch.

mod checkpoint;
mod encodec_parity;
mod encodec_variants;
mod parity;
mod torch_file;
