//! Arbitrary bytes as the JSON body of each route that takes one: the JSON
//! reader (duplicate keys, depth) and every body's declared fields, with a
//! deployment's limits and callback allow-list. The first byte picks the
//! route. Refusals are fine; a panic, a hang, or an accepted body that
//! breaks a declared bound is not.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sound_creator_core::request::{
    parse_json, CallRequest, GenerateRequest, ResultRequest, UploadRequest,
};
use sound_creator_core::settings::ServiceSettings;

fn settings() -> &'static ServiceSettings {
    static SETTINGS: OnceLock<ServiceSettings> = OnceLock::new();
    SETTINGS.get_or_init(|| {
        sound_creator_settings::from_pairs(&[
            ("MARKETPLACE_TOKEN", "t"),
            ("CALLBACK_ALLOWED_HOSTS", "hooks.example.com"),
        ])
        .expect("settings")
        .service
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&route, body)) = data.split_first() else {
        return;
    };
    let Ok(value) = parse_json(body) else {
        return;
    };
    let s = settings();
    let limits = &s.limits;
    match route % 4 {
        0 => {
            if let Ok(call) = CallRequest::parse(&value, limits, &s.callbacks) {
                assert!(call.duration >= 0.1 && call.duration <= limits.max_duration);
                assert!((1..=4).contains(&call.samples));
                assert!(call.prompt.chars().count() <= limits.max_prompt_len);
                assert!(!call.user_id.is_empty());
            }
        }
        1 => {
            if let Ok(generate) = GenerateRequest::parse(&value, limits, &s.callbacks) {
                assert!(generate.wait <= std::time::Duration::from_secs(60));
            }
        }
        2 => {
            let _ = ResultRequest::parse(&value, limits);
        }
        _ => {
            if let Ok(upload) = UploadRequest::parse(&value, limits) {
                assert!(upload.bytes >= 1 && upload.bytes <= limits.max_upload_bytes);
            }
        }
    }
});
