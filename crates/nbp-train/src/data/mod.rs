//! Video datasets: where training and evaluation clips come from.
//!
//! A dataset is named by a [`DatasetSpec`] string (`moving-shapes`, `folder:<dir>`, `csv:<file>`,
//! `ucf:<root>[:<annotation-file>]`, `k600:<root>[:<annotation-file>]`) and opened into a [`ClipSource`]. Clips
//! are cut from video files as the official loader does it (reference §4.2): frames are resampled to the target
//! fps with the official index rule, resized directly to `height × width`, `frames` consecutive frames are taken
//! (a random start for [`Split::Train`], the centre for [`Split::Eval`]), and short videos are padded with black
//! frames at the end. [`Skipping`] wraps a source so that unreadable files are skipped and reported instead of
//! stopping a training run.

mod csv;
mod decode;
mod files;
mod frames;
mod moving_shapes_source;
mod skip;
mod spec;
mod ucf;

pub use csv::parse_manifest;
pub use decode::{read_clip, read_clips};
pub use files::{VIDEO_EXTENSIONS, VideoFileSource, VideoItem, is_video_file, scan_videos};
pub use frames::{FrameSelection, random_start, select_frames};
pub use moving_shapes_source::MovingShapesSource;
pub use skip::{SkipLog, Skipping};
pub use spec::DatasetSpec;
pub use ucf::{class_text, parse_annotations};

use nbp_core::video::Video;
use nbp_core::{Error, Result};

/// One training/eval example.
#[derive(Debug, Clone)]
pub struct Clip {
    /// The frames, `[3, T, H, W]` with values in `[0, 1]`.
    pub video: Video,
    /// Class index (into [`ClipSource::class_names`]).
    pub label: usize,
    /// Condition text, e.g. `"apply eye makeup"` (empty for unconditional datasets).
    pub text: String,
    /// Where the clip comes from: a file path, or `"moving-shapes #i"`.
    pub source: String,
    /// Black frames appended at the end because the video was shorter than the clip.
    pub padded: usize,
}

/// Which frames of a video become the clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Training: the start is drawn uniformly from the valid range (deterministic in `(seed, index)`).
    Train,
    /// Evaluation: the centre of the video (official rule `len/2 − T/2 …`).
    Eval,
}

/// What every clip of a dataset looks like.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipOptions {
    /// Frames per clip (short videos are padded with black frames at the end).
    pub frames: usize,
    /// Frame height every frame is resized to (aspect ratio not preserved, as the official loader).
    pub height: usize,
    /// Frame width every frame is resized to.
    pub width: usize,
    /// Frame rate videos are resampled to; `None` means the dataset's [`DatasetSpec::default_fps`], or the
    /// native rate when that is `None` too.
    pub fps: Option<f64>,
    /// Random (train) or centre (eval) clip start.
    pub split: Split,
}

impl ClipOptions {
    /// Checks that the sizes are positive and the frame rate, if any, is a positive number.
    pub fn validate(&self) -> Result<()> {
        if self.frames == 0 || self.height == 0 || self.width == 0 {
            return Err(Error::invalid(format!(
                "clip size must be at least 1 frame of 1×1 pixels, got {} frames of {}×{}",
                self.frames, self.height, self.width
            )));
        }
        if let Some(fps) = self.fps
            && !(fps.is_finite() && fps > 0.0)
        {
            return Err(Error::invalid(format!("frame rate must be a positive number, got {fps}")));
        }
        Ok(())
    }
}

/// A dataset of clips, addressed by index.
pub trait ClipSource: Send + Sync {
    /// Number of clips (videos).
    fn len(&self) -> usize;

    /// Whether the dataset has no clip.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Clip `index` (`< len()`). Deterministic: the same `(index, seed)` gives the same clip; the seed only drives
    /// the random start of [`Split::Train`] (pass a different seed each epoch to see different starts).
    fn clip(&self, index: usize, seed: u64) -> Result<Clip>;

    /// Clip `index` once for each of `seeds` (several random starts in one video), in order. Sources of video files
    /// decode the video once for all of them.
    fn clips(&self, index: usize, seeds: &[u64]) -> Result<Vec<Clip>> {
        seeds.iter().map(|&seed| self.clip(index, seed)).collect()
    }

    /// Class names, indexed by [`Clip::label`].
    fn class_names(&self) -> Vec<String>;

    /// One line for logs, e.g. `UCF-101: 9537 videos, 101 classes, root /data/UCF-101`.
    fn describe(&self) -> String;
}

impl<T: ClipSource + ?Sized> ClipSource for Box<T> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn clip(&self, index: usize, seed: u64) -> Result<Clip> {
        (**self).clip(index, seed)
    }
    fn clips(&self, index: usize, seeds: &[u64]) -> Result<Vec<Clip>> {
        (**self).clips(index, seeds)
    }
    fn class_names(&self) -> Vec<String> {
        (**self).class_names()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

impl<T: ClipSource + ?Sized> ClipSource for std::sync::Arc<T> {
    fn len(&self) -> usize {
        (**self).len()
    }
    fn clip(&self, index: usize, seed: u64) -> Result<Clip> {
        (**self).clip(index, seed)
    }
    fn clips(&self, index: usize, seeds: &[u64]) -> Result<Vec<Clip>> {
        (**self).clips(index, seeds)
    }
    fn class_names(&self) -> Vec<String> {
        (**self).class_names()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
}

/// The error for an index past the end of a dataset.
pub(crate) fn out_of_range(index: usize, len: usize) -> Error {
    Error::invalid(format!("clip index {index} is out of range: the dataset has {len} clips"))
}
