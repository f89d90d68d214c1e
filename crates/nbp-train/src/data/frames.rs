//! Which native frames of a video make up a clip (official rules, reference §4.2).

use nbp_core::video::{ClipStart, clip_start, resample_indices};

use super::Split;

/// The frames chosen for one clip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSelection {
    /// Native frame indices of the clip, in order (at most the requested number of frames).
    pub indices: Vec<usize>,
    /// Frames available after resampling (before the clip is cut).
    pub available: usize,
    /// Black frames to append because the video is too short.
    pub padded: usize,
}

/// Chooses the native frames of a `frames`-frame clip from a video of `native_len` frames.
///
/// 1. Resampling: with a `target_fps` below `native_fps`, `n = int(len / native · target)` frames at
///    `floor(linspace(0, len − 1, n))`; otherwise every frame ([`resample_indices`]).
/// 2. Start: [`Split::Eval`] takes the centre (`available/2 − frames/2`), [`Split::Train`] a start drawn
///    uniformly from `0 ..= available − frames` by [`random_start`]`(seed, index)`.
/// 3. A video with fewer than `frames` resampled frames gives all of them, and `padded` says how many black
///    frames complete the clip.
pub fn select_frames(
    native_len: usize,
    native_fps: f64,
    target_fps: Option<f64>,
    frames: usize,
    split: Split,
    seed: u64,
    index: usize,
) -> FrameSelection {
    let resampled = match target_fps {
        Some(target) => resample_indices(native_len, native_fps, target),
        None => (0..native_len).collect(),
    };
    let available = resampled.len();
    if available <= frames {
        return FrameSelection { indices: resampled, available, padded: frames - available };
    }
    let start = match split {
        Split::Eval => clip_start(available, frames, ClipStart::Center),
        Split::Train => random_start(available, frames, seed, index),
    };
    FrameSelection { indices: resampled[start..start + frames].to_vec(), available, padded: 0 }
}

/// A start drawn uniformly from `0 ..= available − frames` (0 when the video is not longer than the clip), from a
/// small deterministic generator seeded with `(seed, index)`.
pub fn random_start(available: usize, frames: usize, seed: u64, index: usize) -> usize {
    let range = available.saturating_sub(frames) as u64 + 1;
    let mut state = seed ^ (index as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
    // Two rounds so that neighbouring seeds and indices give unrelated starts.
    splitmix64(&mut state);
    (splitmix64(&mut state) % range) as usize
}

/// One step of SplitMix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_start_covers_the_whole_range_uniformly() {
        let mut counts = [0usize; 4];
        for index in 0..4000 {
            counts[random_start(20, 17, 7, index)] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
        assert_eq!(random_start(17, 17, 1, 2), 0);
        assert_eq!(random_start(3, 17, 1, 2), 0);
    }
}
