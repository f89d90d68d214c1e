//! Decoding one clip from a video file with the official frame selection.
//!
//! `nbp_core::video::read_video` only starts a clip at the beginning or the centre, while training needs a
//! random start chosen *after* the video's length is known. So this module decodes the whole video once with
//! `nbp_core::video::decode_frames` (the decoder `read_video` uses), then picks the frames with
//! [`select_frames`].

use std::path::Path;

use nbp_core::video::{Video, decode_frames};
use nbp_core::{Error, Result};

use super::ClipOptions;
use super::frames::select_frames;

/// Reads clip `index` of a dataset from the video file `path`: resampled to `opts.fps` (`None`: native rate),
/// resized to `opts.height × opts.width`, `opts.frames` frames from the centre ([`super::Split::Eval`]) or from
/// a start drawn from `(seed, index)` ([`super::Split::Train`]), padded with black frames at the end when the
/// video is too short.
///
/// Errors: [`Error::File`] for a file that is not a readable video or has no frame (at the requested rate);
/// [`Error::External`] when ffmpeg/ffprobe are not installed.
pub fn read_clip(path: &Path, opts: &ClipOptions, seed: u64, index: usize) -> Result<Video> {
    opts.validate()?;
    let (h, w) = (opts.height, opts.width);
    let (frames, native_fps) = decode_frames(path, Some((h, w)))?;
    let native_len = frames.len();
    let sel = select_frames(native_len, native_fps, opts.fps, opts.frames, opts.split, seed, index);
    if sel.indices.is_empty() {
        return Err(Error::file(
            path,
            format!("has no frame at {} fps ({native_len} frames at {native_fps} fps)", opts.fps.unwrap_or(native_fps)),
        ));
    }
    let picked: Vec<_> = sel.indices.iter().map(|&i| frames[i].clone()).collect();
    let part = Video::from_rgb8(&picked)?;
    let mut video = Video::black(opts.frames, h, w);
    let (plane, n) = (h * w, picked.len());
    for c in 0..3 {
        video.data[c * opts.frames * plane..][..n * plane].copy_from_slice(&part.data[c * n * plane..][..n * plane]);
    }
    Ok(video)
}
