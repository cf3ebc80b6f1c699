//! MusicGen inference on libtorch through `tch`.
//!
//! Follows "Simple and Controllable Music Generation" (Copet et al., 2023) as
//! implemented by Hugging Face `transformers` (`MusicgenForConditionalGeneration`),
//! whose checkpoint layout (`config.json`, `model.safetensors`, T5 tokenizer)
//! is the one loaded here: every module path below is a checkpoint key prefix.

pub mod audiocraft_config;
pub mod audiogen;
pub mod batching;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cuda;
pub mod decoder;
pub mod encodec;
pub mod engine;
pub mod gemv;
pub mod generation;
pub mod hub;
pub mod musicgen_melody;
pub mod safetensors_header;
pub mod sampling;
pub mod t5;
pub mod tokenizer;
pub mod torch_pickle;
pub mod windowing;

pub use audiogen::AudioGenEngine;
pub use engine::MusicGenEngine;
