//! `nbp-cli train`, `train-tokenizer` and `tokenize-dataset`: argument parsing; the work is in `nbp-train`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use burn::tensor::backend::AutodiffBackend;
use clap::Args;

use nbp_train::data::{ClipOptions, ClipSource, DatasetSpec, SkipLog, Skipping, Split};
use nbp_train::generator_training::{GeneratorTrainConfig, train_generator};
use nbp_train::run::load_toml;
use nbp_train::token_cache::{TokenCacheInfo, tokenize_dataset};
use nbp_train::tokenizer_training::{TokenizerTrainConfig, train_tokenizer};

use crate::backend::{DeviceArg, with_backend};
use crate::progress::Bar;

/// Train a block-causal generator on a token cache (see `tokenize-dataset`) with Burn's Learner: terminal
/// dashboard (plain lines when not in a terminal, also written to <out>/train.log), checkpoints every
/// --checkpoint-every steps and on Ctrl-C, --resume to continue.
#[derive(Args, Debug)]
pub struct TrainArgs {
    /// TOML run config (every field below overrides it; see assets/demo/generator.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Token cache made by `nbp-cli tokenize-dataset`.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Run directory (checkpoints, log, effective config, the final generator.safetensors).
    #[arg(short, long, visible_alias = "output")]
    out: Option<PathBuf>,
    /// Model preset: tiny, small, official-base, official-xl, official-3b.
    #[arg(long)]
    preset: Option<String>,
    /// Transformer blocks (overrides the preset).
    #[arg(long)]
    n_layer: Option<usize>,
    /// Attention heads (overrides the preset).
    #[arg(long)]
    n_head: Option<usize>,
    /// Model width (overrides the preset).
    #[arg(long)]
    n_embd: Option<usize>,
    /// Dropout on embeddings and residual branches (official 0.1).
    #[arg(long)]
    dropout: Option<f64>,
    /// Block shape TxHxW in latent tokens, or `row` (1×1×W, the paper's default).
    #[arg(long)]
    block_shape: Option<String>,
    /// nbp, ntp (block size 1) or hybrid (NTP for the first block, then NBP).
    #[arg(long)]
    mode: Option<String>,
    /// label (one condition token per class), text (UCF-101 class names as the official UCF generator's 8 LLaMA-2
    /// token ids; with --mode hybrid) or none.
    #[arg(long)]
    condition: Option<String>,
    /// Probability per batch of training with the null condition, for classifier-free guidance: 0 (none, the
    /// default) to below 1; 0.1 is usual.
    #[arg(long)]
    p_drop_cond: Option<f64>,
    /// Probability of keeping each input token (others are replaced by random codes); 1 disables.
    #[arg(long)]
    pkeep: Option<f64>,
    /// Initial position embeddings: zeros (the official start) or grid (sinusoids of each video token's latent
    /// frame, row and column, so attention can find the same place in the previous frame from the first step).
    #[arg(long)]
    pos_init: Option<String>,
    /// Sequences per micro-batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Micro-batches per optimiser step.
    #[arg(long)]
    grad_accumulation: Option<usize>,
    /// Optimiser steps (also the cosine length).
    #[arg(long)]
    steps: Option<usize>,
    /// Steps between checkpoints and validation passes.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Clips held out from the end of the cache for validation (rounded up to whole videos when the cache holds
    /// several clips per video).
    #[arg(long)]
    valid_clips: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Weight decay of linear weights (official 0.01).
    #[arg(long)]
    weight_decay: Option<f32>,
    /// Global gradient-norm limit (0 or less disables; official 1.0).
    #[arg(long)]
    grad_clip: Option<f64>,
    /// Reproduce the official order of the schedule: counting updates from 0, update k uses lr(k−1) and update 0
    /// uses 0 (two zero-rate updates; by default update k, counted from 1, uses lr(k)).
    #[arg(long)]
    official_lr_lag: bool,
    /// Seed of the weights, the data order, token corruption and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its latest checkpoint, with the settings it saved when it started (flags
    /// override them; a different architecture is an error).
    #[arg(long)]
    resume: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

macro_rules! set {
    ($cfg:expr, $args:expr, $($field:ident),*) => { $( if let Some(v) = $args.$field.clone() { $cfg.$field = v; } )* };
}

/// The config the flags start from: `--config`, else with `--resume` the effective config that the run in
/// `--out` (or `default_out`) saved when it started (`name` in the run folder; so that `--resume --out RUN` alone
/// continues the run as it was started), else the defaults.
fn base_config<T: serde::de::DeserializeOwned + Default>(
    config: Option<&Path>,
    resume: bool,
    out: Option<&Path>,
    default_out: PathBuf,
    name: &str,
) -> Result<T> {
    if let Some(p) = config {
        return Ok(load_toml(p)?);
    }
    let run = out.map_or(default_out, Path::to_path_buf);
    let saved = run.join(name);
    // Another trainer's run folder: said before anything looks for files that only one kind of run has.
    nbp_train::run::refuse_other_kind(&run, name)?;
    if resume && saved.is_file() {
        eprintln!("--resume: the run's settings from {} (flags override them)", saved.display());
        return Ok(load_toml(&saved)?);
    }
    Ok(T::default())
}

impl TrainArgs {
    fn config(&self) -> Result<GeneratorTrainConfig> {
        let default_out = GeneratorTrainConfig::default().out;
        let mut c: GeneratorTrainConfig =
            base_config(self.config.as_deref(), self.resume, self.out.as_deref(), default_out, "generator.toml")?;
        set!(c, self, tokens, out, preset, dropout, block_shape, mode, condition, p_drop_cond, pkeep, batch_size);
        set!(c, self, pos_init, grad_accumulation, steps, checkpoint_every, valid_clips, seed);
        if self.n_layer.is_some() {
            c.n_layer = self.n_layer;
        }
        if self.n_head.is_some() {
            c.n_head = self.n_head;
        }
        if self.n_embd.is_some() {
            c.n_embd = self.n_embd;
        }
        if let Some(v) = self.lr {
            c.schedule.lr = v;
        }
        if let Some(v) = self.warmup_steps {
            c.schedule.warmup_steps = v;
        }
        if let Some(v) = self.weight_decay {
            c.optimizer.weight_decay = v;
        }
        if let Some(v) = self.grad_clip {
            // NaN is kept, so that validation names it (infinity: no clipping, as 0).
            c.optimizer.grad_clip = (v > 0.0 || v.is_nan()).then_some(v);
        }
        if self.official_lr_lag {
            c.schedule.official_lag = true;
        }
        c.validate()?;
        for w in c.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(c)
    }
}

/// `train` and `train-tokenizer` with each flag's default, taken from the run configs' defaults (the flags
/// themselves have none: a `--config` file's values stand unless a flag is given).
pub fn show_config_defaults(cmd: clap::Command) -> clap::Command {
    cmd.mut_subcommand("train", |c| with_defaults(c, &GeneratorTrainConfig::default()))
        .mut_subcommand("train-tokenizer", |c| with_defaults(c, &TokenizerTrainConfig::default()))
}

/// The value of the config field `key` (at the top level or in a nested section such as `schedule`) as a help
/// text shows it; `None` for fields without a value (`null`: the preset's) or not in the config.
fn config_default(config: &serde_json::Value, key: &str) -> Option<String> {
    let nested = || config.as_object()?.values().filter(|v| v.is_object()).find_map(|v| v.get(key));
    match config.get(key).or_else(nested)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(a) => Some(a.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(",")),
        // An f32 field (0.01 stored as 0.009999999776482582) is shown as the f32 it is.
        serde_json::Value::Number(n) if n.is_f64() => {
            let f = n.as_f64()?;
            Some(if f64::from(f as f32) == f { (f as f32).to_string() } else { f.to_string() })
        }
        other => Some(other.to_string()),
    }
}

fn with_defaults<T: serde::Serialize>(cmd: clap::Command, config: &T) -> clap::Command {
    let json = serde_json::to_value(config).unwrap_or_default();
    cmd.mut_args(|a| {
        let value = a
            .get_long()
            .filter(|_| a.get_action().takes_values())
            .and_then(|l| config_default(&json, &l.replace('-', "_")));
        let Some(v) = value else { return a };
        let with = |h: Option<&clap::builder::StyledStr>| {
            format!("{} [default: {v}]", h.map(|h| h.to_string()).unwrap_or_default())
        };
        let long = a.get_long_help().map(|h| with(Some(h)));
        let short = with(a.get_help());
        let a = a.help(short);
        match long {
            Some(l) => a.long_help(l),
            None => a,
        }
    })
    .after_help("Without --config the defaults shown apply; with --config, the file's values, which flags override.")
}

/// An interrupter stopped by Ctrl-C (the trainers then write a checkpoint and return).
fn ctrl_c_interrupter() -> burn_train::Interrupter {
    let interrupter = burn_train::Interrupter::new();
    let handle = interrupter.clone();
    let mut first: Option<std::time::Instant> = None;
    let _ = ctrlc::set_handler(move || match first {
        None => {
            first = Some(std::time::Instant::now());
            eprintln!("\nCtrl-C: stopping after this step and writing a checkpoint (press again to force quit)");
            handle.stop(Some("Ctrl-C"));
        }
        // Tools such as `timeout` may deliver one interrupt twice: a second one within a second is that one.
        Some(t) if t.elapsed().as_secs_f64() < 1.0 => {}
        Some(_) => {
            eprintln!("forced quit: this step's checkpoint was not written; --resume continues from the last one");
            std::process::exit(130);
        }
    });
    interrupter
}

/// The closing lines of a training command: where it stopped, its speed (`rate`), the exported model, and how to
/// continue an interrupted run (`rate` is `None` for a session that trained nothing).
fn report_run(
    interrupted: bool,
    steps_done: usize,
    steps: usize,
    seconds: f64,
    rate: Option<String>,
    model: (&str, &Path),
) {
    let state = if interrupted { "stopped" } else { "done" };
    let rate = rate.map_or(String::new(), |r| format!(", {r}"));
    println!("{state} after {steps_done} of {steps} steps; {seconds:.1} s this session{rate}");
    println!("{}: {}", model.0, model.1.display());
    if interrupted {
        println!("continue with the same command plus --resume");
    }
}

fn generator<B: AutodiffBackend>(config: &GeneratorTrainConfig, resume: bool, device: B::Device) -> Result<()> {
    let run = train_generator::<B>(config, resume, &device, ctrl_c_interrupter())?;
    let rate = (run.sequences_per_second > 0.0)
        .then(|| format!("{:.2} sequences/s ({:.0} tokens/s)", run.sequences_per_second, run.tokens_per_second));
    report_run(run.interrupted, run.steps_done, config.steps, run.seconds, rate, ("generator", &run.model_path));
    Ok(())
}

pub fn train(args: TrainArgs) -> Result<()> {
    let config = args.config()?;
    with_backend!(args.device, |B, dev| generator::<burn::backend::Autodiff<B>>(&config, args.resume, dev))
}

/// Train a video tokenizer (reconstruction L1/L2, optional LPIPS and PatchGAN) on a dataset of clips.
/// Checkpoints every --checkpoint-every steps and on Ctrl-C, --resume to continue.
#[derive(Args, Debug)]
pub struct TrainTokenizerArgs {
    /// TOML run config (every field below overrides it; see assets/demo/tokenizer.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Dataset: moving-shapes[-plain][-large][-single][-fixed][:count], folder:<dir>, csv:<file>,
    /// ucf:<root>[:<list>], k600:<root>[:<list>] (README, "Data").
    #[arg(long)]
    dataset: Option<String>,
    /// Run directory (checkpoints, log, effective config, the final tokenizer.safetensors).
    #[arg(short, long, visible_alias = "output")]
    out: Option<PathBuf>,
    /// Architecture: tiny, small, official, or a JSON config file.
    #[arg(long)]
    preset: Option<String>,
    /// FSQ levels, comma-separated (their product is the codebook size), e.g. 8,8,8,5,5,5.
    #[arg(long, value_delimiter = ',')]
    fsq_levels: Option<Vec<usize>>,
    /// Frames per clip (1 + 4n).
    #[arg(long)]
    frames: Option<usize>,
    /// Frame height (multiple of 8).
    #[arg(long)]
    height: Option<usize>,
    /// Frame width (multiple of 8).
    #[arg(long)]
    width: Option<usize>,
    /// Frame rate videos are resampled to (dataset default when unset).
    #[arg(long, value_parser = crate::parse_output_rate)]
    fps: Option<f64>,
    /// Train on random square crops of this size (multiple of 8); validation uses whole frames.
    #[arg(long)]
    crop: Option<usize>,
    /// Optimiser steps (also the cosine length).
    #[arg(long)]
    steps: Option<usize>,
    /// Clips per step.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Steps between checkpoints and validation passes.
    #[arg(long)]
    checkpoint_every: Option<usize>,
    /// Clips held out (the last of the dataset) for validation.
    #[arg(long)]
    valid_clips: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Linear warm-up steps before the cosine decay.
    #[arg(long)]
    warmup_steps: Option<usize>,
    /// Weight of the L1 reconstruction loss.
    #[arg(long)]
    l1_weight: Option<f64>,
    /// Weight of the L2 (squared error) reconstruction loss.
    #[arg(long)]
    l2_weight: Option<f64>,
    /// Steps at the start in which the decoder reads the encoder's outputs unrounded (FSQ bypassed): a
    /// continuous code learnt first gets a small tokenizer off the mean-colour plateau; 0 rounds from the start.
    #[arg(long)]
    unquantized_steps: Option<usize>,
    /// Start a new run from this tokenizer's weights (nbp .safetensors or an official .pt) to fine-tune it; its
    /// architecture must match --preset.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Train only the decoder (with --init-from): the encoder stays fixed, so clips keep their token ids and a
    /// generator trained on them still fits, while the decoder (e.g. with --gan-start) learns to draw them better.
    #[arg(long)]
    freeze_encoder: bool,
    /// torchvision vgg16 weights (.pth) for the LPIPS loss (with --lpips-lin).
    #[arg(long)]
    lpips_vgg: Option<PathBuf>,
    /// LPIPS head weights (vgg.pth of richzhang/PerceptualSimilarity).
    #[arg(long)]
    lpips_lin: Option<PathBuf>,
    /// Weight of the LPIPS perceptual loss.
    #[arg(long)]
    perceptual_weight: Option<f64>,
    /// Step at which the PatchGAN discriminator starts (no GAN when unset).
    #[arg(long)]
    gan_start: Option<usize>,
    /// Weight of the adaptively scaled generator (GAN) loss.
    #[arg(long)]
    gan_weight: Option<f64>,
    /// Width of the discriminator's first convolution.
    #[arg(long)]
    disc_channels: Option<usize>,
    /// Stride-2 convolutions of the discriminator (frames must be at least 3·2^n pixels).
    #[arg(long)]
    disc_layers: Option<usize>,
    /// Discriminator learning rate (the tokenizer's when unset).
    #[arg(long)]
    disc_lr: Option<f64>,
    /// Seed of the weights, the data order, clip starts and crops.
    #[arg(long)]
    seed: Option<u64>,
    /// Continue the run in --out from its latest checkpoint, with the settings it saved when it started (flags
    /// override them; a different architecture is an error).
    #[arg(long)]
    resume: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

/// A file named in the config `config`: taken as written when it exists (or is not a path), else beside the
/// config file, so a config and the architecture file next to it work from any directory.
fn beside_config(config: &Path, value: &str) -> String {
    let written = Path::new(value);
    if written.exists() || written.is_absolute() || !value.ends_with(".json") {
        return value.to_string();
    }
    match config.parent().map(|dir| dir.join(written)) {
        Some(beside) if beside.exists() => beside.display().to_string(),
        _ => value.to_string(),
    }
}

impl TrainTokenizerArgs {
    fn config(&self) -> Result<TokenizerTrainConfig> {
        let default_out = TokenizerTrainConfig::default().out;
        let mut c: TokenizerTrainConfig =
            base_config(self.config.as_deref(), self.resume, self.out.as_deref(), default_out, "tokenizer.toml")?;
        if let Some(p) = &self.config {
            c.preset = beside_config(p, &c.preset);
        }
        set!(c, self, dataset, out, preset, frames, height, width, steps, batch_size, checkpoint_every, valid_clips);
        set!(c, self, l1_weight, l2_weight, perceptual_weight, gan_weight, disc_channels, disc_layers, seed);
        set!(c, self, unquantized_steps);
        if self.disc_lr.is_some() {
            c.disc_lr = self.disc_lr;
        }
        if self.fsq_levels.is_some() {
            c.fsq_levels = self.fsq_levels.clone();
        }
        if self.fps.is_some() {
            c.fps = self.fps;
        }
        if self.crop.is_some() {
            c.crop = self.crop;
        }
        if self.lpips_vgg.is_some() {
            c.lpips_vgg = self.lpips_vgg.clone();
        }
        if self.lpips_lin.is_some() {
            c.lpips_lin = self.lpips_lin.clone();
        }
        if self.gan_start.is_some() {
            c.gan_start = self.gan_start;
        }
        if self.init_from.is_some() {
            c.init_from = self.init_from.clone();
        }
        c.freeze_encoder |= self.freeze_encoder;
        if let Some(v) = self.lr {
            c.schedule.lr = v;
        }
        if let Some(v) = self.warmup_steps {
            c.schedule.warmup_steps = v;
        }
        c.validate()?;
        for w in c.warnings() {
            eprintln!("warning: {w}");
        }
        Ok(c)
    }
}

fn tokenizer<B: AutodiffBackend>(config: &TokenizerTrainConfig, resume: bool, device: B::Device) -> Result<()> {
    let run = train_tokenizer::<B>(config, resume, &device, ctrl_c_interrupter(), &mut |l| println!("{l}"))?;
    let rate = (run.clips_per_second > 0.0).then(|| format!("{:.2} clips/s", run.clips_per_second));
    report_run(run.interrupted, run.steps_done, config.steps, run.seconds, rate, ("tokenizer", &run.model_path));
    Ok(())
}

pub fn train_tokenizer_cmd(args: TrainTokenizerArgs) -> Result<()> {
    let config = args.config()?;
    with_backend!(args.device, |B, dev| tokenizer::<burn::backend::Autodiff<B>>(&config, args.resume, dev))
}

/// The held-out clips an evaluation scores.
#[derive(Args, Debug)]
pub struct HeldOutArgs {
    /// Clips: a dataset spec (moving-shapes[:count], folder:<dir>, ucf:<root>[:<list>], ...); the last --clips
    /// readable videos, one clip from the centre of each. Default: the moving-shapes variant the bundled demo
    /// models were trained on (one large shape per clip, fixed look); eval-frame-prediction takes the dataset
    /// that a generator trained by nbp records.
    #[arg(long)]
    dataset: Option<String>,
    /// Number of clips.
    #[arg(long, default_value_t = 16)]
    clips: usize,
    /// Seed of the dataset (moving shapes: use one the models were not trained on), and of the starts of
    /// --random-start.
    #[arg(long, default_value_t = 99)]
    data_seed: u64,
    /// Cut each clip from a random start (seeded by --data-seed), as the official Kinetics-600 evaluation does,
    /// instead of the centre of the video.
    #[arg(long)]
    random_start: bool,
}

/// The data the bundled demo models were trained on: the default of the evaluations.
const DEMO_DATASET: &str = "moving-shapes-plain-large-single-fixed:100000";

impl HeldOutArgs {
    /// The clip rule: the centre of each video, or a seeded random start.
    fn split(&self) -> Split {
        if self.random_start { Split::Train } else { Split::Eval }
    }

    /// Opens the dataset `spec` with `opts` and reads the last --clips readable whole clips, each with the condition
    /// `condition` gives it (from the clip and the dataset's class names); prints what it reads and warns about
    /// what it skips.
    fn read(
        &self,
        spec: &DatasetSpec,
        opts: &ClipOptions,
        mut condition: impl FnMut(&nbp_train::data::Clip, &[String]) -> nbp_core::Result<nbp_model::generate::Condition>,
    ) -> Result<Vec<(nbp_core::video::Video, nbp_model::generate::Condition)>> {
        let generated = matches!(spec, DatasetSpec::MovingShapes { .. });
        if generated && self.random_start {
            eprintln!(
                "warning: --random-start changes nothing for the generated moving-shapes clips (each is made whole)"
            );
        }
        let source = Skipping::new(spec.open(opts, self.data_seed)?);
        let fps = if generated { None } else { opts.fps.or(spec.default_fps()) };
        let rate = fps.map_or(String::new(), |f| format!(" at {f} fps"));
        println!(
            "clips: {} ({} frames of {}x{}{rate}, {} of each of the last videos)",
            source.describe(),
            opts.frames,
            opts.height,
            opts.width,
            self.start()
        );
        let names = source.class_names();
        let held_out =
            nbp_train::evaluate::last_whole_clips(&source, self.clips, self.data_seed, |clip| condition(clip, &names))
                .with_context(|| spec.to_string())?;
        if held_out.short > 0 {
            eprintln!("warning: skipped {} clips of videos shorter than {} frames", held_out.short, opts.frames);
        }
        if held_out.clips.len() < self.clips {
            eprintln!(
                "warning: --clips {}: the dataset gives only {} readable whole clips",
                self.clips,
                held_out.clips.len()
            );
        }
        if let Some(s) = source.log().summary() {
            eprintln!("{s}");
        }
        Ok(held_out.clips)
    }

    /// Where the clips start, for messages.
    fn start(&self) -> &'static str {
        if self.random_start { "a random start" } else { "the centre" }
    }
}

/// Refuses a clip length `n` given by `flag` that the tokenizer cannot encode (1 + 4n frames), before any model is
/// loaded.
fn check_frames(flag: &str, n: usize) -> Result<()> {
    nbp_tokenizer::config::check_clip_frames(n).map_err(|m| anyhow::anyhow!("{flag} {n}: {m}"))
}

/// How the clips a tokenizer reads are cut from the videos of a dataset.
#[derive(Args, Debug)]
pub struct DatasetClipArgs {
    /// Frames per clip (1 + 4n; the official models: 17).
    #[arg(long, default_value_t = 17)]
    frames: usize,
    /// Frame size: N or HxW (multiples of 8). Default: the size the tokenizer was trained at when its file
    /// records it, else 64x64 for the bundled demo tokenizer and 128x128 for other files (the official size).
    #[arg(long, value_parser = crate::parse_resolution)]
    resolution: Option<(usize, usize)>,
    /// Frame rate videos are resampled to. Default: the dataset's (8 fps for ucf:, 16 for k600:, the videos' own
    /// otherwise); the official tokenizer_eval.py reads at 16.
    #[arg(long, value_parser = crate::parse_output_rate)]
    fps: Option<f64>,
}

impl DatasetClipArgs {
    /// The clip options for `tokenizer` (whose file may record the size it was trained at), with `split`'s start
    /// rule; warns about a frame rate the dataset does not suit.
    fn options(
        &self,
        spec: &DatasetSpec,
        tokenizer: &crate::TokenizerArgs,
        trained: Option<(usize, usize)>,
        split: Split,
    ) -> ClipOptions {
        let (height, width) = self.resolution.unwrap_or(crate::default_resolution(tokenizer, trained));
        if let Some(w) = spec.fps_warning(self.fps) {
            eprintln!("warning: {w}");
        }
        ClipOptions { frames: self.frames, height, width, fps: self.fps, split }
    }
}

/// Where `tokenize-dataset` starts each clip in its video.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DatasetClipStart {
    /// A random start, seeded (the training rule).
    Random,
    /// The middle of the video (the official evaluation rule).
    #[value(alias = "centre")]
    Center,
}

/// Encode every clip of a dataset once with a tokenizer and store the token grids and classes, so that generator
/// training reads tokens, not pixels.
#[derive(Args, Debug)]
pub struct TokenizeDatasetArgs {
    /// Dataset: moving-shapes[-plain][-large][-single][-fixed][:count], folder:<dir>, csv:<file>,
    /// ucf:<root>[:<list>], k600:<root>[:<list>] (README, "Data").
    #[arg(long)]
    dataset: String,
    /// Tokenizer checkpoint (.safetensors, official .pt or generator .ckpt). Default: the bundled demo
    /// tokenizer (assets/demo/tokenizer.safetensors).
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Architecture of PyTorch checkpoints (preset or JSON file).
    #[arg(long)]
    tokenizer_config: Option<String>,
    /// Output token cache.
    #[arg(short, long, visible_alias = "output", default_value = "tokens.safetensors")]
    out: PathBuf,
    #[command(flatten)]
    clip: DatasetClipArgs,
    /// Where each clip starts in its video: random (seeded by --seed; the training rule) or center (the official
    /// evaluation rule). `--center` is short for `--clip center`.
    #[arg(long = "clip", value_enum, default_value_t = DatasetClipStart::Random)]
    clip_start: DatasetClipStart,
    /// The same as `--clip center`.
    #[arg(long, conflicts_with = "clip_start")]
    center: bool,
    /// Clips taken from each video, each from its own random start (clip k with seed --seed + k). The official
    /// loader draws a new start every epoch; a cache holds fixed clips, so several per video let a generator see
    /// more of each video (starts are drawn independently: a short video with few possible starts repeats clips).
    /// Validation in `nbp-cli train` then holds out whole videos. Not with --clip center (one
    /// centre) or moving shapes (every clip is another video already: raise its :count).
    #[arg(long, default_value_t = 1)]
    clips_per_video: usize,
    /// Clips per encoder batch.
    #[arg(long, visible_alias = "batch-size", default_value_t = 4)]
    batch: usize,
    /// Seed of the random clip starts (and of the moving-shapes data).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

fn tokenize<B: burn::prelude::Backend>(a: &TokenizeDatasetArgs, device: B::Device) -> Result<()> {
    let spec: DatasetSpec = a.dataset.parse()?;
    check_frames("--frames", a.clip.frames)?;
    if a.out.is_dir() {
        bail!("{}: is a folder: --out names the token cache file to write (e.g. tokens.safetensors)", a.out.display());
    }
    if !nbp_core::weights::is_safetensors(&a.out) {
        bail!(
            "{}: a token cache is a safetensors file: give --out a name ending in .safetensors (`nbp-cli train \
             --tokens` reads it)",
            a.out.display()
        );
    }
    crate::output_file(&a.out)?;
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(1..=nbp_train::token_cache::MAX_CLIPS_PER_VIDEO).contains(&a.clips_per_video) {
        bail!(
            "--clips-per-video {}: give 1 to {} (random starts repeat long before that)",
            a.clips_per_video,
            nbp_train::token_cache::MAX_CLIPS_PER_VIDEO
        );
    }
    let center = a.center || matches!(a.clip_start, DatasetClipStart::Center);
    if a.clips_per_video > 1 && center {
        bail!(
            "--clips-per-video {} with --clip center: a video has one centre clip; leave one of them out",
            a.clips_per_video
        );
    }
    if a.clips_per_video > 1 && matches!(spec, DatasetSpec::MovingShapes { .. }) {
        bail!(
            "--clips-per-video {}: moving-shapes clips have no video to take more clips from (each is drawn anew); \
             raise the clip count instead (e.g. --dataset moving-shapes:4000)",
            a.clips_per_video
        );
    }
    let tokenizer =
        crate::TokenizerArgs { tokenizer: a.tokenizer.clone(), tokenizer_config: a.tokenizer_config.clone() };
    let (model, trained) = crate::load_with_resolution::<B>(&tokenizer, &device)?;
    let opts = a.clip.options(&spec, &tokenizer, trained, if center { Split::Eval } else { Split::Train });
    let (frames, height, width) = (opts.frames, opts.height, opts.width);
    let grid = model.config().latent_shape(frames, height, width)?;
    let log = SkipLog::new();
    let source = spec.open(&opts, a.seed)?;
    log.add_total(source.len());
    println!("{} at {height}x{width}", source.describe());
    let classes = source.class_names();
    let info = TokenCacheInfo {
        grid,
        codebook: model.codebook_size(),
        class_texts: classes.iter().map(|c| nbp_train::data::class_text(c)).collect(),
        classes,
        dataset: spec.absolute().to_string(),
        // Absolute, so that a generator trained on this cache finds it from any folder.
        tokenizer: tokenizer.path().canonicalize().unwrap_or_else(|_| tokenizer.path()).display().to_string(),
        tokenizer_fingerprint: Some(nbp_core::weights::file_fingerprint(&tokenizer.path())?),
        frames,
        height,
        width,
        fps: opts.fps.or(spec.default_fps()),
        clips_per_video: a.clips_per_video,
    };
    let started = std::time::Instant::now();
    let cache = tokenize_dataset(source.as_ref(), &log, &model, info, a.batch, a.seed, &device, &Bar::default())?;
    cache.save(&a.out)?;
    let per_video = if a.clips_per_video > 1 { format!(" ({} per video)", a.clips_per_video) } else { String::new() };
    println!(
        "{} clips{per_video} → {} ({}×{}×{} tokens each) in {:.1} s",
        cache.len(),
        a.out.display(),
        grid[0],
        grid[1],
        grid[2],
        started.elapsed().as_secs_f64()
    );
    if let Some(s) = log.summary() {
        println!("{s}");
    }
    Ok(())
}

pub fn tokenize_dataset_cmd(a: TokenizeDatasetArgs) -> Result<()> {
    with_backend!(a.device, |B, dev| tokenize::<B>(&a, dev))
}

/// Frame prediction on held-out clips: the generator continues the first --given-frames frames of each clip and
/// the predicted frames are scored (PSNR) against the real ones, next to the copy-the-last-frame baseline and
/// the tokenizer's reconstruction.
#[derive(Args, Debug)]
pub struct EvalFramePredictionArgs {
    /// Generator (.safetensors trained by nbp, or an official .ckpt). Default: the bundled demo model.
    #[arg(long)]
    generator: Option<PathBuf>,
    /// Tokenizer. Default: the one the generator file records (the one its training tokens were made with, or
    /// converted with it by `generator convert --tokenizer-out`), else the bundled demo tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    #[command(flatten)]
    held_out: HeldOutArgs,
    /// Frames per clip (1 + 4n). Default: the frames of the latent grid the generator records (17 for 5 latent
    /// frames), else 17.
    #[arg(long)]
    frames: Option<usize>,
    /// Frames given to the generator (1 + 4n); the rest are predicted and scored. Default: 5 (2 latent frames,
    /// as the official Kinetics-600 evaluation), 1 for clips of 5 frames.
    #[arg(long)]
    given_frames: Option<usize>,
    /// Frame size: N or HxW (multiples of 8). Default: the size of the latent grid the generator records (8
    /// pixels a token), else the size the tokenizer was trained at when its file records it, else 64x64 for the
    /// bundled demo tokenizer and 128x128 for other files.
    #[arg(long, value_parser = crate::parse_resolution)]
    resolution: Option<(usize, usize)>,
    /// Frame rate videos are resampled to before the clip is cut: the rate the generator's token cache was made
    /// at (`nbp-cli tokenize-dataset --fps`). Default: the dataset's (8 fps for ucf:, 16 for k600:, the videos'
    /// native rate otherwise).
    #[arg(long, value_parser = crate::parse_output_rate)]
    fps: Option<f64>,
    /// Sample with the default filter (temperature 1, top-k 16000, top-p 0.9) instead of greedy decoding.
    #[arg(long)]
    sample: bool,
    /// Sampling seed (with --sample).
    #[arg(long, default_value_t = 0, requires = "sample")]
    seed: u64,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

fn eval_frame_prediction<B: burn::prelude::Backend>(a: &EvalFramePredictionArgs, device: B::Device) -> Result<()> {
    if a.held_out.clips == 0 {
        bail!("--clips must be at least 1");
    }
    let generator = a.generator.clone().unwrap_or_else(|| crate::demo_asset("generator.safetensors"));
    let g = nbp_model::load_generator::<B>(&generator, &Default::default(), &device)?;
    // The tokenizer the generator's tokens were made with, where its file records one and none is given.
    let recorded = match (&a.tokenizer, &g.info.tokenizer) {
        (None, Some(_)) => Some(crate::recorded_tokenizer(&g, &generator, false)?),
        _ => None,
    };
    let tokenizer = crate::TokenizerArgs { tokenizer: a.tokenizer.clone().or(recorded), tokenizer_config: None };
    let (tok, trained) = crate::load_with_resolution::<B>(&tokenizer, &device)?;
    crate::check_codebook(&tok, &tokenizer.path(), &g, &generator, true)?;
    // The clip the generator was trained on, where its file records the latent grid.
    let recorded = g.info.latent_grid;
    let frames = a.frames.or(recorded.map(|[t, _, _]| 1 + 4 * t.saturating_sub(1))).unwrap_or(17);
    let size = recorded.map(|[_, h, w]| (h * 8, w * 8));
    let (height, width) = a.resolution.or(size).unwrap_or(crate::default_resolution(&tokenizer, trained));
    // The data the generator was trained on, where its file records it: its held-out clips are the last videos.
    let trained_on = g.info.dataset.clone().filter(|_| a.held_out.dataset.is_none());
    if let Some(d) = &trained_on {
        eprintln!("dataset {d} (the one the generator was trained on; --dataset chooses another)");
    }
    let dataset = a.held_out.dataset.clone().or(trained_on.clone()).unwrap_or(DEMO_DATASET.into());
    let spec: DatasetSpec = dataset.parse()?;
    let fps = a.fps.or(g.info.fps.filter(|_| trained_on.is_some()));
    let given = a.given_frames.unwrap_or(if frames > 5 { 5 } else { 1 });
    check_frames("--frames", frames)?;
    check_frames("--given-frames", given)?;
    if given >= frames {
        bail!(
            "--given-frames {given} leaves nothing to predict in clips of {frames} frames: give fewer, or longer \
             clips (--frames)"
        );
    }
    if let Some(w) = spec.fps_warning(a.fps) {
        eprintln!("warning: {w}");
    }
    let opts = ClipOptions { frames, height, width, fps, split: a.held_out.split() };
    let clips = a.held_out.read(&spec, &opts, |clip, names| {
        let name = names.get(clip.label).map(String::as_str).unwrap_or("");
        nbp_train::evaluate::clip_condition(&g.settings, &g.info.classes, name, clip.label)
            .map_err(|e| nbp_core::Error::file(&generator, e.to_string()))
    })?;
    let options = nbp_model::sampling::SampleOptions {
        filter: nbp_core::filter::SamplingFilter::default(),
        greedy: !a.sample,
        cfg: None,
    };
    let started = std::time::Instant::now();
    let r = nbp_train::evaluate::evaluate_frame_prediction(
        &g,
        &tok,
        &clips,
        given,
        &options,
        a.seed,
        &device,
        &Bar::default(),
    )?;
    println!(
        "frame prediction on {} clip{} ({} given frames, {}): model {:.2} dB, copy last frame {:.2} dB (margin {:+.2} dB), \
         tokenizer reconstruction {:.2} dB [{:.1} s]",
        r.clips,
        if r.clips == 1 { "" } else { "s" },
        r.given_frames,
        if a.sample { "sampled" } else { "greedy" },
        r.psnr_model,
        r.psnr_copy_last,
        r.margin(),
        r.psnr_reconstruction,
        started.elapsed().as_secs_f64()
    );
    match &r.official {
        Some(o) => println!(
            "as the official transformer_eval.py (frames 0–15, the given ones included): PSNR {:.2} ± {:.2} dB, \
             SSIM {:.4}",
            o.psnr_mean, o.psnr_std, o.ssim
        ),
        None => println!("(the official transformer_eval.py protocol scores 16 frames: it needs clips of 17 frames)"),
    }
    Ok(())
}

pub fn eval_frame_prediction_cmd(a: EvalFramePredictionArgs) -> Result<()> {
    with_backend!(a.device, |B, dev| eval_frame_prediction::<B>(&a, dev))
}

/// Tokenizer reconstruction on held-out clips: PSNR, SSIM and L1 over whole clips, the same as the official
/// `tokenizer_eval.py` takes them (PSNR and SSIM over every frame but the last, L1 and, with LPIPS weights, LPIPS on
/// frame 5), and the share of the codebook the clips use.
#[derive(Args, Debug)]
pub struct EvalTokenizerArgs {
    /// Tokenizer checkpoint (.safetensors, official .pt or generator .ckpt). Default: the bundled demo tokenizer.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Architecture of PyTorch checkpoints (preset or JSON file).
    #[arg(long)]
    tokenizer_config: Option<String>,
    #[command(flatten)]
    held_out: HeldOutArgs,
    #[command(flatten)]
    clip: DatasetClipArgs,
    /// Clips per batch.
    #[arg(long, visible_alias = "batch-size", default_value_t = 4)]
    batch: usize,
    /// torchvision VGG16 weights (vgg16-397923af.pth) for LPIPS on frame 5; with --lpips-lin.
    #[arg(long, requires = "lpips_lin")]
    lpips_vgg: Option<PathBuf>,
    /// LPIPS linear heads (the lpips package's weights/v0.1/vgg.pth); with --lpips-vgg.
    #[arg(long, requires = "lpips_vgg")]
    lpips_lin: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

fn eval_tokenizer<B: burn::prelude::Backend>(a: &EvalTokenizerArgs, device: B::Device) -> Result<()> {
    if a.held_out.clips == 0 || a.batch == 0 {
        bail!("--clips and --batch must be at least 1");
    }
    check_frames("--frames", a.clip.frames)?;
    let tokenizer =
        crate::TokenizerArgs { tokenizer: a.tokenizer.clone(), tokenizer_config: a.tokenizer_config.clone() };
    let spec: DatasetSpec = a.held_out.dataset.as_deref().unwrap_or(DEMO_DATASET).parse()?;
    let lpips = match (&a.lpips_vgg, &a.lpips_lin) {
        (Some(vgg), Some(lin)) => Some(nbp_train::gan::Lpips::<B>::load(vgg, lin, &device)?),
        _ => None,
    };
    let (model, trained) = crate::load_with_resolution::<B>(&tokenizer, &device)?;
    let opts = a.clip.options(&spec, &tokenizer, trained, a.held_out.split());
    let (frames, height, width) = (opts.frames, opts.height, opts.width);
    model.config().latent_shape(frames, height, width)?;
    let clips: Vec<_> = a
        .held_out
        .read(&spec, &opts, |_, _| Ok(nbp_model::generate::Condition::None))?
        .into_iter()
        .map(|(video, _)| video)
        .collect();
    let started = std::time::Instant::now();
    let r = nbp_train::tokenizer_training::evaluate_reconstruction_with(
        &model,
        &clips,
        a.batch,
        lpips.as_ref(),
        &device,
        &Bar::default(),
    )?;
    println!(
        "reconstruction of {} clip{}: PSNR {:.2} dB, SSIM {:.4}, L1 {:.4} over all {} frames; codebook usage {} \
         [{:.1} s]",
        r.clips,
        if r.clips == 1 { "" } else { "s" },
        r.psnr,
        r.ssim,
        r.l1,
        frames,
        nbp_train::tokenizer_training::percent(r.codebook_usage),
        started.elapsed().as_secs_f64()
    );
    match &r.official {
        Some(o) => println!(
            "as the official tokenizer_eval.py: PSNR {:.2} dB, SSIM {:.4} over frames 0–{}; on frame 5: L1 {:.4}, {}",
            o.psnr,
            o.ssim,
            frames - 2,
            o.l1_frame5,
            o.lpips_frame5.map_or(String::from("LPIPS with --lpips-vgg and --lpips-lin"), |l| format!("LPIPS {l:.4}"))
        ),
        None => println!("(the official protocol needs clips of more than 5 frames)"),
    }
    Ok(())
}

pub fn eval_tokenizer_cmd(a: EvalTokenizerArgs) -> Result<()> {
    with_backend!(a.device, |B, dev| eval_tokenizer::<B>(&a, dev))
}

#[cfg(test)]
mod tests {
    use super::{TrainTokenizerArgs, beside_config};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: TrainTokenizerArgs,
    }

    #[test]
    fn the_demo_tokenizer_config_warms_up_unquantized_and_the_flag_overrides_it() {
        let config = nbp_core::workspace::workspace_path("assets/demo/tokenizer.toml");
        let parse = |extra: &[&str]| {
            let mut argv = vec!["train-tokenizer", "--config", config.to_str().unwrap()];
            argv.extend_from_slice(extra);
            Cli::parse_from(argv).args.config().unwrap()
        };
        let c = parse(&[]);
        assert_eq!((c.batch_size, c.steps, c.unquantized_steps), (8, 2000, 600));
        assert!(c.preset.ends_with("tokenizer-arch.json"), "{}", c.preset);
        assert_eq!(parse(&["--unquantized-steps", "0", "--batch-size", "1"]).unquantized_steps, 0);
    }

    #[test]
    fn architecture_files_are_found_beside_their_config() {
        let dir = std::env::temp_dir().join(format!("nbp-beside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("arch.json"), "{}").unwrap();
        let config = dir.join("run.toml");
        assert_eq!(beside_config(&config, "arch.json"), dir.join("arch.json").display().to_string());
        // Preset names, files that exist as written and files found nowhere are left alone.
        assert_eq!(beside_config(&config, "tiny"), "tiny");
        assert_eq!(beside_config(&config, "Cargo.toml"), "Cargo.toml");
        assert_eq!(beside_config(&config, "missing.json"), "missing.json");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
