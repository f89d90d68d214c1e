//! Losses for tokenizer training (reference §1.9, issue #4): a PatchGAN discriminator, the hinge/generator GAN
//! losses with VQGAN's adaptive weight, and the VGG16 LPIPS perceptual distance.
//!
//! - [`PatchDiscriminator`] (`discriminator.rs`): per-frame patch logits of a video in [0, 1].
//! - [`hinge_d_loss`], [`generator_loss`], [`adaptive_weight`], [`param_grad_norm`] (`losses.rs`); the module
//!   documentation of [`losses`] shows how a training step computes the adaptive weight.
//! - [`Lpips`] (`lpips.rs`) on [`Vgg16Features`] (`vgg.rs`), loaded from user-supplied weight files and frozen.

pub mod discriminator;
pub mod losses;
pub mod lpips;
pub mod vgg;

pub use discriminator::{DiscriminatorBlock, PatchDiscriminator, PatchDiscriminatorConfig, fold_time};
pub use losses::{
    ADAPTIVE_WEIGHT_EPS, ADAPTIVE_WEIGHT_MAX, adaptive_weight, generator_loss, hinge_d_loss, param_grad_norm,
};
pub use lpips::{Lpips, LpipsConfig};
pub use vgg::{Vgg16Features, Vgg16FeaturesConfig};
