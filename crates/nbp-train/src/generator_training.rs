//! Generator training on Burn's Learner (reference §2.6–2.10): N-to-N cross-entropy over token sequences read
//! from a [`TokenCache`], the official AdamW recipe ([`GroupedAdamW`]), warm-up + cosine ([`WarmupCosine`]),
//! gradient accumulation, condition dropout for classifier-free guidance and token corruption (`pkeep`).
//!
//! The run is counted in optimiser *steps*. Data come from a deterministic stream (clip order and corruption are
//! functions of the seed and the sample position), checkpoints are taken every `checkpoint_every` steps and on
//! Ctrl-C, and a resumed run starts exactly where the checkpoint left off: same data, same optimiser state, same
//! learning rate (see [`StepStrategy`]).

use std::path::PathBuf;
use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoaderBuilder, Progress};
use burn::data::dataset::Dataset;
use burn::module::{AutodiffModule, Param};
use burn::optim::GradientsAccumulator;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use burn_train::metric::{ItemLazy, LearningRateMetric};
use burn_train::{
    EventProcessorTraining, InferenceStep, Interrupter, Learner, LearnerEvent, LearningComponentsTypes, LearningResult,
    SupervisedLearningStrategy, SupervisedTraining, SupervisedTrainingEventProcessor, TrainLoader, TrainOutput,
    TrainStep, TrainingComponents, TrainingItem, TrainingModel, TrainingStrategy, ValidLoader,
};
use serde::{Deserialize, Serialize};

use nbp_core::blocks::{BlockLayout, BlockShape, LatentGrid};
use nbp_core::mask::MaskSpec;
use nbp_core::vocab::{Conditioning, Vocabulary};
use nbp_core::{Error, Result};
use nbp_model::checkpoint::{GeneratorInfo, GeneratorSettings, save_generator_with_info};
use nbp_model::config::GptConfig;
use nbp_model::gpt::Gpt;
use nbp_model::training::{chunked_loss, training_hidden, training_mask, training_sequence};

use crate::metrics::{ScalarMetric, Stats};
use crate::optim::{GroupedAdamW, OptimizerConfig, decay_linear_weights};
use crate::position_init::grid_position_embedding;
use crate::run::{self, LossHistory, RunDir, SplitMix};
use crate::schedule::{ScheduleConfig, WarmupCosine};
use crate::token_cache::TokenCache;

/// Everything a generator run needs; read from TOML (`nbp-cli train --config run.toml`), every field can be
/// overridden on the command line. Defaults are the official recipe where one exists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GeneratorTrainConfig {
    /// Token cache written by `nbp-cli tokenize-dataset`.
    pub tokens: PathBuf,
    /// Run directory (checkpoints, logs, the effective config, the final model).
    pub out: PathBuf,
    /// Model preset (`tiny`, `small`, `official-base`, `official-xl`, `official-3b`).
    pub preset: String,
    /// Overrides of the preset's depth, heads and width.
    pub n_layer: Option<usize>,
    pub n_head: Option<usize>,
    pub n_embd: Option<usize>,
    /// Dropout on embeddings and residual branches.
    pub dropout: f64,
    /// Block shape `TxHxW` in latent tokens, or `row` (one latent row, `1×1×W`: the paper's default).
    pub block_shape: String,
    /// `nbp` (one block per step), `ntp` (block size 1) or `hybrid` (NTP for the first block, then NBP).
    pub mode: String,
    /// `label` (one condition token per class), `text` (UCF-101 class names as the 8 LLaMA-2 ids the official
    /// UCF generator takes; hybrid mode, as the official UCF recipe) or `none` (unconditional, e.g. frame
    /// prediction).
    pub condition: String,
    /// Probability per batch of replacing the condition by the null embedding (classifier-free guidance).
    pub p_drop_cond: f64,
    /// Probability of keeping each input video token (the rest are replaced by random codes); 1 disables.
    pub pkeep: f64,
    /// Initial position embeddings: `zeros` (the official start) or `grid` (sinusoids of each video token's
    /// latent frame, row and column; see [`crate::position_init`]).
    pub pos_init: String,
    pub batch_size: usize,
    /// Micro-batches per optimiser step (the loss is averaged over them).
    pub grad_accumulation: usize,
    /// Optimiser steps of the run (also the length of the cosine).
    pub steps: usize,
    /// Steps between checkpoints (and validation passes).
    pub checkpoint_every: usize,
    /// Clips held out from the end of the cache for validation (rounded up to whole videos when the cache holds
    /// several clips per video).
    pub valid_clips: usize,
    /// Positions per chunk of the output head in the loss (bounds the logits held in memory).
    pub loss_chunk: usize,
    pub seed: u64,
    pub optimizer: OptimizerConfig,
    pub schedule: ScheduleConfig,
}

impl Default for GeneratorTrainConfig {
    fn default() -> Self {
        Self {
            tokens: PathBuf::from("tokens.safetensors"),
            out: PathBuf::from("runs/generator"),
            preset: "small".into(),
            n_layer: None,
            n_head: None,
            n_embd: None,
            dropout: 0.1,
            block_shape: "row".into(),
            mode: "nbp".into(),
            condition: "label".into(),
            p_drop_cond: 0.0,
            pkeep: 1.0,
            pos_init: "zeros".into(),
            batch_size: 8,
            grad_accumulation: 1,
            steps: 1000,
            checkpoint_every: 100,
            valid_clips: 16,
            loss_chunk: 256,
            seed: 1234,
            optimizer: OptimizerConfig::default(),
            schedule: ScheduleConfig { lr: 6e-4, warmup_steps: 100, ..Default::default() },
        }
    }
}

impl GeneratorTrainConfig {
    /// Checks values that the run would otherwise trip over late.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.batch_size == 0 || self.grad_accumulation == 0 || self.steps == 0 || self.checkpoint_every == 0 {
            return bad("batch_size, grad_accumulation, steps and checkpoint_every must be at least 1".into());
        }
        // The order of the clips a run reads is drawn up front, 4 bytes a clip.
        let clips = [self.steps, self.batch_size, self.grad_accumulation]
            .iter()
            .try_fold(1u64, |n, &f| n.checked_mul(f as u64));
        if clips.is_none_or(|n| n > 1 << 30) {
            return bad(format!(
                "{} steps of {} x {} clips read more than 2^30 clips in all: train fewer steps or smaller batches",
                self.steps, self.batch_size, self.grad_accumulation
            ));
        }
        // At 1 every condition is dropped: the model never sees one, and guidance has no conditional stream.
        if !(0.0..1.0).contains(&self.p_drop_cond) || !(0.0..=1.0).contains(&self.pkeep) || self.pkeep == 0.0 {
            return bad(format!(
                "p_drop_cond must be in [0, 1) (at 1 no condition is ever seen) and pkeep in (0, 1], got {} and {}",
                self.p_drop_cond, self.pkeep
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout must be in [0, 1), got {}", self.dropout));
        }
        if !["nbp", "ntp", "hybrid"].contains(&self.mode.as_str()) {
            return bad(format!("unknown mode '{}' (use nbp, ntp or hybrid)", self.mode));
        }
        if !["label", "text", "none"].contains(&self.condition.as_str()) {
            return bad(format!("unknown condition '{}' (use label, text or none)", self.condition));
        }
        if self.condition == "text" && self.mode != "hybrid" {
            return bad(format!(
                "condition text trains the official UCF layout, with the hybrid start (--mode hybrid), not mode {}: \
                 without it the official masks hide each text's padding, which differs between classes (for \
                 next-token prediction, --mode hybrid --block-shape 1x1x1 is NTP with blocks of one token)",
                self.mode
            ));
        }
        if !["zeros", "grid"].contains(&self.pos_init.as_str()) {
            return bad(format!("unknown pos_init '{}' (use zeros or grid)", self.pos_init));
        }
        if self.mode == "hybrid" && self.condition == "none" {
            return bad("the hybrid start needs a condition (it begins with a begin-of-video token after it)".into());
        }
        if self.p_drop_cond > 0.0 && self.condition == "none" {
            return bad("p_drop_cond needs a condition to drop".into());
        }
        if self.mode == "ntp" && !["row", "1x1x1"].contains(&self.block_shape.trim()) {
            return bad(format!(
                "mode ntp predicts one token per step (block shape 1x1x1), but block_shape is {}: leave out the block \
                 shape, or use --mode nbp",
                self.block_shape
            ));
        }
        for (name, v) in [("n_layer", self.n_layer), ("n_head", self.n_head), ("n_embd", self.n_embd)] {
            if v == Some(0) {
                return bad(format!("{name} must be at least 1 (leave it out to take the preset's)"));
            }
        }
        self.schedule.validate()?;
        self.optimizer.validate()
    }

    /// Settings that are valid but do not do what they seem to (a warm-up that never ends).
    pub fn warnings(&self) -> Vec<String> {
        self.schedule.warning(self.steps).into_iter().collect()
    }

    /// The block shape for latent grid `grid` (`row` = `1×1×W`; `ntp` mode forces `1×1×1`).
    pub fn block_shape_for(&self, grid: LatentGrid) -> Result<BlockShape> {
        if self.mode == "ntp" {
            return Ok(BlockShape::new(1, 1, 1));
        }
        if self.block_shape == "row" { Ok(BlockShape::new(1, 1, grid.w)) } else { BlockShape::parse(&self.block_shape) }
    }
}

/// The model, vocabulary and layout a run trains, derived from the config and the token cache.
#[derive(Debug, Clone)]
pub struct GeneratorSetup {
    pub gpt: GptConfig,
    pub settings: GeneratorSettings,
    pub vocab: Vocabulary,
    pub layout: BlockLayout,
    pub grid: LatentGrid,
    /// The condition ids (unshifted) of each class of the token cache: its label, or its UCF-101 text ids.
    pub conditions: Vec<Vec<i64>>,
}

/// Derives the model and its sequence layout.
pub fn setup(config: &GeneratorTrainConfig, cache: &TokenCache) -> Result<GeneratorSetup> {
    config.validate()?;
    let [t, h, w] = cache.info.grid;
    let grid = LatentGrid::new(t, h, w);
    let shape = config.block_shape_for(grid)?;
    let layout = BlockLayout::new(grid, shape)?;
    let classes = cache.info.classes.len().max(1);
    let conditioning = match config.condition.as_str() {
        "label" => Conditioning::Text { vocab: classes, tokens: 1 },
        // The LLaMA-2 vocabulary, as the official UCF generator (reference §2.4).
        "text" => Conditioning::Text { vocab: 32000, tokens: 8 },
        _ => Conditioning::Unconditional,
    };
    let hybrid = config.mode == "hybrid";
    let vocab = Vocabulary::new(cache.info.codebook, conditioning, hybrid, shape.size())?;
    let settings = GeneratorSettings {
        block: shape.size(),
        hybrid,
        unconditional: conditioning == Conditioning::Unconditional,
        cond_tokens: conditioning.tokens(),
        cond_vocab: conditioning.vocab(),
    };
    let conditions = if settings.unconditional {
        vec![]
    } else {
        let names = &cache.info.classes;
        (0..classes)
            .map(|i| nbp_model::classes::class_condition(&settings, names, i))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| Error::file(&config.tokens, format!("{e} (condition label takes any class names)")))?
    };
    let probe = training_sequence(&vocab, &vec![0; conditioning.tokens()], &vec![0; grid.len()])?;
    let mut gpt = GptConfig::preset(&config.preset, vocab.size(), conditioning.tokens())?.with_dropout(config.dropout);
    if let Some(v) = config.n_layer {
        gpt.n_layer = v;
    }
    if let Some(v) = config.n_head {
        gpt.n_head = v;
    }
    if let Some(v) = config.n_embd {
        gpt.n_embd = v;
    }
    if !config.preset.starts_with("official") {
        // Small models get the positions they use: the training input plus the last block, which sampling
        // feeds to the cache as well.
        gpt.block_size = probe.input.len() + shape.size();
    }
    gpt.validate()?;
    Ok(GeneratorSetup { gpt, settings, vocab, layout, grid, conditions })
}

/// One training sequence.
#[derive(Debug, Clone)]
pub struct TokenItem {
    pub input: Vec<i64>,
    pub targets: Vec<i64>,
    /// Replace the condition by the null embedding (decided per batch).
    pub drop_condition: bool,
}

/// The deterministic sample stream of a run: sample `k` is clip `order[k]` of the cache, with token corruption and
/// condition dropout drawn from `(seed, k)`.
pub struct TokenStream {
    cache: Arc<TokenCache>,
    order: Vec<u32>,
    layout: BlockLayout,
    vocab: Vocabulary,
    /// Condition ids of each class (empty for an unconditional model).
    conditions: Arc<Vec<Vec<i64>>>,
    pkeep: f64,
    p_drop_cond: f64,
    batch: usize,
    seed: u64,
}

impl TokenStream {
    /// `len` samples drawn from `clips` (reshuffled every pass when `shuffle`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cache: Arc<TokenCache>,
        clips: &[usize],
        len: usize,
        shuffle: bool,
        setup: &GeneratorSetup,
        config: &GeneratorTrainConfig,
        corrupt: bool,
    ) -> Self {
        let mut order = Vec::with_capacity(len);
        let mut pass = 0u64;
        while order.len() < len {
            let mut perm: Vec<u32> = clips.iter().map(|&c| c as u32).collect();
            if shuffle {
                SplitMix::new(config.seed ^ 0x5EED_0000 ^ pass).shuffle(&mut perm);
            }
            order.extend(perm.into_iter().take(len - order.len()));
            pass += 1;
        }
        Self {
            cache,
            order,
            layout: setup.layout.clone(),
            vocab: setup.vocab,
            conditions: Arc::new(setup.conditions.clone()),
            pkeep: if corrupt { config.pkeep } else { 1.0 },
            p_drop_cond: if corrupt { config.p_drop_cond } else { 0.0 },
            batch: config.batch_size,
            seed: config.seed,
        }
    }

    fn item(&self, k: usize) -> Result<TokenItem> {
        let clip = self.order[k] as usize;
        let raster: Vec<i64> = self.cache.clip(clip).iter().map(|&c| c as i64).collect();
        let codes = self.layout.to_blocks(&raster);
        let condition = self.conditions.get(self.cache.labels[clip] as usize).cloned().unwrap_or_default();
        let mut seq = training_sequence(&self.vocab, &condition, &codes)?;
        if self.pkeep < 1.0 {
            let mut rng = SplitMix::new(self.seed ^ 0xC0DE_0000_0000 ^ k as u64);
            for id in seq.input.iter_mut() {
                let (_, is_video) = self.vocab.code_of(*id as usize);
                if is_video && rng.unit() >= self.pkeep {
                    *id = self.vocab.video_id(rng.below(self.vocab.codebook)) as i64;
                }
            }
        }
        let batch_index = (k / self.batch) as u64;
        let drop_condition =
            self.p_drop_cond > 0.0 && SplitMix::new(self.seed ^ 0xD20B_0000 ^ batch_index).unit() < self.p_drop_cond;
        Ok(TokenItem { input: seq.input, targets: seq.targets, drop_condition })
    }
}

impl Dataset<TokenItem> for TokenStream {
    fn get(&self, index: usize) -> Option<TokenItem> {
        if index >= self.order.len() {
            return None;
        }
        Some(self.item(index).expect("token cache clips were validated when the run started"))
    }

    fn len(&self) -> usize {
        self.order.len()
    }
}

/// A batch of training sequences.
#[derive(Debug, Clone)]
pub struct TokenBatch<B: Backend> {
    /// `[batch, S]` input ids.
    pub input: Tensor<B, 2, Int>,
    /// `[batch, N]` target ids.
    pub targets: Tensor<B, 2, Int>,
    pub drop_condition: bool,
}

/// Stacks [`TokenItem`]s.
#[derive(Debug, Clone, Default)]
pub struct TokenBatcher;

impl<B: Backend> Batcher<B, TokenItem, TokenBatch<B>> for TokenBatcher {
    fn batch(&self, items: Vec<TokenItem>, device: &B::Device) -> TokenBatch<B> {
        let b = items.len();
        let (s, n) = (items[0].input.len(), items[0].targets.len());
        let input: Vec<i64> = items.iter().flat_map(|i| i.input.iter().copied()).collect();
        let targets: Vec<i64> = items.iter().flat_map(|i| i.targets.iter().copied()).collect();
        TokenBatch {
            input: Tensor::from_data(TensorData::new(input, [b, s]), device),
            targets: Tensor::from_data(TensorData::new(targets, [b, n]), device),
            drop_condition: items[0].drop_condition,
        }
    }
}

/// The GPT with what its training step needs.
#[derive(Module, Debug)]
pub struct GptTrainer<B: Backend> {
    pub gpt: Gpt<B>,
    #[module(skip)]
    mask: MaskSpec,
    #[module(skip)]
    cut: usize,
    #[module(skip)]
    chunk: usize,
    /// 1 / grad_accumulation: accumulated gradients are summed, the loss is averaged.
    #[module(skip)]
    loss_scale: f64,
}

impl<B: Backend> GptTrainer<B> {
    pub fn new(gpt: Gpt<B>, vocab: &Vocabulary, chunk: usize, grad_accumulation: usize) -> Self {
        let cut = vocab.conditioning.tokens();
        Self { gpt, mask: training_mask(vocab), cut, chunk, loss_scale: 1.0 / grad_accumulation as f64 }
    }

    /// Loss and accuracy counts of a batch.
    pub fn forward_stats(&self, batch: TokenBatch<B>) -> GenOutput<B> {
        let hidden = training_hidden(&self.gpt, batch.input, &self.mask, batch.drop_condition)
            .expect("training sequences fit the model (checked when the run started)");
        let out = chunked_loss(&self.gpt, hidden, batch.targets, self.cut, self.chunk, true);
        GenOutput { loss: out.loss, top1: out.top1, top5: out.top5, count: out.count }
    }
}

/// Output of a step: loss and accuracy counts, still on the device.
#[derive(Debug, Clone)]
pub struct GenOutput<B: Backend> {
    pub loss: Tensor<B, 1>,
    pub top1: Tensor<B, 1, Int>,
    pub top5: Tensor<B, 1, Int>,
    pub count: usize,
}

impl<B: Backend> ItemLazy for GenOutput<B> {
    type ItemSync = Stats;

    fn sync(self) -> Stats {
        let loss = self.loss.into_scalar().elem::<f64>();
        let top1 = self.top1.into_scalar().elem::<f64>() / self.count as f64;
        let top5 = self.top5.into_scalar().elem::<f64>() / self.count as f64;
        Stats::new(self.count).with("loss", loss).with("top1", top1).with("top5", top5)
    }
}

impl<B: AutodiffBackend> TrainStep for GptTrainer<B> {
    type Input = TokenBatch<B>;
    type Output = GenOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> TrainOutput<GenOutput<B>> {
        let out = self.forward_stats(batch);
        let grads = out.loss.clone().mul_scalar(self.loss_scale).backward();
        TrainOutput::new(self, grads, out)
    }
}

impl<B: Backend> InferenceStep for GptTrainer<B> {
    type Input = TokenBatch<B>;
    type Output = GenOutput<B>;

    fn step(&self, batch: TokenBatch<B>) -> GenOutput<B> {
        self.forward_stats(batch)
    }
}

/// The step-counted training loop plugged into the Learner (`TrainingStrategy::Custom`): it runs
/// `grad_accumulation` micro-batches per optimiser step, validates and checkpoints every `checkpoint_every`
/// steps, at the end, and when interrupted (Ctrl-C), and resumes at the step of the checkpoint it was given.
/// Checkpoints are numbered by the steps done, so the Learner's `checkpoint(n)` means "resume after step n".
pub struct StepStrategy<B: AutodiffBackend> {
    pub device: B::Device,
    pub steps: usize,
    pub checkpoint_every: usize,
    pub grad_accumulation: usize,
    pub batch_size: usize,
    /// Seed of the per-step random state (dropout): step `k` runs with `seed + k`, so a resumed run draws the
    /// same dropout masks as an uninterrupted one.
    pub seed: u64,
    /// Training loss of every micro-batch, by step (read after the run).
    pub losses: Arc<std::sync::Mutex<Vec<(usize, f64)>>>,
    /// Where `losses.csv` and `loss.svg` go, and the history before this session.
    pub dir: RunDir,
    pub history: Arc<std::sync::Mutex<LossHistory>>,
}

/// A step output that knows its loss, `[1]` on the device (read back in bulk for the run's loss log, so the
/// training step never waits for the device).
pub trait StepLoss<B: Backend> {
    fn loss(&self) -> Tensor<B, 1>;
    /// The predicted tokens the loss is the mean over (the weight of this batch in a mean over batches).
    fn tokens(&self) -> usize;
}

impl<B: Backend> StepLoss<B> for GenOutput<B> {
    fn loss(&self) -> Tensor<B, 1> {
        self.loss.clone()
    }
    fn tokens(&self) -> usize {
        self.count
    }
}

/// Reads `[1]`-shaped device values in one transfer.
fn read_all<B: Backend>(values: Vec<Tensor<B, 1>>) -> Vec<f64> {
    if values.is_empty() {
        return vec![];
    }
    Tensor::cat(values, 0).into_data().convert::<f64>().to_vec().expect("float data")
}

impl<LC> SupervisedLearningStrategy<LC> for StepStrategy<LC::Backend>
where
    LC: LearningComponentsTypes,
    <LC::TrainingModel as TrainStep>::Output: StepLoss<LC::Backend>,
    <LC::InferenceModel as InferenceStep>::Output: StepLoss<<LC::Backend as AutodiffBackend>::InnerBackend>,
{
    fn fit(
        &self,
        components: TrainingComponents<LC>,
        mut learner: Learner<LC>,
        dataloader_train: TrainLoader<LC>,
        dataloader_valid: ValidLoader<LC>,
        starting_epoch: usize,
    ) -> (TrainingModel<LC>, SupervisedTrainingEventProcessor<LC>) {
        let TrainingComponents { mut checkpointer, interrupter, mut event_processor, event_store, .. } = components;
        let start = starting_epoch - 1;
        learner.fork(&self.device);
        let per_step = self.batch_size * self.grad_accumulation;
        let train = dataloader_train.slice(start * per_step, dataloader_train.num_items()).to_device(&self.device);
        let valid = dataloader_valid.to_device(&self.device);
        let mut batches = train.iter();
        let epochs = self.steps.div_ceil(self.checkpoint_every);
        if start > 0 {
            // Burn's per-epoch logs (train/epoch-N, valid/epoch-N) go on at the epoch of the first step: its event
            // store counts epochs from 1 in every session until told where one ends. Reopening an epoch's logs
            // empties them, so those of an epoch the stop cut short are kept under another name first.
            let done = start / self.checkpoint_every;
            if !start.is_multiple_of(self.checkpoint_every) {
                for split in ["train", "valid"] {
                    let logs = self.dir.path().join(split);
                    let from = logs.join(format!("epoch-{}", done + 1));
                    let to = logs.join(format!("epoch-{}-to-step-{start}", done + 1));
                    if from.is_dir() && !to.exists() {
                        let _ = std::fs::rename(&from, &to);
                    }
                }
            }
            if done > 0 {
                event_processor.process_train(LearnerEvent::EndEpoch(done));
                event_processor.process_valid(LearnerEvent::EndEpoch(done));
            }
        }
        let mut step = start;
        let mut pending: Vec<(usize, Tensor<LC::Backend, 1>)> = vec![];
        'run: while step < self.steps {
            LC::Backend::seed(&self.device, self.seed.wrapping_add(step as u64));
            learner.lr_step();
            let lr = learner.lr_current();
            let mut accumulator = GradientsAccumulator::new();
            for _ in 0..self.grad_accumulation {
                let Some(batch) = batches.next() else { break 'run };
                let out = learner.train_step(batch);
                pending.push((step + 1, out.item.loss()));
                accumulator.accumulate(&learner.model(), out.grads);
                let epoch = step / self.checkpoint_every + 1;
                let item = TrainingItem::new(
                    out.item,
                    Progress {
                        items_processed: step + 1 - (epoch - 1) * self.checkpoint_every,
                        items_total: self.checkpoint_every.min(self.steps - (epoch - 1) * self.checkpoint_every),
                    },
                    Progress { items_processed: epoch, items_total: epochs },
                    Some(step + 1),
                    Some(lr),
                );
                event_processor.process_train(LearnerEvent::ProcessedItem(item));
            }
            learner.optimizer_step(accumulator.grads());
            step += 1;
            let stop = interrupter.should_stop();
            if step.is_multiple_of(self.checkpoint_every) || step == self.steps || stop {
                let epoch = step.div_ceil(self.checkpoint_every);
                event_processor.process_train(LearnerEvent::EndEpoch(epoch));
                let model = learner.model().valid();
                let mut it = valid.iter();
                let mut i = 0;
                let (mut valid_losses, mut valid_counts) = (vec![], vec![]);
                while let Some(batch) = it.next() {
                    i += 1;
                    let out = InferenceStep::step(&model, batch);
                    valid_losses.push(out.loss());
                    valid_counts.push(out.tokens() as f64);
                    let item = TrainingItem::new(
                        out,
                        it.progress(),
                        Progress { items_processed: epoch, items_total: epochs },
                        Some(i),
                        None,
                    );
                    event_processor.process_valid(LearnerEvent::ProcessedItem(item));
                }
                event_processor.process_valid(LearnerEvent::EndEpoch(epoch));
                let mut history = self.history.lock().expect("loss log");
                let (steps, values): (Vec<usize>, Vec<_>) = std::mem::take(&mut pending).into_iter().unzip();
                for (s, v) in steps.into_iter().zip(read_all(values)) {
                    self.losses.lock().expect("loss log").push((s, v));
                    history.push("training loss", s, v);
                }
                // The mean over all predicted tokens, as the log line prints it: batches weighted by their tokens
                // (the last batch of the held-out clips can be smaller).
                let valid = read_all(valid_losses);
                let tokens: f64 = valid_counts.iter().sum();
                if !valid.is_empty() && tokens > 0.0 {
                    let sum: f64 = valid.iter().zip(&valid_counts).map(|(l, n)| l * n).sum();
                    history.push("validation loss", step, sum / tokens);
                }
                let plot = [(
                    "loss.svg",
                    "generator training: cross-entropy",
                    &[("training loss", 20), ("validation loss", 1)][..],
                )];
                if let Err(e) = history.write(&self.dir, &plot) {
                    eprintln!("warning: cannot write the loss curves: {e}");
                }
                if let Some(c) = checkpointer.as_mut() {
                    c.checkpoint(&learner, step, &event_store);
                }
            }
            if stop {
                break;
            }
        }
        (learner.model(), event_processor)
    }
}

/// What a finished (or interrupted) run reports.
#[derive(Debug, Clone)]
pub struct GeneratorRun {
    /// Optimiser steps done (including those before a resume).
    pub steps_done: usize,
    /// The exported model (`<out>/generator.safetensors`).
    pub model_path: PathBuf,
    pub seconds: f64,
    /// Sequences per second of this session.
    pub sequences_per_second: f64,
    pub tokens_per_second: f64,
    pub interrupted: bool,
    /// Training loss of every micro-batch of this session, by step.
    pub losses: Vec<(usize, f64)>,
}

/// The model a new run starts from: GPT-2 initialisation, with the position embeddings of `config.pos_init`.
pub fn initial_model<B: Backend>(
    setup: &GeneratorSetup,
    config: &GeneratorTrainConfig,
    device: &B::Device,
) -> Result<Gpt<B>> {
    let mut gpt = Gpt::<B>::new(&setup.gpt, device)?;
    if config.pos_init == "grid" {
        let (n, d) = (setup.gpt.block_size, setup.gpt.n_embd);
        let values = grid_position_embedding(&setup.vocab, &setup.layout, n, d);
        gpt.pos_emb = Param::from_tensor(Tensor::from_data(TensorData::new(values, [1, n, d]), device));
    }
    Ok(gpt)
}

/// Trains a generator as `config` says. `resume` continues from the latest complete checkpoint in the run
/// directory. `interrupter` stops the run after the current step (with a checkpoint); the CLI wires Ctrl-C to it.
pub fn train_generator<B: AutodiffBackend>(
    config: &GeneratorTrainConfig,
    resume: bool,
    device: &B::Device,
    interrupter: Interrupter,
) -> Result<GeneratorRun> {
    crate::run::check_resume(&config.out, resume)?;
    if !config.tokens.exists() {
        return Err(Error::file(
            &config.tokens,
            "no token cache there: pass --tokens FILE, a cache made by `nbp-cli tokenize-dataset`",
        ));
    }
    let cache = Arc::new(TokenCache::load(&config.tokens)?);
    let setup = setup(config, &cache)?;
    // Whole videos are held out: clips of one video on both sides would score the model on what it trained on.
    let held_out = cache.info.whole_videos(config.valid_clips);
    if cache.len() <= held_out {
        return Err(Error::file(
            &config.tokens,
            format!(
                "holds {} clips: too few to hold out {held_out} for validation and train on the rest (lower \
                 --valid-clips, valid_clips in the config{})",
                cache.len(),
                if cache.info.clips_per_video > 1 {
                    format!(
                        "; whole videos of {} clips are held out, so any --valid-clips from 1 holds out at least one \
                         video: tokenize more videos, or train without validation with --valid-clips 0",
                        cache.info.clips_per_video
                    )
                } else {
                    String::new()
                },
            ),
        ));
    }
    let dir = RunDir::create(&config.out)?;
    let start = if resume {
        // Each candidate checkpoint is read back before the Learner loads it (a damaged file would otherwise stop
        // the run inside Burn with a panic).
        let parts = ("model", "optim", Some("scheduler"));
        dir.resume_from::<B, GptTrainer<B>, GroupedAdamW<GptTrainer<B>, B>>(parts, config.steps, device, &mut |l| {
            eprintln!("{l}")
        })?
        .map(|(step, _, _)| step)
    } else {
        dir.refuse_existing()?
    };
    match start {
        None if resume => eprintln!("--resume: {} holds no checkpoint yet, so this is a new run", dir.path().display()),
        Some(step) if step >= config.steps => eprintln!("--resume: the run has done its {step} steps already"),
        Some(step) => eprintln!("resumed from step {step}"),
        None => {}
    }
    // Dropout is not part of what the checkpoints hold: a resumed run may change it.
    let mut arch = toml::Value::try_from(&setup.gpt).map_err(|e| Error::invalid(format!("model config: {e}")))?;
    if let Some(t) = arch.as_table_mut() {
        t.remove("dropout");
    }
    dir.refuse_other_kind("generator.toml")?;
    dir.check_architecture("architecture.toml", &arch, start.is_some())?;
    // What the checkpoints learnt from, which a resumed run must not swap: the block shape the tokens are ordered
    // by, and the token cache's grid, classes and tokenizer (another cache with as many classes would otherwise
    // rename what the class embeddings learnt), its data and clips, and the clips held out (another cache or
    // another --valid-clips would move clips between training and validation, and splice the validation curve
    // from two sets).
    let data = toml::toml! {
        block_shape = (setup.layout.block.to_string())
        latent_grid = (format!("{}x{}x{}", setup.grid.t, setup.grid.h, setup.grid.w))
        classes = (cache.info.classes.clone())
        tokenizer = (cache.info.tokenizer.clone())
        tokenizer_fingerprint = (cache.info.tokenizer_fingerprint.clone().unwrap_or_default())
        codebook = (cache.info.codebook as i64)
        dataset = (cache.info.dataset.clone())
        clips = (cache.len() as i64)
        valid_clips = (held_out as i64)
    };
    dir.check_data("data.toml", &data, start.is_some())?;
    // The token cache by its absolute path, so that `--resume` from another folder reads the same cache.
    let tokens = config.tokens.canonicalize().unwrap_or_else(|_| config.tokens.clone());
    dir.save_config("generator.toml", &GeneratorTrainConfig { tokens, ..config.clone() })?;

    if held_out != config.valid_clips {
        let videos = held_out / cache.info.clips_per_video;
        println!(
            "validation holds out {held_out} clips for --valid-clips {}: the last {videos} video{} whole ({} clips \
             each; `eval-frame-prediction --clips {videos}` scores only those)",
            config.valid_clips,
            if videos == 1 { "" } else { "s" },
            cache.info.clips_per_video,
        );
    }
    let n_train = cache.len() - held_out;
    if n_train < config.batch_size {
        eprintln!(
            "warning: a batch of {} sequences is larger than the {n_train} training clips: each batch repeats clips",
            config.batch_size
        );
    }
    let train_clips: Vec<usize> = (0..n_train).collect();
    let valid_clips: Vec<usize> = (n_train..cache.len()).collect();
    let per_step = config.batch_size * config.grad_accumulation;
    let train_stream =
        TokenStream::new(cache.clone(), &train_clips, config.steps * per_step, true, &setup, config, true);
    let valid_stream = TokenStream::new(cache.clone(), &valid_clips, valid_clips.len(), false, &setup, config, false);
    let dl_train = DataLoaderBuilder::<B, _, _>::new(TokenBatcher).batch_size(config.batch_size).build(train_stream);
    let dl_valid =
        DataLoaderBuilder::<B::InnerBackend, _, _>::new(TokenBatcher).batch_size(config.batch_size).build(valid_stream);

    B::seed(device, config.seed);
    let gpt = initial_model::<B>(&setup, config, device)?;
    let model = GptTrainer::new(gpt, &setup.vocab, config.loss_chunk, config.grad_accumulation);
    let optim = GroupedAdamW::new(&config.optimizer, decay_linear_weights);
    let scheduler = WarmupCosine::new(config.schedule.clone(), config.steps);

    let strategy = StepStrategy::<B> {
        device: device.clone(),
        steps: config.steps,
        checkpoint_every: config.checkpoint_every,
        grad_accumulation: config.grad_accumulation,
        batch_size: config.batch_size,
        seed: config.seed,
        losses: Default::default(),
        dir: dir.clone(),
        history: Arc::new(std::sync::Mutex::new(LossHistory::read(&dir, start.unwrap_or(0)))),
    };
    let losses = strategy.losses.clone();
    // The checkpoints this run continues from (none later than its start: a damaged later one is replaced).
    let earlier: Vec<usize> = dir
        .checkpoints(&["model", "optim", "scheduler"])?
        .into_iter()
        .filter(|&s| start.is_some_and(|start| s <= start))
        .collect();
    let mut training = SupervisedTraining::new(dir.path(), dl_train, dl_valid)
        .metric_train_numeric(ScalarMetric::new("Loss", "loss", false))
        .metric_valid_numeric(ScalarMetric::new("Loss", "loss", false))
        .metric_train_numeric(ScalarMetric::new("Top-1 accuracy", "top1", true))
        .metric_valid_numeric(ScalarMetric::new("Top-1 accuracy", "top1", true))
        .metric_train_numeric(ScalarMetric::new("Top-5 accuracy", "top5", true))
        .metric_valid_numeric(ScalarMetric::new("Top-5 accuracy", "top5", true))
        .metric_train_numeric(LearningRateMetric::new())
        .with_file_checkpointer(run::AtomicRecorder::default())
        .with_checkpointing_strategy(run::KeepLast::new(2, earlier))
        .with_training_strategy(TrainingStrategy::Custom(Arc::new(strategy)))
        .with_interrupter(interrupter.clone())
        .with_application_logger(None)
        .num_epochs(config.steps.div_ceil(config.checkpoint_every));
    training = training.renderer(run::renderer(&dir, config.steps, &interrupter, start));
    if let Some(step) = start {
        training = training.checkpoint(step);
    }
    let started = std::time::Instant::now();
    let LearningResult { model, .. } = training.launch(Learner::new(model, optim, scheduler));
    let seconds = started.elapsed().as_secs_f64();
    let steps_done = dir.latest_checkpoint()?.unwrap_or(0);
    dir.prune_checkpoints(&["model", "optim", "scheduler"], 2)?;
    let model_path = dir.path().join("generator.safetensors");
    let b = setup.layout.block;
    let info = GeneratorInfo {
        classes: cache.info.classes.clone(),
        latent_grid: Some(cache.info.grid),
        block_shape: Some([b.t, b.h, b.w]),
        tokenizer: Some(cache.info.tokenizer.clone()).filter(|t| !t.is_empty()),
        tokenizer_fingerprint: cache.info.tokenizer_fingerprint.clone(),
        p_drop_cond: Some(config.p_drop_cond).filter(|_| !setup.settings.unconditional),
        dataset: Some(cache.info.dataset.clone()).filter(|d| !d.is_empty()),
        fps: cache.info.fps,
    };
    save_generator_with_info(&model.gpt, &setup.settings, &info, &model_path)?;
    dir.save_classes(&cache.info.classes)?;
    let new_steps = steps_done.saturating_sub(start.unwrap_or(0));
    let sequences = (new_steps * per_step) as f64;
    Ok(GeneratorRun {
        steps_done,
        model_path,
        seconds,
        sequences_per_second: sequences / seconds.max(1e-9),
        tokens_per_second: sequences * setup.grid.len() as f64 / seconds.max(1e-9),
        interrupted: steps_done < config.steps,
        losses: losses.lock().expect("loss log").clone(),
    })
}
