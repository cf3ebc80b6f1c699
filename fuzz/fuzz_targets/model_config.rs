//! Arbitrary bytes as a checkpoint's `config.json` (a hub download or a
//! local directory): deserialize the MusicGen config and check it the way
//! the loader does before building a model. Errors are fine; panics are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_fuzz::config::MusicgenConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = serde_json::from_slice::<MusicgenConfig>(data) {
        if config.validate().is_ok() {
            let _ = config.decoder.head_dim();
            let _ = config.audio_encoder.frame_rate();
            let _ = config.audio_encoder.num_quantizers();
            let _ = config.text_encoder.feed_forward();
        }
    }
});
