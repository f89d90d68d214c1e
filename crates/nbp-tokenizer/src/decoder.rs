//! The tokenizer's decoder (reference §1.4).

use burn::prelude::*;

use crate::causal_conv3d::CausalConv3dConfig;
use crate::config::{TokenizerConfig, UP_FACTORS};
use crate::depth_to_space::DepthToSpace3d;
use crate::group_norm3d::GroupNorm3dConfig;
use crate::layer::{Layer, run_layers};
use crate::residual_unit::ResidualUnitConfig;
use crate::swish::SwishConfig;

/// Causal 3D CNN from FSQ codes to pixels: `[B, D, 1 + n, h, w]` → `[B, 3, 1 + 4n, 8h, 8w]` (not clamped).
#[derive(Module, Debug)]
pub struct Decoder<B: Backend> {
    /// The official `decoder_layers`, in order.
    pub layers: Vec<Layer<B>>,
}

impl<B: Backend> Decoder<B> {
    /// Builds the layer list of `config` with fresh (PyTorch-default) weights.
    pub fn new(config: &TokenizerConfig, device: &B::Device) -> Self {
        let d: Vec<usize> = config.channels.iter().rev().copied().collect();
        let groups = config.norm_groups;
        let mut layers = vec![Layer::Conv(CausalConv3dConfig::new([config.fsq_levels.len(), d[0]]).init(device))];
        let mut cin = d[0];
        for stage in 0..4 {
            for _ in 0..config.decoder_res_blocks[stage] {
                layers.push(Layer::Residual(
                    ResidualUnitConfig::new([cin, d[stage]])
                        .with_norm_groups(groups)
                        .with_group_norm(config.group_norm)
                        .init(device),
                ));
                cin = d[stage];
            }
            if stage < 3 {
                let f = UP_FACTORS[stage];
                layers.push(Layer::Conv(CausalConv3dConfig::new([cin, cin * f[0] * f[1] * f[2]]).init(device)));
                layers.push(Layer::DepthToSpace(DepthToSpace3d::new(f)));
            }
        }
        if config.group_norm {
            layers.push(Layer::Norm(GroupNorm3dConfig::new(groups, cin).init(device)));
        }
        layers.push(Layer::Swish(SwishConfig::new(cin).init(device)));
        layers.push(Layer::Conv(CausalConv3dConfig::new([cin, 3]).init(device)));
        Self { layers }
    }

    /// `[B, D, T', h, w]` → `[B, 3, T, 8h, 8w]`; `on_layer(i, n)` is called after layer `i` of `n`.
    pub fn forward_observed(&self, x: Tensor<B, 5>, on_layer: &mut dyn FnMut(usize, usize)) -> Tensor<B, 5> {
        run_layers(&self.layers, x, on_layer)
    }

    /// `[B, D, T', h, w]` → `[B, 3, T, 8h, 8w]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        self.forward_observed(x, &mut |_, _| {})
    }
}
