//! A linear layer that stores its weight as `[out, in]` (PyTorch's layout) and picks the faster product form.

use burn::module::Param;
use burn::prelude::*;

/// Configuration of a [`Linear`].
#[derive(Config, Debug)]
pub struct LinearConfig {
    pub d_in: usize,
    pub d_out: usize,
    #[config(default = true)]
    pub bias: bool,
}

impl LinearConfig {
    /// GPT-2 initialisation: weight N(0, 0.02), bias 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Linear<B> {
        let weight = Tensor::random([self.d_out, self.d_in], burn::tensor::Distribution::Normal(0.0, 0.02), device);
        Linear {
            weight: Param::from_tensor(weight),
            bias: self.bias.then(|| Param::from_tensor(Tensor::zeros([self.d_out], device))),
        }
    }
}

/// `y = x·Wᵀ + b` with `W: [out, in]`.
///
/// `W` may be stored in bfloat16 ([`Linear::with_weight_dtype`], for sampling): `x` is then rounded to the
/// weight's dtype for the product and the result returned in `x`'s dtype, with the bias (kept in f32) added
/// after. On flex (with AVX-512) the product runs in the `nbp-kernels` CPU kernel, which reads `W` in place
/// (bfloat16 weights on the AMX tile units, with AVX512-BF16, or widened to f32). Elsewhere,
/// during sampling only a block of tokens (often 1 to 16 rows) passes through each layer per step; for so few
/// rows the product is computed as `(W·xᵀ)ᵀ`, which streams the weight matrix once and is about 3–4 times
/// faster on a CPU than `x·Wᵀ`; many rows use `x·Wᵀ` directly.
#[derive(Module, Debug)]
pub struct Linear<B: Backend> {
    /// `[out, in]`.
    pub weight: Param<Tensor<B, 2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<B, 1>>>,
}

/// Row count up to which [`Linear`] uses the `(W·xᵀ)ᵀ` form.
const FEW_ROWS: usize = 256;

impl<B: Backend> Linear<B> {
    /// `x: [.., in]` → `[.., out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        let bias = self.bias.as_ref().map(|b| b.val());
        if let Some(y) = crate::cpu::linear(&x, &self.weight.val(), bias.as_ref()) {
            return y;
        }
        let dims = x.dims();
        let din = dims[D - 1];
        let rows: usize = dims[..D - 1].iter().product();
        let w = self.weight.val();
        let [dout, _] = w.dims();
        let x2 = x.reshape([rows, din]);
        let dtype = x2.dtype();
        let x2 = if w.dtype() == dtype { x2 } else { x2.cast(w.dtype()) };
        let y = if rows <= FEW_ROWS { w.matmul(x2.transpose()).transpose() } else { x2.matmul(w.transpose()) };
        let y = if y.dtype() == dtype { y } else { y.cast(dtype) };
        let y = match &self.bias {
            Some(b) => y + b.val().unsqueeze_dim::<2>(0),
            None => y,
        };
        let mut out = dims;
        out[D - 1] = dout;
        y.reshape(out)
    }

    /// The same layer with its weight stored as `dtype` (the bias stays as it is).
    pub fn with_weight_dtype(self, dtype: burn::tensor::DType) -> Self {
        Self { weight: self.weight.map(|w| if w.dtype() == dtype { w } else { w.cast(dtype) }), bias: self.bias }
    }
}

#[cfg(test)]
mod tests {
    use burn::backend::{Autodiff, Flex};
    use burn::tensor::DType;

    use super::*;

    fn layer<B: Backend>(w: &TensorData, b: &TensorData, dev: &B::Device) -> Linear<B> {
        Linear {
            weight: Param::from_tensor(Tensor::from_data(w.clone(), dev)),
            bias: Some(Param::from_tensor(Tensor::from_data(b.clone(), dev))),
        }
    }

    /// bfloat16 weights: flex's kernel (on every CPU with AVX-512) and the generic tensor path
    /// (here `Autodiff<Flex>`, which takes no fast path) compute the same layer up to bfloat16 rounding, and both
    /// stay close to the f32 layer.
    #[test]
    fn bf16_weights_give_the_same_layer_on_the_kernel_and_the_generic_path() {
        let dev = Default::default();
        let (rows, d_in, d_out) = (5, 96, 40);
        let f = |i: usize| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 0.3;
        let w = TensorData::new((0..d_out * d_in).map(f).collect::<Vec<_>>(), [d_out, d_in]);
        let b = TensorData::new((0..d_out).map(|i| f(i + 7)).collect::<Vec<_>>(), [d_out]);
        let x = TensorData::new((0..rows * d_in).map(|i| f(i * 3 + 1) * 2.0).collect::<Vec<_>>(), [rows, d_in]);
        let exact = layer::<Flex>(&w, &b, &dev).forward(Tensor::<Flex, 2>::from_data(x.clone(), &dev));
        let fast = layer::<Flex>(&w, &b, &dev).with_weight_dtype(DType::BF16);
        assert_eq!(fast.weight.val().dtype(), DType::BF16);
        assert_eq!(fast.bias.as_ref().unwrap().val().dtype(), DType::F32);
        let fast = fast.forward(Tensor::<Flex, 2>::from_data(x.clone(), &dev));
        let generic =
            layer::<Autodiff<Flex>>(&w, &b, &dev)
                .with_weight_dtype(DType::BF16)
                .forward(Tensor::<Autodiff<Flex>, 2>::from_data(x, &dev));
        assert_eq!(fast.dtype(), DType::F32);
        assert_eq!(generic.dtype(), DType::F32);
        let v = |t: TensorData| t.convert::<f32>().into_vec::<f32>().unwrap();
        let (exact, fast, generic) = (v(exact.into_data()), v(fast.into_data()), v(generic.into_data()));
        let scale = exact.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let diff = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        assert!(scale > 1.0, "outputs up to {scale}");
        assert!(diff(&fast, &exact) < 0.01 * scale, "kernel against f32: {}", diff(&fast, &exact));
        assert!(diff(&fast, &exact) > 0.0, "the weights were rounded");
        assert!(diff(&generic, &exact) < 0.02 * scale, "generic against f32: {}", diff(&generic, &exact));
        assert!(diff(&generic, &fast) < 0.02 * scale, "generic against kernel: {}", diff(&generic, &fast));
    }
}
