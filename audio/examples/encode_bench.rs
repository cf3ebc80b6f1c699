//! How long the audio crate takes on a 30 s clip, per output format and for
//! the melody path, side by side with a reference where one exists:
//! libsndfile (through Python's soundfile: libFLAC, LAME, libvorbis) for the
//! encoders and transformers' `MusicgenMelodyFeatureExtractor` for the
//! chroma (bench/audio_reference_bench.py).
//!
//!   cargo run --release -p sound-creator-audio --example encode_bench [-- PYTHON]
//!
//! PYTHON (default: no reference column) must have numpy, soundfile, torch,
//! transformers and torchaudio importable. Times are the median of 5 runs
//! after one warm-up, one thread. A benchmark, not a test: it asserts
//! nothing about speed.

use std::process::Command;
use std::time::Instant;

use sound_creator_audio::{
    decode_upload, encode, melody_input, normalize, ChromaConfig, ChromaExtractor, Clip,
    DecodeLimits, Normalization, OutputFormat,
};

const RUNS: usize = 5;

/// 30 s of something music-like: a changing chord of harmonic notes with a
/// little noise, so encoders have real work (silence would flatter them).
fn music(sample_rate: u32, channels: u16, seconds: f64) -> Clip {
    let frames = (seconds * f64::from(sample_rate)) as usize;
    let chords = [
        [261.63, 329.63, 392.0],
        [220.0, 261.63, 329.63],
        [174.61, 220.0, 261.63],
        [196.0, 246.94, 293.66],
    ];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut samples = Vec::with_capacity(frames * usize::from(channels));
    for i in 0..frames {
        let t = i as f64 / f64::from(sample_rate);
        let chord = chords[(t / 2.0) as usize % chords.len()];
        let tone: f64 = chord
            .iter()
            .map(|f| {
                (2.0 * std::f64::consts::PI * f * t).sin()
                    + 0.3 * (4.0 * std::f64::consts::PI * f * t).sin()
            })
            .sum::<f64>()
            * 0.12;
        for ch in 0..channels {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f64 / f64::from(1u32 << 24) - 0.5;
            samples.push((tone * (1.0 - 0.2 * f64::from(ch)) + 0.01 * noise) as f32);
        }
    }
    Clip {
        samples,
        sample_rate,
        channels,
    }
}

fn median_ms(mut run: impl FnMut()) -> f64 {
    run();
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

fn reference(python: &str, wav_path: &std::path::Path) -> serde_json::Value {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../bench/audio_reference_bench.py"
    );
    let output = Command::new(python).arg(script).arg(wav_path).output();
    match output {
        Ok(out) if out.status.success() => {
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
        }
        Ok(out) => {
            eprintln!(
                "reference run failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            serde_json::Value::Null
        }
        Err(err) => {
            eprintln!("cannot run {python}: {err}");
            serde_json::Value::Null
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let python = std::env::args().nth(1);
    let seconds = 30.0;
    let clips = [
        music(32_000, 1, seconds),
        music(32_000, 2, seconds),
        music(16_000, 1, seconds),
    ];

    let dir = tempfile::tempdir()?;
    let mut references = Vec::new();
    for clip in &clips {
        let path = dir
            .path()
            .join(format!("clip-{}-{}.wav", clip.sample_rate, clip.channels));
        std::fs::write(&path, encode(clip, OutputFormat::Wav)?.bytes)?;
        references.push(match &python {
            Some(python) => reference(python, &path),
            None => serde_json::Value::Null,
        });
    }
    let cell = |v: &serde_json::Value| match v.as_f64() {
        Some(ms) => format!("{ms:>10.1}"),
        None => format!("{:>10}", "-"),
    };

    println!("30 s clips; median of {RUNS} runs; ms (x realtime = 30000 / ms)");
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>12} {:>12}",
        "operation", "ours ms", "x realtime", "ref ms", "bytes", "ref bytes"
    );
    for (clip, reference) in clips.iter().zip(&references) {
        let label = format!("{} Hz x{}", clip.sample_rate, clip.channels);
        for format in OutputFormat::ALL {
            let mut bytes = 0;
            let ms = median_ms(|| {
                bytes = encode(clip, format).map(|e| e.bytes.len()).unwrap_or(0);
            });
            let reference_bytes = reference[format!("{format}_bytes")]
                .as_u64()
                .map_or("-".to_string(), |b| b.to_string());
            println!(
                "{:<26} {:>10.1} {:>10.0} {} {:>12} {:>12}",
                format!("encode {format} {label}"),
                ms,
                seconds * 1000.0 / ms,
                cell(&reference[format.as_str()]),
                bytes,
                reference_bytes
            );
        }
        let ms = median_ms(|| {
            let mut copy = clip.clone();
            let _ = normalize(&mut copy, Normalization::Loudness);
        });
        println!(
            "{:<26} {:>10.1} {:>10.0} {} {:>12}",
            format!("loudness {label}"),
            ms,
            seconds * 1000.0 / ms,
            cell(&serde_json::Value::Null),
            "-"
        );
    }

    // The melody path on the same 30 s: an MP3 upload at 32 kHz mono.
    let upload = encode(&clips[0], OutputFormat::Mp3)?.bytes;
    let limits = DecodeLimits::default();
    let decode_ms = median_ms(|| {
        let _ = decode_upload(&upload, "audio/mpeg", &limits);
    });
    let decoded = decode_upload(&upload, "audio/mpeg", &limits)?;
    let stereo_44k = music(44_100, 2, seconds);
    let resample_ms = median_ms(|| {
        let _ = melody_input(&stereo_44k);
    });
    let extractor = ChromaExtractor::new(ChromaConfig::musicgen_melody());
    let wav = melody_input(&decoded.clip)?;
    let chroma_ms = median_ms(|| {
        let _ = extractor.chroma(&wav);
    });
    let chroma_ref = &references[0]["chroma"];
    for (name, ms, reference) in [
        (
            "decode mp3 32000 Hz x1",
            decode_ms,
            &serde_json::Value::Null,
        ),
        (
            "44.1k stereo -> 32k mono",
            resample_ms,
            &serde_json::Value::Null,
        ),
        ("melody chroma (235 frames)", chroma_ms, chroma_ref),
    ] {
        println!(
            "{:<26} {:>10.1} {:>10.0} {} {:>12}",
            name,
            ms,
            seconds * 1000.0 / ms,
            cell(reference),
            "-"
        );
    }
    if python.is_none() {
        println!("(no reference column: pass a python with soundfile and transformers)");
    } else if let Some(version) = references[0]["libsndfile"].as_str() {
        println!(
            "reference: libsndfile {version} through soundfile; chroma: transformers on torch CPU"
        );
    }
    Ok(())
}
