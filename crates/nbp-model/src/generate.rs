//! From a request (condition, prefix, sizes) to video token grids: vocabulary, block layout, schedule, sampling,
//! and the mapping back to tokenizer codes. Used by `nbp-cli sample` and `nbp-cli bench sample`.

use std::time::Instant;

use burn::prelude::*;

use nbp_core::blocks::{BlockLayout, BlockShape, LatentGrid};
use nbp_core::progress::Progress;
use nbp_core::vocab::{Conditioning, Vocabulary};
use nbp_core::{Error, Result};

use crate::checkpoint::GeneratorSettings;
use crate::config::GptConfig;
use crate::gpt::Gpt;
use crate::sampling::{SampleOptions, sample};
use crate::schedule::Schedule;

/// The generation schemes of the paper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Next-block prediction: one block per step.
    Nbp,
    /// Next-token prediction: one token per step (block size 1).
    Ntp,
    /// Official UCF start: NTP for the first block, then the middle-bos block, then NBP.
    Hybrid,
}

impl Mode {
    /// The mode a model was trained for.
    pub fn of(settings: &GeneratorSettings) -> Self {
        if settings.hybrid {
            Self::Hybrid
        } else if settings.block == 1 {
            Self::Ntp
        } else {
            Self::Nbp
        }
    }
}

/// The condition of a generation, as unshifted ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    None,
    /// Condition token ids (e.g. the 8 LLaMA-2 ids of a UCF class name).
    Tokens(Vec<i64>),
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct Request {
    pub condition: Condition,
    /// Known video codes in raster order (the first latent frames for frame prediction), one list for all samples.
    pub prefix: Vec<i64>,
    pub grid: LatentGrid,
    pub block_shape: BlockShape,
    pub samples: usize,
    pub options: SampleOptions,
    /// Parity with the official sampler: draw from the whole vocabulary and clamp an id that is not a video code
    /// (a condition id, BOV or middle-bos) to one, reference §7.13. By default only video codes are drawn.
    pub clamp_non_video: bool,
}

/// Generated token grids and how long it took.
#[derive(Debug, Clone)]
pub struct Generated {
    /// Video codes `[samples][T·H·W]` in raster order (prefix included).
    pub codes: Vec<Vec<i64>>,
    /// Forward calls.
    pub steps: usize,
    /// Tokens generated per sample.
    pub new_tokens: usize,
    /// Generated ids that were not video codes and were clamped (as the official sampler does; with
    /// [`Request::clamp_non_video`] only).
    pub clamped: usize,
    pub seconds: f64,
}

/// The vocabulary layout of a model.
pub fn vocabulary(settings: &GeneratorSettings, vocab_size: usize) -> Result<Vocabulary> {
    let conditioning = if settings.unconditional {
        Conditioning::Unconditional
    } else {
        Conditioning::Text { vocab: settings.cond_vocab, tokens: settings.cond_tokens }
    };
    let probe = Vocabulary::new(1, conditioning, settings.hybrid, settings.block)?;
    let codebook = vocab_size.checked_sub(probe.video_offset()).filter(|&c| c > 0).ok_or_else(|| {
        Error::invalid(format!(
            "a vocabulary of {vocab_size} ids leaves no video codes after the ids of {settings} (BOV, middle-bos \
             and condition ids come first)"
        ))
    })?;
    Vocabulary::new(codebook, conditioning, settings.hybrid, settings.block)
}

/// Which part of a `--prefix-tokens` file to continue: one clip of it (`--prefix-clip`) and its first latent
/// frames (`--prefix-frames`; all of them when `None`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixPart {
    pub clip: usize,
    pub frames: Option<usize>,
}

/// Reads `--prefix-tokens`: token ids shaped `[T', H, W]` (one clip) or `[N, T', H, W]` (what `--save-tokens`
/// writes), of which `part` picks clip and latent frames: at least one, fewer than the `T` of `grid`; every id
/// must be a code of a codebook of `codebook` entries. Returns the ids in raster order; errors name the file.
pub fn read_prefix_tokens(
    path: &std::path::Path,
    grid: &LatentGrid,
    codebook: usize,
    part: PrefixPart,
) -> Result<Vec<i64>> {
    let arr = nbp_core::npy::read_npy(path)?;
    let (clips, frames) = match arr.shape.as_slice() {
        [t, h, w] if (*h, *w) == (grid.h, grid.w) && *t > 0 => (1, *t),
        [n, t, h, w] if (*h, *w) == (grid.h, grid.w) && *t > 0 && *n > 0 => (*n, *t),
        s => {
            return Err(Error::file(
                path,
                format!(
                    "token ids shaped {s:?}: --prefix-tokens takes whole latent frames of this grid, shaped \
                     [T', {h}, {w}] (one clip) or [N, T', {h}, {w}] (N clips, as --save-tokens writes them)",
                    h = grid.h,
                    w = grid.w,
                ),
            ));
        }
    };
    if part.clip >= clips {
        return Err(Error::file(
            path,
            format!("holds {clips} clip{}: --prefix-clip takes 0 to {}", if clips == 1 { "" } else { "s" }, clips - 1),
        ));
    }
    let keep = part.frames.unwrap_or(frames);
    if keep == 0 || keep > frames {
        return Err(Error::file(path, format!("holds {frames} latent frames: --prefix-frames takes 1 to {frames}")));
    }
    if keep >= grid.t {
        return Err(Error::file(
            path,
            format!(
                "{keep} latent frames leave nothing to generate in a latent grid of {} frames: keep fewer with \
                 --prefix-frames (1 to {}; a larger --latent-grid needs a model with more positions)",
                grid.t,
                grid.t - 1
            ),
        ));
    }
    let ids = arr.to_i64().map_err(|e| Error::file(path, e.to_string()))?;
    let per_frame = grid.h * grid.w;
    let first = part.clip * frames * per_frame;
    let ids = ids[first..first + keep * per_frame].to_vec();
    check_prefix_codes(&ids, codebook).map_err(|e| Error::file(path, e.to_string()))?;
    Ok(ids)
}

/// Checks that every prefix token is a video code of a codebook of `codebook` entries.
pub fn check_prefix_codes(prefix: &[i64], codebook: usize) -> Result<()> {
    match prefix.iter().find(|&&c| c < 0 || c as usize >= codebook) {
        Some(bad) => Err(Error::invalid(format!(
            "prefix token {bad} is not a code of the generator's codebook (0 to {}; was the prefix made with the \
             tokenizer this generator was trained with?)",
            codebook.saturating_sub(1)
        ))),
        None => Ok(()),
    }
}

/// The LLaMA-2 id that pads text conditions (`</s>`).
const TEXT_PAD_ID: i64 = 2;

/// Which condition tokens `condition` (unshifted ids) the other tokens may attend to, as the official masks
/// decide (reference §2.7): a text condition (several tokens) of a model without the hybrid start hides its
/// padding; the hybrid start's pad detection never fires (its ids are shifted by the block size, not by 1), so
/// that model, trained so, sees every condition token; a class label is always seen.
pub fn condition_visible(settings: &GeneratorSettings, condition: &[i64]) -> Vec<bool> {
    let text = settings.cond_tokens > 1 && !settings.hybrid;
    condition.iter().map(|&c| !(text && c == TEXT_PAD_ID)).collect()
}

/// A checked request laid out for sampling: what [`generate`] feeds the model and how it maps the sampled ids
/// back to tokenizer codes.
#[derive(Debug, Clone)]
pub struct Plan {
    pub vocab: Vocabulary,
    pub layout: BlockLayout,
    /// The prefix codes in block order.
    pub prefix_blocks: Vec<i64>,
    /// The steps, the mask rule (with the condition tokens it hides) and the ids sampling may draw.
    pub schedule: Schedule,
}

/// Checks `request` against the model (`config`, `settings`) and lays it out: the vocabulary, the block layout of
/// the latent grid, the prefix in block order and the schedule of steps. Errors name what does not fit.
pub fn plan(config: &GptConfig, settings: &GeneratorSettings, request: &Request) -> Result<Plan> {
    let vocab = vocabulary(settings, config.vocab_size)?;
    if request.block_shape.size() != settings.block {
        return Err(Error::invalid(format!(
            "block shape {} has {} tokens but the model predicts blocks of {}",
            request.block_shape,
            request.block_shape.size(),
            settings.block
        )));
    }
    // A grid beyond the model's positions is refused before its layout (a permutation of its tokens) is built.
    let [t, h, w] = [request.grid.t, request.grid.h, request.grid.w].map(|n| n as u128);
    if t * h * w > config.block_size as u128 {
        return Err(Error::invalid(format!(
            "a latent grid of {}x{}x{} ({} tokens) is larger than the model's {} positions: ask for fewer latent \
             frames or smaller ones (`sample --latent-grid`; `eval-frame-prediction --frames` and --resolution; \
             the model's own grid is the default)",
            request.grid.t,
            request.grid.h,
            request.grid.w,
            t * h * w,
            config.block_size
        )));
    }
    let layout = BlockLayout::new(request.grid, request.block_shape)?;
    let total = request.grid.len();
    if request.prefix.len() >= total {
        return Err(Error::invalid(format!(
            "the prefix has {} tokens but the latent grid only {total}: nothing left to generate",
            request.prefix.len()
        )));
    }
    check_prefix_codes(&request.prefix, vocab.codebook)?;
    if !request.prefix.len().is_multiple_of(layout.block_size()) {
        return Err(Error::invalid(format!(
            "the prefix ({} tokens) must be a whole number of blocks of {}",
            request.prefix.len(),
            layout.block_size()
        )));
    }
    // The prefix is given in raster order and the model reads blocks: the first prefix positions in block order
    // must be exactly the raster positions 0..P (true for whole latent frames when blocks do not span more frames
    // than the prefix has).
    let p = request.prefix.len();
    let ends_on_blocks = |n: usize| {
        let mut first: Vec<usize> = layout.order()[..n].to_vec();
        first.sort_unstable();
        first.iter().enumerate().all(|(i, &r)| i == r)
    };
    if !ends_on_blocks(p) {
        // The whole latent frames that would do: those the blocks do not cross.
        let frame = request.grid.h * request.grid.w;
        let good: Vec<String> =
            (1..request.grid.t).filter(|&k| ends_on_blocks(k * frame)).map(|k| k.to_string()).collect();
        return Err(Error::invalid(format!(
            "a prefix of {p} tokens ({}) does not end on a block boundary of block shape {}: give \
             whole latent frames that the blocks do not cross ({} of the {}; with a tokenizer of 1 + 4n frames, \
             n latent frames are 1 + 4(n - 1) frames)",
            match (p % frame, p / frame) {
                (0, 1) => "1 latent frame".to_string(),
                (0, k) => format!("{k} latent frames"),
                _ => "not whole latent frames".to_string(),
            },
            request.block_shape,
            if good.is_empty() { "none".to_string() } else { good.join(" or ") },
            request.grid.t
        )));
    }
    let mut padded = request.prefix.clone();
    padded.resize(total, 0);
    let prefix_blocks: Vec<i64> = layout.to_blocks(&padded)[..p].to_vec();
    let condition: Vec<i64> = match &request.condition {
        Condition::None => vec![],
        Condition::Tokens(t) => {
            if settings.unconditional {
                return Err(Error::invalid("this model is unconditional: it takes no class, label or text"));
            }
            if t.len() != settings.cond_tokens {
                return Err(Error::invalid(format!(
                    "the model expects {} condition tokens, got {}",
                    settings.cond_tokens,
                    t.len()
                )));
            }
            if let Some(bad) = t.iter().find(|&&c| c < 0 || c as usize >= vocab.conditioning.vocab()) {
                return Err(Error::invalid(format!(
                    "condition id {bad} is not in the model's condition vocabulary (ids 0 to {})",
                    vocab.conditioning.vocab().saturating_sub(1)
                )));
            }
            t.iter().map(|&c| c + vocab.condition_offset() as i64).collect()
        }
    };
    if !settings.unconditional && condition.is_empty() {
        return Err(Error::invalid("this model is conditional: give a class (--class) or condition ids"));
    }
    let prefix_ids: Vec<i64> = prefix_blocks.iter().map(|&c| vocab.video_id(c as usize) as i64).collect();
    let new_tokens = total - request.prefix.len();
    let mut schedule = match Mode::of(settings) {
        Mode::Hybrid => Schedule::hybrid(&condition, &vocab, &prefix_ids, new_tokens),
        Mode::Nbp | Mode::Ntp => {
            let bov = vocab.bov().map(|b| b as i64);
            if prefix_ids.is_empty() && bov.is_none() {
                return Err(Error::invalid(
                    "an unconditional model continues given frames: pass --condition-video or --prefix-tokens",
                ));
            }
            // A conditional model was trained on `[c | BOV×L | z]`: its BOV block comes before a prefix as well.
            Schedule::blocks(&condition, bov, &prefix_ids, new_tokens, settings.block)
        }
    };
    if let Condition::Tokens(t) = &request.condition {
        schedule.mask.condition_visible = condition_visible(settings, t);
    }
    if !request.clamp_non_video {
        schedule.sampled_from = vocab.video_offset();
    }
    Ok(Plan { vocab, layout, prefix_blocks, schedule })
}

/// Runs a generation.
pub fn generate<B: Backend>(
    model: &Gpt<B>,
    settings: &GeneratorSettings,
    request: &Request,
    progress: &dyn Progress,
) -> Result<Generated> {
    let Plan { vocab, layout, prefix_blocks, schedule } = plan(model.config(), settings, request)?;
    let new_tokens = schedule.generated;
    let t0 = Instant::now();
    let ids = sample(model, &schedule, request.samples, &request.options, progress, &mut |_| {})?;
    let ids = ids.into_data().convert::<i64>().into_vec::<i64>().map_err(|e| Error::invalid(format!("{e:?}")))?;
    let seconds = t0.elapsed().as_secs_f64();
    let mut clamped = 0;
    let codes = ids
        .chunks_exact(new_tokens)
        .map(|row| {
            let mut blocks = prefix_blocks.clone();
            blocks.extend(row.iter().map(|&id| {
                let (c, ok) = vocab.code_of(id.max(0) as usize);
                clamped += !ok as usize;
                c as i64
            }));
            layout.to_raster(&blocks)
        })
        .collect();
    Ok(Generated { codes, steps: schedule.len(), new_tokens, clamped, seconds })
}
