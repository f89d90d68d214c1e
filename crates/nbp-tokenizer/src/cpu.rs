//! Fast paths for the pure-Rust `flex` backend: the tokenizer's convolutions run on the implicit matrix product
//! of `nbp-kernels` instead of Burn's direct convolution (about 2× faster here), and its group norms and
//! Swish activations in one pass each.
//!
//! Each function returns `None` when it does not apply (another backend, including `Autodiff<Flex>` during
//! training, which `autodiff.rs` serves; for [`conv3d`] also a CPU without AVX-512, few input channels,
//! padding, dilation or groups), and the caller then takes the generic tensor path. Both compute the same
//! function; only the order of the floating-point sums differs.

use burn::nn::PaddingConfig3d;
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use nbp_core::flex::{contiguous, flex_f32, is_flex, update_f32};
use nbp_kernels::Conv3dShape;

/// Input channels below which the kernel's vectors (which run over input channels) would be mostly empty.
pub(crate) const MIN_CHANNELS: usize = 16;

/// `conv.forward(replicate_pad(x, pad))` for `x: [batch, c_in, T, H, W]` (the padding is done while the input is
/// copied to the kernel's layout).
pub(crate) fn conv3d<B: Backend>(conv: &Conv3d<B>, x: &Tensor<B, 5>, pad: [usize; 3]) -> Option<Tensor<B, 5>> {
    if !is_flex::<B>() || !nbp_kernels::available() {
        return None;
    }
    let [batch, c_in, t, h, w] = x.dims();
    let [c_out, c_in_w, kt, kh, kw] = conv.weight.dims();
    let plain = conv.dilation == [1, 1, 1] && conv.groups == 1 && matches!(conv.padding, PaddingConfig3d::Valid);
    let shape = Conv3dShape { c_in, c_out, input: [t, h, w], pad, kernel: [kt, kh, kw], stride: conv.stride };
    let [tp, hp, wp] = shape.padded();
    if !plain || c_in != c_in_w || c_in < MIN_CHANNELS || t == 0 || h == 0 || w == 0 || tp < kt || hp < kh || wp < kw {
        return None;
    }
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

/// The f32 values of a flex tensor, copied (row-major); `None` on other backends.
fn values<B: Backend, const D: usize>(x: &Tensor<B, D>) -> Option<Vec<f32>> {
    if !is_flex::<B>() {
        return None;
    }
    Some(contiguous(flex_f32(x.clone())?).as_slice::<f32>()?.to_vec())
}

/// Per-frame group normalisation of `x: [batch, channels, time, height, width]` (see `GroupNorm3d`), in place
/// when `x` is not shared; `x` back when the fast path does not apply.
pub(crate) fn group_norm<B: Backend>(
    x: Tensor<B, 5>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    groups: usize,
    epsilon: f64,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let (Some(gamma), Some(beta)) = (values(gamma), values(beta)) else { return Err(x) };
    let [b, c, t, h, w] = x.dims();
    update_f32(x, |v| {
        nbp_kernels::norm::group_norm(v, [b, c, t, h * w], groups, &gamma, &beta, epsilon as f32);
        true
    })
}

/// `x·σ(β_c·x)` for `x: [batch, channels, time, height, width]`, in place when `x` is not shared; `x` back when
/// the fast path does not apply.
pub(crate) fn swish<B: Backend>(x: Tensor<B, 5>, beta: &Tensor<B, 1>) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let Some(beta) = values(beta) else { return Err(x) };
    let [b, c, t, h, w] = x.dims();
    update_f32(x, |v| {
        nbp_kernels::norm::swish(v, [b, c, t * h * w], &beta);
        true
    })
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
        // The last case is large enough for Winograd's transform (5 frames × 16 × 16 tiles of 2×2 outputs).
        let cases = [
            (16, 8, [1, 1, 1], [5, 9, 10]),
            (24, 20, [2, 2, 2], [5, 9, 10]),
            (32, 3, [1, 2, 2], [5, 9, 10]),
            (16, 12, [1, 1, 1], [5, 32, 32]),
        ];
        for (c_in, c_out, stride, [t, h, w]) in cases {
            let conv = Conv3dConfig::new([c_in, c_out], [3, 3, 3]).with_stride(stride).init::<Flex>(&dev);
            let x = Tensor::<Flex, 5>::random([2, c_in, t, h, w], burn::tensor::Distribution::Default, &dev);
            let ours = conv3d(&conv, &x, [2, 1, 1]).expect("the kernel path applies").into_data();
            let burn = conv.forward(crate::causal_conv3d::replicate_pad(x, [2, 1, 1])).into_data();
            assert_eq!(ours.shape, burn.shape);
            let (a, b) = (ours.into_vec::<f32>().unwrap(), burn.into_vec::<f32>().unwrap());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-4 * (1.0 + q.abs()), "{c_in}->{c_out} {stride:?} element {i}: {p} vs {q}");
            }
        }
        // Few input channels: Burn's path.
        let conv = Conv3dConfig::new([3, 8], [3, 3, 3]).init::<Flex>(&dev);
        assert!(conv3d(&conv, &Tensor::<Flex, 5>::zeros([1, 3, 3, 4, 4], &dev), [2, 1, 1]).is_none());
    }

    #[test]
    fn group_norm_and_swish_equal_the_generic_path() {
        use burn::module::Param;

        use crate::group_norm3d::GroupNorm3dConfig;
        use crate::swish::SwishConfig;
        type Generic = burn::backend::Autodiff<Flex>;
        let dev = Default::default();
        let dist = burn::tensor::Distribution::Uniform(-2.0, 2.0);
        let x = Tensor::<Flex, 5>::random([2, 8, 3, 5, 6], dist, &dev);
        let (gamma, beta) = (Tensor::<Flex, 1>::random([8], dist, &dev), Tensor::<Flex, 1>::random([8], dist, &dev));
        let generic = |t: Tensor<Flex, 5>| Tensor::<Generic, 5>::from_data(t.into_data(), &dev);
        let param = |t: &Tensor<Flex, 1>| Param::from_tensor(Tensor::<Generic, 1>::from_data(t.to_data(), &dev));
        let close = |a: Tensor<Flex, 5>, b: Tensor<Generic, 5>| {
            let (a, b) = (a.into_data().into_vec::<f32>().unwrap(), b.into_data().into_vec::<f32>().unwrap());
            assert_eq!(a.len(), b.len());
            for (i, (p, q)) in a.iter().zip(&b).enumerate() {
                assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "element {i}: {p} vs {q}");
            }
        };

        let mut fast_norm = GroupNorm3dConfig::new(4, 8).init::<Flex>(&dev);
        fast_norm.gamma = Param::from_tensor(gamma.clone());
        fast_norm.beta = Param::from_tensor(beta.clone());
        let mut slow_norm = GroupNorm3dConfig::new(4, 8).init::<Generic>(&dev);
        slow_norm.gamma = param(&gamma);
        slow_norm.beta = param(&beta);
        close(fast_norm.forward(x.clone()), slow_norm.forward(generic(x.clone())));
        // A tensor shared with another (here `x`) is copied, not changed in place.
        let before = x.to_data();
        let _ = fast_norm.forward(x.clone());
        assert_eq!(x.to_data(), before);

        let mut fast_swish = SwishConfig::new(8).init::<Flex>(&dev);
        fast_swish.beta = Param::from_tensor(gamma.clone());
        let mut slow_swish = SwishConfig::new(8).init::<Generic>(&dev);
        slow_swish.beta = param(&gamma);
        close(fast_swish.forward(x.clone()), slow_swish.forward(generic(x)));
    }
}
