//! Checking a safetensors header without reading the tensor data behind it:
//! the 8-byte length, the JSON header, and that the tensors it lists tile
//! the data section back to back up to the end of the file, the same checks
//! as the safetensors crate's private `Metadata::validate`. Pure over bytes
//! and a file length, with no libtorch, so the fuzz crate compiles this very
//! file (`fuzz/src/lib.rs`).

use safetensors::tensor::{Metadata, TensorInfo};

/// The safetensors crate refuses headers above 100 MB; so do we, before
/// allocating a buffer for one.
pub const MAX_HEADER_BYTES: u64 = 100_000_000;

/// The header length the first 8 bytes of a file of `file_len` bytes
/// declare, once it is known to fit.
pub fn header_len(len_bytes: [u8; 8], file_len: u64) -> Result<u64, String> {
    if file_len < 8 {
        return Err(format!(
            "file is {file_len} bytes, shorter than the 8-byte header length"
        ));
    }
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len > file_len - 8 {
        return Err(format!(
            "header claims {header_len} bytes but the file is {file_len} bytes"
        ));
    }
    Ok(header_len)
}

/// The metadata of `header` (the bytes after the length), checked against
/// a file of `file_len` bytes.
pub fn metadata(header: &[u8], file_len: u64) -> Result<Metadata, String> {
    let text = std::str::from_utf8(header).map_err(|_| "header is not UTF-8".to_owned())?;
    let metadata: Metadata =
        serde_json::from_str(text).map_err(|e| format!("header is not valid JSON: {e}"))?;
    let mut infos: Vec<(String, &TensorInfo)> = metadata.tensors().into_iter().collect();
    infos.sort_by_key(|(_, info)| info.data_offsets);
    let mut end = 0usize;
    for (name, info) in &infos {
        let (begin, stop) = info.data_offsets;
        if begin != end || stop < begin {
            return Err(format!("tensor `{name}` has invalid data offsets"));
        }
        let bytes = info
            .shape
            .iter()
            .try_fold(info.dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| format!("tensor `{name}` is too large"))?;
        if stop - begin != bytes {
            return Err(format!(
                "tensor `{name}` has {} bytes for shape {:?} {:?}",
                stop - begin,
                info.shape,
                info.dtype
            ));
        }
        end = stop;
    }
    let expected_len = (8 + header.len() as u64).checked_add(end as u64);
    if expected_len != Some(file_len) {
        return Err(format!(
            "header describes {} bytes but the file is {file_len} bytes",
            expected_len.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string())
        ));
    }
    Ok(metadata)
}
