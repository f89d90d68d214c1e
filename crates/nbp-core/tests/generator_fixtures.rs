//! Masks and filters against the PyTorch program `scripts/fixtures/generator_fixtures.py`.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::prelude::*;
use nbp_core::filter::SamplingFilter;
use nbp_core::mask::MaskSpec;
use nbp_core::npy::read_npy;

fn fixture(name: &str) -> PathBuf {
    nbp_core::workspace::workspace_path("tests/fixtures/generator").join(name)
}

#[test]
fn training_masks_match_the_official_builder() {
    // (case, block, hybrid, condition tokens)
    for (case, block, hybrid, prefix) in
        [("nbp_uncond", 4, false, 0), ("hybrid_text", 4, true, 3), ("ntp_uncond", 1, false, 0)]
    {
        let expected = read_npy(fixture(&format!("{case}_mask.npy"))).unwrap();
        let s = expected.shape[0];
        let ours: Vec<f32> =
            MaskSpec::new(block, hybrid, prefix).allowed(0..s, s).iter().map(|&a| a as u8 as f32).collect();
        assert_eq!(ours, expected.to_f32(), "{case}");
    }
}

#[test]
fn filters_match_the_official_top_k_top_p() {
    let logits = read_npy(fixture("filter_logits.npy")).unwrap();
    let t = Tensor::<Flex, 2>::from_data(TensorData::new(logits.to_f32(), [3, 40]), &Default::default());
    for (file, k, p) in
        [("filter_topk_only.npy", 10, 1.0), ("filter_topk_topp.npy", 10, 0.9), ("filter_topp_large_k.npy", 40, 0.5)]
    {
        let f = SamplingFilter { temperature: 1.0, top_k: Some(k), top_p: Some(p) };
        let kept: Vec<f32> = f
            .apply(t.clone())
            .into_data()
            .into_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.is_finite() as u8 as f32)
            .collect();
        assert_eq!(kept, read_npy(fixture(file)).unwrap().to_f32(), "{file}");
    }
}
