//! Frame prediction quality: a generator continues the first frames of held-out clips, and the predicted frames
//! are compared with the real ones (PSNR), next to the copy-the-last-given-frame baseline.

use burn::prelude::*;
use serde::Serialize;

use nbp_core::blocks::LatentGrid;
use nbp_core::metrics::psnr;
use nbp_core::progress::NoProgress;
use nbp_core::video::{Video, tensor_to_videos, videos_to_tensor};
use nbp_core::{Error, Result};
use nbp_model::LoadedGenerator;
use nbp_model::generate::{Condition, Request, generate};
use nbp_model::sampling::SampleOptions;
use nbp_tokenizer::VideoTokenizer;

/// The PSNR a clip counts with in the means: identical frames (a still video copied) have an infinite PSNR,
/// which would make every mean infinite, so each clip counts at most this many dB.
pub const MAX_PSNR: f64 = 100.0;

fn capped(db: f64) -> f64 {
    db.min(MAX_PSNR)
}

/// PSNR of predicted frames, for the model and for the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FramePrediction {
    pub clips: usize,
    /// Frames given to the model (the rest are predicted and scored).
    pub given_frames: usize,
    /// Mean PSNR (dB) of the predicted frames against the real ones (each clip at most [`MAX_PSNR`]).
    pub psnr_model: f64,
    /// Mean PSNR (dB) of repeating the last given frame.
    pub psnr_copy_last: f64,
    /// Mean PSNR (dB) of the tokenizer's own reconstruction of those frames (the ceiling of any prediction).
    pub psnr_reconstruction: f64,
}

impl FramePrediction {
    /// Model minus baseline, in dB.
    pub fn margin(&self) -> f64 {
        self.psnr_model - self.psnr_copy_last
    }
}

/// Continues the first `given_frames` frames (`1 + 4n`, whole latent frames) of every clip with the generator
/// (conditioned on the clip's label when the model is conditional) and scores the other frames.
pub fn evaluate_frame_prediction<B: Backend>(
    generator: &LoadedGenerator<B>,
    tokenizer: &VideoTokenizer<B>,
    clips: &[(Video, usize)],
    given_frames: usize,
    options: &SampleOptions,
    seed: u64,
    device: &B::Device,
) -> Result<FramePrediction> {
    let first = &clips.first().ok_or_else(|| Error::invalid("no clip to evaluate"))?.0;
    let [t, h, w] = tokenizer.config().latent_shape(first.frames, first.height, first.width)?;
    let given_latents = tokenizer.config().latent_shape(given_frames, first.height, first.width)?[0];
    if given_latents >= t {
        return Err(Error::invalid(format!(
            "{given_frames} given frames leave nothing to predict in clips of {} frames",
            first.frames
        )));
    }
    let grid = LatentGrid::new(t, h, w);
    let block_shape = generator.default_block_shape(&grid)?;
    let (mut model, mut copy, mut recon) = (0.0, 0.0, 0.0);
    for (i, (video, label)) in clips.iter().enumerate() {
        let x = videos_to_tensor::<B>(std::slice::from_ref(video), device)?;
        let ids: Vec<i64> = tokenizer.encode(x)?.into_data().convert::<i64>().to_vec().expect("int data");
        let prefix = ids[..given_latents * h * w].to_vec();
        let condition = if generator.settings.unconditional {
            Condition::None
        } else {
            Condition::Tokens(vec![*label as i64; generator.settings.cond_tokens])
        };
        let request = Request { condition, prefix, grid, block_shape, samples: 1, options: *options };
        B::seed(device, seed.wrapping_add(i as u64));
        let out = generate(&generator.model, &generator.settings, &request, &NoProgress)?;
        let decode = |codes: &[i64]| -> Result<Video> {
            let data = TensorData::new(codes.to_vec(), [1, t, h, w]);
            let videos = tensor_to_videos(tokenizer.decode(Tensor::from_data(data, device)))?;
            Ok(videos.into_iter().next().expect("one video"))
        };
        let predicted = decode(&out.codes[0])?;
        let reconstructed = decode(&ids)?;
        let n = video.frames - given_frames;
        let real = video.frames_range(given_frames, n)?;
        let last = video.frames_range(given_frames - 1, 1)?;
        let repeated = Video::new(
            n,
            video.height,
            video.width,
            (0..3)
                .flat_map(|c| {
                    let plane = &last.data[c * video.height * video.width..(c + 1) * video.height * video.width];
                    std::iter::repeat_n(plane, n).flatten().copied()
                })
                .collect(),
        )?;
        model += capped(psnr(&predicted.frames_range(given_frames, n)?, &real)?);
        recon += capped(psnr(&reconstructed.frames_range(given_frames, n)?, &real)?);
        copy += capped(psnr(&repeated, &real)?);
    }
    let k = clips.len() as f64;
    Ok(FramePrediction {
        clips: clips.len(),
        given_frames,
        psnr_model: model / k,
        psnr_copy_last: copy / k,
        psnr_reconstruction: recon / k,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_still_clip_counts_with_the_capped_psnr() {
        assert_eq!(capped(f64::INFINITY), MAX_PSNR);
        assert_eq!(capped(31.5), 31.5);
        assert_eq!((capped(f64::INFINITY) + capped(20.0)) / 2.0, 60.0);
    }
}
