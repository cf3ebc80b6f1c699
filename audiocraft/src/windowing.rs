//! Clips longer than the model's window, generated window by window.
//!
//! Follows audiocraft's `BaseGenModel._generate_tokens`
//! (audiocraft/models/genmodel.py; `MusicGen` sets `max_duration` 30 s, the
//! segment the models were trained on, and `extend_stride` 18 s): the first
//! window generates a whole window of codes; each next one starts
//! `stride` frames later, is prompted with the last `window - stride`
//! frames of the one before (12 s of context) and adds `stride` new frames
//! (18 s), the last window only what is left. The windows' new frames laid
//! end to end are the clip. A melody follows the clip's time line: window w
//! is conditioned on the melody from its start time on, wrapping around a
//! shorter melody.
//!
//! Here in frames, so that the seams are exact: audiocraft computes each
//! window's length as `int(min(duration - offset, max_duration) *
//! frame_rate)`, which is the same count where the durations are whole
//! frames.

/// How a model extends a clip past its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windowing {
    /// Frames one generation holds (prompt included).
    pub window: i64,
    /// Frames between the starts of consecutive windows (the new frames
    /// each window after the first adds).
    pub stride: i64,
}

/// MusicGen's window: the 30 s segment the models were trained on.
pub const MUSICGEN_WINDOW_SECONDS: f64 = 30.0;

/// MusicGen's `extend_stride`: 18 s of new audio per window, so each
/// window after the first sees 12 s of what came before.
pub const MUSICGEN_STRIDE_SECONDS: f64 = 18.0;

/// One generation of a clip's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The clip frame the window starts at (its prompt's first frame).
    pub start: i64,
    /// Frames taken from the end of the window before, given as the prompt.
    pub prompt: i64,
    /// Frames the window holds, prompt included.
    pub frames: i64,
}

impl Window {
    /// The frames it adds to the clip.
    pub fn new_frames(&self) -> i64 {
        self.frames - self.prompt
    }
}

impl Windowing {
    /// MusicGen's windowing at `frame_rate` frames a second, the window cut
    /// to `max_frames` where the decoder's positions allow fewer, the stride
    /// keeping its share of the window.
    pub fn musicgen(frame_rate: f64, max_frames: i64) -> Self {
        let window = ((MUSICGEN_WINDOW_SECONDS * frame_rate) as i64).min(max_frames);
        let stride = ((MUSICGEN_STRIDE_SECONDS * frame_rate) as i64)
            .min(window * 3 / 5)
            .max(1);
        Self { window, stride }
    }

    /// The windows of a clip of `total` frames, in order; one window when it
    /// fits. Their new frames add up to `total`.
    pub fn plan(&self, total: i64) -> Vec<Window> {
        if total <= self.window {
            return vec![Window {
                start: 0,
                prompt: 0,
                frames: total.max(0),
            }];
        }
        let mut windows = Vec::new();
        let (mut offset, mut prompt) = (0i64, 0i64);
        while offset + prompt < total {
            let frames = (total - offset).min(self.window);
            windows.push(Window {
                start: offset,
                prompt,
                frames,
            });
            // `prompt_tokens = gen_tokens[:, :, stride_tokens:]`
            prompt = (frames - self.stride).max(0);
            offset += self.stride;
        }
        windows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_75_s_clip_takes_four_windows_with_seams_every_18_s() {
        let windowing = Windowing::musicgen(50.0, 2044);
        assert_eq!(
            windowing,
            Windowing {
                window: 1500,
                stride: 900
            }
        );
        let plan = windowing.plan(3750);
        let expect = |start, prompt, frames| Window {
            start,
            prompt,
            frames,
        };
        assert_eq!(
            plan,
            vec![
                expect(0, 0, 1500),
                expect(900, 600, 1500),
                expect(1800, 600, 1500),
                expect(2700, 600, 1050),
            ]
        );
        assert_eq!(plan.iter().map(Window::new_frames).sum::<i64>(), 3750);
    }

    #[test]
    fn a_clip_within_the_window_is_one_generation_and_every_plan_adds_up() {
        let windowing = Windowing {
            window: 10,
            stride: 6,
        };
        assert_eq!(
            windowing.plan(10),
            vec![Window {
                start: 0,
                prompt: 0,
                frames: 10
            }]
        );
        for total in 1..200 {
            let plan = windowing.plan(total);
            assert_eq!(
                plan.iter().map(Window::new_frames).sum::<i64>(),
                total,
                "{total}"
            );
            for pair in plan.windows(2) {
                // Each window is prompted with the end of the one before.
                assert_eq!(pair[1].start, pair[0].start + windowing.stride);
                assert_eq!(pair[1].prompt, pair[0].frames - windowing.stride);
                assert!(pair[1].new_frames() > 0);
            }
        }
    }

    #[test]
    fn a_decoder_shorter_than_30_s_gets_a_proportional_stride() {
        let windowing = Windowing::musicgen(50.0, 1000);
        assert_eq!(
            windowing,
            Windowing {
                window: 1000,
                stride: 600
            }
        );
    }
}
