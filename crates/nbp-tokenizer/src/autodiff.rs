//! Fast paths for training on `Autodiff<Flex>`: the tokenizer's group norms and Swish activations as single
//! autodiff operations whose forward and backward passes each run in one parallel pass of `nbp-kernels`
//! (instead of the dozen broadcast, reduction and element-wise operations of the generic path, each recorded
//! and differentiated separately).
//!
//! Each function returns its input back when it does not apply (any backend other than `Autodiff<Flex>`, or a
//! dtype other than f32), and the caller then takes the generic tensor path. Both compute the same function
//! and the same gradients; only the order of the floating-point sums differs.

use std::any::{Any, TypeId};

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::{Flex, FlexTensor};
use burn::prelude::*;
use burn::tensor::backend::BackendTypes;
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use nbp_core::flex::contiguous;

/// The training backend these paths serve.
type Train = Autodiff<Flex>;
/// Its float tensor: the flex tensor (`primitive`) and the node of the autodiff graph (`node`).
type TrainTensor = <Train as BackendTypes>::FloatTensorPrimitive;

/// The autodiff tensor behind `t` when `B` is `Autodiff<Flex>` and `t` holds f32; `t` back otherwise.
fn take<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<TrainTensor, Tensor<B, D>> {
    if TypeId::of::<B>() != TypeId::of::<Train>() || t.dtype() != DType::F32 {
        return Err(t);
    }
    let TensorPrimitive::Float(p) = t.into_primitive() else { unreachable!("a float tensor") };
    Ok(*(Box::new(p) as Box<dyn Any>).downcast::<TrainTensor>().expect("B is Autodiff<Flex>"))
}

/// An autodiff tensor of `Autodiff<Flex>` as a tensor of `B` (which [`take`] has checked is that backend).
fn give<B: Backend, const D: usize>(t: TrainTensor) -> Tensor<B, D> {
    let p = (Box::new(t) as Box<dyn Any>).downcast::<B::FloatTensorPrimitive>().expect("B is Autodiff<Flex>");
    Tensor::from_primitive(TensorPrimitive::Float(*p))
}

/// The f32 values of a contiguous flex tensor.
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// A flex tensor of `shape` holding `data`.
fn flex(data: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(data, shape))
}

/// Per-frame group normalisation (see `GroupNorm3d`) of `x: [batch, channels, time, height, width]` with
/// `gamma`, `beta: [channels]`, as one autodiff operation; `x` back when the path does not apply.
pub(crate) fn group_norm<B: Backend>(
    x: Tensor<B, 5>,
    gamma: &Tensor<B, 1>,
    beta: &Tensor<B, 1>,
    groups: usize,
    epsilon: f64,
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let [b, c, t, h, w] = x.dims();
    let x = take(x)?;
    let (Ok(gamma), Ok(beta)) = (take(gamma.clone()), take(beta.clone())) else { unreachable!("same backend") };
    let input = contiguous(x.primitive.clone());
    let gamma_values = values(&contiguous(gamma.primitive.clone())).to_vec();
    let beta_values = values(&contiguous(beta.primitive.clone())).to_vec();
    let shape = [b, c, t, h * w];
    let mut out = values(&input).to_vec();
    nbp_kernels::norm::group_norm(&mut out, shape, groups, &gamma_values, &beta_values, epsilon as f32);
    let out = flex(out, vec![b, c, t, h, w]);
    let nodes = [x.node.clone(), gamma.node.clone(), beta.node.clone()];
    let y = match GroupNormBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            prep.finish(GroupNormState { input, gamma: gamma_values, shape, groups, epsilon: epsilon as f32 }, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(give(y))
}

/// What the backward pass of [`group_norm`] needs.
#[derive(Debug, Clone)]
struct GroupNormState {
    input: FlexTensor,
    gamma: Vec<f32>,
    shape: [usize; 4],
    groups: usize,
    epsilon: f32,
}

#[derive(Debug)]
struct GroupNormBackward;

impl Backward<Flex, 3> for GroupNormBackward {
    type State = GroupNormState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let (dx, dgamma, dbeta) = nbp_kernels::norm::group_norm_backward(
            values(&s.input),
            values(&grad),
            s.shape,
            s.groups,
            &s.gamma,
            s.epsilon,
        );
        let [x, gamma, beta] = ops.parents;
        let channels = s.shape[1];
        if let Some(node) = x {
            grads.register::<Flex>(node.id, flex(dx, s.input.shape().to_vec()));
        }
        if let Some(node) = gamma {
            grads.register::<Flex>(node.id, flex(dgamma, vec![channels]));
        }
        if let Some(node) = beta {
            grads.register::<Flex>(node.id, flex(dbeta, vec![channels]));
        }
    }
}

/// `x·σ(β_c·x)` for `x: [batch, channels, time, height, width]` and `beta: [channels]`, as one autodiff
/// operation; `x` back when the path does not apply.
pub(crate) fn swish<B: Backend>(x: Tensor<B, 5>, beta: &Tensor<B, 1>) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let [b, c, t, h, w] = x.dims();
    let x = take(x)?;
    let Ok(beta) = take(beta.clone()) else { unreachable!("same backend") };
    let input = contiguous(x.primitive.clone());
    let beta_values = values(&contiguous(beta.primitive.clone())).to_vec();
    let shape = [b, c, t * h * w];
    let mut out = values(&input).to_vec();
    nbp_kernels::norm::swish(&mut out, shape, &beta_values);
    let out = flex(out, vec![b, c, t, h, w]);
    let y = match SwishBackward
        .prepare::<NoCheckpointing>([x.node.clone(), beta.node.clone()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(SwishState { input, beta: beta_values, shape }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(give(y))
}

/// What the backward pass of [`swish`] needs.
#[derive(Debug, Clone)]
struct SwishState {
    input: FlexTensor,
    beta: Vec<f32>,
    shape: [usize; 3],
}

#[derive(Debug)]
struct SwishBackward;

impl Backward<Flex, 2> for SwishBackward {
    type State = SwishState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let s = ops.state;
        let (dx, dbeta) = nbp_kernels::norm::swish_backward(values(&s.input), values(&grad), s.shape, &s.beta);
        let [x, beta] = ops.parents;
        if let Some(node) = x {
            grads.register::<Flex>(node.id, flex(dx, s.input.shape().to_vec()));
        }
        if let Some(node) = beta {
            grads.register::<Flex>(node.id, flex(dbeta, vec![s.shape[1]]));
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::Distribution;

    use super::*;
    use crate::group_norm3d::GroupNorm3dConfig;
    use crate::swish::SwishConfig;

    type B = Autodiff<Flex>;

    fn close(got: Tensor<Flex, 1>, want: Tensor<Flex, 1>, what: &str) {
        let (g, w) = (got.into_data().into_vec::<f32>().unwrap(), want.into_data().into_vec::<f32>().unwrap());
        assert_eq!(g.len(), w.len(), "{what}");
        let scale = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (a, e)) in g.iter().zip(&w).enumerate() {
            assert!((a - e).abs() <= 1e-4 * (1.0 + scale), "{what}[{i}]: {a} vs {e}");
        }
    }

    /// Output and gradients (of `Σ weight·output`) of `forward` for input `x` and the module parameters `params`.
    fn run(
        x: &Tensor<Flex, 5>,
        weight: &Tensor<Flex, 5>,
        forward: impl Fn(Tensor<B, 5>) -> Tensor<B, 5>,
        params: impl Fn() -> Vec<Tensor<B, 1>>,
    ) -> Vec<Tensor<Flex, 1>> {
        let x = Tensor::<B, 5>::from_inner(x.clone()).require_grad();
        let y = forward(x.clone());
        let loss = (y.clone() * Tensor::<B, 5>::from_inner(weight.clone())).sum();
        let grads = loss.backward();
        let mut out = vec![y.inner().flatten(0, 4), x.grad(&grads).unwrap().flatten(0, 4)];
        out.extend(params().iter().map(|p| p.grad(&grads).unwrap()));
        out
    }

    #[test]
    fn group_norm_and_swish_give_the_generic_paths_values_and_gradients() {
        let dev = Default::default();
        let x = Tensor::<Flex, 5>::random([2, 8, 3, 5, 7], Distribution::Normal(0.3, 1.5), &dev);
        let weight = Tensor::<Flex, 5>::random([2, 8, 3, 5, 7], Distribution::Uniform(-1.0, 1.0), &dev);
        let mut norm = GroupNorm3dConfig::new(4, 8).init::<B>(&dev);
        norm.gamma = Param::from_tensor(Tensor::random([8], Distribution::Uniform(0.5, 1.5), &dev));
        norm.beta = Param::from_tensor(Tensor::random([8], Distribution::Uniform(-0.5, 0.5), &dev));
        let mut swish = SwishConfig::new(8).init::<B>(&dev);
        swish.beta = Param::from_tensor(Tensor::random([8], Distribution::Uniform(0.2, 1.5), &dev));

        // The fast paths apply to this backend (so the comparison below is not of the generic path with itself).
        let xt = || Tensor::<B, 5>::from_inner(x.clone());
        assert!(group_norm(xt(), &norm.gamma.val(), &norm.beta.val(), 4, 1e-5).is_ok());
        assert!(super::swish(xt(), &swish.beta.val()).is_ok());
        assert!(group_norm(x.clone(), &norm.gamma.val().inner(), &norm.beta.val().inner(), 4, 1e-5).is_err());

        let names = ["output", "dx", "dγ", "dβ"];
        let fast = run(&x, &weight, |x| norm.forward(x), || vec![norm.gamma.val(), norm.beta.val()]);
        let generic = run(&x, &weight, |x| norm.forward_generic(x), || vec![norm.gamma.val(), norm.beta.val()]);
        for ((f, g), name) in fast.into_iter().zip(generic).zip(names) {
            close(f, g, &format!("group norm {name}"));
        }
        let fast = run(&x, &weight, |x| swish.forward(x), || vec![swish.beta.val()]);
        let generic = run(&x, &weight, |x| swish.forward_generic(x), || vec![swish.beta.val()]);
        for ((f, g), name) in fast.into_iter().zip(generic).zip(names) {
            close(f, g, &format!("swish {name}"));
        }
    }
}
