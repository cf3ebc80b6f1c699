//! Reading `torch.save` files (the zip + pickle format of PyTorch >= 1.6)
//! into `tch` tensors, with no Python at run time.
//!
//! AudioCraft publishes its AudioGen and MusicGen weights this way:
//! `state_dict.bin` and `compression_state_dict.bin` are pickles of
//! `{'best_state': <state dict>, 'xp.cfg': <YAML str>, 'version': str,
//! 'exported': bool}` (audiocraft's `utils/export.py`), where a training
//! checkpoint's `best_state` nests the state dict one level down under
//! `model`. [`TorchFile::open`] reads the object tree (so `xp.cfg` can be
//! read) and checks every tensor's storage bounds up front; [`TorchFile::tensor`]
//! then reads one tensor at a time, so loading never holds more than the
//! model plus one tensor. It never runs pickled code: only the callables a
//! state dict is made of are understood ([`pickle`]), anything else stays
//! data. Every failure is a one-line [`TorchFileError`] naming the file and
//! the key, never a panic.
//!
//! Why not candle-core's `pickle` module: it gives the object tree and tensor
//! infos, but brings 90 crates (gemm x7, a second safetensors and zip, rand)
//! into a build that already has `zip` through tch, and its memo copies
//! objects on every GET, which hostile files can make exponential.

pub mod archive;
pub mod pickle;

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tch::{Kind, Tensor};

pub use archive::flatten_tensors;
pub use pickle::{DType, Limits, StorageRef, TensorInfo, Value};

/// Why a torch.save file could not be read. One line, naming the file and,
/// where there is one, the key or tensor.
#[derive(Debug, thiserror::Error)]
pub enum TorchFileError {
    #[error("{path}: not found")]
    NotFound { path: PathBuf },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: {reason}; it may be truncated or corrupt, delete it and download it again")]
    Corrupt { path: PathBuf, reason: String },

    #[error("{path}: key `{key}` not found (found: {found})")]
    MissingKey {
        path: PathBuf,
        key: String,
        found: String,
    },

    #[error("{path}: `{key}` is {found}, expected {expected}")]
    WrongType {
        path: PathBuf,
        key: String,
        found: &'static str,
        expected: &'static str,
    },

    #[error("{path}: tensor `{name}`: {reason}")]
    Tensor {
        path: PathBuf,
        name: String,
        reason: String,
    },

    #[error("{path}: tensor `{name}` has shape {found:?} but the model expects {expected:?} (xp.cfg and weights disagree?)")]
    Shape {
        path: PathBuf,
        name: String,
        expected: Vec<i64>,
        found: Vec<i64>,
    },
}

impl TorchFileError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            TorchFileError::NotFound { path }
            | TorchFileError::Io { path, .. }
            | TorchFileError::Corrupt { path, .. }
            | TorchFileError::MissingKey { path, .. }
            | TorchFileError::WrongType { path, .. }
            | TorchFileError::Tensor { path, .. }
            | TorchFileError::Shape { path, .. } => path,
        }
    }
}

/// So that loaders built on this reader report through the crate's one
/// checkpoint error type.
impl From<TorchFileError> for crate::checkpoint::LoadError {
    fn from(e: TorchFileError) -> Self {
        use crate::checkpoint::LoadError;
        match e {
            TorchFileError::NotFound { path } => LoadError::NotFound { path },
            TorchFileError::Io { path, source } => LoadError::Io { path, source },
            TorchFileError::Shape {
                path,
                name,
                expected,
                found,
            } => LoadError::Shape {
                path,
                name,
                expected,
                found,
            },
            other => {
                let model = other.path().display().to_string();
                let message = other.to_string();
                let reason = message
                    .strip_prefix(&format!("{model}: "))
                    .unwrap_or(&message)
                    .to_owned();
                LoadError::Model { model, reason }
            }
        }
    }
}

/// An opened torch.save file.
pub struct TorchFile {
    path: PathBuf,
    archive: Mutex<archive::Archive<BufReader<File>>>,
    root: Value,
}

impl std::fmt::Debug for TorchFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchFile")
            .field("path", &self.path)
            .finish()
    }
}

impl TorchFile {
    /// Opens the file and runs its pickle, with the default [`Limits`].
    pub fn open(path: &Path) -> Result<Self, TorchFileError> {
        Self::open_with(path, Limits::default())
    }

    pub fn open_with(path: &Path, limits: Limits) -> Result<Self, TorchFileError> {
        let file = File::open(path).map_err(|e| io_error(path, e))?;
        let archive = archive::Archive::new(BufReader::new(file), limits)
            .map_err(|e| archive_error(path, e))?;
        let root = archive.root().clone();
        Ok(TorchFile {
            path: path.to_path_buf(),
            archive: Mutex::new(archive),
            root,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The object `torch.save` was given.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// A top-level key, which must be there.
    pub fn get(&self, key: &str) -> Result<&Value, TorchFileError> {
        self.root
            .get(key)
            .ok_or_else(|| self.missing(key, &self.root))
    }

    /// A top-level string such as `xp.cfg`.
    pub fn get_str(&self, key: &str) -> Result<&str, TorchFileError> {
        let value = self.get(key)?;
        value.as_str().ok_or_else(|| TorchFileError::WrongType {
            path: self.path.clone(),
            key: key.to_owned(),
            found: value.kind(),
            expected: "a str",
        })
    }

    /// The state dict of an AudioCraft file: `best_state`, or
    /// `best_state.model` when the state dict is nested one level down (a
    /// training checkpoint's layout), as `name -> tensor` in file order.
    pub fn best_state(&self) -> Result<StateDict<'_>, TorchFileError> {
        let best = self.get("best_state")?;
        if best.as_dict().is_none() {
            return Err(TorchFileError::WrongType {
                path: self.path.clone(),
                key: "best_state".into(),
                found: best.kind(),
                expected: "a dict",
            });
        }
        let (key, state) = match best.get("model") {
            Some(model @ Value::Dict(_)) => ("best_state.model", model),
            _ => ("best_state", best),
        };
        self.state_dict_at(key, state)
    }

    /// Every tensor under `value` (found at `key`, for messages), flattened.
    pub fn state_dict_at<'a>(
        &'a self,
        key: &str,
        value: &'a Value,
    ) -> Result<StateDict<'a>, TorchFileError> {
        let mut tensors = Vec::new();
        flatten_tensors(value, "", &mut tensors);
        let archive = self.lock();
        for (name, info) in &tensors {
            archive
                .check(info)
                .map_err(|e| self.tensor_error(name, e))?;
        }
        drop(archive);
        Ok(StateDict {
            file: self,
            key: key.to_owned(),
            tensors,
        })
    }

    /// Reads one tensor into a contiguous CPU tensor of its stored dtype.
    pub fn tensor(&self, name: &str, info: &TensorInfo) -> Result<Tensor, TorchFileError> {
        let bytes = self
            .lock()
            .read_span(info)
            .map_err(|e| self.tensor_error(name, e))?;
        let fail = |e: tch::TchError| self.tensor_error_msg(name, crate::batching::first_line(&e));
        let shape: Vec<i64> = to_i64(&info.shape).map_err(|r| self.tensor_error_msg(name, r))?;
        let stride: Vec<i64> = to_i64(&info.stride).map_err(|r| self.tensor_error_msg(name, r))?;
        let span = (bytes.len() / info.dtype().size()) as i64;
        let flat = Tensor::f_from_data_size(&bytes, &[span], kind(info.dtype())).map_err(fail)?;
        if info.numel() == 0 {
            return Tensor::f_zeros(&shape, (kind(info.dtype()), tch::Device::Cpu)).map_err(fail);
        }
        flat.f_as_strided(&shape, &stride, Some(0))
            .and_then(|t| t.f_contiguous())
            .map_err(fail)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, archive::Archive<BufReader<File>>> {
        // A panic while holding the lock cannot leave the archive in a state
        // worse than a fresh seek fixes: every read seeks first.
        self.archive.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(&self, key: &str, within: &Value) -> TorchFileError {
        let keys = within.keys();
        let found = if keys.is_empty() {
            within.kind().to_owned()
        } else {
            let mut shown: Vec<&str> = keys.iter().take(8).copied().collect();
            if keys.len() > 8 {
                shown.push("...");
            }
            shown.join(", ")
        };
        TorchFileError::MissingKey {
            path: self.path.clone(),
            key: key.to_owned(),
            found,
        }
    }

    fn tensor_error(&self, name: &str, e: archive::ArchiveError) -> TorchFileError {
        match e {
            archive::ArchiveError::Io(source) => io_error(&self.path, source),
            other => self.tensor_error_msg(name, other.to_string()),
        }
    }

    fn tensor_error_msg(&self, name: &str, reason: String) -> TorchFileError {
        TorchFileError::Tensor {
            path: self.path.clone(),
            name: name.to_owned(),
            reason,
        }
    }
}

/// The tensors of a state dict, by their `load_state_dict` names.
pub struct StateDict<'a> {
    file: &'a TorchFile,
    key: String,
    tensors: Vec<(String, &'a TensorInfo)>,
}

impl std::fmt::Debug for StateDict<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateDict")
            .field("path", &self.file.path)
            .field("key", &self.key)
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

impl<'a> StateDict<'a> {
    /// Names, dtypes and shapes, in file order.
    pub fn infos(&self) -> impl Iterator<Item = (&str, &'a TensorInfo)> + '_ {
        self.tensors.iter().map(|(n, i)| (n.as_str(), *i))
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.info(name).is_some()
    }

    pub fn info(&self, name: &str) -> Option<&'a TensorInfo> {
        self.tensors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, i)| *i)
    }

    /// Reads one tensor, which must be there.
    pub fn tensor(&self, name: &str) -> Result<Tensor, TorchFileError> {
        let info = self.info(name).ok_or_else(|| TorchFileError::MissingKey {
            path: self.file.path.clone(),
            key: format!("{}.{name}", self.key),
            found: format!("{} tensors", self.tensors.len()),
        })?;
        self.file.tensor(name, info)
    }

    /// Reads every tensor, `name -> tensor` in file order. This holds them
    /// all at once: for a model's weights prefer [`StateDict::tensor`] per
    /// variable, which holds one at a time.
    pub fn read_all(&self) -> Result<Vec<(String, Tensor)>, TorchFileError> {
        self.tensors
            .iter()
            .map(|(name, info)| Ok((name.clone(), self.file.tensor(name, info)?)))
            .collect()
    }

    /// Reads one tensor and checks its shape against what the model expects.
    pub fn tensor_with_shape(
        &self,
        name: &str,
        expected: &[i64],
    ) -> Result<Tensor, TorchFileError> {
        if let Some(info) = self.info(name) {
            let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            if found != expected {
                return Err(TorchFileError::Shape {
                    path: self.file.path.clone(),
                    name: name.to_owned(),
                    expected: expected.to_vec(),
                    found,
                });
            }
        }
        self.tensor(name)
    }

    /// Checks every name and shape of a table the model expects, reporting
    /// the first missing or mismatched tensor, before any is read.
    pub fn check_shapes<'n>(
        &self,
        expected: impl IntoIterator<Item = (&'n str, &'n [i64])>,
    ) -> Result<(), TorchFileError> {
        for (name, shape) in expected {
            let Some(info) = self.info(name) else {
                return Err(TorchFileError::MissingKey {
                    path: self.file.path.clone(),
                    key: format!("{}.{name}", self.key),
                    found: format!("{} tensors", self.tensors.len()),
                });
            };
            let found: Vec<i64> = info.shape.iter().map(|&d| d as i64).collect();
            if found != shape {
                return Err(TorchFileError::Shape {
                    path: self.file.path.clone(),
                    name: name.to_owned(),
                    expected: shape.to_vec(),
                    found,
                });
            }
        }
        Ok(())
    }
}

/// The tch element type of a storage dtype.
pub fn kind(dtype: DType) -> Kind {
    match dtype {
        DType::F16 => Kind::Half,
        DType::BF16 => Kind::BFloat16,
        DType::F32 => Kind::Float,
        DType::F64 => Kind::Double,
        DType::I64 => Kind::Int64,
        DType::I32 => Kind::Int,
        DType::I16 => Kind::Int16,
        DType::I8 => Kind::Int8,
        DType::U8 => Kind::Uint8,
        DType::Bool => Kind::Bool,
    }
}

fn to_i64(dims: &[u64]) -> Result<Vec<i64>, String> {
    dims.iter()
        .map(|&d| i64::try_from(d).map_err(|_| format!("dimension {d} is too large")))
        .collect()
}

fn io_error(path: &Path, source: std::io::Error) -> TorchFileError {
    if source.kind() == std::io::ErrorKind::NotFound {
        TorchFileError::NotFound {
            path: path.to_path_buf(),
        }
    } else {
        TorchFileError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

fn archive_error(path: &Path, e: archive::ArchiveError) -> TorchFileError {
    match e {
        archive::ArchiveError::Io(source) if source.kind() == std::io::ErrorKind::UnexpectedEof => {
            TorchFileError::Corrupt {
                path: path.to_path_buf(),
                reason: "ends early".into(),
            }
        }
        archive::ArchiveError::Io(source) => io_error(path, source),
        other => TorchFileError::Corrupt {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}
