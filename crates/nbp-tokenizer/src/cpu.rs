//! Fast path for the pure-Rust `flex` backend: the tokenizer's convolutions run on the implicit matrix product
//! of `nbp-kernels` instead of Burn's direct convolution (about 2× faster here).
//!
//! [`conv3d`] returns `None` when it does not apply (another backend, including `Autodiff<Flex>` during
//! training; a CPU without AVX-512; few input channels; padding, dilation or groups), and the caller then uses
//! `Conv3d::forward`. Both compute the same function; only the order of the floating-point sums differs.

use burn::nn::PaddingConfig3d;
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use nbp_core::flex::{contiguous, flex_f32, is_flex};
use nbp_kernels::Conv3dShape;

/// Input channels below which the kernel's vectors (which run over input channels) would be mostly empty.
const MIN_CHANNELS: usize = 16;

/// `conv.forward(x)` for an already padded `x: [batch, c_in, T, H, W]`.
pub(crate) fn conv3d<B: Backend>(conv: &Conv3d<B>, x: &Tensor<B, 5>) -> Option<Tensor<B, 5>> {
    if !is_flex::<B>() || !nbp_kernels::available() {
        return None;
    }
    let [batch, c_in, t, h, w] = x.dims();
    let [c_out, c_in_w, kt, kh, kw] = conv.weight.dims();
    let plain = conv.dilation == [1, 1, 1] && conv.groups == 1 && matches!(conv.padding, PaddingConfig3d::Valid);
    if !plain || c_in != c_in_w || c_in < MIN_CHANNELS || t < kt || h < kh || w < kw {
        return None;
    }
    let shape = Conv3dShape { c_in, c_out, input: [t, h, w], kernel: [kt, kh, kw], stride: conv.stride };
    let [to, ho, wo] = shape.output();
    let (xf, wf) = (contiguous(flex_f32(x.clone())?), contiguous(flex_f32(conv.weight.val())?));
    let bf = match &conv.bias {
        Some(b) => Some(contiguous(flex_f32(b.val())?)),
        None => None,
    };
    let (xs, ws) = (xf.as_slice::<f32>()?, wf.as_slice::<f32>()?);
    let bs = match &bf {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    let (per_in, per_out) = (c_in * t * h * w, c_out * to * ho * wo);
    let mut out = vec![0.0f32; batch * per_out];
    for (xb, ob) in xs.chunks(per_in).zip(out.chunks_mut(per_out)) {
        if !nbp_kernels::conv3d(xb, ws, bs, ob, shape) {
            return None;
        }
    }
    Some(Tensor::from_data(TensorData::new(out, [batch, c_out, to, ho, wo]), &x.device()))
}

#[cfg(test)]
mod tests {
    use burn::backend::Flex;
    use burn::nn::conv::Conv3dConfig;

    use super::*;

    #[test]
    fn equals_burns_convolution_with_strides_and_batches() {
        if !nbp_kernels::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let dev = Default::default();
        for (c_in, c_out, stride) in [(16, 8, [1, 1, 1]), (24, 20, [2, 2, 2]), (32, 3, [1, 2, 2])] {
            let conv = Conv3dConfig::new([c_in, c_out], [3, 3, 3]).with_stride(stride).init::<Flex>(&dev);
            let x = Tensor::<Flex, 5>::random([2, c_in, 5, 9, 10], burn::tensor::Distribution::Default, &dev);
            let ours = conv3d(&conv, &x).expect("the kernel path applies").into_data();
            let burn = conv.forward(x).into_data();
            assert_eq!(ours.shape, burn.shape);
            let (a, b) = (ours.into_vec::<f32>().unwrap(), burn.into_vec::<f32>().unwrap());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{c_in}->{c_out} {stride:?} element {i}: {p} vs {q}");
            }
        }
        // Few input channels: Burn's path.
        let conv = Conv3dConfig::new([3, 8], [3, 3, 3]).init::<Flex>(&dev);
        assert!(conv3d(&conv, &Tensor::<Flex, 5>::zeros([1, 3, 3, 4, 4], &dev)).is_none());
    }
}
