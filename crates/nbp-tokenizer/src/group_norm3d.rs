//! Group normalisation applied to each frame separately (reference §1.2, `GroupNorm3D`).

use burn::module::Param;
use burn::prelude::*;

/// Configuration of a [`GroupNorm3d`].
#[derive(Config, Debug)]
pub struct GroupNorm3dConfig {
    /// Number of groups (32 in the official tokenizer).
    pub groups: usize,
    /// Number of channels; must be a multiple of `groups`.
    pub channels: usize,
    /// Added to the variance.
    #[config(default = 1e-5)]
    pub epsilon: f64,
}

impl GroupNorm3dConfig {
    /// Initialises the affine parameters to the identity (`gamma = 1`, `beta = 0`).
    pub fn init<B: Backend>(&self, device: &B::Device) -> GroupNorm3d<B> {
        assert!(
            self.groups > 0 && self.channels.is_multiple_of(self.groups),
            "GroupNorm3d: {} channels are not divisible into {} groups",
            self.channels,
            self.groups
        );
        GroupNorm3d {
            gamma: Param::from_tensor(Tensor::ones([self.channels], device)),
            beta: Param::from_tensor(Tensor::zeros([self.channels], device)),
            groups: self.groups,
            epsilon: self.epsilon,
        }
    }
}

/// GroupNorm whose statistics are taken per frame: for every batch item, group and frame, the mean and the
/// (biased) variance run over the group's `C/G` channels and the frame's `H × W` pixels. This equals PyTorch's
/// `GroupNorm` applied to `(B·T, C, H, W)`, which is what the official code does.
#[derive(Module, Debug)]
pub struct GroupNorm3d<B: Backend> {
    /// Scale `[channels]` (PyTorch `weight`).
    pub gamma: Param<Tensor<B, 1>>,
    /// Shift `[channels]` (PyTorch `bias`).
    pub beta: Param<Tensor<B, 1>>,
    groups: usize,
    epsilon: f64,
}

impl<B: Backend> GroupNorm3d<B> {
    /// `[batch, channels, time, height, width]` → same shape.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let (gamma, beta) = (self.gamma.val(), self.beta.val());
        let x = match crate::cpu::group_norm(x, &gamma, &beta, self.groups, self.epsilon) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match crate::autodiff::group_norm(x, &gamma, &beta, self.groups, self.epsilon) {
            Ok(y) => y,
            Err(x) => self.forward_generic(x),
        }
    }

    /// [`Self::forward`] in plain tensor operations, for every backend.
    pub(crate) fn forward_generic(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [b, c, t, h, w] = x.dims();
        let g = self.groups;
        let x = x.reshape([b, g, c / g, t, h * w]);
        let mean = x.clone().mean_dim(4).mean_dim(2); // [b, g, 1, t, 1]
        let centred = x - mean;
        let var = centred.clone().square().mean_dim(4).mean_dim(2);
        let normed = (centred / var.add_scalar(self.epsilon).sqrt()).reshape([b, c, t, h, w]);
        normed * self.gamma.val().reshape([1, c, 1, 1, 1]) + self.beta.val().reshape([1, c, 1, 1, 1])
    }
}
