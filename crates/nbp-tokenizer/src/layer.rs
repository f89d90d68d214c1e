//! One entry of the tokenizer's flat layer lists (the official `encoder_layers` / `decoder_layers`).

use burn::nn::conv::Conv3d;
use burn::prelude::*;

use crate::causal_conv3d::CausalConv3d;
use crate::depth_to_space::DepthToSpace3d;
use crate::group_norm3d::GroupNorm3d;
use crate::residual_unit::ResidualUnit;
use crate::swish::Swish;

/// A layer of the encoder or decoder. Keeping the official flat order makes layer `i` correspond to the
/// checkpoint keys `{encoder,decoder}_layers.i.*`.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)] // a few dozen layers per model: boxing would buy nothing
pub enum Layer<B: Backend> {
    /// Causal convolution (`i.conv.*`).
    Conv(CausalConv3d<B>),
    /// Residual unit (`i.fn.*`, `i.residual_fn.*`).
    Residual(ResidualUnit<B>),
    /// Per-frame GroupNorm (`i.weight`, `i.bias`).
    Norm(GroupNorm3d<B>),
    /// Learnable Swish (`i.beta`).
    Swish(Swish<B>),
    /// Plain 1×1×1 convolution to the code dimension (`i.weight`, `i.bias`; encoder only).
    Project(Conv3d<B>),
    /// Depth-to-space upsampling (no parameters; decoder only).
    DepthToSpace(DepthToSpace3d),
}

impl<B: Backend> Layer<B> {
    /// Applies the layer to `[batch, channels, time, height, width]`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        match self {
            Layer::Conv(l) => l.forward(x),
            Layer::Residual(l) => l.forward(x),
            Layer::Norm(l) => l.forward(x),
            Layer::Swish(l) => l.forward(x),
            Layer::Project(l) => crate::causal_conv3d::pointwise_conv3d(l, x),
            Layer::DepthToSpace(l) => l.forward(x),
        }
    }
}

/// Applies `layers` in order to `x`, calling `on_layer(i, n)` after layer `i` of `n` (for progress reports).
pub fn run_layers<B: Backend>(
    layers: &[Layer<B>],
    mut x: Tensor<B, 5>,
    on_layer: &mut dyn FnMut(usize, usize),
) -> Tensor<B, 5> {
    for (i, layer) in layers.iter().enumerate() {
        x = layer.forward(x);
        on_layer(i, layers.len());
    }
    x
}
