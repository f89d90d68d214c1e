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
    let fwd = model.forward_train(x.clone()).unwrap();
    let loss = (fwd.reconstruction - x).powi_scalar(2).mean();
    let grads = loss.backward();
    let Layer::Conv(first) = &model.encoder.layers[0] else { panic!("the encoder starts with a convolution") };
    let g = first.conv.weight.grad(&grads).expect("the first encoder conv gets a gradient");
    let norm: f32 = g.powi_scalar(2).sum().sqrt().into_scalar();
    assert!(norm > 1e-8, "gradient norm of the first encoder conv: {norm}");
}
