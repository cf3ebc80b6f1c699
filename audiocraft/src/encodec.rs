//! The decoding half of EnCodec: from MusicGen's audio codes back to a waveform.
//!
//! Follows "High Fidelity Neural Audio Compression" (Défossez et al., 2022) as
//! implemented by Hugging Face `transformers` in
//! `models/encodec/modeling_encodec.py` (`EncodecResidualVectorQuantizer.decode`
//! and `EncodecDecoder`, the SEANet decoder), which is the layout of the
//! `audio_encoder.*` weights in the facebook/musicgen-* checkpoints. Only the
//! quantizer and the decoder are built: MusicGen produces codes itself and
//! never runs the encoder, so its weights stay unread in the checkpoint.
//!
//! MusicGen's EnCodec 32 kHz has `normalize = false` and no chunking
//! (`chunk_length_s = null`), so there are no audio scales and decoding is a
//! single pass: codes -> sum of codebook embeddings -> SEANet decoder.
//!
//! Weight norm: every convolution is created as `weight_g` / `weight_v`
//! (weight = g * v / ||v||, the norm over all dimensions but the first), the
//! names in the published checkpoints. Checkpoints written by a recent
//! `transformers` may instead hold `parametrizations.weight.original0/1`;
//! [`crate::checkpoint::Checkpoint::load_into`] maps those onto the same
//! variables, so the model has one layout and the loader owns the aliasing.

use tch::nn::{self, Init};
use tch::{Kind, TchError, Tensor};

use crate::config::EncodecConfig;

/// How a convolution's weight is stored, after `norm_type`.
#[derive(Debug)]
enum ConvWeight {
    /// `norm_type = "weight_norm"`: direction `v` and per-output-channel gain
    /// `g` (per dimension 0 of the weight, which for a transposed
    /// convolution is the input channel).
    WeightNorm { g: Tensor, v: Tensor },
    /// `norm_type = "time_group_norm"`: a plain weight, followed by a
    /// one-group `GroupNorm` over the conv output.
    Plain {
        weight: Tensor,
        norm_weight: Tensor,
        norm_bias: Tensor,
    },
}

impl ConvWeight {
    /// `vs` is the `EncodecConv1d` module: the conv itself lives under
    /// `conv`, the group norm (if any) under `norm`.
    fn new(
        vs: &nn::Path,
        shape: [i64; 3],
        norm_channels: i64,
        norm: NormType,
    ) -> Result<Self, TchError> {
        let conv = vs / "conv";
        Ok(match norm {
            NormType::WeightNorm => ConvWeight::WeightNorm {
                g: conv.f_var("weight_g", &[shape[0], 1, 1], Init::Const(1.))?,
                v: conv.f_var("weight_v", &shape, Init::Const(0.))?,
            },
            NormType::TimeGroupNorm => {
                let norm = vs / "norm";
                ConvWeight::Plain {
                    weight: conv.f_var("weight", &shape, Init::Const(0.))?,
                    norm_weight: norm.f_var("weight", &[norm_channels], Init::Const(1.))?,
                    norm_bias: norm.f_var("bias", &[norm_channels], Init::Const(0.))?,
                }
            }
        })
    }

    /// The effective convolution weight. Recomputed per call rather than
    /// cached because the variables are filled only after construction; it
    /// is a few hundred small tensors' worth of work per decode.
    fn weight(&self) -> Result<Tensor, TchError> {
        match self {
            ConvWeight::WeightNorm { g, v } => {
                let norm = v
                    .f_square()?
                    .f_sum_dim_intlist([1i64, 2].as_slice(), true, None)?
                    .f_sqrt()?;
                v.f_mul(&g.f_div(&norm)?)
            }
            ConvWeight::Plain { weight, .. } => Ok(weight.shallow_clone()),
        }
    }

    /// The group norm that follows the convolution, if any.
    fn post_norm(&self, xs: Tensor) -> Result<Tensor, TchError> {
        match self {
            ConvWeight::WeightNorm { .. } => Ok(xs),
            ConvWeight::Plain {
                norm_weight,
                norm_bias,
                ..
            } => xs.f_group_norm(1, Some(norm_weight), Some(norm_bias), 1e-5, true),
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum NormType {
    WeightNorm,
    TimeGroupNorm,
}

impl NormType {
    fn parse(norm_type: &str) -> Result<Self, TchError> {
        match norm_type {
            "weight_norm" => Ok(NormType::WeightNorm),
            "time_group_norm" => Ok(NormType::TimeGroupNorm),
            other => Err(TchError::Convert(format!(
                "EnCodec norm_type `{other}` is not supported (expected weight_norm or time_group_norm)"
            ))),
        }
    }
}

/// Padding of the input of a (non-transposed) convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PadMode {
    Constant,
    Reflect,
    Replicate,
    Circular,
}

impl PadMode {
    fn parse(pad_mode: &str) -> Result<Self, TchError> {
        match pad_mode {
            "constant" | "zero" => Ok(PadMode::Constant),
            "reflect" => Ok(PadMode::Reflect),
            "replicate" => Ok(PadMode::Replicate),
            "circular" => Ok(PadMode::Circular),
            other => Err(TchError::Convert(format!(
                "EnCodec pad_mode `{other}` is not supported"
            ))),
        }
    }

    fn torch_name(self) -> &'static str {
        match self {
            PadMode::Constant => "constant",
            PadMode::Reflect => "reflect",
            PadMode::Replicate => "replicate",
            PadMode::Circular => "circular",
        }
    }
}

/// Settings every convolution shares, taken from the config once.
#[derive(Debug, Clone, Copy)]
struct ConvSettings {
    norm: NormType,
    pad_mode: PadMode,
    causal: bool,
    trim_right_ratio: f64,
}

/// `EncodecConv1d`: a convolution that pads its input itself so that the
/// output has `ceil(len / stride)` frames, with the padding split as the
/// reference does (all left when causal, else right-biased for odd totals).
#[derive(Debug)]
struct Conv1d {
    weight: ConvWeight,
    bias: Tensor,
    stride: i64,
    dilation: i64,
    /// Kernel size including dilation.
    effective_kernel: i64,
    settings: ConvSettings,
}

impl Conv1d {
    fn new(
        vs: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
        dilation: i64,
        settings: ConvSettings,
    ) -> Result<Self, TchError> {
        let weight = ConvWeight::new(
            &vs,
            [out_channels, in_channels, kernel_size],
            out_channels,
            settings.norm,
        )?;
        let bias = (&vs / "conv").f_var("bias", &[out_channels], Init::Const(0.))?;
        Ok(Conv1d {
            weight,
            bias,
            stride: 1,
            dilation,
            effective_kernel: (kernel_size - 1) * dilation + 1,
            settings,
        })
    }

    /// Extra right padding so that the last window is complete
    /// (`_get_extra_padding_for_conv1d`), in integers.
    fn extra_padding(&self, length: i64, padding_total: i64) -> i64 {
        let numerator = length - self.effective_kernel + padding_total;
        let frames = ceil_div(numerator, self.stride);
        frames * self.stride + self.effective_kernel - padding_total - length
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let length = last_dim(xs)?;
        let padding_total = self.effective_kernel - self.stride;
        let extra = self.extra_padding(length, padding_total);
        let (left, right) = if self.settings.causal {
            (padding_total, extra)
        } else {
            let right = padding_total / 2;
            (padding_total - right, right + extra)
        };
        let padded = pad1d(xs, left, right, self.settings.pad_mode)?;
        let ys = padded.f_conv1d(
            &self.weight.weight()?,
            Some(&self.bias),
            [self.stride].as_slice(),
            [0i64].as_slice(),
            [self.dilation].as_slice(),
            1,
        )?;
        self.weight.post_norm(ys)
    }
}

/// `EncodecConvTranspose1d`: an upsampling transposed convolution whose
/// output is trimmed by `kernel - stride` samples, split by
/// `trim_right_ratio` when causal and evenly (right-biased) otherwise.
#[derive(Debug)]
struct ConvTranspose1d {
    weight: ConvWeight,
    bias: Tensor,
    kernel_size: i64,
    stride: i64,
    settings: ConvSettings,
}

impl ConvTranspose1d {
    fn new(
        vs: nn::Path,
        in_channels: i64,
        out_channels: i64,
        kernel_size: i64,
        stride: i64,
        settings: ConvSettings,
    ) -> Result<Self, TchError> {
        // Transposed-conv weights are [in, out, kernel]; weight norm's
        // dimension 0 is therefore the input channel.
        let weight = ConvWeight::new(
            &vs,
            [in_channels, out_channels, kernel_size],
            out_channels,
            settings.norm,
        )?;
        let bias = (&vs / "conv").f_var("bias", &[out_channels], Init::Const(0.))?;
        Ok(ConvTranspose1d {
            weight,
            bias,
            kernel_size,
            stride,
            settings,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let ys = xs.f_conv_transpose1d(
            &self.weight.weight()?,
            Some(&self.bias),
            [self.stride].as_slice(),
            [0i64].as_slice(),
            [0i64].as_slice(),
            1,
            [1i64].as_slice(),
        )?;
        let ys = self.weight.post_norm(ys)?;
        let padding_total = self.kernel_size - self.stride;
        let right = if self.settings.causal {
            (padding_total as f64 * self.settings.trim_right_ratio).ceil() as i64
        } else {
            padding_total / 2
        };
        let left = padding_total - right;
        let length = last_dim(&ys)?;
        ys.f_narrow(-1, left, length - left - right)
    }
}

/// `EncodecLSTM`: a stacked LSTM over time, added to its input.
#[derive(Debug)]
struct Lstm {
    /// Per layer, in libtorch's flat order: w_ih, w_hh, b_ih, b_hh.
    params: Vec<Tensor>,
    num_layers: i64,
    hidden: i64,
}

impl Lstm {
    fn new(vs: nn::Path, dim: i64, num_layers: i64) -> Result<Self, TchError> {
        let vs = &vs / "lstm";
        let mut params = Vec::new();
        for layer in 0..num_layers {
            params.push(vs.f_var(
                &format!("weight_ih_l{layer}"),
                &[4 * dim, dim],
                Init::Const(0.),
            )?);
            params.push(vs.f_var(
                &format!("weight_hh_l{layer}"),
                &[4 * dim, dim],
                Init::Const(0.),
            )?);
            params.push(vs.f_var(&format!("bias_ih_l{layer}"), &[4 * dim], Init::Const(0.))?);
            params.push(vs.f_var(&format!("bias_hh_l{layer}"), &[4 * dim], Init::Const(0.))?);
        }
        Ok(Lstm {
            params,
            num_layers,
            hidden: dim,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        // [batch, channels, time] -> [time, batch, channels], the LSTM's
        // sequence-first layout.
        let seq = xs.f_permute([2i64, 0, 1].as_slice())?;
        let batch = seq.size().get(1).copied().unwrap_or(1);
        let zeros = || {
            Tensor::f_zeros(
                [self.num_layers, batch, self.hidden],
                (seq.kind(), seq.device()),
            )
        };
        let state = [zeros()?, zeros()?];
        let (ys, _, _) = seq.f_lstm(
            &state,
            &self.params,
            true,
            self.num_layers,
            0.0,
            false,
            false,
            false,
        )?;
        ys.f_add(&seq)?.f_permute([1i64, 2, 0].as_slice())
    }
}

/// `EncodecResnetBlock`: ELU, dilated conv to `dim / compress` channels, ELU,
/// 1x1 conv back to `dim`, added to the input (through a 1x1 conv when
/// `use_conv_shortcut`).
#[derive(Debug)]
struct ResnetBlock {
    convs: Vec<Conv1d>,
    shortcut: Option<Conv1d>,
}

impl ResnetBlock {
    fn new(
        vs: nn::Path,
        cfg: &EncodecConfig,
        dim: i64,
        dilations: [i64; 2],
        settings: ConvSettings,
    ) -> Result<Self, TchError> {
        let hidden = dim / cfg.compress;
        let kernels = [cfg.residual_kernel_size, 1];
        let block = &vs / "block";
        let mut convs = Vec::with_capacity(2);
        for (i, (kernel, dilation)) in kernels.into_iter().zip(dilations).enumerate() {
            let in_channels = if i == 0 { dim } else { hidden };
            let out_channels = if i == kernels.len() - 1 { dim } else { hidden };
            // Module list entries alternate ELU, conv: the convs are 1 and 3.
            convs.push(Conv1d::new(
                &block / (2 * i + 1),
                in_channels,
                out_channels,
                kernel,
                dilation,
                settings,
            )?);
        }
        let shortcut = if cfg.use_conv_shortcut {
            Some(Conv1d::new(&vs / "shortcut", dim, dim, 1, 1, settings)?)
        } else {
            None
        };
        Ok(ResnetBlock { convs, shortcut })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let mut ys = xs.shallow_clone();
        for conv in &self.convs {
            ys = conv.forward(&ys.f_elu()?)?;
        }
        match &self.shortcut {
            Some(shortcut) => shortcut.forward(xs)?.f_add(&ys),
            None => xs.f_add(&ys),
        }
    }
}

/// One entry of the decoder's `layers` module list.
#[derive(Debug)]
enum Layer {
    Conv(Conv1d),
    Lstm(Lstm),
    Elu,
    Upsample(ConvTranspose1d),
    Resnet(ResnetBlock),
}

impl Layer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        match self {
            Layer::Conv(conv) => conv.forward(xs),
            Layer::Lstm(lstm) => lstm.forward(xs),
            Layer::Elu => xs.f_elu(),
            Layer::Upsample(conv) => conv.forward(xs),
            Layer::Resnet(block) => block.forward(xs),
        }
    }
}

/// EnCodec's residual vector quantizer (decode only) and SEANet decoder.
#[derive(Debug)]
pub struct EncodecDecoder {
    /// `quantizer.layers.{i}.codebook.embed`, each `[codebook_size, codebook_dim]`.
    codebooks: Vec<Tensor>,
    codebook_size: i64,
    layers: Vec<Layer>,
}

impl EncodecDecoder {
    /// Creates the quantizer and decoder variables under `vs`, the
    /// checkpoint's `audio_encoder` prefix. Fails on a config this
    /// implementation cannot follow, rather than building a wrong model.
    pub fn new(vs: nn::Path, cfg: &EncodecConfig) -> Result<Self, TchError> {
        let settings = ConvSettings {
            norm: NormType::parse(&cfg.norm_type)?,
            pad_mode: PadMode::parse(&cfg.pad_mode)?,
            causal: cfg.use_causal_conv,
            trim_right_ratio: cfg.trim_right_ratio,
        };
        if !(settings.causal || cfg.trim_right_ratio == 1.0) {
            return Err(TchError::Convert(
                "EnCodec trim_right_ratio != 1.0 only makes sense with use_causal_conv".to_owned(),
            ));
        }
        if cfg.num_filters <= 0
            || cfg.hidden_size <= 0
            || cfg.upsampling_ratios.iter().any(|&r| r <= 0)
        {
            return Err(TchError::Convert(
                "EnCodec config needs positive num_filters, hidden_size and upsampling_ratios"
                    .to_owned(),
            ));
        }
        if cfg.upsampling_ratios.len() > 16 || cfg.num_lstm_layers < 1 || cfg.compress < 1 {
            return Err(TchError::Convert(
                "EnCodec config needs at most 16 upsampling_ratios, num_lstm_layers >= 1 and compress >= 1"
                    .to_owned(),
            ));
        }
        if cfg.codebook_dim() != cfg.hidden_size {
            return Err(TchError::Convert(format!(
                "EnCodec codebook_dim {} differs from hidden_size {}; the decoder input would not match",
                cfg.codebook_dim(),
                cfg.hidden_size
            )));
        }

        let num_quantizers = cfg.num_quantizers();
        let quantizer = &vs / "quantizer" / "layers";
        let codebooks = (0..num_quantizers)
            .map(|i| {
                (&quantizer / i / "codebook").f_var(
                    "embed",
                    &[cfg.codebook_size, cfg.codebook_dim()],
                    Init::Const(0.),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;

        // `decoder.layers` is one module list in which the parameter-free
        // ELUs take indices too, so a layer's checkpoint path is its position.
        let layers_path = &vs / "decoder" / "layers";
        let at = |layers: &Vec<Layer>| &layers_path / layers.len();
        let mut layers = Vec::new();

        let mut scale = 1i64 << cfg.upsampling_ratios.len();
        let width = scale * cfg.num_filters;
        let first = Conv1d::new(
            at(&layers),
            cfg.hidden_size,
            width,
            cfg.kernel_size,
            1,
            settings,
        )?;
        layers.push(Layer::Conv(first));
        layers.push(Layer::Lstm(Lstm::new(
            at(&layers),
            width,
            cfg.num_lstm_layers,
        )?));
        for &ratio in &cfg.upsampling_ratios {
            let width = scale * cfg.num_filters;
            layers.push(Layer::Elu);
            let upsample =
                ConvTranspose1d::new(at(&layers), width, width / 2, 2 * ratio, ratio, settings)?;
            layers.push(Layer::Upsample(upsample));
            for j in 0..cfg.num_residual_layers {
                let dilation = u32::try_from(j)
                    .ok()
                    .and_then(|j| cfg.dilation_growth_rate.checked_pow(j))
                    .ok_or_else(|| {
                        TchError::Convert("EnCodec dilation_growth_rate overflows".to_owned())
                    })?;
                let block = ResnetBlock::new(at(&layers), cfg, width / 2, [dilation, 1], settings)?;
                layers.push(Layer::Resnet(block));
            }
            scale /= 2;
        }
        layers.push(Layer::Elu);
        let last = Conv1d::new(
            at(&layers),
            cfg.num_filters,
            cfg.audio_channels,
            cfg.last_kernel_size,
            1,
            settings,
        )?;
        layers.push(Layer::Conv(last));

        Ok(EncodecDecoder {
            codebooks,
            codebook_size: cfg.codebook_size,
            layers,
        })
    }

    /// Number of codebooks the quantizer holds (4 for musicgen-small).
    pub fn num_codebooks(&self) -> usize {
        self.codebooks.len()
    }

    /// Decodes `codes` `[batch, num_codebooks, frames]` (integer) into audio
    /// `[batch, audio_channels, frames * hop_length]` (f32, on the model's
    /// device). Fewer codebooks than the quantizer holds is allowed (lower
    /// bandwidth), as in the reference. Bad input is an error, not a panic
    /// (and, on CUDA, not a device-side assert from an out-of-range index).
    pub fn decode(&self, codes: &Tensor) -> Result<Tensor, TchError> {
        let _no_grad = tch::no_grad_guard();
        let size = codes.size();
        let [_, num_codes, frames] = size[..] else {
            return Err(TchError::Shape(format!(
                "EnCodec codes must be [batch, codebooks, frames], got {size:?}"
            )));
        };
        if num_codes < 1 || num_codes as usize > self.codebooks.len() || frames < 1 || size[0] < 1 {
            return Err(TchError::Shape(format!(
                "EnCodec codes {size:?}: need 1..={} codebooks and at least one frame",
                self.codebooks.len()
            )));
        }
        if !matches!(
            codes.kind(),
            Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
        ) {
            return Err(TchError::Kind(format!(
                "EnCodec codes must be integers, got {:?}",
                codes.kind()
            )));
        }
        let Some(first) = self.codebooks.first() else {
            return Err(TchError::Shape(
                "EnCodec quantizer has no codebooks".to_owned(),
            ));
        };
        let codes = codes.f_to_device(first.device())?.f_to_kind(Kind::Int64)?;
        let low = codes.f_min()?.f_int64_value(&[])?;
        let high = codes.f_max()?.f_int64_value(&[])?;
        if low < 0 || high >= self.codebook_size {
            return Err(TchError::Shape(format!(
                "EnCodec codes must lie in 0..{}, found {low}..={high}",
                self.codebook_size
            )));
        }

        // Residual VQ decode: the sum over codebooks of each code's embedding.
        let mut embeddings: Option<Tensor> = None;
        for (k, codebook) in self.codebooks.iter().enumerate().take(num_codes as usize) {
            let indices = codes.f_select(1, k as i64)?;
            let e = Tensor::f_embedding(codebook, &indices, -1, false, false)?;
            embeddings = Some(match embeddings {
                Some(sum) => sum.f_add(&e)?,
                None => e,
            });
        }
        let Some(embeddings) = embeddings else {
            return Err(TchError::Shape("EnCodec codes hold no codebook".to_owned()));
        };
        // [batch, frames, dim] -> [batch, dim, frames]
        let mut xs = embeddings.f_permute([0i64, 2, 1].as_slice())?;
        for layer in &self.layers {
            xs = layer.forward(&xs)?;
        }
        xs.f_to_kind(Kind::Float)
    }
}

/// `F.pad` on the last dimension, with the reference's workaround for
/// reflect padding wider than the input: zero-extend first, then drop the
/// extension again.
fn pad1d(xs: &Tensor, left: i64, right: i64, mode: PadMode) -> Result<Tensor, TchError> {
    if left == 0 && right == 0 {
        return Ok(xs.shallow_clone());
    }
    if mode != PadMode::Reflect {
        let value = (mode == PadMode::Constant).then_some(0.0);
        return xs.f_pad([left, right].as_slice(), mode.torch_name(), value);
    }
    let length = last_dim(xs)?;
    let max_pad = left.max(right);
    let extra = if length <= max_pad {
        max_pad - length + 1
    } else {
        0
    };
    let base = if extra > 0 {
        xs.f_pad([0, extra].as_slice(), "constant", Some(0.0))?
    } else {
        xs.shallow_clone()
    };
    let padded = base.f_pad([left, right].as_slice(), "reflect", None)?;
    if extra > 0 {
        let total = last_dim(&padded)?;
        padded.f_narrow(-1, 0, total - extra)
    } else {
        Ok(padded)
    }
}

fn last_dim(xs: &Tensor) -> Result<i64, TchError> {
    xs.size()
        .last()
        .copied()
        .ok_or_else(|| TchError::Shape("expected a tensor with a time axis".to_owned()))
}

/// Ceiling division for a positive divisor and any sign of numerator.
fn ceil_div(numerator: i64, divisor: i64) -> i64 {
    let quotient = numerator.div_euclid(divisor);
    if numerator.rem_euclid(divisor) == 0 {
        quotient
    } else {
        quotient + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_div_rounds_up_for_both_signs() {
        assert_eq!(ceil_div(7, 2), 4);
        assert_eq!(ceil_div(6, 2), 3);
        assert_eq!(ceil_div(-1, 4), 0);
        assert_eq!(ceil_div(-4, 4), -1);
        assert_eq!(ceil_div(0, 3), 0);
    }

    #[test]
    fn reflect_padding_wider_than_the_input_matches_the_reference_workaround() {
        // Reference (checked against torch): zero-extend [1, 2] by
        // 3 - 2 + 1 = 2 -> [1, 2, 0, 0], reflect by (3, 3) ->
        // [0, 0, 2, 1, 2, 0, 0, 0, 2, 1], then drop the last 2.
        let xs = Tensor::from_slice(&[1.0f32, 2.0]).view([1, 1, 2]);
        let ys = pad1d(&xs, 3, 3, PadMode::Reflect).unwrap();
        let got: Vec<f32> = Vec::try_from(ys.flatten(0, -1)).unwrap();
        assert_eq!(got, vec![0.0, 0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn decoding_rejects_codes_outside_the_codebook_without_panicking() {
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let mut cfg = EncodecConfig::musicgen_32khz();
        cfg.num_filters = 2;
        cfg.hidden_size = 4;
        cfg.codebook_dim = Some(4);
        cfg.codebook_size = 8;
        let decoder = EncodecDecoder::new(vs.root(), &cfg).unwrap();
        let too_big = Tensor::from_slice(&[9i64, 0, 0, 0]).view([1, 4, 1]);
        assert!(decoder.decode(&too_big).is_err());
        let wrong_rank = Tensor::from_slice(&[0i64, 0]);
        assert!(decoder.decode(&wrong_rank).is_err());
        let ok = Tensor::zeros([2, 4, 3], (Kind::Int64, tch::Device::Cpu));
        let audio = decoder.decode(&ok).unwrap();
        assert_eq!(audio.size(), vec![2, 1, 3 * 640]);
    }
}
