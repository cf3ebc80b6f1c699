//! Model configuration: serde mirrors of the Hugging Face `config.json` of a
//! MusicGen checkpoint.
//!
//! Field names are the JSON keys themselves, so a value can be looked up in the
//! checkpoint's `config.json` by the name it has here.

use serde::{Deserialize, Serialize};

/// The `audio_encoder` section: EnCodec (`transformers.EncodecConfig`).
///
/// Derived quantities that `transformers` computes as properties
/// (`frame_rate`, `num_quantizers`, ...) are methods here; `frame_rate` may
/// also appear in the JSON, in which case the stored value is kept for reference
/// but the method is what the model uses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EncodecConfig {
    #[serde(default = "EncodecConfig::default_target_bandwidths")]
    pub target_bandwidths: Vec<f64>,
    #[serde(default = "EncodecConfig::default_sampling_rate")]
    pub sampling_rate: u32,
    #[serde(default = "one")]
    pub audio_channels: i64,
    #[serde(default)]
    pub normalize: bool,
    #[serde(default)]
    pub chunk_length_s: Option<f64>,
    #[serde(default)]
    pub overlap: Option<f64>,
    #[serde(default = "EncodecConfig::default_hidden_size")]
    pub hidden_size: i64,
    #[serde(default = "EncodecConfig::default_num_filters")]
    pub num_filters: i64,
    #[serde(default = "one")]
    pub num_residual_layers: i64,
    #[serde(default = "EncodecConfig::default_upsampling_ratios")]
    pub upsampling_ratios: Vec<i64>,
    #[serde(default = "EncodecConfig::default_norm_type")]
    pub norm_type: String,
    #[serde(default = "seven")]
    pub kernel_size: i64,
    #[serde(default = "seven")]
    pub last_kernel_size: i64,
    #[serde(default = "three")]
    pub residual_kernel_size: i64,
    #[serde(default = "two")]
    pub dilation_growth_rate: i64,
    #[serde(default = "yes")]
    pub use_causal_conv: bool,
    #[serde(default = "EncodecConfig::default_pad_mode")]
    pub pad_mode: String,
    #[serde(default = "two")]
    pub compress: i64,
    #[serde(default = "two")]
    pub num_lstm_layers: i64,
    #[serde(default = "one_f64")]
    pub trim_right_ratio: f64,
    #[serde(default = "EncodecConfig::default_codebook_size")]
    pub codebook_size: i64,
    /// `None` in the JSON means "same as `hidden_size`"; see [`EncodecConfig::codebook_dim`].
    #[serde(default)]
    pub codebook_dim: Option<i64>,
    #[serde(default = "yes")]
    pub use_conv_shortcut: bool,
    /// Present in some exported configs; the model uses [`EncodecConfig::frame_rate`].
    #[serde(default)]
    pub frame_rate: Option<f64>,
}

fn one() -> i64 {
    1
}
fn two() -> i64 {
    2
}
fn three() -> i64 {
    3
}
fn seven() -> i64 {
    7
}
fn one_f64() -> f64 {
    1.0
}
fn yes() -> bool {
    true
}

impl EncodecConfig {
    fn default_target_bandwidths() -> Vec<f64> {
        vec![1.5, 3.0, 6.0, 12.0, 24.0]
    }
    fn default_sampling_rate() -> u32 {
        24_000
    }
    fn default_hidden_size() -> i64 {
        128
    }
    fn default_num_filters() -> i64 {
        32
    }
    fn default_upsampling_ratios() -> Vec<i64> {
        vec![8, 5, 4, 2]
    }
    fn default_norm_type() -> String {
        "weight_norm".to_owned()
    }
    fn default_pad_mode() -> String {
        "reflect".to_owned()
    }
    fn default_codebook_size() -> i64 {
        1024
    }

    /// The EnCodec 32 kHz model that `facebook/musicgen-small` ships.
    pub fn musicgen_32khz() -> Self {
        Self {
            target_bandwidths: vec![2.2],
            sampling_rate: 32_000,
            audio_channels: 1,
            normalize: false,
            chunk_length_s: None,
            overlap: None,
            hidden_size: 128,
            num_filters: 64,
            num_residual_layers: 1,
            upsampling_ratios: vec![8, 5, 4, 4],
            norm_type: "weight_norm".to_owned(),
            kernel_size: 7,
            last_kernel_size: 7,
            residual_kernel_size: 3,
            dilation_growth_rate: 2,
            use_causal_conv: false,
            pad_mode: "reflect".to_owned(),
            compress: 2,
            num_lstm_layers: 2,
            trim_right_ratio: 1.0,
            codebook_size: 2048,
            codebook_dim: Some(128),
            use_conv_shortcut: false,
            frame_rate: None,
        }
    }

    /// Width of a codebook entry (`codebook_dim`, defaulting to `hidden_size`).
    pub fn codebook_dim(&self) -> i64 {
        self.codebook_dim.unwrap_or(self.hidden_size)
    }

    /// Audio samples per code frame: the product of the upsampling ratios.
    pub fn hop_length(&self) -> i64 {
        self.upsampling_ratios.iter().product()
    }

    /// Code frames per second, rounded up as `transformers` does.
    pub fn frame_rate(&self) -> i64 {
        let hop = self.hop_length().max(1);
        (i64::from(self.sampling_rate) + hop - 1) / hop
    }

    /// Number of residual codebooks the quantizer holds, derived from the
    /// largest target bandwidth exactly as `transformers` does.
    pub fn num_quantizers(&self) -> i64 {
        let nbits = (self.codebook_size.max(1) as f64).log2().ceil();
        let max_bandwidth = self.target_bandwidths.last().copied().unwrap_or(0.0);
        (1000.0 * max_bandwidth / (self.frame_rate() as f64 * nbits)).floor() as i64
    }
}

/// The `text_encoder` section: T5 (`transformers.T5Config`). MusicGen runs
/// only its encoder stack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct T5Config {
    pub vocab_size: i64,
    pub d_model: i64,
    pub d_kv: i64,
    pub d_ff: i64,
    pub num_layers: i64,
    pub num_heads: i64,
    #[serde(default = "T5Config::default_num_buckets")]
    pub relative_attention_num_buckets: i64,
    #[serde(default = "T5Config::default_max_distance")]
    pub relative_attention_max_distance: i64,
    #[serde(default = "T5Config::default_eps")]
    pub layer_norm_epsilon: f64,
    /// `"relu"` (original T5, t5-base as in MusicGen) or `"gated-gelu"` (T5 v1.1).
    #[serde(default = "T5Config::default_feed_forward_proj")]
    pub feed_forward_proj: String,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub eos_token_id: Option<i64>,
}

/// The T5 feed-forward flavour named by `feed_forward_proj`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum T5FeedForward {
    Relu,
    GatedGelu,
    GatedRelu,
}

impl T5Config {
    fn default_num_buckets() -> i64 {
        32
    }
    fn default_max_distance() -> i64 {
        128
    }
    fn default_eps() -> f64 {
        1e-6
    }
    fn default_feed_forward_proj() -> String {
        "relu".to_owned()
    }

    /// t5-base, the text encoder of every published MusicGen checkpoint.
    pub fn t5_base() -> Self {
        Self {
            vocab_size: 32128,
            d_model: 768,
            d_kv: 64,
            d_ff: 3072,
            num_layers: 12,
            num_heads: 12,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "relu".to_owned(),
            pad_token_id: Some(0),
            eos_token_id: Some(1),
        }
    }

    /// The feed-forward flavour, or `None` for one this crate does not know,
    /// so that loading fails with a message instead of running a wrong model.
    pub fn feed_forward(&self) -> Option<T5FeedForward> {
        match self.feed_forward_proj.as_str() {
            "relu" => Some(T5FeedForward::Relu),
            "gated-gelu" => Some(T5FeedForward::GatedGelu),
            "gated-relu" => Some(T5FeedForward::GatedRelu),
            _ => None,
        }
    }
}

/// The `decoder` section (`transformers.MusicgenDecoderConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MusicgenDecoderConfig {
    /// Codes per codebook; the embeddings have one more row for the pad/bos code.
    pub vocab_size: i64,
    #[serde(default = "MusicgenDecoderConfig::default_max_positions")]
    pub max_position_embeddings: i64,
    pub num_hidden_layers: i64,
    pub ffn_dim: i64,
    pub num_attention_heads: i64,
    pub hidden_size: i64,
    #[serde(default = "MusicgenDecoderConfig::default_activation")]
    pub activation_function: String,
    #[serde(default = "MusicgenDecoderConfig::default_num_codebooks")]
    pub num_codebooks: i64,
    #[serde(default = "one")]
    pub audio_channels: i64,
    /// Read for completeness: `transformers` computes an embedding scale from
    /// it but never applies it, so neither does this crate.
    #[serde(default)]
    pub scale_embedding: bool,
    #[serde(default)]
    pub pad_token_id: Option<i64>,
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// Width of the encoder states fed to cross-attention when it is not
    /// `hidden_size`; published checkpoints leave it unset.
    #[serde(default)]
    pub cross_attention_hidden_size: Option<i64>,
}

impl MusicgenDecoderConfig {
    fn default_max_positions() -> i64 {
        2048
    }
    fn default_activation() -> String {
        "gelu".to_owned()
    }
    fn default_num_codebooks() -> i64 {
        4
    }

    /// The code that pads the delay pattern and starts decoding
    /// (`vocab_size`, i.e. 2048, in the published checkpoints).
    pub fn pad_token(&self) -> i64 {
        self.pad_token_id
            .or(self.bos_token_id)
            .unwrap_or(self.vocab_size)
    }

    /// The code the decoder is started from.
    pub fn bos_token(&self) -> i64 {
        self.bos_token_id
            .or(self.pad_token_id)
            .unwrap_or(self.vocab_size)
    }

    /// Head width of the attention layers.
    pub fn head_dim(&self) -> i64 {
        self.hidden_size / self.num_attention_heads.max(1)
    }
}

/// The whole `config.json` of a `MusicgenForConditionalGeneration` checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MusicgenConfig {
    pub text_encoder: T5Config,
    pub audio_encoder: EncodecConfig,
    pub decoder: MusicgenDecoderConfig,
}

impl MusicgenConfig {
    /// `facebook/musicgen-small`: t5-base, a 24 x 1024 decoder over 4
    /// codebooks of 2048 codes, EnCodec 32 kHz.
    pub fn musicgen_small() -> Self {
        Self {
            text_encoder: T5Config::t5_base(),
            audio_encoder: EncodecConfig::musicgen_32khz(),
            decoder: MusicgenDecoderConfig {
                vocab_size: 2048,
                max_position_embeddings: 2048,
                num_hidden_layers: 24,
                ffn_dim: 4096,
                num_attention_heads: 16,
                hidden_size: 1024,
                activation_function: "gelu".to_owned(),
                num_codebooks: 4,
                audio_channels: 1,
                scale_embedding: false,
                pad_token_id: Some(2048),
                bos_token_id: Some(2048),
                cross_attention_hidden_size: None,
            },
        }
    }

    /// Whether the text encoder states go through `enc_to_dec_proj` first
    /// (as `transformers` decides it: widths differ and no explicit
    /// cross-attention width is configured).
    pub fn has_enc_to_dec_proj(&self) -> bool {
        self.text_encoder.d_model != self.decoder.hidden_size
            && self.decoder.cross_attention_hidden_size.is_none()
    }

    /// Checks what the model code relies on, so a strange config fails at
    /// load time with a message rather than inside a tensor op.
    pub fn validate(&self) -> Result<(), String> {
        let d = &self.decoder;
        // Stereo checkpoints interleave each channel's codebooks and decode
        // them with a mono EnCodec.
        if !matches!(d.audio_channels, 1 | 2) || d.num_codebooks % d.audio_channels.max(1) != 0 {
            return Err(format!(
                "decoder.audio_channels = {} with {} codebooks: MusicGen is mono or stereo \
                 with the codebooks interleaved",
                d.audio_channels, d.num_codebooks
            ));
        }
        if d.audio_channels == 2 && self.audio_encoder.audio_channels != 1 {
            return Err("a stereo MusicGen decodes each channel with a mono EnCodec".to_owned());
        }
        if d.num_attention_heads <= 0 || d.hidden_size % d.num_attention_heads != 0 {
            return Err(format!(
                "decoder.hidden_size {} is not a multiple of num_attention_heads {}",
                d.hidden_size, d.num_attention_heads
            ));
        }
        if d.num_codebooks <= 0 || d.vocab_size <= 0 {
            return Err("decoder.num_codebooks and vocab_size must be positive".to_owned());
        }
        if d.activation_function != "gelu" {
            return Err(format!(
                "decoder.activation_function `{}` is not supported",
                d.activation_function
            ));
        }
        if self.text_encoder.feed_forward().is_none() {
            return Err(format!(
                "text_encoder.feed_forward_proj `{}` is not supported",
                self.text_encoder.feed_forward_proj
            ));
        }
        if let Some(width) = d.cross_attention_hidden_size {
            if width != self.text_encoder.d_model {
                return Err(format!(
                    "decoder.cross_attention_hidden_size {width} differs from the text encoder width {}",
                    self.text_encoder.d_model
                ));
            }
        }
        if self.audio_encoder.num_quantizers() < d.num_codebooks / d.audio_channels {
            return Err(format!(
                "EnCodec has {} quantizers but the decoder predicts {} codebooks per channel",
                self.audio_encoder.num_quantizers(),
                d.num_codebooks / d.audio_channels
            ));
        }
        Ok(())
    }
}

/// The parts of `generation_config.json` that set MusicGen's defaults.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct GenerationDefaults {
    #[serde(default)]
    pub do_sample: Option<bool>,
    #[serde(default)]
    pub guidance_scale: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_length: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tiny_fixture_config_parses_and_validates() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-musicgen/config.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture config");
        let cfg: MusicgenConfig = serde_json::from_str(&text).expect("parses");
        cfg.validate().expect("valid");
        assert!(cfg.has_enc_to_dec_proj());
        assert_eq!(cfg.audio_encoder.frame_rate(), 50);
        assert_eq!(cfg.audio_encoder.num_quantizers(), 4);
    }

    #[test]
    fn the_stereo_fixture_config_validates_with_8_interleaved_codebooks() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tiny-musicgen-stereo/config.json"
        );
        let text = std::fs::read_to_string(path).expect("fixture config");
        let mut cfg: MusicgenConfig = serde_json::from_str(&text).expect("parses");
        cfg.validate().expect("valid");
        assert_eq!(
            (cfg.decoder.audio_channels, cfg.decoder.num_codebooks),
            (2, 8)
        );
        cfg.decoder.num_codebooks = 7;
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn musicgen_small_preset_is_consistent() {
        let cfg = MusicgenConfig::musicgen_small();
        cfg.validate().expect("valid");
        assert_eq!(cfg.decoder.pad_token(), 2048);
        assert_eq!(cfg.audio_encoder.num_quantizers(), 4);
    }
}
