//! The one sampling loop: KV-cached, driven by a [`Schedule`], filtering and sampling all positions of a block
//! at once (in place on flex; after one read of the block's logits on the GPU backends, see `cpu::sample`).

use burn::prelude::*;
use burn::tensor::activation::softmax;

use nbp_core::filter::SamplingFilter;
use nbp_core::progress::Progress;
use nbp_core::{Error, Result};

use crate::gpt::Gpt;
use crate::schedule::{Schedule, Slot};

/// How tokens are drawn from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleOptions {
    pub filter: SamplingFilter,
    /// Take the most likely token instead of sampling.
    pub greedy: bool,
    /// Classifier-free guidance (conditional models only).
    pub cfg: Option<Guidance>,
}

/// Classifier-free guidance: logits `(1 + s)·ℓ_cond − s·ℓ_uncond`, where the unconditional stream replaces the
/// condition tokens by the model's null-condition embedding and has its own KV cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Guidance {
    /// Guidance scale `s`.
    pub scale: f64,
    /// Let the scale grow linearly with the step index (`s·n`, 0 at the first step), as the official
    /// `scale_cfg` option; otherwise constant.
    pub growing: bool,
}

/// The most memory the key/value caches of one [`sample`] call may take (keys and values of every layer, in f32,
/// for both streams of guidance): beyond it the allocation would fail on any machine this runs on.
const MAX_CACHE_BYTES: u128 = 1_000_000_000_000;

/// Generates `schedule.generated` tokens for `batch` sequences and returns their ids `[batch, generated]` in the
/// generator vocabulary. `on_logits` receives, per step, the logits the tokens were drawn from (after the
/// temperature, before filtering), `[batch · predict, V]`.
pub fn sample<B: Backend>(
    model: &Gpt<B>,
    schedule: &Schedule,
    batch: usize,
    options: &SampleOptions,
    progress: &dyn Progress,
    on_logits: &mut dyn FnMut(&Tensor<B, 2>),
) -> Result<Tensor<B, 2, Int>> {
    let device = model.devices().into_iter().next().unwrap_or_default();
    if schedule.total_len > model.config().block_size {
        let (needed, held) = (schedule.total_len, model.config().block_size);
        return Err(Error::invalid(format!(
            "generation needs {needed} positions but the model has {held}: use a latent grid of at least {} fewer \
             tokens (fewer latent frames, that is fewer frames)",
            needed - held
        )));
    }
    let vocab = model.config().vocab_size;
    // On the GPU backends the cache holds whole key buckets, so that every step attends over a multiple of
    // KEY_BUCKET keys.
    let capacity = key_columns::<B>(schedule.total_len);
    let streams = if options.cfg.is_some_and(|g| g.scale != 0.0) { 2 } else { 1 };
    let bytes = [batch, capacity, model.config().n_embd, model.config().n_layer, 2 * 4 * streams]
        .iter()
        .try_fold(1u128, |n, &f| n.checked_mul(f as u128));
    if bytes.is_none_or(|b| b > MAX_CACHE_BYTES) {
        return Err(Error::invalid(format!(
            "{batch} sequences of {capacity} positions need {} of key/value cache (at most {} GB): generate fewer \
             sequences at a time (--num-samples of sample; --batch of bench sample)",
            bytes.map_or("more than 2^128 bytes".into(), |b| format!("{:.0} GB", b as f64 / 1e9)),
            MAX_CACHE_BYTES / 1_000_000_000
        )));
    }
    // With the caches: one step's activations (the MLP's 4d-wide rows) and logits, each with a couple of
    // temporaries (the filter's sorted copy and probabilities).
    let widest = schedule.steps.iter().map(|s| s.chunk.len()).max().unwrap_or(1);
    let predict = schedule.steps.iter().map(|s| s.predict).max().unwrap_or(1);
    let step = [
        nbp_core::system::product(&[batch, widest, 4 * model.config().n_embd, 4 * 3 * streams]),
        nbp_core::system::product(&[batch, predict, vocab, 4 * 3 * streams]),
    ];
    let total = step.iter().try_fold(bytes.unwrap_or(0), |sum, b| b.and_then(|b| sum.checked_add(b)));
    nbp_core::system::check_memory(
        &format!("sampling {batch} sequences of {capacity} positions (key/value caches and one step's logits)"),
        total,
        "generate fewer sequences at a time (--num-samples of sample; --batch of bench sample)",
    )?;
    let mut caches = model.new_caches(batch, capacity, &device);
    let cond_len = schedule.mask.prefix();
    let mut guided = match options.cfg {
        Some(g) if g.scale != 0.0 => {
            if cond_len == 0 {
                return Err(Error::invalid(
                    "classifier-free guidance (--cfg-scale) needs a conditional model: this one is unconditional, \
                     so there is no condition to guide by (leave out --cfg-scale)",
                ));
            }
            if model.config().cond_tokens != cond_len {
                return Err(Error::invalid(format!(
                    "classifier-free guidance needs a conditional model whose null embedding has one row per \
                     condition token ({cond_len} condition tokens, {} null-embedding rows)",
                    model.config().cond_tokens
                )));
            }
            Some((g, model.new_caches(batch, capacity, &device)))
        }
        _ => None,
    };
    let mut generated = Tensor::<B, 2, Int>::zeros([batch, schedule.generated.max(1)], &device);
    let mut done = 0;
    progress.start("sampling", schedule.len());
    for (step_index, step) in schedule.steps.iter().enumerate() {
        let ids = chunk_ids(&step.chunk, &generated, batch, &device);
        let len = step.chunk.len();
        let start = caches[0].len();
        let mask =
            schedule.mask.padded_tensor::<B>(start..start + len, start + len, key_columns::<B>(start + len), &device);
        let x = model.embed(ids.clone(), None, start)?;
        let logits = model.forward_last(x, mask.clone(), Some(&mut caches), step.predict);
        let rows = |l: Tensor<B, 3>| l.reshape([batch * step.predict, vocab]);
        let mut last = rows(logits);
        if let Some((g, ucaches)) = guided.as_mut() {
            // The unconditional stream: the null embedding takes the place of the condition tokens.
            let x = if start == 0 {
                let null = model.uncond_embedding.val().unsqueeze_dim::<3>(0).repeat_dim(0, batch);
                model.embed(ids.slice([0..batch, cond_len..len]), Some(null), 0)?
            } else {
                model.embed(ids, None, start)?
            };
            let uncond = rows(model.forward_last(x, mask, Some(ucaches), step.predict));
            let s = if g.growing { g.scale * step_index as f64 } else { g.scale };
            last = last.mul_scalar(1.0 + s) - uncond.mul_scalar(s);
        }
        // The ids that may not be drawn (condition ids, special tokens) get no probability.
        let from = schedule.sampled_from.min(vocab);
        let last = if from > 0 { last.slice_fill([0..batch * step.predict, 0..from], f32::NEG_INFINITY) } else { last };
        let last = if options.filter.temperature != 1.0 { last.div_scalar(options.filter.temperature) } else { last };
        on_logits(&last);
        let next = if options.greedy {
            last.argmax(1)
        } else {
            let filter = SamplingFilter { temperature: 1.0, ..options.filter };
            match crate::cpu::sample(&last, &filter) {
                Some(ids) => ids,
                None => softmax(filter.apply(last), 1).categorical(1),
            }
        };
        let next = next.reshape([batch, step.predict]);
        generated = generated.slice_assign([0..batch, done..done + step.predict], next);
        done += step.predict;
        progress.advance(1);
    }
    progress.finish();
    Ok(generated.slice([0..batch, 0..schedule.generated]))
}

/// Key columns of a step's attention over `kv_len` cached tokens. On the GPU backends, `kv_len` rounded up to a
/// multiple of [`KEY_BUCKET`] (the extra columns are masked out): CubeCL compiles, and on CUDA tunes, the
/// attention's kernels anew for each key length, which made every step of a first run compile kernels (minutes
/// for `official-base` on an H100). On flex, whose kernels take any length, exactly `kv_len`.
fn key_columns<B: Backend>(kv_len: usize) -> usize {
    if nbp_core::flex::is_flex::<B>() { kv_len } else { kv_len.next_multiple_of(KEY_BUCKET) }
}

/// Key lengths of GPU sampling steps, and the GPU caches' capacity, are multiples of this.
pub const KEY_BUCKET: usize = 256;

/// Ids `[batch, len]` of a chunk: runs of known ids and of already generated columns, concatenated.
fn chunk_ids<B: Backend>(
    chunk: &[Slot],
    generated: &Tensor<B, 2, Int>,
    batch: usize,
    device: &B::Device,
) -> Tensor<B, 2, Int> {
    let mut parts: Vec<Tensor<B, 2, Int>> = vec![];
    let mut i = 0;
    while i < chunk.len() {
        match chunk[i] {
            Slot::Known(_) => {
                let run: Vec<i64> =
                    chunk[i..].iter().map_while(|s| if let Slot::Known(v) = s { Some(*v) } else { None }).collect();
                i += run.len();
                let n = run.len();
                let data: Vec<i64> = (0..batch).flat_map(|_| run.iter().copied()).collect();
                parts.push(Tensor::from_data(TensorData::new(data, [batch, n]), device));
            }
            Slot::Generated(first) => {
                let n = chunk[i..].iter().enumerate().take_while(|(k, s)| **s == Slot::Generated(first + k)).count();
                i += n;
                parts.push(generated.clone().slice([0..batch, first..first + n]));
            }
        }
    }
    Tensor::cat(parts, 1)
}
