//! The hyperparameters of an AudioCraft checkpoint, read from its `xp.cfg`.
//!
//! audiocraft's `state_dict.bin` and `compression_state_dict.bin` each carry
//! the training run's Hydra config as an OmegaConf YAML string (`xp.cfg`,
//! written by `OmegaConf.to_yaml`, so *unresolved*: values such as
//! `sample_rate: ${sample_rate}` or `causal: ${encodec.causal}` point at other
//! keys). audiocraft rebuilds its models from that config
//! (`models/builders.py`), and so do we: [`LmConfig`] is what
//! `get_lm_model` reads, [`CompressionConfig`] what `get_compression_model`
//! reads, each field named as its key, with audiocraft's own defaults where
//! a key may be absent. This module must never guess a size: a key the model
//! needs that is missing, mistyped or left mandatory (`???`) is a one-line
//! [`XpConfigError`] naming the key.
//!
//! The YAML is parsed with `yaml-rust2` (maintained, pure Rust, YAML 1.2;
//! serde_yaml is archived) into a JSON tree, OmegaConf interpolations are
//! resolved in it, and serde then fills the typed structs
//! (`serde_path_to_error` names the failing key).

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Number, Value as Json};
use yaml_rust2::{Yaml, YamlLoader};

/// Why an `xp.cfg` could not be turned into a model config; the key is the
/// dotted path in the YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("xp.cfg `{key}`: {reason}")]
pub struct XpConfigError {
    pub key: String,
    pub reason: String,
}

fn error<T>(key: &str, reason: impl Into<String>) -> Result<T, XpConfigError> {
    Err(XpConfigError {
        key: key.to_owned(),
        reason: reason.into(),
    })
}

/// How deep interpolations may chain (`a: ${b}`, `b: ${c}`, ...) before the
/// config is taken to be cyclic.
const MAX_INTERPOLATION_DEPTH: usize = 32;
/// How deep the YAML may nest; Hydra configs are a handful of levels.
const MAX_NESTING: usize = 64;
/// How many values resolving one config may produce in all. A reference to a
/// subtree copies it, so a hostile config could otherwise ask for
/// exponential work; a Hydra config has about a thousand values.
const MAX_RESOLVED_VALUES: usize = 1_000_000;

/// An `xp.cfg` parsed and with its interpolations resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct XpConfig {
    root: Json,
}

impl XpConfig {
    /// Parses the YAML text of `xp.cfg`.
    pub fn parse(yaml: &str) -> Result<Self, XpConfigError> {
        let docs = match YamlLoader::load_from_str(yaml) {
            Ok(docs) => docs,
            Err(e) => return error("", format!("not valid YAML: {e}")),
        };
        let Some(doc) = docs.into_iter().next() else {
            return error("", "the YAML document is empty");
        };
        let raw = yaml_to_json(&doc, "", 0)?;
        if !raw.is_object() {
            return error("", "the YAML document is not a mapping");
        }
        let mut budget = MAX_RESOLVED_VALUES;
        let root = resolve(&raw, &raw, "", 0, &mut budget)?;
        Ok(XpConfig { root })
    }

    /// The resolved value at a dotted key, if present.
    pub fn get(&self, key: &str) -> Option<&Json> {
        lookup(&self.root, key)
    }

    /// Deserializes the value at `key` (or the whole config for `""`).
    pub fn section<T: DeserializeOwned>(&self, key: &str) -> Result<T, XpConfigError> {
        let value = if key.is_empty() {
            Some(&self.root)
        } else {
            self.get(key)
        };
        let Some(value) = value else {
            return error(key, "missing");
        };
        let de = value.clone();
        serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.path().to_string();
            let full = match (key.is_empty(), inner == ".") {
                (true, _) => inner,
                (false, true) => key.to_owned(),
                (false, false) => format!("{key}.{inner}"),
            };
            let reason = e.into_inner().to_string();
            let reason = if reason.contains("\"???\"") {
                format!("{reason} (the training config left it mandatory: ???)")
            } else {
                reason
            };
            XpConfigError { key: full, reason }
        })
    }

    /// The whole resolved tree, as JSON.
    pub fn as_json(&self) -> &Json {
        &self.root
    }
}

fn lookup<'a>(root: &'a Json, key: &str) -> Option<&'a Json> {
    key.split('.').try_fold(root, |node, part| match node {
        Json::Object(map) => map.get(part),
        Json::Array(items) => part.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

fn yaml_to_json(y: &Yaml, key: &str, depth: usize) -> Result<Json, XpConfigError> {
    if depth > MAX_NESTING {
        return error(key, format!("nested deeper than {MAX_NESTING} levels"));
    }
    let child = |k: &str| {
        if key.is_empty() {
            k.to_owned()
        } else {
            format!("{key}.{k}")
        }
    };
    Ok(match y {
        Yaml::Null => Json::Null,
        Yaml::Boolean(b) => Json::Bool(*b),
        Yaml::Integer(i) => Json::Number((*i).into()),
        Yaml::Real(text) => match y.as_f64().and_then(Number::from_f64) {
            Some(n) => Json::Number(n),
            // .inf / .nan have no JSON number; keep the text.
            None => Json::String(text.clone()),
        },
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Array(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| yaml_to_json(item, &child(&i.to_string()), depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let name = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    Yaml::Null => "null".to_owned(),
                    _ => return error(key, "a mapping key is not a scalar"),
                };
                let value = yaml_to_json(v, &child(&name), depth + 1)?;
                out.insert(name, value);
            }
            Json::Object(out)
        }
        Yaml::Alias(_) => return error(key, "YAML aliases are not supported"),
        Yaml::BadValue => return error(key, "unreadable YAML value"),
    })
}

/// Replaces OmegaConf interpolations. A string that is exactly `${a.b}`
/// takes the referenced value with its type (as OmegaConf does); one with
/// `${...}` inside text gets the values' text spliced in. Relative keys
/// (`${.x}`, `${..x}`) are resolved from the key's parent. Resolver calls
/// (`${oc.env:USER}`) and references to absent keys are left as written:
/// only keys a model reads matter, and those then fail typed
/// deserialization with the unresolved text in the message.
fn resolve(
    node: &Json,
    root: &Json,
    key: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Json, XpConfigError> {
    if depth > MAX_INTERPOLATION_DEPTH {
        return error(key, "interpolations chain too deep (a cycle?)");
    }
    if *budget == 0 {
        return error(
            key,
            format!("resolving interpolations gives more than {MAX_RESOLVED_VALUES} values"),
        );
    }
    *budget -= 1;
    Ok(match node {
        Json::String(s) if s.contains("${") => resolve_string(s, root, key, depth, budget)?,
        Json::Array(items) => Json::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, item)| resolve(item, root, &join(key, &i.to_string()), depth, budget))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                out.insert(k.clone(), resolve(v, root, &join(key, k), depth, budget)?);
            }
            Json::Object(out)
        }
        other => other.clone(),
    })
}

fn join(key: &str, child: &str) -> String {
    if key.is_empty() {
        child.to_owned()
    } else {
        format!("{key}.{child}")
    }
}

fn resolve_string(
    s: &str,
    root: &Json,
    key: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Json, XpConfigError> {
    // The whole string is one reference: keep the target's type.
    if let Some(inner) = s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
        if !inner.contains("${") && !inner.contains('}') {
            return Ok(match reference(inner, root, key, depth, budget)? {
                Some(v) => v,
                None => Json::String(s.to_owned()),
            });
        }
    }
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let inner = &after[..end];
        match reference(inner, root, key, depth, budget)? {
            Some(Json::String(text)) => out.push_str(&text),
            Some(Json::Null) => out.push_str("None"),
            Some(v @ (Json::Bool(_) | Json::Number(_))) => out.push_str(&v.to_string()),
            // Containers and unresolvable references stay as written.
            _ => {
                out.push_str("${");
                out.push_str(inner);
                out.push('}');
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Json::String(out))
}

/// The resolved value of `${inner}` seen from `key`, or `None` when it is a
/// resolver call or names nothing.
fn reference(
    inner: &str,
    root: &Json,
    key: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Option<Json>, XpConfigError> {
    let inner = inner.trim();
    if inner.contains(':') || inner.is_empty() {
        return Ok(None);
    }
    let target = if let Some(rel) = inner.strip_prefix('.') {
        // `.x` is a sibling of `key`; each further dot goes one level up.
        let ups = rel.chars().take_while(|&c| c == '.').count();
        let rel = &rel[ups..];
        let mut parts: Vec<&str> = key.split('.').collect();
        parts.pop();
        for _ in 0..ups {
            if parts.pop().is_none() {
                return Ok(None);
            }
        }
        let base = parts.join(".");
        join(&base, rel)
    } else {
        inner.to_owned()
    };
    match lookup(root, &target) {
        Some(value) => resolve(value, root, &target, depth + 1, budget).map(Some),
        None => Ok(None),
    }
}

fn one() -> i64 {
    1
}
fn yes() -> bool {
    true
}
fn four_f64() -> f64 {
    4.0
}
fn ten_thousand() -> f64 {
    10_000.0
}
fn one_f64() -> f64 {
    1.0
}
fn gelu() -> String {
    "gelu".to_owned()
}
fn layer_norm() -> String {
    "layer_norm".to_owned()
}
fn sin() -> String {
    "sin".to_owned()
}

/// `transformer_lm`: the LM's sizes and layer options, as `LMModel` and
/// `StreamingTransformer` take them; defaults are those classes' defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TransformerLmConfig {
    pub dim: i64,
    pub num_heads: i64,
    pub num_layers: i64,
    /// Feed-forward width is `int(hidden_scale * dim)`.
    #[serde(default = "four_f64")]
    pub hidden_scale: f64,
    /// Number of codebooks (streams) modelled.
    pub n_q: i64,
    /// Codebook size; the special (pad/start) token is `card`.
    pub card: i64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "gelu")]
    pub activation: String,
    #[serde(default)]
    pub norm_first: bool,
    #[serde(default = "layer_norm")]
    pub norm: String,
    #[serde(default = "yes")]
    pub bias_ff: bool,
    #[serde(default = "yes")]
    pub bias_attn: bool,
    #[serde(default = "yes")]
    pub bias_proj: bool,
    #[serde(default)]
    pub past_context: Option<i64>,
    #[serde(default = "yes")]
    pub causal: bool,
    #[serde(default)]
    pub custom: bool,
    #[serde(default)]
    pub memory_efficient: bool,
    #[serde(default)]
    pub attention_as_float32: bool,
    #[serde(default)]
    pub layer_scale: Option<f64>,
    /// `sin`, `rope` or `sin_rope`.
    #[serde(default = "sin")]
    pub positional_embedding: String,
    #[serde(default = "ten_thousand")]
    pub max_period: f64,
    #[serde(default = "one_f64")]
    pub positional_scale: f64,
    #[serde(default)]
    pub xpos: bool,
    /// Forced on by the builder when the fuser cross-attends a condition;
    /// see [`LmConfig::cross_attention`].
    #[serde(default)]
    pub cross_attention: bool,
    #[serde(default)]
    pub qk_layer_norm: bool,
    #[serde(default)]
    pub qk_layer_norm_cross: bool,
    #[serde(default = "one")]
    pub kv_repeat: i64,
    #[serde(default)]
    pub two_step_cfg: bool,
}

impl TransformerLmConfig {
    /// The feed-forward width, `int(hidden_scale * dim)` as audiocraft computes it.
    pub fn ffn_dim(&self) -> i64 {
        (self.hidden_scale * self.dim as f64) as i64
    }
}

/// `codebooks_pattern`: how the codebooks are interleaved in time.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CodebooksPatternConfig {
    /// `delay`, `parallel`, `unroll`, `coarse_first`, `musiclm` or null
    /// (then `transformer_lm.q_modeling` decides).
    pub modeling: Option<String>,
    #[serde(default)]
    pub delay: Option<DelayPatternConfig>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DelayPatternConfig {
    pub delays: Vec<i64>,
    #[serde(default)]
    pub flatten_first: i64,
    #[serde(default)]
    pub empty_initial: i64,
}

/// One entry of `conditioners`: `model` names the kind, and the section of
/// that name holds its arguments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ConditionerConfig {
    pub model: String,
    #[serde(default)]
    pub t5: Option<T5ConditionerConfig>,
}

/// `conditioners.<name>.t5`: audiocraft's `T5Conditioner` arguments.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct T5ConditionerConfig {
    /// A Hugging Face hub id (`t5-base`, `t5-large`, `google/flan-t5-*`).
    pub name: String,
    #[serde(default)]
    pub finetune: bool,
    #[serde(default)]
    pub word_dropout: f64,
    #[serde(default)]
    pub normalize_text: bool,
}

/// `fuser`: how each condition enters the LM.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct FuserConfig {
    #[serde(default)]
    pub cross_attention_pos_emb: bool,
    #[serde(default = "one_f64")]
    pub cross_attention_pos_emb_scale: f64,
    #[serde(default)]
    pub sum: Vec<String>,
    #[serde(default)]
    pub prepend: Vec<String>,
    #[serde(default)]
    pub cross: Vec<String>,
    #[serde(default)]
    pub input_interpolate: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClassifierFreeGuidanceConfig {
    #[serde(default)]
    pub training_dropout: f64,
    /// The guidance scale audiocraft generates with by default.
    pub inference_coef: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DatasetConfig {
    /// Length of the training clips: AudioGen's and MusicGen's maximum
    /// duration without windowing.
    pub segment_duration: f64,
}

/// `generate.lm`: the sampling settings of the training run's samples.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct GenerateLmConfig {
    #[serde(default)]
    pub use_sampling: bool,
    #[serde(default = "one_f64")]
    pub temp: f64,
    #[serde(default)]
    pub top_k: i64,
    #[serde(default)]
    pub top_p: f64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct InterleaveStereoConfig {
    #[serde(rename = "use", default)]
    pub enabled: bool,
    #[serde(default)]
    pub per_timestep: bool,
}

/// What `builders.get_lm_model` reads from the LM's `xp.cfg`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LmConfig {
    pub lm_model: String,
    pub transformer_lm: TransformerLmConfig,
    pub codebooks_pattern: CodebooksPatternConfig,
    #[serde(default)]
    pub conditioners: std::collections::BTreeMap<String, ConditionerConfig>,
    pub fuser: FuserConfig,
    pub classifier_free_guidance: ClassifierFreeGuidanceConfig,
    pub dataset: DatasetConfig,
    pub sample_rate: u32,
    pub channels: u32,
    #[serde(default)]
    pub compression_model_n_q: Option<i64>,
    #[serde(default)]
    pub interleave_stereo_codebooks: Option<InterleaveStereoConfig>,
}

impl LmConfig {
    /// Reads and checks the LM config of an `xp.cfg`.
    pub fn from_yaml(yaml: &str) -> Result<Self, XpConfigError> {
        let xp = XpConfig::parse(yaml)?;
        let cfg: LmConfig = xp.section("")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The text conditioner's T5 settings: the conditioner the fuser
    /// cross-attends (`description` in AudioGen and MusicGen).
    pub fn t5_conditioner(&self) -> Result<(&str, &T5ConditionerConfig), XpConfigError> {
        for name in &self.fuser.cross {
            if let Some(c) = self.conditioners.get(name) {
                if let Some(t5) = &c.t5 {
                    if c.model == "t5" {
                        return Ok((name, t5));
                    }
                }
            }
        }
        error(
            "conditioners",
            "no T5 conditioner is cross-attended (fuser.cross)",
        )
    }

    /// audiocraft turns cross-attention on whenever the fuser has a
    /// cross-attended condition, whatever `transformer_lm.cross_attention` says.
    pub fn cross_attention(&self) -> bool {
        self.transformer_lm.cross_attention || !self.fuser.cross.is_empty()
    }

    /// The per-codebook delays of the delay pattern (`[0, 1, 2, 3]` for 4
    /// codebooks).
    pub fn delays(&self) -> Result<Vec<i64>, XpConfigError> {
        match (
            self.codebooks_pattern.modeling.as_deref(),
            &self.codebooks_pattern.delay,
        ) {
            (Some("delay"), Some(d)) => Ok(d.delays.clone()),
            (Some("delay"), None) => Ok((0..self.transformer_lm.n_q).collect()),
            (other, _) => error(
                "codebooks_pattern.modeling",
                format!("{other:?} is not supported; only the delay pattern is"),
            ),
        }
    }

    fn validate(&self) -> Result<(), XpConfigError> {
        let t = &self.transformer_lm;
        if self.lm_model != "transformer_lm" {
            return error("lm_model", format!("{:?} is not supported", self.lm_model));
        }
        for (key, v) in [
            ("transformer_lm.dim", t.dim),
            ("transformer_lm.num_heads", t.num_heads),
            ("transformer_lm.num_layers", t.num_layers),
            ("transformer_lm.n_q", t.n_q),
            ("transformer_lm.card", t.card),
            ("transformer_lm.kv_repeat", t.kv_repeat),
        ] {
            if v <= 0 {
                return error(key, format!("must be positive, is {v}"));
            }
        }
        if t.dim % t.num_heads != 0 {
            return error(
                "transformer_lm.num_heads",
                format!("{} does not divide dim {}", t.num_heads, t.dim),
            );
        }
        if t.ffn_dim() <= 0 {
            return error("transformer_lm.hidden_scale", "gives no feed-forward width");
        }
        let delays = self.delays()?;
        if delays.len() as i64 != t.n_q {
            return error(
                "codebooks_pattern.delay.delays",
                format!("has {} delays for {} codebooks", delays.len(), t.n_q),
            );
        }
        if self.sample_rate == 0 {
            return error("sample_rate", "must be positive");
        }
        let duration = self.dataset.segment_duration;
        if duration.is_nan() || duration <= 0.0 {
            return error("dataset.segment_duration", "must be positive");
        }
        Ok(())
    }
}

/// `encodec`: the compression model's top-level options.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct EncodecSection {
    pub autoencoder: String,
    pub quantizer: String,
    pub sample_rate: u32,
    pub channels: u32,
    #[serde(default)]
    pub causal: bool,
    #[serde(default)]
    pub renormalize: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ActivationParams {
    #[serde(default = "one_f64")]
    pub alpha: f64,
}

impl Default for ActivationParams {
    fn default() -> Self {
        ActivationParams { alpha: 1.0 }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
pub struct SeanetDecoderOverrides {
    #[serde(default)]
    pub trim_right_ratio: Option<f64>,
    #[serde(default)]
    pub final_activation: Option<String>,
}

/// `seanet`: the SEANet encoder/decoder (audiocraft `modules/seanet.py`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SeanetConfig {
    pub dimension: i64,
    pub channels: u32,
    #[serde(default)]
    pub causal: bool,
    pub n_filters: i64,
    #[serde(default = "one")]
    pub n_residual_layers: i64,
    /// Encoder downsampling ratios; the decoder upsamples in reverse order.
    pub ratios: Vec<i64>,
    #[serde(default = "elu")]
    pub activation: String,
    #[serde(default)]
    pub activation_params: ActivationParams,
    /// `weight_norm`, `none`, ...
    pub norm: String,
    #[serde(default = "seven")]
    pub kernel_size: i64,
    #[serde(default = "three")]
    pub residual_kernel_size: i64,
    #[serde(default = "seven")]
    pub last_kernel_size: i64,
    #[serde(default = "two")]
    pub dilation_base: i64,
    /// audiocraft's default is `constant` (zero padding), unlike the
    /// `reflect` of transformers' 32 kHz EnCodec config.
    #[serde(default = "reflect")]
    pub pad_mode: String,
    /// An identity skip in the residual blocks (no shortcut convolution).
    #[serde(default = "yes")]
    pub true_skip: bool,
    #[serde(default = "two")]
    pub compress: i64,
    /// Number of LSTM layers (0: none).
    #[serde(default = "two")]
    pub lstm: i64,
    #[serde(default)]
    pub disable_norm_outer_blocks: i64,
    #[serde(default)]
    pub decoder: SeanetDecoderOverrides,
}

impl SeanetConfig {
    /// Samples per codec frame: the product of the ratios.
    pub fn hop_length(&self) -> i64 {
        self.ratios.iter().product()
    }

    pub fn trim_right_ratio(&self) -> f64 {
        self.decoder.trim_right_ratio.unwrap_or(1.0)
    }
}

fn elu() -> String {
    "ELU".to_owned()
}
fn reflect() -> String {
    "reflect".to_owned()
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

/// `rvq`: the residual vector quantizer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RvqConfig {
    pub n_q: i64,
    /// Codebook size.
    pub bins: i64,
    #[serde(default)]
    pub q_dropout: bool,
}

/// What `builders.get_compression_model` reads from the codec's `xp.cfg`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct CompressionConfig {
    pub compression_model: String,
    pub encodec: EncodecSection,
    pub seanet: SeanetConfig,
    pub rvq: RvqConfig,
}

impl CompressionConfig {
    pub fn from_yaml(yaml: &str) -> Result<Self, XpConfigError> {
        let xp = XpConfig::parse(yaml)?;
        let cfg: CompressionConfig = xp.section("")?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn sample_rate(&self) -> u32 {
        self.encodec.sample_rate
    }

    /// Codec frames per second: `sample_rate // hop_length`, as the builder computes it.
    pub fn frame_rate(&self) -> i64 {
        i64::from(self.encodec.sample_rate) / self.seanet.hop_length()
    }

    fn validate(&self) -> Result<(), XpConfigError> {
        if self.compression_model != "encodec" {
            return error(
                "compression_model",
                format!("{:?} is not supported", self.compression_model),
            );
        }
        if self.encodec.autoencoder != "seanet" {
            return error("encodec.autoencoder", "only seanet is supported");
        }
        if self.encodec.quantizer != "rvq" {
            return error("encodec.quantizer", "only rvq is supported");
        }
        let s = &self.seanet;
        if s.ratios.is_empty() || s.ratios.iter().any(|&r| r <= 0) {
            return error(
                "seanet.ratios",
                format!("{:?} are not positive ratios", s.ratios),
            );
        }
        if s.ratios
            .iter()
            .try_fold(1i64, |a, &r| a.checked_mul(r))
            .is_none()
        {
            return error("seanet.ratios", "their product overflows");
        }
        for (key, v) in [
            ("seanet.dimension", s.dimension),
            ("seanet.n_filters", s.n_filters),
            ("seanet.kernel_size", s.kernel_size),
            ("seanet.last_kernel_size", s.last_kernel_size),
            ("seanet.residual_kernel_size", s.residual_kernel_size),
            ("rvq.n_q", self.rvq.n_q),
            ("rvq.bins", self.rvq.bins),
        ] {
            if v <= 0 {
                return error(key, format!("must be positive, is {v}"));
            }
        }
        if !matches!(
            s.pad_mode.as_str(),
            "constant" | "reflect" | "replicate" | "circular"
        ) {
            return error(
                "seanet.pad_mode",
                format!("{:?} is not a padding mode", s.pad_mode),
            );
        }
        if self.encodec.sample_rate == 0 || self.frame_rate() == 0 {
            return error("encodec.sample_rate", "gives no whole frame per second");
        }
        if s.channels != self.encodec.channels {
            return error(
                "seanet.channels",
                format!(
                    "{} but encodec.channels is {}",
                    s.channels, self.encodec.channels
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolations_take_the_referenced_type_and_relative_keys_work() {
        let xp = XpConfig::parse(
            "sample_rate: 16000\nencodec:\n  sample_rate: ${sample_rate}\n  causal: false\n\
             seanet:\n  causal: ${encodec.causal}\n  here: ${.causal}\n  up: ${..sample_rate}\n\
             dora:\n  dir: /checkpoint/${oc.env:USER}/x/${sample_rate}\n",
        )
        .unwrap();
        assert_eq!(xp.get("encodec.sample_rate"), Some(&Json::from(16000)));
        assert_eq!(xp.get("seanet.causal"), Some(&Json::Bool(false)));
        assert_eq!(xp.get("seanet.here"), Some(&Json::Bool(false)));
        assert_eq!(xp.get("seanet.up"), Some(&Json::from(16000)));
        assert_eq!(
            xp.get("dora.dir"),
            Some(&Json::from("/checkpoint/${oc.env:USER}/x/16000"))
        );
    }

    #[test]
    fn a_cycle_is_an_error_not_a_hang() {
        let err = XpConfig::parse("a: ${b}\nb: ${a}\n").unwrap_err();
        assert!(err.reason.contains("too deep"), "{err}");
    }

    #[test]
    fn a_missing_or_mistyped_key_is_named() {
        let err = LmConfig::from_yaml("lm_model: transformer_lm\n").unwrap_err();
        assert!(err.to_string().starts_with("xp.cfg `"), "{err}");
        assert!(err.reason.contains("missing field"), "{err}");

        let err = XpConfig::parse("transformer_lm:\n  dim: big\n")
            .unwrap()
            .section::<TransformerLmConfig>("transformer_lm")
            .unwrap_err();
        assert_eq!(err.key, "transformer_lm.dim");

        let err = XpConfig::parse("sample_rate: ???\n")
            .unwrap()
            .section::<EncodecSection>("")
            .unwrap_err();
        assert!(!err.key.is_empty());
    }

    #[test]
    fn exponential_references_hit_the_budget() {
        let mut yaml = String::new();
        for i in 0..40 {
            yaml.push_str(&format!("x{i}:\n- ${{x{}}}\n- ${{x{}}}\n", i + 1, i + 1));
        }
        yaml.push_str("x40: 1\n");
        let err = XpConfig::parse(&yaml).unwrap_err();
        assert!(err.reason.contains("interpolations"), "{err}");
    }

    #[test]
    fn invalid_yaml_is_an_error() {
        assert!(XpConfig::parse("a: [1, 2\n").is_err());
        assert!(XpConfig::parse("").is_err());
        assert!(XpConfig::parse("- 1\n- 2\n").is_err());
    }
}
