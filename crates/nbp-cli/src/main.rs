//! `nbp-cli`: the command line of the nbp toolkit. This file only parses arguments and prints results; the
//! work is done by the `nbp-*` libraries.

mod backend;
mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use burn::prelude::*;
use clap::{Args, Parser, Subcommand, ValueEnum};

use backend::{DeviceArg, with_backend};
use nbp_core::npy::{NpyArray, read_npy, write_npy};
use nbp_core::video::{ClipStart, ReadOptions, VideoFormat, tensor_to_videos, write_videos};
use nbp_tokenizer::pipeline::{self, indices_to_npy, npy_to_indices};
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer, load_tokenizer, save_tokenizer};
use progress::Bar;

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
    /// Benchmarks that anyone can rerun (timings are printed with the machine they ran on).
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
enum TokenizerCommand {
    /// Encode a video file (any format ffmpeg reads) or a folder of frames into token ids (.npy, int32,
    /// shaped [1, T', H/8, W/8]).
    Encode {
        /// Video file or folder of image frames (sorted by name).
        input: PathBuf,
        /// Output .npy file of token ids.
        #[arg(short, long, default_value = "tokens.npy")]
        output: PathBuf,
        #[command(flatten)]
        model: TokenizerArgs,
        #[command(flatten)]
        clip: ClipArgs,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Decode token ids (.npy shaped [T', H', W'] or [B, T', H', W']) into a video.
    Decode {
        /// .npy file of token ids.
        input: PathBuf,
        /// Output: .gif, .mp4/.webm/.mkv/.avi (needs ffmpeg), .png (frame grid), a folder (PNG frames), or .npy
        /// (raw float pixels [B, 3, T, H, W], clamped to [0, 1]).
        #[arg(short, long, default_value = "decoded.gif")]
        output: PathBuf,
        /// Frame rate of the written video.
        #[arg(long, default_value_t = 8.0)]
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
        /// Output video (input left, reconstruction right): .gif, .mp4, .png, or a folder.
        #[arg(short, long, default_value = "reconstruction.gif")]
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
        /// Architecture of a PyTorch checkpoint: a preset (official, small, tiny) or a JSON config file.
        #[arg(long, default_value = "official")]
        tokenizer_config: String,
    },
    /// Print the configuration and size of a tokenizer checkpoint.
    Info {
        #[command(flatten)]
        model: TokenizerArgs,
    },
}

#[derive(Subcommand, Debug)]
enum BenchCommand {
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
}

/// Which tokenizer to load.
#[derive(Args, Debug, Clone)]
struct TokenizerArgs {
    /// Tokenizer checkpoint: the project's .safetensors, an official magvit2_*.pt, or an official generator
    /// .ckpt (its embedded tokenizer is used).
    #[arg(long)]
    tokenizer: PathBuf,
    /// Architecture of PyTorch checkpoints: a preset (official, small, tiny) or a JSON config file.
    /// .safetensors files carry their own.
    #[arg(long)]
    tokenizer_config: Option<String>,
}

/// How a clip is cut from a video.
#[derive(Args, Debug, Clone)]
struct ClipArgs {
    /// Frames of the clip (1 + 4n; 17 gives 5 latent frames). Short videos are padded with black frames.
    #[arg(long, default_value_t = 17)]
    frames: usize,
    /// Frame rate the video is resampled to before the clip is cut (0 keeps the native rate). Ignored for
    /// frame folders.
    #[arg(long, default_value_t = 8.0)]
    fps: f64,
    /// Frame size the video is resized to: N for N×N, or HxW (multiples of 8). Frames already at this size are
    /// not resampled.
    #[arg(long, default_value = "128", value_parser = parse_resolution)]
    resolution: (usize, usize),
    /// Where the clip starts: at the first frame, or centred in the video (the official evaluation rule).
    #[arg(long, value_enum, default_value_t = ClipArg::Start)]
    clip: ClipArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ClipArg {
    Start,
    Center,
}

/// Where the computation runs.
#[derive(Args, Debug, Clone)]
struct RunArgs {
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = DeviceArg::Flex)]
    device: DeviceArg,
}

fn parse_resolution(s: &str) -> Result<(usize, usize), String> {
    let parse = |v: &str| v.trim().parse::<usize>().map_err(|_| format!("'{s}' is not N or HxW"));
    let (h, w) = match s.split_once(['x', 'X']) {
        Some((h, w)) => (parse(h)?, parse(w)?),
        None => (parse(s)?, parse(s)?),
    };
    if h == 0 || w == 0 || h % 8 != 0 || w % 8 != 0 {
        return Err(format!("resolution {h}x{w}: height and width must be positive multiples of 8"));
    }
    Ok((h, w))
}

impl ClipArgs {
    fn read_options(&self) -> ReadOptions {
        ReadOptions {
            frames: self.frames,
            fps: (self.fps > 0.0).then_some(self.fps),
            size: Some(self.resolution),
            start: match self.clip {
                ClipArg::Start => ClipStart::Start,
                ClipArg::Center => ClipStart::Center,
            },
        }
    }
}

fn load<B: Backend>(args: &TokenizerArgs, device: &B::Device) -> Result<VideoTokenizer<B>> {
    let config = args.tokenizer_config.as_deref().map(TokenizerConfig::from_name_or_file).transpose()?;
    let (model, source) = load_tokenizer::<B>(&args.tokenizer, config.as_ref(), device)?;
    eprintln!(
        "loaded tokenizer {} ({:?}, {:.1} M parameters, {} codes)",
        args.tokenizer.display(),
        source,
        model.parameter_count() as f64 / 1e6,
        model.codebook_size()
    );
    Ok(model)
}

fn print_clip(path: &Path, report: &nbp_core::video::ReadReport) {
    let v = &report.video;
    eprintln!(
        "read {}: {} frames of {}x{}{}",
        path.display(),
        v.frames,
        v.height,
        v.width,
        report
            .native_fps
            .map(|f| format!(" (native {f:.2} fps, {} frames after resampling)", report.available_frames))
            .unwrap_or_default()
    );
    if report.padded_frames > 0 {
        eprintln!(
            "warning: {} has only {} frames at this rate; {} black frames were appended",
            path.display(),
            report.available_frames,
            report.padded_frames
        );
    }
}

fn tokenizer_command<B: Backend>(cmd: TokenizerCommand, device: B::Device) -> Result<()> {
    let bar = Bar::default();
    match cmd {
        TokenizerCommand::Encode { input, output, model, clip, .. } => {
            let tok = load::<B>(&model, &device)?;
            let report = pipeline::read_clip(&tok, &input, &clip.read_options())?;
            print_clip(&input, &report);
            let t0 = std::time::Instant::now();
            let x = nbp_core::video::videos_to_tensor::<B>(&[report.video], &device)?;
            let ids = indices_to_npy(tok.encode_with(x, &bar)?);
            write_npy(&output, &ids)?;
            println!("wrote {} (token ids {:?}) in {:.2} s", output.display(), ids.shape, t0.elapsed().as_secs_f64());
        }
        TokenizerCommand::Decode { input, output, fps, model, .. } => {
            let tok = load::<B>(&model, &device)?;
            let array = read_npy(&input)?;
            let ids = npy_to_indices::<B>(&array, tok.codebook_size(), &device)
                .with_context(|| format!("{}", input.display()))?;
            let t0 = std::time::Instant::now();
            let video = tok.decode_with(ids, &bar);
            let is_npy = output.extension().is_some_and(|e| e.eq_ignore_ascii_case("npy"));
            if is_npy {
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
            VideoFormat::from_path(&output)?;
            let tok = load::<B>(&model, &device)?;
            let report = pipeline::read_clip(&tok, &input, &clip.read_options())?;
            print_clip(&input, &report);
            let r = pipeline::reconstruct(&tok, vec![report.video], &bar)?;
            if let Some(p) = &save_tokens {
                write_npy(p, &r.indices)?;
                println!("wrote {}", p.display());
            }
            let pairs: Vec<_> = r.input.iter().zip(&r.output).flat_map(|(a, b)| [a.clone(), b.clone()]).collect();
            write_videos(&output, &pairs, clip.fps.max(1.0))?;
            println!("wrote {} (input | reconstruction)", output.display());
            println!(
                "PSNR {:.2} dB  SSIM {:.4}  (encode {:.2} s, decode {:.2} s, tokens {:?})",
                r.psnr, r.ssim, r.encode_seconds, r.decode_seconds, r.indices.shape
            );
        }
        TokenizerCommand::Info { model } => {
            let tok = load::<B>(&model, &device)?;
            println!("{}", serde_json::to_string_pretty(tok.config())?);
            println!("parameters: {}", tok.parameter_count());
        }
        TokenizerCommand::Convert { .. } => unreachable!("handled without a backend"),
    }
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Tokenizer(TokenizerCommand::Convert { input, output, tokenizer_config }) => {
            type B = burn::backend::Flex;
            let config = TokenizerConfig::from_name_or_file(&tokenizer_config)?;
            let device = Default::default();
            let (model, source) = load_tokenizer::<B>(&input, Some(&config), &device)?;
            save_tokenizer(&model, &output)?;
            println!("converted {} ({source:?}) → {}", input.display(), output.display());
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
            if batch == 0 {
                bail!("--batch must be at least 1");
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
            println!("encode: {:.2} s ({:.2} frames/s)  runs {:?}", r.encode_seconds, r.encode_fps(), r.all_encode);
            println!("decode: {:.2} s ({:.2} frames/s)  runs {:?}", r.decode_seconds, r.decode_fps(), r.all_decode);
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
