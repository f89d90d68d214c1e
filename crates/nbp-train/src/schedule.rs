//! Learning-rate schedule: linear warm-up then cosine decay, with timm `CosineLRScheduler` semantics
//! (reference §2.10): `lr(t) = init + t·(base − init)/warmup` for `t < warmup`, otherwise
//! `min + ½(base − min)(1 + cos(π·t / total))` with the **absolute** `t`, and `min` after `total`.

use burn::lr_scheduler::LrScheduler;
use burn::prelude::Backend;
use serde::{Deserialize, Serialize};

/// Schedule settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Peak learning rate (`base_lr`).
    pub lr: f64,
    /// Final learning rate (`lr_min`).
    pub min_lr: f64,
    /// Warm-up steps (`warmup_steps`).
    pub warmup_steps: usize,
    /// Learning rate at step 0 of the warm-up (`warmup_lr_init`).
    pub warmup_lr_init: f64,
    /// Use the official off-by-one: update `k` uses `lr(k − 1)` and the very first update uses `warmup_lr_init`
    /// (the official trainer steps the scheduler after the optimiser). By default update `k` (counted from 1) uses
    /// `lr(k)`, so the first update already moves the weights (the last one, `lr(total)`, is then `min_lr`).
    pub official_lag: bool,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self { lr: 6e-4, min_lr: 0.0, warmup_steps: 5000, warmup_lr_init: 0.0, official_lag: false }
    }
}

impl ScheduleConfig {
    /// A schedule that gives finite, non-negative rates: `lr > 0`, `0 ≤ min_lr ≤ lr`, `0 ≤ warmup_lr_init`, all
    /// finite (a NaN rate would otherwise train silently into a model of NaN).
    pub fn validate(&self) -> nbp_core::Result<()> {
        let bad = |what: String| Err(nbp_core::Error::invalid(format!("learning-rate schedule: {what}")));
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return bad(format!("the learning rate must be a positive number, got {}", self.lr));
        }
        if !(0.0..=self.lr).contains(&self.min_lr) {
            return bad(format!("min_lr must be between 0 and the learning rate {}, got {}", self.lr, self.min_lr));
        }
        if !(self.warmup_lr_init >= 0.0 && self.warmup_lr_init.is_finite()) {
            return bad(format!("warmup_lr_init must be a finite number ≥ 0, got {}", self.warmup_lr_init));
        }
        Ok(())
    }

    /// A warning when the warm-up does not end before the last of `steps` steps (the peak rate is never used).
    pub fn warning(&self, steps: usize) -> Option<String> {
        (self.warmup_steps >= steps).then(|| {
            format!(
                "warmup_steps ({}) is not below steps ({steps}): the learning rate never reaches its peak {}",
                self.warmup_steps, self.lr
            )
        })
    }

    /// The timm formula at absolute step `t` for a cosine of `total` steps.
    pub fn lr_at(&self, t: usize, total: usize) -> f64 {
        if t < self.warmup_steps {
            return self.warmup_lr_init + t as f64 * (self.lr - self.warmup_lr_init) / self.warmup_steps as f64;
        }
        if t >= total {
            return self.min_lr;
        }
        let progress = t as f64 / total as f64;
        self.min_lr + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// A [`LrScheduler`] for Burn's Learner: every `step()` returns the rate of the next optimiser update. Its record
/// is the number of updates done, so a resumed run continues the same curve.
#[derive(Debug, Clone)]
pub struct WarmupCosine {
    config: ScheduleConfig,
    total: usize,
    done: usize,
}

impl WarmupCosine {
    /// A schedule whose cosine spans `total` steps (`max_steps`).
    pub fn new(config: ScheduleConfig, total: usize) -> Self {
        Self { config, total, done: 0 }
    }

    /// Rate of update number `update` (0-based).
    pub fn lr_of_update(&self, update: usize) -> f64 {
        if self.config.official_lag {
            if update == 0 { self.config.warmup_lr_init } else { self.config.lr_at(update - 1, self.total) }
        } else {
            self.config.lr_at(update + 1, self.total)
        }
    }

    /// Updates done so far.
    pub fn done(&self) -> usize {
        self.done
    }
}

impl LrScheduler for WarmupCosine {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> f64 {
        let lr = self.lr_of_update(self.done);
        self.done += 1;
        lr
    }

    fn to_record<B: Backend>(&self) -> Self::Record<B> {
        self.done
    }

    fn load_record<B: Backend>(mut self, record: Self::Record<B>) -> Self {
        self.done = record;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_optimizers_that_would_train_into_nan_are_refused() {
        let ok = ScheduleConfig::default();
        ok.validate().unwrap();
        for bad in [
            ScheduleConfig { lr: f64::NAN, ..ok.clone() },
            ScheduleConfig { lr: f64::INFINITY, ..ok.clone() },
            ScheduleConfig { lr: 0.0, ..ok.clone() },
            ScheduleConfig { min_lr: -1.0, ..ok.clone() },
            ScheduleConfig { min_lr: 1.0, ..ok.clone() },
            ScheduleConfig { warmup_lr_init: f64::NAN, ..ok.clone() },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("learning-rate schedule:"), "{e}");
        }
        let adamw = crate::optim::OptimizerConfig::default();
        adamw.validate().unwrap();
        for no_clipping in [-1.0, 0.0, f64::INFINITY] {
            crate::optim::OptimizerConfig { grad_clip: Some(no_clipping), ..adamw.clone() }.validate().unwrap();
        }
        for bad in [
            crate::optim::OptimizerConfig { weight_decay: f32::NAN, ..adamw.clone() },
            crate::optim::OptimizerConfig { weight_decay: -1e30, ..adamw.clone() },
            crate::optim::OptimizerConfig { beta1: 2.0, ..adamw.clone() },
            crate::optim::OptimizerConfig { eps: -1.0, ..adamw.clone() },
            crate::optim::OptimizerConfig { grad_clip: Some(f64::NAN), ..adamw.clone() },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("optimizer:"), "{e}");
        }
    }

    fn official() -> ScheduleConfig {
        ScheduleConfig { lr: 6e-4, min_lr: 0.0, warmup_steps: 5000, warmup_lr_init: 0.0, official_lag: true }
    }

    #[test]
    fn timm_values_at_the_official_checkpoints() {
        let c = official();
        let total = 100_000;
        assert_eq!(c.lr_at(0, total), 0.0);
        assert!((c.lr_at(1, total) - 6e-4 / 5000.0).abs() < 1e-15);
        assert!((c.lr_at(2500, total) - 3e-4).abs() < 1e-15);
        // At the end of the warm-up the cosine starts from the absolute step (warmup_prefix = False).
        let at_warmup = 0.5 * 6e-4 * (1.0 + (std::f64::consts::PI * 5000.0 / 100_000.0).cos());
        assert!((c.lr_at(5000, total) - at_warmup).abs() < 1e-15);
        let after = 0.5 * 6e-4 * (1.0 + (std::f64::consts::PI * 5001.0 / 100_000.0).cos());
        assert!((c.lr_at(5001, total) - after).abs() < 1e-15);
        assert!((c.lr_at(50_000, total) - 3e-4).abs() < 1e-15, "half way is half the base rate");
        assert_eq!(c.lr_at(100_000, total), 0.0);
        assert_eq!(c.lr_at(200_000, total), 0.0);
    }

    #[test]
    fn official_lag_and_default_order_of_updates() {
        let mut s = WarmupCosine::new(official(), 100_000);
        let lrs: Vec<f64> = (0..3).map(|_| s.step()).collect();
        assert_eq!(lrs[0], 0.0, "the official first update uses warmup_lr_init");
        assert!((lrs[1] - 0.0).abs() < 1e-18, "update 1 uses lr(0)");
        assert!((lrs[2] - 6e-4 / 5000.0).abs() < 1e-15, "update 2 uses lr(1)");
        let mut ours = WarmupCosine::new(ScheduleConfig { official_lag: false, ..official() }, 100_000);
        assert!((ours.step() - 6e-4 / 5000.0).abs() < 1e-15, "our first update uses lr(1)");
        // Resume: the record is the number of updates; a reloaded schedule continues the curve.
        let rec = LrScheduler::to_record::<burn::backend::Flex>(&ours);
        let mut resumed = WarmupCosine::new(ScheduleConfig { official_lag: false, ..official() }, 100_000)
            .load_record::<burn::backend::Flex>(rec);
        assert_eq!(resumed.step(), ours.step());
    }
}
