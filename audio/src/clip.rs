//! The in-memory audio every function of this crate takes or returns.
//!
//! It has the same shape as the generator's clip in `sound-creator-core`
//! (interleaved `f32` samples, a rate, a channel count) so that one can
//! become the other field by field; it must never grow fields that only one
//! side understands.

/// `channels` interleaved channels of samples, nominally in [-1, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub samples: Vec<f32>,
    pub sample_rate: u32,
    pub channels: u16,
}

impl Clip {
    /// Frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / usize::from(self.channels.max(1))
    }

    pub fn duration_seconds(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }

    /// Checks what every encoder and filter relies on: at least one channel,
    /// a rate, and whole frames.
    pub(crate) fn check(&self) -> Result<(), crate::AudioError> {
        if self.channels == 0 {
            return Err(crate::AudioError::InvalidClip(
                "the clip has no channels".into(),
            ));
        }
        if self.sample_rate == 0 {
            return Err(crate::AudioError::InvalidClip(
                "the clip has no sample rate".into(),
            ));
        }
        if !self
            .samples
            .len()
            .is_multiple_of(usize::from(self.channels))
        {
            return Err(crate::AudioError::InvalidClip(format!(
                "{} samples do not make whole frames of {} channels",
                self.samples.len(),
                self.channels
            )));
        }
        Ok(())
    }
}
