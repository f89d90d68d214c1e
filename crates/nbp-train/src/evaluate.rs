//! Frame prediction quality: a generator continues the first frames of held-out clips, and the predicted frames
//! are compared with the real ones (PSNR), next to the copy-the-last-given-frame baseline.

use burn::prelude::*;
use serde::Serialize;

use nbp_core::blocks::LatentGrid;
use nbp_core::metrics::{psnr, ssim};
use nbp_core::progress::NoProgress;
use nbp_core::video::{Video, tensor_to_videos, videos_to_tensor};
use nbp_core::{Error, Result};
use nbp_model::classes::{class_condition, find_ucf101_class};
use nbp_model::generate::{Condition, Request, generate};
use nbp_model::sampling::SampleOptions;
use nbp_model::{GeneratorSettings, LoadedGenerator};
use nbp_tokenizer::VideoTokenizer;

use crate::data::{Clip, ClipSource, Skipping};

/// The PSNR a clip counts with in the means: identical frames (a still video copied) have an infinite PSNR,
/// which would make every mean infinite, so each clip counts at most this many dB.
pub const MAX_PSNR: f64 = 100.0;

/// Frames the official generation metrics score (`[:, :, :16]`).
const OFFICIAL_FRAMES: usize = 16;

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
    /// The model's clips scored as the official `transformer_eval.py` scores them (reference §5.1), for clips of
    /// at least 16 frames.
    pub official: Option<OfficialPrediction>,
}

/// Generated clips scored as the official `transformer_eval.py` does: PSNR and SSIM over the first 16 frames,
/// the given frames (the tokenizer's reconstruction of them) included; PSNR as mean and (population) standard
/// deviation over the clips, uncapped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfficialPrediction {
    pub psnr_mean: f64,
    pub psnr_std: f64,
    pub ssim: f64,
}

impl FramePrediction {
    /// Model minus baseline, in dB.
    pub fn margin(&self) -> f64 {
        self.psnr_model - self.psnr_copy_last
    }
}

/// The condition a generator gets for a clip whose dataset class is `name` (label `label` of the dataset): none
/// for an unconditional generator; its class found by name among the classes the generator records (files
/// written by `nbp-cli train`); for files that record none, the label itself (one condition token) or the
/// LLaMA-2 ids of the UCF-101 class `name` (the official UCF generator's 8 condition tokens).
pub fn clip_condition(settings: &GeneratorSettings, classes: &[String], name: &str, label: usize) -> Result<Condition> {
    if settings.unconditional {
        return Ok(Condition::None);
    }
    if !classes.is_empty() {
        let i = classes.iter().position(|c| c == name).ok_or_else(|| {
            Error::invalid(format!(
                "class '{name}' is not one of the {} classes the generator was trained on ({}): evaluate it on the \
                 data it was trained on (--dataset)",
                classes.len(),
                classes.iter().take(8).cloned().collect::<Vec<_>>().join(", ")
                    + if classes.len() > 8 { ", …" } else { "" }
            ))
        })?;
        return Ok(Condition::Tokens(class_condition(settings, classes, i)?));
    }
    if settings.cond_tokens == 1 {
        return if label < settings.cond_vocab.max(1) {
            Ok(Condition::Tokens(vec![label as i64]))
        } else {
            Err(Error::invalid(format!(
                "class '{name}' has label {label}, beyond the generator's {} condition ids",
                settings.cond_vocab
            )))
        };
    }
    let class = find_ucf101_class(name).map_err(|e| {
        Error::invalid(format!(
            "the generator takes {} condition tokens and records no class names, so a clip's class must be a UCF-101 \
             class: {e}",
            settings.cond_tokens
        ))
    })?;
    if class.token_ids.len() != settings.cond_tokens {
        return Err(Error::invalid(format!(
            "the generator takes {} condition tokens, but the UCF-101 class {} has {}",
            settings.cond_tokens,
            class.name,
            class.token_ids.len()
        )));
    }
    Ok(Condition::Tokens(class.token_ids))
}

/// Held-out clips for [`evaluate_frame_prediction`].
#[derive(Debug, Clone)]
pub struct HeldOutClips {
    /// Clips and their conditions, in dataset order.
    pub clips: Vec<(Video, Condition)>,
    /// Clips left out because their video is shorter than a clip: they end in black padding, which a prediction
    /// would be scored against.
    pub short: usize,
}

/// The last `count` readable clips of `source` that are whole (not padded), with the condition `condition` gives
/// each; unreadable videos are skipped with a warning (and recorded in the source's log). An error when no clip
/// is left.
pub fn last_whole_clips<S: ClipSource>(
    source: &Skipping<S>,
    count: usize,
    seed: u64,
    mut condition: impl FnMut(&Clip) -> Result<Condition>,
) -> Result<HeldOutClips> {
    let (mut clips, mut short, mut frames) = (vec![], 0, 0);
    let mut i = source.len();
    while clips.len() < count && i > 0 {
        i -= 1;
        match source.clip_or_skip(i, seed)? {
            Some(c) if c.padded > 0 => {
                short += 1;
                frames = c.video.frames;
            }
            Some(c) => {
                let cond = condition(&c)?;
                clips.push((c.video, cond));
            }
            None => {}
        }
    }
    clips.reverse();
    if clips.is_empty() {
        let whole = match short {
            0 => String::new(),
            1 => format!(" whole: its one video is shorter than {frames} frames"),
            n => format!(" whole: its {n} videos are shorter than {frames} frames"),
        };
        return Err(Error::invalid(format!("no clip of {} could be read{whole}", source.describe())));
    }
    Ok(HeldOutClips { clips, short })
}

/// Continues the first `given_frames` frames (`1 + 4n`, whole latent frames) of every clip with the generator
/// (conditioned on the clip's condition, see [`clip_condition`]) and scores the other frames.
#[allow(clippy::too_many_arguments)]
pub fn evaluate_frame_prediction<B: Backend>(
    generator: &LoadedGenerator<B>,
    tokenizer: &VideoTokenizer<B>,
    clips: &[(Video, Condition)],
    given_frames: usize,
    options: &SampleOptions,
    seed: u64,
    device: &B::Device,
    progress: &dyn nbp_core::progress::Progress,
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
    let official = first.frames >= OFFICIAL_FRAMES;
    let (mut official_psnr, mut official_ssim) = (vec![], 0.0);
    progress.start("predicting frames", clips.len());
    for (i, (video, condition)) in clips.iter().enumerate() {
        let x = videos_to_tensor::<B>(std::slice::from_ref(video), device)?;
        let ids: Vec<i64> = tokenizer.encode(x)?.into_data().convert::<i64>().to_vec().expect("int data");
        let prefix = ids[..given_latents * h * w].to_vec();
        let request = Request {
            condition: condition.clone(),
            prefix,
            grid,
            block_shape,
            samples: 1,
            options: *options,
            clamp_non_video: false,
        };
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
        if official {
            let (a, b) = (predicted.frames_range(0, OFFICIAL_FRAMES)?, video.frames_range(0, OFFICIAL_FRAMES)?);
            official_psnr.push(psnr(&a, &b)?);
            official_ssim += if a.height >= 11 && a.width >= 11 { ssim(&a, &b)? } else { f64::NAN };
        }
        progress.advance(1);
    }
    progress.finish();
    let k = clips.len() as f64;
    Ok(FramePrediction {
        clips: clips.len(),
        given_frames,
        psnr_model: model / k,
        psnr_copy_last: copy / k,
        psnr_reconstruction: recon / k,
        official: official.then(|| {
            let mean = official_psnr.iter().sum::<f64>() / k;
            let var = official_psnr.iter().map(|p| (p - mean).powi(2)).sum::<f64>() / k;
            OfficialPrediction { psnr_mean: mean, psnr_std: var.sqrt(), ssim: official_ssim / k }
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(unconditional: bool, cond_tokens: usize, cond_vocab: usize) -> GeneratorSettings {
        GeneratorSettings { block: 16, hybrid: false, unconditional, cond_tokens, cond_vocab }
    }

    #[test]
    fn clips_are_conditioned_on_their_class_as_the_generator_knows_it() {
        let classes: Vec<String> = ["circle-bounce", "ring-grow"].map(String::from).to_vec();
        let labelled = settings(false, 1, 2);
        // By name among the recorded classes, whatever the dataset's own label of the class.
        assert_eq!(clip_condition(&labelled, &classes, "ring-grow", 0).unwrap(), Condition::Tokens(vec![1]));
        let err = clip_condition(&labelled, &classes, "zzz", 1).unwrap_err().to_string();
        assert!(err.starts_with("class 'zzz' is not one of the 2 classes the generator was trained on (circle-bounce"));
        // No recorded classes: the label, within the condition ids.
        assert_eq!(clip_condition(&labelled, &[], "any", 1).unwrap(), Condition::Tokens(vec![1]));
        assert!(clip_condition(&labelled, &[], "any", 2).unwrap_err().to_string().contains("beyond the generator's 2"));
        // The official UCF generator: the LLaMA-2 ids of the class, found by folder name.
        let ucf = settings(false, 8, 32000);
        let ids = vec![1, 3394, 10977, 1207, 786, 2, 2, 2];
        assert_eq!(clip_condition(&ucf, &[], "ApplyEyeMakeup", 0).unwrap(), Condition::Tokens(ids));
        let err = clip_condition(&ucf, &[], "circle-bounce", 0).unwrap_err().to_string();
        assert!(err.contains("must be a UCF-101 class"), "{err}");
        assert_eq!(clip_condition(&settings(true, 0, 0), &classes, "zzz", 7).unwrap(), Condition::None);
    }

    /// Clips whose index is in `padded` end in black padding; those in `bad` cannot be read.
    struct Clips {
        n: usize,
        padded: Vec<usize>,
        bad: Vec<usize>,
    }

    impl ClipSource for Clips {
        fn len(&self) -> usize {
            self.n
        }
        fn clip(&self, index: usize, _seed: u64) -> Result<Clip> {
            if self.bad.contains(&index) {
                return Err(Error::file(format!("v{index}.mp4"), "cannot be read as a video"));
            }
            let padded = usize::from(self.padded.contains(&index));
            let video = Video::new(5, 1, 1, vec![index as f32 / 10.0; 15]).unwrap();
            Ok(Clip { video, label: index, text: String::new(), source: format!("v{index}.mp4"), padded })
        }
        fn class_names(&self) -> Vec<String> {
            (0..self.n).map(|i| format!("c{i}")).collect()
        }
        fn describe(&self) -> String {
            format!("test clips: {} videos", self.n)
        }
    }

    #[test]
    fn held_out_clips_are_the_last_whole_readable_ones_in_order() {
        let source = Skipping::new(Clips { n: 8, padded: vec![6], bad: vec![5] });
        let held = last_whole_clips(&source, 3, 0, |c| Ok(Condition::Tokens(vec![c.label as i64]))).unwrap();
        let labels: Vec<Condition> = held.clips.iter().map(|c| c.1.clone()).collect();
        assert_eq!(labels, [3, 4, 7].map(|l| Condition::Tokens(vec![l])));
        assert_eq!(held.short, 1);
        assert_eq!(source.log().len(), 1);
        // A condition error stops the selection.
        let err = last_whole_clips(&source, 3, 0, |_| Err(Error::invalid("no such class"))).unwrap_err();
        assert_eq!(err.to_string(), "no such class");
        let none = Skipping::new(Clips { n: 2, padded: vec![0, 1], bad: vec![] });
        let err = last_whole_clips(&none, 3, 0, |_| Ok(Condition::None)).unwrap_err().to_string();
        assert_eq!(err, "no clip of test clips: 2 videos could be read whole: its 2 videos are shorter than 5 frames");
    }

    #[test]
    fn a_still_clip_counts_with_the_capped_psnr() {
        assert_eq!(capped(f64::INFINITY), MAX_PSNR);
        assert_eq!(capped(31.5), 31.5);
        assert_eq!((capped(f64::INFINITY) + capped(20.0)) / 2.0, 60.0);
    }
}
