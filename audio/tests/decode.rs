//! Decoding melody uploads: files from another encoder (libsndfile, made by
//! tests/fixtures/make_upload_fixtures.py) through the whole melody path, and
//! bad, hostile or oversized files, which must end as one-line errors.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::PathBuf;

use sound_creator_audio::{
    decode_upload, encode, melody_chroma, melody_input, AudioError, Clip, DecodeLimits,
    OutputFormat,
};

fn upload(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/uploads")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn decode(bytes: &[u8]) -> Result<sound_creator_audio::DecodedAudio, AudioError> {
    decode_upload(bytes, "audio/wav", &DecodeLimits::default())
}

fn assert_one_line(err: &AudioError) {
    let message = err.to_string();
    assert!(
        !message.is_empty() && !message.contains('\n'),
        "{message:?}"
    );
}

/// A canonical WAV header for `data_len` bytes of `format` (1 = PCM,
/// 3 = IEEE float) samples.
fn wav_header(format: u16, channels: u16, rate: u32, bits: u16, data_len: u32) -> Vec<u8> {
    let block = channels * bits / 8;
    let mut out = Vec::new();
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&format.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&bits.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    out
}

fn tone_clip(rate: u32, channels: u16, seconds: f64) -> Clip {
    let frames = (seconds * f64::from(rate)) as usize;
    Clip {
        samples: (0..frames * usize::from(channels))
            .map(|i| {
                let t = (i / usize::from(channels)) as f64 / f64::from(rate);
                (0.3 * (2.0 * std::f64::consts::PI * 440.0 * t).sin()) as f32
            })
            .collect(),
        sample_rate: rate,
        channels,
    }
}

#[test]
fn uploads_from_another_encoder_decode_with_their_rate_channels_and_length() {
    let cases = [
        ("a4-48k-stereo-s24.wav", "audio/wav", 48_000, 2, 14_400),
        ("a4-44k-mono-f32.wav", "audio/wav", 44_100, 1, 13_230),
        ("a4-44k-stereo.flac", "audio/flac", 44_100, 2, 22_050),
        ("a4-44k-stereo.mp3", "audio/mpeg", 44_100, 2, 22_050),
        ("a4-22k-mono.ogg", "audio/ogg", 22_050, 1, 11_025),
    ];
    for (name, content_type, rate, channels, frames) in cases {
        let decoded = decode_upload(&upload(name), content_type, &DecodeLimits::default())
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(decoded.clip.sample_rate, rate, "{name}");
        assert_eq!(decoded.clip.channels, channels, "{name}");
        assert_eq!(decoded.clip.frames(), frames, "{name}");
        assert!(!decoded.truncated, "{name}");
        // The right channel was written at 0.7 of the left's level.
        if channels == 2 {
            let energy = |ch: usize| -> f32 {
                decoded
                    .clip
                    .samples
                    .iter()
                    .skip(ch)
                    .step_by(2)
                    .map(|s| s * s)
                    .sum()
            };
            let ratio = (energy(1) / energy(0)).sqrt();
            assert!((ratio - 0.7).abs() < 0.02, "{name}: channel ratio {ratio}");
        }
    }
}

#[test]
fn every_upload_kind_gives_the_a4_chroma_through_the_melody_path() {
    for name in [
        "a4-48k-stereo-s24.wav",
        "a4-44k-mono-f32.wav",
        "a4-44k-stereo.flac",
        "a4-44k-stereo.mp3",
        "a4-22k-mono.ogg",
    ] {
        // The declared type is only a hint: a wrong one changes nothing.
        let decoded = decode_upload(&upload(name), "audio/mpeg", &DecodeLimits::default())
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let wav = melody_input(&decoded.clip).unwrap();
        let expected_len = (decoded.clip.frames() as u64 * 32_000)
            .div_ceil(u64::from(decoded.clip.sample_rate)) as usize;
        assert_eq!(wav.len(), expected_len, "{name}");
        let chroma = melody_chroma(&wav);
        assert!(
            chroma.argmax().iter().all(|&bin| bin == 9),
            "{name}: {:?}",
            chroma.argmax()
        );
    }
}

#[test]
fn ogg_opus_is_refused_with_a_message_that_says_so() {
    let err = decode_upload(
        &upload("a4-48k-mono.opus"),
        "audio/ogg",
        &DecodeLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(err, AudioError::Unsupported(_)));
    assert!(err.to_string().contains("Opus"), "{err}");
    assert!(err.is_bad_input());
}

#[test]
fn garbage_and_empty_files_are_undecodable_with_one_line() {
    for bytes in [
        &b""[..],
        b"ID3",
        b"this is a text file, not audio at all, but long enough to probe",
        &[0u8; 4096],
        &[0xFFu8; 4096],
    ] {
        let err = decode(bytes).unwrap_err();
        assert!(err.is_bad_input(), "{err:?}");
        assert_one_line(&err);
    }
    let noise: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    if let Err(err) = decode(&noise) {
        assert_one_line(&err);
    }
}

#[test]
fn a_file_over_the_byte_limit_is_refused_before_decoding() {
    let limits = DecodeLimits {
        max_bytes: 1000,
        ..DecodeLimits::default()
    };
    let err = decode_upload(&[0u8; 1001], "audio/wav", &limits).unwrap_err();
    assert_eq!(
        err,
        AudioError::TooLarge {
            bytes: 1001,
            limit: 1000
        }
    );
    assert_eq!(
        err.to_string(),
        "the audio file is 1001 bytes; the limit is 1000"
    );
}

#[test]
fn audio_past_max_seconds_is_not_decoded() {
    let wav = encode(&tone_clip(16_000, 2, 3.0), OutputFormat::Wav).unwrap();
    let limits = DecodeLimits {
        max_seconds: 1.25,
        ..DecodeLimits::default()
    };
    let decoded = decode_upload(&wav.bytes, "audio/wav", &limits).unwrap();
    assert!(decoded.truncated);
    assert_eq!(decoded.clip.frames(), 20_000);
    assert_eq!(decoded.clip.channels, 2);

    let flac = encode(&tone_clip(16_000, 1, 3.0), OutputFormat::Flac).unwrap();
    let decoded = decode_upload(&flac.bytes, "audio/flac", &limits).unwrap();
    assert!(decoded.truncated);
    assert_eq!(decoded.clip.frames(), 20_000);
}

#[test]
fn a_layout_that_would_exceed_the_sample_budget_is_refused() {
    let wav = encode(&tone_clip(48_000, 2, 0.1), OutputFormat::Wav).unwrap();
    let limits = DecodeLimits {
        max_seconds: 10.0,
        max_samples: 48_000 * 10,
        ..DecodeLimits::default()
    };
    let err = decode_upload(&wav.bytes, "audio/wav", &limits).unwrap_err();
    assert!(matches!(err, AudioError::Unsupported(_)), "{err}");
    assert_one_line(&err);
}

#[test]
fn a_wav_cut_short_keeps_the_audio_before_the_cut() {
    let wav = encode(&tone_clip(32_000, 1, 1.0), OutputFormat::Wav).unwrap();
    let cut = &wav.bytes[..44 + 2 * 10_000 + 1];
    let decoded = decode(cut).unwrap();
    assert!(decoded.clip.frames() > 0 && decoded.clip.frames() <= 10_000);
    // A header alone, or less, has nothing to give.
    assert!(decode(&wav.bytes[..44]).is_err());
    assert!(decode(&wav.bytes[..30]).is_err());
}

#[test]
fn lossy_files_cut_short_keep_what_decodes() {
    for format in [OutputFormat::Mp3, OutputFormat::Ogg, OutputFormat::Flac] {
        let encoded = encode(&tone_clip(32_000, 1, 2.0), format).unwrap();
        let cut = &encoded.bytes[..encoded.bytes.len() * 2 / 3];
        match decode_upload(cut, format.content_type(), &DecodeLimits::default()) {
            Ok(decoded) => assert!(decoded.clip.frames() < 64_000, "{format}"),
            Err(err) => assert_one_line(&err),
        }
    }
}

#[test]
fn sample_rates_outside_the_supported_range_are_refused() {
    for rate in [0u32, 500, 1_000_000] {
        let mut bytes = wav_header(1, 1, rate, 16, 2000);
        bytes.extend_from_slice(&[0u8; 2000]);
        let err = decode(&bytes).unwrap_err();
        assert!(err.is_bad_input(), "{rate} Hz: {err:?}");
        assert_one_line(&err);
    }
}

#[test]
fn non_finite_float_samples_become_silence_and_huge_ones_are_capped() {
    let values = [
        0.5f32,
        f32::NAN,
        f32::INFINITY,
        -0.25,
        f32::NEG_INFINITY,
        2.0,
        -5.0e7,
    ];
    let mut bytes = wav_header(3, 1, 32_000, 32, 4 * values.len() as u32);
    for v in values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let decoded = decode(&bytes).unwrap();
    // Past full scale but plausible samples are kept (the level filters and
    // the encoders bound them); absurd ones are capped at 1e6.
    assert_eq!(
        decoded.clip.samples,
        vec![0.5, 0.0, 0.0, -0.25, 0.0, 2.0, -1.0e6]
    );
}

#[test]
fn a_header_that_claims_more_data_than_the_file_has_is_harmless() {
    // 4 GiB of data announced, 100 bytes present.
    let mut bytes = wav_header(1, 2, 44_100, 16, u32::MAX - 64);
    bytes.extend_from_slice(&[1u8; 100]);
    match decode(&bytes) {
        Ok(decoded) => assert_eq!(decoded.clip.frames(), 25),
        Err(err) => assert_one_line(&err),
    }
}

#[test]
fn fuzz_regression_a_float_wav_of_huge_samples_goes_through_the_melody_path() {
    // Found by audio/fuzz: samples up to 7.8e34 overflowed the resampler's
    // FFT, and rubato panicked.
    let bytes = upload("../fuzz-regressions/float-wav-huge-samples.wav");
    let decoded = decode(&bytes).unwrap();
    assert!(decoded.clip.samples.iter().all(|s| s.abs() <= 1.0e6));
    let wav = melody_input(&decoded.clip).unwrap();
    assert!(wav.iter().all(|s| s.is_finite()));
    assert!(melody_chroma(&wav).frames() >= 1);
}

#[test]
fn fuzz_regression_a_wav_claiming_28162_channels_is_an_error_not_a_panic() {
    // Found by audio/fuzz: symphonia-format-riff 0.6.1 multiplies the
    // channel count by the sample size in u16 (wave/chunks.rs:100), which
    // overflows; with overflow checks on (debug builds, as in these tests)
    // that panics inside the decoder, and decode_upload's catch_unwind must
    // turn it into an error. Release builds wrap silently and refuse the
    // channel count.
    let err = decode(&upload("../fuzz-regressions/wav-28162-channels.wav")).unwrap_err();
    assert!(err.is_bad_input(), "{err:?}");
    assert_one_line(&err);
}
