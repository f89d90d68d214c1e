//! Behaviour of the tokenizer that does not need fixtures: causality, shapes, input validation, depth-to-space.
use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::Distribution;
use nbp_core::npy::read_npy;
use nbp_core::progress::NoProgress;
use nbp_tokenizer::depth_to_space::DepthToSpace3d;
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer};

type B = Flex;

fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn depth_to_space_matches_the_official_layout() {
    let dev = Default::default();
    let dir = nbp_core::workspace::workspace_path("tests/fixtures/tokenizer");
    for (factors, cin, file) in [([2, 2, 2], 16, "depth_to_space.npy"), ([1, 2, 2], 8, "depth_to_space_122.npy")] {
        let x = Tensor::<B, 1, Int>::arange(0..(cin * 8) as i64, &dev).float().reshape([1, cin, 2, 2, 2]);
        let y = DepthToSpace3d::new(factors).forward(x);
        let expected = read_npy(dir.join(file)).unwrap();
        assert_eq!(y.dims().to_vec(), expected.shape);
        assert_eq!(values(y), expected.to_f32());
    }
    // Hand check of the channel order: with factors (1,1,2) and C = 1, channels (wb=0, wb=1) interleave in W.
    let x = Tensor::<B, 1>::from_floats([1.0, 2.0, 10.0, 20.0], &dev).reshape([1, 2, 1, 1, 2]);
    let y = DepthToSpace3d::new([1, 1, 2]).forward(x);
    assert_eq!(values(y), vec![1.0, 10.0, 2.0, 20.0]);
}

#[test]
fn encoder_and_decoder_are_causal_in_time() {
    let dev = Default::default();
    B::seed(&dev, 7);
    let tok = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &dev).unwrap();
    let video = Tensor::<B, 5>::random([1, 3, 17, 16, 24], Distribution::Uniform(0.0, 1.0), &dev);
    let changed = video.clone().slice_assign(
        [0..1, 0..3, 5..17, 0..16, 0..24],
        Tensor::random([1, 3, 12, 16, 24], Distribution::Uniform(0.0, 1.0), &dev),
    );
    let z1 = tok.encode_latents(video, &NoProgress).unwrap();
    let z2 = tok.encode_latents(changed, &NoProgress).unwrap();
    assert_eq!(z1.dims(), [1, 6, 5, 2, 3]);
    let early = |z: Tensor<B, 5>| values(z.slice([0..1, 0..6, 0..2, 0..2, 0..3]));
    let late = |z: Tensor<B, 5>| values(z.slice([0..1, 0..6, 2..5, 0..2, 0..3]));
    assert!(max_diff(&early(z1.clone()), &early(z2.clone())) < 1e-6, "latent frames 0-1 depend on pixel frames ≥ 5");
    assert!(max_diff(&late(z1), &late(z2)) > 1e-3, "later latent frames must see the changed pixels");

    let codes = Tensor::<B, 5>::random([1, 6, 5, 2, 3], Distribution::Uniform(-1.0, 1.0), &dev);
    let codes2 = codes.clone().slice_assign(
        [0..1, 0..6, 2..5, 0..2, 0..3],
        Tensor::random([1, 6, 3, 2, 3], Distribution::Uniform(-1.0, 1.0), &dev),
    );
    let x1 = tok.decode_codes(codes, &NoProgress);
    let x2 = tok.decode_codes(codes2, &NoProgress);
    assert_eq!(x1.dims(), [1, 3, 17, 16, 24]);
    let first = |x: Tensor<B, 5>| values(x.slice([0..1, 0..3, 0..5, 0..16, 0..24]));
    let rest = |x: Tensor<B, 5>| values(x.slice([0..1, 0..3, 5..17, 0..16, 0..24]));
    assert!(max_diff(&first(x1.clone()), &first(x2.clone())) < 1e-6, "decoded frames 0-4 depend on latent frame 2");
    assert!(max_diff(&rest(x1), &rest(x2)) > 1e-3);
}

#[test]
fn single_images_and_longer_clips_work() {
    let dev = Default::default();
    let tok = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &dev).unwrap();
    let image = Tensor::<B, 5>::random([2, 3, 1, 8, 16], Distribution::Uniform(0.0, 1.0), &dev);
    let ids = tok.encode(image).unwrap();
    assert_eq!(ids.dims(), [2, 1, 1, 2]);
    let ids_v = ids.clone().into_data().into_vec::<i32>().unwrap();
    assert!(ids_v.iter().all(|&i| (0..64000).contains(&i)));
    let out = tok.decode(ids);
    assert_eq!(out.dims(), [2, 3, 1, 8, 16]);
    let v = values(out);
    assert!(v.iter().all(|x| (0.0..=1.0).contains(x)), "decode clamps to [0, 1]");
    let clip = Tensor::<B, 5>::zeros([1, 3, 9, 8, 8], &dev);
    assert_eq!(tok.encode(clip).unwrap().dims(), [1, 3, 1, 1]);
}

#[test]
fn bad_shapes_are_errors_that_name_the_rule() {
    let dev = Default::default();
    let tok = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &dev).unwrap();
    let err = tok.encode(Tensor::zeros([1, 3, 16, 32, 32], &dev)).unwrap_err().to_string();
    assert!(err.contains("1 + 4n") && err.contains("16"), "{err}");
    let err = tok.encode(Tensor::zeros([1, 3, 17, 30, 32], &dev)).unwrap_err().to_string();
    assert!(err.contains("multiples of 8") && err.contains("30x32"), "{err}");
    let err = tok.encode(Tensor::zeros([1, 4, 17, 32, 32], &dev)).unwrap_err().to_string();
    assert!(err.contains("[batch ≥ 1, 3, frames, height, width]"), "{err}");
    assert!(TokenizerConfig::preset("huge").is_err());
    let bad = TokenizerConfig::new(vec![8, 16, 16, 20], vec![1, 1, 1, 1], vec![1, 1, 1, 1]).with_norm_groups(8);
    assert!(VideoTokenizer::<B>::new(&bad, &dev).unwrap_err().to_string().contains("multiple of norm_groups"));
}

#[test]
fn official_preset_has_the_reference_layer_list_and_size() {
    let dev = Default::default();
    let tok = VideoTokenizer::<B>::new(&TokenizerConfig::official(), &dev).unwrap();
    assert_eq!(tok.encoder.layers.len(), 27);
    assert_eq!(tok.decoder.layers.len(), 30);
    // Reference §1.8: ≈370.4 M parameters (144.9 M encoder + 225.5 M decoder).
    assert_eq!(tok.encoder.num_params(), 144_886_790);
    assert_eq!(tok.decoder.num_params(), 225_485_315);
}

#[test]
fn clips_decoded_a_few_at_a_time_equal_one_batch() {
    use nbp_core::npy::NpyArray;
    use nbp_tokenizer::pipeline::{decode_in_batches, npy_to_indices};
    let dev = Default::default();
    let tok = VideoTokenizer::<B>::new(&TokenizerConfig::tiny(), &dev).unwrap();
    let codebook = tok.codebook_size() as i32;
    // 3 clips of 2 latent frames of 2x2 tokens.
    let ids: Vec<i32> = (0..24).map(|i| (i * 7919) % codebook).collect();
    let array = NpyArray::i32(vec![3, 2, 2, 2], ids);
    let whole = nbp_core::video::tensor_to_videos(tok.decode(npy_to_indices(&array, &tok, &dev).unwrap())).unwrap();
    for batch in [1, 2, 3, 8] {
        let parts = decode_in_batches(&tok, &array, batch, &NoProgress).unwrap();
        assert_eq!(parts.len(), 3, "batch {batch}");
        for (a, b) in parts.iter().zip(&whole) {
            assert_eq!((a.frames, a.height, a.width), (5, 16, 16));
            assert!(max_diff(&a.data, &b.data) < 1e-6, "batch {batch}");
        }
    }
    // An empty array is the whole array's error, not an empty result.
    let empty = NpyArray::i32(vec![0, 2, 2, 2], vec![]);
    let e = decode_in_batches(&tok, &empty, 2, &NoProgress).unwrap_err().to_string();
    assert!(e.contains("is empty"), "{e}");
}
