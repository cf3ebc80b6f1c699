//! Arbitrary bytes as a whole `model.safetensors` (a hub download that may
//! be truncated or hostile): the header length, the JSON header and the
//! tensor layout checks the loader runs before reading any weight. Errors
//! are fine; panics, and a header accepted with tensors past the file's end,
//! are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::safetensors_header::{header_len, metadata};

fuzz_target!(|data: &[u8]| {
    let file_len = data.len() as u64;
    let mut len_bytes = [0u8; 8];
    if data.len() >= 8 {
        len_bytes.copy_from_slice(&data[..8]);
    }
    let Ok(len) = header_len(len_bytes, file_len) else {
        return;
    };
    let header = &data[8..8 + len as usize];
    if let Ok(meta) = metadata(header, file_len) {
        for (_, info) in meta.tensors() {
            assert!(8 + len + info.data_offsets.1 as u64 <= file_len);
        }
    }
});
