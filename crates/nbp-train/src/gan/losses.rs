//! GAN losses and the adaptive GAN weight of taming-transformers (VQGAN), the recipe the reference (§1.9)
//! points to: hinge discriminator loss, generator loss `−mean(D(fake))`, and a generator-loss weight that
//! balances the gradient norms of the reconstruction and GAN losses at the decoder's last layer.
//!
//! # Computing the adaptive weight in a Burn training step
//!
//! taming computes `‖∇_W L_rec‖ / (‖∇_W L_gan‖ + 1e-4)`, clamped to `[0, 1e4]` and detached, where `W` is the
//! weight of the decoder's last layer, with two `torch.autograd.grad` calls on the full graph. In Burn 0.21 a
//! `backward()` *consumes* the steps of the graph it traverses (`burn-autodiff` `AutodiffServer::backward`
//! removes them), so two backward passes through one shared graph do not work, and a second backward through the
//! whole tokenizer would in any case double the cost. Both norms only need the gradient at `W`, and that gradient
//! depends only on the last layer's input `h` and on what comes after `W`. So re-run just the last layer on a
//! detached copy of `h`, **once per loss**, and take each norm from its own small graph. Reusing one
//! `y = last.forward(h_cut)` for both losses does not work: the first backward consumes `y`'s step, and the
//! second finds no gradient at `W` ([`param_grad_norm`] panics rather than return a wrong 0):
//!
//! ```text
//! let h = decoder.forward_until_last_layer(z);               // [b, c, t, h, w], part of the main graph
//! let recon = last.forward(h.clone());                       // main graph: used for the total loss
//!
//! let h_cut = h.detach();                                    // the small graphs stop here
//! let rec_norm = param_grad_norm(rec_loss(last.forward(h_cut.clone()), &video), &last.conv.weight);
//! let gan_norm = param_grad_norm(generator_loss(disc.forward(last.forward(h_cut))), &last.conv.weight);
//! let w_gan = adaptive_weight(rec_norm, gan_norm, ADAPTIVE_WEIGHT_MAX) * disc_weight * disc_factor;
//!
//! let loss = rec_loss(recon.clone(), &video) + generator_loss(disc.forward(recon)).mul_scalar(w_gan);
//! let grads = GradientsParams::from_grads(loss.backward(), &tokenizer); // only the tokenizer's parameters
//! ```
//!
//! `rec_loss` is the same reconstruction term as in the total loss (taming's `nll_loss`: pixel loss plus the
//! weighted [LPIPS](super::lpips) term); dropping the LPIPS term from the `rec_norm` graph saves one LPIPS
//! forward/backward at the price of a slightly different balance. The extra cost is two last-layer convolutions,
//! one discriminator forward/backward and one reconstruction-loss forward/backward. The discriminator gradients
//! produced by the `gan_norm` backward are simply dropped (the `Gradients` value is discarded), and `w_gan` is a
//! plain `f64`, so it is automatically "detached". taming multiplies by `disc_factor = 0` before the
//! discriminator starts (`adopt_weight`), and then need not compute the weight at all.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::backend::AutodiffBackend;

/// Upper bound of the adaptive weight used by taming-transformers (`torch.clamp(d_weight, 0.0, 1e4)`).
pub const ADAPTIVE_WEIGHT_MAX: f64 = 1e4;

/// Added to the GAN gradient norm before dividing (taming: `1e-4`).
pub const ADAPTIVE_WEIGHT_EPS: f64 = 1e-4;

/// Hinge loss of the discriminator (taming's `hinge_d_loss`):
/// `0.5 · (mean(relu(1 − real)) + mean(relu(1 + fake)))`.
///
/// `logits_real` and `logits_fake` are patch logits of any (possibly different) shapes, e.g.
/// `[batch·time, 1, h', w']` from [`PatchDiscriminator`](super::PatchDiscriminator); the result has shape `[1]`.
/// Compute `logits_fake` from a detached reconstruction so that the loss only trains the discriminator.
pub fn hinge_d_loss<B: Backend, const D: usize>(logits_real: Tensor<B, D>, logits_fake: Tensor<B, D>) -> Tensor<B, 1> {
    let loss_real = logits_real.neg().add_scalar(1.0).clamp_min(0.0).mean();
    let loss_fake = logits_fake.add_scalar(1.0).clamp_min(0.0).mean();
    (loss_real + loss_fake).mul_scalar(0.5)
}

/// Generator (tokenizer) adversarial loss: `−mean(logits_fake)`, shape `[1]`.
pub fn generator_loss<B: Backend, const D: usize>(logits_fake: Tensor<B, D>) -> Tensor<B, 1> {
    logits_fake.mean().neg()
}

/// Adaptive GAN weight of VQGAN: `clamp(rec_grad_norm / (gan_grad_norm + 1e-4), 0, max)`.
///
/// The norms are those of the gradients of the reconstruction loss and of the generator loss with respect to
/// the decoder's last-layer weight (see [`param_grad_norm`] and the module documentation); `max` is
/// [`ADAPTIVE_WEIGHT_MAX`] in taming. A NaN ratio (a NaN norm) gives 0, so a broken step does not blow up the
/// generator loss.
pub fn adaptive_weight(rec_grad_norm: f64, gan_grad_norm: f64, max: f64) -> f64 {
    let w = rec_grad_norm / (gan_grad_norm + ADAPTIVE_WEIGHT_EPS);
    if w.is_nan() { 0.0 } else { w.clamp(0.0, max) }
}

/// L2 norm of the gradient of the scalar `loss` (shape `[1]`) with respect to the parameter `param`.
///
/// Runs `loss.backward()` and reads `param.grad(&grads)`. The backward pass consumes the steps of `loss`'s
/// graph, so every call needs a graph of its own: two calls on losses that share an intermediate tensor (e.g.
/// both computed from one `last.forward(h)`) leave the second without any gradient (see the module
/// documentation).
///
/// # Panics
///
/// If no gradient reaches `param`: `loss` does not depend on it, `param` does not require gradients, or the
/// part of the graph between them was already consumed by an earlier backward pass. Returning 0 instead would
/// silently turn the adaptive weight into its maximum.
pub fn param_grad_norm<B: AutodiffBackend, const D: usize>(loss: Tensor<B, 1>, param: &Param<Tensor<B, D>>) -> f64 {
    let grads = loss.backward();
    let grad = param.grad(&grads).unwrap_or_else(|| {
        panic!(
            "param_grad_norm: no gradient reached the parameter (shape {:?}): the loss does not depend on it, it \
             does not require gradients, or the graph between them was already consumed by an earlier backward \
             pass (build a fresh graph, e.g. re-run the last layer, for every call)",
            param.dims()
        )
    });
    grad.square().sum().into_scalar().elem::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use burn::nn::conv::{Conv2d, Conv2dConfig};

    type B = Flex;
    type A = Autodiff<Flex>;

    fn scalar<BB: Backend>(t: Tensor<BB, 1>) -> f64 {
        assert_eq!(t.dims(), [1]);
        t.into_scalar().elem::<f64>()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "{a} != {b}");
    }

    #[test]
    fn hinge_d_loss_by_hand() {
        let dev = Default::default();
        let real = Tensor::<B, 4>::from_floats([[[[2.0, 0.5], [-1.0, 1.0]]]], &dev);
        let fake = Tensor::<B, 4>::from_floats([[[[-2.0, 0.0], [0.5, -0.5]], [[1.0, -1.5], [3.0, -1.0]]]], &dev);
        // real: relu(1 − x) = [0, 0.5, 2, 0] → mean 0.625
        // fake: relu(1 + x) = [0, 1, 1.5, 0.5, 2, 0, 4, 0] → mean 9/8 = 1.125
        close(scalar(hinge_d_loss(real, fake)), 0.5 * (0.625 + 1.125));
    }

    #[test]
    fn hinge_d_loss_is_zero_for_a_confident_discriminator() {
        let dev = Default::default();
        let real = Tensor::<B, 2>::from_floats([[1.0, 3.0]], &dev);
        let fake = Tensor::<B, 2>::from_floats([[-1.0, -7.0]], &dev);
        close(scalar(hinge_d_loss(real, fake)), 0.0);
    }

    #[test]
    fn generator_loss_by_hand() {
        let fake = Tensor::<B, 4>::from_floats([[[[-2.0, 0.0], [0.5, 3.5]]]], &Default::default());
        close(scalar(generator_loss(fake)), -0.5);
    }

    #[test]
    fn adaptive_weight_values() {
        close(adaptive_weight(2.0, 1.0 - 1e-4, 1e4), 2.0);
        close(adaptive_weight(0.3, 0.6 - 1e-4, ADAPTIVE_WEIGHT_MAX), 0.5);
        // Vanishing GAN gradient: capped.
        close(adaptive_weight(5.0, 0.0, ADAPTIVE_WEIGHT_MAX), ADAPTIVE_WEIGHT_MAX);
        close(adaptive_weight(5.0, 0.0, 100.0), 100.0);
        close(adaptive_weight(0.0, 3.0, 1e4), 0.0);
        close(adaptive_weight(f64::NAN, 1.0, 1e4), 0.0);
    }

    #[test]
    fn param_grad_norm_of_known_gradients() {
        let dev = Default::default();
        let w = Param::from_tensor(Tensor::<A, 2>::from_floats([[1.0, -2.0], [0.5, 3.0]], &dev));
        let x = Tensor::<A, 2>::from_floats([[3.0, 4.0], [0.0, 12.0]], &dev);
        // d/dw sum(w·x) = x, ‖x‖ = 13
        close(param_grad_norm((w.val() * x).sum(), &w), 13.0);
        // d/dw sum(w²) = 2w, ‖2w‖ = 2·sqrt(1 + 4 + 0.25 + 9)
        close(param_grad_norm(w.val().square().sum(), &w), 2.0 * 14.25f64.sqrt());
    }

    #[test]
    #[should_panic(expected = "no gradient reached the parameter")]
    fn param_grad_norm_panics_without_a_gradient() {
        let dev = Default::default();
        let w = Param::from_tensor(Tensor::<A, 1>::from_floats([1.0, 2.0], &dev));
        let other = Param::from_tensor(Tensor::<A, 1>::from_floats([1.0], &dev));
        param_grad_norm(w.val().sum(), &other);
    }

    /// The Burn 0.21 behaviour the recipe works around: a backward pass consumes the graph steps it traverses,
    /// so a second loss built on the same intermediate tensor no longer reaches the parameter.
    #[test]
    #[should_panic(expected = "no gradient reached the parameter")]
    fn a_second_backward_through_a_shared_graph_finds_no_gradient() {
        let dev = Default::default();
        let w = Param::from_tensor(Tensor::<A, 1>::from_floats([2.0, 3.0], &dev));
        let y = w.val() * Tensor::<A, 1>::from_floats([1.0, 4.0], &dev);
        close(param_grad_norm(y.clone().sum(), &w), 17f64.sqrt());
        param_grad_norm(y.mul_scalar(5.0).sum(), &w);
    }

    /// The recipe of the module documentation: both norms from small graphs that re-run only the last layer on
    /// a detached input, after which the main graph still backpropagates into the earlier layers.
    #[test]
    fn adaptive_weight_recipe_on_a_detached_last_layer() {
        let dev = Default::default();
        let first: Conv2d<A> = Conv2dConfig::new([2, 3], [1, 1]).init(&dev);
        let last: Conv2d<A> = Conv2dConfig::new([3, 2], [1, 1]).with_bias(false).init(&dev);
        let x = Tensor::<A, 4>::from_floats([[[[0.5, -1.0]], [[2.0, 0.25]]]], &dev); // [1, 2, 1, 2]
        let target = Tensor::<A, 4>::from_floats([[[[1.0, 0.0]], [[-1.0, 0.5]]]], &dev);
        let rec_loss = |y: Tensor<A, 4>| (y - target.clone()).abs().mean();
        let gan_loss = |y: Tensor<A, 4>| generator_loss(y.mul_scalar(3.0));

        let h = first.forward(x);
        let recon = last.forward(h.clone());
        let h_cut = h.clone().detach();
        let rec_norm = param_grad_norm(rec_loss(last.forward(h_cut.clone())), &last.weight);
        let gan_norm = param_grad_norm(gan_loss(last.forward(h_cut)), &last.weight);

        // By hand: y = W h (1×1 conv, 2 pixels p). d mean|y − t| / dW[o, i] = Σ_p sign(y − t)[o, p] h[i, p] / 4,
        // d(−3 mean y)/dW[o, i] = −3 Σ_p h[i, p] / 4.
        let hv = h.clone().inner().into_data().into_vec::<f32>().unwrap(); // [3 channels × 2 pixels]
        let yv = recon.clone().inner().into_data().into_vec::<f32>().unwrap();
        let tv = [1.0f32, 0.0, -1.0, 0.5];
        let (mut rec_sq, mut gan_sq) = (0.0f64, 0.0f64);
        for o in 0..2 {
            for i in 0..3 {
                let (mut gr, mut gg) = (0.0f64, 0.0f64);
                for p in 0..2 {
                    gr += ((yv[o * 2 + p] - tv[o * 2 + p]).signum() * hv[i * 2 + p]) as f64 / 4.0;
                    gg += -3.0 * hv[i * 2 + p] as f64 / 4.0;
                }
                rec_sq += gr * gr;
                gan_sq += gg * gg;
            }
        }
        close(rec_norm, rec_sq.sqrt());
        close(gan_norm, gan_sq.sqrt());
        let w = adaptive_weight(rec_norm, gan_norm, ADAPTIVE_WEIGHT_MAX);
        close(w, rec_sq.sqrt() / (gan_sq.sqrt() + 1e-4));

        // The main graph was not consumed: the total loss still reaches the first layer.
        let total = rec_loss(recon.clone()) + gan_loss(recon).mul_scalar(w);
        let grads = total.backward();
        assert!(first.weight.grad(&grads).is_some());
        assert!(last.weight.grad(&grads).is_some());
    }
}
