//! The MusicGen decoder: a causal transformer over the summed embeddings of
//! the parallel EnCodec codebooks, cross-attending to the text encoder.
//!
//! Follows "Simple and Controllable Music Generation" (Copet et al., 2023) as
//! implemented by Hugging Face `transformers`
//! (`models/musicgen/modeling_musicgen.py`: `MusicgenForCausalLM`): one
//! embedding table per codebook (with an extra row for the pad/bos code),
//! summed; fixed sinusoidal positions laid out cos-then-sin; pre-norm layers
//! of causal self-attention, cross-attention and a gelu feed-forward, all
//! without biases; a final layer norm and one LM head per codebook. Module
//! paths are the checkpoint keys under `decoder.`.
//!
//! Decoding keeps a key/value cache preallocated for the whole generation
//! length, so a step writes one column in place instead of growing tensors,
//! and the cross-attention keys/values are projected once per generation.
//! Scores and softmax are computed in f32 whatever the weights' dtype.

use tch::{nn, Device, Kind, TchError, Tensor};

use crate::config::MusicgenDecoderConfig;
use crate::gemv;

/// A bias-optional linear layer whose variables are named `weight`/`bias`
/// like `torch.nn.Linear`. Zero-initialised: every value comes from the
/// checkpoint, and random init of a 1.4 GB model would only cost time.
#[derive(Debug)]
pub struct Linear {
    pub weight: Tensor,
    pub bias: Option<Tensor>,
}

impl Linear {
    pub fn new(vs: nn::Path, in_dim: i64, out_dim: i64, bias: bool) -> Self {
        let weight = vs.zeros_no_train("weight", &[out_dim, in_dim]);
        let bias = bias.then(|| vs.zeros_no_train("bias", &[out_dim]));
        Self { weight, bias }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let size = xs.size();
        let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
        // A decoding step has one row per clip and guidance half. For f32 on
        // the CPU, libtorch would either take MKL's slow small-M SGEMM path
        // (12x slower than GEMV on the benchmark's AMD EPYC) or, one GEMV per
        // row, read the weights once per row; `gemv` reads them once.
        // Small matrices stay in cache, where one libtorch call is cheaper.
        let large = self.weight.numel() >= MIN_GEMV_WEIGHTS;
        if large
            && rows <= gemv::MAX_ROWS as i64
            && xs.device() == Device::Cpu
            && xs.kind() == Kind::Float
            && self.weight.kind() == Kind::Float
        {
            let flat = xs.f_reshape([rows, -1])?.f_contiguous()?;
            let mut out = gemv::linear(&flat, &self.weight)?;
            if let Some(bias) = &self.bias {
                out = out.f_add(bias)?;
            }
            let mut shape = size;
            if let Some(last) = shape.last_mut() {
                *last = self.weight.size()[0];
            }
            return out.f_view(shape.as_slice());
        }
        xs.f_linear(&self.weight, self.bias.as_ref())
    }
}

/// f32 linear layers on the CPU use `gemv` for weights at least this large
/// (512 x 512).
const MIN_GEMV_WEIGHTS: usize = 1 << 18;

/// Runs libtorch's CPU ops on the calling thread only until dropped.
///
/// A decoding step of a few rows is a chain of some thousand tiny ops, and
/// libtorch opens an OpenMP parallel region for many of them (a layer norm
/// over 2 rows, say). Each region wakes the other threads and waits for them
/// at a barrier; when another process holds a core, that wait lasts a
/// scheduler time slice. On the benchmark's 2-core machine with other builds
/// running this made a musicgen-small step 12x slower (2.4 s instead of
/// 0.2 s). The large matrix products that do gain from threads go through
/// [`gemv`], which has its own thread pool.
#[derive(Debug)]
pub struct IntraOpThreads {
    previous: i32,
}

impl IntraOpThreads {
    pub fn one() -> Self {
        let previous = tch::get_num_threads();
        if previous != 1 {
            tch::set_num_threads(1);
        }
        Self { previous }
    }
}

impl Drop for IntraOpThreads {
    fn drop(&mut self) {
        if self.previous != 1 {
            tch::set_num_threads(self.previous);
        }
    }
}

/// `torch.nn.LayerNorm` (weight and bias, eps 1e-5).
#[derive(Debug)]
pub struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    dim: i64,
}

impl LayerNorm {
    pub fn new(vs: nn::Path, dim: i64) -> Self {
        Self {
            weight: vs.ones_no_train("weight", &[dim]),
            bias: vs.zeros_no_train("bias", &[dim]),
            dim,
        }
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        xs.f_layer_norm([self.dim], Some(&self.weight), Some(&self.bias), 1e-5, true)
    }
}

/// Turns a [batch, len] 1/0 attention mask into an additive f32 mask
/// [batch, 1, 1, len]: 0 where attended, the most negative f32 where not.
/// A row with every key masked then gets a uniform softmax, as in
/// `transformers`, instead of NaNs.
pub fn additive_mask(mask: &Tensor) -> Result<Tensor, TchError> {
    let (b, l) = mask.size2()?;
    let keep = mask.f_to_kind(Kind::Float)?.f_view([b, 1, 1, l])?;
    // (1 - keep) * f32::MIN
    keep.f_neg()?
        .f_add_scalar(1.0)?
        .f_mul_scalar(f64::from(f32::MIN))
}

/// Sinusoidal position table [positions, dim] in f32, as
/// `MusicgenSinusoidalPositionalEmbedding.get_embedding`: the first half of
/// each row is cos, the second sin, with frequencies 10000^(-i/(half-1)).
pub fn sinusoidal_positions(positions: i64, dim: i64) -> Result<Tensor, TchError> {
    let half = dim / 2;
    let scale = (10000f64).ln() / ((half - 1).max(1) as f64);
    let freqs = Tensor::f_arange(half, (Kind::Int64, Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_mul_scalar(-scale)?
        .f_exp()?;
    let args = Tensor::f_arange(positions, (Kind::Int64, Device::Cpu))?
        .f_to_kind(Kind::Float)?
        .f_unsqueeze(1)?
        .f_mul(&freqs.f_unsqueeze(0)?)?;
    let mut table = Tensor::f_cat(&[args.f_cos()?, args.f_sin()?], 1)?;
    if dim % 2 == 1 {
        table = Tensor::f_cat(
            &[
                table,
                Tensor::f_zeros([positions, 1], (Kind::Float, Device::Cpu))?,
            ],
            1,
        )?;
    }
    Ok(table)
}

/// Keys and values of one attention layer: [batch, heads, capacity, head_dim].
#[derive(Debug)]
pub struct KvCache {
    keys: Tensor,
    values: Tensor,
}

/// Everything that lives for one generation: the self-attention caches of
/// every layer (filled up to `len`), the projected cross-attention keys and
/// values, and the cross-attention mask.
#[derive(Debug)]
pub struct DecoderState {
    self_attn: Vec<KvCache>,
    cross_attn: Vec<KvCache>,
    cross_mask: Tensor,
    len: i64,
    capacity: i64,
}

impl DecoderState {
    /// Positions written so far.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(vs: nn::Path, hidden: i64, kv_in: i64, num_heads: i64) -> Self {
        Self {
            q_proj: Linear::new(&vs / "q_proj", hidden, hidden, false),
            k_proj: Linear::new(&vs / "k_proj", kv_in, hidden, false),
            v_proj: Linear::new(&vs / "v_proj", kv_in, hidden, false),
            out_proj: Linear::new(&vs / "out_proj", hidden, hidden, false),
            num_heads,
            head_dim: hidden / num_heads,
        }
    }

    /// [batch, len, hidden] -> [batch, heads, len, head_dim]
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let (b, l, _) = xs.size3()?;
        xs.f_view([b, l, self.num_heads, self.head_dim])?
            .f_transpose(1, 2)
    }

    fn project_kv(&self, xs: &Tensor) -> Result<KvCache, TchError> {
        Ok(KvCache {
            keys: self
                .split_heads(&self.k_proj.forward(xs)?)?
                .f_contiguous()?,
            values: self
                .split_heads(&self.v_proj.forward(xs)?)?
                .f_contiguous()?,
        })
    }

    /// Scaled dot-product attention with f32 scores; `mask` is additive f32.
    fn attend(
        &self,
        q: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, TchError> {
        let (b, _, l, _) = q.size4()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        let mut scores = q
            .f_matmul(&keys.f_transpose(-1, -2)?)?
            .f_to_kind(Kind::Float)?
            .f_mul_scalar(scale)?;
        if let Some(mask) = mask {
            scores = scores.f_add(mask)?;
        }
        let weights = scores
            .f_softmax(-1, Kind::Float)?
            .f_to_kind(values.kind())?;
        let out = weights.f_matmul(values)?.f_transpose(1, 2)?.f_reshape([
            b,
            l,
            self.num_heads * self.head_dim,
        ])?;
        self.out_proj.forward(&out)
    }

    /// Causal self-attention for `xs` at positions `start..start+len`,
    /// writing its keys/values into `cache` first.
    fn forward_self(
        &self,
        xs: &Tensor,
        cache: &mut KvCache,
        start: i64,
    ) -> Result<Tensor, TchError> {
        let (_, l, _) = xs.size3()?;
        let q = self.split_heads(&self.q_proj.forward(xs)?)?;
        let k = self.split_heads(&self.k_proj.forward(xs)?)?;
        let v = self.split_heads(&self.v_proj.forward(xs)?)?;
        cache.keys.f_narrow(2, start, l)?.f_copy_(&k)?;
        cache.values.f_narrow(2, start, l)?.f_copy_(&v)?;
        let total = start + l;
        let keys = cache.keys.f_narrow(2, 0, total)?;
        let values = cache.values.f_narrow(2, 0, total)?;
        // A single new position may see everything before it; a block of
        // several needs the causal triangle.
        let mask = if l > 1 {
            Some(causal_mask(l, start, xs.device())?)
        } else {
            None
        };
        self.attend(&q, &keys, &values, mask.as_ref())
    }

    fn forward_cross(&self, xs: &Tensor, kv: &KvCache, mask: &Tensor) -> Result<Tensor, TchError> {
        let q = self.split_heads(&self.q_proj.forward(xs)?)?;
        self.attend(&q, &kv.keys, &kv.values, Some(mask))
    }
}

/// [1, 1, len, start+len] additive mask letting query i see keys <= start+i.
fn causal_mask(len: i64, start: i64, device: Device) -> Result<Tensor, TchError> {
    let total = start + len;
    let queries = Tensor::f_arange(len, (Kind::Int64, device))?
        .f_add_scalar(start)?
        .f_unsqueeze(1)?;
    let keys = Tensor::f_arange(total, (Kind::Int64, device))?.f_unsqueeze(0)?;
    let future = keys.f_gt_tensor(&queries)?;
    Tensor::f_zeros([len, total], (Kind::Float, device))?
        .f_masked_fill(&future, f64::from(f32::MIN))?
        .f_view([1, 1, len, total])
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn new(vs: nn::Path, cfg: &MusicgenDecoderConfig, cross_in: i64) -> Self {
        let h = cfg.hidden_size;
        Self {
            self_attn: Attention::new(&vs / "self_attn", h, h, cfg.num_attention_heads),
            self_attn_layer_norm: LayerNorm::new(&vs / "self_attn_layer_norm", h),
            encoder_attn: Attention::new(
                &vs / "encoder_attn",
                h,
                cross_in,
                cfg.num_attention_heads,
            ),
            encoder_attn_layer_norm: LayerNorm::new(&vs / "encoder_attn_layer_norm", h),
            fc1: Linear::new(&vs / "fc1", h, cfg.ffn_dim, false),
            fc2: Linear::new(&vs / "fc2", cfg.ffn_dim, h, false),
            final_layer_norm: LayerNorm::new(&vs / "final_layer_norm", h),
        }
    }

    fn forward(
        &self,
        xs: &Tensor,
        self_cache: &mut KvCache,
        cross: &KvCache,
        cross_mask: &Tensor,
        start: i64,
    ) -> Result<Tensor, TchError> {
        let attn = self.self_attn.forward_self(
            &self.self_attn_layer_norm.forward(xs)?,
            self_cache,
            start,
        )?;
        let xs = xs.f_add(&attn)?;
        let cross = self.encoder_attn.forward_cross(
            &self.encoder_attn_layer_norm.forward(&xs)?,
            cross,
            cross_mask,
        )?;
        let xs = xs.f_add(&cross)?;
        let ff = self.fc2.forward(
            &self
                .fc1
                .forward(&self.final_layer_norm.forward(&xs)?)?
                .f_gelu("none")?,
        )?;
        xs.f_add(&ff)
    }
}

/// `MusicgenForCausalLM`, created at the checkpoint's `decoder` prefix.
#[derive(Debug)]
pub struct MusicgenDecoder {
    embed_tokens: Vec<Tensor>,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    lm_heads: Vec<Linear>,
    /// f32 on the CPU; rows are moved to the device as needed.
    positions: Tensor,
    cfg: MusicgenDecoderConfig,
    cross_in: i64,
}

impl MusicgenDecoder {
    /// `cross_in`: width of the encoder states cross-attention reads
    /// (the decoder width after `enc_to_dec_proj`).
    pub fn new(vs: nn::Path, cfg: &MusicgenDecoderConfig, cross_in: i64) -> Result<Self, TchError> {
        let inner = &vs / "model" / "decoder";
        let embed_tokens = (0..cfg.num_codebooks)
            .map(|k| {
                (&inner / "embed_tokens" / k)
                    .zeros_no_train("weight", &[cfg.vocab_size + 1, cfg.hidden_size])
            })
            .collect();
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| DecoderLayer::new(&inner / "layers" / i, cfg, cross_in))
            .collect();
        let layer_norm = LayerNorm::new(&inner / "layer_norm", cfg.hidden_size);
        let lm_heads = (0..cfg.num_codebooks)
            .map(|k| Linear::new(&vs / "lm_heads" / k, cfg.hidden_size, cfg.vocab_size, false))
            .collect();
        let positions = sinusoidal_positions(cfg.max_position_embeddings, cfg.hidden_size)?;
        Ok(Self {
            embed_tokens,
            layers,
            layer_norm,
            lm_heads,
            positions,
            cfg: cfg.clone(),
            cross_in,
        })
    }

    pub fn config(&self) -> &MusicgenDecoderConfig {
        &self.cfg
    }

    fn device_and_kind(&self) -> (Device, Kind) {
        (
            self.layer_norm.weight.device(),
            self.layer_norm.weight.kind(),
        )
    }

    /// Starts a generation of at most `capacity` positions for `encoder_states`
    /// [batch, src_len, cross_in] with `encoder_mask` [batch, src_len].
    pub fn start(
        &self,
        encoder_states: &Tensor,
        encoder_mask: &Tensor,
        capacity: i64,
    ) -> Result<DecoderState, TchError> {
        let (device, kind) = self.device_and_kind();
        if capacity > self.cfg.max_position_embeddings {
            // Sinusoids extend to any length, but the model never saw more.
            return Err(TchError::Kind(format!(
                "{capacity} decoding steps exceed max_position_embeddings {}",
                self.cfg.max_position_embeddings
            )));
        }
        let (b, _, width) = encoder_states.size3()?;
        if width != self.cross_in {
            return Err(TchError::Shape(format!(
                "encoder states have width {width}, expected {}",
                self.cross_in
            )));
        }
        let states = encoder_states.f_to_device(device)?.f_to_kind(kind)?;
        let heads = self.cfg.num_attention_heads;
        let head_dim = self.cfg.head_dim();
        let mut self_attn = Vec::with_capacity(self.layers.len());
        let mut cross_attn = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            self_attn.push(KvCache {
                keys: Tensor::f_zeros([b, heads, capacity, head_dim], (kind, device))?,
                values: Tensor::f_zeros([b, heads, capacity, head_dim], (kind, device))?,
            });
            cross_attn.push(layer.encoder_attn.project_kv(&states)?);
        }
        let cross_mask = additive_mask(&encoder_mask.f_to_device(device)?)?;
        Ok(DecoderState {
            self_attn,
            cross_attn,
            cross_mask,
            len: 0,
            capacity,
        })
    }

    /// Runs `codes` [batch, codebooks, len] (positions `state.len()..+len`)
    /// and returns f32 logits [batch, codebooks, len, vocab].
    pub fn forward(&self, codes: &Tensor, state: &mut DecoderState) -> Result<Tensor, TchError> {
        let (device, kind) = self.device_and_kind();
        let (b, c, l) = codes.size3()?;
        if c != self.cfg.num_codebooks {
            return Err(TchError::Shape(format!(
                "got {c} codebooks, the model has {}",
                self.cfg.num_codebooks
            )));
        }
        let start = state.len;
        if start + l > state.capacity {
            return Err(TchError::Kind(format!(
                "decoder state holds {} positions, asked for {}",
                state.capacity,
                start + l
            )));
        }
        let codes = codes.f_to_device(device)?;
        let _threads =
            (device == Device::Cpu && b * l <= gemv::MAX_ROWS as i64).then(IntraOpThreads::one);
        let mut xs = Tensor::f_zeros([b, l, self.cfg.hidden_size], (kind, device))?;
        for (k, table) in self.embed_tokens.iter().enumerate() {
            let ids = codes.f_select(1, k as i64)?;
            xs = xs.f_add(&Tensor::f_embedding(table, &ids, -1, false, false)?)?;
        }
        let positions = self
            .positions
            .f_narrow(0, start, l)?
            .f_to_device(device)?
            .f_to_kind(kind)?;
        xs = xs.f_add(&positions.f_unsqueeze(0)?)?;
        for ((layer, self_cache), cross) in self
            .layers
            .iter()
            .zip(state.self_attn.iter_mut())
            .zip(&state.cross_attn)
        {
            xs = layer.forward(&xs, self_cache, cross, &state.cross_mask, start)?;
        }
        state.len = start + l;
        let xs = self.layer_norm.forward(&xs)?;
        let logits: Vec<Tensor> = self
            .lm_heads
            .iter()
            .map(|head| head.forward(&xs))
            .collect::<Result<_, _>>()?;
        Tensor::f_stack(&logits, 1)?.f_to_kind(Kind::Float)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sinusoids_put_cosine_first() {
        let table = sinusoidal_positions(3, 8).expect("table");
        // Position 0: cos(0) = 1 in the first half, sin(0) = 0 in the second.
        let row0 = Vec::<f32>::try_from(table.get(0)).expect("row");
        assert_eq!(row0, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]);
        // Position 1, frequency 0 is 1 rad.
        let v = table.double_value(&[1, 0]);
        assert!((v - 1f64.cos()).abs() < 1e-6);
        let v = table.double_value(&[1, 4]);
        assert!((v - 1f64.sin()).abs() < 1e-6);
    }

    #[test]
    fn a_large_f32_linear_on_a_few_rows_matches_libtorch_and_keeps_the_leading_shape() {
        // 1024 x 512 reaches MIN_GEMV_WEIGHTS, so `forward` takes the gemv path.
        let vs = nn::VarStore::new(Device::Cpu);
        let mut linear = Linear::new(vs.root(), 512, 1024, true);
        linear.weight = Tensor::randn([1024, 512], (Kind::Float, Device::Cpu));
        linear.bias = Some(Tensor::randn([1024], (Kind::Float, Device::Cpu)));
        assert!(linear.weight.numel() >= MIN_GEMV_WEIGHTS);
        let xs = Tensor::randn([2, 1, 512], (Kind::Float, Device::Cpu));
        let got = linear.forward(&xs).expect("forward");
        let expected = xs.linear(&linear.weight, linear.bias.as_ref());
        assert_eq!(got.size(), vec![2, 1, 1024]);
        let diff = (got - expected).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "max diff {diff}");
    }

    #[test]
    fn fully_masked_rows_stay_finite() {
        let mask = Tensor::from_slice(&[0i64, 0, 0]).view([1, 3]);
        let add = additive_mask(&mask).expect("mask");
        let scores = Tensor::from_slice(&[0.5f32, -1.0, 2.0]).view([1, 1, 1, 3]) + add;
        let w = scores.softmax(-1, Kind::Float);
        assert!(w.isfinite().all().int64_value(&[]) == 1);
    }
}
