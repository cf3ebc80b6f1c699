//! Arbitrary text as what the router hands over from a URL: the stats query
//! string (percent-decoding, repeated names, times) and the ids of the
//! paths (`/v1/result/{task_id}`, `/v1/cancel/{task_id}`, upload ids).
//! Refusals are fine; a panic, or an id that does not read back as itself,
//! is not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sound_creator_core::request::StatsRequest;
use sound_creator_core::task::TaskId;
use sound_creator_core::upload::UploadId;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    static LIMITS: std::sync::OnceLock<sound_creator_core::settings::Limits> =
        std::sync::OnceLock::new();
    let limits = LIMITS.get_or_init(|| {
        sound_creator_settings::from_pairs(&[("MARKETPLACE_TOKEN", "t")])
            .expect("settings")
            .service
            .limits
    });
    if let Ok(stats) = StatsRequest::parse(text, limits) {
        if let (Some(from), Some(to)) = (stats.from, stats.to) {
            assert!(from <= to);
        }
    }
    if let Some(id) = TaskId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
    if let Some(id) = UploadId::parse(text) {
        assert_eq!(id.to_string(), text);
    }
});
