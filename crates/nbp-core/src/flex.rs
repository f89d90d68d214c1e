//! Access to the memory of `flex` tensors, for the CPU kernels of `nbp-kernels`.
//!
//! Model code stays generic over `B: Backend`; a fast path first asks [`is_flex`] and then works on the
//! [`FlexTensor`] behind a tensor. Every function returns `None` when it does not apply (another backend, or a
//! dtype other than f32), so that the caller takes its generic tensor path.

use std::any::{Any, TypeId};

use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::{DType, TensorPrimitive};

/// True when `B` is the flex backend (not, for example, `Autodiff<Flex>`).
pub fn is_flex<B: Backend>() -> bool {
    TypeId::of::<B>() == TypeId::of::<Flex>()
}

/// The f32 flex tensor behind a float tensor (shares its buffer).
pub fn flex_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    flex_any(t).filter(|f| f.dtype() == DType::F32)
}

/// The flex tensor behind a float tensor of any dtype (shares its buffer).
pub fn flex_any<B: Backend, const D: usize>(t: Tensor<B, D>) -> Option<FlexTensor> {
    let TensorPrimitive::Float(p) = t.into_primitive() else { return None };
    (Box::new(p) as Box<dyn Any>).downcast::<FlexTensor>().ok().map(|b| *b)
}

/// The flex tensor behind a bool tensor.
pub fn flex_bool<B: Backend, const D: usize>(t: Tensor<B, D, Bool>) -> Option<FlexTensor> {
    (Box::new(t.into_primitive()) as Box<dyn Any>).downcast::<FlexTensor>().ok().map(|b| *b)
}

/// A flex tensor as a float tensor of `B`.
///
/// # Panics
/// When `B` is not the flex backend (check [`is_flex`] first).
pub fn from_flex<B: Backend, const D: usize>(t: FlexTensor) -> Tensor<B, D> {
    let p = (Box::new(t) as Box<dyn Any>).downcast::<B::FloatTensorPrimitive>().expect("B is the flex backend");
    Tensor::from_primitive(TensorPrimitive::Float(*p))
}

/// A contiguous flex tensor (copies only when the layout is not).
pub fn contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() { t } else { t.to_contiguous() }
}

/// Runs `f` on the f32 values of the flex tensor `x` (row-major), in place when `x` holds the only handle to its
/// buffer and on a copy otherwise, and returns the tensor with the values `f` left. `Err(x)`, unchanged, when `x`
/// is not an f32 flex tensor or when `f` returns `false` (it must then leave the values untouched).
///
/// (Burn's `TensorData::as_mut_slice` checks every element of the slice it hands out, a pass over the data
/// that cost the tokenizer 8 % of its time in its group norms and Swish activations.)
pub fn update_f32<B: Backend, const D: usize>(
    x: Tensor<B, D>,
    f: impl FnOnce(&mut [f32]) -> bool,
) -> Result<Tensor<B, D>, Tensor<B, D>> {
    let Some(t) = flex_f32(x.clone()) else { return Err(x) };
    let (dims, device) = (x.dims(), x.device());
    drop(x);
    let mut t = contiguous(t);
    let range = t.layout().contiguous_offsets();
    if let (Some((start, end)), Some(data)) = (range, t.try_storage_mut::<f32>()) {
        let done = f(&mut data[start..end]);
        let t = from_flex(t);
        return if done { Ok(t) } else { Err(t) };
    }
    let Some(mut data) = t.as_slice::<f32>().map(<[f32]>::to_vec) else { return Err(from_flex(t)) };
    if !f(&mut data) {
        return Err(from_flex(t));
    }
    Ok(Tensor::from_data(TensorData::new(data, dims), &device))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_tensors_round_trip_through_flex_and_other_backends_are_refused() {
        let dev = Default::default();
        let t = Tensor::<Flex, 2>::from_floats([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], &dev);
        assert!(is_flex::<Flex>());
        assert!(!is_flex::<burn::backend::Autodiff<Flex>>());
        let f = contiguous(flex_f32(t.clone().transpose()).unwrap());
        assert_eq!(f.as_slice::<f32>().unwrap(), &[1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let back: Tensor<Flex, 2> = from_flex(f);
        assert_eq!(back.into_data().into_vec::<f32>().unwrap(), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        assert!(flex_f32(Tensor::<Flex, 1>::from_floats([1.0], &dev).cast(DType::F16)).is_none());
        let half = flex_any(Tensor::<Flex, 1>::from_floats([1.5], &dev).cast(DType::BF16)).unwrap();
        assert_eq!(half.dtype(), DType::BF16);
        assert_eq!(half.as_slice::<burn::tensor::bf16>().unwrap()[0].to_f32(), 1.5);
    }

    #[test]
    fn updates_run_in_place_or_on_a_copy_and_refusals_give_the_tensor_back() {
        let dev = Default::default();
        let vals = |t: Tensor<Flex, 1>| t.into_data().into_vec::<f32>().unwrap();
        let t = Tensor::<Flex, 1>::from_floats([1.0, 2.0, 3.0], &dev);
        let shared = t.clone();
        let double = |v: &mut [f32]| {
            v.iter_mut().for_each(|x| *x *= 2.0);
            true
        };
        let doubled = update_f32(t, double).unwrap();
        assert_eq!(vals(doubled.clone()), [2.0, 4.0, 6.0]);
        assert_eq!(vals(shared), [1.0, 2.0, 3.0], "a shared buffer is copied, not changed");
        assert_eq!(vals(update_f32(doubled, |_| false).unwrap_err()), [2.0, 4.0, 6.0]);
        // A transposed view: the values in row-major order of the view.
        let m = Tensor::<Flex, 2>::from_floats([[1.0, 2.0], [3.0, 4.0]], &dev).transpose();
        let seen = update_f32(m, |v| {
            assert_eq!(v, [1.0, 3.0, 2.0, 4.0]);
            v[0] = 9.0;
            true
        });
        assert_eq!(seen.unwrap().into_data().into_vec::<f32>().unwrap(), [9.0, 3.0, 2.0, 4.0]);
        // Not flex: refused.
        let a = Tensor::<burn::backend::Autodiff<Flex>, 1>::from_floats([1.0], &dev);
        assert!(update_f32(a, double).is_err());
    }
}
