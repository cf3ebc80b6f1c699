//! AudioGen: text to sound effects from the files Meta publishes
//! (`facebook/audiogen-medium`), on the same decoder, T5 and EnCodec code
//! that MusicGen runs.
//!
//! Follows "AudioGen: Textually Guided Audio Generation" (Kreuk et al., 2023)
//! as implemented by audiocraft 1.3.0 (`models/audiogen.py`, `models/lm.py`,
//! `modules/transformer.py`, `modules/conditioners.py`, `models/encodec.py`).
//! The published repository holds two `torch.save` files, read here with
//! [`crate::torch_pickle`]: `state_dict.bin` (the LM and the T5 output
//! projection, float16) and `compression_state_dict.bin` (EnCodec 16 kHz,
//! float32), each with its training config as `xp.cfg`, from which every
//! size is taken ([`crate::audiocraft_config`]). T5 (t5-large for the
//! published model) is not in them: it comes from its own Hugging Face
//! repository, or from a `t5/` directory beside the two files.
//!
//! The LM is the MusicGen decoder ([`MusicgenDecoder`]) under audiocraft's
//! names: [`lm_source`] maps each variable of the decoder onto the tensor
//! (and, for the fused `in_proj_weight`, the rows) of `state_dict.bin` it is
//! loaded from; [`codec_source`] does the same for EnCodec. There is no
//! second transformer here, and this file must never grow one: a difference
//! in semantics is expressed in what the shared code is given. Two are:
//! cross-attention sees the T5 states *multiplied by their mask* with no
//! attention mask at all (a shorter prompt's padding takes softmax weight,
//! as in audiocraft), and the null condition of guidance is a zero tensor of
//! the batch's padded length (see `tests/fixtures/tiny-audiogen/NOTES.md`).
//!
//! Loading never panics on a bad file: a missing file, a truncated pickle,
//! an unexpected or missing key and a shape mismatch are each a one-line
//! [`LoadError`] naming the file and the key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use sound_creator_core::audio::{ClipRequest, GenerationError, ModelInfo, StepObserver};
use tch::{nn, Device, Kind, Tensor};

use crate::audiocraft_config::{CompressionConfig, LmConfig, XpConfigError};
use crate::batching::{
    all_generated, audio_generator_port, batch_progress, cut_clip, generate_error, group_by_params,
    options_for, torch_error, ClipSlot, GeneratedClip,
};
use crate::checkpoint::{resolve_model_dir, Checkpoint, LoadError};
use crate::config::{EncodecConfig, MusicgenDecoderConfig, T5Config};
use crate::cuda;
use crate::decoder::{IntraOpThreads, Linear, MusicgenDecoder};
use crate::encodec::EncodecDecoder;
use crate::engine::{device_label, dtype_label};
use crate::generation::{
    decode_codes, Conditioning, Continue, GenerateError, GenerateOptions, StepMode,
};
use crate::hub::{resolve_repo_files, HubSettings};
use crate::t5::T5Encoder;
use crate::tokenizer::{EncodedPrompts, T5Tokenizer};
use crate::torch_pickle::{StateDict, TorchFile, TorchFileError};

/// The LM file of an AudioCraft export (`utils/export.py:export_lm`).
pub const LM_FILE: &str = "state_dict.bin";
/// The codec file of an AudioCraft export (`export_encodec`).
pub const COMPRESSION_FILE: &str = "compression_state_dict.bin";
/// A local T5 beside the two files, in the Hugging Face layout; when absent
/// the T5 named by `xp.cfg` is taken from the hub.
pub const T5_DIR: &str = "t5";

/// Whether `dir` holds an AudioCraft export (both files), which is how
/// `sound-creator generate` tells an AudioGen model from a MusicGen one.
pub fn is_audiocraft_export(dir: &Path) -> bool {
    dir.join(LM_FILE).is_file() && dir.join(COMPRESSION_FILE).is_file()
}

/// The hub repository of a T5 named in `xp.cfg`: the legacy ids (`t5-large`)
/// live under `google-t5/` now.
pub fn t5_repo(name: &str) -> String {
    if name.contains('/') {
        name.to_owned()
    } else {
        format!("google-t5/{name}")
    }
}

/// Everything the model is built from.
#[derive(Debug, Clone, PartialEq)]
pub struct AudiogenConfig {
    pub lm: LmConfig,
    pub compression: CompressionConfig,
    /// The T5 of the conditioner (from its own `config.json`).
    pub t5: T5Config,
    /// The LM in the shared decoder's terms.
    pub decoder: MusicgenDecoderConfig,
    /// The codec in the shared EnCodec's terms.
    pub encodec: EncodecConfig,
    /// The cross-attended conditioner (`description`).
    pub conditioner: String,
}

fn xp(path: &Path, e: XpConfigError) -> LoadError {
    LoadError::Model {
        model: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn unsupported(path: &Path, key: &str, reason: String) -> LoadError {
    LoadError::Model {
        model: path.display().to_string(),
        reason: format!("xp.cfg `{key}`: {reason}"),
    }
}

impl AudiogenConfig {
    /// Maps the two `xp.cfg` configs (and the T5's) onto the shared layers,
    /// refusing any option the shared code does not implement, so that an
    /// unusual checkpoint fails at load time instead of generating noise.
    pub fn new(
        lm_path: &Path,
        lm: LmConfig,
        codec_path: &Path,
        compression: CompressionConfig,
        t5: T5Config,
    ) -> Result<Self, LoadError> {
        let t = &lm.transformer_lm;
        let bad = |key: &str, reason: String| Err(unsupported(lm_path, key, reason));
        let checks: [(&str, bool, String); 12] = [
            (
                "transformer_lm.norm_first",
                t.norm_first,
                "must be true (pre-norm)".into(),
            ),
            (
                "transformer_lm.norm",
                t.norm == "layer_norm",
                format!("{:?} is not supported", t.norm),
            ),
            (
                "transformer_lm.activation",
                t.activation == "gelu",
                format!("{:?} is not supported", t.activation),
            ),
            (
                "transformer_lm.bias_attn",
                !(t.bias_attn || t.bias_ff || t.bias_proj),
                "biases in attention, feed-forward or heads are not supported".into(),
            ),
            (
                "transformer_lm.positional_embedding",
                t.positional_embedding == "sin"
                    && t.max_period == 10_000.0
                    && t.positional_scale == 1.0,
                "only sinusoids with max_period 10000 and scale 1 are supported".into(),
            ),
            (
                "transformer_lm.layer_scale",
                t.layer_scale.is_none() && !t.qk_layer_norm && !t.qk_layer_norm_cross,
                "layer scale and q/k layer norms are not supported".into(),
            ),
            (
                "transformer_lm.kv_repeat",
                t.kv_repeat == 1 && t.past_context.is_none() && t.causal,
                "only causal attention over the whole past with kv_repeat 1".into(),
            ),
            (
                "transformer_lm.two_step_cfg",
                !t.two_step_cfg,
                "two-step guidance is not supported".into(),
            ),
            (
                "fuser",
                lm.fuser.sum.is_empty()
                    && lm.fuser.prepend.is_empty()
                    && lm.fuser.input_interpolate.is_empty()
                    && lm.fuser.cross.len() == 1
                    && !lm.fuser.cross_attention_pos_emb,
                "only one cross-attended text condition is supported".into(),
            ),
            (
                "channels",
                lm.channels == 1,
                "only mono is supported".into(),
            ),
            (
                "codebooks_pattern.delay",
                lm.codebooks_pattern
                    .delay
                    .as_ref()
                    .is_none_or(|d| d.flatten_first == 0 && d.empty_initial == 0),
                "flatten_first and empty_initial must be 0".into(),
            ),
            (
                "transformer_lm.xpos",
                !t.xpos,
                "xpos is not supported".into(),
            ),
        ];
        for (key, ok, reason) in checks {
            if !ok {
                return bad(key, reason);
            }
        }
        let delays = lm.delays().map_err(|e| xp(lm_path, e))?;
        if delays != (0..t.n_q).collect::<Vec<_>>() {
            return bad(
                "codebooks_pattern.delay.delays",
                format!("{delays:?}: only the delays 0, 1, ..., n_q-1 are supported"),
            );
        }
        let (conditioner, _) = lm.t5_conditioner().map_err(|e| xp(lm_path, e))?;
        let conditioner = conditioner.to_owned();

        let frame_rate = compression.frame_rate();
        // The decoder's sinusoid table: the longest clip plus the delays.
        let max_frames = (lm.dataset.segment_duration * frame_rate as f64).ceil() as i64;
        let decoder = MusicgenDecoderConfig {
            vocab_size: t.card,
            max_position_embeddings: max_frames + t.n_q,
            num_hidden_layers: t.num_layers,
            ffn_dim: t.ffn_dim(),
            num_attention_heads: t.num_heads,
            hidden_size: t.dim,
            activation_function: "gelu".to_owned(),
            num_codebooks: t.n_q,
            audio_channels: 1,
            scale_embedding: false,
            pad_token_id: Some(t.card),
            bos_token_id: Some(t.card),
            cross_attention_hidden_size: None,
        };

        let s = &compression.seanet;
        let bad_codec = |key: &str, reason: String| Err(unsupported(codec_path, key, reason));
        if s.norm != "weight_norm" {
            return bad_codec("seanet.norm", format!("{:?} is not supported", s.norm));
        }
        if s.activation != "ELU" || s.activation_params.alpha != 1.0 {
            return bad_codec("seanet.activation", "only ELU(alpha=1) is supported".into());
        }
        if s.disable_norm_outer_blocks != 0 || s.decoder.final_activation.is_some() {
            return bad_codec(
                "seanet.disable_norm_outer_blocks",
                "must be 0, with no final activation".into(),
            );
        }
        if s.lstm < 1 {
            return bad_codec("seanet.lstm", "the decoder needs its LSTM".into());
        }
        if compression.rvq.n_q < t.n_q || compression.rvq.bins != t.card {
            return bad_codec(
                "rvq",
                format!(
                    "{} x {} codes, but the LM predicts {} x {}",
                    compression.rvq.n_q, compression.rvq.bins, t.n_q, t.card
                ),
            );
        }
        if compression.sample_rate() != lm.sample_rate {
            return bad_codec(
                "encodec.sample_rate",
                format!(
                    "{} Hz, but the LM was trained at {} Hz",
                    compression.sample_rate(),
                    lm.sample_rate
                ),
            );
        }
        let nbits = (compression.rvq.bins.max(2) as f64).log2().ceil();
        // transformers derives the number of quantizers from the largest
        // bandwidth (floor); half a codebook more lands it on rvq.n_q exactly.
        let bandwidth = (compression.rvq.n_q as f64 + 0.5) * frame_rate as f64 * nbits / 1000.0;
        let encodec = EncodecConfig {
            target_bandwidths: vec![bandwidth],
            sampling_rate: compression.sample_rate(),
            audio_channels: i64::from(compression.encodec.channels),
            normalize: false,
            chunk_length_s: None,
            overlap: None,
            hidden_size: s.dimension,
            num_filters: s.n_filters,
            num_residual_layers: s.n_residual_layers,
            upsampling_ratios: s.ratios.clone(),
            norm_type: "weight_norm".to_owned(),
            kernel_size: s.kernel_size,
            last_kernel_size: s.last_kernel_size,
            residual_kernel_size: s.residual_kernel_size,
            dilation_growth_rate: s.dilation_base,
            use_causal_conv: s.causal,
            pad_mode: s.pad_mode.clone(),
            compress: s.compress,
            num_lstm_layers: s.lstm,
            trim_right_ratio: s.trim_right_ratio(),
            codebook_size: compression.rvq.bins,
            codebook_dim: Some(s.dimension),
            use_conv_shortcut: !s.true_skip,
            frame_rate: None,
        };
        if encodec.num_quantizers() != compression.rvq.n_q {
            return bad_codec("rvq.n_q", "does not give a whole bandwidth".into());
        }
        Ok(Self {
            lm,
            compression,
            t5,
            decoder,
            encodec,
            conditioner,
        })
    }

    /// Codec frames per second (50 for the published 16 kHz EnCodec).
    pub fn frame_rate(&self) -> i64 {
        self.compression.frame_rate()
    }

    pub fn sample_rate(&self) -> u32 {
        self.compression.sample_rate()
    }

    /// The longest clip: the training segment (10 s for audiogen-medium).
    pub fn max_duration(&self) -> f64 {
        self.lm.dataset.segment_duration
    }

    fn output_proj_prefix(&self) -> String {
        format!(
            "condition_provider.conditioners.{}.output_proj",
            self.conditioner
        )
    }
}

/// Where a variable of the shared layers is stored in an AudioCraft file:
/// a tensor name and, for a block of a fused `in_proj_weight`, its rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    /// `(first row, rows)` of the stored tensor.
    pub rows: Option<(i64, i64)>,
}

impl Source {
    fn whole(name: String) -> Self {
        Self { name, rows: None }
    }
}

/// The `state_dict.bin` tensor behind a variable of [`MusicgenDecoder`]
/// (its names relative to the decoder's path), or `None` for a name the
/// mapping does not know. `dim` is the model width: q, k and v are the three
/// blocks of `dim` rows of each `in_proj_weight`, in that order.
pub fn lm_source(var: &str, dim: i64) -> Option<Source> {
    if let Some(rest) = var.strip_prefix("model.decoder.embed_tokens.") {
        return Some(Source::whole(format!("emb.{rest}")));
    }
    if let Some(rest) = var.strip_prefix("lm_heads.") {
        return Some(Source::whole(format!("linears.{rest}")));
    }
    if let Some(rest) = var.strip_prefix("model.decoder.layer_norm.") {
        return Some(Source::whole(format!("out_norm.{rest}")));
    }
    let rest = var.strip_prefix("model.decoder.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (module, param) = rest.rsplit_once('.')?;
    let prefix = format!("transformer.layers.{layer}");
    let block = |attn: &str, proj: &str| {
        let index = match proj {
            "q_proj" => 0,
            "k_proj" => 1,
            "v_proj" => 2,
            _ => return None,
        };
        Some(Source {
            name: format!("{prefix}.{attn}.in_proj_weight"),
            rows: Some((index * dim, dim)),
        })
    };
    let (outer, inner) = module.split_once('.').unwrap_or((module, ""));
    let name = |m: &str| Some(Source::whole(format!("{prefix}.{m}.{param}")));
    match (outer, inner, param) {
        ("self_attn", "out_proj", _) => name("self_attn.out_proj"),
        ("self_attn", proj, "weight") => block("self_attn", proj),
        ("encoder_attn", "out_proj", _) => name("cross_attention.out_proj"),
        ("encoder_attn", proj, "weight") => block("cross_attention", proj),
        ("self_attn_layer_norm", "", _) => name("norm1"),
        ("encoder_attn_layer_norm", "", _) => name("norm_cross"),
        ("final_layer_norm", "", _) => name("norm2"),
        ("fc1", "", _) => name("linear1"),
        ("fc2", "", _) => name("linear2"),
        _ => None,
    }
}

/// The `compression_state_dict.bin` names that may hold a variable of
/// [`EncodecDecoder`] (transformers' names), most likely first: audiocraft
/// wraps each convolution twice (`conv.conv`, `convtr.convtr`) and calls
/// the decoder's list `model` and a codebook `_codebook`.
pub fn codec_source(var: &str) -> Vec<String> {
    if let Some(rest) = var.strip_prefix("quantizer.layers.") {
        if let Some((q, param)) = rest.split_once(".codebook.") {
            return vec![format!("quantizer.vq.layers.{q}._codebook.{param}")];
        }
        return Vec::new();
    }
    let Some(rest) = var.strip_prefix("decoder.layers.") else {
        return Vec::new();
    };
    let Some((index, rest)) = rest.split_once('.') else {
        return Vec::new();
    };
    let at = format!("decoder.model.{index}");
    if let Some(param) = rest.strip_prefix("conv.") {
        return vec![
            format!("{at}.conv.conv.{param}"),
            format!("{at}.convtr.convtr.{param}"),
        ];
    }
    if let Some(param) = rest.strip_prefix("lstm.") {
        return vec![format!("{at}.lstm.{param}")];
    }
    if let Some(block) = rest.strip_prefix("block.") {
        if let Some((j, param)) = block.split_once(".conv.") {
            return vec![format!("{at}.block.{j}.conv.conv.{param}")];
        }
    }
    if let Some(param) = rest.strip_prefix("shortcut.conv.") {
        return vec![format!("{at}.shortcut.conv.conv.{param}")];
    }
    Vec::new()
}

/// Tensors of the codec file that decoding does not read: the encoder, and
/// the quantizer's training statistics.
fn codec_unused(name: &str) -> bool {
    name.starts_with("encoder.")
        || [".embed_avg", ".cluster_size", ".inited"]
            .iter()
            .any(|s| name.starts_with("quantizer.") && name.ends_with(s))
}

/// Copies each variable of `vs` under `prefix` from `state`, finding it
/// with `locate` (candidate sources, most likely first). Every variable must
/// be found with the expected shape; then every tensor of `state` must have
/// been used, unless `unused` allows it (a stray tensor means the file is
/// not the model `xp.cfg` describes).
fn load_from(
    vs: &nn::VarStore,
    prefix: &str,
    state: &StateDict<'_>,
    path: &Path,
    locate: &dyn Fn(&str) -> Vec<Source>,
    unused: &dyn Fn(&str) -> bool,
) -> Result<(), LoadError> {
    let _no_grad = tch::no_grad_guard();
    let mut variables: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter_map(|(name, var)| {
            name.strip_prefix(prefix)
                .and_then(|n| n.strip_prefix('.'))
                .map(|n| (n.to_owned(), var))
        })
        .collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    let mut used = BTreeSet::new();
    let fail = |name: &str, e: tch::TchError| LoadError::Tensor {
        path: path.to_path_buf(),
        name: name.to_owned(),
        message: e.to_string().lines().next().unwrap_or_default().to_owned(),
    };
    for (var_name, mut var) in variables {
        let candidates = locate(&var_name);
        let Some(source) = candidates.iter().find(|s| state.contains(&s.name)).cloned() else {
            let key = candidates
                .first()
                .map(|s| s.name.clone())
                .unwrap_or_else(|| var_name.clone());
            return Err(TorchFileError::MissingKey {
                path: path.to_path_buf(),
                key: format!("best_state.{key}"),
                found: format!("{} tensors", state.len()),
            }
            .into());
        };
        let expected = var.size();
        let stored_shape = match source.rows {
            Some((_, rows)) => {
                let mut shape = expected.clone();
                shape[0] = rows * 3;
                shape
            }
            None => expected.clone(),
        };
        let tensor = state.tensor_with_shape(&source.name, &stored_shape)?;
        let tensor = match source.rows {
            Some((start, rows)) => tensor
                .f_narrow(0, start, rows)
                .map_err(|e| fail(&source.name, e))?,
            None => tensor,
        };
        var.f_copy_(&tensor).map_err(|e| fail(&source.name, e))?;
        used.insert(source.name);
    }
    if let Some((stray, _)) = state
        .infos()
        .find(|(name, _)| !used.contains(*name) && !unused(name))
    {
        return Err(LoadError::Model {
            model: path.display().to_string(),
            reason: format!(
                "unexpected key `best_state.{stray}`: not part of the model its xp.cfg describes"
            ),
        });
    }
    Ok(())
}

/// The model: T5 and its output projection, the shared decoder and EnCodec.
#[derive(Debug)]
pub struct AudiogenModel {
    text_encoder: T5Encoder,
    output_proj: Linear,
    decoder: MusicgenDecoder,
    codec: EncodecDecoder,
    cfg: AudiogenConfig,
    step_mode: StepMode,
    /// Own the variables the layers' tensors alias.
    _t5_vs: nn::VarStore,
    _vs: nn::VarStore,
}

/// The AudioGen files of one model, opened and checked.
pub struct AudiogenFiles {
    pub lm: TorchFile,
    pub codec: TorchFile,
    pub t5_dir: PathBuf,
    pub cfg: AudiogenConfig,
}

impl std::fmt::Debug for AudiogenFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudiogenFiles")
            .field("lm", &self.lm.path())
            .field("codec", &self.codec.path())
            .field("t5_dir", &self.t5_dir)
            .finish()
    }
}

impl AudiogenFiles {
    /// Opens the two files in `dir`, reads their `xp.cfg`, and finds the T5:
    /// `dir/t5/` when present, else the hub repository `xp.cfg` names
    /// (found in `cache_dir` or downloaded into it).
    pub fn open(dir: &Path, cache_dir: &Path, hub: &HubSettings) -> Result<Self, LoadError> {
        let lm_path = dir.join(LM_FILE);
        let codec_path = dir.join(COMPRESSION_FILE);
        let lm = TorchFile::open(&lm_path)?;
        let codec = TorchFile::open(&codec_path)?;
        let lm_cfg = LmConfig::from_yaml(lm.get_str("xp.cfg")?).map_err(|e| xp(&lm_path, e))?;
        let codec_cfg = CompressionConfig::from_yaml(codec.get_str("xp.cfg")?)
            .map_err(|e| xp(&codec_path, e))?;
        let (_, t5) = lm_cfg.t5_conditioner().map_err(|e| xp(&lm_path, e))?;
        let local = dir.join(T5_DIR);
        let t5_dir = if local.is_dir() {
            local
        } else {
            let repo = t5_repo(&t5.name);
            tracing::info!(t5 = %repo, "AudioGen text encoder from the hub");
            resolve_model_dir(&repo, cache_dir, hub)?
        };
        let t5_config_path = t5_dir.join(crate::checkpoint::CONFIG_FILE);
        let text = std::fs::read_to_string(&t5_config_path)
            .map_err(|e| LoadError::io(&t5_config_path, e))?;
        let t5_cfg: T5Config = serde_json::from_str(&text).map_err(|source| LoadError::Json {
            path: t5_config_path.clone(),
            source,
        })?;
        let cfg = AudiogenConfig::new(&lm_path, lm_cfg, &codec_path, codec_cfg, t5_cfg)?;
        Ok(Self {
            lm,
            codec,
            t5_dir,
            cfg,
        })
    }
}

impl AudiogenModel {
    /// Builds the layers on `device` and loads every weight, the decoder in
    /// `kind` (T5, its projection and EnCodec stay f32).
    pub fn load(files: &AudiogenFiles, device: Device, kind: Kind) -> Result<Self, LoadError> {
        let cfg = files.cfg.clone();
        let model_err = |reason: String| LoadError::Model {
            model: files.lm.path().display().to_string(),
            reason,
        };
        let t5_checkpoint = Checkpoint::open(&files.t5_dir)?;
        let mut t5_vs = nn::VarStore::new(device);
        let text_encoder = T5Encoder::new(t5_vs.root(), &cfg.t5).map_err(model_err)?;
        t5_checkpoint.load_into(&mut t5_vs)?;

        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let output_proj = Linear::new(
            &root / "output_proj",
            cfg.t5.d_model,
            cfg.decoder.hidden_size,
            true,
        );
        let mut decoder = MusicgenDecoder::new(&root / "lm", &cfg.decoder, cfg.decoder.hidden_size)
            .map_err(|e| model_err(e.to_string()))?;
        let codec = EncodecDecoder::new(&root / "codec", &cfg.encodec)
            .map_err(|e| model_err(e.to_string()))?;

        let lm_state = files.lm.best_state()?;
        let dim = cfg.decoder.hidden_size;
        let proj = cfg.output_proj_prefix();
        load_from(
            &vs,
            "lm",
            &lm_state,
            files.lm.path(),
            &|var| lm_source(var, dim).into_iter().collect(),
            &|name| name.starts_with(&format!("{proj}.")),
        )?;
        load_from(
            &vs,
            "output_proj",
            &lm_state,
            files.lm.path(),
            &|var| vec![Source::whole(format!("{proj}.{var}"))],
            &|_| true,
        )?;
        let codec_state = files.codec.best_state()?;
        load_from(
            &vs,
            "codec",
            &codec_state,
            files.codec.path(),
            &|var| codec_source(var).into_iter().map(Source::whole).collect(),
            &codec_unused,
        )?;
        if kind != Kind::Float {
            let mut lm = vs.root() / "lm";
            lm.set_kind(kind);
        }
        decoder.fuse().map_err(|e| model_err(e.to_string()))?;
        Ok(Self {
            text_encoder,
            output_proj,
            decoder,
            codec,
            cfg,
            step_mode: StepMode::for_device(device, true),
            _t5_vs: t5_vs,
            _vs: vs,
        })
    }

    pub fn config(&self) -> &AudiogenConfig {
        &self.cfg
    }

    pub fn decoder(&self) -> &MusicgenDecoder {
        &self.decoder
    }

    pub fn step_mode(&self) -> StepMode {
        self.step_mode
    }

    pub fn set_step_mode(&mut self, mode: StepMode) {
        self.step_mode = mode;
    }

    fn on_cpu(&self) -> bool {
        self.decoder.device() == Device::Cpu
    }

    /// T5's last hidden state [batch, len, d_model].
    pub fn encode_text(&self, prompts: &EncodedPrompts) -> Result<Tensor, tch::TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        self.text_encoder
            .forward(&prompts.input_ids, &prompts.attention_mask)
    }

    /// `output_proj(t5) * mask`, as `T5Conditioner.forward` returns it
    /// [batch, len, dim]: padded positions are exactly zero.
    pub fn condition_embeds(&self, prompts: &EncodedPrompts) -> Result<Tensor, tch::TchError> {
        let _guard = tch::no_grad_guard();
        let hidden = self.encode_text(prompts)?;
        let mask = prompts
            .attention_mask
            .f_to_device(hidden.device())?
            .f_to_kind(Kind::Float)?
            .f_unsqueeze(-1)?;
        self.output_proj.forward(&hidden)?.f_mul(&mask)
    }

    /// What the decoder cross-attends: the prompts' embeddings and, with
    /// `guided`, as many null rows (zeros of the same padded length), with
    /// every position attended (audiocraft passes no cross-attention mask).
    pub fn condition(
        &self,
        prompts: &EncodedPrompts,
        guided: bool,
    ) -> Result<Conditioning, tch::TchError> {
        let embeds = self.condition_embeds(prompts)?;
        let states = if guided {
            Tensor::f_cat(&[&embeds, &embeds.f_zeros_like()?], 0)?
        } else {
            embeds
        };
        let (rows, len, _) = states.size3()?;
        let mask = Tensor::f_ones([rows, len], (Kind::Int64, Device::Cpu))?;
        Ok(Conditioning {
            states,
            mask,
            guided,
        })
    }

    /// Teacher-forced logits [rows, codebooks, len, card] for `codes`, one
    /// row per row of `conditioning` (the reference's `lm(codes, conditions)`).
    pub fn logits(
        &self,
        conditioning: &Conditioning,
        codes: &Tensor,
    ) -> Result<Tensor, tch::TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let (_, _, len) = codes.size3()?;
        let mut state = self
            .decoder
            .start(&conditioning.states, &conditioning.mask, len)?;
        self.decoder.forward(codes, &mut state)
    }

    /// Codes [batch, codebooks, frames] for `prompts`.
    pub fn generate(
        &self,
        prompts: &EncodedPrompts,
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerateError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        let conditioning = self.condition(prompts, options.guidance_scale > 1.0)?;
        decode_codes(
            &self.decoder,
            &conditioning,
            frames,
            options,
            self.step_mode,
            on_step,
        )
    }

    /// EnCodec audio [batch, 1, samples] f32 on the CPU.
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, tch::TchError> {
        let _guard = tch::no_grad_guard();
        let _threads = self.on_cpu().then(IntraOpThreads::one);
        self.codec
            .decode(codes)?
            .f_to_kind(Kind::Float)?
            .f_to_device(Device::Cpu)
    }
}

struct Loaded {
    model: AudiogenModel,
    tokenizer: T5Tokenizer,
}

/// AudioGen behind the [`AudioGenerator`] port. `Send + Sync`; one
/// generation runs at a time (libtorch modules are not meant to be driven
/// from two threads at once).
pub struct AudioGenEngine {
    loaded: Mutex<Loaded>,
    info: ModelInfo,
}

impl std::fmt::Debug for AudioGenEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AudioGenEngine")
            .field("info", &self.info)
            .finish()
    }
}

impl AudioGenEngine {
    /// Loads `model`: a local directory with `state_dict.bin` and
    /// `compression_state_dict.bin` (and optionally `t5/`), or a hub id such
    /// as `facebook/audiogen-medium`, found in `cache_dir` or downloaded.
    pub fn load(
        model: &str,
        cache_dir: &Path,
        hub: &HubSettings,
        device: Device,
        kind: Kind,
    ) -> Result<Self, LoadError> {
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16) {
            return Err(LoadError::Model {
                model: model.to_owned(),
                reason: format!("dtype {kind:?} is not supported (use f32, f16 or bf16)"),
            });
        }
        let dir = resolve_repo_files(model, cache_dir, hub, &[LM_FILE, COMPRESSION_FILE])?;
        let files = AudiogenFiles::open(&dir, cache_dir, hub)?;
        let tokenizer_path = files.t5_dir.join(crate::checkpoint::TOKENIZER_FILE);
        let tokenizer = T5Tokenizer::from_file(&tokenizer_path).map_err(|e| LoadError::Model {
            model: tokenizer_path.display().to_string(),
            reason: e.to_string(),
        })?;
        let built = AudiogenModel::load(&files, device, kind)?;
        let cfg = built.config();
        let gpu = cuda::device_name(device);
        let info = ModelInfo {
            name: model.to_owned(),
            sample_rate: cfg.sample_rate(),
            channels: 1,
            frame_rate: cfg.frame_rate() as f64,
            melody: false,
            max_duration: Some(cfg.max_duration()),
            device: device_label(device),
            gpu: gpu.clone(),
            dtype: dtype_label(kind).to_owned(),
        };
        tracing::info!(
            model,
            dir = %dir.display(),
            t5 = %files.t5_dir.display(),
            device = %info.device,
            gpu = gpu.as_deref().unwrap_or("-"),
            dtype = %info.dtype,
            step_mode = ?built.step_mode(),
            "AudioGen loaded"
        );
        Ok(Self {
            loaded: Mutex::new(Loaded {
                model: built,
                tokenizer,
            }),
            info,
        })
    }

    /// Whether decoding steps on CUDA are captured as graphs.
    pub fn set_cuda_graphs(&mut self, on: bool) {
        let device = self.device();
        self.set_step_mode(StepMode::for_device(device, on));
    }

    pub fn set_step_mode(&mut self, mode: StepMode) {
        if let Ok(loaded) = self.loaded.get_mut() {
            loaded.model.set_step_mode(mode);
        }
    }

    pub fn step_mode(&self) -> Option<StepMode> {
        self.loaded.lock().ok().map(|l| l.model.step_mode())
    }

    fn device(&self) -> Device {
        self.loaded
            .lock()
            .map(|l| l.model.decoder().device())
            .unwrap_or(Device::Cpu)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Loaded>, GenerationError> {
        self.loaded
            .lock()
            .map_err(|_| GenerationError::Engine("model lock poisoned".to_owned()))
    }

    /// Runs `f` on the model and tokenizer (tests and the benchmark).
    pub fn with_model<T>(
        &self,
        f: impl FnOnce(&AudiogenModel, &T5Tokenizer) -> T,
    ) -> Result<T, GenerationError> {
        let loaded = self.lock()?;
        Ok(f(&loaded.model, &loaded.tokenizer))
    }

    /// Codes only (no audio) for `prompts`, for the benchmark.
    pub fn generate_codes(
        &self,
        prompts: &[&str],
        frames: i64,
        options: &GenerateOptions,
        on_step: &mut dyn FnMut(usize, usize) -> Continue,
    ) -> Result<Tensor, GenerationError> {
        let loaded = self.lock()?;
        let encoded = loaded
            .tokenizer
            .encode_batch(prompts)
            .map_err(|e| GenerationError::Rejected(e.to_string()))?;
        loaded
            .model
            .generate(&encoded, frames, options, on_step)
            .map_err(generate_error)
    }

    /// EnCodec audio [batch, 1, samples] for `codes`.
    pub fn decode_audio(&self, codes: &Tensor) -> Result<Tensor, GenerationError> {
        let loaded = self.lock()?;
        loaded.model.decode_audio(codes).map_err(torch_error)
    }

    pub fn frames_for(&self, duration: f64) -> i64 {
        (duration * self.info.frame_rate).ceil() as i64
    }

    /// Like [`AudioGenerator::generate`], also returning each clip's codes.
    /// Clips with the same settings share one batched forward pass per step.
    pub fn generate_with_codes(
        &self,
        batch: &[ClipRequest],
        observer: &mut dyn StepObserver,
    ) -> Result<Vec<GeneratedClip>, GenerationError> {
        let max = self.info.max_duration.unwrap_or(f64::INFINITY);
        for request in batch {
            if request.melody.is_some() {
                return Err(GenerationError::Rejected(format!(
                    "model {} does not condition on a melody",
                    self.info.name
                )));
            }
            if !(request.duration.is_finite() && request.duration > 0.0 && request.duration <= max)
            {
                return Err(GenerationError::Rejected(format!(
                    "duration {} s is not in (0, {max}] s, this model's limit",
                    request.duration
                )));
            }
        }
        let groups = group_by_params(batch);
        let loaded = self.lock()?;
        let codebooks = loaded.model.config().decoder.num_codebooks;
        let frames_of = |members: &[usize]| {
            members
                .iter()
                .map(|&i| self.frames_for(batch[i].duration))
                .max()
                .unwrap_or(1)
        };
        let steps_of =
            |members: &[usize]| (frames_of(members).max(codebooks) + codebooks - 1) as usize;
        let total: usize = groups.iter().map(|(_, m)| steps_of(m)).sum();
        let mut results: Vec<Option<GeneratedClip>> = (0..batch.len()).map(|_| None).collect();
        let mut done_before = 0usize;
        for (params, members) in &groups {
            let prompts: Vec<&str> = members.iter().map(|&i| batch[i].prompt.as_str()).collect();
            let encoded = loaded
                .tokenizer
                .encode_batch(&prompts)
                .map_err(|e| GenerationError::Rejected(e.to_string()))?;
            let options = options_for(params, params.seed);
            let mut on_step = batch_progress(observer, done_before, total);
            let codes = loaded
                .model
                .generate(&encoded, frames_of(members), &options, &mut on_step)
                .map_err(generate_error)?;
            done_before += steps_of(members);
            let audio = loaded.model.decode_audio(&codes).map_err(torch_error)?;
            for (row, &i) in members.iter().enumerate() {
                let slot = ClipSlot {
                    row: row as i64,
                    request: &batch[i],
                    frames: self.frames_for(batch[i].duration),
                    sample_rate: self.info.sample_rate,
                    channels: 1,
                };
                results[i] = Some(cut_clip(&audio, &codes, &slot)?);
            }
        }
        all_generated(results)
    }
}

audio_generator_port!(AudioGenEngine);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audiocraft_lm_names_map_onto_the_decoder_with_q_k_v_rows() {
        let src = |v: &str| lm_source(v, 64);
        assert_eq!(
            src("model.decoder.layers.3.self_attn.k_proj.weight"),
            Some(Source {
                name: "transformer.layers.3.self_attn.in_proj_weight".into(),
                rows: Some((64, 64)),
            })
        );
        assert_eq!(
            src("model.decoder.layers.0.encoder_attn.v_proj.weight").map(|s| (s.name, s.rows)),
            Some((
                "transformer.layers.0.cross_attention.in_proj_weight".into(),
                Some((128, 64))
            ))
        );
        for (var, stored) in [
            ("model.decoder.embed_tokens.2.weight", "emb.2.weight"),
            ("lm_heads.1.weight", "linears.1.weight"),
            ("model.decoder.layer_norm.bias", "out_norm.bias"),
            (
                "model.decoder.layers.1.self_attn.out_proj.weight",
                "transformer.layers.1.self_attn.out_proj.weight",
            ),
            (
                "model.decoder.layers.1.encoder_attn.out_proj.weight",
                "transformer.layers.1.cross_attention.out_proj.weight",
            ),
            (
                "model.decoder.layers.1.self_attn_layer_norm.weight",
                "transformer.layers.1.norm1.weight",
            ),
            (
                "model.decoder.layers.1.encoder_attn_layer_norm.bias",
                "transformer.layers.1.norm_cross.bias",
            ),
            (
                "model.decoder.layers.1.final_layer_norm.weight",
                "transformer.layers.1.norm2.weight",
            ),
            (
                "model.decoder.layers.1.fc1.weight",
                "transformer.layers.1.linear1.weight",
            ),
            (
                "model.decoder.layers.1.fc2.weight",
                "transformer.layers.1.linear2.weight",
            ),
        ] {
            assert_eq!(src(var), Some(Source::whole(stored.into())), "{var}");
        }
        assert_eq!(src("model.decoder.layers.1.mystery.weight"), None);
    }

    #[test]
    fn codec_names_unwrap_audiocraft_s_double_modules() {
        assert_eq!(
            codec_source("decoder.layers.3.conv.weight_g"),
            vec![
                "decoder.model.3.conv.conv.weight_g".to_owned(),
                "decoder.model.3.convtr.convtr.weight_g".to_owned()
            ]
        );
        assert_eq!(
            codec_source("decoder.layers.4.block.1.conv.bias"),
            vec!["decoder.model.4.block.1.conv.conv.bias".to_owned()]
        );
        assert_eq!(
            codec_source("quantizer.layers.2.codebook.embed"),
            vec!["quantizer.vq.layers.2._codebook.embed".to_owned()]
        );
        assert_eq!(
            codec_source("decoder.layers.1.lstm.weight_ih_l0"),
            vec!["decoder.model.1.lstm.weight_ih_l0".to_owned()]
        );
        assert!(codec_unused("encoder.model.0.conv.conv.bias"));
        assert!(codec_unused("quantizer.vq.layers.0._codebook.embed_avg"));
        assert!(!codec_unused("quantizer.vq.layers.0._codebook.embed"));
    }

    #[test]
    fn legacy_t5_ids_live_under_google_t5() {
        assert_eq!(t5_repo("t5-large"), "google-t5/t5-large");
        assert_eq!(t5_repo("google/flan-t5-base"), "google/flan-t5-base");
    }
}
