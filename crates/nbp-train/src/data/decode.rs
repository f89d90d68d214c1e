//! Decoding one clip from a video file with the official frame selection.
//!
//! `nbp_core::video::read_video` only starts a clip at the beginning or the centre, while training needs a
//! random start chosen *after* the video's length is known. So this module decodes the video with
//! `nbp_core::video::decode_selected` (the decoder `read_video` uses), which picks the frames with
//! [`select_frames`] once it knows the length.

use std::path::Path;

use nbp_core::video::{Video, decode_selected};
use nbp_core::{Error, Result};

use super::ClipOptions;
use super::frames::select_frames;

/// Reads clip `index` of a dataset from the video file `path`: resampled to `opts.fps` (`None`: native rate),
/// resized to `opts.height × opts.width`, `opts.frames` frames from the centre ([`super::Split::Eval`]) or from
/// a start drawn from `(seed, index)` ([`super::Split::Train`]), padded with black frames at the end when the
/// video is too short; returns the clip and the number of black frames appended.
///
/// Errors: [`Error::File`] for a file that is not a readable video or has no frame (at the requested rate);
/// [`Error::External`] when ffmpeg/ffprobe are not installed.
pub fn read_clip(path: &Path, opts: &ClipOptions, seed: u64, index: usize) -> Result<(Video, usize)> {
    Ok(read_clips(path, opts, &[seed], index)?.remove(0))
}

/// [`read_clip`] for each of `seeds`, decoding the video once: one clip per seed, in order.
pub fn read_clips(path: &Path, opts: &ClipOptions, seeds: &[u64], index: usize) -> Result<Vec<(Video, usize)>> {
    opts.validate()?;
    let (h, w) = (opts.height, opts.width);
    let mut chosen = vec![];
    let (picked, native_len, native_fps, _) = decode_selected(path, Some((h, w)), |len, fps| {
        chosen =
            seeds.iter().map(|&seed| select_frames(len, fps, opts.fps, opts.frames, opts.split, seed, index)).collect();
        chosen.iter().flat_map(|c| c.indices.iter().copied()).collect()
    })?;
    if chosen.first().is_none_or(|c| c.indices.is_empty()) {
        return Err(Error::file(
            path,
            format!("has no frame at {} fps ({native_len} frames at {native_fps} fps)", opts.fps.unwrap_or(native_fps)),
        ));
    }
    let plane = h * w;
    let mut at = 0;
    chosen
        .iter()
        .map(|sel| {
            let n = sel.indices.len();
            let part = Video::from_rgb8(&picked[at..at + n])?;
            at += n;
            let mut video = Video::black(opts.frames, h, w);
            for c in 0..3 {
                video.data[c * opts.frames * plane..][..n * plane]
                    .copy_from_slice(&part.data[c * n * plane..][..n * plane]);
            }
            Ok((video, sel.padded))
        })
        .collect()
}
