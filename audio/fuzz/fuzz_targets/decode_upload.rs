//! Fuzzes the melody upload path: `decode_upload` on arbitrary bytes, and
//! for what decodes, the downmix, the resampling to 32 kHz and the chroma.
//! Any panic, abort, leak past the RSS limit or timeout is a bug: uploads
//! come from clients.
//!
//! The input is the file as it is (so the seeds are plain audio files); its
//! length picks the declared content type, the decoder's hint.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sound_creator_audio::{
    decode_upload, melody_input, ChromaConfig, ChromaExtractor, DecodeLimits,
};

const CONTENT_TYPES: [&str; 5] = ["audio/wav", "audio/flac", "audio/mpeg", "audio/ogg", ""];

fuzz_target!(|data: &[u8]| {
    let file = data;
    let content_type = CONTENT_TYPES[file.len() % CONTENT_TYPES.len()];
    let limits = DecodeLimits {
        max_bytes: 1 << 20,
        max_seconds: 20.0,
        max_samples: 20 * 48_000 * 2,
    };
    let Ok(decoded) = decode_upload(file, content_type, &limits) else {
        return;
    };
    assert!(decoded.clip.frames() as f64 <= 20.0 * f64::from(decoded.clip.sample_rate) + 1.0);
    assert!(decoded.clip.samples.iter().all(|s| s.is_finite()));
    // The resampler and the chroma on whatever rate and length came out;
    // a few seconds are enough to reach every code path.
    if decoded.clip.duration_seconds() <= 3.0 {
        let wav = melody_input(&decoded.clip).expect("a decoded clip always resamples");
        static EXTRACTOR: OnceLock<ChromaExtractor> = OnceLock::new();
        let chroma = EXTRACTOR
            .get_or_init(|| ChromaExtractor::new(ChromaConfig::musicgen_melody()))
            .chroma(&wav);
        assert!(chroma.frames() >= 1);
    }
});
