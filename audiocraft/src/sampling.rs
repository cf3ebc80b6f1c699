//! Turning the decoder's logits into the next codes: classifier-free
//! guidance, then greedy choice or seeded sampling with temperature, top-k and
//! top-p.
//!
//! Follows the logits processors `transformers` applies in
//! `MusicgenForConditionalGeneration.generate`:
//! `ClassifierFreeGuidanceLogitsProcessor` (`uncond + (cond - uncond) * scale`,
//! only when the scale is above 1), then `TemperatureLogitsWarper`,
//! `TopKLogitsWarper` and `TopPLogitsWarper`, in that order, all in f32.
//!
//! The random draw does not use libtorch's global generator: each generation
//! owns a SplitMix64 stream seeded from the request, and picks a code by
//! inverting the cumulative distribution with one uniform number per
//! (step, clip, codebook). So two jobs running on the same process never
//! disturb each other's randomness, and a seed means the same codes on every
//! run. The numbers of a whole generation are drawn on the host before it
//! starts and copied to the device once ([`draw_uniforms`]); a step reads its
//! row there, so sampling never waits for the host.

use tch::{Kind, TchError, Tensor};

/// How a code is chosen from the guided logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decoding {
    /// Argmax, as `generate(do_sample=False)`.
    Greedy,
    /// `top_k` 0 and `top_p` 0 (or >= 1) disable those filters.
    Sample {
        temperature: f64,
        top_k: i64,
        top_p: f64,
    },
}

impl Decoding {
    /// The core request parameters' convention: temperature 0 means greedy.
    pub fn from_params(temperature: f64, top_k: u32, top_p: f64) -> Self {
        if temperature <= 0.0 {
            Decoding::Greedy
        } else {
            Decoding::Sample {
                temperature,
                top_k: i64::from(top_k),
                top_p,
            }
        }
    }
}

/// Classifier-free guidance. `logits`: [2 * batch, ...] with the conditional
/// half first; returns [batch, ...]. With `scale <= 1` there is no
/// unconditional half and the logits pass through.
pub fn guide(logits: &Tensor, scale: f64) -> Result<Tensor, TchError> {
    if scale <= 1.0 {
        return Ok(logits.shallow_clone());
    }
    let half = logits.size().first().copied().unwrap_or(0) / 2;
    let cond = logits.f_narrow(0, 0, half)?;
    let uncond = logits.f_narrow(0, half, half)?;
    uncond.f_add(&cond.f_sub(&uncond)?.f_mul_scalar(scale)?)
}

/// SplitMix64 (Steele, Lea and Flood, 2014): tiny, fast and good enough to
/// drive sampling; the point is reproducibility, not cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// A seed from the OS-seeded hasher, for requests without one.
    pub fn from_entropy() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(0x5eed);
        Self(hasher.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `steps` x `rows` uniform numbers [steps, rows] f64 on `device`, drawn in
/// step-major order: row r of step t is the (t * rows + r)-th draw.
pub fn draw_uniforms(
    rng: &mut SplitMix64,
    steps: i64,
    rows: i64,
    device: tch::Device,
) -> Result<Tensor, TchError> {
    let draws: Vec<f64> = (0..steps * rows).map(|_| rng.next_f64()).collect();
    Tensor::from_slice(&draws)
        .f_view([steps, rows])?
        .f_to_device(device)
}

/// Chooses one code per row of `logits` [rows, vocab] (f32). `uniforms`
/// [rows, 1] f64 in [0, 1), on the logits' device, drive sampling; greedy
/// decoding needs none.
pub fn select(
    logits: &Tensor,
    decoding: Decoding,
    uniforms: Option<&Tensor>,
) -> Result<Tensor, TchError> {
    let logits = logits.f_to_kind(Kind::Float)?;
    match decoding {
        Decoding::Greedy => logits.f_argmax(-1, false),
        Decoding::Sample {
            temperature,
            top_k,
            top_p,
        } => {
            let uniforms = uniforms.ok_or_else(|| {
                TchError::Kind("sampling needs one uniform number per row".to_owned())
            })?;
            // As `generate`, which adds no temperature warper for 1.
            let mut scores = if temperature == 1.0 {
                logits
            } else {
                logits.f_div_scalar(temperature)?
            };
            scores = top_k_filter(&scores, top_k)?;
            scores = top_p_filter(&scores, top_p)?;
            sample_rows(&scores, uniforms)
        }
    }
}

/// `TopKLogitsWarper`: keep scores at least as large as the k-th largest.
fn top_k_filter(scores: &Tensor, top_k: i64) -> Result<Tensor, TchError> {
    let vocab = scores.size().last().copied().unwrap_or(0);
    let k = top_k.min(vocab);
    if k <= 0 || k == vocab {
        return Ok(scores.shallow_clone());
    }
    let (values, _) = scores.f_topk(k, -1, true, true)?;
    let kth = values.f_narrow(-1, k - 1, 1)?;
    scores.f_masked_fill(&scores.f_lt_tensor(&kth)?, f64::NEG_INFINITY)
}

/// `TopPLogitsWarper`: drop the least likely codes whose total probability
/// stays within `1 - top_p`, always keeping the most likely one.
fn top_p_filter(scores: &Tensor, top_p: f64) -> Result<Tensor, TchError> {
    if top_p <= 0.0 || top_p >= 1.0 {
        return Ok(scores.shallow_clone());
    }
    let (sorted, indices) = scores.f_sort(-1, false)?;
    let cumulative = sorted
        .f_softmax(-1, Kind::Float)?
        .f_cumsum(-1, Kind::Float)?;
    let remove = cumulative.f_le(1.0 - top_p)?;
    let vocab = scores.size().last().copied().unwrap_or(1);
    let _ = remove.f_narrow(-1, vocab - 1, 1)?.f_fill_(0)?;
    let remove = remove.f_scatter(-1, &indices, &remove)?;
    scores.f_masked_fill(&remove, f64::NEG_INFINITY)
}

/// Inverse-CDF sampling with one uniform draw per row ([rows, 1] f64).
fn sample_rows(scores: &Tensor, uniforms: &Tensor) -> Result<Tensor, TchError> {
    let vocab = scores.size().last().copied().unwrap_or(1);
    let cdf = scores
        .f_softmax(-1, Kind::Float)?
        .f_cumsum(-1, Kind::Double)?;
    let total = cdf.f_narrow(-1, vocab - 1, 1)?;
    let target = uniforms.f_mul(&total)?;
    // The chosen code is the number of CDF entries at or below the target;
    // zero-probability codes never satisfy cdf[i-1] <= t < cdf[i].
    cdf.f_le_tensor(&target)?
        .f_sum_dim_intlist(-1, false, Kind::Int64)?
        .f_clamp_max(vocab - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn guidance_extrapolates_from_the_unconditional_half() {
        let logits = Tensor::from_slice(&[2.0f32, 0.0, 1.0, 1.0]).view([2, 2]);
        let guided = guide(&logits, 3.0).expect("guide");
        assert_eq!(
            Vec::<f32>::try_from(guided.view([-1])).expect("vec"),
            vec![4.0, -2.0]
        );
        let same = guide(&logits, 1.0).expect("guide");
        assert_eq!(same.size(), vec![2, 2]);
    }

    #[test]
    fn top_k_one_is_greedy_whatever_the_draw() {
        let logits = Tensor::from_slice(&[0.1f32, 3.0, 0.5, -1.0, 2.0, 2.5]).view([2, 3]);
        let mut rng = SplitMix64::new(1);
        for _ in 0..20 {
            let u = draw_uniforms(&mut rng, 1, 2, Device::Cpu)
                .expect("draws")
                .view([2, 1]);
            let codes = select(
                &logits,
                Decoding::Sample {
                    temperature: 1.0,
                    top_k: 1,
                    top_p: 0.0,
                },
                Some(&u),
            )
            .expect("select");
            assert_eq!(Vec::<i64>::try_from(codes).expect("vec"), vec![1, 2]);
        }
    }

    #[test]
    fn top_p_keeps_only_the_nucleus() {
        // probabilities ~ [0.7, 0.2, 0.1]: top_p 0.5 keeps only the first.
        let logits = Tensor::from_slice(&[0.7f32.ln(), 0.2f32.ln(), 0.1f32.ln()]).view([1, 3]);
        let mut rng = SplitMix64::new(9);
        for _ in 0..20 {
            let u = draw_uniforms(&mut rng, 1, 1, Device::Cpu).expect("draws");
            let codes = select(
                &logits,
                Decoding::Sample {
                    temperature: 1.0,
                    top_k: 0,
                    top_p: 0.5,
                },
                Some(&u),
            )
            .expect("select");
            assert_eq!(codes.int64_value(&[0]), 0);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_codes_and_frequencies_follow_the_distribution() {
        let logits = Tensor::from_slice(&[0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()])
            .view([1, 3])
            .repeat([4000, 1]);
        let decoding = Decoding::Sample {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.0,
        };
        let draws =
            |seed| draw_uniforms(&mut SplitMix64::new(seed), 4000, 1, Device::Cpu).expect("draws");
        let a = select(&logits, decoding, Some(&draws(42))).expect("a");
        let b = select(&logits, decoding, Some(&draws(42))).expect("b");
        assert!(a.equal(&b));
        assert!(!a.equal(&select(&logits, decoding, Some(&draws(43))).expect("c")));
        let counts = Vec::<i64>::try_from(a.bincount(None::<Tensor>, 3)).expect("counts");
        let freq: Vec<f64> = counts.iter().map(|&c| c as f64 / 4000.0).collect();
        for (f, p) in freq.iter().zip([0.5, 0.3, 0.2]) {
            assert!((f - p).abs() < 0.03, "{freq:?}");
        }
    }
}
