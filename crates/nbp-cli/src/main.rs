//! `nbp-cli`: the command line of the nbp toolkit. This file only parses arguments and prints results; the
//! work is done by the `nbp-*` libraries.

mod backend;
mod demo;
mod progress;
mod train;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Args, Parser, Subcommand, ValueEnum};

use backend::{DeviceArg, with_backend};
use demo::demo_asset;
use nbp_core::npy::{NpyArray, read_npy, write_npy};
use nbp_core::video::{ClipStart, ReadOptions, VideoFormat, tensor_to_videos, write_videos};
use nbp_tokenizer::pipeline::{self, indices_to_npy, npy_to_indices};
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer, load_tokenizer_with_resolution};
use progress::Bar;

/// Large buffers (weights, activations, caches) start on a cache line, where the CPU kernels read them fastest.
#[global_allocator]
static ALLOCATOR: nbp_kernels::LineAligned = nbp_kernels::LineAligned;

/// Next-Block Prediction video generation: tokenizer, generator, sampling and benchmarks.
#[derive(Parser, Debug)]
#[command(name = "nbp-cli", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Video tokenizer: encode videos to token ids, decode ids to videos, reconstruct, convert checkpoints.
    #[command(subcommand)]
    Tokenizer(TokenizerCommand),
    /// Generator checkpoints: convert an official Lightning .ckpt into the project's .safetensors format, or print
    /// what a checkpoint holds.
    #[command(subcommand)]
    Generator(GeneratorCommand),
    /// Generate videos with a block-causal generator (NBP, NTP or hybrid start), KV-cached.
    Sample(Box<SampleArgs>),
    /// Datasets: preview the built-in procedural data.
    #[command(subcommand)]
    Dataset(DatasetCommand),
    /// Train a generator on a token cache with Burn's Learner (dashboard, checkpoints, --resume).
    Train(Box<train::TrainArgs>),
    /// Train a video tokenizer (L1/L2, optional LPIPS and PatchGAN; checkpoints, --resume).
    TrainTokenizer(Box<train::TrainTokenizerArgs>),
    /// Encode a dataset once with a tokenizer into a token cache for generator training.
    TokenizeDataset(Box<train::TokenizeDatasetArgs>),
    /// Frame prediction on held-out clips against the copy-the-last-frame baseline (PSNR).
    EvalFramePrediction(Box<train::EvalFramePredictionArgs>),
    /// Tokenizer reconstruction on held-out clips (PSNR, SSIM, L1, codebook usage; also as the official
    /// tokenizer_eval.py scores them).
    EvalTokenizer(Box<train::EvalTokenizerArgs>),
    /// Benchmarks that anyone can rerun (timings are printed with the machine they ran on).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Encode a video file (any format ffmpeg reads) or a folder of frames into token ids (.npy, int32,
    /// shaped [1, T', H/8, W/8]).
    Encode {
        /// Video file or folder of image frames (read in the order of the numbers in their names).
        input: PathBuf,
        /// Output .npy file of token ids.
        #[arg(short, long, visible_alias = "out", default_value = "tokens.npy")]
        output: PathBuf,
        #[command(flatten)]
        model: TokenizerArgs,
        #[command(flatten)]
        clip: ClipArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Decode token ids (.npy shaped [T', H', W'] or [B, T', H', W']) into a video (with the official layout
    /// of the tokenizer: 1 + 4·(T' − 1) frames of 8·H' × 8·W' pixels).
    Decode {
        /// .npy file of token ids: int32, int64, uint8 (bool reads as uint8) or float32/float64 holding whole
        /// numbers, each a code of the tokenizer's codebook.
        input: PathBuf,
        /// Output: .gif, .mp4/.webm/.mkv/.avi/.mov (needs ffmpeg), .png (frame grid), a folder (PNG frames), or .npy
        /// (raw float pixels [B, 3, T, H, W], clamped to [0, 1]).
        #[arg(short, long, visible_alias = "out", default_value = "decoded.gif")]
        output: PathBuf,
        /// Frame rate of the written video.
        #[arg(long, default_value_t = 8.0, value_parser = parse_output_rate)]
        fps: f64,
        #[command(flatten)]
        model: TokenizerArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Encode and decode a video, write input and reconstruction side by side, and print PSNR and SSIM.
    Reconstruct {
        /// Video file or folder of image frames.
        input: PathBuf,
        /// Output video (input left, reconstruction right): .gif, .mp4/.webm/.mkv/.avi/.mov (needs ffmpeg), .png
        /// (frame grid) or a folder (PNG frames).
        #[arg(short, long, visible_alias = "out", default_value = "reconstruction.gif")]
        output: PathBuf,
        /// Also save the token ids to this .npy file.
        #[arg(long)]
        save_tokens: Option<PathBuf>,
        #[command(flatten)]
        model: TokenizerArgs,
        #[command(flatten)]
        clip: ClipArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Convert a tokenizer checkpoint (official .pt / generator .ckpt) into the project's .safetensors format.
    Convert {
        /// Checkpoint to read.
        input: PathBuf,
        /// .safetensors file to write.
        output: PathBuf,
        /// Architecture of a PyTorch checkpoint: a preset (official, small, tiny) or a JSON config file
        /// (default: official; nbp .safetensors files carry their own).
        #[arg(long)]
        tokenizer_config: Option<String>,
    },
    /// Print the configuration and size of a tokenizer checkpoint.
    Info {
        /// Checkpoint (the same as --tokenizer; default: the bundled demo tokenizer).
        #[arg(conflicts_with = "tokenizer")]
        file: Option<PathBuf>,
        #[command(flatten)]
        model: TokenizerArgs,
    },
}

#[derive(Subcommand, Debug)]
enum DatasetCommand {
    /// Write clips of the built-in "moving shapes" dataset (one class per clip, cycling through the 16 classes
    /// shape × motion) to a video or PNG grid.
    MovingShapes {
        /// Output: .gif/.mp4 (clips tiled), .png (one row per clip), or a folder.
        #[arg(short, long, visible_alias = "output", default_value = "moving_shapes.gif")]
        out: PathBuf,
        /// Number of clips.
        #[arg(long, default_value_t = 16)]
        count: usize,
        /// Frames per clip.
        #[arg(long, default_value_t = 17)]
        frames: usize,
        /// Frame size: N or HxW (multiples of 8).
        #[arg(long, default_value = "64", value_parser = parse_resolution)]
        resolution: (usize, usize),
        /// Dataset seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Index of the first clip.
        #[arg(long, default_value_t = 0)]
        start: usize,
        /// Plain backgrounds only (the `moving-shapes-plain` variant).
        #[arg(long)]
        plain: bool,
        /// Shapes 1.6 times larger, so that each spans more latent tokens (the `moving-shapes-large` variant;
        /// with --plain, `moving-shapes-plain-large`).
        #[arg(long)]
        large: bool,
        /// The class's shape alone, without distractor shapes (the `-single` variant, e.g.
        /// `moving-shapes-plain-large-single`).
        #[arg(long)]
        single: bool,
        /// One colour per shape kind, one size and one flat background (the `-fixed` variant; the bundled demo
        /// models use `moving-shapes-plain-large-single-fixed`).
        #[arg(long)]
        fixed: bool,
    },
}

#[derive(Subcommand, Debug)]
enum GeneratorCommand {
    /// Convert a generator checkpoint (official .ckpt) into .safetensors (official key names, config and
    /// generation settings as metadata). The weights are written in f32, so an official bf16 checkpoint doubles
    /// in size (sampling with --precision bf16 rounds them back exactly); an existing output file is replaced.
    /// The tokenizer that an official .ckpt embeds is converted too with --tokenizer-out.
    Convert {
        /// Checkpoint to read (an official .ckpt, or an nbp .safetensors file, which is copied as it is).
        input: PathBuf,
        /// .safetensors file to write.
        output: PathBuf,
        /// Also convert the tokenizer that the .ckpt embeds (its first_stage_model) into this .safetensors file.
        /// The converted generator records that file, so `sample` decodes with it as it does with the .ckpt.
        #[arg(long)]
        tokenizer_out: Option<PathBuf>,
        /// Architecture of the embedded tokenizer: a preset (official, small, tiny) or a JSON config file
        /// (default: official). Only with --tokenizer-out.
        #[arg(long, requires = "tokenizer_out")]
        tokenizer_config: Option<String>,
        /// Attention heads of an official checkpoint that does not record them (hyper_parameters.args.n_head); one
        /// that differs from a recorded value is an error, since the converted file records it as trained.
        #[arg(long)]
        n_head: Option<usize>,
        /// Block size (tokens per step, the official token_number_per_step; not its block_size, the positions) of
        /// an official checkpoint that does not record it; one that differs from a recorded value is an error.
        #[arg(long)]
        block_size: Option<usize>,
    },
    /// Print what a generator checkpoint holds: architecture, generation mode, condition, vocabulary layout, and
    /// what its training recorded (classes, latent grid, block shape, tokenizer).
    Info {
        /// Checkpoint: an official Lightning .ckpt or the project's .safetensors.
        input: PathBuf,
        /// Attention heads of an official checkpoint: needed when it does not record them, and overrides what it
        /// records (with a warning; an nbp .safetensors file keeps what it records, and another value is an error).
        #[arg(long)]
        n_head: Option<usize>,
        /// Block size (tokens per step, the official token_number_per_step) of an official checkpoint: needed when
        /// it does not record it, and overrides what it records (with a warning; an nbp .safetensors file keeps what
        /// it records, and another value is an error).
        #[arg(long)]
        block_size: Option<usize>,
    },
}

/// Arguments of `nbp-cli sample`.
#[derive(Args, Debug)]
struct SampleArgs {
    /// Generator checkpoint: an official Lightning .ckpt or the project's .safetensors. Default: the bundled
    /// moving-shapes demo model (assets/demo/generator.safetensors, with assets/demo/tokenizer.safetensors).
    #[arg(long)]
    generator: Option<PathBuf>,
    /// Attention heads of an official checkpoint (16 for official-base, 32 for xl and 3b): needed when it does
    /// not record them, and overrides what it records (an nbp .safetensors file keeps the value it records; another
    /// one is an error).
    #[arg(long)]
    n_head: Option<usize>,
    /// Block size of an official checkpoint (16 for the official models): needed when it does not record it, and
    /// overrides what it records (an nbp .safetensors file keeps the value it records; another one is an error).
    #[arg(long)]
    block_size: Option<usize>,
    /// Tokenizer for decoding and for --condition-video. Default: the bundled demo tokenizer with the bundled
    /// generator, the tokenizer a generator file records (trained by nbp, or converted with --tokenizer-out), or
    /// the one embedded in an official .ckpt.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Architecture of a PyTorch tokenizer checkpoint: a preset (official, small, tiny) or a JSON file.
    #[arg(long)]
    tokenizer_config: Option<String>,
    /// Generation scheme: nbp (one block per step), ntp (one token per step) or hybrid (NTP for the first block,
    /// then the middle-bos block, then NBP). Default: the scheme the model was trained for, the only one it can
    /// use (another one is an error).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// Class to generate: a class name of a model trained by nbp (e.g. circle-bounce for the demo), or a UCF-101
    /// class for the official UCF model (ApplyEyeMakeup, "apply eye makeup" or 0). Without any condition, a
    /// class-conditional model generates a grid of 8 of its classes (the official UCF model: 8 UCF-101 classes).
    #[arg(long = "class", conflicts_with = "condition_ids")]
    class: Option<String>,
    /// Raw condition token ids, comma separated (unshifted).
    #[arg(long, value_delimiter = ',', conflicts_with = "label")]
    condition_ids: Option<Vec<i64>>,
    /// Class label: the condition token of a label-conditional model; for a text-conditional one (the official UCF
    /// model: 0 to 100), the text of class N.
    #[arg(long, conflicts_with = "class")]
    label: Option<i64>,
    /// Frame prediction: continue the first --condition-frames frames of this video (any format ffmpeg reads,
    /// or a folder of frames).
    #[arg(long, conflicts_with = "prefix_tokens")]
    condition_video: Option<PathBuf>,
    /// Frames of --condition-video to keep (1 + 4n). Default: 5 (2 latent frames, as K600), or 1 when the latent
    /// grid has only 2 latent frames.
    #[arg(long, requires = "condition_video")]
    condition_frames: Option<usize>,
    /// Frame rate --condition-video is resampled to (0 keeps its native rate).
    #[arg(long, default_value_t = 8.0, value_parser = parse_input_rate, requires = "condition_video")]
    condition_fps: f64,
    /// Continue these token ids: a .npy of codes shaped [T', H', W'] (whole latent frames of one clip) or
    /// [N, T', H', W'] (what --save-tokens writes), of which --prefix-clip and --prefix-frames pick the part.
    #[arg(long)]
    prefix_tokens: Option<PathBuf>,
    /// The clip of a --prefix-tokens file with several clips to continue (0 is the first).
    #[arg(long, default_value_t = 0, requires = "prefix_tokens")]
    prefix_clip: usize,
    /// Latent frames of --prefix-tokens to keep, from the first (default: all of them; they must leave frames
    /// to generate).
    #[arg(long, requires = "prefix_tokens")]
    prefix_frames: Option<usize>,
    /// Latent grid TxHxW of a generated video (default: the grid the model was trained on, else 5x16x16 = 17
    /// frames of 128x128).
    #[arg(long)]
    latent_grid: Option<String>,
    /// Block shape TxHxW; its size must be the model's block size (default: the shape the model was trained
    /// with when its file records it, else 1x1xL, rows of L tokens).
    #[arg(long)]
    block_shape: Option<String>,
    /// Videos to generate per condition (one batch). A class-conditional model given no --class, --label or
    /// --condition-ids makes one for each of 8 classes, so 8 times this many.
    #[arg(long, default_value_t = 1)]
    num_samples: usize,
    /// Sampling temperature (positive; below 1 sharpens, above 1 flattens the distribution).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f64,
    /// Keep the k most likely tokens per position (0 = all).
    #[arg(long, default_value_t = 16000)]
    top_k: usize,
    /// Keep the most likely tokens up to this probability mass, in (0, 1] (1 = all). 0.9 is the official setting.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    top_p: f64,
    /// Always take the most likely token (deterministic; no temperature or filter then).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    greedy: bool,
    /// Classifier-free guidance scale s ≥ 0: logits (1 + s)·conditional − s·unconditional (0 = off). Needs a
    /// conditional model trained with condition dropout (`nbp-cli train --p-drop-cond`, e.g. 0.1), whose null
    /// condition has learnt the unconditional distribution; a model trained without it gets a warning.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    cfg_scale: f64,
    /// Let the guidance scale grow linearly with the step (s·step, 0 at the first step): the official sampler's
    /// default (its scale_cfg option). Without it the scale is constant, the usual classifier-free guidance.
    /// Needs --cfg-scale above 0.
    #[arg(long, requires = "cfg_scale")]
    cfg_growing: bool,
    /// Draw from the whole vocabulary and clamp an id that is not a video code (a condition id, BOV, middle-bos)
    /// to a code, as the official sampler does (parity); by default only video codes are drawn.
    #[arg(long)]
    official_clamp: bool,
    /// Random seed: runs with the same seed on the same backend give the same video, and each class of a grid is
    /// the clip that --class gives for it alone.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Linear-layer weights in f32 (exact) or bf16: half the memory and the bytes read per step (the official
    /// checkpoints are stored in bf16). On flex, steps of one token are faster than f32 on every CPU with
    /// AVX-512; blocks of tokens are faster with AMX (Intel Sapphire Rapids and later) or AVX512-BF16 (AMD Zen 4
    /// and later) and about as fast as f32 on other AVX-512 CPUs; without AVX-512 slower. Logits move by
    /// about 1 % of their scale, so a sample can differ from the f32 one with the same seed where two tokens
    /// are nearly tied. Not on wgpu (no bfloat16 type in its shaders).
    #[arg(long, default_value_t = nbp_model::Precision::F32)]
    precision: nbp_model::Precision,
    /// Output video: .gif, .mp4/.webm/.mkv/.avi/.mov (needs ffmpeg), .png (grid) or a folder (PNG frames).
    #[arg(short, long, visible_alias = "output", default_value = "sample.gif", conflicts_with = "no_decode")]
    out: PathBuf,
    /// Frame rate of the output video (a GIF plays at most 50).
    #[arg(long, default_value_t = 8.0, value_parser = parse_output_rate, conflicts_with = "no_decode")]
    fps: f64,
    /// Also save the token ids of the whole latent grid (codes, [N, T', H', W'], int32; given frames included)
    /// to this .npy file.
    #[arg(long)]
    save_tokens: Option<PathBuf>,
    /// Stop at token ids (no tokenizer needed); use with --save-tokens.
    #[arg(long)]
    no_decode: bool,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    Nbp,
    Ntp,
    Hybrid,
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
    /// Time KV-cached generation with random weights (the cost does not depend on them).
    Sample {
        /// Model size: official-base, official-xl, official-3b, small, tiny.
        #[arg(long, default_value = "official-base")]
        preset: String,
        /// Block size: 16 = NBP with rows, 1 = NTP (also --block-size, as in `sample`).
        #[arg(long, visible_alias = "block-size", default_value_t = 16)]
        block: usize,
        /// Also time this block size on the same weights and print how many times faster --block is (for
        /// example `--block 16 --versus 1`: NBP-16 against NTP, the paper's speed-up).
        #[arg(long)]
        versus: Option<usize>,
        /// Time the hybrid start of the official UCF model instead of frame prediction: 8 condition ids and BOV,
        /// the first block one token per step, then the middle-bos block and one block per step (by default 1280
        /// tokens from no known ones: the 95 steps of a UCF clip). --versus times its block size on the same
        /// conditional model, from the condition and BOV (1: NTP).
        #[arg(long)]
        hybrid: bool,
        /// Known video tokens before generation: a positive multiple of --block and of --versus (with --hybrid,
        /// 0 or a multiple). Default: 512 (2 latent frames: K600 frame prediction), 0 with --hybrid.
        #[arg(long)]
        prefix: Option<usize>,
        /// Tokens to generate. Default: 768 (3 latent frames, K600), 1280 with --hybrid (5 latent frames, UCF).
        #[arg(long)]
        tokens: Option<usize>,
        /// Video codes (64000, as the official tokenizer); with --hybrid the vocabulary adds the UCF layout's
        /// --block special tokens (BOV and middle-bos) and 32000 text ids (96016 for blocks of 16).
        #[arg(long, default_value_t = 64000)]
        vocab: usize,
        /// Sequences per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Tokens per latent frame, to report frames/s (16x16 = 256; as `sample` counts them, the first latent
        /// frame of a clip is 1 pixel frame and every later one 4).
        #[arg(long, default_value_t = 256)]
        tokens_per_frame: usize,
        /// Linear-layer weights in f32 or bf16 (half the bytes per step; on flex, bf16 kernels on every CPU with
        /// AVX-512: the `cpu kernels:` line names the one this CPU runs).
        #[arg(long, default_value_t = nbp_model::Precision::F32)]
        precision: nbp_model::Precision,
        /// Untimed full runs of each block size first (kernel compilation and autotuning on GPUs). With 0, one
        /// untimed prefill and first step still runs first, so that no timed run pays for the process's first
        /// use of memory (and on GPUs of the prefill's kernels); its time is printed.
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Timed runs of each block size; the fastest is reported. With --versus the two block sizes take
        /// turns (block, versus, block, versus, …), so that a change in the machine's speed during the
        /// benchmark falls on both alike.
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time encoding and decoding of one clip (random weights and pixels).
    Tokenizer {
        /// Architecture: official, small, tiny, or a JSON config file.
        #[arg(long, default_value = "official")]
        preset: String,
        /// Frames per clip (1 + 4n).
        #[arg(long, default_value_t = 17)]
        frames: usize,
        /// Frame size: N for N×N or HxW (multiples of 8).
        #[arg(long, default_value = "128", value_parser = parse_resolution)]
        resolution: (usize, usize),
        /// Clips per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Untimed runs first (kernel compilation and autotuning on GPUs).
        #[arg(long, default_value_t = 0)]
        warmup: usize,
        /// Timed runs; the best is reported.
        #[arg(long, default_value_t = 1)]
        repeats: usize,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Time the flex CPU kernels (AVX-512) on the shapes of official-base sampling (linear layers, attention,
    /// the top-k/top-p draw) and of the official tokenizer's convolutions; prints GFLOP/s and the bytes read
    /// per second (weights, cached keys and values, or logits).
    Kernels {
        /// Rounds per kernel; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Seconds each round calls a kernel for (at least one call). The rows of a whole pass through the model,
        /// of attention and of the tile units run one call per round, whatever this is: each such call is long
        /// enough to time on its own.
        #[arg(long, default_value_t = 0.5)]
        seconds: f64,
    },
}

/// Which tokenizer to load.
#[derive(Args, Debug, Clone)]
pub(crate) struct TokenizerArgs {
    /// Tokenizer checkpoint: the project's .safetensors, an official magvit2_*.pt, or an official generator
    /// .ckpt (its embedded tokenizer is used). Default: the bundled demo tokenizer
    /// (assets/demo/tokenizer.safetensors, trained on 64×64 moving shapes).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Architecture of PyTorch checkpoints: a preset (official, small, tiny) or a JSON config file.
    /// .safetensors files carry their own.
    #[arg(long)]
    pub(crate) tokenizer_config: Option<String>,
}

/// How a clip is cut from a video.
#[derive(Args, Debug, Clone)]
struct ClipArgs {
    /// Frames of the clip (1 + 4n; 17 gives 5 latent frames). Short videos are padded with black frames.
    #[arg(long, default_value_t = 17)]
    frames: usize,
    /// Frame rate the video is resampled to before the clip is cut (0 keeps the native rate). Ignored for
    /// frame folders.
    #[arg(long, default_value_t = 8.0, value_parser = parse_input_rate)]
    fps: f64,
    /// Frame size the video is resized to: N for N×N, or HxW (multiples of 8). Frames already at this size are
    /// not resampled. Default: the size the tokenizer was trained at when its file says so (files written by
    /// `nbp-cli train-tokenizer`), 64 with the bundled demo tokenizer, else 128 (the official tokenizers' size).
    #[arg(long, value_parser = parse_resolution)]
    resolution: Option<(usize, usize)>,
    /// Where the clip starts: at the first frame, or centred in the video (the official evaluation rule).
    #[arg(long, value_enum, default_value_t = ClipArg::Start)]
    clip: ClipArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClipArg {
    Start,
    #[value(alias = "centre")]
    Center,
}

/// Where the computation runs.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

/// A frame rate that videos are resampled to: a finite number ≥ 0 (0 keeps the native rate where allowed).
pub(crate) fn parse_input_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("'{s}' is not a frame rate: give frames per second, e.g. 8 (0 keeps the native rate)")),
    }
}

/// The frame rate of a clip read at `--fps requested` (0: the native rate) from a video of `native` frames per
/// second (`None`: a folder of frames): a video is only ever resampled down, and a folder is taken as it is, at
/// `requested` or, with 0, the usual 8.
fn clip_rate(requested: f64, native: Option<f64>) -> f64 {
    match (requested > 0.0, native) {
        (true, Some(native)) => requested.min(native),
        (false, Some(native)) => native,
        (true, None) => requested,
        (false, None) => 8.0,
    }
}

/// The frame rate of a written video: 0.01 to 1000 frames per second (GIFs play at most 100: their delays are in
/// hundredths of a second).
pub(crate) fn parse_output_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if (0.01..=1000.0).contains(&v) => Ok(v),
        _ => Err(format!("'{s}' is not a frame rate: give 0.01 to 1000 frames per second, e.g. 8")),
    }
}

pub(crate) fn parse_resolution(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("'{s}' is not N or HxW"));
    let (h, w) = match s.split_once(['x', 'X']) {
        Some((h, w)) => (parse(h)?, parse(w)?),
        None => (parse(s)?, parse(s)?),
    };
    if h == 0 || w == 0 || h % 8 != 0 || w % 8 != 0 {
        return Err(format!("resolution {h}x{w}: height and width must be positive multiples of 8"));
    }
    if h.max(w) > nbp_core::video::MAX_SIDE {
        return Err(format!("resolution {h}x{w}: at most {} pixels a side", nbp_core::video::MAX_SIDE));
    }
    Ok((h, w))
}

/// A frame size, `(height, width)`.
type FrameSize = (usize, usize);

/// Frame size of the bundled demo tokenizer's training clips, the default `--resolution` without `--tokenizer`.
const DEMO_RESOLUTION: FrameSize = (64, 64);
/// The official tokenizers' frame size, the default `--resolution` with `--tokenizer`.
const OFFICIAL_RESOLUTION: FrameSize = (128, 128);

/// The frame size clips are read at when `--resolution` is not given: the size the tokenizer was trained at
/// (`trained`, from its file), else the size the bundled or official tokenizers were made for.
pub(crate) fn default_resolution(model: &TokenizerArgs, trained: Option<FrameSize>) -> FrameSize {
    trained.unwrap_or(if model.tokenizer.is_some() { OFFICIAL_RESOLUTION } else { DEMO_RESOLUTION })
}

impl ClipArgs {
    /// How to read the clip for `model`: `--resolution`, else the size the tokenizer was trained at (`trained`,
    /// from its file), else the size the bundled or official tokenizers were made for.
    fn read_options(&self, model: &TokenizerArgs, trained: Option<FrameSize>) -> ReadOptions {
        ReadOptions {
            frames: self.frames,
            fps: (self.fps > 0.0).then_some(self.fps),
            size: Some(self.resolution.unwrap_or(default_resolution(model, trained))),
            start: match self.clip {
                ClipArg::Start => ClipStart::Start,
                ClipArg::Center => ClipStart::Center,
            },
        }
    }
}

impl TokenizerArgs {
    /// The checkpoint to load: `--tokenizer`, else the bundled demo tokenizer.
    pub(crate) fn path(&self) -> PathBuf {
        self.tokenizer.clone().unwrap_or_else(|| demo_asset("tokenizer.safetensors"))
    }
}

pub(crate) fn load<B: Backend>(args: &TokenizerArgs, device: &B::Device) -> Result<VideoTokenizer<B>> {
    load_with_resolution(args, device).map(|(model, _)| model)
}

/// [`load`], and the frame size the tokenizer was trained at when its file records it.
pub(crate) fn load_with_resolution<B: Backend>(
    args: &TokenizerArgs,
    device: &B::Device,
) -> Result<(VideoTokenizer<B>, Option<FrameSize>)> {
    let path = args.path();
    let native = nbp_core::weights::is_safetensors(&path);
    if native && args.tokenizer_config.is_some() {
        eprintln!(
            "warning: --tokenizer-config is ignored for {}: nbp .safetensors files carry their own architecture",
            path.display()
        );
    }
    let config = match &args.tokenizer_config {
        Some(name) if !native => Some(TokenizerConfig::from_name_or_file(name)?),
        _ => None,
    };
    let (model, source, resolution) = load_tokenizer_with_resolution::<B>(&path, config.as_ref(), device).map_err(|e| {
        if args.tokenizer.is_none() && !path.exists() {
            anyhow::anyhow!(
                "{e}\nthe bundled demo tokenizer was neither in assets/demo/ nor unpacked from the binary (see the warning above): set XDG_CACHE_HOME to a writable folder, or pass --tokenizer"
            )
        } else if !native && args.tokenizer_config.is_none() && e.to_string().contains("different configuration") {
            // A PyTorch file that records no architecture is read as the official one unless told otherwise.
            anyhow::anyhow!(
                "{e}\nread as the official architecture: for another one, pass --tokenizer-config (small, tiny or a JSON file)"
            )
        } else {
            anyhow::Error::from(e)
        }
    })?;
    eprintln!(
        "loaded tokenizer {} ({}, {} parameters, {} codes)",
        path.display(),
        source,
        nbp_core::module::parameter_count(model.parameter_count()),
        model.codebook_size()
    );
    Ok((model, resolution))
}

fn print_clip(path: &Path, report: &nbp_core::video::ReadReport) {
    let v = &report.video;
    let (h0, w0) = report.native_size;
    let resized = if (h0, w0) != (v.height, v.width) {
        // A change of shape stretches what the frames show.
        let stretched = (h0 * v.width).abs_diff(w0 * v.height) * 50 > h0 * v.width;
        format!(", resized from {h0}x{w0}{}", if stretched { " (the aspect ratio changes)" } else { "" })
    } else {
        String::new()
    };
    eprintln!(
        "read {}: {} frame{} of {}x{}{resized}{}",
        path.display(),
        v.frames,
        plural(v.frames),
        v.height,
        v.width,
        report
            .native_fps
            .map(|f| format!(" (native {f:.2} fps, {} frames after resampling)", report.available_frames))
            .unwrap_or_default()
    );
    if report.padded_frames > 0 {
        eprintln!(
            "warning: {} has only {} frame{}{}; {} black frame{} {} appended (fewer --frames, 1 + 4n, would need none)",
            path.display(),
            report.available_frames,
            plural(report.available_frames),
            if report.native_fps.is_some() { " at this rate" } else { "" },
            report.padded_frames,
            plural(report.padded_frames),
            if report.padded_frames == 1 { "was" } else { "were" }
        );
    }
}

fn tokenizer_command<B: Backend>(cmd: TokenizerCommand, device: B::Device) -> Result<()> {
    let bar = Bar::default();
    match cmd {
        TokenizerCommand::Encode { input, output, model, clip, .. } => {
            npy_output(&output, "-o")?;
            output_file(&output)?;
            let (tok, trained) = load_with_resolution::<B>(&model, &device)?;
            let report = pipeline::read_clip(&tok, &input, &clip.read_options(&model, trained))?;
            print_clip(&input, &report);
            let t0 = std::time::Instant::now();
            let x = nbp_core::video::videos_to_tensor::<B>(&[report.video], &device)?;
            let ids = indices_to_npy(tok.encode_with(x, &bar)?);
            write_npy(&output, &ids)?;
            println!("wrote {} (token ids {:?}) in {:.2} s", output.display(), ids.shape, t0.elapsed().as_secs_f64());
        }
        TokenizerCommand::Decode { input, output, fps, model, .. } => {
            let raw_pixels = is_npy(&output);
            if raw_pixels {
                output_file(&output)?;
            } else {
                VideoFormat::for_output(&output)?;
            }
            let tok = load::<B>(&model, &device)?;
            let array = read_npy(&input)?;
            let ids = npy_to_indices::<B>(&array, &tok, &device).with_context(|| format!("{}", input.display()))?;
            let t0 = std::time::Instant::now();
            let video = tok.decode_with(ids, &bar);
            if raw_pixels {
                let dims = video.dims().to_vec();
                let values =
                    video.into_data().convert::<f32>().into_vec::<f32>().map_err(|e| anyhow::anyhow!("{e:?}"))?;
                write_npy(&output, &NpyArray::f32(dims.clone(), values))?;
                println!("wrote {} (pixels {dims:?}) in {:.2} s", output.display(), t0.elapsed().as_secs_f64());
            } else {
                VideoFormat::from_path(&output)?;
                let videos = tensor_to_videos(video)?;
                write_videos(&output, &videos, fps)?;
                println!(
                    "wrote {} ({} video(s) of {} frames, {}x{}) in {:.2} s",
                    output.display(),
                    videos.len(),
                    videos[0].frames,
                    videos[0].height,
                    videos[0].width,
                    t0.elapsed().as_secs_f64()
                );
            }
        }
        TokenizerCommand::Reconstruct { input, output, save_tokens, model, clip, .. } => {
            VideoFormat::for_output(&output)?;
            if let Some(p) = &save_tokens {
                npy_output(p, "--save-tokens")?;
                output_file(p)?;
            }
            let (tok, trained) = load_with_resolution::<B>(&model, &device)?;
            let report = pipeline::read_clip(&tok, &input, &clip.read_options(&model, trained))?;
            print_clip(&input, &report);
            let report_fps = report.native_fps;
            let real = report.video.frames - report.padded_frames;
            let r = pipeline::reconstruct(&tok, vec![report.video], Some(real), &bar)?;
            if let Some(p) = &save_tokens {
                write_npy(p, &r.indices)?;
                println!("wrote {}", p.display());
            }
            let pairs: Vec<_> = r.input.iter().zip(&r.output).flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
            write_videos(&output, &pairs, clip_rate(clip.fps, report_fps))?;
            println!("wrote {} (input | reconstruction)", output.display());
            let over = if r.scored_frames < r.input[0].frames {
                format!(" over the {} frame{} read (not the padding)", r.scored_frames, plural(r.scored_frames))
            } else {
                String::new()
            };
            println!(
                "PSNR {:.2} dB  SSIM {:.4}{over}  (encode {:.2} s, decode {:.2} s, tokens {:?})",
                r.psnr, r.ssim, r.encode_seconds, r.decode_seconds, r.indices.shape
            );
            if let Some((psnr, ssim)) = r.official {
                println!(
                    "PSNR {psnr:.2} dB  SSIM {ssim:.4} over the first {} frames (the official tokenizer_eval.py \
                     leaves out the last frame)",
                    r.scored_frames - 1
                );
            }
        }
        TokenizerCommand::Info { file, mut model } => {
            model.tokenizer = file.or(model.tokenizer);
            let tok = load::<B>(&model, &device)?;
            println!("{}", serde_json::to_string_pretty(tok.config())?);
            println!("parameters: {}", nbp_core::module::parameter_count(tok.parameter_count()));
            println!("codebook: {} codes", tok.codebook_size());
        }
        TokenizerCommand::Convert { .. } => unreachable!("handled without a backend"),
    }
    Ok(())
}

/// bfloat16 weights need a backend with a bfloat16 type: WGSL, the shading language of wgpu, has none. On flex
/// they are only fast with the CPU kernels for them (AVX-512 F and BW): elsewhere a warning says so.
fn check_precision(precision: nbp_model::Precision, device: DeviceArg) -> Result<()> {
    if precision == nbp_model::Precision::Bf16 && matches!(device, DeviceArg::Wgpu | DeviceArg::Vulkan) {
        bail!(
            "--precision bf16 does not run on --device {device}: WebGPU shaders have no bfloat16 type; use \
             --device flex or cuda, or --precision f32"
        );
    }
    if precision == nbp_model::Precision::Bf16 && device == DeviceArg::Flex && !nbp_kernels::bf16_available() {
        eprintln!(
            "warning: this CPU has no AVX-512 (F and BW), so on flex bf16 weights go through Burn's generic \
             product, which is slower than f32 here; --precision f32 is faster on this CPU"
        );
    }
    Ok(())
}

/// The tokenizer the generator file `generator` records (the one its training tokens were made with, or the one
/// converted with it from an official .ckpt), when that file is there (an error otherwise: decoding with another
/// tokenizer would give a wrong video). `stop_at_ids`: the command can stop at token ids instead (`sample
/// --no-decode`), which the error then offers.
pub(crate) fn recorded_tokenizer<B: Backend>(
    g: &nbp_model::LoadedGenerator<B>,
    generator: &Path,
    stop_at_ids: bool,
) -> Result<PathBuf> {
    match g.info.tokenizer.as_deref().map(PathBuf::from) {
        Some(p) if p.is_file() => {
            eprintln!("tokenizer {} (the one the generator file records)", p.display());
            if g.info.tokenizer_changed(&p)? {
                eprintln!(
                    "warning: {} changed since the generator's training tokens were made with it (retrained or \
                     replaced): its codes may not mean what the generator learnt; pass --tokenizer with the file \
                     the tokens were made with",
                    p.display()
                );
            }
            Ok(p)
        }
        recorded => bail!(
            "{}: {}: pass --tokenizer (the one its token data was made with){}",
            generator.display(),
            recorded.map_or("the file does not say which tokenizer made its training tokens".into(), |p| format!(
                "its training tokens were made with the tokenizer {}, which is not there",
                p.display()
            )),
            if stop_at_ids { ", or --no-decode --save-tokens FILE.npy to stop at token ids" } else { "" }
        ),
    }
}

/// The sampling flags' ranges, checked before any model is loaded.
fn check_sampling_flags(a: &SampleArgs) -> Result<()> {
    check_precision(a.precision, a.run.device)?;
    if a.num_samples == 0 {
        bail!("--num-samples must be at least 1");
    }
    // Near 1e-37 the division of f32 logits overflows into infinities and NaN; 1e-6 is already greedy in effect.
    if !(a.temperature >= 1e-6 && a.temperature.is_finite()) {
        bail!(
            "--temperature must be a positive number of at least 1e-6, got {} (use --greedy for deterministic \
             decoding)",
            a.temperature
        );
    }
    if !(a.top_p > 0.0 && a.top_p <= 1.0) {
        bail!("--top-p must be in (0, 1], got {} (1 keeps every token)", a.top_p);
    }
    // Useful scales are below 20; far beyond this the guided f32 logits lose all precision and then overflow.
    if !(0.0..=1e4).contains(&a.cfg_scale) {
        bail!("--cfg-scale must be 0 (off) or positive, at most 10000, got {}", a.cfg_scale);
    }
    if let Some(p) = &a.save_tokens {
        npy_output(p, "--save-tokens")?;
        output_file(p)?;
    }
    if a.cfg_growing && a.cfg_scale == 0.0 {
        bail!("--cfg-growing lets the guidance scale grow: give it --cfg-scale above 0 (e.g. --cfg-scale 0.1)");
    }
    if a.no_decode && a.tokenizer.is_some() && a.condition_video.is_none() {
        eprintln!("warning: --tokenizer is not used: --no-decode decodes nothing, and there is no --condition-video");
    }
    if let Some(f) = a.condition_frames.filter(|f| f % 4 != 1) {
        bail!("--condition-frames must be 1 + 4n (1, 5, 9, …: 5 frames are 2 latent frames), got {f}");
    }
    if a.no_decode && a.save_tokens.is_none() {
        bail!("--no-decode stops at token ids and writes no video: pass --save-tokens FILE.npy to keep them");
    }
    if !a.no_decode {
        VideoFormat::for_output(&a.out)?;
    }
    Ok(())
}

/// Checks that the tokenizer at `tok_path` can stand for the one the generator's token data was made with: one
/// with fewer codes cannot decode the generated codes (an error), one with more (with `strict`, any other count)
/// decodes them into something the generator did not mean (a warning, or with `strict` an error: the
/// evaluation's scores would mean nothing).
pub(crate) fn check_codebook<B: Backend>(
    tok: &VideoTokenizer<B>,
    tok_path: &Path,
    g: &nbp_model::LoadedGenerator<B>,
    generator: &Path,
    strict: bool,
) -> Result<()> {
    let codebook = nbp_model::generate::vocabulary(&g.settings, g.model.config().vocab_size)?.codebook;
    let mismatch = format!(
        "{}: the tokenizer has {} codes but the generator {} was trained on {codebook}",
        tok_path.display(),
        tok.codebook_size(),
        generator.display()
    );
    let fix = "pass the tokenizer the generator's token data was made with (--tokenizer)";
    if tok.codebook_size() < codebook || (strict && tok.codebook_size() != codebook) {
        bail!("{mismatch}: they do not belong together; {fix}");
    }
    if tok.codebook_size() > codebook {
        eprintln!("warning: {mismatch}, so the decoded video will not show what the generator meant; {fix}");
    }
    Ok(())
}

/// Refuses, before the work starts, an output file that could not be written at the end: a folder by that name,
/// a file where its folder should be, a folder that takes no new files.
pub(crate) fn output_file(path: &Path) -> Result<()> {
    Ok(nbp_core::error::check_output(path, false)?)
}

/// Whether `path` names a NumPy `.npy` file.
fn is_npy(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"))
}

/// Token ids are written as NumPy `.npy` files: refuses any other output name before the work starts.
fn npy_output(path: &Path, flag: &str) -> Result<()> {
    if !is_npy(path) {
        bail!("{}: token ids are written as a NumPy array: give {flag} a name ending in .npy", path.display());
    }
    Ok(())
}

fn parse_grid(s: &str) -> Result<nbp_core::blocks::LatentGrid> {
    nbp_core::blocks::LatentGrid::parse(s).context("--latent-grid")
}

fn sample_command<B: Backend>(a: SampleArgs, device: B::Device) -> Result<()> {
    check_sampling_flags(&a)?;
    use nbp_model::generate::{Mode, Request, generate};
    let bar = Bar::default();
    let overrides = nbp_model::Overrides { n_head: a.n_head, block: a.block_size, ..Default::default() };
    let demo = a.generator.is_none();
    let generator = a.generator.clone().unwrap_or_else(|| demo_asset("generator.safetensors"));
    let mut g = match nbp_model::load_generator::<B>(&generator, &overrides, &device) {
        Ok(g) => g,
        Err(e) if demo && !generator.exists() => bail!(
            "{e}\nthe bundled demo model was neither in assets/demo/ nor unpacked from the binary (see the warning above): set XDG_CACHE_HOME to a writable folder, or pass --generator (an official .ckpt or a model trained with `nbp-cli train`) and --tokenizer"
        ),
        Err(e) => return Err(e.into()),
    };
    let mode = Mode::of(&g.settings);
    let native = nbp_core::weights::is_safetensors(&generator);
    if native && (a.n_head.is_some() || a.block_size.is_some()) {
        eprintln!(
            "warning: --n-head and --block-size apply to official checkpoints; {} records both, so they are \
             ignored",
            generator.display()
        );
    }
    g.model = g.model.with_precision(a.precision);
    eprintln!(
        "loaded generator {} ({} parameters, {}, block {}, {} condition token{}, {} linear weights)",
        generator.display(),
        nbp_core::module::parameter_count(g.model.num_params()),
        format!("{mode:?}").to_lowercase(),
        g.settings.block,
        g.settings.cond_tokens,
        plural(g.settings.cond_tokens),
        g.model.precision()
    );
    if let Some(m) = a.mode {
        let want = match m {
            ModeArg::Nbp => Mode::Nbp,
            ModeArg::Ntp => Mode::Ntp,
            ModeArg::Hybrid => Mode::Hybrid,
        };
        if want != mode {
            let name = |m: Mode| format!("{m:?}").to_lowercase();
            bail!(
                "--mode {} does not match the model, which was trained for {} (block size {}): leave out --mode",
                name(want),
                name(mode),
                g.settings.block
            );
        }
    }
    if a.cfg_scale != 0.0 && g.settings.unconditional {
        bail!(
            "--cfg-scale guides by the condition, and {} is unconditional (frame prediction): leave out --cfg-scale",
            generator.display()
        );
    }
    if a.cfg_scale != 0.0 && g.info.p_drop_cond == Some(0.0) {
        eprintln!(
            "warning: {} was trained without condition dropout (p_drop_cond 0), so its null condition never learnt \
             anything and classifier-free guidance will not behave as intended: train with --p-drop-cond 0.1",
            generator.display()
        );
    }
    if a.cfg_scale != 0.0 && !native {
        eprintln!(
            "warning: official checkpoints carry an untrained, random null-condition embedding (they were trained \
             without condition dropout), so classifier-free guidance will not behave as intended with them"
        );
    }
    let grid = match (&a.latent_grid, g.info.latent_grid) {
        (Some(s), _) => parse_grid(s)?,
        (None, Some([t, h, w])) => nbp_core::blocks::LatentGrid::new(t, h, w),
        (None, None) => parse_grid("5x16x16")?,
    };
    if let (Some(_), Some([_, h, w])) = (&a.latent_grid, g.info.latent_grid)
        && (grid.h, grid.w) != (h, w)
    {
        eprintln!(
            "warning: the model was trained on latent frames of {h}x{w} tokens: on {}x{} its positions hold other \
             tokens than it learnt, so expect scrambled frames (change only the number of latent frames)",
            grid.h, grid.w
        );
    }
    let block_shape = match &a.block_shape {
        Some(s) => {
            let given = nbp_core::blocks::BlockShape::parse(s)?;
            if let Ok(trained) = g.default_block_shape(&grid)
                && trained != given
            {
                eprintln!(
                    "warning: the model was trained with blocks of {trained}: blocks of {given} feed its tokens in \
                     another order than it learnt, so expect noise (leave out --block-shape)"
                );
            }
            given
        }
        None => g.default_block_shape(&grid).map_err(|e| anyhow::anyhow!("{e}: pass --block-shape"))?,
    };
    use nbp_model::classes::ConditionChoice;
    let choice = match (&a.class, &a.condition_ids, a.label) {
        (Some(c), _, _) => ConditionChoice::Class(c),
        (None, Some(ids), _) => ConditionChoice::Ids(ids),
        (None, None, Some(label)) => ConditionChoice::Label(label),
        (None, None, None) => ConditionChoice::Default,
    };
    // One generation per condition: a class grid when a class-conditional model gets no condition.
    let conditions = nbp_model::classes::conditions(&g.info.classes, &g.settings, choice)
        .with_context(|| generator.display().to_string())?;
    for note in conditions.iter().filter_map(|c| c.note.as_ref()) {
        eprintln!("{note}");
    }
    let needs_tokenizer = !a.no_decode || a.condition_video.is_some();
    let tokenizer = if needs_tokenizer {
        let recorded =
            (a.tokenizer.is_none() && !demo && native).then(|| recorded_tokenizer(&g, &generator, true)).transpose()?;
        let path = a
            .tokenizer
            .clone()
            .or(recorded)
            .unwrap_or_else(|| if demo { demo_asset("tokenizer.safetensors") } else { generator.clone() });
        let args = TokenizerArgs { tokenizer: Some(path), tokenizer_config: a.tokenizer_config.clone() };
        let tok = load::<B>(&args, &device).context(if a.tokenizer.is_some() {
            "loading the tokenizer given by --tokenizer"
        } else {
            "loading the tokenizer (pass --tokenizer; for a PyTorch tokenizer of another architecture than the \
             official one, --tokenizer-config; or --no-decode to stop at token ids)"
        })?;
        check_codebook(&tok, &args.path(), &g, &generator, false)?;
        Some(tok)
    } else {
        None
    };
    let prefix: Vec<i64> = if let Some(video) = &a.condition_video {
        let tok = tokenizer.as_ref().expect("loaded above");
        let frames = a.condition_frames.unwrap_or(if grid.t > 2 { 5 } else { 1 });
        let latent = 1 + (frames - 1) / 4;
        if latent >= grid.t {
            bail!(
                "--condition-frames {frames} is {latent} latent frames, which leaves nothing to generate in a latent \
                 grid of {} frames: give at most {}",
                grid.t,
                1 + 4 * grid.t.saturating_sub(2)
            );
        }
        let size = (grid.h * 8, grid.w * 8);
        let opts = ReadOptions {
            frames,
            fps: (a.condition_fps > 0.0).then_some(a.condition_fps),
            size: Some(size),
            start: ClipStart::Start,
        };
        let report = pipeline::read_clip(tok, video, &opts)?;
        if report.padded_frames > 0 {
            // Black frames to continue from were never in the video: the model would continue them.
            let fit = report.available_frames.checked_sub(1).map(|n| 1 + n / 4 * 4);
            // Only a video file resampled to --condition-fps can give more frames at a lower rate.
            let resampled = report.native_fps.is_some() && a.condition_fps > 0.0;
            bail!(
                "{}: has only {} frame{}{}, fewer than the {frames} to continue from: {}",
                video.display(),
                report.available_frames,
                plural(report.available_frames),
                if resampled { format!(" at {} frames/s", a.condition_fps) } else { String::new() },
                match fit {
                    Some(fit) if resampled =>
                        format!("give --condition-frames {fit}, or a lower --condition-fps (0 keeps the native rate)"),
                    Some(fit) => format!("give --condition-frames {fit}"),
                    None => "give a video with frames".to_string(),
                }
            );
        }
        print_clip(video, &report);
        let x = nbp_core::video::videos_to_tensor::<B>(&[report.video], &device)?;
        let ids = indices_to_npy(tok.encode(x)?);
        ids.to_i64()?
    } else if let Some(p) = &a.prefix_tokens {
        let codebook = nbp_model::generate::vocabulary(&g.settings, g.model.config().vocab_size)?.codebook;
        let part = nbp_model::generate::PrefixPart { clip: a.prefix_clip, frames: a.prefix_frames };
        nbp_model::generate::read_prefix_tokens(p, &grid, codebook, part)?
    } else {
        vec![]
    };
    let filter = nbp_core::filter::SamplingFilter {
        temperature: a.temperature,
        top_k: (a.top_k > 0).then_some(a.top_k),
        top_p: Some(a.top_p).filter(|&p| p < 1.0),
    };
    let options = nbp_model::sampling::SampleOptions {
        filter,
        greedy: a.greedy,
        cfg: (a.cfg_scale != 0.0)
            .then_some(nbp_model::sampling::Guidance { scale: a.cfg_scale, growing: a.cfg_growing }),
    };
    let per_condition = a.num_samples;
    let (mut codes, mut steps, mut new_tokens, mut seconds, mut clamped) = (vec![], 0, 0, 0.0, 0);
    for named in &conditions {
        // Seeded right before sampling (loading models draws random initial weights), and again for every
        // condition: a class of a grid is drawn as --class draws it alone.
        B::seed(&device, a.seed);
        let request = Request {
            condition: named.condition.clone(),
            prefix: prefix.clone(),
            grid,
            block_shape,
            samples: per_condition,
            options,
            clamp_non_video: a.official_clamp,
        };
        let out = generate(&g.model, &g.settings, &request, &bar)?;
        if conditions.len() > 1 {
            eprintln!("{}: {} steps in {:.2} s", named.name, out.steps, out.seconds);
        }
        steps += out.steps;
        new_tokens += out.new_tokens * per_condition;
        seconds += out.seconds;
        clamped += out.clamped;
        codes.extend(out.codes);
    }
    let n = codes.len();
    // Pixel frames of `t` latent frames: the first decodes to 1 frame, each later one to 4.
    let pixel_frames = |t: usize| if t == 0 { 0 } else { 1 + 4 * (t - 1) };
    let given = prefix.len() / (grid.h * grid.w);
    let new_frames = (n * (pixel_frames(grid.t) - pixel_frames(given))) as f64;
    println!(
        "generator: {} clip{} ({}), {} steps, {} tokens in {:.2} s ({:.1} tokens/s, {:.2} frames/s)",
        n,
        plural(n),
        conditions.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", "),
        steps,
        new_tokens,
        seconds,
        new_tokens as f64 / seconds,
        new_frames / seconds
    );
    if clamped > 0 {
        eprintln!(
            "warning: {clamped} sampled ids were not video codes and were clamped (as the official sampler does)"
        );
    }
    let flat: Vec<i32> = codes.iter().flatten().map(|&c| c as i32).collect();
    let tokens = NpyArray::i32(vec![n, grid.t, grid.h, grid.w], flat);
    if let Some(p) = &a.save_tokens {
        write_npy(p, &tokens)?;
        println!("wrote {}", p.display());
    }
    if let Some(tok) = tokenizer.filter(|_| !a.no_decode) {
        let t0 = std::time::Instant::now();
        // A few clips at a time: the decoder's activations of many clips at once would not fit in memory.
        let videos = pipeline::decode_in_batches(&tok, &tokens, 8, &bar)?;
        let secs = t0.elapsed().as_secs_f64();
        write_videos(&a.out, &videos, a.fps)?;
        let frames = videos.len() * videos[0].frames;
        println!("decoder: {frames} frames in {secs:.2} s ({:.2} frames/s)", frames as f64 / secs);
        println!("wrote {}", a.out.display());
    }
    Ok(())
}

/// A time with `decimals` decimals, in milliseconds where seconds would show too few digits (small models):
/// `3.82 s`, `0.080 s`, `0.413 ms`.
fn short_time(seconds: f64, decimals: usize) -> String {
    if seconds >= 10f64.powi(1 - decimals as i32) {
        format!("{seconds:.decimals$} s")
    } else {
        format!("{:.decimals$} ms", seconds * 1e3)
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Dataset(DatasetCommand::MovingShapes {
            out,
            count,
            frames,
            resolution,
            seed,
            start,
            plain,
            large,
            single,
            fixed,
        }) => {
            use nbp_train::moving_shapes::{MovingShapes, class_name};
            if count == 0 || frames == 0 {
                bail!("--count and --frames must be at least 1");
            }
            // The clips are held in memory as f32 pixels before they are written.
            let bytes = count as f64 * frames as f64 * 3.0 * resolution.0 as f64 * resolution.1 as f64 * 4.0;
            if bytes > 8e9 {
                bail!(
                    "{count} clips of {frames} frames at {}x{} would take {:.0} GB of memory: ask for fewer \
                     clips, frames or pixels (at most 8 GB)",
                    resolution.0,
                    resolution.1,
                    bytes / 1e9
                );
            }
            if start.checked_add(count).is_none() {
                bail!("--start {start} with --count {count} runs past the last clip index ({})", usize::MAX);
            }
            VideoFormat::for_output(&out)?;
            let mut ds = MovingShapes::new(frames, resolution.0, resolution.1, seed);
            if plain {
                ds = ds.with_plain_backgrounds();
            }
            if large {
                ds = ds.with_large_shapes();
            }
            if single {
                ds = ds.with_single_shape();
            }
            if fixed {
                ds = ds.with_fixed_look();
            }
            let clips: Vec<_> = (start..start + count).map(|i| ds.clip(i)).collect();
            let names: Vec<String> = clips.iter().map(|(_, l)| class_name(*l)).collect();
            let videos: Vec<_> = clips.into_iter().map(|(v, _)| v).collect();
            write_videos(&out, &videos, 8.0)?;
            let listed = if names.len() <= 16 { names.join(", ") } else { format!("{}, …", names[..16].join(", ")) };
            println!("wrote {} ({count} clips: {listed})", out.display());
        }
        Command::Generator(GeneratorCommand::Convert {
            input,
            output,
            tokenizer_out,
            tokenizer_config,
            n_head,
            block_size,
        }) => {
            type B = burn::backend::Flex;
            if !nbp_core::weights::is_safetensors(&output) {
                bail!("{}: generator files are saved as .safetensors", output.display());
            }
            output_file(&output)?;
            if let Some(t) = &tokenizer_out {
                if !nbp_core::weights::is_safetensors(t) {
                    bail!("{}: --tokenizer-out: tokenizer files are saved as .safetensors", t.display());
                }
                if nbp_core::weights::is_safetensors(&input) {
                    bail!(
                        "--tokenizer-out: {} is an nbp file, which embeds no tokenizer (only official .ckpt files do)",
                        input.display()
                    );
                }
                output_file(t)?;
            }
            let overrides =
                nbp_model::Overrides { n_head, block: block_size, refuse_changes: true, ..Default::default() };
            let mut g = nbp_model::load_generator::<B>(&input, &overrides, &Default::default())?;
            if let Some(t) = &tokenizer_out {
                let config = TokenizerConfig::from_name_or_file(tokenizer_config.as_deref().unwrap_or("official"))?;
                let (tok, source) = nbp_tokenizer::load_tokenizer::<B>(&input, Some(&config), &Default::default())
                    .with_context(|| {
                        format!(
                            "--tokenizer-out: reading the tokenizer that {} embeds (for another architecture than \
                             the official one, pass --tokenizer-config)",
                            input.display()
                        )
                    })?;
                nbp_tokenizer::save_tokenizer(&tok, t)?;
                // Recorded as `train` records the tokenizer of its token cache: an absolute path and the file's
                // fingerprint, so that `sample` finds it from anywhere and notices a replaced file.
                let absolute = std::path::absolute(t).unwrap_or_else(|_| t.clone());
                g.info.tokenizer = Some(absolute.display().to_string());
                g.info.tokenizer_fingerprint = Some(nbp_core::weights::file_fingerprint(t)?);
                println!("converted the tokenizer of {} ({source}) → {}", input.display(), t.display());
            } else if nbp_tokenizer::checkpoint::embeds_tokenizer(&input) {
                eprintln!(
                    "note: {} also embeds its tokenizer; --tokenizer-out FILE.safetensors converts it too, and the \
                     converted generator then records it for `sample`",
                    input.display()
                );
            }
            // What an nbp file records beside the weights (classes, latent grid, block shape, tokenizer) is kept.
            nbp_model::checkpoint::save_generator_with_info(&g.model, &g.settings, &g.info, &output)?;
            println!("converted {} ({}) → {}", input.display(), g.settings, output.display());
        }
        Command::Generator(GeneratorCommand::Info { input, n_head, block_size }) => {
            let overrides = nbp_model::Overrides { n_head, block: block_size, ..Default::default() };
            let g = nbp_model::load_generator::<burn::backend::Flex>(&input, &overrides, &Default::default())?;
            println!("{}", input.display());
            print!("{}", g.describe()?);
        }
        Command::Train(args) => train::train(*args)?,
        Command::TrainTokenizer(args) => train::train_tokenizer_cmd(*args)?,
        Command::TokenizeDataset(args) => train::tokenize_dataset_cmd(*args)?,
        Command::EvalTokenizer(args) => train::eval_tokenizer_cmd(*args)?,
        Command::EvalFramePrediction(args) => train::eval_frame_prediction_cmd(*args)?,
        Command::Sample(args) => {
            let device = args.run.device;
            with_backend!(device, |B, dev| sample_command::<B>(*args, dev))?;
        }
        Command::Bench(BenchCommand::Sample {
            preset,
            block,
            versus,
            hybrid,
            prefix,
            tokens,
            vocab,
            batch,
            tokens_per_frame,
            precision,
            warmup,
            repeats,
            run,
        }) => {
            if repeats == 0 {
                bail!("--repeats must be at least 1");
            }
            if versus == Some(block) {
                bail!("--versus {block} is --block itself: compare another block size (e.g. --block 16 --versus 1)");
            }
            let prefix = prefix.unwrap_or(if hybrid { 0 } else { 512 });
            let tokens = tokens.unwrap_or(if hybrid { 1280 } else { 768 });
            let blocks: Vec<usize> = std::iter::once(block).chain(versus).collect();
            for (b, flag) in blocks.iter().zip(["--block", "--versus"]) {
                if *b == 0 {
                    bail!("{flag} must be at least 1");
                }
                if prefix % b != 0 || (!hybrid && prefix < *b) {
                    let what = if hybrid { "a multiple" } else { "a positive multiple" };
                    bail!("--prefix must be {what} of {flag} ({b}), got {prefix}");
                }
            }
            // The model's position table is as long as the sequence.
            const MAX_POSITIONS: usize = 1 << 20;
            if prefix.checked_add(tokens).is_none_or(|n| n > MAX_POSITIONS) {
                bail!("--prefix plus --tokens must be at most {MAX_POSITIONS} positions");
            }
            if tokens == 0 || batch == 0 || vocab == 0 || tokens_per_frame == 0 {
                bail!("--tokens, --batch, --vocab and --tokens-per-frame must be at least 1");
            }
            check_precision(precision, run.device)?;
            let plan = nbp_model::bench::plan_benchmark(hybrid, vocab, prefix, tokens, &blocks)?;
            let r = with_backend!(run.device, |B, dev| {
                B::seed(&dev, 0);
                let config = nbp_model::GptConfig::preset(&preset, plan.vocab_size, plan.cond_tokens)?
                    .with_block_size(plan.positions())
                    .with_dropout(0.0);
                eprintln!("building {preset} with random weights ({} layers, width {})", config.n_layer, config.n_embd);
                let model = nbp_model::Gpt::<B>::new(&config, &dev)?.with_precision(precision);
                nbp_core::module::materialize(&model);
                // One untimed first step of each block size, so that none of them pays alone for what is done once.
                let mut first_touch = vec![];
                if warmup == 0 {
                    for (_, schedule) in &plan.schedules {
                        first_touch.push(nbp_model::bench::warm_up(&model, schedule, batch)?);
                    }
                }
                let results = nbp_model::bench::time_sampling(
                    &model,
                    &plan.schedules,
                    batch,
                    (warmup, repeats),
                    &Bar::default(),
                    &mut |l| eprintln!("{l}"),
                )?;
                Ok::<_, anyhow::Error>((results, model.num_params(), first_touch))
            })?;
            let (results, params, first_touch) = r;
            let versus_text = versus.map(|v| format!(" (and {v} on the same weights)")).unwrap_or_default();
            let start = match hybrid {
                true => format!(
                    " with the hybrid start ({} condition tokens and BOV, vocabulary {})",
                    plan.cond_tokens, plan.vocab_size
                ),
                false => String::new(),
            };
            println!(
                "sample benchmark: preset {preset} ({} parameters, {precision} linear weights), block {block}{start}, prefix {prefix}, {tokens} new token{} x {batch} on {}{versus_text}",
                nbp_core::module::parameter_count(params),
                plural(tokens),
                run.device
            );
            println!("machine: {}", nbp_core::system::machine_description());
            if run.device == DeviceArg::Flex {
                println!("cpu kernels: {}", nbp_kernels::description());
            }
            if warmup + repeats > 1 {
                println!(
                    "fastest of {repeats} timed run{} after {warmup} warm-up run{}{}",
                    plural(repeats),
                    plural(warmup),
                    if versus.is_some() { ", the two block sizes in turns" } else { "" }
                );
            }
            if let Some(secs) = first_touch.first() {
                let other = match (versus, first_touch.get(1)) {
                    (Some(v), Some(t)) => format!(", then block {v}'s {t:.2} s"),
                    _ => String::new(),
                };
                println!(
                    "untimed warm-up: the prefill and first step of block {block} took {secs:.2} s (the process's first use of its memory{}){other}",
                    if run.device == DeviceArg::Flex { "" } else { " and kernels" }
                );
            }
            // Pixel frames of the generated latent frames, as `sample` counts them: the first latent frame of a clip
            // is one frame, every later one four.
            let pixel = |tokens: usize| {
                let latent = tokens as f64 / tokens_per_frame as f64;
                if latent <= 1.0 { latent } else { 1.0 + 4.0 * (latent - 1.0) }
            };
            let frames = (pixel(prefix + tokens) - pixel(prefix)) * batch as f64;
            for ((b, schedule), t) in plan.schedules.iter().zip(&results) {
                let (steps, secs, first) = (t.steps, t.seconds, t.first_step);
                let fed = schedule.steps[0].chunk.len();
                let label = if versus.is_some() { format!("block {b}: ") } else { String::new() };
                println!(
                    "{label}{steps} step{} in {}: {:.1} tokens/s, {:.3} frames/s ({}/step)",
                    plural(steps),
                    short_time(secs, 2),
                    (tokens * batch) as f64 / secs,
                    frames / secs,
                    short_time(secs / steps as f64, 3)
                );
                if steps > 1 {
                    println!(
                        "{label}of which the prefill of {fed} tokens{} with the first step {}, then {} more step{} of {} each",
                        if batch > 1 { format!(" x {batch}") } else { String::new() },
                        short_time(first, 2),
                        steps - 1,
                        plural(steps - 1),
                        short_time((secs - first) / (steps - 1) as f64, 3)
                    );
                }
            }
            if let (Some(v), [t, versus_t]) = (versus, results.as_slice()) {
                println!(
                    "block {block} is {:.2}x as fast as block {v} on the same weights",
                    versus_t.seconds / t.seconds
                );
                // Per sequence, times the sequences of the batch, as the lines above count.
                let first = |i: usize| plan.schedules[i].1.steps[0].predict;
                let later =
                    (t.later_tokens_per_second(tokens, first(0)), versus_t.later_tokens_per_second(tokens, first(1)));
                if let (Some(a), Some(b)) = (later.0.map(|a| a * batch as f64), later.1.map(|b| b * batch as f64)) {
                    println!(
                        "after the prefill and first step: block {block} draws {a:.1} tokens/s, block {v} {b:.1} tokens/s ({:.2}x, the steps alone)",
                        a / b
                    );
                }
            }
        }
        Command::Tokenizer(TokenizerCommand::Convert { input, output, tokenizer_config }) => {
            type B = burn::backend::Flex;
            let native = nbp_core::weights::is_safetensors(&input);
            let config = match tokenizer_config {
                Some(name) => Some(TokenizerConfig::from_name_or_file(&name)?),
                None if native => None,
                None => Some(TokenizerConfig::preset("official")?),
            };
            let device = Default::default();
            let (model, source, resolution) = load_tokenizer_with_resolution::<B>(&input, config.as_ref(), &device)?;
            // The size an nbp file says the tokenizer was trained at is kept.
            nbp_tokenizer::checkpoint::save_tokenizer_with_resolution(&model, &output, resolution)?;
            println!("converted {} ({source}) → {}", input.display(), output.display());
        }
        Command::Tokenizer(cmd) => {
            let device = match &cmd {
                TokenizerCommand::Encode { run, .. }
                | TokenizerCommand::Decode { run, .. }
                | TokenizerCommand::Reconstruct { run, .. } => run.device,
                _ => DeviceArg::Flex,
            };
            with_backend!(device, |B, dev| tokenizer_command::<B>(cmd, dev))?;
        }
        Command::Bench(BenchCommand::Tokenizer { preset, frames, resolution, batch, warmup, repeats, run }) => {
            let config = TokenizerConfig::from_name_or_file(&preset)?;
            if batch == 0 || repeats == 0 {
                bail!("--batch and --repeats must be at least 1");
            }
            // The clip in f32, as the benchmark holds it (the activations take several times more).
            let bytes =
                [batch, frames, resolution.0, resolution.1, 3, 4].iter().try_fold(1usize, |a, &b| a.checked_mul(b));
            if bytes.is_none_or(|b| b > 1 << 32) {
                bail!("{batch} clips of {frames} frames of {}x{} are too large to time", resolution.0, resolution.1);
            }
            let dims = [batch, frames, resolution.0, resolution.1];
            let r = with_backend!(run.device, |B, dev| pipeline::bench::<B>(
                &config,
                dims,
                warmup,
                repeats,
                &dev,
                &Bar::default()
            )
            .map_err(anyhow::Error::from))?;
            println!(
                "tokenizer benchmark: preset {preset}, {batch}x{frames}x{}x{} on {}",
                resolution.0, resolution.1, run.device
            );
            println!("machine: {}", nbp_core::system::machine_description());
            if run.device == DeviceArg::Flex {
                println!("cpu kernels: {}", nbp_kernels::description());
            }
            if warmup + repeats > 1 {
                println!(
                    "fastest of {repeats} timed run{} after {warmup} warm-up run{}",
                    plural(repeats),
                    plural(warmup)
                );
            } else {
                println!(
                    "one timed run, which includes the process's first use of its memory{}: --warmup 1 leaves that \
                     out, --repeats N keeps the fastest of N",
                    if run.device == DeviceArg::Flex { "" } else { " and the compiling of kernels" }
                );
            }
            // All runs in one unit: seconds, or milliseconds when every run took less than 0.1 s.
            let runs = |v: &[f64]| {
                let ms = v.iter().all(|&t| t < 0.1);
                let each: Vec<String> =
                    v.iter().map(|&t| if ms { format!("{:.2}", t * 1e3) } else { format!("{t:.2}") }).collect();
                format!("{} {}", each.join(", "), if ms { "ms" } else { "s" })
            };
            for (what, secs, fps, all) in [
                ("encode", r.encode_seconds, r.encode_fps(), &r.all_encode),
                ("decode", r.decode_seconds, r.decode_fps(), &r.all_decode),
            ] {
                println!("{what}: {} ({fps:.2} frames/s); runs: {}", short_time(secs, 2), runs(all));
            }
        }
        Command::Bench(BenchCommand::Kernels { repeats, seconds }) => {
            if repeats == 0 || !(seconds.is_finite() && seconds >= 0.0) {
                bail!("--repeats must be at least 1 and --seconds a finite number ≥ 0, got {repeats} and {seconds}");
            }
            let Some(timings) = nbp_kernels::bench::official_shapes(repeats, seconds) else {
                bail!("this CPU has no AVX-512, so flex uses Burn's generic kernels; nothing to time");
            };
            println!("machine: {}", nbp_core::system::machine_description());
            println!("cpu kernels: {}", nbp_kernels::description());
            for t in timings {
                // The sampling rows do no arithmetic worth counting (flops 0).
                let gflops = if t.flops > 0.0 { format!("{:>7.1} GFLOP/s", t.gflops()) } else { " ".repeat(15) };
                println!(
                    "{:<44} {:>9.3} ms {gflops} {:>6.1} GB/s of {}",
                    t.name,
                    t.seconds * 1e3,
                    t.weight_gbs(),
                    t.bytes_of
                );
            }
        }
    }
    Ok(())
}

/// The command line, with every flag that takes a value accepting a negative number as that value (`--fps -1`
/// then gets the flag's own range error instead of clap's "unexpected argument '-1'").
fn command() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| if a.get_action().takes_values() { a.allow_negative_numbers(true) } else { a })
            .mut_subcommands(negatives)
    }
    train::show_config_defaults(negatives(<Cli as clap::CommandFactory>::command()))
}

fn main() -> ExitCode {
    let cli = match <Cli as clap::FromArgMatches>::from_arg_matches(&command().get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match nbp_kernels::on_pool(|| run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// "s" unless `n` is 1, for messages that count things.
fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}
