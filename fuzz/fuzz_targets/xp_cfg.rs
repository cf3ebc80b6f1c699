//! Arbitrary text as an xp.cfg: parse, resolve interpolations, and read the
//! LM and codec configs. Errors are fine; panics and hangs are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::audiocraft_config::{CompressionConfig, LmConfig, XpConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if XpConfig::parse(text).is_ok() {
        let _ = LmConfig::from_yaml(text);
        let _ = CompressionConfig::from_yaml(text);
    }
});
