//! Timing of KV-cached sampling, for `nbp-cli bench sample`: the whole generation and, apart, the prefill with
//! the first step.

use std::cell::Cell;
use std::time::Instant;

use burn::prelude::*;
use nbp_core::Result;
use nbp_core::progress::Progress;

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
    /// Tokens per second of the steps after the first, for a run of `tokens` tokens in blocks of `block`: the
    /// speed of generation alone, without the prefill that every block size shares. `None` for a run of one step.
    pub fn later_tokens_per_second(&self, tokens: usize, block: usize) -> Option<f64> {
        let later = tokens.saturating_sub(block.max(1));
        (self.steps > 1 && self.seconds > self.first_step).then(|| later as f64 / (self.seconds - self.first_step))
    }
}

/// Times the generation of `tokens` tokens after the known tokens `prefix` in blocks of each size in `blocks` (a
/// row schedule, as `Schedule::blocks`), `batch` sequences at once, with the default filter: `warmup` untimed runs
/// of each (each reported through `report`), then `repeats` timed ones (at least one), of which the fastest is
/// kept. The block sizes take turns run by run (16, 1, 16, 1, … for `[16, 1]`), so that a change in the machine's
/// speed during the benchmark (other tenants, clocks, the memory's state) falls on all of them alike rather than
/// on whichever ran its repeats last. `progress` sees every run's steps.
pub fn time_sampling<B: Backend>(
    model: &Gpt<B>,
    prefix: &[i64],
    tokens: usize,
    (blocks, batch): (&[usize], usize),
    (warmup, repeats): (usize, usize),
    progress: &dyn Progress,
    report: &mut dyn FnMut(&str),
) -> Result<Vec<SampleTiming>> {
    let schedules: Vec<Schedule> =
        blocks.iter().map(|&block| Schedule::blocks(&[], None, prefix, tokens, block)).collect();
    let mut best: Vec<Option<SampleTiming>> = vec![None; blocks.len()];
    for run in 0..warmup + repeats.max(1) {
        for ((&block, schedule), best) in blocks.iter().zip(&schedules).zip(&mut best) {
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

/// Seconds of one untimed generation of a single block after `prefix` (the prefill and one step), with caches
/// for `tokens` new tokens as [`time_sampling`]'s. Run before the timed runs, so that neither of two compared
/// block sizes pays alone for this process's first use of memory (the page faults of fresh pages, which later
/// runs, reusing the freed memory, do not take) and, on the GPU backends, for compiling the prefill's kernels.
pub fn warm_up<B: Backend>(
    model: &Gpt<B>,
    prefix: &[i64],
    tokens: usize,
    (block, batch): (usize, usize),
) -> Result<f64> {
    let mut schedule = Schedule::blocks(&[], None, prefix, block.min(tokens), block);
    schedule.total_len = prefix.len() + tokens;
    let t0 = Instant::now();
    generate(model, &schedule, batch, &nbp_core::progress::NoProgress)?;
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

    #[test]
    fn timings_count_the_schedule_and_the_warm_up_runs() {
        let model = tiny(64);
        let prefix: Vec<i64> = (0..16).collect();
        let (count, mut lines) = (Count::default(), vec![]);
        let t =
            time_sampling(&model, &prefix, 32, (&[8], 2), (1, 2), &count, &mut |l| lines.push(l.to_string())).unwrap();
        // 32 tokens in blocks of 8: 4 steps per run, and the progress saw all three runs.
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].steps, 4);
        assert_eq!(count.0.get(), 12);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("block 8: warm-up run 1: "), "{lines:?}");
        assert!(0.0 < t[0].first_step && t[0].first_step <= t[0].seconds, "{t:?}");
        // NTP: one token per step.
        let ntp = time_sampling(&model, &prefix, 32, (&[1], 1), (0, 1), &NoProgress, &mut |_| {}).unwrap();
        assert_eq!(ntp[0].steps, 32);
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
        let prefix: Vec<i64> = (0..16).collect();
        let (runs, mut lines) = (Runs::default(), vec![]);
        let t = time_sampling(&model, &prefix, 16, (&[8, 1], 1), (1, 2), &runs, &mut |l| lines.push(l.to_string()))
            .unwrap();
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
        let prefix: Vec<i64> = (0..16).collect();
        assert!(warm_up(&model, &prefix, 16, (8, 2)).unwrap() > 0.0);
        // Its caches are as long as those of the timed runs: 16 known and 24 new tokens do not fit the model's
        // 32 positions, even though the warm-up generates only one block of 8.
        let err = warm_up(&model, &prefix, 24, (8, 1)).unwrap_err().to_string();
        assert!(err.contains("generation needs 40 positions but the model has 32"), "{err}");
    }
}
