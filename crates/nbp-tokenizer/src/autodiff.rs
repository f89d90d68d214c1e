//! Fast paths for training on `Autodiff<Flex>`: the tokenizer's group norms, Swish activations and causal
//! convolutions as single autodiff operations with hand-written backward passes, instead of the dozen
//! broadcasts, reductions, slices and concatenations of the generic path, each recorded and differentiated
//! separately. Group norm and Swish run forward and backward in one parallel pass of `nbp-kernels` each; the
//! convolution pads by a plain copy, runs forward on the convolution kernel of `nbp-kernels` where it applies,
//! and computes its weight and input gradients as matrix products of im2col blocks.
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
use burn::nn::PaddingConfig3d;
use burn::nn::conv::Conv3d;
use burn::prelude::*;
use burn::tensor::backend::BackendTypes;
use burn::tensor::ops::ConvOptions;
use burn::tensor::ops::{FloatTensorOps, ModuleOps};
use burn::tensor::{DType, TensorMetadata, TensorPrimitive};
use nbp_core::flex::contiguous;
use nbp_kernels::Conv3dShape;
use rayon::prelude::*;

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

/// `conv.forward(replicate_pad(x, pad))` (see `CausalConv3d`) for `x: [batch, c_in, T, H, W]`, as one autodiff
/// operation: the padding is a plain copy instead of recorded concatenations, the forward convolution runs on the
/// kernels of `nbp-kernels` where they apply, and the backward pass folds the padded input's gradient back onto
/// the edges. `x` back when the path does not apply (another backend, dilation, groups, padding in the
/// convolution itself, or no bias).
pub(crate) fn causal_conv3d<B: Backend>(
    conv: &Conv3d<B>,
    x: Tensor<B, 5>,
    pad: [usize; 3],
) -> Result<Tensor<B, 5>, Tensor<B, 5>> {
    let plain = conv.dilation == [1, 1, 1] && conv.groups == 1 && matches!(conv.padding, PaddingConfig3d::Valid);
    let Some(bias) = conv.bias.as_ref().filter(|_| plain) else { return Err(x) };
    let dims = x.dims();
    let x = take(x)?;
    let (Ok(weight), Ok(bias)) = (take(conv.weight.val()), take(bias.val())) else { unreachable!("same backend") };
    let w = contiguous(weight.primitive.clone());
    let b = contiguous(bias.primitive.clone());
    let [batch, c_in, t, h, wd] = dims;
    let [c_out, _, kt, kh, kw] = conv.weight.dims();
    let shape = Conv3dShape { c_in, c_out, input: [t, h, wd], pad, kernel: [kt, kh, kw], stride: conv.stride };
    let [tp, hp, wp] = shape.padded();
    let [to, ho, wo] = shape.output();
    let input = contiguous(x.primitive.clone());
    let padded = flex(nbp_kernels::im2col::replicate_pad(values(&input), dims, pad), vec![batch, c_in, tp, hp, wp]);
    let mut out = None;
    if c_in >= crate::cpu::MIN_CHANNELS && nbp_kernels::available() {
        let (per_in, per_out) = (c_in * t * h * wd, c_out * to * ho * wo);
        let mut o = vec![0.0f32; batch * per_out];
        let fast = values(&input)
            .chunks(per_in)
            .zip(o.chunks_mut(per_out))
            .all(|(xb, ob)| nbp_kernels::conv3d(xb, values(&w), Some(values(&b)), ob, shape));
        out = fast.then(|| flex(o, vec![batch, c_out, to, ho, wo]));
    }
    let out = out.unwrap_or_else(|| {
        Flex::conv3d(padded.clone(), w.clone(), Some(b), ConvOptions::new(shape.stride, [0; 3], [1; 3], 1))
    });
    let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
    let y = match ConvBackward.prepare::<NoCheckpointing>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(ConvState { padded, weight: w, shape, batch }, out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    };
    Ok(give(y))
}

/// What the backward pass of [`causal_conv3d`] needs.
#[derive(Debug, Clone)]
struct ConvState {
    /// The replicate-padded input `[batch, c_in, T + pt, H + 2·ph, W + 2·pw]`.
    padded: FlexTensor,
    /// `[c_out, c_in, kt, kh, kw]`.
    weight: FlexTensor,
    shape: Conv3dShape,
    batch: usize,
}

#[derive(Debug)]
struct ConvBackward;

impl Backward<Flex, 3> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(grads.consume::<Flex>(&ops.node));
        let ConvState { padded, weight: w, shape, batch } = ops.state;
        let [x, weight, bias] = ops.parents;
        let Conv3dShape { c_in, c_out, input: [t, h, wd], kernel: [kt, kh, kw], .. } = shape;
        let (k, positions) = (c_in * kt * kh * kw, shape.output().iter().product::<usize>());
        let per_x = c_in * shape.padded().iter().product::<usize>();
        let (gy, xp) = (values(&grad), values(&padded));
        let weight_matrix = w.reshape(Shape::new([c_out, k]));
        let mut dxp = vec![0.0f32; if x.is_some() { xp.len() } else { 0 }];
        let rows = (IM2COL_FLOATS / k).clamp(1, positions);
        let want_dw = weight.is_some();
        // Sample `n`: its weight gradient, and its padded input gradient added into `dxp_n` when given.
        let sample = |n: usize, mut dxp_n: Option<&mut [f32]>| -> Option<FlexTensor> {
            let (gy_n, xp_n) = (&gy[n * c_out * positions..][..c_out * positions], &xp[n * per_x..][..per_x]);
            let mut dw: Option<FlexTensor> = None;
            for p0 in (0..positions).step_by(rows) {
                let r = rows.min(positions - p0);
                // The output gradient of these positions: [c_out, r].
                let g = flex(nbp_kernels::im2col::columns(gy_n, [c_out, positions], p0, r), vec![c_out, r]);
                if want_dw {
                    let col = flex(nbp_kernels::im2col::gather(&shape, xp_n, p0, r), vec![r, k]);
                    let product = Flex::float_matmul(g.clone(), col);
                    dw = Some(match dw {
                        Some(sum) => Flex::float_add(sum, product),
                        None => product,
                    });
                }
                if let Some(d) = dxp_n.as_deref_mut() {
                    let col = contiguous(Flex::float_matmul(g.transpose(0, 1), weight_matrix.clone()));
                    nbp_kernels::im2col::scatter_add(&shape, values(&col), d, p0, r);
                }
            }
            dw
        };
        // The samples of a batch run side by side (each one's products and im2col copies are parallel too): on
        // the small layers of a training step one sample leaves cores idle.
        let per_sample: Vec<Option<FlexTensor>> = if x.is_some() {
            dxp.par_chunks_mut(per_x).enumerate().map(|(n, d)| sample(n, Some(d))).collect()
        } else {
            (0..batch).into_par_iter().map(|n| sample(n, None)).collect()
        };
        let dw = per_sample.into_iter().flatten().reduce(Flex::float_add);
        let dims = [batch, c_in, t, h, wd];
        if let Some(node) = x {
            let dx = nbp_kernels::im2col::fold_replicate_pad(&dxp, dims, shape.pad);
            grads.register::<Flex>(node.id, flex(dx, dims.to_vec()));
        }
        if let (Some(node), Some(dw)) = (weight, dw) {
            grads.register::<Flex>(node.id, contiguous(dw).reshape(Shape::new([c_out, c_in, kt, kh, kw])));
        }
        if let Some(node) = bias {
            let db = nbp_kernels::im2col::channel_sums(gy, [batch, c_out, positions]);
            grads.register::<Flex>(node.id, flex(db, vec![c_out]));
        }
    }
}

/// Floats of one im2col block in the backward pass (16 MB; a few KB in tests, so that they cross chunks):
/// positions are taken in chunks of this many values.
const IM2COL_FLOATS: usize = if cfg!(test) { 1000 } else { 1 << 22 };

#[cfg(test)]
mod tests {
    use burn::module::Param;
    use burn::tensor::Distribution;

    use super::*;
    use crate::causal_conv3d::{CausalConv3dConfig, replicate_pad as generic_pad};
    use crate::group_norm3d::GroupNorm3dConfig;
    use crate::swish::SwishConfig;
    use nbp_kernels::im2col::{fold_replicate_pad, replicate_pad};

    type B = Autodiff<Flex>;
    type Grads = <B as burn::tensor::backend::AutodiffBackend>::Gradients;

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
        params: impl Fn(&Grads) -> Vec<Tensor<Flex, 1>>,
    ) -> Vec<Tensor<Flex, 1>> {
        let x = Tensor::<B, 5>::from_inner(x.clone()).require_grad();
        let y = forward(x.clone());
        let loss = (y.clone() * Tensor::<B, 5>::from_inner(weight.clone())).sum();
        let grads = loss.backward();
        let mut out = vec![y.inner().flatten(0, 4), x.grad(&grads).unwrap().flatten(0, 4)];
        out.extend(params(&grads));
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
        let fast = run(
            &x,
            &weight,
            |x| norm.forward(x),
            |g: &Grads| vec![norm.gamma.val().grad(g).unwrap(), norm.beta.val().grad(g).unwrap()],
        );
        let generic = run(
            &x,
            &weight,
            |x| norm.forward_generic(x),
            |g: &Grads| vec![norm.gamma.val().grad(g).unwrap(), norm.beta.val().grad(g).unwrap()],
        );
        for ((f, g), name) in fast.into_iter().zip(generic).zip(names) {
            close(f, g, &format!("group norm {name}"));
        }
        let fast = run(&x, &weight, |x| swish.forward(x), |g: &Grads| vec![swish.beta.val().grad(g).unwrap()]);
        let generic =
            run(&x, &weight, |x| swish.forward_generic(x), |g: &Grads| vec![swish.beta.val().grad(g).unwrap()]);
        for ((f, g), name) in fast.into_iter().zip(generic).zip(names) {
            close(f, g, &format!("swish {name}"));
        }
    }

    #[test]
    fn padding_matches_the_generic_path_and_its_fold_is_the_adjoint() {
        let dev = Default::default();
        let dims = [2, 3, 4, 5, 6];
        let pad = [2, 1, 1];
        let x = Tensor::<Flex, 5>::random(dims, Distribution::Normal(0.0, 1.0), &dev);
        let want = generic_pad(x.clone(), pad).into_data().into_vec::<f32>().unwrap();
        let xv = x.into_data().into_vec::<f32>().unwrap();
        assert_eq!(replicate_pad(&xv, dims, pad), want);
        // ⟨pad(x), g⟩ = ⟨x, fold(g)⟩ for every x and g.
        let g: Vec<f32> = (0..want.len()).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        let lhs: f64 = want.iter().zip(&g).map(|(a, b)| (*a as f64) * (*b as f64)).sum();
        let rhs: f64 = xv.iter().zip(fold_replicate_pad(&g, dims, pad)).map(|(a, b)| (*a as f64) * (b as f64)).sum();
        assert!((lhs - rhs).abs() < 1e-3 * (1.0 + lhs.abs()), "{lhs} vs {rhs}");
    }

    #[test]
    fn causal_convolutions_give_the_generic_paths_values_and_gradients() {
        let dev = Default::default();
        // Few channels (Burn's convolution), many (the nbp-kernels one), and a strided downsampling.
        for (c_in, c_out, stride) in [(3, 5, [1, 1, 1]), (16, 8, [1, 1, 1]), (16, 16, [2, 2, 2])] {
            let dims = [2, c_in, 5, 6, 8];
            let x = Tensor::<Flex, 5>::random(dims, Distribution::Normal(0.2, 1.0), &dev);
            let conv = CausalConv3dConfig::new([c_in, c_out]).with_stride(stride).init::<B>(&dev);
            let out_dims = conv.forward(Tensor::<B, 5>::from_inner(x.clone())).dims();
            let weight = Tensor::<Flex, 5>::random(out_dims, Distribution::Uniform(-1.0, 1.0), &dev);
            assert!(causal_conv3d(&conv.conv, Tensor::<B, 5>::from_inner(x.clone()), [2, 1, 1]).is_ok());
            let params = |g: &Grads| {
                vec![
                    conv.conv.weight.val().grad(g).unwrap().flatten(0, 4),
                    conv.conv.bias.as_ref().unwrap().val().grad(g).unwrap(),
                ]
            };
            let fast = run(&x, &weight, |x| causal_conv3d(&conv.conv, x, [2, 1, 1]).unwrap(), params);
            let generic = run(&x, &weight, |x| conv.conv.forward(generic_pad(x, [2, 1, 1])), params);
            for ((f, g), name) in fast.into_iter().zip(generic).zip(["output", "dx", "dw", "db"]) {
                close(f, g, &format!("conv {c_in}→{c_out} stride {stride:?} {name}"));
            }
        }
    }
}
