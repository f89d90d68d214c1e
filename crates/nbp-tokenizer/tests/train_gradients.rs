//! The training forward pass passes gradients through the quantiser to every encoder layer.

use burn::backend::{Autodiff, Flex};
use burn::prelude::*;
use nbp_tokenizer::layer::Layer;
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer};

type B = Autodiff<Flex>;

#[test]
fn straight_through_gradients_reach_the_first_encoder_layer() {
    let device = Default::default();
    let model = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &device).unwrap();
    let x = Tensor::<B, 5>::random([1, 3, 5, 16, 16], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    for quantize in [true, false] {
        let fwd = model.forward_train(x.clone(), quantize, true).unwrap();
        let loss = (fwd.reconstruction - x.clone()).powi_scalar(2).mean();
        let grads = loss.backward();
        let Layer::Conv(first) = &model.encoder.layers[0] else { panic!("the encoder starts with a convolution") };
        let g = first.conv.weight.grad(&grads).expect("the first encoder conv gets a gradient");
        let norm: f32 = g.powi_scalar(2).sum().sqrt().into_scalar();
        assert!(norm > 1e-8, "quantize {quantize}: gradient norm of the first encoder conv: {norm}");
    }
}

#[test]
fn the_unquantized_warm_up_feeds_the_decoder_the_codes_before_rounding() {
    let device = Default::default();
    let model = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &device).unwrap();
    let x = Tensor::<B, 5>::random([1, 3, 5, 16, 16], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    let rounded = model.forward_train(x.clone(), true, true).unwrap().codes;
    let soft = model.forward_train(x, false, true).unwrap().codes;
    let half_width: Vec<f32> = model.fsq.levels.iter().map(|&l| (l / 2) as f32).collect();
    let (r, s) = (rounded.into_data().to_vec::<f32>().unwrap(), soft.into_data().to_vec::<f32>().unwrap());
    let per_dim = r.len() / half_width.len();
    let mut off_grid = 0;
    for (i, (r, s)) in r.iter().zip(&s).enumerate() {
        let hw = half_width[i / per_dim];
        // The rounded code is the soft one rounded on the grid of its dimension.
        assert!(((s * hw).round() / hw - r).abs() < 1e-6, "code {i}: rounded {r}, soft {s}");
        assert!(s.abs() <= 1.0 + 1.0 / hw, "code {i}: {s} outside the bounded range");
        off_grid += usize::from((s * hw - (s * hw).round()).abs() > 1e-3);
    }
    assert!(off_grid > r.len() / 2, "only {off_grid} of {} soft codes lie off the grid", r.len());
}
