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
        let x = match crate::cpu::swish(x, &self.beta.val()) {
            Ok(y) => return y,
            Err(x) => x,
        };
        let [_, c, _, _, _] = x.dims();
        x.clone() * sigmoid(x * self.beta.val().reshape([1, c, 1, 1, 1]))
    }
}
