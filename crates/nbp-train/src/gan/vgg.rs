//! The convolutional part (`features`) of torchvision's VGG16, cut into the five slices LPIPS uses.
//!
//! torchvision's `vgg16().features` is a `Sequential` of 31 layers: 13 convolutions (3×3, padding 1, with bias),
//! each followed by ReLU, and 2×2 max-pools (stride 2) at indices 4, 9, 16, 23 and 30. LPIPS splits it before
//! indices 4, 9, 16, 23 and 30, i.e. it reads the activations `relu1_2`, `relu2_2`, `relu3_3`, `relu4_3` and
//! `relu5_3` (the last max-pool is never used). The convolutions sit at the `features` indices
//! [`VGG16_CONV_INDICES`], which name the tensors of a torchvision state dict (`features.{index}.weight`).

use burn::nn::PaddingConfig2d;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::prelude::*;
use burn::tensor::activation::relu;

/// Indices of the 13 convolutions inside torchvision's `vgg16().features`.
pub const VGG16_CONV_INDICES: [usize; 13] = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28];

/// Number of convolutions in each of the five stages.
pub const VGG16_STAGE_CONVS: [usize; 5] = [2, 2, 3, 3, 3];

/// Configuration of [`Vgg16Features`].
#[derive(Config, Debug)]
pub struct Vgg16FeaturesConfig {
    /// Output channels of the five stages (torchvision: 64, 128, 256, 512, 512).
    #[config(default = "[64, 128, 256, 512, 512]")]
    pub widths: [usize; 5],
}

impl Vgg16FeaturesConfig {
    /// Builds the network with Burn's default (random) convolution initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vgg16Features<B> {
        let mut convs = Vec::with_capacity(13);
        let mut c_in = 3;
        for (&width, &n) in self.widths.iter().zip(&VGG16_STAGE_CONVS) {
            for _ in 0..n {
                convs.push(
                    Conv2dConfig::new([c_in, width], [3, 3])
                        .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                        .init(device),
                );
                c_in = width;
            }
        }
        Vgg16Features { convs, pool: MaxPool2dConfig::new([2, 2]).init() }
    }
}

/// VGG16 `features` up to `relu5_3`.
#[derive(Module, Debug)]
pub struct Vgg16Features<B: Backend> {
    /// The 13 convolutions in order (`features.{VGG16_CONV_INDICES[i]}`), weights `[c_out, c_in, 3, 3]`.
    pub convs: Vec<Conv2d<B>>,
    /// 2×2 max-pool, stride 2 (floor), before stages 2–5.
    pub pool: MaxPool2d,
}

impl<B: Backend> Vgg16Features<B> {
    /// `[n, 3, h, w]` (already scaled) → the five taps `relu1_2 … relu5_3`, tap `k` of shape
    /// `[n, widths[k], h / 2^k, w / 2^k]` (each pool rounds down).
    pub fn forward(&self, x: Tensor<B, 4>) -> Vec<Tensor<B, 4>> {
        let mut convs = self.convs.iter();
        let mut taps = Vec::with_capacity(5);
        let mut x = x;
        for (stage, &n) in VGG16_STAGE_CONVS.iter().enumerate() {
            if stage > 0 {
                x = self.pool.forward(x);
            }
            for conv in convs.by_ref().take(n) {
                x = relu(conv.forward(x));
            }
            taps.push(x.clone());
        }
        taps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    #[test]
    fn default_widths_and_tap_shapes() {
        let dev = Default::default();
        let vgg = Vgg16FeaturesConfig::new().init::<Flex>(&dev);
        let shapes: Vec<[usize; 4]> = vgg.convs.iter().map(|c| c.weight.lazy_shape().dims::<4>()).collect();
        assert_eq!(shapes[0], [64, 3, 3, 3]);
        assert_eq!(shapes[1], [64, 64, 3, 3]);
        assert_eq!(shapes[2], [128, 64, 3, 3]);
        assert_eq!(shapes[4], [256, 128, 3, 3]);
        assert_eq!(shapes[7], [512, 256, 3, 3]);
        assert_eq!(shapes[12], [512, 512, 3, 3]);
        let small = Vgg16FeaturesConfig::new().with_widths([2, 3, 4, 5, 6]).init::<Flex>(&dev);
        let taps = small.forward(Tensor::zeros([1, 3, 33, 20], &dev));
        let dims: Vec<[usize; 4]> = taps.iter().map(|t| t.dims()).collect();
        assert_eq!(dims, [[1, 2, 33, 20], [1, 3, 16, 10], [1, 4, 8, 5], [1, 5, 4, 2], [1, 6, 2, 1]]);
    }
}
