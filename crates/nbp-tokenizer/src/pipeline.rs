//! File-level tokenizer operations behind `nbp-cli tokenizer …` and `nbp-cli bench tokenizer`: read videos,
//! encode, decode, reconstruct, measure.

use std::path::Path;
use std::time::Instant;

use burn::prelude::*;

use nbp_core::npy::NpyArray;
use nbp_core::progress::{NoProgress, Progress};
use nbp_core::video::{ReadOptions, ReadReport, Video, read_video, tensor_to_videos, videos_to_tensor};
use nbp_core::{Error, Result, metrics};

use crate::config::{SPATIAL_FACTOR, TEMPORAL_FACTOR, TokenizerConfig};
use crate::tokenizer::{VideoTokenizer, check_indices};

/// Reads a clip for the tokenizer, checking that its frame count and size suit the tokenizer.
pub fn read_clip<B: Backend>(tokenizer: &VideoTokenizer<B>, path: &Path, opts: &ReadOptions) -> Result<ReadReport> {
    let report = read_video(path, opts)?;
    let v = &report.video;
    tokenizer.config().latent_shape(v.frames, v.height, v.width).map_err(|e| Error::file(path, e.to_string()))?;
    Ok(report)
}

/// Token ids of a token tensor as an `int32` `.npy` array `[B, T', H', W']`.
pub fn indices_to_npy<B: Backend>(indices: Tensor<B, 4, Int>) -> NpyArray {
    let dims = indices.dims().to_vec();
    let values: Vec<i32> = indices.into_data().convert::<i32>().into_vec::<i32>().expect("int data");
    NpyArray::i32(dims, values)
}

/// A token tensor from a `.npy` array of shape `[T', H', W']` or `[B, T', H', W']` for `tokenizer`, with every id
/// checked and the decode's memory estimated.
pub fn npy_to_indices<B: Backend>(
    array: &NpyArray,
    tokenizer: &VideoTokenizer<B>,
    device: &B::Device,
) -> Result<Tensor<B, 4, Int>> {
    let shape: [usize; 4] = match array.shape.as_slice() {
        [t, h, w] => [1, *t, *h, *w],
        [b, t, h, w] => [*b, *t, *h, *w],
        s => {
            return Err(Error::invalid(format!(
                "token arrays must be shaped [T', H', W'] or [batch, T', H', W'], got {s:?}"
            )));
        }
    };
    if shape.contains(&0) {
        return Err(Error::invalid(format!("the token array {:?} is empty: it holds no clip to decode", array.shape)));
    }
    let [b, t, h, w] = shape;
    let (ft, fs) = (TEMPORAL_FACTOR, SPATIAL_FACTOR);
    let side = |n: usize| n.checked_mul(fs).ok_or_else(|| Error::invalid(format!("{n} latent rows is absurd")));
    tokenizer.check_memory(b, (t - 1).saturating_mul(ft).saturating_add(1), side(h)?, side(w)?)?;
    let ids = array.to_i64()?;
    check_indices(&ids, tokenizer.codebook_size())?;
    let ids: Vec<i32> = ids.into_iter().map(|v| v as i32).collect();
    Ok(Tensor::from_data(TensorData::new(ids, shape), device))
}

/// Decodes a `.npy` array of token ids (`[T', H', W']` or `[B, T', H', W']`) `batch` clips at a time, so that the
/// decoder's activations stay within memory however many clips the array holds; each batch is checked as
/// [`npy_to_indices`] checks it.
pub fn decode_in_batches<B: Backend>(
    tokenizer: &VideoTokenizer<B>,
    array: &NpyArray,
    batch: usize,
    progress: &dyn Progress,
) -> Result<Vec<Video>> {
    let device = tokenizer_device(tokenizer);
    let clips = match array.shape.as_slice() {
        [_, _, _] => 1,
        [b, _, _, _] => *b,
        _ => 0,
    };
    if clips == 0 || array.shape.contains(&0) {
        // A shape no clip can be read from: the error of the whole array.
        return npy_to_indices(array, tokenizer, &device).map(|_| vec![]);
    }
    let clip_shape = &array.shape[array.shape.len() - 3..];
    let per_clip: usize = clip_shape.iter().product();
    let ids = array.to_i64()?;
    let mut videos = Vec::with_capacity(clips);
    for start in (0..clips).step_by(batch.max(1)) {
        let n = batch.max(1).min(clips - start);
        let part: Vec<i32> = ids[start * per_clip..(start + n) * per_clip].iter().map(|&v| v as i32).collect();
        let shape = [&[n][..], clip_shape].concat();
        let indices = npy_to_indices(&NpyArray::i32(shape, part), tokenizer, &device)?;
        videos.extend(tensor_to_videos(tokenizer.decode_with(indices, progress))?);
    }
    Ok(videos)
}

/// Result of [`reconstruct`].
#[derive(Debug, Clone)]
pub struct Reconstruction {
    pub input: Vec<Video>,
    pub output: Vec<Video>,
    pub indices: NpyArray,
    /// Mean PSNR (dB) over the clips, on their first `scored_frames` frames.
    pub psnr: f64,
    /// Mean SSIM over the clips, on their first `scored_frames` frames.
    pub ssim: f64,
    /// Frames of each clip the metrics cover (the black padding of a short video left out).
    pub scored_frames: usize,
    /// Mean PSNR and SSIM as the official `tokenizer_eval.py` scores them: every frame but the last (16 of 17),
    /// reference §1.10. `None` for single frames and for clips with padding.
    pub official: Option<(f64, f64)>,
    pub encode_seconds: f64,
    pub decode_seconds: f64,
}

/// Encodes and decodes clips and measures the reconstruction on the first `real_frames` frames of each (the
/// frames read from the video: black padding at the end of a short one would count as perfectly reconstructed
/// or not at all, but not as the video); `None` scores every frame.
pub fn reconstruct<B: Backend>(
    tokenizer: &VideoTokenizer<B>,
    clips: Vec<Video>,
    real_frames: Option<usize>,
    progress: &dyn Progress,
) -> Result<Reconstruction> {
    let device = tokenizer_device(tokenizer);
    let x = videos_to_tensor::<B>(&clips, &device)?;
    let t0 = Instant::now();
    let indices = tokenizer.encode_with(x, progress)?;
    let indices_npy = indices_to_npy(indices.clone());
    let t1 = Instant::now();
    let output = tensor_to_videos(tokenizer.decode_with(indices, progress))?;
    let t2 = Instant::now();
    let n = clips.len() as f64;
    let frames = clips.first().map_or(0, |c| c.frames);
    let scored = real_frames.unwrap_or(frames).clamp(1, frames.max(1));
    let score = |frames: usize| -> Result<(f64, f64)> {
        let (mut psnr, mut ssim) = (0.0, 0.0);
        for (a, b) in clips.iter().zip(&output) {
            let (a, b) = (a.frames_range(0, frames)?, b.frames_range(0, frames)?);
            psnr += metrics::psnr(&a, &b)? / n;
            ssim += if a.height >= 11 && a.width >= 11 { metrics::ssim(&a, &b)? / n } else { f64::NAN };
        }
        Ok((psnr, ssim))
    };
    let (psnr, ssim) = score(scored)?;
    let official = if frames > 1 && scored == frames { Some(score(frames - 1)?) } else { None };
    Ok(Reconstruction {
        input: clips,
        output,
        indices: indices_npy,
        psnr,
        ssim,
        scored_frames: scored,
        official,
        encode_seconds: (t1 - t0).as_secs_f64(),
        decode_seconds: (t2 - t1).as_secs_f64(),
    })
}

/// The device the tokenizer's weights live on.
pub fn tokenizer_device<B: Backend>(tokenizer: &VideoTokenizer<B>) -> B::Device {
    tokenizer.devices().into_iter().next().unwrap_or_default()
}

/// Timings of [`bench()`].
#[derive(Debug, Clone)]
pub struct TokenizerBench {
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub batch: usize,
    /// Seconds per encode of the batch (best of the repeats).
    pub encode_seconds: f64,
    /// Seconds per decode of the batch (best of the repeats).
    pub decode_seconds: f64,
    pub all_encode: Vec<f64>,
    pub all_decode: Vec<f64>,
}

impl TokenizerBench {
    /// Frames encoded per second.
    pub fn encode_fps(&self) -> f64 {
        (self.frames * self.batch) as f64 / self.encode_seconds
    }
    /// Frames decoded per second.
    pub fn decode_fps(&self) -> f64 {
        (self.frames * self.batch) as f64 / self.decode_seconds
    }
}

/// Times encoding and decoding of a random clip batch with a tokenizer of `config` (random weights: the cost
/// does not depend on them). `warmup` untimed runs precede `repeats` timed ones; results are synchronised with
/// the device before the clock stops.
pub fn bench<B: Backend>(
    config: &TokenizerConfig,
    [batch, frames, height, width]: [usize; 4],
    warmup: usize,
    repeats: usize,
    device: &B::Device,
    progress: &dyn Progress,
) -> Result<TokenizerBench> {
    let tokenizer = VideoTokenizer::<B>::new(config, device)?;
    nbp_core::module::materialize(&tokenizer);
    tokenizer.check_video([batch, 3, frames, height, width])?;
    let video = Tensor::<B, 5>::random(
        [batch, 3, frames, height, width],
        burn::tensor::Distribution::Uniform(0.0, 1.0),
        device,
    );
    let mut enc = vec![];
    let mut dec = vec![];
    progress.start("benchmark runs", warmup + repeats.max(1));
    for run in 0..warmup + repeats.max(1) {
        let t0 = Instant::now();
        let ids = tokenizer.encode_with(video.clone(), &NoProgress)?;
        let ids: Tensor<B, 4, Int> = Tensor::from_data(ids.into_data(), device); // synchronise
        let t1 = Instant::now();
        let out = tokenizer.decode_with(ids, &NoProgress);
        let _ = out.into_data(); // synchronise
        let t2 = Instant::now();
        if run >= warmup {
            enc.push((t1 - t0).as_secs_f64());
            dec.push((t2 - t1).as_secs_f64());
        }
        progress.advance(1);
    }
    progress.finish();
    let best = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    Ok(TokenizerBench {
        frames,
        height,
        width,
        batch,
        encode_seconds: best(&enc),
        decode_seconds: best(&dec),
        all_encode: enc,
        all_decode: dec,
    })
}
