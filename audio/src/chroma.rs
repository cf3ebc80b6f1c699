//! The melody chromagram MusicGen-melody is conditioned on, computed as
//! transformers' `MusicgenMelodyFeatureExtractor` computes it
//! (models/musicgen_melody/feature_extraction_musicgen_melody.py, with the
//! filter bank of audio_utils.chroma_filter_bank, itself librosa's
//! `filters.chroma`).
//!
//! From 32 kHz mono audio cut to 30 s: a power spectrogram (torchaudio's
//! `Spectrogram(n_fft=16384, hop_length=4096, power=2, center=True,
//! normalized=True)`: periodic Hann window, reflect padding by n_fft/2 on
//! each side, |X|² divided by the window's energy), projected onto 12 chroma
//! bins, each frame divided by its largest bin, then only the largest bin kept
//! (one-hot). 30 s give 1 + 960000/4096 = 235 frames, the model's
//! `chroma_length`. Then [`fit_chroma_length`] tiles or cuts the frames to
//! that length as `MusicgenMelodyForConditionalGeneration` does.
//!
//! Parity with transformers is tested against recorded outputs
//! (tests/fixtures/melody-chroma, made by tests/fixtures/make_chroma_fixture.py);
//! any change here must keep that test passing, not adjust it.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

/// The extractor's settings; [`ChromaConfig::musicgen_melody`] is the
/// published preprocessor config of every `facebook/musicgen-*melody*`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChromaConfig {
    pub sample_rate: u32,
    pub n_fft: usize,
    pub hop_length: usize,
    pub num_chroma: usize,
    /// Input past this many seconds is cut (the extractor's `chunk_length`).
    pub chunk_length_s: u32,
    /// Frames the model takes (`config.chroma_length`).
    pub chroma_length: usize,
}

impl ChromaConfig {
    pub const fn musicgen_melody() -> Self {
        ChromaConfig {
            sample_rate: 32_000,
            n_fft: 16_384,
            hop_length: 4_096,
            num_chroma: 12,
            chunk_length_s: 30,
            chroma_length: 235,
        }
    }

    /// Frequency bins of one spectrogram frame.
    fn bins(&self) -> usize {
        self.n_fft / 2 + 1
    }
}

/// Frames × chroma bins, frame-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Chromagram {
    pub num_chroma: usize,
    pub values: Vec<f32>,
}

impl Chromagram {
    pub fn frames(&self) -> usize {
        self.values.len() / self.num_chroma.max(1)
    }

    /// One frame's bins; panics if `index >= frames()`, as slice indexing.
    pub fn frame(&self, index: usize) -> &[f32] {
        &self.values[index * self.num_chroma..(index + 1) * self.num_chroma]
    }

    /// The index of each frame's largest bin (the first one on a tie, as
    /// `torch.argmax` picks).
    pub fn argmax(&self) -> Vec<usize> {
        self.values
            .chunks_exact(self.num_chroma.max(1))
            .map(|frame| {
                let mut best = 0;
                for (i, &v) in frame.iter().enumerate() {
                    if v > frame[best] {
                        best = i;
                    }
                }
                best
            })
            .collect()
    }

    /// The same frames with 1 at each frame's argmax and 0 elsewhere.
    pub fn one_hot(&self) -> Chromagram {
        let mut values = vec![0.0; self.values.len()];
        for (frame, hot) in self.argmax().into_iter().enumerate() {
            values[frame * self.num_chroma + hot] = 1.0;
        }
        Chromagram {
            num_chroma: self.num_chroma,
            values,
        }
    }
}

/// The chroma filter bank and FFT plan, built once and reused per request.
pub struct ChromaExtractor {
    config: ChromaConfig,
    /// num_chroma × bins, row-major, rounded to f32 as transformers keeps it
    /// (`torch.from_numpy(...).float()`).
    filters: Vec<f32>,
    window: Vec<f64>,
    /// 1 / sum(window²): torchaudio's `normalized=True` on a power spectrum.
    power_scale: f64,
    fft: Arc<dyn RealToComplex<f64>>,
}

impl ChromaExtractor {
    pub fn new(config: ChromaConfig) -> Self {
        let n = config.n_fft;
        // torch.hann_window is periodic by default.
        let window: Vec<f64> = (0..n)
            .map(|i| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / n as f64).cos())
            .collect();
        let energy: f64 = window.iter().map(|w| w * w).sum();
        let fft = RealFftPlanner::<f64>::new().plan_fft_forward(n);
        ChromaExtractor {
            filters: chroma_filter_bank(config.sample_rate, n, config.num_chroma),
            config,
            window,
            power_scale: 1.0 / energy,
            fft,
        }
    }

    pub fn config(&self) -> &ChromaConfig {
        &self.config
    }

    /// The chroma before the argmax: each frame divided by its largest bin
    /// (torch's `normalize(p=inf, eps=1e-6)`), values in [0, 1].
    pub fn normalized_chroma(&self, wav: &[f32]) -> Chromagram {
        let c = &self.config;
        let max_samples = c.chunk_length_s as usize * c.sample_rate as usize;
        let wav = &wav[..wav.len().min(max_samples)];

        // The extractor first zero-pads a clip shorter than one window to
        // n_fft, the odd sample on the right.
        let mut signal: Vec<f64> = Vec::with_capacity(wav.len().max(c.n_fft));
        if wav.len() < c.n_fft {
            let pad = c.n_fft - wav.len();
            signal.resize(pad / 2, 0.0);
            signal.extend(wav.iter().map(|&s| f64::from(s)));
            signal.resize(c.n_fft, 0.0);
        } else {
            signal.extend(wav.iter().map(|&s| f64::from(s)));
        }
        let padded = reflect_pad(&signal, c.n_fft / 2);
        let frames = 1 + (padded.len() - c.n_fft) / c.hop_length;

        let bins = c.bins();
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut power = vec![0.0f64; bins];
        let mut values = Vec::with_capacity(frames * c.num_chroma);
        for frame in 0..frames {
            let start = frame * c.hop_length;
            for ((x, &s), &w) in input
                .iter_mut()
                .zip(&padded[start..start + c.n_fft])
                .zip(&self.window)
            {
                *x = s * w;
            }
            // The buffers have the plan's own sizes, so this cannot fail.
            if self.fft.process(&mut input, &mut spectrum).is_err() {
                values.resize(values.len() + c.num_chroma, 0.0);
                continue;
            }
            for (p, z) in power.iter_mut().zip(&spectrum) {
                *p = z.norm_sqr() * self.power_scale;
            }
            let raw: Vec<f64> = self
                .filters
                .chunks_exact(bins)
                .map(|row| {
                    row.iter()
                        .zip(&power)
                        .map(|(&f, &p)| f64::from(f) * p)
                        .sum()
                })
                .collect();
            let peak = raw.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-6);
            values.extend(raw.iter().map(|v| (v / peak) as f32));
        }
        Chromagram {
            num_chroma: c.num_chroma,
            values,
        }
    }

    /// The one-hot chromagram the feature extractor returns.
    pub fn chroma(&self, wav: &[f32]) -> Chromagram {
        self.normalized_chroma(wav).one_hot()
    }
}

/// The one-hot melody chromagram of 32 kHz mono audio with MusicGen-melody's
/// settings: what transformers' feature extractor returns as
/// `input_features`. For repeated use keep a [`ChromaExtractor`].
pub fn melody_chroma(wav_32k_mono: &[f32]) -> Chromagram {
    ChromaExtractor::new(ChromaConfig::musicgen_melody()).chroma(wav_32k_mono)
}

/// Tiles a chromagram shorter than `chroma_length` frames (repeating it
/// whole) and cuts it to exactly `chroma_length`, as
/// `MusicgenMelodyForConditionalGeneration` does before it prepends the
/// projected chroma to the decoder's input. An empty chromagram stays empty.
pub fn fit_chroma_length(chroma: &Chromagram, chroma_length: usize) -> Chromagram {
    let frame_len = chroma.num_chroma.max(1);
    let frames = chroma.frames();
    if frames == 0 {
        return chroma.clone();
    }
    let values = chroma.values[..frames * frame_len]
        .iter()
        .copied()
        .cycle()
        .take(chroma_length * frame_len)
        .collect();
    Chromagram {
        num_chroma: chroma.num_chroma,
        values,
    }
}

/// The melody samples for one generation window of a long clip, as
/// audiocraft's `MusicGen._generate_tokens` takes them: `window` samples
/// starting at `start`, wrapping around to the beginning of the melody when
/// it is shorter (`ref_wav[..., positions % wav_length]`).
pub fn melody_window(wav: &[f32], start: usize, window: usize) -> Vec<f32> {
    if wav.is_empty() {
        return Vec::new();
    }
    (start..start + window)
        .map(|i| wav[i % wav.len()])
        .collect()
}

/// `torch.nn.functional.pad(mode="reflect")`: mirrors around the first and
/// last samples without repeating them. Signals shorter than `pad + 1` are
/// reflected back and forth.
fn reflect_pad(signal: &[f64], pad: usize) -> Vec<f64> {
    let n = signal.len();
    let mirror = |i: isize| -> f64 {
        if n == 1 {
            return signal[0];
        }
        let period = 2 * (n as isize - 1);
        let mut j = i.rem_euclid(period);
        if j >= n as isize {
            j = period - j;
        }
        signal[j as usize]
    };
    (-(pad as isize)..(n + pad) as isize).map(mirror).collect()
}

/// transformers' `chroma_filter_bank(num_frequency_bins=n_fft, num_chroma,
/// sampling_rate, tuning=0, power=2, weighting_parameters=(5, 2),
/// start_at_c_chroma=True)`, cut to the n_fft/2 + 1 bins of a real FFT.
/// Row-major, num_chroma × (n_fft/2 + 1), in f64 like numpy and then rounded
/// to f32.
fn chroma_filter_bank(sample_rate: u32, n_fft: usize, num_chroma: usize) -> Vec<f32> {
    let nc = num_chroma as f64;
    // frequencies = linspace(0, sr, n_fft, endpoint=False)[1:]
    // freq_bins = nc * hertz_to_octave(f) with A440 tuning: log2(f / (440/16))
    let mut freq_bins: Vec<f64> = (1..n_fft)
        .map(|k| {
            let f = k as f64 * f64::from(sample_rate) / n_fft as f64;
            nc * (f / (440.0 / 16.0)).log2()
        })
        .collect();
    // The 0 Hz bin is made up: 1.5 octaves below bin 1.
    freq_bins.insert(0, freq_bins[0] - 1.5 * nc);
    let columns = freq_bins.len();
    let mut bins_width: Vec<f64> = freq_bins
        .windows(2)
        .map(|w| (w[1] - w[0]).max(1.0))
        .collect();
    bins_width.push(1.0);

    let half = (nc / 2.0).round();
    let mut filters = vec![0.0f64; num_chroma * columns];
    for c in 0..num_chroma {
        for f in 0..columns {
            // Distance to chroma c, brought into -nc/2..nc/2.
            let d = (freq_bins[f] - c as f64 + half + 10.0 * nc).rem_euclid(nc) - half;
            filters[c * columns + f] = (-0.5 * (2.0 * d / bins_width[f]).powi(2)).exp();
        }
    }
    // Each column to unit L2 norm, then the Gaussian octave weighting
    // (centre octave 5, half-width 2).
    for f in 0..columns {
        let norm = (0..num_chroma)
            .map(|c| filters[c * columns + f].powi(2))
            .sum::<f64>()
            .sqrt();
        let weight = (-0.5 * ((freq_bins[f] / nc - 5.0) / 2.0).powi(2)).exp();
        for c in 0..num_chroma {
            filters[c * columns + f] = filters[c * columns + f] / norm * weight;
        }
    }
    // Start at C rather than A: np.roll(..., -3 * (nc // 12), axis=0).
    let shift = 3 * (num_chroma / 12);
    let bins = n_fft / 2 + 1;
    let mut out = Vec::with_capacity(num_chroma * bins);
    for c in 0..num_chroma {
        let source = (c + shift) % num_chroma;
        out.extend(
            filters[source * columns..source * columns + bins]
                .iter()
                .map(|&v| v as f32),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(freq: f64, seconds: f64) -> Vec<f32> {
        let n = (seconds * 32_000.0) as usize;
        (0..n)
            .map(|i| (0.3 * (2.0 * std::f64::consts::PI * freq * i as f64 / 32_000.0).sin()) as f32)
            .collect()
    }

    #[test]
    fn thirty_seconds_give_the_models_235_frames_and_longer_input_is_cut() {
        let extractor = ChromaExtractor::new(ChromaConfig::musicgen_melody());
        assert_eq!(extractor.chroma(&vec![0.0; 30 * 32_000]).frames(), 235);
        assert_eq!(extractor.chroma(&vec![0.0; 31 * 32_000]).frames(), 235);
        assert_eq!(extractor.chroma(&[0.0; 10]).frames(), 5);
    }

    #[test]
    fn a_pure_tone_lights_its_pitch_class() {
        // A4 is chroma 9 when C is 0; C5 is 0; E5 is 4.
        for (freq, class) in [(440.0, 9), (523.25, 0), (659.26, 4)] {
            let chroma = melody_chroma(&tone(freq, 2.0));
            assert!(chroma.argmax().iter().all(|&c| c == class), "{freq} Hz");
            assert!(chroma.values.iter().all(|&v| v == 0.0 || v == 1.0));
        }
    }

    #[test]
    fn silence_is_bin_zero_and_never_nan() {
        let chroma = ChromaExtractor::new(ChromaConfig::musicgen_melody())
            .normalized_chroma(&vec![0.0; 40_000]);
        assert!(chroma.values.iter().all(|&v| v == 0.0));
        assert!(chroma.argmax().iter().all(|&c| c == 0));
    }

    #[test]
    fn short_chroma_is_tiled_and_long_chroma_cut() {
        let chroma = Chromagram {
            num_chroma: 2,
            values: vec![1.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        };
        let tiled = fit_chroma_length(&chroma, 7);
        assert_eq!(tiled.frames(), 7);
        assert_eq!(
            tiled.argmax(),
            vec![0, 1, 0, 0, 1, 0, 0],
            "whole repeats of the three frames"
        );
        assert_eq!(fit_chroma_length(&chroma, 2).argmax(), vec![0, 1]);
    }

    #[test]
    fn melody_windows_wrap_around_a_short_melody() {
        let wav = [1.0, 2.0, 3.0];
        assert_eq!(melody_window(&wav, 2, 5), vec![3.0, 1.0, 2.0, 3.0, 1.0]);
        assert!(melody_window(&[], 0, 4).is_empty());
    }

    #[test]
    fn reflect_padding_mirrors_without_repeating_the_edge() {
        assert_eq!(
            reflect_pad(&[1.0, 2.0, 3.0, 4.0], 2),
            vec![3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]
        );
    }

    #[test]
    fn each_filter_bank_column_starts_at_c() {
        let bank = chroma_filter_bank(32_000, 16_384, 12);
        let bins = 8_193;
        assert_eq!(bank.len(), 12 * bins);
        // The bin nearest 261.63 Hz (C4) weighs most on chroma 0.
        let bin = (261.63f64 / (32_000.0 / 16_384.0)).round() as usize;
        let column: Vec<f32> = (0..12).map(|c| bank[c * bins + bin]).collect();
        let best = (0..12)
            .max_by(|&a, &b| column[a].total_cmp(&column[b]))
            .unwrap();
        assert_eq!(best, 0);
    }
}
