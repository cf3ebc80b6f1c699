//! The serverless-facing side of sound-creator: the HTTP API router and the
//! Lambda entry points' shared code. Nothing here links libtorch.

pub mod api;
pub mod connections;
pub mod lambda;
