//! Pre-activation residual unit of the tokenizer (reference §1.2, `ResidualUnit`).

use burn::prelude::*;

use crate::causal_conv3d::{CausalConv3d, CausalConv3dConfig};
use crate::group_norm3d::{GroupNorm3d, GroupNorm3dConfig};
use crate::swish::{Swish, SwishConfig};

/// Configuration of a [`ResidualUnit`].
#[derive(Config, Debug)]
pub struct ResidualUnitConfig {
    /// `[input channels, output channels]`.
    pub channels: [usize; 2],
    /// Groups of the two GroupNorms.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// `false` leaves out both GroupNorms.
    #[config(default = true)]
    pub group_norm: bool,
}

impl ResidualUnitConfig {
    /// Initialises the unit; a 1×1×1 shortcut convolution is created when the channel count changes.
    pub fn init<B: Backend>(&self, device: &B::Device) -> ResidualUnit<B> {
        let [cin, cout] = self.channels;
        ResidualUnit {
            norm1: self.group_norm.then(|| GroupNorm3dConfig::new(self.norm_groups, cin).init(device)),
            act1: SwishConfig::new(cin).init(device),
            conv1: CausalConv3dConfig::new([cin, cout]).init(device),
            norm2: self.group_norm.then(|| GroupNorm3dConfig::new(self.norm_groups, cout).init(device)),
            act2: SwishConfig::new(cout).init(device),
            conv2: CausalConv3dConfig::new([cout, cout]).init(device),
            shortcut: (cin != cout).then(|| CausalConv3dConfig::new([cin, cout]).with_kernel([1, 1, 1]).init(device)),
        }
    }
}

/// `y = conv2(swish2(norm2(conv1(swish1(norm1(x)))))) + shortcut(x)`; the shortcut is the identity or a
/// 1×1×1 convolution when the channel count changes; without GroupNorm (`group_norm = false`) the norms are the
/// identity. Official keys: `fn.0` … `fn.5`, `residual_fn.0`.
#[derive(Module, Debug)]
pub struct ResidualUnit<B: Backend> {
    pub norm1: Option<GroupNorm3d<B>>,
    pub act1: Swish<B>,
    pub conv1: CausalConv3d<B>,
    pub norm2: Option<GroupNorm3d<B>>,
    pub act2: Swish<B>,
    pub conv2: CausalConv3d<B>,
    pub shortcut: Option<CausalConv3d<B>>,
}

impl<B: Backend> ResidualUnit<B> {
    /// `[batch, c_in, time, height, width]` → `[batch, c_out, time, height, width]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let norm = |n: &Option<GroupNorm3d<B>>, x| match n {
            Some(n) => n.forward(x),
            None => x,
        };
        let h = self.conv1.forward(self.act1.forward(norm(&self.norm1, x.clone())));
        let h = self.conv2.forward(self.act2.forward(norm(&self.norm2, h)));
        let skip = match &self.shortcut {
            Some(conv) => conv.forward(x),
            None => x,
        };
        h + skip
    }
}
