//! Encoding a generated clip as the file a client downloads: WAV (16-bit
//! PCM), FLAC, MP3 (LAME) or Ogg Vorbis (libvorbis aoTuV).
//!
//! Every format starts from the same samples: non-finite ones become 0 and
//! the rest are clamped to [-1, 1], as the WAV writer always did. WAV must
//! stay byte-identical to `sound_creator_core::audio::encode_wav`, FLAC
//! holds exactly the WAV's 16-bit samples, and the lossy formats keep the
//! clip's length (MP3 through the LAME tag's delay and padding, Vorbis
//! through its granule positions). Output is deterministic: the same clip
//! gives the same bytes, so a stored file's sha256 is reproducible.

use std::num::{NonZeroU32, NonZeroU8};

use flacenc::component::BitRepr;
use flacenc::error::Verify;
use mp3lame_encoder::{Bitrate, FlushGap, InterleavedPcm, MonoPcm, Quality};
use vorbis_rs::VorbisEncoderBuilder;

use crate::{AudioError, Clip, OutputFormat};

/// Frames handed to an encoder at a time.
const BLOCK_FRAMES: usize = 4096;
/// The Ogg stream serial. The spec asks for a random one so that chained
/// streams differ, but an output is a single stream, and a fixed serial
/// keeps the bytes reproducible.
const OGG_STREAM_SERIAL: i32 = 0x5C_0D_E0;

/// An encoded output file.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedAudio {
    pub bytes: Vec<u8>,
    pub format: OutputFormat,
}

impl EncodedAudio {
    pub fn content_type(&self) -> &'static str {
        self.format.content_type()
    }

    pub fn extension(&self) -> &'static str {
        self.format.extension()
    }
}

/// Encodes `clip` (any rate; MP3 only at LAME's rates, which include the
/// models' 32 and 16 kHz) in `format`.
pub fn encode(clip: &Clip, format: OutputFormat) -> Result<EncodedAudio, AudioError> {
    clip.check()?;
    let bytes = match format {
        OutputFormat::Wav => {
            // RIFF sizes are 32-bit: about 18 hours of 32 kHz stereo.
            if clip.samples.len() > (u32::MAX as usize - 36) / 2 {
                return Err(AudioError::InvalidClip(
                    "the clip is too long for a WAV file".into(),
                ));
            }
            encode_wav(clip)
        }
        OutputFormat::Flac => encode_flac(clip)?,
        OutputFormat::Mp3 => encode_mp3(clip)?,
        OutputFormat::Ogg => encode_vorbis(clip)?,
    };
    Ok(EncodedAudio { bytes, format })
}

/// The sample every format starts from.
fn bounded(s: f32) -> f32 {
    if s.is_finite() {
        s.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// The WAV writer's 16-bit quantization (round half away from zero of
/// s * 32767, so -1 is -32767, never -32768).
fn pcm16(s: f32) -> i16 {
    (bounded(s) * 32767.0).round() as i16
}

/// A canonical 44-byte-header RIFF/WAVE file of 16-bit PCM.
fn encode_wav(clip: &Clip) -> Vec<u8> {
    let channels = clip.channels.max(1);
    let data_len = (clip.samples.len() * 2) as u32;
    let byte_rate = clip.sample_rate * u32::from(channels) * 2;
    let mut out = Vec::with_capacity(44 + data_len as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVE");
    out.extend_from_slice(b"fmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&clip.sample_rate.to_le_bytes());
    out.extend_from_slice(&byte_rate.to_le_bytes());
    out.extend_from_slice(&(channels * 2).to_le_bytes()); // block align
    out.extend_from_slice(&16u16.to_le_bytes()); // bits per sample
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for &s in &clip.samples {
        out.extend_from_slice(&pcm16(s).to_le_bytes());
    }
    out
}

fn encode_flac(clip: &Clip) -> Result<Vec<u8>, AudioError> {
    let failed = |message: String| AudioError::Encode {
        format: "flac",
        message,
    };
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .map_err(|(_, err)| failed(err.to_string()))?;
    let samples: Vec<i32> = clip.samples.iter().map(|&s| i32::from(pcm16(s))).collect();
    let source = flacenc::source::MemSource::from_samples(
        &samples,
        usize::from(clip.channels),
        16,
        clip.sample_rate as usize,
    );
    let mut stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|err| failed(err.to_string()))?;
    // flacenc records the last (short) block as the minimum block size; the
    // format excludes the last block from it, and decoders that check
    // (symphonia) take min != max for a variable-block stream and reject
    // every fixed-block frame. The blocks are all `block_size` but the last.
    stream
        .stream_info_mut()
        .set_block_sizes(config.block_size, config.block_size)
        .map_err(|err| failed(err.to_string()))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|err| failed(err.to_string()))?;
    Ok(sink.into_inner())
}

/// Constant bit rate by rate and channels: 32 kHz and up is MPEG-1 (up to
/// 320 kbit/s), below it MPEG-2 (up to 160).
fn mp3_bitrate(sample_rate: u32, channels: u16) -> Bitrate {
    match (sample_rate >= 32_000, channels) {
        (true, 1) => Bitrate::Kbps128,
        (true, _) => Bitrate::Kbps192,
        (false, 1) => Bitrate::Kbps64,
        (false, _) => Bitrate::Kbps96,
    }
}

fn encode_mp3(clip: &Clip) -> Result<Vec<u8>, AudioError> {
    let failed = |message: String| AudioError::Encode {
        format: "mp3",
        message,
    };
    if clip.channels > 2 {
        return Err(failed(format!(
            "MP3 holds 1 or 2 channels, not {}",
            clip.channels
        )));
    }
    let mut builder =
        mp3lame_encoder::Builder::new().ok_or_else(|| failed("LAME did not initialise".into()))?;
    builder
        .set_num_channels(clip.channels as u8)
        .and_then(|()| builder.set_sample_rate(clip.sample_rate))
        // Without this LAME would pick its own output rate.
        .and_then(|()| builder.set_output_sample_rate(NonZeroU32::new(clip.sample_rate)))
        .and_then(|()| builder.set_brate(mp3_bitrate(clip.sample_rate, clip.channels)))
        .and_then(|()| builder.set_quality(Quality::Good))
        // The Info tag frame carries the encoder delay and padding, which
        // decoders use to give back exactly the clip's frames.
        .and_then(|()| builder.set_to_write_vbr_tag(true))
        .map_err(|err| failed(format!("settings refused ({err:?})")))?;
    let mut encoder = builder.build().map_err(|err| {
        failed(format!(
            "LAME refused {} Hz, {} channels ({err:?})",
            clip.sample_rate, clip.channels
        ))
    })?;

    let samples: Vec<f32> = clip.samples.iter().map(|&s| bounded(s)).collect();
    let mut out = Vec::new();
    let channels = usize::from(clip.channels);
    for block in samples.chunks(BLOCK_FRAMES * channels) {
        out.reserve(mp3lame_encoder::max_required_buffer_size(
            block.len() / channels,
        ));
        let written = if channels == 1 {
            encoder.encode_to_vec(MonoPcm(block), &mut out)
        } else {
            encoder.encode_to_vec(InterleavedPcm(block), &mut out)
        };
        written.map_err(|err| failed(format!("{err:?}")))?;
    }
    // lame_encode_flush pads and encodes the samples still buffered; the
    // "no gap" flush would keep them for a following file and lose them.
    out.reserve(mp3lame_encoder::max_required_buffer_size(0));
    encoder
        .flush_to_vec::<FlushGap>(&mut out)
        .map_err(|err| failed(format!("{err:?}")))?;

    // LAME left a placeholder frame of the tag's size at the start of the
    // stream; now that the totals are known, the real tag replaces it.
    let mut tag = Vec::new();
    let tag_size = encoder.lame_tag_size();
    if tag_size > 0 {
        tag.reserve(tag_size);
        if encoder.lame_tag_encode_to_vec(&mut tag).is_some() && tag.len() <= out.len() {
            out[..tag.len()].copy_from_slice(&tag);
        }
    }
    Ok(out)
}

fn encode_vorbis(clip: &Clip) -> Result<Vec<u8>, AudioError> {
    let failed = |message: String| AudioError::Encode {
        format: "ogg",
        message,
    };
    let rate = NonZeroU32::new(clip.sample_rate).ok_or_else(|| failed("no sample rate".into()))?;
    let channel_count = u8::try_from(clip.channels)
        .ok()
        .and_then(NonZeroU8::new)
        .ok_or_else(|| failed(format!("{} channels", clip.channels)))?;
    let mut encoder =
        VorbisEncoderBuilder::new_with_serial(rate, channel_count, Vec::new(), OGG_STREAM_SERIAL)
            .build()
            .map_err(|err| failed(err.to_string()))?;
    let channels = usize::from(clip.channels);
    let mut planes: Vec<Vec<f32>> = vec![Vec::with_capacity(BLOCK_FRAMES); channels];
    for block in clip.samples.chunks(BLOCK_FRAMES * channels) {
        for plane in &mut planes {
            plane.clear();
        }
        for frame in block.chunks_exact(channels) {
            for (plane, &s) in planes.iter_mut().zip(frame) {
                plane.push(bounded(s));
            }
        }
        encoder
            .encode_audio_block(&planes)
            .map_err(|err| failed(err.to_string()))?;
    }
    encoder.finish().map_err(|err| failed(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_is_the_wav_writers() {
        assert_eq!(pcm16(1.0), 32767);
        assert_eq!(pcm16(-1.0), -32767);
        assert_eq!(pcm16(2.0), 32767);
        assert_eq!(pcm16(f32::NAN), 0);
        assert_eq!(pcm16(0.5), 16384);
    }

    #[test]
    fn malformed_clips_are_refused_not_encoded() {
        let odd = Clip {
            samples: vec![0.0; 3],
            sample_rate: 32_000,
            channels: 2,
        };
        for format in OutputFormat::ALL {
            assert!(matches!(
                encode(&odd, format),
                Err(AudioError::InvalidClip(_))
            ));
        }
        let surround = Clip {
            samples: vec![0.0; 6 * 100],
            sample_rate: 32_000,
            channels: 6,
        };
        assert!(matches!(
            encode(&surround, OutputFormat::Mp3),
            Err(AudioError::Encode { format: "mp3", .. })
        ));
    }

    #[test]
    fn empty_and_one_frame_clips_encode_without_panicking() {
        for samples in [vec![], vec![0.25, -0.25]] {
            let clip = Clip {
                samples,
                sample_rate: 32_000,
                channels: 2,
            };
            for format in OutputFormat::ALL {
                let encoded = encode(&clip, format).unwrap();
                assert!(!encoded.bytes.is_empty(), "{format}");
            }
        }
    }

    #[test]
    fn encoding_is_deterministic() {
        let clip = Clip {
            samples: (0..16_000)
                .map(|i| ((i as f32) * 0.05).sin() * 0.5)
                .collect(),
            sample_rate: 16_000,
            channels: 1,
        };
        for format in OutputFormat::ALL {
            let a = encode(&clip, format).unwrap();
            let b = encode(&clip, format).unwrap();
            assert_eq!(a.bytes, b.bytes, "{format}");
        }
    }
}
