//! The T5 text encoder that conditions MusicGen on the prompt.
//!
//! Follows "Exploring the Limits of Transfer Learning with a Unified
//! Text-to-Text Transformer" (Raffel et al., 2020) as implemented by Hugging
//! Face `transformers` (`models/t5/modeling_t5.py`, `T5EncoderModel`): RMS
//! layer norms without bias or mean subtraction, unscaled dot-product
//! attention with a learned, bucketed relative position bias computed by the
//! first block and shared by all, and a relu (t5-base) or gated-gelu (T5 v1.1)
//! feed-forward. Only the encoder stack exists here; MusicGen never runs the T5
//! decoder. Module paths are the checkpoint keys under `text_encoder.`.
//!
//! The encoder runs once per generation, so it favours plain code over speed,
//! and it must never see a padded position: padded keys get a large negative
//! score before the softmax, exactly as `transformers` masks them.

use tch::{nn, Kind, TchError, Tensor};

use crate::config::{T5Config, T5FeedForward};
use crate::decoder::{additive_mask, Linear};

/// T5's layer norm: scale only, no bias and no mean subtraction; the variance
/// is taken in f32 even for half-precision weights.
#[derive(Debug)]
pub struct T5LayerNorm {
    weight: Tensor,
    eps: f64,
}

impl T5LayerNorm {
    pub fn new(vs: nn::Path, dim: i64, eps: f64) -> Self {
        Self {
            weight: vs.ones_no_train("weight", &[dim]),
            eps,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let variance = xs
            .f_to_kind(Kind::Float)?
            .f_square()?
            .f_mean_dim(-1, true, Kind::Float)?;
        let normed = xs
            .f_to_kind(Kind::Float)?
            .f_mul(&variance.f_add_scalar(self.eps)?.f_rsqrt()?)?;
        normed.f_to_kind(self.weight.kind())?.f_mul(&self.weight)
    }
}

#[derive(Debug)]
struct T5Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    num_heads: i64,
    d_kv: i64,
    /// Only the first block owns it; the bias it yields is reused by the rest.
    relative_attention_bias: Option<Tensor>,
}

impl T5Attention {
    fn new(vs: nn::Path, cfg: &T5Config, has_relative_bias: bool) -> Self {
        let inner = cfg.num_heads * cfg.d_kv;
        let relative_attention_bias = has_relative_bias.then(|| {
            (&vs / "relative_attention_bias").zeros_no_train(
                "weight",
                &[cfg.relative_attention_num_buckets, cfg.num_heads],
            )
        });
        Self {
            q: Linear::new(&vs / "q", cfg.d_model, inner, false),
            k: Linear::new(&vs / "k", cfg.d_model, inner, false),
            v: Linear::new(&vs / "v", cfg.d_model, inner, false),
            o: Linear::new(&vs / "o", inner, cfg.d_model, false),
            num_heads: cfg.num_heads,
            d_kv: cfg.d_kv,
            relative_attention_bias,
        }
    }

    /// `xs`: [batch, len, d_model]; `bias`: [batch or 1, heads, len, len],
    /// position bias plus padding mask, added to the raw scores.
    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor, TchError> {
        let (b, l, _) = xs.size3()?;
        let heads = |t: Tensor| {
            t.f_view([b, l, self.num_heads, self.d_kv])?
                .f_transpose(1, 2)
        };
        let q = heads(self.q.forward(xs)?)?;
        let k = heads(self.k.forward(xs)?)?;
        let v = heads(self.v.forward(xs)?)?;
        // T5 folds the 1/sqrt(d) scaling into its initialisation: no scaling here.
        let scores = q
            .f_matmul(&k.f_transpose(-1, -2)?)?
            .f_to_kind(Kind::Float)?
            .f_add(bias)?;
        let weights = scores.f_softmax(-1, Kind::Float)?.f_to_kind(v.kind())?;
        let out = weights.f_matmul(&v)?.f_transpose(1, 2)?.f_reshape([
            b,
            l,
            self.num_heads * self.d_kv,
        ])?;
        self.o.forward(&out)
    }
}

#[derive(Debug)]
enum FeedForward {
    Plain {
        wi: Linear,
        wo: Linear,
        act: T5FeedForward,
    },
    Gated {
        wi_0: Linear,
        wi_1: Linear,
        wo: Linear,
        act: T5FeedForward,
    },
}

impl FeedForward {
    fn new(vs: nn::Path, cfg: &T5Config, act: T5FeedForward) -> Self {
        match act {
            T5FeedForward::Relu => Self::Plain {
                wi: Linear::new(&vs / "wi", cfg.d_model, cfg.d_ff, false),
                wo: Linear::new(&vs / "wo", cfg.d_ff, cfg.d_model, false),
                act,
            },
            T5FeedForward::GatedGelu | T5FeedForward::GatedRelu => Self::Gated {
                wi_0: Linear::new(&vs / "wi_0", cfg.d_model, cfg.d_ff, false),
                wi_1: Linear::new(&vs / "wi_1", cfg.d_model, cfg.d_ff, false),
                wo: Linear::new(&vs / "wo", cfg.d_ff, cfg.d_model, false),
                act,
            },
        }
    }

    fn activate(act: T5FeedForward, xs: &Tensor) -> Result<Tensor, TchError> {
        match act {
            T5FeedForward::Relu | T5FeedForward::GatedRelu => xs.f_relu(),
            // T5 v1.1's "gelu" is `gelu_new`, the tanh approximation.
            T5FeedForward::GatedGelu => xs.f_gelu("tanh"),
        }
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Self::Plain { wi, wo, act } => wo.forward(&Self::activate(*act, &wi.forward(xs)?)?),
            Self::Gated {
                wi_0,
                wi_1,
                wo,
                act,
            } => {
                let gate = Self::activate(*act, &wi_0.forward(xs)?)?;
                wo.forward(&gate.f_mul(&wi_1.forward(xs)?)?)
            }
        }
    }
}

#[derive(Debug)]
struct T5Block {
    attention: T5Attention,
    attention_norm: T5LayerNorm,
    feed_forward: FeedForward,
    feed_forward_norm: T5LayerNorm,
}

impl T5Block {
    fn new(vs: nn::Path, cfg: &T5Config, index: i64, act: T5FeedForward) -> Self {
        let layer = &vs / "layer";
        let attn = &layer / 0;
        let ff = &layer / 1;
        Self {
            attention: T5Attention::new(&attn / "SelfAttention", cfg, index == 0),
            attention_norm: T5LayerNorm::new(
                &attn / "layer_norm",
                cfg.d_model,
                cfg.layer_norm_epsilon,
            ),
            feed_forward: FeedForward::new(&ff / "DenseReluDense", cfg, act),
            feed_forward_norm: T5LayerNorm::new(
                &ff / "layer_norm",
                cfg.d_model,
                cfg.layer_norm_epsilon,
            ),
        }
    }

    fn forward(&self, xs: &Tensor, bias: &Tensor) -> Result<Tensor, TchError> {
        let xs = xs.f_add(
            &self
                .attention
                .forward(&self.attention_norm.forward(xs)?, bias)?,
        )?;
        xs.f_add(
            &self
                .feed_forward
                .forward(&self.feed_forward_norm.forward(&xs)?)?,
        )
    }
}

/// The T5 encoder stack, created at the checkpoint's `text_encoder` prefix.
#[derive(Debug)]
pub struct T5Encoder {
    shared: Tensor,
    blocks: Vec<T5Block>,
    final_layer_norm: T5LayerNorm,
    cfg: T5Config,
}

impl T5Encoder {
    /// Errors only on a feed-forward flavour this crate does not implement.
    pub fn new(vs: nn::Path, cfg: &T5Config) -> Result<Self, String> {
        let act = cfg.feed_forward().ok_or_else(|| {
            format!(
                "unsupported T5 feed_forward_proj `{}`",
                cfg.feed_forward_proj
            )
        })?;
        // The token embedding is stored once as `shared` (the encoder's
        // `embed_tokens` is tied to it and not saved separately).
        let shared = (&vs / "shared").zeros_no_train("weight", &[cfg.vocab_size, cfg.d_model]);
        let encoder = &vs / "encoder";
        let blocks = (0..cfg.num_layers)
            .map(|i| T5Block::new(&encoder / "block" / i, cfg, i, act))
            .collect();
        let final_layer_norm = T5LayerNorm::new(
            &encoder / "final_layer_norm",
            cfg.d_model,
            cfg.layer_norm_epsilon,
        );
        Ok(Self {
            shared,
            blocks,
            final_layer_norm,
            cfg: cfg.clone(),
        })
    }

    /// `input_ids`, `attention_mask`: [batch, len] i64 (mask 1 = token, 0 = pad).
    /// Returns the last hidden state [batch, len, d_model].
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor, TchError> {
        let (_, len) = input_ids.size2()?;
        let device = self.shared.device();
        let input_ids = input_ids.f_to_device(device)?;
        let mut xs = Tensor::f_embedding(&self.shared, &input_ids, -1, false, false)?;
        let position_bias = self.position_bias(len)?;
        let bias = position_bias.f_add(&additive_mask(&attention_mask.f_to_device(device)?)?)?;
        for block in &self.blocks {
            xs = block.forward(&xs, &bias)?;
        }
        self.final_layer_norm.forward(&xs)
    }

    /// [1, heads, len, len] f32: the learned bias of each (query, key) offset.
    fn position_bias(&self, len: i64) -> Result<Tensor, TchError> {
        let table = self
            .blocks
            .first()
            .and_then(|b| b.attention.relative_attention_bias.as_ref())
            .ok_or_else(|| TchError::Kind("T5 encoder has no layers".to_owned()))?;
        let buckets = relative_position_buckets(
            len,
            self.cfg.relative_attention_num_buckets,
            self.cfg.relative_attention_max_distance,
        );
        let buckets = Tensor::from_slice(&buckets)
            .f_view([len, len])?
            .f_to_device(table.device())?;
        Tensor::f_embedding(table, &buckets, -1, false, false)?
            .f_permute([2, 0, 1])?
            .f_unsqueeze(0)?
            .f_to_kind(Kind::Float)
    }
}

/// Bidirectional relative position buckets, row-major [query][key], as
/// `T5Attention._relative_position_bucket`: half the buckets per direction,
/// exact buckets for the nearest offsets and log-spaced ones up to
/// `max_distance`, beyond which everything shares the last bucket.
pub fn relative_position_buckets(len: i64, num_buckets: i64, max_distance: i64) -> Vec<i64> {
    let half = num_buckets / 2;
    let max_exact = half / 2;
    let mut out = Vec::with_capacity((len * len) as usize);
    for query in 0..len {
        for key in 0..len {
            let relative = key - query;
            let mut bucket = if relative > 0 { half } else { 0 };
            let distance = relative.abs();
            if distance < max_exact {
                bucket += distance;
            } else {
                // Computed in f32 like the reference so the rounding agrees.
                let ratio = (distance as f32 / max_exact as f32).ln()
                    / (max_distance as f32 / max_exact as f32).ln()
                    * (half - max_exact) as f32;
                let large = max_exact + ratio as i64;
                bucket += large.min(half - 1);
            }
            out.push(bucket);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_match_t5_for_known_offsets() {
        // Values from transformers' T5Attention._relative_position_bucket with
        // 32 buckets, max_distance 128, bidirectional.
        let b = relative_position_buckets(200, 32, 128);
        let at = |q: i64, k: i64| b[(q * 200 + k) as usize];
        assert_eq!(at(0, 0), 0);
        assert_eq!(at(0, 1), 17);
        assert_eq!(at(1, 0), 1);
        assert_eq!(at(0, 7), 23);
        assert_eq!(at(0, 8), 24);
        assert_eq!(at(8, 0), 8);
        assert_eq!(at(0, 199), 31);
        assert_eq!(at(199, 0), 15);
    }
}
