//! The MusicGen decoder: a causal transformer over the summed embeddings of
//! the parallel EnCodec codebooks, cross-attending to the conditioning.
//!
//! Follows "Simple and Controllable Music Generation" (Copet et al., 2023) as
//! implemented by Hugging Face `transformers`
//! (`models/musicgen/modeling_musicgen.py`: `MusicgenForCausalLM`): one
//! embedding table per codebook (with an extra row for the pad/bos code),
//! summed; fixed sinusoidal positions laid out cos-then-sin; pre-norm layers
//! of causal self-attention, cross-attention and a gelu feed-forward, all
//! without biases; a final layer norm and one LM head per codebook. Module
//! paths are the checkpoint keys under `decoder.`, and they stay so: other
//! checkpoint formats are mapped onto these names by the loader.
//!
//! Decoding is shaped for a step without launch overhead. After loading,
//! [`MusicgenDecoder::fuse`] lays the self-attention q/k/v projections, the
//! LM heads and the embedding tables of each kind side by side in one tensor
//! (the variables become views of it, so memory is not doubled), making each
//! one matrix product or lookup. The key/value cache is preallocated for the
//! whole generation, so a step writes one column in place, and attention is
//! libtorch's `scaled_dot_product_attention` (fused kernels on CUDA). A step
//! can take its position from the host ([`Span::Host`]) or from a device
//! tensor ([`Span::Device`]); the latter attends over a window of fixed size
//! with the unwritten positions masked, so that one captured CUDA graph
//! serves every step of the window. The cross-attention keys and values are
//! projected once per generation. Nothing here may wait for the device.

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

    /// A bias-free layer over an existing weight (a fused one).
    fn over(weight: Tensor) -> Self {
        Self { weight, bias: None }
    }

    /// Whether [`gemv`] takes this product: f32 on the CPU, few rows and a
    /// large weight. A decoding step has one row per clip and guidance half.
    /// For f32 on the CPU, libtorch would either take MKL's slow small-M
    /// SGEMM path (12x slower than GEMV on the benchmark's AMD EPYC) or, one
    /// GEMV per row, read the weights once per row; `gemv` reads them once.
    /// Small matrices stay in cache, where one libtorch call is cheaper.
    fn takes_gemv(&self, xs: &Tensor, rows: i64) -> bool {
        self.weight.numel() >= MIN_GEMV_WEIGHTS
            && rows <= gemv::MAX_ROWS as i64
            && xs.device() == Device::Cpu
            && xs.kind() == Kind::Float
            && self.weight.kind() == Kind::Float
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let size = xs.size();
        let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
        if self.takes_gemv(xs, rows) {
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

    /// `residual + self(xs)`: one `addmm` on the device, instead of a
    /// product and an addition.
    pub fn forward_add(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor, TchError> {
        let size = xs.size();
        let rows: i64 = size[..size.len().saturating_sub(1)].iter().product();
        if self.bias.is_some() || self.takes_gemv(xs, rows) {
            return self.forward(xs)?.f_add(residual);
        }
        let out_dim = self.weight.size()[0];
        residual
            .f_reshape([rows, out_dim])?
            .f_addmm(&xs.f_reshape([rows, -1])?, &self.weight.f_tr()?)?
            .f_view(residual.size().as_slice())
    }
}

/// f32 linear layers on the CPU use `gemv` for weights at least this large
/// (512 x 512).
const MIN_GEMV_WEIGHTS: usize = 1 << 18;

/// Lays `parts` (each [rows_i, width]) one after another in a new tensor and
/// makes each a view of its rows. Every handle on a part (the VarStore's
/// included) shares its implementation, so they all see the fused storage
/// and the separate ones are freed: memory grows by one part set at most.
fn fuse_rows(parts: &mut [&mut Tensor]) -> Result<Tensor, TchError> {
    let fused = Tensor::f_cat(&parts.iter().map(|p| &**p).collect::<Vec<_>>(), 0)?;
    let mut offset = 0;
    for part in parts.iter_mut() {
        let rows = part.size().first().copied().unwrap_or(0);
        part.f_set_data(&fused.f_narrow(0, offset, rows)?)?;
        offset += rows;
    }
    Ok(fused)
}

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
    additive_mask_in(mask, Kind::Float)
}

/// [`additive_mask`] in `kind`, with that kind's most negative finite value
/// (what `transformers` uses, `torch.finfo(dtype).min`): attention kernels
/// want the mask in the queries' dtype, and -inf would turn a fully masked
/// row into NaNs.
pub fn additive_mask_in(mask: &Tensor, kind: Kind) -> Result<Tensor, TchError> {
    let (b, l) = mask.size2()?;
    let masked = mask.f_eq(0)?.f_view([b, 1, 1, l])?;
    Tensor::f_zeros([b, 1, 1, l], (kind, mask.device()))?.f_masked_fill(&masked, lowest(kind))
}

/// The most negative finite value of a floating-point kind.
fn lowest(kind: Kind) -> f64 {
    match kind {
        Kind::Half => -65504.0,
        Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        Kind::Double => f64::MIN,
        _ => f64::from(f32::MIN),
    }
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

/// Which positions a call covers and how it finds them.
#[derive(Debug, Clone, Copy)]
pub enum Span {
    /// `len` positions from `start`, known on the host: teacher forcing,
    /// and decoding steps that need no graph. Each query sees the keys up to
    /// its own position.
    Host { start: i64, len: i64 },
    /// One position, read from the state's device-side position
    /// ([`DecoderState::position`]), seeing the first `window` cache slots
    /// with those after the position masked. Nothing about the step depends
    /// on the position's value on the host, so a CUDA graph captured once
    /// replays it for every position of the window.
    Device { window: i64 },
}

/// Everything that lives for one generation: the self-attention caches of
/// every layer, the projected cross-attention keys and values with their
/// mask, and the device-side position for [`Span::Device`] steps.
#[derive(Debug)]
pub struct DecoderState {
    /// Per layer [2 (keys, values), batch, heads, capacity, head_dim].
    self_attn: Vec<Tensor>,
    /// Per layer [2, batch, heads, source length, head_dim]; empty for a
    /// decoder without cross-attention.
    cross_attn: Vec<Tensor>,
    /// Additive, in the decoder's kind: [batch, 1, 1, source length]; `None`
    /// without cross-attention.
    cross_mask: Option<Tensor>,
    /// The next position to write, as [1] i64 on the device. Device steps
    /// read it; whoever drives them advances it ([`DecoderState::advance`]).
    position: Tensor,
    /// 0..capacity on the device, to mask a window's unwritten slots.
    slots: Tensor,
    /// Positions written by host spans.
    len: i64,
    capacity: i64,
}

impl DecoderState {
    /// Positions written by [`MusicgenDecoder::forward`] (host spans);
    /// device steps are counted by whoever drives them.
    pub fn len(&self) -> i64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> i64 {
        self.capacity
    }

    /// The device-side position [`Span::Device`] steps read.
    pub fn position(&self) -> &Tensor {
        &self.position
    }

    /// Moves the device-side position one step on, on the device.
    pub fn advance(&mut self) -> Result<(), TchError> {
        let _ = self.position.f_add_scalar_(1)?;
        Ok(())
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    /// q, k and v rows in one weight, once [`Attention::fuse`] ran.
    qkv: Option<Linear>,
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
            qkv: None,
            num_heads,
            head_dim: hidden / num_heads,
        }
    }

    fn fuse(&mut self) -> Result<(), TchError> {
        if self.qkv.is_none() {
            let fused = fuse_rows(&mut [
                &mut self.q_proj.weight,
                &mut self.k_proj.weight,
                &mut self.v_proj.weight,
            ])?;
            self.qkv = Some(Linear::over(fused));
        }
        Ok(())
    }

    /// [batch, len, hidden] -> [batch, heads, len, head_dim]
    fn split_heads(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let (b, l, _) = xs.size3()?;
        xs.f_view([b, l, self.num_heads, self.head_dim])?
            .f_transpose(1, 2)
    }

    /// Keys and values of the cross-attention sources:
    /// [2, batch, heads, len, head_dim].
    fn project_kv(&self, xs: &Tensor) -> Result<Tensor, TchError> {
        let keys = self.split_heads(&self.k_proj.forward(xs)?)?;
        let values = self.split_heads(&self.v_proj.forward(xs)?)?;
        Tensor::f_stack(&[keys, values], 0)
    }

    /// q [batch, heads, len, head_dim] against keys and values; returns
    /// the heads merged back, [batch, len, hidden], before `out_proj`.
    fn attend(
        &self,
        q: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, TchError> {
        let (b, _, l, _) = q.size4()?;
        let scale = (self.head_dim as f64).powf(-0.5);
        Tensor::f_scaled_dot_product_attention(q, keys, values, mask, 0.0, false, scale, false)?
            .f_transpose(1, 2)?
            .f_reshape([b, l, self.num_heads * self.head_dim])
    }

    /// Causal self-attention of `xs` over `cache` ([2, batch, heads,
    /// capacity, head_dim]), writing its keys and values there first.
    /// Returns `residual` plus the attention output.
    fn forward_self(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        cache: &mut Tensor,
        span: Span,
        position: &Tensor,
        mask: Option<&Tensor>,
    ) -> Result<Tensor, TchError> {
        let (b, l, _) = xs.size3()?;
        let qkv = self.qkv.as_ref().ok_or_else(not_fused)?;
        // [b, l, 3h] -> [3, b, heads, l, head_dim]: q, then k and v.
        let all = qkv
            .forward(xs)?
            .f_view([b, l, 3, self.num_heads, self.head_dim])?
            .f_permute([2, 0, 3, 1, 4])?;
        let (q, kv) = (all.f_select(0, 0)?, all.f_narrow(0, 1, 2)?);
        let visible = match span {
            Span::Host { start, len } => {
                cache.f_narrow(3, start, len)?.f_copy_(&kv)?;
                start + len
            }
            Span::Device { window } => {
                let _ = cache.f_index_copy_(3, position, &kv)?;
                window
            }
        };
        let keys = cache.f_select(0, 0)?.f_narrow(2, 0, visible)?;
        let values = cache.f_select(0, 1)?.f_narrow(2, 0, visible)?;
        let out = self.attend(&q, &keys, &values, mask)?;
        self.out_proj.forward_add(&out, residual)
    }

    fn forward_cross(
        &self,
        xs: &Tensor,
        residual: &Tensor,
        kv: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor, TchError> {
        let q = self.split_heads(&self.q_proj.forward(xs)?)?;
        let out = self.attend(&q, &kv.f_select(0, 0)?, &kv.f_select(0, 1)?, Some(mask))?;
        self.out_proj.forward_add(&out, residual)
    }
}

/// The additive self-attention mask of a span in `kind`, shared by every
/// layer, or `None` where every visible key may be seen (one host position).
fn self_attention_mask(
    span: Span,
    position: &Tensor,
    slots: &Tensor,
    kind: Kind,
) -> Result<Option<Tensor>, TchError> {
    match span {
        Span::Host { len: 1, .. } => Ok(None),
        Span::Host { start, len } => {
            // [1, 1, len, start+len]: query i sees keys <= start+i.
            let device = slots.device();
            let total = start + len;
            let queries = Tensor::f_arange(len, (Kind::Int64, device))?
                .f_add_scalar(start)?
                .f_unsqueeze(1)?;
            let keys = Tensor::f_arange(total, (Kind::Int64, device))?.f_unsqueeze(0)?;
            let future = keys.f_gt_tensor(&queries)?;
            Ok(Some(
                Tensor::f_zeros([len, total], (kind, device))?
                    .f_masked_fill(&future, lowest(kind))?
                    .f_view([1, 1, len, total])?,
            ))
        }
        Span::Device { window } => {
            let future = slots.f_narrow(0, 0, window)?.f_gt_tensor(position)?;
            Ok(Some(
                Tensor::f_zeros([window], (kind, slots.device()))?
                    .f_masked_fill(&future, lowest(kind))?
                    .f_view([1, 1, 1, window])?,
            ))
        }
    }
}

#[derive(Debug)]
struct DecoderLayer {
    self_attn: Attention,
    self_attn_layer_norm: LayerNorm,
    /// `None` in MusicGen-melody's decoder, whose conditioning is prepended
    /// to its input instead.
    cross: Option<CrossAttention>,
    fc1: Linear,
    fc2: Linear,
    final_layer_norm: LayerNorm,
}

#[derive(Debug)]
struct CrossAttention {
    encoder_attn: Attention,
    encoder_attn_layer_norm: LayerNorm,
}

impl DecoderLayer {
    fn new(vs: nn::Path, cfg: &MusicgenDecoderConfig, cross_in: Option<i64>) -> Self {
        let h = cfg.hidden_size;
        Self {
            self_attn: Attention::new(&vs / "self_attn", h, h, cfg.num_attention_heads),
            self_attn_layer_norm: LayerNorm::new(&vs / "self_attn_layer_norm", h),
            cross: cross_in.map(|cross_in| CrossAttention {
                encoder_attn: Attention::new(
                    &vs / "encoder_attn",
                    h,
                    cross_in,
                    cfg.num_attention_heads,
                ),
                encoder_attn_layer_norm: LayerNorm::new(&vs / "encoder_attn_layer_norm", h),
            }),
            fc1: Linear::new(&vs / "fc1", h, cfg.ffn_dim, false),
            fc2: Linear::new(&vs / "fc2", cfg.ffn_dim, h, false),
            final_layer_norm: LayerNorm::new(&vs / "final_layer_norm", h),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        xs: &Tensor,
        self_cache: &mut Tensor,
        cross: Option<(&Tensor, &Tensor)>,
        span: Span,
        position: &Tensor,
        self_mask: Option<&Tensor>,
    ) -> Result<Tensor, TchError> {
        let xs = self.self_attn.forward_self(
            &self.self_attn_layer_norm.forward(xs)?,
            xs,
            self_cache,
            span,
            position,
            self_mask,
        )?;
        let xs = match (&self.cross, cross) {
            (Some(layer), Some((kv, mask))) => layer.encoder_attn.forward_cross(
                &layer.encoder_attn_layer_norm.forward(&xs)?,
                &xs,
                kv,
                mask,
            )?,
            (None, _) => xs,
            (Some(_), None) => {
                return Err(TchError::Kind(
                    "cross-attention layer without encoder states".to_owned(),
                ))
            }
        };
        let hidden = self
            .fc1
            .forward(&self.final_layer_norm.forward(&xs)?)?
            .f_gelu("none")?;
        self.fc2.forward_add(&hidden, &xs)
    }
}

fn not_fused() -> TchError {
    TchError::Kind("the decoder runs only after `MusicgenDecoder::fuse`".to_owned())
}

/// Tensors [`MusicgenDecoder::fuse`] builds once after loading.
#[derive(Debug)]
struct Fused {
    /// Every codebook's table stacked: [codebooks * (vocab + 1), hidden].
    embeddings: Tensor,
    /// Codebook k's first row in `embeddings`: [1, codebooks, 1] i64.
    embedding_offsets: Tensor,
    /// Every codebook's head: [codebooks * vocab, hidden].
    lm_heads: Linear,
    /// The sinusoids in the decoder's kind, on its device.
    positions: Tensor,
}

/// `MusicgenForCausalLM`, created at the checkpoint's `decoder` prefix.
#[derive(Debug)]
pub struct MusicgenDecoder {
    /// Loaded as separate variables, then views of `fused.embeddings`.
    embed_tokens: Vec<Tensor>,
    layers: Vec<DecoderLayer>,
    layer_norm: LayerNorm,
    /// Loaded as separate variables, then views of `fused.lm_heads`.
    lm_heads: Vec<Linear>,
    /// f32 on the CPU, until [`MusicgenDecoder::fuse`] moves it.
    positions: Tensor,
    /// Set by [`MusicgenDecoder::fuse`], which must run before decoding.
    fused: Option<Fused>,
    cfg: MusicgenDecoderConfig,
    /// Width of the cross-attended states; `None` for a decoder whose
    /// conditioning is prepended to its input (MusicGen-melody).
    cross_in: Option<i64>,
}

/// Positions a prefixed decoder may hold beyond `max_position_embeddings`:
/// room for the prepended conditioning (235 chroma frames and the prompt's
/// tokens). `transformers` extends the sinusoids as far as needed; the
/// checkpoints were trained with the condition in front of 30 s of codes.
pub const PREFIX_POSITIONS: i64 = 1024;

impl MusicgenDecoder {
    /// `cross_in`: width of the encoder states cross-attention reads
    /// (the decoder width after `enc_to_dec_proj`).
    pub fn new(vs: nn::Path, cfg: &MusicgenDecoderConfig, cross_in: i64) -> Result<Self, TchError> {
        Self::build(vs, cfg, Some(cross_in))
    }

    /// MusicGen-melody's decoder (`MusicgenMelodyForCausalLM`): the same
    /// layers without cross-attention; the conditioning enters as a prefix
    /// of the input ([`MusicgenDecoder::start_prefixed`]).
    pub fn without_cross_attention(
        vs: nn::Path,
        cfg: &MusicgenDecoderConfig,
    ) -> Result<Self, TchError> {
        Self::build(vs, cfg, None)
    }

    /// Whether the layers cross-attend (false: the conditioning is a prefix).
    pub fn cross_attends(&self) -> bool {
        self.cross_in.is_some()
    }

    /// Positions one generation may use, prefix included.
    pub fn max_positions(&self) -> i64 {
        match self.cross_in {
            Some(_) => self.cfg.max_position_embeddings,
            None => self.cfg.max_position_embeddings + PREFIX_POSITIONS,
        }
    }

    fn build(
        vs: nn::Path,
        cfg: &MusicgenDecoderConfig,
        cross_in: Option<i64>,
    ) -> Result<Self, TchError> {
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
        let table = match cross_in {
            Some(_) => cfg.max_position_embeddings,
            None => cfg.max_position_embeddings + PREFIX_POSITIONS,
        };
        let positions = sinusoidal_positions(table, cfg.hidden_size)?;
        Ok(Self {
            embed_tokens,
            layers,
            layer_norm,
            lm_heads,
            positions,
            fused: None,
            cfg: cfg.clone(),
            cross_in,
        })
    }

    pub fn config(&self) -> &MusicgenDecoderConfig {
        &self.cfg
    }

    /// Where the weights live.
    pub fn device(&self) -> Device {
        self.layer_norm.weight.device()
    }

    fn device_and_kind(&self) -> (Device, Kind) {
        (
            self.layer_norm.weight.device(),
            self.layer_norm.weight.kind(),
        )
    }

    /// Lays the weights out for decoding, once the checkpoint is loaded and
    /// the variables have their final kind and device (converting the
    /// VarStore afterwards would separate the fused views again). The
    /// variables keep their checkpoint names and shapes; they become views
    /// of the fused tensors. Idempotent.
    pub fn fuse(&mut self) -> Result<(), TchError> {
        let _no_grad = tch::no_grad_guard();
        if self.fused.is_some() {
            return Ok(());
        }
        let (device, kind) = self.device_and_kind();
        for layer in &mut self.layers {
            layer.self_attn.fuse()?;
        }
        let embeddings = fuse_rows(&mut self.embed_tokens.iter_mut().collect::<Vec<_>>())?;
        let lm_heads = Linear::over(fuse_rows(
            &mut self
                .lm_heads
                .iter_mut()
                .map(|h| &mut h.weight)
                .collect::<Vec<_>>(),
        )?);
        let codebooks = self.cfg.num_codebooks;
        let embedding_offsets = Tensor::f_arange(codebooks, (Kind::Int64, Device::Cpu))?
            .f_mul_scalar(self.cfg.vocab_size + 1)?
            .f_view([1, codebooks, 1])?
            .f_to_device(device)?;
        let positions = self.positions.f_to_device(device)?.f_to_kind(kind)?;
        self.fused = Some(Fused {
            embeddings,
            embedding_offsets,
            lm_heads,
            positions,
        });
        Ok(())
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
        let Some(cross_in) = self.cross_in else {
            return Err(TchError::Kind(
                "this decoder has no cross-attention: start it with a prefix".to_owned(),
            ));
        };
        let (b, _, width) = encoder_states.size3()?;
        if width != cross_in {
            return Err(TchError::Shape(format!(
                "encoder states have width {width}, expected {cross_in}"
            )));
        }
        let states = encoder_states.f_to_device(device)?.f_to_kind(kind)?;
        let mut state = self.empty_state(b, capacity)?;
        for layer in &self.layers {
            if let Some(cross) = &layer.cross {
                state
                    .cross_attn
                    .push(cross.encoder_attn.project_kv(&states)?);
            }
        }
        state.cross_mask = Some(additive_mask_in(&encoder_mask.f_to_device(device)?, kind)?);
        Ok(state)
    }

    /// Starts a generation of a decoder without cross-attention whose
    /// conditioning `prefix` [batch, len, hidden] comes before the codes, as
    /// `MusicgenMelodyForCausalLM` concatenates `encoder_hidden_states` and
    /// the code embeddings: the prefix takes positions 0..len (sinusoids
    /// included) under the causal mask, and the codes follow. Runs the
    /// prefix through the layers (its keys and values fill the caches); the
    /// state then stands at position len, of `capacity` in all.
    pub fn start_prefixed(&self, prefix: &Tensor, capacity: i64) -> Result<DecoderState, TchError> {
        let (device, kind) = self.device_and_kind();
        if self.cross_in.is_some() {
            return Err(TchError::Kind(
                "this decoder cross-attends: start it with encoder states".to_owned(),
            ));
        }
        let (b, len, width) = prefix.size3()?;
        if width != self.cfg.hidden_size || len < 1 || len >= capacity {
            return Err(TchError::Shape(format!(
                "a prefix of {len} x {width} does not fit a decoder of width {} and {capacity} positions",
                self.cfg.hidden_size
            )));
        }
        let mut state = self.empty_state(b, capacity)?;
        let span = Span::Host { start: 0, len };
        let fused = self.fused.as_ref().ok_or_else(not_fused)?;
        let xs = prefix
            .f_to_device(device)?
            .f_to_kind(kind)?
            .f_add(&fused.positions.f_narrow(0, 0, len)?.f_unsqueeze(0)?)?;
        let _threads =
            (device == Device::Cpu && b * len <= gemv::MAX_ROWS as i64).then(IntraOpThreads::one);
        // The prefix's own outputs are not needed: only its keys and values.
        let _ = self.layers_forward(xs, &mut state, span)?;
        state.len = len;
        let _ = state.position.f_fill_(len)?;
        Ok(state)
    }

    /// Caches of `capacity` positions for `batch` rows, nothing attended yet.
    fn empty_state(&self, batch: i64, capacity: i64) -> Result<DecoderState, TchError> {
        let (device, kind) = self.device_and_kind();
        if capacity > self.max_positions() {
            // Sinusoids extend to any length, but the model never saw more.
            return Err(TchError::Kind(format!(
                "{capacity} decoding positions exceed the {} this decoder takes",
                self.max_positions()
            )));
        }
        let heads = self.cfg.num_attention_heads;
        let head_dim = self.cfg.head_dim();
        let self_attn = self
            .layers
            .iter()
            // Zeros, not empty: a masked slot still enters the products, and
            // stale NaNs there would survive the mask.
            .map(|_| Tensor::f_zeros([2, batch, heads, capacity, head_dim], (kind, device)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(DecoderState {
            self_attn,
            cross_attn: Vec::new(),
            cross_mask: None,
            position: Tensor::f_zeros([1], (Kind::Int64, device))?,
            slots: Tensor::f_arange(capacity, (Kind::Int64, device))?,
            len: 0,
            capacity,
        })
    }

    /// Runs `codes` [batch, codebooks, len] (positions `state.len()..+len`)
    /// and returns f32 logits [batch, codebooks, len, vocab].
    pub fn forward(&self, codes: &Tensor, state: &mut DecoderState) -> Result<Tensor, TchError> {
        let (_, _, l) = codes.size3()?;
        let start = state.len;
        if start + l > state.capacity {
            return Err(TchError::Kind(format!(
                "decoder state holds {} positions, asked for {}",
                state.capacity,
                start + l
            )));
        }
        let logits = self.run(codes, state, Span::Host { start, len: l })?;
        state.len = start + l;
        // Keep the device-side position in step, for device steps after a
        // host prefix.
        let _ = state.position.f_fill_(state.len)?;
        Ok(logits)
    }

    /// One decoding step for `codes` [batch, codebooks] at `span` (one
    /// position); returns f32 logits [batch, codebooks, vocab]. Neither
    /// position counter moves: the caller advances the one it drives.
    pub fn step(
        &self,
        codes: &Tensor,
        state: &mut DecoderState,
        span: Span,
    ) -> Result<Tensor, TchError> {
        let (b, c) = codes.size2()?;
        if let Span::Host { start, len } = span {
            if len != 1 || start >= state.capacity {
                return Err(TchError::Kind(format!(
                    "a step is one position within {}, got {len} at {start}",
                    state.capacity
                )));
            }
        }
        let logits = self.run(&codes.f_view([b, c, 1])?, state, span)?;
        logits.f_squeeze_dim(2)
    }

    fn run(
        &self,
        codes: &Tensor,
        state: &mut DecoderState,
        span: Span,
    ) -> Result<Tensor, TchError> {
        let (device, kind) = self.device_and_kind();
        let (b, c, l) = codes.size3()?;
        if c != self.cfg.num_codebooks {
            return Err(TchError::Shape(format!(
                "got {c} codebooks, the model has {}",
                self.cfg.num_codebooks
            )));
        }
        if let Span::Device { window, .. } = span {
            if l != 1 || window < 1 || window > state.capacity {
                return Err(TchError::Kind(format!(
                    "a device step is one position in a window of 1..={}, got {l} in {window}",
                    state.capacity
                )));
            }
        }
        let codes = codes.f_to_device(device)?;
        // A handle, so that the layers can read it while writing the caches.
        let position = state.position.shallow_clone();
        let _threads =
            (device == Device::Cpu && b * l <= gemv::MAX_ROWS as i64).then(IntraOpThreads::one);
        let fused = self.fused.as_ref().ok_or_else(not_fused)?;
        // One lookup for every codebook, summed over codebooks.
        let ids = codes.f_add(&fused.embedding_offsets)?;
        let xs = Tensor::f_embedding(&fused.embeddings, &ids, -1, false, false)?
            .f_sum_dim_intlist(1, false, kind)?;
        let positions = match span {
            Span::Host { start, len } => fused.positions.f_narrow(0, start, len)?,
            Span::Device { .. } => fused.positions.f_index_select(0, &position)?,
        };
        let xs = xs.f_add(&positions.f_unsqueeze(0)?)?;
        let xs = self.layers_forward(xs, state, span)?;
        let vocab = self.cfg.vocab_size;
        // [b, l, K*V] -> [b, K, l, V]
        let logits = fused
            .lm_heads
            .forward(&xs)?
            .f_view([b, l, c, vocab])?
            .f_permute([0, 2, 1, 3])?;
        logits.f_to_kind(Kind::Float)
    }
}

impl MusicgenDecoder {
    /// The layers and the final layer norm over `xs` [batch, len, hidden]
    /// (embeddings and positions already summed) at `span`.
    fn layers_forward(
        &self,
        mut xs: Tensor,
        state: &mut DecoderState,
        span: Span,
    ) -> Result<Tensor, TchError> {
        let (_, kind) = self.device_and_kind();
        // A handle, so that the layers can read it while writing the caches.
        let position = state.position.shallow_clone();
        let self_mask = self_attention_mask(span, &position, &state.slots, kind)?;
        for (i, (layer, self_cache)) in self
            .layers
            .iter()
            .zip(state.self_attn.iter_mut())
            .enumerate()
        {
            let cross = match (&state.cross_mask, state.cross_attn.get(i)) {
                (Some(mask), Some(kv)) => Some((kv, mask)),
                _ => None,
            };
            xs = layer.forward(&xs, self_cache, cross, span, &position, self_mask.as_ref())?;
        }
        self.layer_norm.forward(&xs)
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
    fn forward_add_is_the_residual_plus_the_product_on_both_paths() {
        for (rows, out) in [(2i64, 1024i64), (12, 64)] {
            let linear = Linear::over(Tensor::randn([out, 512], (Kind::Float, Device::Cpu)));
            let xs = Tensor::randn([rows, 1, 512], (Kind::Float, Device::Cpu));
            let residual = Tensor::randn([rows, 1, out], (Kind::Float, Device::Cpu));
            let got = linear.forward_add(&xs, &residual).expect("forward_add");
            let expected = xs.linear(&linear.weight, None::<Tensor>) + &residual;
            assert_eq!(got.size(), residual.size());
            let diff = (got - expected).abs().max().double_value(&[]);
            assert!(diff < 1e-4, "{rows} rows: max diff {diff}");
        }
    }

    #[test]
    fn fusing_makes_the_variables_views_of_one_tensor_without_changing_them() {
        let vs = nn::VarStore::new(Device::Cpu);
        let root = vs.root();
        let a = root.randn_standard("a", &[2, 3]);
        let b = root.randn_standard("b", &[4, 3]);
        let (a0, b0) = (a.copy(), b.copy());
        let (mut a1, mut b1) = (a.shallow_clone(), b.shallow_clone());
        let fused = fuse_rows(&mut [&mut a1, &mut b1]).expect("fuse");
        assert_eq!(fused.size(), vec![6, 3]);
        // The VarStore's own handles see the fused storage.
        let stored = vs.variables();
        assert!(stored["a"].equal(&a0) && stored["b"].equal(&b0));
        assert_eq!(stored["a"].data_ptr(), fused.data_ptr());
        let _ = fused.narrow(0, 2, 1).fill_(7.0);
        assert_eq!(stored["b"].double_value(&[0, 0]), 7.0);
    }

    #[test]
    fn fully_masked_rows_stay_finite() {
        let mask = Tensor::from_slice(&[0i64, 0, 0]).view([1, 3]);
        for kind in [Kind::Float, Kind::Half, Kind::BFloat16] {
            let add = additive_mask_in(&mask, kind).expect("mask");
            let q = Tensor::randn([1, 1, 1, 4], (kind, Device::Cpu));
            let kv = Tensor::randn([1, 1, 3, 4], (kind, Device::Cpu));
            let out = Tensor::scaled_dot_product_attention(
                &q,
                &kv,
                &kv,
                Some(&add),
                0.0,
                false,
                None,
                false,
            );
            assert!(out.isfinite().all().int64_value(&[]) == 1, "{kind:?}");
        }
    }
}
