//! Arbitrary bytes as a torch.save zip: open it, flatten `best_state`, check
//! and read every tensor's span. Errors are fine; panics, hangs and
//! allocations past libFuzzer's RSS limit are not.
#![no_main]

use std::io::Cursor;

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::torch_pickle::archive::{flatten_tensors, Archive};
use sound_creator_fuzz::torch_pickle::pickle::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_objects: 100_000,
        max_tree_values: 100_000,
        max_depth: 200,
    };
    let Ok(mut archive) = Archive::new(Cursor::new(data), limits) else {
        return;
    };
    let root = archive.root().clone();
    let state = root.get("best_state").unwrap_or(&root);
    let mut tensors = Vec::new();
    flatten_tensors(state, "", &mut tensors);
    for (_, info) in tensors {
        if archive.check(info).is_ok() {
            if let Ok(bytes) = archive.read_span(info) {
                let span = info.storage_span().map(|(s, e)| e - s).unwrap_or(0);
                assert_eq!(bytes.len() as u64, span * info.dtype().size() as u64);
            }
        }
    }
});
