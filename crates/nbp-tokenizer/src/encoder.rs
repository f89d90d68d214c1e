//! The tokenizer's encoder (reference §1.3).

use burn::nn::conv::Conv3dConfig;
use burn::prelude::*;

use crate::causal_conv3d::CausalConv3dConfig;
use crate::config::{DOWN_STRIDES, TokenizerConfig};
use crate::group_norm3d::GroupNorm3dConfig;
use crate::layer::{Layer, run_layers};
use crate::residual_unit::ResidualUnitConfig;
use crate::swish::SwishConfig;

/// Causal 3D CNN from pixels to FSQ inputs: `[B, 3, 1 + 4n, H, W]` in `[0, 1]` → `[B, D, 1 + n, H/8, W/8]`.
#[derive(Module, Debug)]
pub struct Encoder<B: Backend> {
    /// The official `encoder_layers`, in order.
    pub layers: Vec<Layer<B>>,
}

impl<B: Backend> Encoder<B> {
    /// Builds the layer list of `config` with fresh (PyTorch-default) weights.
    pub fn new(config: &TokenizerConfig, device: &B::Device) -> Self {
        let c = &config.channels;
        let groups = config.norm_groups;
        let mut layers = vec![Layer::Conv(CausalConv3dConfig::new([3, c[0]]).init(device))];
        let mut cin = c[0];
        for stage in 0..4 {
            for _ in 0..config.encoder_res_blocks[stage] {
                layers.push(Layer::Residual(
                    ResidualUnitConfig::new([cin, c[stage]])
                        .with_norm_groups(groups)
                        .with_group_norm(config.group_norm)
                        .init(device),
                ));
                cin = c[stage];
            }
            if stage < 3 {
                let conv = CausalConv3dConfig::new([cin, cin]).with_stride(DOWN_STRIDES[stage]);
                layers.push(Layer::Conv(conv.init(device)));
            }
        }
        if config.group_norm {
            layers.push(Layer::Norm(GroupNorm3dConfig::new(groups, cin).init(device)));
        }
        layers.push(Layer::Swish(SwishConfig::new(cin).init(device)));
        layers.push(Layer::Project(Conv3dConfig::new([cin, config.fsq_levels.len()], [1, 1, 1]).init(device)));
        Self { layers }
    }

    /// `[B, 3, T, H, W]` → `[B, D, T', H/8, W/8]`; `on_layer(i, n)` is called after layer `i` of `n`.
    pub fn forward_observed(&self, x: Tensor<B, 5>, on_layer: &mut dyn FnMut(usize, usize)) -> Tensor<B, 5> {
        run_layers(&self.layers, x, on_layer)
    }

    /// `[B, 3, T, H, W]` → `[B, D, T', H/8, W/8]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        self.forward_observed(x, &mut |_, _| {})
    }
}
