//! Decoding one clip from a video file with ffmpeg, with the official frame selection.
//!
//! `nbp_core::video::read_video` only starts a clip at the beginning or the centre, while training needs a
//! random start chosen *after* the video's length is known. So this module decodes the whole video once (as
//! `read_video` does), picks the frames with [`select_frames`], and converts only those. It uses the same
//! ffprobe/ffmpeg invocation and bilinear scaling as `read_video`, so both give identical pixels.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use nbp_core::video::Video;
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
    let native_fps = probe_fps(path)?;
    let (h, w) = (opts.height, opts.width);
    let raw = decode_rgb24(path, h, w)?;
    let frame_bytes = 3 * h * w;
    let native_len = raw.len() / frame_bytes;
    let sel = select_frames(native_len, native_fps, opts.fps, opts.frames, opts.split, seed, index);
    if sel.indices.is_empty() {
        return Err(Error::file(
            path,
            format!("has no frame at {} fps ({native_len} frames at {native_fps} fps)", opts.fps.unwrap_or(native_fps)),
        ));
    }
    let mut video = Video::black(opts.frames, h, w);
    let plane = h * w;
    for (t, &src) in sel.indices.iter().enumerate() {
        let frame = &raw[src * frame_bytes..(src + 1) * frame_bytes];
        for c in 0..3 {
            let dst = &mut video.data[(c * opts.frames + t) * plane..][..plane];
            for (d, px) in dst.iter_mut().zip(frame.chunks_exact(3)) {
                *d = px[c] as f32 / 255.0;
            }
        }
    }
    Ok(video)
}

fn ffmpeg_missing(tool: &str) -> Error {
    Error::External(format!(
        "`{tool}` was not found: reading video datasets needs ffmpeg (Debian/Ubuntu: `apt-get install ffmpeg`)"
    ))
}

/// Average frame rate of the first video stream (ffprobe), 25 when the file does not say.
fn probe_fps(path: &Path) -> Result<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,avg_frame_rate,r_frame_rate"])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|_| ffmpeg_missing("ffprobe"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::trim));
    if get("width").and_then(|v| v.parse::<u32>().ok()).is_none() {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = last_line(path, &err).unwrap_or("no video stream found");
        return Err(Error::file(path, format!("cannot be read as a video: {err}")));
    }
    let rate = |v: &str| -> Option<f64> {
        let (n, d) = v.split_once('/').unwrap_or((v, "1"));
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (d > 0.0 && n > 0.0).then(|| n / d)
    };
    Ok(get("avg_frame_rate").and_then(rate).or_else(|| get("r_frame_rate").and_then(rate)).unwrap_or(25.0))
}

/// Every frame of the first video stream as packed RGB24 bytes, resized to `h × w`.
fn decode_rgb24(path: &Path, h: usize, w: usize) -> Result<Vec<u8>> {
    let mut child = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vsync", "passthrough", "-vf"])
        .arg(format!("scale={w}:{h}:flags=bilinear"))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|_| ffmpeg_missing("ffmpeg"))?;
    // Read stderr on another thread: a corrupt file can print more errors than a pipe holds, which would
    // otherwise block ffmpeg while we wait for its stdout.
    let mut stderr = child.stderr.take().expect("piped");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).ok();
        s
    });
    let mut raw = Vec::new();
    let read = child.stdout.take().expect("piped").read_to_end(&mut raw);
    let status = child.wait().map_err(|e| Error::io(path, e))?;
    read.map_err(|e| Error::io(path, e))?;
    let err = err_reader.join().unwrap_or_default();
    let frame_bytes = 3 * h * w;
    raw.truncate(raw.len() / frame_bytes * frame_bytes);
    if raw.is_empty() {
        let msg = last_line(path, &err).unwrap_or("no frame could be decoded");
        return Err(Error::file(path, format!("cannot be decoded as a video: {msg}")));
    }
    if !status.success() {
        // Truncated files still yield their first frames; say so rather than failing silently.
        eprintln!(
            "warning: {}: ffmpeg reported an error after {} frames ({}); using the frames decoded so far",
            path.display(),
            raw.len() / frame_bytes,
            last_line(path, &err).unwrap_or("unknown error")
        );
    }
    Ok(raw)
}

/// The last line ffmpeg printed, without the `<path>: ` it often starts with (our errors name the file already).
fn last_line<'a>(path: &Path, stderr: &'a str) -> Option<&'a str> {
    let line = stderr.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let prefix = format!("{}: ", path.display());
    Some(line.strip_prefix(prefix.as_str()).unwrap_or(line))
}
