//! The model crate's integration tests: checkpoint loading and its errors,
//! parity with `transformers` on the committed tiny fixtures, and the link
//! of the model binaries. One test binary instead of five keeps the build
//! small: each links libtorch.

mod audiogen;
mod checkpoint;
mod encodec_parity;
mod encodec_variants;
mod linking;
mod parity;
mod torch_file;
