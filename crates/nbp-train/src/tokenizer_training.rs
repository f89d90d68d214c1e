//! Tokenizer training (the official repository ships none, reference §1.9): reconstruction loss (L1 and/or L2),
//! an optional LPIPS perceptual loss (VGG16 weights from user files), and an optional PatchGAN discriminator with
//! hinge loss, started after a warm-up, weighted adaptively by the ratio of the gradient norms of the
//! reconstruction and GAN losses at the decoder's last layer (VQGAN). Two optimisers (tokenizer, discriminator).
//!
//! Like generator training, the run is counted in steps, data come from a deterministic stream, checkpoints are
//! written atomically every `checkpoint_every` steps, at the end and on Ctrl-C, and `--resume` continues exactly.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Instant;

use burn::module::AutodiffModule;
use burn::optim::{GradientsParams, Optimizer};
use burn::prelude::*;
use burn::record::Recorder;
use burn::tensor::backend::AutodiffBackend;
use burn_train::Interrupter;
use serde::{Deserialize, Serialize};

use nbp_core::metrics::{psnr, ssim};
use nbp_core::video::{Video, tensor_to_videos, videos_to_tensor};
use nbp_core::{Error, Result};
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer, load_tokenizer, save_tokenizer_with_resolution};

use crate::data::{ClipOptions, ClipSource, DatasetSpec, SkipLog, Skipping, Split};
use crate::gan::{
    Lpips, PatchDiscriminator, PatchDiscriminatorConfig, adaptive_weight, generator_loss, hinge_d_loss, param_grad_norm,
};
use crate::optim::{GroupedAdamW, OptimizerConfig};
use crate::run::{self, AtomicRecorder, LossHistory, RunDir, SplitMix};
use crate::schedule::{ScheduleConfig, WarmupCosine};
use burn::lr_scheduler::LrScheduler;

/// A tokenizer run; read from TOML (`nbp-cli train-tokenizer --config run.toml`), every field can be overridden
/// on the command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenizerTrainConfig {
    /// Training data (a dataset spec: `moving-shapes:<count>`, `folder:<dir>`, `csv:<file>`, `ucf:<root>[:list]`,
    /// `k600:<root>[:<list>]`).
    pub dataset: String,
    /// Clip size: frames (`1 + 4n`), height and width (multiples of 8), and frame rate (dataset default if unset).
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub fps: Option<f64>,
    /// Train on random square crops of this size (a multiple of 8) of every clip; the network is convolutional,
    /// so it then runs on whole frames (validation always uses whole frames). Cuts the cost per step.
    pub crop: Option<usize>,
    /// Architecture: a preset (`tiny`, `small`, `official`) or a JSON config file.
    pub preset: String,
    /// FSQ levels overriding the preset's (the product is the codebook size).
    pub fsq_levels: Option<Vec<usize>>,
    pub out: PathBuf,
    pub steps: usize,
    pub batch_size: usize,
    pub checkpoint_every: usize,
    /// Clips held out (the last of the dataset) for validation.
    pub valid_clips: usize,
    pub seed: u64,
    pub l1_weight: f64,
    pub l2_weight: f64,
    /// Steps at the start of the run in which the decoder reads the encoder's bounded outputs before rounding
    /// (FSQ bypassed); rounding starts after them. A small tokenizer that rounds from its first step can sit on
    /// the plateau of drawing each frame in its mean colour for thousands of steps; one that first learns a
    /// continuous code leaves it within a few hundred (assets/README.md has the measurements). 0: round from
    /// the first step.
    pub unquantized_steps: usize,
    /// A tokenizer file (`nbp` safetensors or an official checkpoint) whose weights a new run starts from, for
    /// fine-tuning; its architecture must be the run's. Ignored when `--resume` finds a checkpoint.
    pub init_from: Option<PathBuf>,
    /// Train the decoder only: the encoder's outputs are taken as constants, so every clip keeps exactly the
    /// token ids it had when the run started (a generator trained on them still fits), while the decoder (with
    /// a GAN, for example) learns to draw them better. Use with `init_from`.
    pub freeze_encoder: bool,
    /// LPIPS: a torchvision `vgg16` state dict and the LPIPS head file (`vgg.pth`); skipped when unset.
    pub lpips_vgg: Option<PathBuf>,
    pub lpips_lin: Option<PathBuf>,
    pub perceptual_weight: f64,
    /// Step at which the discriminator starts; `None` trains without GAN.
    pub gan_start: Option<usize>,
    /// Weight of the (adaptively scaled) generator loss.
    pub gan_weight: f64,
    pub disc_channels: usize,
    pub disc_layers: usize,
    /// Discriminator learning rate (the tokenizer's when unset).
    pub disc_lr: Option<f64>,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
}

impl Default for TokenizerTrainConfig {
    fn default() -> Self {
        Self {
            dataset: "moving-shapes:20000".into(),
            frames: 17,
            height: 64,
            width: 64,
            fps: None,
            crop: None,
            preset: "tiny".into(),
            fsq_levels: None,
            out: PathBuf::from("runs/tokenizer"),
            steps: 2000,
            batch_size: 4,
            checkpoint_every: 250,
            valid_clips: 8,
            seed: 1234,
            l1_weight: 1.0,
            l2_weight: 1.0,
            unquantized_steps: 0,
            init_from: None,
            freeze_encoder: false,
            lpips_vgg: None,
            lpips_lin: None,
            perceptual_weight: 1.0,
            gan_start: None,
            gan_weight: 0.1,
            disc_channels: 64,
            disc_layers: 3,
            disc_lr: None,
            optimizer: OptimizerConfig { beta1: 0.9, beta2: 0.99, weight_decay: 0.0, ..Default::default() },
            schedule: ScheduleConfig { lr: 1e-3, warmup_steps: 100, ..Default::default() },
        }
    }
}

impl TokenizerTrainConfig {
    /// The architecture the run trains.
    pub fn tokenizer_config(&self) -> Result<TokenizerConfig> {
        let mut c = TokenizerConfig::from_name_or_file(&self.preset)?;
        if let Some(levels) = &self.fsq_levels {
            c.fsq_levels = levels.clone();
        }
        c.validate()?;
        c.latent_shape(self.frames, self.height, self.width)?;
        Ok(c)
    }

    /// Checks values the run would otherwise trip over late.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 || self.steps == 0 || self.checkpoint_every == 0 {
            return Err(Error::invalid("batch_size, steps and checkpoint_every must be at least 1"));
        }
        if !(self.l1_weight >= 0.0 && self.l2_weight >= 0.0 && (self.l1_weight + self.l2_weight).is_finite())
            || self.l1_weight + self.l2_weight == 0.0
        {
            return Err(Error::invalid("l1_weight and l2_weight must be finite numbers ≥ 0, not both 0"));
        }
        if self.lpips_vgg.is_some() != self.lpips_lin.is_some() {
            return Err(Error::invalid(
                "LPIPS needs both files: --lpips-vgg (torchvision vgg16 weights) and --lpips-lin (LPIPS vgg.pth)",
            ));
        }
        if self.unquantized_steps >= self.steps {
            return Err(Error::invalid(format!(
                "unquantized_steps ({}) must be smaller than steps ({}): the tokenizer would never train with the \
                 rounded codes it is used with",
                self.unquantized_steps, self.steps
            )));
        }
        self.schedule.validate()?;
        self.optimizer.validate()?;
        for (name, v) in [("perceptual_weight", self.perceptual_weight), ("gan_weight", self.gan_weight)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(Error::invalid(format!("{name} must be a finite number ≥ 0, got {v}")));
            }
        }
        if let Some(v) = self.disc_lr.filter(|v| !(*v > 0.0 && v.is_finite())) {
            return Err(Error::invalid(format!("disc_lr must be a positive number, got {v}")));
        }
        if let Some(c) = self.crop
            && (c == 0 || !c.is_multiple_of(8) || c > self.height.min(self.width))
        {
            return Err(Error::invalid(format!(
                "crop must be a positive multiple of 8 no larger than the frames ({}×{}), got {c}",
                self.height, self.width
            )));
        }
        let side = self.crop.unwrap_or(self.height.min(self.width));
        if self.gan_start.is_some() && !(1..=4096).contains(&self.disc_channels) {
            return Err(Error::invalid(format!(
                "a PatchGAN discriminator needs 1 to 4096 channels in its first layer (64 is usual), got {}",
                self.disc_channels
            )));
        }
        if self.gan_start.is_some() && !(1..=12).contains(&self.disc_layers) {
            return Err(Error::invalid(format!(
                "a PatchGAN discriminator needs 1 to 12 stride-2 layers (3 is usual), got {}",
                self.disc_layers
            )));
        }
        let min_side = 3 << self.disc_layers.min(12);
        if self.gan_start.is_some() && side < min_side {
            return Err(Error::invalid(format!(
                "a PatchGAN discriminator with {} stride-2 layers needs frames of at least {min_side}×{min_side}, got \
                 {}×{}: lower --disc-layers or raise the resolution",
                self.disc_layers, self.height, self.width
            )));
        }
        self.tokenizer_config().map(|_| ())
    }

    /// Settings that are valid but do not do what they seem to: a GAN that starts after the last step, a warm-up
    /// that never reaches the peak learning rate, a frame rate for generated data.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = vec![];
        if let Some(g) = self.gan_start.filter(|&g| g >= self.steps) {
            out.push(format!(
                "gan_start ({g}) is not before the last step ({}): the discriminator never trains",
                self.steps
            ));
        }
        out.extend(self.schedule.warning(self.steps));
        if let Ok(spec) = self.dataset.parse::<DatasetSpec>() {
            out.extend(spec.fps_warning(self.fps));
        }
        out
    }

    fn clip_options(&self, split: Split) -> ClipOptions {
        ClipOptions { frames: self.frames, height: self.height, width: self.width, fps: self.fps, split }
    }
}

/// A deterministic stream of training batches read ahead on a worker thread.
struct ClipStream {
    rx: mpsc::Receiver<Result<Vec<Video>>>,
}

impl ClipStream {
    fn new(
        source: Arc<dyn ClipSource>,
        clips: usize,
        (batch, crop): (usize, Option<usize>),
        seed: u64,
        from_step: usize,
        steps: usize,
    ) -> Self {
        let (tx, rx) = mpsc::sync_channel(2);
        std::thread::spawn(move || {
            let mut pass_order: Option<(usize, Vec<usize>)> = None;
            let mut padding_reported = false;
            for step in from_step..steps {
                let mut videos = Vec::with_capacity(batch);
                let mut failed = None;
                for j in 0..batch {
                    let k = step * batch + j;
                    let (pass, pos) = (k / clips, k % clips);
                    if pass_order.as_ref().is_none_or(|(p, _)| *p != pass) {
                        let mut order: Vec<usize> = (0..clips).collect();
                        SplitMix::new(seed ^ 0x5EED_0000 ^ pass as u64).shuffle(&mut order);
                        pass_order = Some((pass, order));
                    }
                    let index = pass_order.as_ref().expect("set above").1[pos];
                    match source.clip(index, seed ^ k as u64) {
                        Ok(c) => {
                            if c.padded > 0 && !padding_reported {
                                padding_reported = true;
                                eprintln!(
                                    "warning: {} is shorter than a clip: {} black frames end it, and the tokenizer \
                                     learns them as data (further short videos are not reported; fewer --frames, or \
                                     a higher --fps up to the videos' own rate, avoids them)",
                                    c.source, c.padded
                                );
                            }
                            videos.push(match crop {
                                Some(size) => random_crop(&c.video, size, &mut SplitMix::new(seed ^ 0xC80B ^ k as u64)),
                                None => c.video,
                            })
                        }
                        Err(e) => {
                            failed = Some(e);
                            break;
                        }
                    }
                }
                let item = match failed {
                    Some(e) => Err(e),
                    None => Ok(videos),
                };
                if tx.send(item).is_err() {
                    return;
                }
            }
        });
        Self { rx }
    }

    fn next(&self) -> Result<Vec<Video>> {
        self.rx.recv().map_err(|_| Error::invalid("the data worker stopped"))?
    }
}

/// A share as a percentage with one decimal, or with as many as its first digit needs below 0.1 % (a few codes
/// of a codebook of 64 000 would read 0.0 %).
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 0.0 && p < 0.1 {
        let decimals = (-p.log10()).ceil() as usize;
        format!("{p:.decimals$}%")
    } else {
        format!("{p:.1}%")
    }
}

/// A `size × size` window of `video` at a random position.
fn random_crop(video: &Video, size: usize, rng: &mut SplitMix) -> Video {
    let y0 = rng.below(video.height - size + 1);
    let x0 = rng.below(video.width - size + 1);
    let mut data = Vec::with_capacity(3 * video.frames * size * size);
    for c in 0..3 {
        for t in 0..video.frames {
            for y in y0..y0 + size {
                let start = video.index(c, t, y, x0);
                data.extend_from_slice(&video.data[start..start + size]);
            }
        }
    }
    Video::new(video.frames, size, size, data).expect("consistent crop")
}

/// Validation numbers of a tokenizer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reconstruction {
    pub clips: usize,
    /// Mean PSNR (dB) and SSIM of the reconstructions (clamped to `[0, 1]`) against the clips.
    pub psnr: f64,
    pub ssim: f64,
    /// Mean absolute error.
    pub l1: f64,
    /// Fraction of the codebook used by the validation clips' tokens.
    pub codebook_usage: f64,
    /// Mean PSNR (dB) of filling every frame with its own mean colour: a tokenizer that does not beat this
    /// passes no more than the colour of each frame (the plateau an untrained or stuck model sits on).
    pub psnr_frame_mean: f64,
    /// The metrics as the official `tokenizer_eval.py` takes them (reference §1.10), for clips of more than 5
    /// frames.
    pub official: Option<OfficialScores>,
}

/// Reconstruction metrics as the official `tokenizer_eval.py` computes them: PSNR and SSIM over every frame but the
/// last (16 of 17), L1 and LPIPS on frame 5 alone.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OfficialScores {
    pub psnr: f64,
    pub ssim: f64,
    pub l1_frame5: f64,
    /// With LPIPS weights only.
    pub lpips_frame5: Option<f64>,
}

/// Every frame of `video` filled with that frame's mean colour.
pub fn frame_mean_colours(video: &Video) -> Video {
    let plane = video.height * video.width;
    let mut out = video.clone();
    for chunk in out.data.chunks_mut(plane) {
        let mean = chunk.iter().map(|&v| v as f64).sum::<f64>() / plane as f64;
        chunk.fill(mean as f32);
    }
    out
}

/// Reconstructs `clips` and measures them.
pub fn evaluate_reconstruction<B: Backend>(
    model: &VideoTokenizer<B>,
    clips: &[Video],
    batch: usize,
    device: &B::Device,
) -> Result<Reconstruction> {
    evaluate_reconstruction_with(model, clips, batch, None, device, &nbp_core::progress::NoProgress)
}

/// [`evaluate_reconstruction`], with LPIPS on frame 5 of each clip when `lpips` is given (the official protocol),
/// reporting the clips done to `progress`.
pub fn evaluate_reconstruction_with<B: Backend>(
    model: &VideoTokenizer<B>,
    clips: &[Video],
    batch: usize,
    lpips: Option<&Lpips<B>>,
    device: &B::Device,
    progress: &dyn nbp_core::progress::Progress,
) -> Result<Reconstruction> {
    progress.start("reconstructing", clips.len());
    let mut used = vec![false; model.codebook_size()];
    let (mut p, mut s, mut l1, mut baseline) = (0.0, 0.0, 0.0, 0.0);
    let official = clips.first().is_some_and(|c| c.frames > 5);
    let (mut op, mut os, mut ol1, mut olp) = (0.0, 0.0, 0.0, 0.0);
    for chunk in clips.chunks(batch.max(1)) {
        let x = videos_to_tensor::<B>(chunk, device)?;
        let (indices, recon) = model.reconstruct(x.clone(), &nbp_core::progress::NoProgress)?;
        for id in indices.into_data().convert::<i64>().to_vec::<i64>().expect("int data") {
            used[id as usize] = true;
        }
        if let (true, Some(lpips)) = (official, lpips) {
            // Frame 5 of the clips and of their reconstructions (clamped to [0, 1]), mapped to [−1, 1].
            let frame = |v: Tensor<B, 5>| {
                let [b, c, _, h, w] = v.dims();
                v.clamp(0.0, 1.0).narrow(2, 5, 1).reshape([b, c, h, w]).mul_scalar(2.0).sub_scalar(1.0)
            };
            olp += lpips.forward(frame(x), frame(recon.clone())).sum().into_scalar().elem::<f64>();
        }
        for (a, b) in chunk.iter().zip(tensor_to_videos(recon)?) {
            p += psnr(a, &b)?;
            s += ssim(a, &b)?;
            baseline += psnr(a, &frame_mean_colours(a))?;
            l1 += mean_abs(a, &b);
            if official {
                let (a16, b16) = (a.frames_range(0, a.frames - 1)?, b.frames_range(0, b.frames - 1)?);
                op += psnr(&a16, &b16)?;
                os += ssim(&a16, &b16)?;
                ol1 += mean_abs(&a.frames_range(5, 1)?, &b.frames_range(5, 1)?);
            }
        }
        progress.advance(chunk.len());
    }
    progress.finish();
    let n = clips.len().max(1) as f64;
    Ok(Reconstruction {
        clips: clips.len(),
        psnr: p / n,
        ssim: s / n,
        l1: l1 / n,
        codebook_usage: used.iter().filter(|&&u| u).count() as f64 / used.len() as f64,
        psnr_frame_mean: baseline / n,
        official: official.then(|| OfficialScores {
            psnr: op / n,
            ssim: os / n,
            l1_frame5: ol1 / n,
            lpips_frame5: lpips.map(|_| olp / n),
        }),
    })
}

/// Mean absolute difference of two videos of the same size.
fn mean_abs(a: &Video, b: &Video) -> f64 {
    a.data.iter().zip(&b.data).map(|(x, y)| (x - y).abs() as f64).sum::<f64>() / a.data.len().max(1) as f64
}

/// What a finished (or interrupted) tokenizer run reports.
#[derive(Debug, Clone)]
pub struct TokenizerRun {
    pub steps_done: usize,
    pub model_path: PathBuf,
    pub seconds: f64,
    pub clips_per_second: f64,
    pub interrupted: bool,
    pub validation: Option<Reconstruction>,
    /// First training losses and last ones (for tests and the closing report).
    pub losses: Vec<(usize, f64)>,
}

const PARTS: [&str; 2] = ["tokenizer", "tokenizer_optim"];
const GAN_PARTS: [&str; 4] = ["tokenizer", "tokenizer_optim", "disc", "disc_optim"];

/// Trains a tokenizer as `config` says (see the module docs). `report` receives the progress lines.
pub fn train_tokenizer<B: AutodiffBackend>(
    config: &TokenizerTrainConfig,
    resume: bool,
    device: &B::Device,
    interrupter: Interrupter,
    report: &mut dyn FnMut(&str),
) -> Result<TokenizerRun> {
    config.validate()?;
    run::check_resume(&config.out, resume)?;
    let tconfig = config.tokenizer_config()?;
    let spec: DatasetSpec = config.dataset.parse()?;
    let skipped = SkipLog::new();
    let [train_view, eval_view] =
        spec.open_views(&config.clip_options(Split::Train), config.seed, [Split::Train, Split::Eval])?;
    let eval_view = Skipping::sharing(eval_view, skipped.clone());
    let total = train_view.len();
    if total <= config.valid_clips {
        return Err(Error::invalid(format!(
            "{} has {total} clips: too few to hold out {} for validation and train on the rest (lower \
             --valid-clips, valid_clips in the config)",
            config.dataset, config.valid_clips
        )));
    }
    // The held-out clips are the last `valid_clips` readable ones; the clips before them are trained on, an
    // unreadable one replaced by another training clip (never by a held-out one).
    let mut valid: Vec<Video> = Vec::with_capacity(config.valid_clips);
    let mut n_train = total;
    while valid.len() < config.valid_clips && n_train > 1 {
        n_train -= 1;
        if let Some(clip) = eval_view.clip_or_skip(n_train, config.seed)? {
            valid.push(clip.video);
        }
    }
    valid.reverse();
    if valid.len() < config.valid_clips {
        return Err(Error::invalid(format!(
            "{}: with the unreadable videos left out, {} held-out clips would leave none to train on (lower \
             --valid-clips, valid_clips in the config)",
            config.dataset, config.valid_clips
        )));
    }
    if n_train < config.batch_size {
        eprintln!(
            "warning: a batch of {} clips is larger than the {n_train} training clips: each batch repeats clips",
            config.batch_size
        );
    }
    let source: Arc<dyn ClipSource> = Arc::new(Skipping::with_log(train_view, skipped.clone()).split_at(n_train));

    let dir = RunDir::create(&config.out)?;
    let gan = config.gan_start.is_some();
    // The tokenizer and optimiser records to continue from: each candidate checkpoint is read back whole, so a
    // damaged latest one falls back to the one before.
    let resumed = if resume {
        let parts = ("tokenizer", "tokenizer_optim", None);
        dir.resume_from::<B, VideoTokenizer<B>, GroupedAdamW<VideoTokenizer<B>, B>>(
            parts,
            config.steps,
            device,
            report,
        )?
    } else {
        None
    };
    let start = resumed.as_ref().map(|r| r.0);
    // A run that adds the GAN when resumed has no discriminator checkpoint yet: the discriminator starts fresh.
    let disc_saved = start.is_some_and(|s| dir.checkpoints(&GAN_PARTS).is_ok_and(|c| c.contains(&s)));
    if resume && start.is_none() {
        report(&format!("--resume: {} holds no checkpoint yet, so this is a new run", dir.path().display()));
    }
    if !resume && !dir.checkpoints(&PARTS)?.is_empty() {
        return Err(Error::file(
            dir.path(),
            "already holds a tokenizer run: pass --resume to continue it, or choose another --out",
        ));
    }
    let disc_config =
        PatchDiscriminatorConfig::new().with_channels(config.disc_channels).with_layers(config.disc_layers);
    dir.refuse_other_kind("tokenizer.toml")?;
    dir.check_architecture("architecture.toml", &tconfig, start.is_some())?;
    if gan {
        dir.check_architecture("discriminator.toml", &disc_config, disc_saved)?;
    }
    // The dataset and the files the config names by absolute paths, so that `--resume` from another folder reads
    // the same videos and architecture.
    let abs = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    let preset = if Path::new(&config.preset).is_file() {
        abs(Path::new(&config.preset)).display().to_string()
    } else {
        config.preset.clone()
    };
    dir.save_config(
        "tokenizer.toml",
        &TokenizerTrainConfig {
            dataset: spec.absolute().to_string(),
            preset,
            init_from: config.init_from.as_deref().map(abs),
            lpips_vgg: config.lpips_vgg.as_deref().map(abs),
            lpips_lin: config.lpips_lin.as_deref().map(abs),
            ..config.clone()
        },
    )?;
    report(&format!("data: {} ({} training clips, {} held out)", source.describe(), n_train, valid.len()));

    B::seed(device, config.seed);
    let recorder = AtomicRecorder::default();
    let ckpt = |name: &str, step: usize| dir.path().join("checkpoint").join(format!("{name}-{step}"));
    let mut model = VideoTokenizer::<B>::new(&tconfig, device)?;
    let mut optim = GroupedAdamW::new(&config.optimizer, |_, _| true);
    let mut disc: Option<PatchDiscriminator<B>> = gan.then(|| disc_config.init(device));
    let disc_opt_config = OptimizerConfig { beta1: 0.5, beta2: 0.9, weight_decay: 0.0, ..config.optimizer.clone() };
    let mut disc_optim = disc.as_ref().map(|_| GroupedAdamW::new(&disc_opt_config, |_, _| false));
    let mut schedule = WarmupCosine::new(config.schedule.clone(), config.steps);
    let lpips = match (&config.lpips_vgg, &config.lpips_lin) {
        (Some(vgg), Some(lin)) => Some(
            Lpips::<B>::load(vgg, lin, device)
                .map_err(|e| Error::invalid(format!("{e} (the LPIPS weights of --lpips-vgg and --lpips-lin)")))?,
        ),
        _ => {
            report("perceptual loss: skipped (no LPIPS weights given; pass --lpips-vgg and --lpips-lin to use it)");
            None
        }
    };
    let load_err = |e: RecorderError| {
        Error::file(dir.path().join("checkpoint"), format!("cannot read a checkpoint: {}", run::checkpoint_error(&e)))
    };
    use burn::record::RecorderError;
    if let Some((step, model_record, optim_record)) = resumed {
        model = model.load_record(model_record);
        optim = optim.load_record(optim_record);
        if disc_saved && let (Some(d), Some(o)) = (disc.take(), disc_optim.take()) {
            disc = Some(d.load_record(Recorder::<B>::load(&recorder, ckpt("disc", step), device).map_err(load_err)?));
            disc_optim = Some(
                o.load_record(Recorder::<B>::load(&recorder, ckpt("disc_optim", step), device).map_err(load_err)?),
            );
        } else if gan {
            report(&format!("no discriminator checkpoint at step {step}: the discriminator starts fresh"));
        }
        schedule = schedule.load_record::<B>(step);
        report(&format!("resumed from step {step}"));
    } else if config.freeze_encoder && config.init_from.is_none() {
        return Err(Error::invalid(
            "freeze_encoder on a new run would train a decoder for an untrained encoder: pass --init-from with a \
             trained tokenizer (or --resume a run)",
        ));
    } else if let Some(path) = &config.init_from {
        let (init, _) = load_tokenizer::<B>(path, Some(&tconfig), device).map_err(|e| {
            Error::invalid(format!(
                "{e} (--init-from: the run's architecture, --preset or the config's preset, must be the file's)"
            ))
        })?;
        model = model.load_record(init.into_record());
        report(&format!("weights from {}", path.display()));
    }
    let first = start.unwrap_or(0);
    let mut history = LossHistory::read(&dir, first);
    let stream =
        ClipStream::new(source.clone(), n_train, (config.batch_size, config.crop), config.seed, first, config.steps);

    // The clip size (not the crop): what the CLI reads clips at by default for this file.
    let resolution = Some((config.height, config.width));
    let started = Instant::now();
    let mut last_print: Option<Instant> = None;
    let mut losses = vec![];
    let mut validation = None;
    let mut step = first;
    // The two latest checkpoints stay, those of earlier sessions of a resumed run included.
    let mut kept: Vec<usize> = dir.checkpoints(&PARTS)?.into_iter().filter(|&s| s <= first).collect();
    while step < config.steps {
        let videos = stream.next()?;
        let x = videos_to_tensor::<B>(&videos, device)?;
        let lr = schedule.step();
        let fwd = model.forward_train(x.clone(), step >= config.unquantized_steps, !config.freeze_encoder)?;
        let mut rec = rec_of(&fwd.reconstruction, &x, config);
        if let Some(lp) = &lpips {
            rec = rec + lp.forward_video(fwd.reconstruction.clone(), x.clone()).mul_scalar(config.perceptual_weight);
        }
        let rec_value = rec.clone().into_scalar().elem::<f64>();
        let gan_on = config.gan_start.is_some_and(|s| step >= s);
        let mut line = format!("rec {rec_value:.4}");
        let loss = match (&disc, gan_on) {
            (Some(d), true) => {
                // Adaptive weight: gradient norms of both losses at the last layer, on a detached copy of its
                // input so that only that layer (and the discriminator) is traversed.
                // Each loss gets its own copy of the last layer's output: a backward pass consumes the graph it
                // walks, so two losses cannot share one.
                let h = fwd.before_last.clone().detach();
                let w = last_layer_weight(&model);
                let rec_norm = param_grad_norm(rec_of(&model.last_layer().forward(h.clone()), &x, config), &w);
                let gan_norm = param_grad_norm(generator_loss(d.forward(model.last_layer().forward(h))), &w);
                let weight = adaptive_weight(rec_norm, gan_norm, 1e4) * config.gan_weight;
                let g = generator_loss(d.forward(fwd.reconstruction.clone()));
                let g_value = g.clone().into_scalar().elem::<f64>();
                line += &format!("  g {g_value:.4}  w {weight:.3e}");
                history.push("generator GAN loss", step + 1, g_value);
                history.push("adaptive GAN weight", step + 1, weight);
                rec + g.mul_scalar(weight)
            }
            _ => rec,
        };
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        if gan_on && let (Some(d), Some(o)) = (disc.take(), disc_optim.as_mut()) {
            let d_loss = hinge_d_loss(d.forward(x.clone()), d.forward(fwd.reconstruction.detach()));
            let d_value = d_loss.clone().into_scalar().elem::<f64>();
            line += &format!("  d {d_value:.4}");
            history.push("discriminator loss", step + 1, d_value);
            let grads = GradientsParams::from_grads(d_loss.backward(), &d);
            disc = Some(o.step(config.disc_lr.unwrap_or(lr), d, grads));
        }
        step += 1;
        losses.push((step, rec_value));
        history.push("reconstruction loss", step, rec_value);
        let stop = interrupter.should_stop();
        if last_print.is_none_or(|t| t.elapsed().as_secs_f64() >= 5.0) || step == config.steps {
            last_print = Some(Instant::now());
            let elapsed = started.elapsed().as_secs_f64();
            let left = crate::run::remaining_seconds(elapsed, step - first, config.steps - step);
            let l = format!(
                "step {step}/{}  {line}  lr {lr:.3e}  [{elapsed:.0} s, {} left]",
                config.steps,
                crate::run::format_duration(left)
            );
            report(&l);
            dir.log(&l);
        }
        if step.is_multiple_of(config.checkpoint_every) || step == config.steps || stop {
            // Without held-out clips (--valid-clips 0) there is nothing to validate on.
            if !valid.is_empty() {
                let v = evaluate_reconstruction(&model.valid(), &valid, config.batch_size, device)?;
                let l = format!(
                    "validation at step {step}: PSNR {:.2} dB (each frame's mean colour: {:.2} dB)  SSIM {:.4}  L1 {:.4}  \
                     codebook usage {}",
                    v.psnr,
                    v.psnr_frame_mean,
                    v.ssim,
                    v.l1,
                    percent(v.codebook_usage)
                );
                report(&l);
                dir.log(&l);
                history.push("validation PSNR (dB)", step, v.psnr);
                history.push("frame mean colour PSNR (dB)", step, v.psnr_frame_mean);
                history.push("validation L1", step, v.l1);
                validation = Some(v);
            }
            // The losses are kept with every checkpoint, with or without held-out clips.
            let mut plots: Vec<run::Plot<'_>> = vec![(
                "loss.svg",
                "tokenizer training: reconstruction loss",
                &[("reconstruction loss", 20), ("validation L1", 1)],
            )];
            if !valid.is_empty() {
                plots.push((
                    "psnr.svg",
                    "tokenizer: validation PSNR (dB)",
                    &[("validation PSNR (dB)", 1), ("frame mean colour PSNR (dB)", 1)],
                ));
            }
            if gan {
                plots.push((
                    "gan.svg",
                    "tokenizer training: GAN losses",
                    &[("generator GAN loss", 20), ("discriminator loss", 20)],
                ));
            }
            history.write(&dir, &plots)?;
            let save = |e: RecorderError| Error::file(dir.path(), format!("cannot write a checkpoint: {e}"));
            Recorder::<B>::record(&recorder, model.clone().into_record(), ckpt("tokenizer", step)).map_err(save)?;
            Recorder::<B>::record(&recorder, optim.to_record(), ckpt("tokenizer_optim", step)).map_err(save)?;
            if let (Some(d), Some(o)) = (&disc, &disc_optim) {
                Recorder::<B>::record(&recorder, d.clone().into_record(), ckpt("disc", step)).map_err(save)?;
                Recorder::<B>::record(&recorder, o.to_record(), ckpt("disc_optim", step)).map_err(save)?;
            }
            save_tokenizer_with_resolution(&model.valid(), dir.path().join("tokenizer.safetensors"), resolution)?;
            kept.push(step);
            while kept.len() > 2 {
                let old = kept.remove(0);
                for part in GAN_PARTS {
                    let _ = std::fs::remove_file(ckpt(part, old).with_extension("mpk"));
                }
            }
        }
        if stop {
            break;
        }
    }
    if let Some(summary) = skipped.summary() {
        report(&summary);
    }
    // A run resumed at its last step trains nothing (no checkpoint pass above) but still exports its model.
    let model_path = dir.path().join("tokenizer.safetensors");
    if step == first {
        save_tokenizer_with_resolution(&model.valid(), &model_path, resolution)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = step - first;
    Ok(TokenizerRun {
        steps_done: step,
        model_path,
        seconds,
        clips_per_second: (done * config.batch_size) as f64 / seconds.max(1e-9),
        interrupted: step < config.steps,
        validation,
        losses,
    })
}

fn rec_of<B: Backend>(y: &Tensor<B, 5>, x: &Tensor<B, 5>, config: &TokenizerTrainConfig) -> Tensor<B, 1> {
    let diff = y.clone() - x.clone();
    let mut rec = diff.clone().abs().mean().mul_scalar(config.l1_weight);
    if config.l2_weight > 0.0 {
        rec = rec + diff.powi_scalar(2).mean().mul_scalar(config.l2_weight);
    }
    rec
}

fn last_layer_weight<B: Backend>(model: &VideoTokenizer<B>) -> burn::module::Param<Tensor<B, 5>> {
    match model.last_layer() {
        nbp_tokenizer::layer::Layer::Conv(c) => c.conv.weight.clone(),
        _ => unreachable!("the decoder ends with a convolution"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_shares_keep_their_first_digit() {
        assert_eq!(percent(0.456), "45.6%");
        assert_eq!(percent(0.0), "0.0%");
        assert_eq!(percent(3.0 / 64000.0), "0.005%");
        assert_eq!(percent(0.0005), "0.05%");
        assert_eq!(percent(0.001), "0.1%");
    }

    #[test]
    fn frame_mean_colours_average_each_channel_of_each_frame() {
        // 2 frames of 1×2 pixels: channel c, frame t holds [c + t, c + t + 2] / 10.
        let mut data = vec![];
        for c in 0..3 {
            for t in 0..2 {
                data.extend([(c + t) as f32 / 10.0, (c + t + 2) as f32 / 10.0]);
            }
        }
        let v = Video::new(2, 1, 2, data).unwrap();
        let m = frame_mean_colours(&v);
        for c in 0..3 {
            for t in 0..2 {
                let want = (c + t + 1) as f32 / 10.0;
                for x in 0..2 {
                    assert!((m.data[m.index(c, t, 0, x)] - want).abs() < 1e-6, "c {c} t {t} x {x}");
                }
            }
        }
        // Every pixel is 0.1 away from its frame's mean: an MSE of 0.01, 20 dB.
        assert!((psnr(&v, &m).unwrap() - 20.0).abs() < 1e-4);
    }
}
