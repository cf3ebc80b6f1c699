//! The zip container `torch.save` writes (PyTorch >= 1.6): one folder,
//! `<archive>/data.pkl` (the pickled object), `<archive>/data/<key>` (one
//! uncompressed entry per storage), `<archive>/byteorder` ("little" or
//! "big"; absent in files from before PyTorch 1.10, which are little-endian)
//! and `<archive>/version`.
//!
//! This layer knows nothing of tch: it reads the pickle into a [`Value`] and
//! copies a tensor's elements out of its storage as bytes in the machine's
//! (little-endian) order, checking every offset against the entry's real
//! size first. It must never trust a size from the pickle before checking it
//! against the archive, and never panic on a malformed file.

use std::collections::HashMap;
use std::io::{self, Read, Seek};

use super::pickle::{self, DType, Limits, TensorInfo, Value};

/// The largest `data.pkl` read into memory. The pickle holds the object tree
/// only (the tensors' bytes are separate entries); audiogen-medium's is a
/// few hundred kilobytes.
pub const MAX_PICKLE_BYTES: u64 = 256 << 20;

/// Why an archive or one of its tensors could not be read; the caller adds
/// the file name.
#[derive(Debug)]
pub enum ArchiveError {
    Io(io::Error),
    /// Not a zip, or not laid out as torch.save lays it out.
    Layout(String),
    /// The pickle did not run.
    Pickle {
        entry: String,
        error: pickle::PickleError,
    },
    /// A tensor's storage is missing, too small or unreadable.
    Storage {
        key: String,
        reason: String,
    },
}

impl std::fmt::Display for ArchiveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArchiveError::Io(e) => write!(f, "{e}"),
            ArchiveError::Layout(reason) => write!(f, "{reason}"),
            ArchiveError::Pickle { entry, error } => write!(f, "pickle {entry} {error}"),
            ArchiveError::Storage { key, reason } => write!(f, "storage {key}: {reason}"),
        }
    }
}

impl std::error::Error for ArchiveError {}

fn layout<T>(reason: impl Into<String>) -> Result<T, ArchiveError> {
    Err(ArchiveError::Layout(reason.into()))
}

/// An opened torch.save zip: its object tree and where its storages are.
pub struct Archive<R: Read + Seek> {
    zip: zip::ZipArchive<R>,
    /// The folder every entry sits in (the file's stem when it was saved).
    prefix: String,
    big_endian: bool,
    /// Length of the whole file, to check entry sizes against before
    /// allocating for them.
    file_len: u64,
    /// Storage key -> (zip entry index, entry size in bytes).
    storages: HashMap<String, (usize, u64)>,
    root: Value,
}

impl<R: Read + Seek> Archive<R> {
    /// Reads the central directory and runs the pickle; storages are only
    /// indexed, not read.
    pub fn new(mut reader: R, limits: Limits) -> Result<Self, ArchiveError> {
        let file_len = reader
            .seek(io::SeekFrom::End(0))
            .map_err(ArchiveError::Io)?;
        let mut zip = match zip::ZipArchive::new(reader) {
            Ok(z) => z,
            Err(zip::result::ZipError::Io(e)) => return Err(ArchiveError::Io(e)),
            Err(e) => {
                return layout(format!(
                    "not a torch.save zip archive ({e}); files saved with \
                     _use_new_zipfile_serialization=False are not supported"
                ))
            }
        };
        let mut pickle_entry = None;
        for i in 0..zip.len() {
            let file = zip.by_index_raw(i).map_err(zip_error)?;
            let name = file.name();
            if let Some(prefix) = name.strip_suffix("/data.pkl") {
                if !prefix.contains('/') {
                    pickle_entry = Some((i, prefix.to_owned(), file.size()));
                    break;
                }
            }
        }
        let Some((pickle_index, prefix, pickle_size)) = pickle_entry else {
            return layout("no <archive>/data.pkl entry: not a torch.save file");
        };
        if pickle_size > MAX_PICKLE_BYTES {
            return layout(format!(
                "{prefix}/data.pkl is {pickle_size} bytes, more than the {MAX_PICKLE_BYTES} read"
            ));
        }

        let mut storages = HashMap::new();
        let mut byteorder = None;
        let data_dir = format!("{prefix}/data/");
        for i in 0..zip.len() {
            let file = zip.by_index_raw(i).map_err(zip_error)?;
            let name = file.name();
            if let Some(key) = name.strip_prefix(&data_dir) {
                storages.insert(key.to_owned(), (i, file.size()));
            } else if name == format!("{prefix}/byteorder") {
                byteorder = Some(i);
            }
        }
        let big_endian = match byteorder {
            None => false,
            Some(i) => {
                let text = read_small(&mut zip, i, 16)?;
                match text.trim_ascii() {
                    b"little" => false,
                    b"big" => true,
                    other => {
                        return layout(format!(
                            "{prefix}/byteorder says {:?}, expected little or big",
                            String::from_utf8_lossy(other)
                        ))
                    }
                }
            }
        };

        let entry = format!("{prefix}/data.pkl");
        let bytes = read_small(&mut zip, pickle_index, MAX_PICKLE_BYTES)?;
        let root =
            pickle::load(&bytes, limits).map_err(|error| ArchiveError::Pickle { entry, error })?;
        Ok(Archive {
            zip,
            prefix,
            big_endian,
            file_len,
            storages,
            root,
        })
    }

    /// The object `torch.save` was given.
    pub fn root(&self) -> &Value {
        &self.root
    }

    /// The folder name inside the zip.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn is_big_endian(&self) -> bool {
        self.big_endian
    }

    /// Checks that a tensor's elements lie inside its storage and the
    /// storage inside its archive entry.
    pub fn check(&self, info: &TensorInfo) -> Result<(), ArchiveError> {
        self.byte_range(info).map(|_| ())
    }

    /// Zip entry index and the byte range `[start, end)` of the entry that
    /// holds the tensor's elements.
    fn byte_range(&self, info: &TensorInfo) -> Result<(usize, u64, u64), ArchiveError> {
        let key = &info.storage.key;
        let storage = |reason: String| ArchiveError::Storage {
            key: key.clone(),
            reason,
        };
        let Some(&(index, entry_size)) = self.storages.get(key) else {
            return Err(storage(format!(
                "no entry {}/data/{key} in the archive",
                self.prefix
            )));
        };
        let elem = info.dtype().size() as u64;
        let storage_bytes = info
            .storage
            .numel
            .checked_mul(elem)
            .ok_or_else(|| storage("its size overflows".into()))?;
        if storage_bytes != entry_size {
            return Err(storage(format!(
                "the pickle says {} {} elements ({storage_bytes} bytes) but the entry has {entry_size} bytes; the file may be truncated",
                info.storage.numel,
                info.dtype()
            )));
        }
        let (start, end) = info
            .storage_span()
            .ok_or_else(|| storage("the tensor's extent overflows".into()))?;
        if end > info.storage.numel {
            return Err(storage(format!(
                "shape {:?} stride {:?} offset {} reaches element {end} of a storage of {}",
                info.shape, info.stride, info.storage_offset, info.storage.numel
            )));
        }
        Ok((index, start * elem, end * elem))
    }

    /// The tensor's span of its storage, `[start, end)` in elements, as
    /// little-endian bytes. The caller lays the shape and stride over it,
    /// with `storage_offset - start` as the offset (always 0 here).
    pub fn read_span(&mut self, info: &TensorInfo) -> Result<Vec<u8>, ArchiveError> {
        let (index, start, end) = self.byte_range(info)?;
        let key = info.storage.key.clone();
        let storage = |reason: String| ArchiveError::Storage {
            key: key.clone(),
            reason,
        };
        let file_len = self.file_len;
        let mut entry = self.zip.by_index(index).map_err(zip_error)?;
        // torch.save stores storages uncompressed: then the entry's claimed
        // size must really be in the file, which is checked before anything
        // is allocated for it. (A compressed entry is read as it inflates.)
        if entry.compression() == zip::CompressionMethod::Stored
            && entry.data_start().saturating_add(entry.compressed_size()) > file_len
        {
            return Err(storage(
                "its entry runs past the end of the file; the file is truncated".into(),
            ));
        }
        io::copy(&mut (&mut entry).take(start), &mut io::sink()).map_err(ArchiveError::Io)?;
        let len = usize::try_from(end - start).map_err(|_| storage("too large".into()))?;
        let mut bytes = Vec::new();
        bytes
            .try_reserve_exact(len.min(64 << 20))
            .map_err(|_| storage(format!("cannot allocate {len} bytes")))?;
        (&mut entry)
            .take(end - start)
            .read_to_end(&mut bytes)
            .map_err(|e| storage(format!("cannot read: {e}")))?;
        if bytes.len() != len {
            return Err(storage(format!(
                "entry ended after {} of {len} bytes; the file may be truncated",
                bytes.len()
            )));
        }
        if self.big_endian {
            swap_bytes(&mut bytes, info.dtype());
        }
        Ok(bytes)
    }
}

fn zip_error(e: zip::result::ZipError) -> ArchiveError {
    match e {
        zip::result::ZipError::Io(e) => ArchiveError::Io(e),
        e => ArchiveError::Layout(format!("corrupt zip archive ({e})")),
    }
}

fn read_small<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    index: usize,
    max: u64,
) -> Result<Vec<u8>, ArchiveError> {
    let mut entry = zip.by_index(index).map_err(zip_error)?;
    let name = entry.name().to_owned();
    let mut bytes = Vec::new();
    (&mut entry)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ArchiveError::Layout(format!("cannot read {name}: {e}")))?;
    if bytes.len() as u64 > max {
        return layout(format!("{name} is larger than {max} bytes"));
    }
    Ok(bytes)
}

fn swap_bytes(bytes: &mut [u8], dtype: DType) {
    let n = dtype.size();
    if n > 1 {
        for chunk in bytes.chunks_exact_mut(n) {
            chunk.reverse();
        }
    }
}

/// Every tensor in a tree of nested string-keyed dicts, named by the keys
/// joined with `.` (what `state_dict()` and `load_state_dict` call them),
/// in file order. Values that are neither dicts nor tensors are skipped.
pub fn flatten_tensors<'v>(
    value: &'v Value,
    prefix: &str,
    out: &mut Vec<(String, &'v TensorInfo)>,
) {
    match value {
        Value::Tensor(info) => out.push((prefix.to_owned(), info)),
        Value::Dict(items) => {
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s.clone(),
                    Value::Int(i) => i.to_string(),
                    _ => continue,
                };
                let name = if prefix.is_empty() {
                    key
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_tensors(v, &name, out);
            }
        }
        _ => {}
    }
}
