//! Decoding an uploaded audio file (WAV, FLAC, MP3, Ogg Vorbis) to
//! interleaved `f32` samples, with symphonia.
//!
//! The bytes come from a client and may be hostile: decoding must never
//! panic, never hold more samples than [`DecodeLimits`] allow, and never
//! loop without consuming input (audio/fuzz checks all three). Audio past `max_seconds` is not decoded at all
//! (the melody model only ever looks at a bounded window), so a small file
//! that expands to hours of silence costs no more than `max_seconds` of it.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};

use symphonia::core::codecs::audio::well_known::CODEC_ID_OPUS;
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSourceStream, MediaSourceStreamOptions};
use symphonia::core::meta::MetadataOptions;

use crate::{AudioError, Clip, UploadFormat};

/// Sample rates outside this range are refused: they are not music, and the
/// resampler's FFT sizes grow with the rate.
const MIN_SAMPLE_RATE: u32 = 1_000;
const MAX_SAMPLE_RATE: u32 = 384_000;
/// Up to 7.1.
const MAX_CHANNELS: usize = 8;
/// Corrupt packets skipped in a row before the rest of the file is given up.
const MAX_CONSECUTIVE_BAD_PACKETS: u32 = 32;
/// Full scale is 1; a float file may go past it a little. Anything beyond
/// this is not audio, and would overflow the f32 arithmetic of the
/// resampler's FFT (found by the fuzzer: rubato then panics).
pub(crate) const MAX_SAMPLE_MAGNITUDE: f32 = 1.0e6;

/// How much an upload may cost to decode.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeLimits {
    /// The largest file accepted, in bytes (the API's `MAX_UPLOAD_BYTES`).
    pub max_bytes: usize,
    /// Audio past this many seconds is not decoded; [`DecodedAudio::truncated`]
    /// says when that happened.
    pub max_seconds: f64,
    /// The most interleaved samples ever held (4 bytes each). A file whose
    /// rate and channel count would need more than this for `max_seconds`
    /// is refused at its first packet, before the rest is decoded.
    pub max_samples: usize,
}

impl Default for DecodeLimits {
    /// 20 MiB (the contract's default `MAX_UPLOAD_BYTES`), 300 s (the
    /// longest clip `MAX_DURATION` allows, since a long clip's melody is
    /// read across its whole length), and room for 300 s of 48 kHz stereo
    /// (115 MB of samples).
    fn default() -> Self {
        DecodeLimits {
            max_bytes: 20 * 1024 * 1024,
            max_seconds: 300.0,
            max_samples: 300 * 48_000 * 2,
        }
    }
}

/// A decoded upload.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// The file's own rate and channels, samples interleaved; non-finite
    /// samples (possible in float WAV) are replaced by 0 and magnitudes are
    /// capped at 1e6.
    pub clip: Clip,
    /// Whether the file went on past [`DecodeLimits::max_seconds`].
    pub truncated: bool,
}

/// Decodes an uploaded audio file.
///
/// `content_type` is the upload's declared type; it only orders the
/// container guesses (the bytes decide), so any string may be passed.
/// Corrupt packets are skipped and a file cut short keeps the audio before
/// the cut; a file with no decodable audio at all is an error.
pub fn decode_upload(
    bytes: &[u8],
    content_type: &str,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    if bytes.len() > limits.max_bytes {
        return Err(AudioError::TooLarge {
            bytes: bytes.len(),
            limit: limits.max_bytes,
        });
    }
    if bytes.is_empty() {
        return Err(AudioError::Undecodable("the file is empty".into()));
    }
    // symphonia is not known to panic on bad input, and the fuzz target
    // (audio/fuzz) checks that; this is the second line of defence, so that
    // a decoder bug still ends as a failed task, never a dead worker.
    catch_unwind(AssertUnwindSafe(|| decode(bytes, content_type, limits))).unwrap_or_else(|_| {
        Err(AudioError::Undecodable(
            "the decoder failed on this file".into(),
        ))
    })
}

fn decode(
    bytes: &[u8],
    content_type: &str,
    limits: &DecodeLimits,
) -> Result<DecodedAudio, AudioError> {
    let mut hint = Hint::new();
    if let Ok(format) = UploadFormat::parse(content_type) {
        hint.with_extension(format.extension())
            .mime_type(format.content_type());
    }
    let source = MediaSourceStream::new(
        Box::new(Cursor::new(bytes.to_vec())),
        MediaSourceStreamOptions::default(),
    );
    let mut reader = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|err| match err {
            SymphoniaError::Unsupported(_) => {
                AudioError::Undecodable("not a WAV, FLAC, MP3 or Ogg file".into())
            }
            other => AudioError::Undecodable(describe(&other)),
        })?;

    let track = reader
        .default_track(TrackType::Audio)
        .ok_or_else(|| AudioError::Undecodable("the file has no audio track".into()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|params| params.audio())
        .ok_or_else(|| AudioError::Undecodable("the audio track has no codec parameters".into()))?
        .clone();
    if params.codec == CODEC_ID_OPUS {
        return Err(AudioError::Unsupported(
            "Ogg Opus cannot be read yet; send WAV, FLAC, MP3 or Ogg Vorbis".into(),
        ));
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|err| match err {
            SymphoniaError::Unsupported(_) => AudioError::Unsupported(
                "the audio codec is not one of PCM, FLAC, MP3 or Vorbis".into(),
            ),
            other => AudioError::Undecodable(describe(&other)),
        })?;

    let mut samples: Vec<f32> = Vec::new();
    let mut packet_samples: Vec<f32> = Vec::new();
    // Set by the first decoded buffer: (rate, channels, frame cap).
    let mut layout: Option<(u32, usize, usize)> = None;
    let mut truncated = false;
    let mut bad_in_a_row = 0u32;
    let mut last_error: Option<String> = None;

    loop {
        let packet = match reader.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) | Err(SymphoniaError::ResetRequired) => break,
            Err(err) => {
                // A file cut short or corrupt past some point keeps what came
                // before; one with nothing decodable is reported below.
                last_error = Some(describe(&err));
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_)) => {
                bad_in_a_row += 1;
                last_error = Some("a packet is corrupt".into());
                if bad_in_a_row > MAX_CONSECUTIVE_BAD_PACKETS {
                    break;
                }
                continue;
            }
            Err(err) => {
                last_error = Some(describe(&err));
                break;
            }
        };
        bad_in_a_row = 0;
        if buffer.frames() == 0 {
            continue;
        }
        let rate = buffer.spec().rate();
        let channels = buffer.spec().channels().count();
        let (_, _, frame_cap) = match layout {
            None => {
                let cap = frame_cap(rate, channels, limits)?;
                *layout.insert((rate, channels, cap))
            }
            Some((first_rate, first_channels, cap)) => {
                if (rate, channels) != (first_rate, first_channels) {
                    return Err(AudioError::Unsupported(format!(
                        "the audio changes from {first_rate} Hz, {first_channels} channels \
                         to {rate} Hz, {channels} channels part way through"
                    )));
                }
                (rate, channels, cap)
            }
        };
        buffer.copy_to_vec_interleaved(&mut packet_samples);
        let room = frame_cap * channels - samples.len();
        if packet_samples.len() >= room {
            truncated = packet_samples.len() > room;
            samples.extend_from_slice(&packet_samples[..room]);
            if truncated {
                break;
            }
        } else {
            samples.extend_from_slice(&packet_samples);
        }
    }

    let Some((sample_rate, channels, _)) = layout.filter(|_| !samples.is_empty()) else {
        return Err(AudioError::Undecodable(match last_error {
            Some(err) => format!("no audio could be decoded ({err})"),
            None => "the file holds no audio samples".into(),
        }));
    };
    crate::resample::sanitize(&mut samples);
    Ok(DecodedAudio {
        clip: Clip {
            samples,
            sample_rate,
            // At most MAX_CHANNELS, checked by frame_cap.
            channels: channels as u16,
        },
        truncated,
    })
}

/// Checks the layout of the first decoded buffer and returns how many frames
/// may be kept.
fn frame_cap(rate: u32, channels: usize, limits: &DecodeLimits) -> Result<usize, AudioError> {
    if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
        return Err(AudioError::Unsupported(format!(
            "its sample rate of {rate} Hz is outside {MIN_SAMPLE_RATE} to {MAX_SAMPLE_RATE} Hz"
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(AudioError::Unsupported(format!(
            "it has {channels} channels; at most {MAX_CHANNELS} are read"
        )));
    }
    let seconds = if limits.max_seconds.is_finite() {
        limits.max_seconds.max(0.0)
    } else {
        0.0
    };
    let frames = (seconds * f64::from(rate)).ceil() as usize;
    if frames.saturating_mul(channels) > limits.max_samples {
        return Err(AudioError::Unsupported(format!(
            "{rate} Hz with {channels} channels is too much audio to read {seconds} s of; \
             send a lower rate or fewer channels"
        )));
    }
    Ok(frames.max(1))
}

/// One line for a symphonia error, without its module-path prefixes.
fn describe(err: &SymphoniaError) -> String {
    match err {
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            "the file ends early".into()
        }
        SymphoniaError::IoError(io) => format!("read error: {io}"),
        SymphoniaError::DecodeError(what) => format!("malformed data ({what})"),
        SymphoniaError::Unsupported(what) => format!("unsupported feature ({what})"),
        SymphoniaError::LimitError(what) => format!("a decoder limit was reached ({what})"),
        SymphoniaError::SeekError(_) => "the file could not be seeked".into(),
        SymphoniaError::ResetRequired => "the stream changes part way through".into(),
        other => other.to_string(),
    }
}
