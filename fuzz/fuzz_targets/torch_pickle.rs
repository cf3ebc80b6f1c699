//! Arbitrary bytes as a pickle: the VM must return a value or an error,
//! never panic, hang, or grow past its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::torch_pickle::pickle::{load, Limits, Value};

fn limits() -> Limits {
    // Small caps keep each run fast; the logic is the same as the defaults'.
    Limits {
        max_objects: 100_000,
        max_tree_values: 100_000,
        max_depth: 200,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = load(data, limits()) {
        // Exercise the accessors a loader uses.
        let _ = value.get("best_state").and_then(|v| v.get("model"));
        let _ = value.keys();
        if let Value::Tensor(info) = &value {
            let _ = info.storage_span();
            let _ = info.numel();
        }
    }
});
