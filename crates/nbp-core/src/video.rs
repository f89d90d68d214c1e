//! Video clips in memory and on disk.
//!
//! A [`Video`] holds RGB frames as `f32` in `[0, 1]`, laid out `[3, T, H, W]` (channels first, like the
//! tokenizer's input). Videos are read from any file that ffmpeg decodes or from a folder of image frames, and
//! written as GIF (pure Rust), MP4/WebM/MKV/AVI (through ffmpeg), a PNG grid, or a folder of PNG frames.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use image::{Rgb, RgbImage, Rgba, RgbaImage};

use crate::error::{Error, Result};

/// An RGB clip with values in `[0, 1]`, stored `[3, T, H, W]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Video {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    /// `3 · frames · height · width` values, channel-major.
    pub data: Vec<f32>,
}

impl Video {
    /// A clip from raw `[3, T, H, W]` data.
    pub fn new(frames: usize, height: usize, width: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != 3 * frames * height * width {
            return Err(Error::invalid(format!(
                "video data has {} values, expected 3·{frames}·{height}·{width} = {}",
                data.len(),
                3 * frames * height * width
            )));
        }
        Ok(Self { frames, height, width, data })
    }

    /// An all-black clip.
    pub fn black(frames: usize, height: usize, width: usize) -> Self {
        Self { frames, height, width, data: vec![0.0; 3 * frames * height * width] }
    }

    /// Builds a clip from 8-bit frames, which must all have the same size.
    pub fn from_rgb8(frames: &[RgbImage]) -> Result<Self> {
        let first = frames.first().ok_or_else(|| Error::invalid("a video needs at least one frame"))?;
        let (w, h) = (first.width() as usize, first.height() as usize);
        let mut v = Self::black(frames.len(), h, w);
        for (t, f) in frames.iter().enumerate() {
            if (f.width() as usize, f.height() as usize) != (w, h) {
                return Err(Error::invalid(format!(
                    "frame {t} is {}x{}, frame 0 is {w}x{h}: all frames must have the same size",
                    f.width(),
                    f.height()
                )));
            }
            for (x, y, p) in f.enumerate_pixels() {
                for c in 0..3 {
                    let i = v.index(c, t, y as usize, x as usize);
                    v.data[i] = p[c] as f32 / 255.0;
                }
            }
        }
        Ok(v)
    }

    /// Flat index of channel `c`, frame `t`, row `y`, column `x`.
    #[inline]
    pub fn index(&self, c: usize, t: usize, y: usize, x: usize) -> usize {
        ((c * self.frames + t) * self.height + y) * self.width + x
    }

    /// Frame `t` as an 8-bit image (values are clamped to `[0, 1]` and rounded).
    pub fn frame_rgb8(&self, t: usize) -> RgbImage {
        RgbImage::from_fn(self.width as u32, self.height as u32, |x, y| {
            let px = |c| to_u8(self.data[self.index(c, t, y as usize, x as usize)]);
            Rgb([px(0), px(1), px(2)])
        })
    }

    /// All frames as 8-bit images.
    pub fn to_rgb8(&self) -> Vec<RgbImage> {
        (0..self.frames).map(|t| self.frame_rgb8(t)).collect()
    }

    /// The frames `start..start + len` as a new clip.
    pub fn frames_range(&self, start: usize, len: usize) -> Result<Self> {
        if start + len > self.frames {
            return Err(Error::invalid(format!(
                "frames {start}..{} requested from a clip of {} frames",
                start + len,
                self.frames
            )));
        }
        let plane = self.height * self.width;
        let mut data = Vec::with_capacity(3 * len * plane);
        for c in 0..3 {
            let base = (c * self.frames + start) * plane;
            data.extend_from_slice(&self.data[base..base + len * plane]);
        }
        Self::new(len, self.height, self.width, data)
    }

    /// Values clamped to `[0, 1]`.
    pub fn clamped(mut self) -> Self {
        self.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        self
    }
}

fn to_u8(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Which consecutive frames of a longer (resampled) video become the clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClipStart {
    /// The first frames.
    #[default]
    Start,
    /// Frames centred on the middle of the video (the official evaluation rule: `len/2 − T/2 …`).
    Center,
}

/// How to turn a video file or a frame folder into a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadOptions {
    /// Number of frames of the clip; shorter videos are padded with black frames at the end (with a warning).
    pub frames: usize,
    /// Frame rate to resample to (official rule: keep every frame when the native rate is not higher).
    /// `None` keeps the native frame rate. Ignored for frame folders.
    pub fps: Option<f64>,
    /// `(height, width)` every frame is resized to (aspect ratio not preserved, as the official loader);
    /// `None` keeps the native size.
    pub size: Option<(usize, usize)>,
    /// Where in the video the clip is taken.
    pub start: ClipStart,
}

/// Frame indices kept when resampling a video of `len` frames at `native_fps` to `target_fps`
/// (official rule, reference §4.2): every frame when `native ≤ target`, otherwise
/// `n = int(len / native · target)` indices `floor(linspace(0, len − 1, n))`, computed as numpy does
/// (`i · ((len − 1) / (n − 1))` in f64, the last index exactly `len − 1`), so that an index that numpy rounds
/// just below an integer is taken one lower here too (30 of the lengths 2 to 3000 frames at 25 → 8 fps have
/// one). A video shorter than one target frame interval (a still image, 3 frames at 30 fps for 8 fps) keeps its
/// first frame, where the official rule would keep none.
pub fn resample_indices(len: usize, native_fps: f64, target_fps: f64) -> Vec<usize> {
    if native_fps <= target_fps || len == 0 {
        return (0..len).collect();
    }
    let n = (len as f64 / native_fps * target_fps) as usize;
    match n {
        0 | 1 => vec![0],
        _ => {
            let step = (len - 1) as f64 / (n - 1) as f64;
            (0..n).map(|i| if i == n - 1 { len - 1 } else { (i as f64 * step) as usize }).collect()
        }
    }
}

/// First index of a `t`-frame window in a video of `len` frames (`len ≥ t`).
/// Centre rule (official): frames `len/2 − t/2 … len/2 − t/2 + t − 1`.
pub fn clip_start(len: usize, t: usize, start: ClipStart) -> usize {
    match start {
        ClipStart::Start => 0,
        ClipStart::Center => (len / 2).saturating_sub(t / 2).min(len.saturating_sub(t)),
    }
}

/// Outcome of [`read_video`]: the clip and what was done to it.
#[derive(Debug, Clone)]
pub struct ReadReport {
    pub video: Video,
    /// Frames available after resampling (before selecting the clip).
    pub available_frames: usize,
    /// Black frames appended because the video was too short.
    pub padded_frames: usize,
    /// Native frame rate of the file (None for frame folders).
    pub native_fps: Option<f64>,
    /// Native frame size `(height, width)` of the file (of a folder's first frame), before any resizing.
    pub native_size: (usize, usize),
}

/// The most memory a clip read by [`read_video`] may take as floats (`frames × 3 × height × width × 4` bytes).
const MAX_CLIP_BYTES: f64 = 16e9;

/// The error for a clip of `frames` frames of `w × h` that would take more than [`MAX_CLIP_BYTES`] as floats.
fn clip_too_large(path: &Path, frames: usize, (w, h): (usize, usize)) -> Result<()> {
    let bytes = frames as f64 * w as f64 * h as f64 * 3.0 * 4.0;
    if bytes <= MAX_CLIP_BYTES {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "{}: a clip of {frames} frames of {w}x{h} would take {:.1} GB as floats (at most {:.0} GB): ask for fewer \
         frames or a smaller resolution",
        path.display(),
        bytes / 1e9,
        MAX_CLIP_BYTES / 1e9
    )))
}

/// Reads a clip from a video file (through ffmpeg) or from a folder of image frames (in the order of the numbers in their names).
pub fn read_video(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<ReadReport> {
    let path = path.as_ref();
    if opts.frames == 0 {
        return Err(Error::invalid("the number of frames to read must be at least 1"));
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if let Some((h, w)) = opts.size {
        side(path, h)?;
        side(path, w)?;
        // Before any frame is decoded, where the size is known.
        clip_too_large(path, opts.frames, (w, h))?;
    }
    // The frames (at the requested rate) that the clip takes out of `available` ones.
    let window = |available: usize| {
        let start = if available >= opts.frames { clip_start(available, opts.frames, opts.start) } else { 0 };
        start..start.saturating_add(opts.frames).min(available)
    };
    let (mut clip, available, native_fps, native_size) = if meta.is_dir() {
        let (frames, native_size) = read_frame_folder(path, opts.size)?;
        let available = frames.len();
        let w = window(available);
        (frames.into_iter().skip(w.start).take(w.len()).collect::<Vec<_>>(), available, None, native_size)
    } else {
        let mut available = 0;
        let (clip, _, fps, native_size) = decode_selected(path, opts.size, |len, fps| {
            let keep = match opts.fps {
                Some(target) => resample_indices(len, fps, target),
                None => (0..len).collect(),
            };
            available = keep.len();
            keep[window(available)].to_vec()
        })?;
        (clip, available, Some(fps), native_size)
    };
    if available == 0 {
        return Err(Error::file(path, "contains no frames"));
    }
    let padded = opts.frames - clip.len();
    // At the native size (no size asked for), known only now; before the padding is allocated.
    clip_too_large(path, opts.frames, (clip[0].width() as usize, clip[0].height() as usize))?;
    let (w, h) = (clip[0].width(), clip[0].height());
    clip.extend((0..padded).map(|_| RgbImage::new(w, h)));
    Ok(ReadReport {
        video: Video::from_rgb8(&clip)?,
        available_frames: available,
        padded_frames: padded,
        native_fps,
        native_size,
    })
}

fn resize(img: RgbImage, size: Option<(usize, usize)>) -> RgbImage {
    match size {
        Some((h, w)) if (img.height() as usize, img.width() as usize) != (h, w) => {
            image::imageops::resize(&img, w as u32, h as u32, image::imageops::FilterType::Triangle)
        }
        _ => img,
    }
}

/// Orders file names as people number frames: runs of digits by their value, so that `f2.png` comes before
/// `f10.png` (and `frame_002` before `frame_010` as well).
fn natural_order(a: &str, b: &str) -> std::cmp::Ordering {
    fn runs(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    fn key((digits, run): (bool, &str)) -> (bool, usize, &str) {
        let value = run.trim_start_matches('0');
        (digits, if digits { value.len() } else { 0 }, if digits { value } else { run })
    }
    runs(a).into_iter().map(key).cmp(runs(b).into_iter().map(key)).then_with(|| a.cmp(b))
}

/// Image files of a folder, in the order of their numbers ([`natural_order`]), and the first one's size `(height,
/// width)`; frames of another size than the first are named in a warning (they are resized).
fn read_frame_folder(dir: &Path, size: Option<(usize, usize)>) -> Result<(Vec<RgbImage>, (usize, usize))> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .map(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg" | "bmp" | "gif"))
                .unwrap_or(false)
        })
        .collect();
    files.sort_by(|a, b| natural_order(&a.to_string_lossy(), &b.to_string_lossy()));
    if files.is_empty() {
        return Err(Error::file(dir, "is a folder without image frames (.png, .jpg, .jpeg, .bmp)"));
    }
    let mut first_size = None;
    let frames = files
        .iter()
        .map(|f| {
            let img = image::open(f).map_err(|e| Error::file(f, format!("cannot read image frame: {e}")))?.to_rgb8();
            let dims = img.dimensions();
            match first_size {
                None => first_size = Some(dims),
                Some((w, h)) if (w, h) != dims => eprintln!(
                    "warning: {}: {}x{} pixels where the folder's first frame has {h}x{w}: it is resized",
                    f.display(),
                    dims.1,
                    dims.0
                ),
                Some(_) => {}
            }
            match (first_size, size) {
                // Without a size asked for, every frame takes the first one's.
                (Some((w, h)), None) if (w, h) != dims => Ok(resize(img, Some((h as usize, w as usize)))),
                _ => Ok(resize(img, size)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let (w, h) = first_size.expect("at least one frame");
    Ok((frames, (h as usize, w as usize)))
}

/// `ffmpeg` or `ffprobe`, started in a process group of its own: a Ctrl-C at the terminal then reaches only
/// nbp-cli, whose training loops stop between steps, and not a reader in the middle of a video, which would turn
/// a good file into one reported as unreadable.
fn tool(name: &str) -> Command {
    let mut cmd = Command::new(name);
    #[cfg(unix)]
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    cmd
}

fn ffmpeg_missing(tool: &str) -> Error {
    Error::External(format!(
        "`{tool}` was not found: reading and writing this video format needs ffmpeg (Debian/Ubuntu: \
         `apt-get install ffmpeg`); GIF output and frame folders work without it"
    ))
}

/// Native size and frame rate of the first video stream, from ffprobe.
fn probe(path: &Path) -> Result<(u32, u32, f64)> {
    let out = tool("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height,avg_frame_rate,r_frame_rate",
        ])
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(path)
        .output()
        .map_err(|_| ffmpeg_missing("ffprobe"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::trim));
    let (Some(w), Some(h)) = (get("width").and_then(|v| v.parse().ok()), get("height").and_then(|v| v.parse().ok()))
    else {
        let err = String::from_utf8_lossy(&out.stderr);
        let err = last_line(path, &err).unwrap_or("no video stream found");
        return Err(Error::file(path, format!("cannot be read as a video: {err}")));
    };
    let rate = |v: &str| -> Option<f64> {
        let (n, d) = v.split_once('/').unwrap_or((v, "1"));
        let (n, d) = (n.parse::<f64>().ok()?, d.parse::<f64>().ok()?);
        (d > 0.0 && n > 0.0).then(|| n / d)
    };
    let fps = get("avg_frame_rate").and_then(rate).or_else(|| get("r_frame_rate").and_then(rate)).unwrap_or(25.0);
    Ok((w, h, fps))
}

/// The last line ffmpeg printed, without the `<path>: ` it often starts with (our errors name the file already).
fn last_line<'a>(path: &Path, stderr: &'a str) -> Option<&'a str> {
    let line = stderr.lines().map(str::trim).rfind(|l| !l.is_empty())?;
    let prefix = format!("{}: ", path.display());
    Some(line.strip_prefix(prefix.as_str()).unwrap_or(line))
}

/// Bytes of decoded frames that [`decode_selected`] keeps while it reads a video once: a longer video is read a
/// second time, keeping only the frames picked (a 10-minute 30 fps video at 256×256 would take 3.5 GB).
const FRAME_BUDGET: usize = 512 << 20;

/// The largest side a video is resized to: beyond it `width × height × 3` bytes per frame stop being sensible.
pub const MAX_SIDE: usize = 16384;

/// What [`decode_selected`] returns: the frames picked, the video's length and frame rate, and its native size
/// `(height, width)`.
pub type Decoded = (Vec<RgbImage>, usize, f64, (usize, usize));

/// Decodes the frames of a video file (through ffmpeg) that `select(len, native_fps)` picks from its `len`
/// frames at the native rate (indices in any order, repeats allowed), each resized to `size` `(height, width)`
/// (`None`: the native size); returns them in the order picked, with `len`, the native frame rate and the native
/// size `(height, width)`.
///
/// The first pass keeps the first [`FRAME_BUDGET`] bytes of frames. A video whose picked frames are all among
/// them is decoded once; otherwise a second pass keeps only the picked frames, so that reading a clip out of a long
/// video holds at most the budget and the clip. A truncated file gives the frames before the damage (with a
/// warning); a file with no decodable frame is an error naming it.
pub fn decode_selected(
    path: &Path,
    size: Option<(usize, usize)>,
    select: impl FnOnce(usize, f64) -> Vec<usize>,
) -> Result<Decoded> {
    decode_within(path, size, select, FRAME_BUDGET)
}

/// [`decode_selected`] keeping at most `budget` bytes of frames in its first pass.
fn decode_within(
    path: &Path,
    size: Option<(usize, usize)>,
    select: impl FnOnce(usize, f64) -> Vec<usize>,
    budget: usize,
) -> Result<Decoded> {
    let (w0, h0, fps) = probe(path)?;
    let (h, w) = match size {
        Some((h, w)) => (side(path, h)?, side(path, w)?),
        None => (h0, w0),
    };
    let frame_bytes = w as usize * h as usize * 3;
    let budget = budget / frame_bytes.max(1);
    let mut kept = Vec::new();
    let len = each_frame(path, (w, h), true, |_, raw| {
        if kept.len() < budget {
            kept.push(raw.to_vec());
        }
    })?;
    let picked = select(len, fps);
    if let Some(&bad) = picked.iter().find(|&&i| i >= len) {
        return Err(Error::invalid(format!("frame {bad} picked from {} of {len} frames", path.display())));
    }
    let image = |raw: Vec<u8>| RgbImage::from_raw(w, h, raw).expect("whole frames");
    if picked.iter().all(|&i| i < kept.len()) {
        return Ok((picked.iter().map(|&i| image(kept[i].clone())).collect(), len, fps, (h0 as usize, w0 as usize)));
    }
    // The second pass: only the picked frames, each once however often it is picked.
    drop(kept);
    let mut wanted: Vec<usize> = picked.clone();
    wanted.sort_unstable();
    wanted.dedup();
    let mut found: std::collections::HashMap<usize, Vec<u8>> = std::collections::HashMap::new();
    let again = each_frame(path, (w, h), false, |i, raw| {
        if wanted.binary_search(&i).is_ok() {
            found.insert(i, raw.to_vec());
        }
    })?;
    let changed = || {
        Error::file(
            path,
            format!("gave {again} frames when read again, {len} the first time: it changed while being read"),
        )
    };
    // Each frame moved out of the map at its last use, copied for the earlier ones.
    let mut out = Vec::with_capacity(picked.len());
    for (n, &i) in picked.iter().enumerate() {
        let raw = if picked[n + 1..].contains(&i) { found.get(&i).cloned() } else { found.remove(&i) };
        out.push(image(raw.ok_or_else(changed)?));
    }
    Ok((out, len, fps, (h0 as usize, w0 as usize)))
}

/// A side of the size a video is resized to, as ffmpeg takes it.
fn side(path: &Path, n: usize) -> Result<u32> {
    if (1..=MAX_SIDE).contains(&n) {
        Ok(n as u32)
    } else {
        Err(Error::invalid(format!(
            "{}: cannot resize frames to a side of {n} pixels (1 to {MAX_SIDE})",
            path.display()
        )))
    }
}

/// Runs ffmpeg on `path`, handing each decoded frame (`w × h` RGB bytes) to `frame(index, bytes)`, and returns
/// how many it decoded: none is an error naming the file, and an ffmpeg error after some frames (a truncated file)
/// is a warning when `warn` is set.
fn each_frame(path: &Path, (w, h): (u32, u32), warn: bool, mut frame: impl FnMut(usize, &[u8])) -> Result<usize> {
    let mut child = tool("ffmpeg")
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
    // Drain stderr on its own thread: a corrupt file can make ffmpeg write more errors than a pipe holds, and
    // reading stdout to its end first would then wait forever.
    let mut stderr = child.stderr.take().expect("piped");
    let errors = std::thread::spawn(move || {
        let mut err = String::new();
        stderr.read_to_string(&mut err).ok();
        err
    });
    let mut out = std::io::BufReader::with_capacity(1 << 20, child.stdout.take().expect("piped"));
    let mut raw = vec![0u8; w as usize * h as usize * 3];
    let mut count = 0;
    loop {
        match out.read_exact(&mut raw) {
            Ok(()) => {
                frame(count, &raw);
                count += 1;
            }
            // The end of the stream (a partial last frame, from a file cut short, is dropped).
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(Error::io(path, e)),
        }
    }
    let err = errors.join().unwrap_or_default();
    let status = child.wait().map_err(|e| Error::io(path, e))?;
    if count == 0 {
        let msg = last_line(path, &err).unwrap_or("no frame could be decoded");
        return Err(Error::file(path, format!("cannot be decoded as a video: {msg}")));
    }
    // Some errors (a file cut short) come with a zero exit status: any message at `-v error` is one.
    if (!status.success() || !err.trim().is_empty()) && warn {
        // Truncated files still yield their first frames; say so rather than failing silently.
        eprintln!(
            "warning: {}: ffmpeg reported an error after {count} frames ({}); using the frames decoded so far",
            path.display(),
            last_line(path, &err).unwrap_or("unknown error")
        );
    }
    Ok(count)
}

/// How several videos are arranged side by side.
fn grid_dims(n: usize) -> (usize, usize) {
    let cols = (n as f64).sqrt().ceil() as usize;
    (n.div_ceil(cols.max(1)), cols.max(1))
}

/// Tiles frame `t` of every video into one image (a 2-pixel white gap between tiles).
fn grid_frame(videos: &[Video], t: usize) -> RgbImage {
    let (rows, cols) = grid_dims(videos.len());
    let (h, w) = (videos[0].height as u32, videos[0].width as u32);
    let gap = if videos.len() > 1 { 2 } else { 0 };
    let mut img =
        RgbImage::from_pixel(cols as u32 * (w + gap) - gap, rows as u32 * (h + gap) - gap, Rgb([255, 255, 255]));
    for (i, v) in videos.iter().enumerate() {
        let (r, c) = ((i / cols) as u32, (i % cols) as u32);
        image::imageops::replace(
            &mut img,
            &v.frame_rgb8(t.min(v.frames - 1)),
            (c * (w + gap)) as i64,
            (r * (h + gap)) as i64,
        );
    }
    img
}

/// Output formats that [`write_videos`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VideoFormat {
    /// Animated GIF, looping (pure Rust).
    Gif,
    /// One PNG: rows are videos, columns are frames.
    PngGrid,
    /// A folder of PNG frames (`frame_000.png`, … ; a grid when several videos are given).
    PngFolder,
    /// A video container encoded by ffmpeg (H.264 in MP4/MKV/AVI, VP9 in WebM).
    Ffmpeg,
}

impl VideoFormat {
    /// The format implied by an output path: `.gif`, `.png`, `.mp4`/`.mkv`/`.avi`/`.mov`/`.webm`, or a folder
    /// (no extension, or an existing directory).
    pub fn from_path(path: &Path) -> Result<Self> {
        if path.is_dir() {
            return Ok(Self::PngFolder);
        }
        match path.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase()) {
            Some(e) if e == "gif" => Ok(Self::Gif),
            Some(e) if e == "png" => Ok(Self::PngGrid),
            Some(e) if ["mp4", "mkv", "avi", "mov", "webm"].contains(&e.as_str()) => Ok(Self::Ffmpeg),
            None => Ok(Self::PngFolder),
            Some(e) => Err(Error::invalid(format!(
                "{}: unknown video extension '.{e}' (use .gif, .mp4, .webm, .mkv, .avi, .mov, .png, or a folder name)",
                path.display()
            ))),
        }
    }

    /// [`VideoFormat::from_path`] for a file about to be written, checked before the work that produces it: a
    /// format that needs ffmpeg is an error when ffmpeg cannot be run, and so is a path that cannot be written
    /// ([`crate::error::check_output`]; a name without extension is a folder of PNG frames).
    pub fn for_output(path: &Path) -> Result<Self> {
        let format = Self::from_path(path)?;
        if format == Self::Ffmpeg && Command::new("ffmpeg").arg("-version").output().is_err() {
            return Err(ffmpeg_missing("ffmpeg"));
        }
        if format == Self::PngFolder && path.is_file() {
            return Err(Error::file(
                path,
                "is a file, and a name without extension writes a folder of PNG frames: give a name ending in \
                 .gif, .mp4 or .png, or a new folder name",
            ));
        }
        crate::error::check_output(path, format == Self::PngFolder)?;
        Ok(format)
    }
}

/// Writes one or more videos (of equal size) to `path`, in the format its extension names.
/// Several videos are tiled in a grid (GIF, MP4, folder) or stacked as rows (PNG grid).
pub fn write_videos(path: impl AsRef<Path>, videos: &[Video], fps: f64) -> Result<()> {
    let path = path.as_ref();
    let first = videos.first().ok_or_else(|| Error::invalid("no video to write"))?;
    if videos.iter().any(|v| (v.height, v.width) != (first.height, first.width)) {
        return Err(Error::invalid("all videos written together must have the same frame size"));
    }
    if fps.is_nan() || fps <= 0.0 {
        return Err(Error::invalid(format!("frame rate must be positive, got {fps}")));
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let frames = videos.iter().map(|v| v.frames).max().unwrap_or(0);
    match VideoFormat::from_path(path)? {
        VideoFormat::Gif => write_gif(path, (0..frames).map(|t| grid_frame(videos, t)), fps),
        VideoFormat::PngGrid => {
            let (h, w) = (first.height as u32, first.width as u32);
            let mut img = RgbImage::from_pixel(
                frames as u32 * (w + 2) - 2,
                videos.len() as u32 * (h + 2) - 2,
                Rgb([255, 255, 255]),
            );
            for (r, v) in videos.iter().enumerate() {
                for t in 0..v.frames {
                    image::imageops::replace(
                        &mut img,
                        &v.frame_rgb8(t),
                        (t as u32 * (w + 2)) as i64,
                        (r as u32 * (h + 2)) as i64,
                    );
                }
            }
            // Encoded in memory and written whole, so that a failed write (a full disk) leaves no partial image.
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageFormat::Png)
                .map_err(|e| Error::file(path, format!("cannot encode PNG: {e}")))?;
            crate::error::write_atomic(path, bytes.get_ref())
        }
        VideoFormat::PngFolder => {
            std::fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
            // Frames of an earlier, longer video written here would otherwise read as part of this one (as they
            // do when the folder is read back): only files named as this writer names them are removed.
            for entry in std::fs::read_dir(path).map_err(|e| Error::io(path, e))?.flatten() {
                let name = entry.file_name();
                let name = name.to_string_lossy();
                let index = name.strip_prefix("frame_").and_then(|n| n.strip_suffix(".png"));
                if index.is_some_and(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit())) {
                    std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
                }
            }
            for t in 0..frames {
                let f = path.join(format!("frame_{t:03}.png"));
                grid_frame(videos, t).save(&f).map_err(|e| Error::file(&f, format!("cannot write PNG: {e}")))?;
            }
            Ok(())
        }
        VideoFormat::Ffmpeg => write_ffmpeg(path, (0..frames).map(|t| grid_frame(videos, t)).collect(), fps),
    }
}

fn write_gif(path: &Path, frames: impl Iterator<Item = RgbImage>, fps: f64) -> Result<()> {
    use image::codecs::gif::{GifEncoder, Repeat};
    let mut bytes = Vec::new();
    {
        let mut enc = GifEncoder::new_with_speed(&mut bytes, 10);
        enc.set_repeat(Repeat::Infinite).map_err(|e| Error::file(path, e.to_string()))?;
        // Delays are in hundredths of a second, and players show those under 2 at 10 frames/s.
        if fps > 50.0 {
            eprintln!(
                "warning: {}: GIF players show at most 50 frames/s (shorter frame delays play at 10), so it is \
                 written at 50; use .mp4 for faster video",
                path.display()
            );
        }
        let delay = image::Delay::from_numer_denom_ms((1000.0 / fps.min(50.0)).round() as u32, 1);
        for f in frames {
            let rgba = RgbaImage::from_fn(f.width(), f.height(), |x, y| {
                let p = f.get_pixel(x, y);
                Rgba([p[0], p[1], p[2], 255])
            });
            enc.encode_frame(image::Frame::from_parts(rgba, 0, 0, delay))
                .map_err(|e| Error::file(path, format!("cannot encode GIF: {e}")))?;
        }
    }
    crate::error::write_atomic(path, &bytes)
}

fn write_ffmpeg(path: &Path, frames: Vec<RgbImage>, fps: f64) -> Result<()> {
    let (w, h) = (frames[0].width(), frames[0].height());
    let webm = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("webm"));
    let mut cmd = tool("ffmpeg");
    cmd.args(["-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s"])
        .arg(format!("{w}x{h}"))
        .arg("-r")
        .arg(format!("{fps}"))
        .args(["-i", "-"])
        // H.264/VP9 in yuv420p need even sizes: pad by one pixel where needed.
        .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"]);
    if webm {
        cmd.args(["-c:v", "libvpx-vp9", "-pix_fmt", "yuv420p"]);
    } else {
        cmd.args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", "18"]);
    }
    // Encoded into a temporary file next to it (with the same extension, which names the container), renamed
    // over it only when ffmpeg succeeded: a failed or interrupted encoding leaves nothing behind.
    let name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{}.tmp{}.{ext}", name.to_string_lossy(), std::process::id()));
    let mut child =
        cmd.arg(&tmp).stdin(Stdio::piped()).stderr(Stdio::piped()).spawn().map_err(|_| ffmpeg_missing("ffmpeg"))?;
    // A write fails when ffmpeg has stopped (a broken pipe); its own message then says why.
    let written = {
        let mut stdin = child.stdin.take().expect("piped");
        frames.iter().try_for_each(|f| stdin.write_all(f.as_raw()))
    };
    let out = child.wait_with_output().map_err(|e| Error::io(path, e));
    let fail = |message: String| {
        let _ = std::fs::remove_file(&tmp);
        Err(Error::file(path, message))
    };
    let out = match out {
        Ok(out) => out,
        Err(e) => return fail(e.to_string()),
    };
    // At `-v error` ffmpeg prints only errors, and some of them (a full disk while it writes the container)
    // come with a zero exit status: any message means the file is not what was asked for.
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() || !err.trim().is_empty() {
        return fail(format!("ffmpeg could not encode the video: {}", err.trim()));
    }
    if let Err(e) = written {
        return fail(e.to_string());
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Stacks clips of equal shape into a tensor `[batch, 3, T, H, W]`.
pub fn videos_to_tensor<B: burn::prelude::Backend>(
    videos: &[Video],
    device: &B::Device,
) -> Result<burn::prelude::Tensor<B, 5>> {
    let first = videos.first().ok_or_else(|| Error::invalid("no video given"))?;
    let (t, h, w) = (first.frames, first.height, first.width);
    if videos.iter().any(|v| (v.frames, v.height, v.width) != (t, h, w)) {
        return Err(Error::invalid("all videos of a batch must have the same number of frames and size"));
    }
    let data: Vec<f32> = videos.iter().flat_map(|v| v.data.iter().copied()).collect();
    let data = burn::tensor::TensorData::new(data, [videos.len(), 3, t, h, w]);
    Ok(burn::prelude::Tensor::from_data(data, device))
}

/// Splits a tensor `[batch, 3, T, H, W]` into clips (values are copied as they are, not clamped).
pub fn tensor_to_videos<B: burn::prelude::Backend>(tensor: burn::prelude::Tensor<B, 5>) -> Result<Vec<Video>> {
    let [b, c, t, h, w] = tensor.dims();
    if c != 3 {
        return Err(Error::invalid(format!("expected a video tensor [batch, 3, T, H, W], got {:?}", [b, c, t, h, w])));
    }
    let data = tensor.into_data().convert::<f32>();
    let values = data.as_slice::<f32>().map_err(|e| Error::invalid(format!("cannot read video tensor: {e:?}")))?;
    let n = 3 * t * h * w;
    values.chunks_exact(n).map(|chunk| Video::new(t, h, w, chunk.to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(frames: usize, h: usize, w: usize) -> Video {
        let mut v = Video::black(frames, h, w);
        for c in 0..3 {
            for t in 0..frames {
                for y in 0..h {
                    for x in 0..w {
                        let i = v.index(c, t, y, x);
                        v.data[i] = ((x + 2 * y + 5 * t + 40 * c) % 256) as f32 / 255.0;
                    }
                }
            }
        }
        v
    }

    #[test]
    fn resample_follows_the_official_rule() {
        // 30 fps, 60 frames, to 8 fps: n = int(60/30·8) = 16 indices floor(linspace(0, 59, 16)).
        let idx = resample_indices(60, 30.0, 8.0);
        assert_eq!(idx, vec![0, 3, 7, 11, 15, 19, 23, 27, 31, 35, 39, 43, 47, 51, 55, 59]);
        // numpy's rounding: 39 · (248 / 78) = 123.99999999999999 → 123 (the exact quotient would give 124);
        // values from numpy 2.4 (`np.linspace(0, L - 1, n).astype(int)`).
        let idx = resample_indices(249, 25.0, 8.0);
        assert_eq!((idx.len(), &idx[37..42], idx[78]), (79, &[117, 120, 123, 127, 130][..], 248));
        let idx = resample_indices(449, 25.0, 8.0);
        assert_eq!((idx.len(), &idx[37..42], idx[142]), (143, &[116, 119, 123, 126, 129][..], 448));
        // Native rate not above the target: every frame.
        assert_eq!(resample_indices(5, 8.0, 8.0), vec![0, 1, 2, 3, 4]);
        assert_eq!(resample_indices(5, 6.0, 8.0).len(), 5);
        // Shorter than one 8 fps interval (a still image read by ffmpeg at 25 fps): the first frame, not none.
        assert_eq!(resample_indices(1, 25.0, 8.0), vec![0]);
        assert_eq!(resample_indices(3, 30.0, 8.0), vec![0]);
        assert_eq!(resample_indices(0, 30.0, 8.0), Vec::<usize>::new());
        // Centre rule: len 40, 17 frames → 20 − 8 = 12.
        assert_eq!(clip_start(40, 17, ClipStart::Center), 12);
        assert_eq!(clip_start(17, 17, ClipStart::Center), 0);
        assert_eq!(clip_start(18, 17, ClipStart::Center), 1);
    }

    #[test]
    fn rgb8_round_trip_is_exact_for_8_bit_values() {
        let v = ramp(3, 4, 5);
        let back = Video::from_rgb8(&v.to_rgb8()).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn frames_range_selects_the_right_frames() {
        let v = ramp(5, 2, 3);
        let r = v.frames_range(2, 2).unwrap();
        assert_eq!(r.frames, 2);
        assert_eq!(r.data[r.index(1, 0, 1, 2)], v.data[v.index(1, 2, 1, 2)]);
        assert_eq!(r.data[r.index(2, 1, 0, 0)], v.data[v.index(2, 3, 0, 0)]);
        assert!(v.frames_range(4, 2).is_err());
    }

    #[test]
    fn frame_files_are_ordered_by_their_numbers() {
        let mut names = vec!["f10.png", "f2.png", "f1.png", "frame_002.png", "f010b.png", "a.png", "frame_10.png"];
        names.sort_by(|a, b| natural_order(a, b));
        assert_eq!(names, ["a.png", "f1.png", "f2.png", "f10.png", "f010b.png", "frame_002.png", "frame_10.png"]);
    }

    #[test]
    fn gif_and_png_outputs_decode_back() {
        let dir = std::env::temp_dir().join(format!("nbp-video-test-{}", std::process::id()));
        let v = ramp(4, 8, 8);
        let gif = dir.join("a.gif");
        write_videos(&gif, &[v.clone(), v.clone()], 8.0).unwrap();
        let decoder =
            image::codecs::gif::GifDecoder::new(std::io::BufReader::new(std::fs::File::open(&gif).unwrap())).unwrap();
        use image::AnimationDecoder;
        let frames = decoder.into_frames().collect_frames().unwrap();
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0].buffer().width(), 8 * 2 + 2);
        let delay_ms = |gif: &Path| {
            let file = std::io::BufReader::new(std::fs::File::open(gif).unwrap());
            let frames = image::codecs::gif::GifDecoder::new(file).unwrap().into_frames().collect_frames().unwrap();
            let (n, d) = frames[0].delay().numer_denom_ms();
            n as f64 / d as f64
        };
        assert_eq!(delay_ms(&gif), 120.0, "8 frames/s: 125 ms, truncated to hundredths of a second");
        // Faster than 50 frames/s would be a delay under 2/100 s, which players show at 10 frames/s: 50 it is.
        write_videos(&gif, std::slice::from_ref(&v), 200.0).unwrap();
        assert_eq!(delay_ms(&gif), 20.0);
        write_videos(&gif, std::slice::from_ref(&v), 50.0).unwrap();
        assert_eq!(delay_ms(&gif), 20.0);
        // Outputs that cannot be written are refused before the work: an existing file for a folder of frames,
        // a folder for a GIF.
        let e = VideoFormat::for_output(&gif.with_extension("")).map(|_| ());
        assert!(e.is_ok(), "a new folder name");
        std::fs::write(dir.join("plain"), "x").unwrap();
        let e = VideoFormat::for_output(&dir.join("plain")).unwrap_err().to_string();
        assert!(e.contains("plain: is a file, and a name without extension writes a folder of PNG frames"), "{e}");
        let png = dir.join("grid.png");
        write_videos(&png, std::slice::from_ref(&v), 8.0).unwrap();
        let img = image::open(&png).unwrap().to_rgb8();
        assert_eq!((img.width(), img.height()), (4 * 8 + 3 * 2, 8));
        assert_eq!(img.get_pixel(8 + 2, 0), v.frame_rgb8(1).get_pixel(0, 0));
        let folder = dir.join("frames");
        // A longer video written there before, and a file of the user's: the old frames go, the file stays.
        write_videos(&folder, std::slice::from_ref(&ramp(6, 8, 8)), 8.0).unwrap();
        std::fs::write(folder.join("notes.txt"), "mine").unwrap();
        write_videos(&folder, std::slice::from_ref(&v), 8.0).unwrap();
        assert!(!folder.join("frame_004.png").exists() && folder.join("notes.txt").exists());
        let opts = ReadOptions { frames: 4, fps: None, size: None, start: ClipStart::Start };
        let back = read_video(&folder, &opts).unwrap();
        assert_eq!(back.video, v);
        assert!(VideoFormat::from_path(Path::new("x.txt")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn long_videos_are_read_again_for_the_picked_frames_only() {
        let dir = std::env::temp_dir().join(format!("nbp-video-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("long.mkv");
        // 40 distinct frames, losslessly coded so that both passes decode the same bytes.
        let made = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-t", "4"])
            .args(["-c:v", "ffv1"])
            .arg(&path)
            .status();
        if !made.is_ok_and(|s| s.success()) {
            panic!("ffmpeg is needed for this test (apt-get install ffmpeg)");
        }
        let pick = |len: usize, fps: f64| {
            assert_eq!((len, fps), (40, 10.0));
            vec![31, 2, 31, 39]
        };
        let (once, len, _, _) = decode_within(&path, Some((16, 16)), pick, FRAME_BUDGET).unwrap();
        // A budget of two frames: counted in a first pass, the picked frames kept in a second one.
        let (twice, len2, _, _) = decode_within(&path, Some((16, 16)), pick, 2 * 16 * 16 * 3).unwrap();
        assert_eq!((len, len2, once.len()), (40, 40, 4));
        assert_eq!(once, twice);
        assert_eq!(once[0], once[2]);
        assert_ne!(once[0], once[1]);
        assert_ne!(once[0], once[3]);
        // The clip of `read_video` is the same whichever way the frames were read.
        let opts = ReadOptions { frames: 4, fps: Some(5.0), size: Some((16, 16)), start: ClipStart::Center };
        let clip = read_video(&path, &opts).unwrap();
        let (expected, _, _, _) = decode_within(&path, Some((16, 16)), |_, _| vec![16, 18, 20, 22], 0).unwrap();
        assert_eq!((clip.available_frames, clip.padded_frames), (20, 0));
        assert_eq!(clip.video, Video::from_rgb8(&expected).unwrap());
        // Sizes ffmpeg cannot be asked for, and a clip too large for memory, are errors before any frame is decoded.
        let big = ReadOptions { size: Some((16, MAX_SIDE + 1)), ..opts.clone() };
        assert!(read_video(&path, &big).unwrap_err().to_string().contains("a side of 16385 pixels"));
        let long = ReadOptions { frames: usize::MAX / 2, ..opts };
        assert!(read_video(&path, &long).unwrap_err().to_string().contains("ask for fewer frames"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn short_folders_are_padded_with_black_frames() {
        let dir = std::env::temp_dir().join(format!("nbp-video-pad-{}", std::process::id()));
        let v = ramp(2, 8, 8);
        write_videos(&dir, std::slice::from_ref(&v), 8.0).unwrap();
        let opts = ReadOptions { frames: 5, fps: None, size: Some((4, 4)), start: ClipStart::Center };
        let r = read_video(&dir, &opts).unwrap();
        assert_eq!((r.video.frames, r.video.height, r.video.width, r.padded_frames), (5, 4, 4, 3));
        assert!(r.video.frames_range(2, 3).unwrap().data.iter().all(|&x| x == 0.0));
        assert_eq!(r.native_size, (8, 8));
        std::fs::remove_dir_all(&dir).ok();
    }

    /// Frames numbered without leading zeros (`f1.png` … `f10.png`) are read in the order of their numbers, and a
    /// frame of another size takes the first one's.
    #[test]
    fn frame_folders_are_read_in_the_order_of_their_numbers() {
        let dir = std::env::temp_dir().join(format!("nbp-video-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 1..=10u8 {
            let side = if i == 7 { 12 } else { 6 };
            RgbImage::from_pixel(side, side, Rgb([i * 20, 0, 0])).save(dir.join(format!("f{i}.png"))).unwrap();
        }
        let opts = ReadOptions { frames: 10, fps: None, size: None, start: ClipStart::Start };
        let r = read_video(&dir, &opts).unwrap();
        assert_eq!((r.video.frames, r.video.height, r.video.width, r.native_size), (10, 6, 6, (6, 6)));
        let reds: Vec<u8> = (0..10).map(|t| r.video.frame_rgb8(t).get_pixel(3, 3)[0]).collect();
        assert_eq!(reds, [20, 40, 60, 80, 100, 120, 140, 160, 180, 200]);
        std::fs::remove_dir_all(&dir).ok();
    }
}
