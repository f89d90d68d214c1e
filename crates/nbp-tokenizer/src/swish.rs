//! Swish activation with a learnable per-channel slope (reference §1.2).

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::sigmoid;

/// Configuration of a [`Swish`].
#[derive(Config, Debug)]
pub struct SwishConfig {
    /// Number of channels.
    pub channels: usize,
}

impl SwishConfig {
    /// Initialises every `beta` to 1 (plain SiLU).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Swish<B> {
        Swish { beta: Param::from_tensor(Tensor::ones([self.channels], device)) }
    }
}

/// `x · σ(β_c · x)` with one learnable `β` per channel.
#[derive(Module, Debug)]
pub struct Swish<B: Backend> {
    /// Slopes `[channels]` (stored `[1, C, 1, 1, 1]` in official checkpoints).
    pub beta: Param<Tensor<B, 1>>,
}

impl<B: Backend> Swish<B> {
    /// `[batch, channels, time, height, width]` → same shape.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let beta = self.beta.val();
        let x = match crate::cpu::swish(x, &beta) {
            Ok(y) => return y,
            Err(x) => x,
        };
        match crate::autodiff::swish(x, &beta) {
            Ok(y) => y,
            Err(x) => self.forward_generic(x),
        }
    }

    /// [`Self::forward`] in plain tensor operations, for every backend.
    pub(crate) fn forward_generic(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [_, c, _, _, _] = x.dims();
        x.clone() * sigmoid(x * self.beta.val().reshape([1, c, 1, 1, 1]))
    }
}
