//! Timing of KV-cached sampling, for `nbp-cli bench sample`: the whole generation and, apart, the prefill with
//! the first step.

use std::cell::Cell;
use std::time::Instant;

use burn::prelude::*;
use nbp_core::Result;
use nbp_core::progress::Progress;

use nbp_core::vocab::{Conditioning, Vocabulary};

use crate::classes::{UCF_CONDITION_TOKENS, UCF_TEXT_VOCAB};
use crate::gpt::Gpt;
use crate::sampling::{SampleOptions, sample};
use crate::schedule::Schedule;

/// The fastest timed run of one schedule ([`time_sampling`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleTiming {
    /// Steps of the schedule.
    pub steps: usize,
    /// Seconds of the whole run.
    pub seconds: f64,
    /// Seconds to the end of the first step: the prefill and the first block, its tokens drawn (the draw reads
    /// the logits back, so asynchronous GPU backends have finished it too).
    pub first_step: f64,
}

impl SampleTiming {
    /// Tokens per second of the steps after the first, for a run of `tokens` tokens of which the first step drew
    /// `first` (a block; one token with the hybrid start): the speed of generation alone, without the prefill that
    /// every block size shares. `None` for a run of one step.
    pub fn later_tokens_per_second(&self, tokens: usize, first: usize) -> Option<f64> {
        let later = tokens.saturating_sub(first.max(1));
        (self.steps > 1 && self.seconds > self.first_step).then(|| later as f64 / (self.seconds - self.first_step))
    }
}

/// What a sampling benchmark generates, and how: the task, the model's vocabulary and condition tokens, and one
/// schedule per compared block size ([`plan_benchmark`]).
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Vocabulary size of the model to build.
    pub vocab_size: usize,
    /// Condition tokens of the model (8 for the hybrid start, as the official UCF model; 0 otherwise).
    pub cond_tokens: usize,
    /// The schedule of each block size, in the order asked.
    pub schedules: Vec<(usize, Schedule)>,
}

impl BenchPlan {
    /// Positions the model needs: the longest fed sequence.
    pub fn positions(&self) -> usize {
        self.schedules.iter().map(|(_, s)| s.total_len).max().unwrap_or(0)
    }
}

/// Lays out a benchmark of `tokens` new video tokens with a codebook of `codebook` codes, for each block size in
/// `blocks`:
/// - frame prediction (`hybrid` false): `prefix` known video tokens, then blocks of each size (NBP; NTP with 1), as
///   K600 (512 and 768 tokens, vocabulary = codebook);
/// - the hybrid start (`hybrid` true), as the official UCF model generates a class: 8 condition ids and BOV, the
///   first block one token per step, the block `[last token, middle-bos…]`, then NBP (1280 tokens: 95 steps of 16),
///   after `prefix` known video tokens when given; the vocabulary is the hybrid text layout for blocks of
///   `blocks[0]` (UCF: 96 016), and other block sizes generate from `[condition | BOV]` on that same model (NTP
///   with 1).
///
/// Only video codes are drawn. Errors name what does not fit.
pub fn plan_benchmark(
    hybrid: bool,
    codebook: usize,
    prefix: usize,
    tokens: usize,
    blocks: &[usize],
) -> Result<BenchPlan> {
    let first = *blocks.first().ok_or_else(|| nbp_core::Error::invalid("no block size to time"))?;
    if codebook == 0 || tokens == 0 || blocks.contains(&0) {
        return Err(nbp_core::Error::invalid("the codebook, the tokens and every block size must be at least 1"));
    }
    if let Some(b) = blocks.iter().find(|&&b| !prefix.is_multiple_of(b) || (!hybrid && prefix < b)) {
        let what = if hybrid { "a multiple" } else { "a positive multiple" };
        return Err(nbp_core::Error::invalid(format!(
            "the prefix must be {what} of every block size ({b}), got {prefix}"
        )));
    }
    if !hybrid {
        let ids: Vec<i64> = (0..prefix).map(|i| (i % codebook) as i64).collect();
        let schedules = blocks.iter().map(|&b| (b, Schedule::blocks(&[], None, &ids, tokens, b))).collect();
        return Ok(BenchPlan { vocab_size: codebook, cond_tokens: 0, schedules });
    }
    let c = UCF_CONDITION_TOKENS;
    let vocab = Vocabulary::new(codebook, Conditioning::Text { vocab: UCF_TEXT_VOCAB, tokens: c }, true, first)?;
    let condition: Vec<i64> = (0..c).map(|i| (vocab.condition_offset() + 1 + i) as i64).collect();
    let ids: Vec<i64> = (0..prefix).map(|i| vocab.video_id(i % codebook) as i64).collect();
    let bov = vocab.bov().map(|b| b as i64);
    let schedules = blocks
        .iter()
        .map(|&b| {
            let mut s = match b == first {
                true => Schedule::hybrid(&condition, &vocab, &ids, tokens),
                false => Schedule::blocks(&condition, bov, &ids, tokens, b),
            };
            s.sampled_from = vocab.video_offset();
            (b, s)
        })
        .collect();
    Ok(BenchPlan { vocab_size: vocab.size(), cond_tokens: c, schedules })
}

/// Times each schedule of `schedules` (labelled by its block size), `batch` sequences at once, with the default
/// filter: `warmup` untimed runs of each (each reported through `report`), then `repeats` timed ones (at least
/// one), of which the fastest is kept. The schedules take turns run by run (16, 1, 16, 1, … for blocks
/// `[16, 1]`), so that a change in the machine's speed during the benchmark (other tenants, clocks, the memory's
/// state) falls on all of them alike rather than on whichever ran its repeats last. `progress` sees every run's
/// steps.
pub fn time_sampling<B: Backend>(
    model: &Gpt<B>,
    schedules: &[(usize, Schedule)],
    batch: usize,
    (warmup, repeats): (usize, usize),
    progress: &dyn Progress,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<SampleTiming>> {
    let mut best: Vec<Option<SampleTiming>> = vec![None; schedules.len()];
    for run in 0..warmup + repeats.max(1) {
        for ((block, schedule), best) in schedules.iter().zip(&mut best) {
            let timer = FirstStep { inner: progress, t0: Instant::now(), first: Cell::new(None) };
            generate(model, schedule, batch, &timer)?;
            let seconds = timer.t0.elapsed().as_secs_f64();
            if run < warmup {
                report(&format!("block {block}: warm-up run {}: {seconds:.2} s", run + 1));
            } else if best.is_none_or(|b| seconds < b.seconds) {
                let first_step = timer.first.get().unwrap_or(seconds);
                *best = Some(SampleTiming { steps: schedule.len(), seconds, first_step });
            }
        }
    }
    Ok(best.into_iter().map(|b| b.expect("at least one timed run")).collect())
}

/// One generation by `schedule` with the default filter, its ids read back (so that asynchronous GPU backends
/// have finished it).
fn generate<B: Backend>(model: &Gpt<B>, schedule: &Schedule, batch: usize, progress: &dyn Progress) -> Result<()> {
    let opts = SampleOptions { filter: Default::default(), greedy: false, cfg: None };
    let _ = sample(model, schedule, batch, &opts, progress, &mut |_| {})?.into_data();
    Ok(())
}

/// Seconds of one untimed first step of `schedule` (the prefill of what it knows, and the first draw), with its
/// caches as long as the whole schedule's. Run before the timed runs, so that neither of two compared block sizes
/// pays alone for this process's first use of memory (the page faults of fresh pages, which later runs, reusing
/// the freed memory, do not take) and, on the GPU backends, for compiling the prefill's kernels.
pub fn warm_up<B: Backend>(model: &Gpt<B>, schedule: &Schedule, batch: usize) -> Result<f64> {
    let mut first = schedule.clone();
    first.steps.truncate(1);
    first.generated = first.steps.first().map_or(0, |s| s.predict);
    let t0 = Instant::now();
    generate(model, &first, batch, &nbp_core::progress::NoProgress)?;
    Ok(t0.elapsed().as_secs_f64())
}

/// A [`Progress`] that forwards to `inner` and notes when the first step was done (seconds since `t0`).
struct FirstStep<'a> {
    inner: &'a dyn Progress,
    t0: Instant,
    first: Cell<Option<f64>>,
}

impl Progress for FirstStep<'_> {
    fn start(&self, label: &str, total: usize) {
        self.inner.start(label, total);
    }

    fn advance(&self, n: usize) {
        if self.first.get().is_none() {
            self.first.set(Some(self.t0.elapsed().as_secs_f64()));
        }
        self.inner.advance(n);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use nbp_core::progress::NoProgress;

    use crate::GptConfig;

    /// Counts the steps it is told of.
    #[derive(Default)]
    struct Count(Cell<usize>);

    impl Progress for Count {
        fn start(&self, _: &str, _: usize) {}
        fn advance(&self, n: usize) {
            self.0.set(self.0.get() + n);
        }
        fn finish(&self) {}
    }

    /// A one-layer model of `positions` positions.
    fn tiny(positions: usize) -> Gpt<Flex> {
        let config = GptConfig::new(50, 1, 2, 16).with_block_size(positions).with_dropout(0.0);
        Gpt::new(&config, &Default::default()).unwrap()
    }

    /// The frame-prediction plan of `tokens` after 16 known tokens, for `blocks`.
    fn frames(tokens: usize, blocks: &[usize]) -> Vec<(usize, Schedule)> {
        plan_benchmark(false, 50, 16, tokens, blocks).unwrap().schedules
    }

    #[test]
    fn timings_count_the_schedule_and_the_warm_up_runs() {
        let model = tiny(64);
        let (count, mut lines) = (Count::default(), vec![]);
        let t =
            time_sampling(&model, &frames(32, &[8]), 2, (1, 2), &count, &mut |l| lines.push(l.to_string())).unwrap();
        // 32 tokens in blocks of 8: 4 steps per run, and the progress saw all three runs.
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].steps, 4);
        assert_eq!(count.0.get(), 12);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("block 8: warm-up run 1: "), "{lines:?}");
        assert!(0.0 < t[0].first_step && t[0].first_step <= t[0].seconds, "{t:?}");
        // NTP: one token per step.
        let ntp = time_sampling(&model, &frames(32, &[1]), 1, (0, 1), &NoProgress, &mut |_| {}).unwrap();
        assert_eq!(ntp[0].steps, 32);
    }

    /// The two tasks as the official models run them: K600 frame prediction (48 steps of 16 against 768 of 1) and
    /// the UCF hybrid start (95 steps against 1280), on one vocabulary per comparison.
    #[test]
    fn benchmarks_lay_out_the_official_tasks() {
        let k600 = plan_benchmark(false, 64000, 512, 768, &[16, 1]).unwrap();
        assert_eq!((k600.vocab_size, k600.cond_tokens, k600.positions()), (64000, 0, 1280));
        assert_eq!(k600.schedules.iter().map(|(b, s)| (*b, s.len())).collect::<Vec<_>>(), [(16, 48), (1, 768)]);
        let ucf = plan_benchmark(true, 64000, 0, 1280, &[16, 1]).unwrap();
        assert_eq!((ucf.vocab_size, ucf.cond_tokens), (96016, 8));
        assert_eq!(ucf.schedules.iter().map(|(b, s)| (*b, s.len())).collect::<Vec<_>>(), [(16, 95), (1, 1280)]);
        // [8 condition ids | BOV] first, and only video codes drawn (from 16 specials + 32 000 text ids on).
        for (_, s) in &ucf.schedules {
            assert_eq!((s.steps[0].chunk.len(), s.sampled_from), (9, 32016));
        }
        assert_eq!(ucf.positions(), 8 + 1 + 1280 + 15);
        let e = plan_benchmark(false, 64000, 0, 768, &[16]).unwrap_err().to_string();
        assert!(e.contains("the prefix must be a positive multiple of every block size (16), got 0"), "{e}");
        let e = plan_benchmark(true, 64000, 8, 768, &[16, 1]).unwrap_err().to_string();
        assert!(e.contains("a multiple of every block size (16), got 8"), "{e}");
    }

    #[test]
    fn a_hybrid_benchmark_runs_its_steps() {
        let plan = plan_benchmark(true, 20, 0, 24, &[8, 1]).unwrap();
        let config = GptConfig::new(plan.vocab_size, 1, 2, 16)
            .with_block_size(plan.positions())
            .with_cond_tokens(plan.cond_tokens)
            .with_dropout(0.0);
        let model = Gpt::<Flex>::new(&config, &Default::default()).unwrap();
        let runs = Runs::default();
        let t = time_sampling(&model, &plan.schedules, 1, (0, 1), &runs, &mut |_| {}).unwrap();
        // 8 tokens one by one, then 2 blocks of 8; NTP: 24 steps.
        assert_eq!((t[0].steps, t[1].steps), (10, 24));
        assert_eq!(*runs.0.borrow(), [10, 24]);
        assert!(warm_up(&model, &plan.schedules[0].1, 1).unwrap() > 0.0);
    }

    /// Records the step count of every run it is told of.
    #[derive(Default)]
    struct Runs(std::cell::RefCell<Vec<usize>>);

    impl Progress for Runs {
        fn start(&self, _: &str, total: usize) {
            self.0.borrow_mut().push(total);
        }
        fn advance(&self, _: usize) {}
        fn finish(&self) {}
    }

    #[test]
    fn compared_block_sizes_take_turns() {
        let model = tiny(64);
        let (runs, mut lines) = (Runs::default(), vec![]);
        let t =
            time_sampling(&model, &frames(16, &[8, 1]), 1, (1, 2), &runs, &mut |l| lines.push(l.to_string())).unwrap();
        // Each run's schedule length tells which block size ran: 2 steps of 8, or 16 of 1, in turns.
        assert_eq!(*runs.0.borrow(), [2, 16, 2, 16, 2, 16]);
        assert_eq!(lines.iter().map(|l| &l[..9]).collect::<Vec<_>>(), ["block 8: ", "block 1: "], "{lines:?}");
        assert_eq!((t[0].steps, t[1].steps), (2, 16));
    }

    #[test]
    fn later_steps_leave_out_the_prefill_and_the_first_block() {
        let nbp = SampleTiming { steps: 48, seconds: 4.33, first_step: 1.2 };
        let ntp = SampleTiming { steps: 768, seconds: 46.83, first_step: 1.17 };
        let (a, b) = (nbp.later_tokens_per_second(768, 16).unwrap(), ntp.later_tokens_per_second(768, 1).unwrap());
        assert!((a - 752.0 / 3.13).abs() < 1e-9 && (b - 767.0 / 45.66).abs() < 1e-9, "{a} {b}");
        assert!((a / b - 14.30).abs() < 0.01, "{}", a / b);
        assert_eq!(SampleTiming { steps: 1, seconds: 1.0, first_step: 1.0 }.later_tokens_per_second(16, 16), None);
    }

    #[test]
    fn the_warm_up_generates_one_block_and_checks_its_input() {
        let model = tiny(32);
        assert!(warm_up(&model, &frames(16, &[8])[0].1, 2).unwrap() > 0.0);
        // Its caches are as long as those of the timed runs: 16 known and 24 new tokens do not fit the model's
        // 32 positions, even though the warm-up generates only one block of 8.
        let err = warm_up(&model, &frames(24, &[8])[0].1, 1).unwrap_err().to_string();
        assert!(err.contains("generation needs 40 positions but the model has 32"), "{err}");
    }
}
