//! The official optimiser recipe (reference §2.10): AdamW with weight decay on a chosen set of weights only
//! (the official GPT decays the weights of every `nn.Linear` and nothing else), and clipping by the **global**
//! L2 norm of all gradients (PyTorch `clip_grad_norm_`; Burn 0.21 only clips per tensor).
//!
//! Burn 0.21 has no parameter groups, so [`GroupedAdamW`] holds two AdamW optimisers (with and without decay)
//! and hands each the gradients of its own parameters.

use std::collections::HashSet;

use burn::module::{AutodiffModule, ModuleVisitor, Param, ParamId};
use burn::optim::adaptor::OptimizerAdaptor;
use burn::optim::{AdamW, AdamWConfig, GradientsParams, MultiGradientsParams, Optimizer};
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

/// AdamW settings. Defaults are the official generator recipe: betas (0.9, 0.95), eps 1e-8, weight decay 0.01,
/// global-norm clipping at 1.0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OptimizerConfig {
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    /// Decoupled weight decay of the decayed parameters (the others get none).
    pub weight_decay: f32,
    /// Maximum global L2 norm of the gradients; `None` (or ≤ 0 in files) disables clipping.
    pub grad_clip: Option<f64>,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self { beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.01, grad_clip: Some(1.0) }
    }
}

impl OptimizerConfig {
    /// Settings AdamW can run with: betas in `[0, 1)`, `eps > 0` and a finite weight decay `≥ 0` (a NaN would
    /// otherwise train silently into a model of NaN), and a clipping norm that is a number (NaN would otherwise
    /// turn clipping off unseen; infinity and values ≤ 0 mean no clipping).
    pub fn validate(&self) -> nbp_core::Result<()> {
        let bad = |what: String| Err(nbp_core::Error::invalid(format!("optimizer: {what}")));
        for (name, b) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return bad(format!("eps must be a positive number, got {}", self.eps));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(format!("weight_decay must be a finite number ≥ 0, got {}", self.weight_decay));
        }
        if let Some(c) = self.grad_clip.filter(|c| c.is_nan()) {
            return bad(format!("grad_clip must be a number (0 or less: no clipping), got {c}"));
        }
        Ok(())
    }
}

/// Which parameters are weight-decayed, decided from the parameter's module path (e.g.
/// `["blocks", "3", "attn", "query", "weight"]`) and the container type of its module (e.g. `"Struct:Linear"`).
pub type DecayRule = fn(path: &[String], container: &str) -> bool;

/// The official rule: the `weight` of every linear layer (any struct named `Linear`).
pub fn decay_linear_weights(path: &[String], container: &str) -> bool {
    container.ends_with(":Linear") && path.last().is_some_and(|p| p == "weight")
}

/// Collects the ids of the parameters a [`DecayRule`] selects.
struct DecaySelector {
    rule: DecayRule,
    path: Vec<String>,
    containers: Vec<String>,
    selected: Vec<ParamId>,
    all: Vec<ParamId>,
}

impl<B: Backend> ModuleVisitor<B> for DecaySelector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push(name.to_string());
        self.containers.push(container_type.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
        self.containers.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        // `enter_module(field, container)` names the struct that holds the field: the last entry is the module
        // that owns this parameter (e.g. path `["fc", "weight"]`, containers `["Struct:Net", "Struct:Linear"]`).
        let container = self.containers.last().map(String::as_str).unwrap_or("");
        if (self.rule)(&self.path, container) {
            self.selected.push(param.id);
        }
        self.all.push(param.id);
    }
}

/// The ids of the parameters of `module` selected by `rule`, and of all its float parameters.
pub fn select_params<B: Backend, M: Module<B>>(module: &M, rule: DecayRule) -> (Vec<ParamId>, Vec<ParamId>) {
    let mut v = DecaySelector { rule, path: vec![], containers: vec![], selected: vec![], all: vec![] };
    module.visit(&mut v);
    (v.selected, v.all)
}

/// Visits the gradients of every float parameter (inner backend tensors, as `GradientsParams` stores them).
struct GradVisitor<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    /// `None`: sum the squares into `sum`; `Some(c)`: multiply every gradient by the `[1]` tensor `c`.
    scale: Option<Tensor<B::InnerBackend, 1>>,
    sum: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        match &self.scale {
            None => {
                if let Some(g) = self.grads.get::<B::InnerBackend, D>(param.id) {
                    let s = g.powi_scalar(2).sum();
                    self.sum = Some(match self.sum.take() {
                        Some(acc) => acc + s,
                        None => s,
                    });
                }
            }
            Some(c) => {
                if let Some(g) = self.grads.remove::<B::InnerBackend, D>(param.id) {
                    let c = c.clone().reshape([1; D]);
                    self.grads.register(param.id, g * c);
                }
            }
        }
    }
}

/// Sum of the squares of all gradients of `module`, `[1]` on the device.
fn squared_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
) -> Option<Tensor<B::InnerBackend, 1>> {
    let mut v = GradVisitor::<B> { grads, scale: None, sum: None };
    module.visit(&mut v);
    v.sum
}

/// Global L2 norm of all gradients of `module`.
pub fn global_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(module: &M, grads: &mut GradientsParams) -> f64 {
    squared_norm::<B, M>(module, grads).map(|s| s.into_scalar().elem::<f64>().sqrt()).unwrap_or(0.0)
}

/// Clips the gradients of `module` in place to a global L2 norm of at most `max_norm` (PyTorch
/// `clip_grad_norm_`: every gradient is multiplied by `min(1, max_norm / (norm + 1e-6))`). The factor stays on
/// the device, so a training step does not wait for it.
pub fn clip_global_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    grads: &mut GradientsParams,
    max_norm: f64,
) {
    let Some(sum) = squared_norm::<B, M>(module, grads) else { return };
    let coef = sum.sqrt().add_scalar(1e-6).recip().mul_scalar(max_norm).clamp_max(1.0);
    let mut v = GradVisitor::<B> { grads, scale: Some(coef), sum: None };
    module.visit(&mut v);
}

/// Moves the gradients of the parameters in `ids` from `grads` into a new set.
struct Split<'a> {
    ids: &'a HashSet<ParamId>,
    from: &'a mut GradientsParams,
    to: GradientsParams,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Split<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if self.ids.contains(&param.id)
            && let Some(g) = self.from.remove::<B::InnerBackend, D>(param.id)
        {
            self.to.register(param.id, g);
        }
    }
}

/// The optimiser state of [`GroupedAdamW`] (both groups, by parameter id).
pub type GroupedRecord<M, B> = <OptimizerAdaptor<AdamW, M, B> as Optimizer<M, B>>::Record;

/// AdamW with per-parameter weight decay (decayed / not decayed) and global-norm clipping.
///
/// The groups are decided from the module at every step (parameter ids change when a checkpoint is loaded into
/// a fresh model), and a loaded state is split between the groups at the next step.
#[derive(Clone)]
pub struct GroupedAdamW<M: AutodiffModule<B>, B: AutodiffBackend> {
    decay: OptimizerAdaptor<AdamW, M, B>,
    no_decay: OptimizerAdaptor<AdamW, M, B>,
    rule: DecayRule,
    grad_clip: Option<f64>,
    /// A loaded state not yet split between the groups.
    pending: Option<GroupedRecord<M, B>>,
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> GroupedAdamW<M, B> {
    /// An optimiser decaying the parameters `rule` selects.
    pub fn new(config: &OptimizerConfig, rule: DecayRule) -> Self {
        let base = AdamWConfig::new().with_beta_1(config.beta1).with_beta_2(config.beta2).with_epsilon(config.eps);
        Self {
            decay: base.clone().with_weight_decay(config.weight_decay).init(),
            no_decay: base.with_weight_decay(0.0).init(),
            rule,
            grad_clip: config.grad_clip.filter(|&c| c > 0.0),
            pending: None,
        }
    }
}

impl<M: AutodiffModule<B>, B: AutodiffBackend> Optimizer<M, B> for GroupedAdamW<M, B> {
    type Record = GroupedRecord<M, B>;

    fn step(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> M {
        let ids: HashSet<ParamId> = select_params::<B, M>(&module, self.rule).0.into_iter().collect();
        if let Some(record) = self.pending.take() {
            let mut decay = record.clone();
            let mut no_decay = record;
            decay.retain(|id, _| ids.contains(id));
            no_decay.retain(|id, _| !ids.contains(id));
            self.decay = self.decay.clone().load_record(decay);
            self.no_decay = self.no_decay.clone().load_record(no_decay);
        }
        if let Some(max) = self.grad_clip {
            clip_global_norm::<B, M>(&module, &mut grads, max);
        }
        let mut split = Split { ids: &ids, from: &mut grads, to: GradientsParams::new() };
        module.visit(&mut split);
        let decayed = split.to;
        let module = self.decay.step(lr, module, decayed);
        self.no_decay.step(lr, module, grads)
    }

    fn step_multi(&mut self, _lr: f64, _module: M, _grads: MultiGradientsParams) -> M {
        unimplemented!("multi-device training is not supported by nbp's optimiser")
    }

    fn to_record(&self) -> Self::Record {
        if let Some(p) = &self.pending {
            return p.clone();
        }
        let mut record = self.decay.to_record();
        record.extend(self.no_decay.to_record());
        record
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.pending = Some(record);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};

    type B = Autodiff<Flex>;

    #[derive(Module, Debug)]
    struct Net<B: Backend> {
        emb: Embedding<B>,
        fc: Linear<B>,
        blocks: Vec<Linear<B>>,
    }

    fn net(device: &burn::prelude::Device<B>) -> Net<B> {
        Net {
            emb: EmbeddingConfig::new(5, 3).init(device),
            fc: LinearConfig::new(3, 2).init(device),
            blocks: vec![LinearConfig::new(2, 2).init(device)],
        }
    }

    #[test]
    fn linear_weights_are_selected_and_nothing_else() {
        let device = Default::default();
        let n = net(&device);
        let (sel, all) = select_params::<B, _>(&n, decay_linear_weights);
        assert_eq!(all.len(), 5, "emb.weight, fc.weight, fc.bias, blocks.0.weight, blocks.0.bias");
        assert_eq!(sel, vec![n.fc.weight.id, n.blocks[0].weight.id]);
    }

    #[test]
    fn global_norm_clipping_matches_a_hand_computation() {
        let device = Default::default();
        let n = net(&device);
        // Gradients by hand: fc.weight = 3 everywhere (6 values), blocks.0.bias = 4 (2 values): norm = sqrt(54 + 32).
        let mut grads = GradientsParams::new();
        grads.register(n.fc.weight.id, Tensor::<Flex, 2>::full([3, 2], 3.0, &device));
        grads.register(n.blocks[0].bias.as_ref().unwrap().id, Tensor::<Flex, 1>::full([2], 4.0, &device));
        assert!((global_grad_norm::<B, _>(&n, &mut grads) - 86f64.sqrt()).abs() < 1e-5);
        clip_global_norm::<B, _>(&n, &mut grads, 1.0);
        let coef = 1.0 / (86f64.sqrt() + 1e-6);
        let w: Vec<f32> = grads.get::<Flex, 2>(n.fc.weight.id).unwrap().into_data().to_vec().unwrap();
        let b: Vec<f32> =
            grads.get::<Flex, 1>(n.blocks[0].bias.as_ref().unwrap().id).unwrap().into_data().to_vec().unwrap();
        assert!(w.iter().all(|&x| ((x as f64) - 3.0 * coef).abs() < 1e-6), "{w:?}");
        assert!(b.iter().all(|&x| ((x as f64) - 4.0 * coef).abs() < 1e-6), "{b:?}");
        let after = global_grad_norm::<B, _>(&n, &mut grads);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Below the limit nothing changes.
        clip_global_norm::<B, _>(&n, &mut grads, 5.0);
        assert!((global_grad_norm::<B, _>(&n, &mut grads) - after).abs() < 1e-6);
    }

    #[test]
    fn only_decayed_parameters_shrink_without_gradient_signal() {
        // With a zero gradient AdamW's update is pure weight decay: decayed weights shrink by (1 − lr·wd),
        // the others stay put.
        let device = Default::default();
        let n = net(&device);
        let cfg = OptimizerConfig { weight_decay: 0.5, grad_clip: None, ..Default::default() };
        let mut opt = GroupedAdamW::new(&cfg, decay_linear_weights);
        let before_w: Vec<f32> = n.fc.weight.val().into_data().to_vec().unwrap();
        let before_e: Vec<f32> = n.emb.weight.val().into_data().to_vec().unwrap();
        let mut grads = GradientsParams::new();
        grads.register(n.fc.weight.id, Tensor::<Flex, 2>::zeros([3, 2], &device));
        grads.register(n.emb.weight.id, Tensor::<Flex, 2>::zeros([5, 3], &device));
        let n2 = opt.step(0.1, n, grads);
        let after_w: Vec<f32> = n2.fc.weight.val().into_data().to_vec().unwrap();
        let after_e: Vec<f32> = n2.emb.weight.val().into_data().to_vec().unwrap();
        for (a, b) in after_w.iter().zip(&before_w) {
            assert!((a - b * 0.95).abs() < 1e-6, "{a} vs {b}");
        }
        assert_eq!(after_e, before_e);
        // The record holds the state of both groups and loads back.
        let rec = opt.to_record();
        assert_eq!(rec.len(), 2);
        let opt2 = GroupedAdamW::<Net<B>, B>::new(&cfg, decay_linear_weights).load_record(rec);
        assert_eq!(opt2.to_record().len(), 2);
        let _ = n2;
    }

    #[test]
    fn the_gpt_decays_exactly_its_linear_weights() {
        // Official rule: every nn.Linear weight (q/k/v/proj, both MLP layers, head); not biases, LayerNorms,
        // the token and position embeddings or the null-condition embedding.
        let device = Default::default();
        let config = nbp_model::config::GptConfig::preset("tiny", 50, 1).unwrap();
        let gpt = nbp_model::gpt::Gpt::<B>::new(&config, &device).unwrap();
        let (sel, all) = select_params::<B, _>(&gpt, decay_linear_weights);
        assert_eq!(sel.len(), 6 * config.n_layer + 1);
        assert!(sel.contains(&gpt.head.weight.id));
        assert!(!sel.contains(&gpt.tok_emb.weight.id) && !sel.contains(&gpt.pos_emb.id));
        assert!(!sel.contains(&gpt.uncond_embedding.id));
        assert!(all.len() > sel.len());
    }
}
