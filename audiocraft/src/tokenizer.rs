//! The T5 tokenizer of a MusicGen checkpoint, read from its `tokenizer.json`.
//!
//! Follows the `transformers` `T5TokenizerFast` behaviour MusicGen's processor
//! relies on: the post-processor in `tokenizer.json` appends `</s>`, a batch
//! is right-padded with `<pad>` to its longest prompt, and the attention mask
//! marks real tokens with 1 and padding with 0. Prompts longer than the text
//! encoder can usefully read are truncated rather than rejected, as the
//! reference does with `truncation=True`; the caller checks prompt length.

use std::path::Path;

use tch::Tensor;
use tokenizers::{PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

/// A padded batch of prompts, on the CPU.
#[derive(Debug)]
pub struct EncodedPrompts {
    /// [batch, len] i64 token ids.
    pub input_ids: Tensor,
    /// [batch, len] i64, 1 for tokens and 0 for padding.
    pub attention_mask: Tensor,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{path}: cannot load tokenizer: {reason}")]
    Load { path: String, reason: String },
    #[error("cannot tokenize prompt: {0}")]
    Encode(String),
}

pub struct T5Tokenizer {
    inner: Tokenizer,
}

impl std::fmt::Debug for T5Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("T5Tokenizer")
            .field("vocab_size", &self.inner.get_vocab_size(true))
            .finish()
    }
}

/// T5's own limit; musicgen's processor truncates to it.
const MAX_TOKENS: usize = 512;

impl T5Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self, TokenizerError> {
        let load_err = |reason: String| TokenizerError::Load {
            path: path.display().to_string(),
            reason,
        };
        let mut inner = Tokenizer::from_file(path).map_err(|e| load_err(e.to_string()))?;
        let pad_id = inner.token_to_id("<pad>").unwrap_or(0);
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_id,
            pad_type_id: 0,
            pad_token: "<pad>".to_owned(),
            pad_to_multiple_of: None,
        }));
        inner
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS,
                ..Default::default()
            }))
            .map_err(|e| load_err(e.to_string()))?;
        Ok(Self { inner })
    }

    /// Token ids (with the trailing `</s>`) of one prompt.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, TokenizerError> {
        let encoding = self
            .inner
            .encode(prompt, true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Tokenizes and right-pads a batch of prompts.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<EncodedPrompts, TokenizerError> {
        let encodings = self
            .inner
            .encode_batch(prompts.to_vec(), true)
            .map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let len = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .max(1);
        let mut ids = Vec::with_capacity(prompts.len() * len);
        let mut mask = Vec::with_capacity(prompts.len() * len);
        for encoding in &encodings {
            let pad = len - encoding.get_ids().len();
            ids.extend(encoding.get_ids().iter().map(|&i| i64::from(i)));
            mask.extend(encoding.get_attention_mask().iter().map(|&m| i64::from(m)));
            // BatchLongest already pads; this only covers an all-empty batch.
            ids.extend(std::iter::repeat_n(0, pad));
            mask.extend(std::iter::repeat_n(0, pad));
        }
        let shape = [prompts.len() as i64, len as i64];
        Ok(EncodedPrompts {
            input_ids: Tensor::from_slice(&ids).view(shape),
            attention_mask: Tensor::from_slice(&mask).view(shape),
        })
    }
}
