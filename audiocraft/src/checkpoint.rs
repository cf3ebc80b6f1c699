//! Loading a Hugging Face MusicGen checkpoint directory into a `tch` `VarStore`.
//!
//! A checkpoint directory is what `save_pretrained` writes and what the hub
//! serves: `config.json`, the weights as `model.safetensors` (or
//! `model.safetensors.index.json` plus its shards) and the T5 `tokenizer.json`.
//! [`Checkpoint::open`] checks all of that up front, reading only each
//! safetensors header, so a truncated download or a missing shard is reported
//! before any model is built; [`Checkpoint::load_into`] then copies tensors
//! one at a time into the variables a model created, so the process never holds
//! more than the model plus one tensor in flight (the real musicgen-small is
//! ~2.4 GB in f32). Nothing here panics on a bad file: every failure is a
//! one-line [`LoadError`] that names the file and, where there is one, the tensor.
//!
//! Finding or downloading the directory for a hub id lives in [`crate::hub`];
//! [`resolve_model_dir`] is re-exported here because callers reach for both
//! together.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};
use tch::{Kind, Tensor};

use crate::safetensors_header;

pub use crate::hub::resolve_model_dir;

/// Name of the single-file weights.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Name of the shard index of sharded weights.
pub const WEIGHTS_INDEX_FILE: &str = "model.safetensors.index.json";
/// Name of the model configuration.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the (fast) tokenizer definition.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

/// Why a checkpoint could not be found, read or loaded. Each message is one
/// line and names the file (and tensor) at fault, because it ends up in job
/// logs where nobody can attach a debugger.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: not found")]
    NotFound { path: PathBuf },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: invalid JSON for this model: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error(
        "{dir}: no weights: expected {WEIGHTS_FILE} or {WEIGHTS_INDEX_FILE} \
         (PyTorch .bin checkpoints are not supported; re-save with safe_serialization=True)"
    )]
    NoWeights { dir: PathBuf },

    #[error("{path}: not a valid safetensors file ({reason}); it may be truncated or corrupt, delete it and download it again")]
    Corrupt { path: PathBuf, reason: String },

    #[error("tensor `{name}` not found in {searched}")]
    MissingTensor { name: String, searched: String },

    #[error("{path}: tensor `{name}` has shape {found:?} but the model expects {expected:?} (config.json and weights disagree?)")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },

    #[error("{path}: tensor `{name}` has dtype {dtype}, which cannot be loaded")]
    Dtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },

    #[error("{path}: tensor `{name}`: {message}")]
    Tensor {
        path: PathBuf,
        name: String,
        message: String,
    },

    #[error("{model}: {reason}")]
    Model { model: String, reason: String },

    #[error(
        "cannot download {url}: {reason}; to run without network, download the model's files once \
         and point its setting (MUSIC_GEN_MODEL, AUDIO_GEN_MODEL, or --model) at the local directory holding them"
    )]
    Download { url: String, reason: String },
}

impl LoadError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            LoadError::NotFound {
                path: path.to_path_buf(),
            }
        } else {
            LoadError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// One safetensors file whose header has been read and checked.
#[derive(Debug)]
struct WeightFile {
    path: PathBuf,
    /// Byte offset of the tensor data (8 bytes of length + the header).
    data_start: u64,
    metadata: Metadata,
}

impl WeightFile {
    /// Reads and validates the header the way `SafeTensors::read_metadata`
    /// does, without reading the (gigabytes of) tensor data behind it.
    fn open(path: &Path) -> Result<Self, LoadError> {
        let corrupt = |reason: String| LoadError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let file_len = file.metadata().map_err(|e| LoadError::io(path, e))?.len();

        let mut len_bytes = [0u8; 8];
        if file_len >= 8 {
            file.read_exact(&mut len_bytes)
                .map_err(|e| LoadError::io(path, e))?;
        }
        let header_len = safetensors_header::header_len(len_bytes, file_len).map_err(corrupt)?;
        let mut header = vec![0u8; header_len as usize];
        file.read_exact(&mut header)
            .map_err(|e| LoadError::io(path, e))?;
        let metadata = safetensors_header::metadata(&header, file_len).map_err(corrupt)?;
        let data_start = 8 + header_len;
        Ok(WeightFile {
            path: path.to_path_buf(),
            data_start,
            metadata,
        })
    }
}

/// Shard index: only `weight_map` matters, for the list of shard files.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

/// A checkpoint directory whose config and safetensors headers have been
/// read and checked.
#[derive(Debug)]
pub struct Checkpoint {
    dir: PathBuf,
    config: serde_json::Value,
    files: Vec<WeightFile>,
    /// Tensor name -> index into `files`, built from the headers themselves
    /// (not from the shard index, which could be stale).
    by_name: HashMap<String, usize>,
}

impl Checkpoint {
    /// Opens a checkpoint directory: `config.json` must parse and every
    /// safetensors file must have a sound header.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        if !dir.is_dir() {
            return Err(LoadError::NotFound {
                path: dir.to_path_buf(),
            });
        }
        let config_path = dir.join(CONFIG_FILE);
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| LoadError::io(&config_path, e))?;
        let config: serde_json::Value =
            serde_json::from_str(&config_text).map_err(|source| LoadError::Json {
                path: config_path.clone(),
                source,
            })?;

        let weight_paths = weight_files(dir)?;
        let mut files = Vec::with_capacity(weight_paths.len());
        let mut by_name = HashMap::new();
        for path in weight_paths {
            let file = WeightFile::open(&path)?;
            for name in file.metadata.tensors().into_keys() {
                if let Some(previous) = by_name.insert(name.clone(), files.len()) {
                    let previous: &WeightFile = &files[previous];
                    tracing::warn!(
                        tensor = %name,
                        first = %previous.path.display(),
                        second = %path.display(),
                        "tensor stored in two shards; using the second"
                    );
                }
            }
            files.push(file);
        }
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            config,
            files,
            by_name,
        })
    }

    /// The directory this checkpoint was opened from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `config.json` (or a part of it, e.g. the `audio_encoder` section through
    /// a wrapper struct) deserialised into `T`.
    pub fn config<T: serde::de::DeserializeOwned>(&self) -> Result<T, LoadError> {
        T::deserialize(&self.config).map_err(|source| LoadError::Json {
            path: self.dir.join(CONFIG_FILE),
            source,
        })
    }

    /// Whether the weights hold a tensor of this exact name; lets a model pick
    /// between optional layouts (e.g. tied or separate output heads).
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// All tensor names in the weights, in no particular order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    /// Path of `tokenizer.json`.
    pub fn tokenizer_file(&self) -> Result<PathBuf, LoadError> {
        let path = self.dir.join(TOKENIZER_FILE);
        if path.is_file() {
            Ok(path)
        } else {
            Err(LoadError::NotFound { path })
        }
    }

    /// Copies every variable of `vs` from the weights.
    ///
    /// Each variable must exist under its own name (or, for weight-norm
    /// factors, under the other spelling `torch` uses, see
    /// [`weight_norm_alias`]) with exactly the variable's shape. The stored
    /// dtype may differ: f16/bf16 weights are converted to the variable's kind.
    /// Tensors the model did not ask for, such as the EnCodec encoder that
    /// MusicGen never runs, are skipped and listed at debug level.
    pub fn load_into(&self, vs: &mut tch::nn::VarStore) -> Result<(), LoadError> {
        let _no_grad = tch::no_grad_guard();
        let mut handles: Vec<Option<File>> = (0..self.files.len()).map(|_| None).collect();
        let mut used = BTreeSet::new();
        let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        // Sorted so that the first error is the same on every run.
        variables.sort_by(|a, b| a.0.cmp(&b.0));

        for (name, mut var) in variables {
            let (stored_name, file_index) = self.locate(&name)?;
            let weights = &self.files[file_index];
            let info = weights
                .metadata
                .info(&stored_name)
                .ok_or_else(|| LoadError::Tensor {
                    path: weights.path.clone(),
                    name: stored_name.clone(),
                    message: "listed in the header index but has no entry".to_owned(),
                })?;
            let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            let expected = var.size();
            if found != expected {
                return Err(LoadError::Shape {
                    path: weights.path.clone(),
                    name: stored_name,
                    expected,
                    found,
                });
            }
            let kind = kind_of(info.dtype).ok_or_else(|| LoadError::Dtype {
                path: weights.path.clone(),
                name: stored_name.clone(),
                dtype: format!("{:?}", info.dtype),
            })?;

            let file = match &mut handles[file_index] {
                Some(file) => file,
                slot => slot.insert(
                    File::open(&weights.path).map_err(|e| LoadError::io(&weights.path, e))?,
                ),
            };
            let (begin, stop) = info.data_offsets;
            let mut bytes = vec![0u8; stop - begin];
            file.seek(SeekFrom::Start(weights.data_start + begin as u64))
                .and_then(|_| file.read_exact(&mut bytes))
                .map_err(|e| LoadError::io(&weights.path, e))?;
            let tensor_error = |err: tch::TchError| LoadError::Tensor {
                path: weights.path.clone(),
                name: stored_name.clone(),
                message: crate::batching::first_line(&err),
            };
            let value = Tensor::f_from_data_size(&bytes, &found, kind).map_err(tensor_error)?;
            drop(bytes);
            // `copy_` converts dtype and moves to the variable's device.
            var.f_copy_(&value).map_err(tensor_error)?;
            used.insert(stored_name);
        }

        if tracing::enabled!(tracing::Level::DEBUG) {
            let mut unused: Vec<&str> = self
                .tensor_names()
                .filter(|name| !used.contains(*name))
                .collect();
            unused.sort_unstable();
            if !unused.is_empty() {
                tracing::debug!(
                    dir = %self.dir.display(),
                    count = unused.len(),
                    tensors = ?unused,
                    "checkpoint tensors not used by the model"
                );
            }
        }
        Ok(())
    }

    /// Finds the stored name and file for a variable name.
    fn locate(&self, name: &str) -> Result<(String, usize), LoadError> {
        if let Some(&index) = self.by_name.get(name) {
            return Ok((name.to_owned(), index));
        }
        if let Some(alias) = weight_norm_alias(name) {
            if let Some(&index) = self.by_name.get(&alias) {
                return Ok((alias, index));
            }
        }
        let searched = self
            .files
            .iter()
            .map(|f| f.path.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Err(LoadError::MissingTensor {
            name: name.to_owned(),
            searched,
        })
    }
}

/// The other spelling of a weight-norm factor.
///
/// `torch.nn.utils.weight_norm` stores `<m>.weight_g` / `<m>.weight_v` (the
/// published facebook/musicgen-* checkpoints), while the newer
/// `torch.nn.utils.parametrizations.weight_norm` stores
/// `<m>.parametrizations.weight.original0` / `original1` (what a recent
/// `transformers` may write with `save_pretrained`). Models create the
/// `weight_g`/`weight_v` form; the loader accepts either.
pub fn weight_norm_alias(name: &str) -> Option<String> {
    const PAIRS: [(&str, &str); 2] = [
        (".weight_g", ".parametrizations.weight.original0"),
        (".weight_v", ".parametrizations.weight.original1"),
    ];
    PAIRS.iter().find_map(|(old, new)| {
        if let Some(stem) = name.strip_suffix(old) {
            Some(format!("{stem}{new}"))
        } else {
            name.strip_suffix(new).map(|stem| format!("{stem}{old}"))
        }
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::BOOL => Kind::Bool,
        Dtype::U8 => Kind::Uint8,
        Dtype::I8 => Kind::Int8,
        Dtype::I16 => Kind::Int16,
        Dtype::I32 => Kind::Int,
        Dtype::I64 => Kind::Int64,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        _ => return None,
    })
}

/// The safetensors files of a checkpoint directory: the single file if there
/// is one, else every shard the index names.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let single = dir.join(WEIGHTS_FILE);
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index_path = dir.join(WEIGHTS_INDEX_FILE);
    if !index_path.is_file() {
        return Err(LoadError::NoWeights {
            dir: dir.to_path_buf(),
        });
    }
    let shards = shard_names(&index_path)?;
    Ok(shards.into_iter().map(|shard| dir.join(shard)).collect())
}

/// The distinct shard file names an index refers to, in sorted order.
pub(crate) fn shard_names(index_path: &Path) -> Result<Vec<String>, LoadError> {
    let text = std::fs::read_to_string(index_path).map_err(|e| LoadError::io(index_path, e))?;
    let index: ShardIndex = serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: index_path.to_path_buf(),
        source,
    })?;
    let shards: BTreeSet<String> = index.weight_map.into_values().collect();
    // Shard names come from a downloaded file; refuse anything that would
    // escape the model directory.
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains('/') || s.contains('\\') || s.starts_with('.'))
    {
        return Err(LoadError::Corrupt {
            path: index_path.to_path_buf(),
            reason: format!("shard name `{bad}` is not a plain file name"),
        });
    }
    Ok(shards.into_iter().collect())
}
