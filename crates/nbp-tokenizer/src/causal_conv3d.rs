//! Causal 3D convolution with replicate padding (reference §1.2).

use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::prelude::*;

/// Configuration of a [`CausalConv3d`].
#[derive(Config, Debug)]
pub struct CausalConv3dConfig {
    /// `[input channels, output channels]`.
    pub channels: [usize; 2],
    /// Kernel size `[time, height, width]`.
    #[config(default = "[3, 3, 3]")]
    pub kernel: [usize; 3],
    /// Stride `[time, height, width]`.
    #[config(default = "[1, 1, 1]")]
    pub stride: [usize; 3],
}

impl CausalConv3dConfig {
    /// Initialises the convolution (PyTorch's default uniform initialisation).
    pub fn init<B: Backend>(&self, device: &B::Device) -> CausalConv3d<B> {
        CausalConv3d {
            conv: Conv3dConfig::new(self.channels, self.kernel).with_stride(self.stride).init(device),
            kernel: self.kernel,
        }
    }
}

/// A 3D convolution that is causal in time.
///
/// The input is padded by replicating its edges: `2·(kt/2)` copies of the first frame in front and none at the
/// back (so output frame `t` only sees input frames `≤ t`), `kh/2` rows and `kw/2` columns on each side; then a
/// convolution without padding is applied. For 3×3×3 kernels and stride `s`:
/// `T_out = ⌊(T − 1)/s_t⌋ + 1`, `H_out = ⌊(H − 1)/s_h⌋ + 1`.
#[derive(Module, Debug)]
pub struct CausalConv3d<B: Backend> {
    /// The convolution; weight `[c_out, c_in, kt, kh, kw]` (PyTorch layout), bias `[c_out]`.
    pub conv: Conv3d<B>,
    kernel: [usize; 3],
}

impl<B: Backend> CausalConv3d<B> {
    /// `[batch, c_in, time, height, width]` → `[batch, c_out, time', height', width']`.
    pub fn forward(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [kt, kh, kw] = self.kernel;
        if self.kernel == [1, 1, 1] && self.conv.stride == [1, 1, 1] {
            return pointwise_conv3d(&self.conv, x);
        }
        let pad = [2 * (kt / 2), kh / 2, kw / 2];
        if let Some(y) = crate::cpu::conv3d(&self.conv, &x, pad) {
            return y;
        }
        match crate::autodiff::causal_conv3d(&self.conv, x, pad) {
            Ok(y) => y,
            Err(x) => self.conv.forward(replicate_pad(x, pad)),
        }
    }

    /// Kernel size `[time, height, width]`.
    pub fn kernel(&self) -> [usize; 3] {
        self.kernel
    }
}

/// A 1×1×1 convolution with stride 1, computed as one matrix product over all positions.
///
/// `[batch, c_in, T, H, W]` → `[batch, c_out, T, H, W]`. Equivalent to `conv.forward(x)`, but faster, and it
/// avoids the CubeCL 0.10 direct-conv kernel that returns wrong values for some 1×1×1 shapes on wgpu.
pub fn pointwise_conv3d<B: Backend>(conv: &Conv3d<B>, x: Tensor<B, 5>) -> Tensor<B, 5> {
    let [b, cin, t, h, w] = x.dims();
    let [cout, ..] = conv.weight.dims();
    let weight = conv.weight.val().reshape([1, cout, cin]);
    let y = weight.matmul(x.reshape([b, cin, t * h * w]));
    let y = match &conv.bias {
        Some(bias) => y + bias.val().reshape([1, cout, 1]),
        None => y,
    };
    y.reshape([b, cout, t, h, w])
}

/// Replicate ("edge") padding of `[batch, c, T, H, W]`: `pad[0]` copies of the first frame in front (none at the
/// back), `pad[1]` copies of the first/last row and `pad[2]` of the first/last column on each side.
///
/// Same result as `Tensor::pad(.., PadMode::Edge)`, built from one concatenation per axis, which is about three
/// times faster on the CPU backend.
pub fn replicate_pad<B: Backend>(x: Tensor<B, 5>, [pt, ph, pw]: [usize; 3]) -> Tensor<B, 5> {
    let edges = |x: Tensor<B, 5>, dim: usize, before: usize, after: usize| -> Tensor<B, 5> {
        if before == 0 && after == 0 {
            return x;
        }
        let n = x.dims()[dim];
        let first = x.clone().narrow(dim, 0, 1);
        let last = x.clone().narrow(dim, n - 1, 1);
        let mut parts = vec![first; before];
        parts.push(x);
        parts.extend(std::iter::repeat_n(last, after));
        Tensor::cat(parts, dim)
    };
    let x = edges(x, 2, pt, 0);
    let x = edges(x, 3, ph, ph);
    edges(x, 4, pw, pw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::tensor::ops::PadMode;

    #[test]
    fn replicate_pad_equals_edge_padding() {
        let dev = Default::default();
        let x = Tensor::<Flex, 5>::random([2, 3, 4, 5, 6], burn::tensor::Distribution::Default, &dev);
        let ours = replicate_pad(x.clone(), [2, 1, 1]);
        let reference = x.pad([(2, 0), (1, 1), (1, 1)], PadMode::Edge);
        assert_eq!(ours.dims(), [2, 3, 6, 7, 8]);
        assert_eq!(ours.into_data().into_vec::<f32>().unwrap(), reference.into_data().into_vec::<f32>().unwrap());
    }
}
