//! KV-cache equivalence: the logits of every incremental sampling step equal the rows of one full forward with
//! the block mask over the same sequence (NBP, NTP, hybrid start), on flex and on wgpu (software Vulkan).

use burn::backend::Flex;
use burn::prelude::*;
use nbp::core::filter::SamplingFilter;
use nbp::core::progress::NoProgress;
use nbp::core::vocab::{Conditioning, Vocabulary};
use nbp::model::sampling::{SampleOptions, sample};
use nbp::model::schedule::Slot;
use nbp::model::{Gpt, GptConfig, Precision, Schedule};

/// `small`: few steps, for backends that compile a kernel per new shape (wgpu on a software driver).
fn check<B: Backend>(device: &B::Device, tolerance: f32, small: bool, precision: Precision) {
    B::seed(device, 3);
    let vocab = Vocabulary::new(40, Conditioning::Text { vocab: 6, tokens: 2 }, true, 4).unwrap();
    let config = GptConfig::new(vocab.size(), 2, 2, 16).with_block_size(64).with_cond_tokens(2).with_dropout(0.0);
    let mut model = Gpt::<B>::new(&config, device).unwrap();
    // Non-zero positions so that a position mix-up shows.
    model.pos_emb = burn::module::Param::from_tensor(Tensor::random(
        [1, 64, 16],
        burn::tensor::Distribution::Normal(0.0, 0.5),
        device,
    ));
    let model = model.with_precision(precision);
    assert_eq!(model.precision(), precision);
    let prefix: Vec<i64> = (0..8).map(|i| vocab.video_id(i * 3) as i64).collect();
    let cond: Vec<i64> = vec![vocab.condition_offset() as i64 + 1, vocab.condition_offset() as i64 + 4];
    let cases = if small {
        vec![
            ("nbp", Schedule::blocks(&[], None, &prefix[..4], 8, 4)),
            ("hybrid", Schedule::hybrid(&cond, &vocab, &[], 6)),
        ]
    } else {
        vec![
            ("nbp", Schedule::blocks(&[], None, &prefix, 12, 4)),
            ("ntp", Schedule::blocks(&[], None, &prefix[..4], 6, 1)),
            ("hybrid", Schedule::hybrid(&cond, &vocab, &[], 16)),
        ]
    };
    for (name, schedule) in cases {
        let mut step_logits = vec![];
        let opts = SampleOptions {
            filter: SamplingFilter { temperature: 1.0, top_k: None, top_p: None },
            greedy: false,
            cfg: None,
        };
        let generated = sample(&model, &schedule, 2, &opts, &NoProgress, &mut |l| step_logits.push(l.clone())).unwrap();
        let generated = generated.into_data().convert::<i64>().into_vec::<i64>().unwrap();
        let n_gen = schedule.generated;
        for b in 0..2 {
            // The sequence that was fed, step by step.
            let seq: Vec<i64> = schedule
                .steps
                .iter()
                .flat_map(|s| s.chunk.iter())
                .map(|slot| match *slot {
                    Slot::Known(v) => v,
                    Slot::Generated(i) => generated[b * n_gen + i],
                })
                .collect();
            let s = seq.len();
            let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq, [1, s]), device);
            let full = model.forward(ids, schedule.mask.tensor::<B>(0..s, s, device)).unwrap();
            let v = full.dims()[2];
            let full = full.reshape([s, v]).into_data().into_vec::<f32>().unwrap();
            let mut end = 0;
            for (step, logits) in schedule.steps.iter().zip(&step_logits) {
                end += step.chunk.len();
                let ours = logits.clone().reshape([2, step.predict, v]).slice([b..b + 1, 0..step.predict, 0..v]);
                let ours = ours.into_data().into_vec::<f32>().unwrap();
                let reference = &full[(end - step.predict) * v..end * v];
                let err = ours.iter().zip(reference).map(|(a, r)| (a - r).abs()).fold(0.0, f32::max);
                assert!(err < tolerance, "{name}: step ending at {end}, sample {b}: max difference {err}");
            }
        }
    }
}

#[test]
fn kv_cache_steps_equal_full_forward_on_flex() {
    check::<Flex>(&Default::default(), 1e-4, false, Precision::F32);
}

/// With bfloat16 linear weights (on an AMX CPU, the AMX kernel), steps and full forward still agree.
#[test]
fn kv_cache_steps_equal_full_forward_on_flex_with_bf16_weights() {
    check::<Flex>(&Default::default(), 1e-4, false, Precision::Bf16);
}

/// The wgpu tests of this file take turns: the backend's seeded generator is shared by all threads, and one test
/// replays the uniform numbers that sampling drew.
#[cfg(feature = "wgpu")]
static WGPU: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[cfg(feature = "wgpu")]
#[test]
fn kv_cache_steps_equal_full_forward_on_wgpu() {
    let _turn = WGPU.lock().unwrap_or_else(|e| e.into_inner());
    check::<burn::backend::Wgpu>(&burn::backend::wgpu::WgpuDevice::DefaultDevice, 1e-4, true, Precision::F32);
}

/// A model without condition tokens (an unconditional one, or the random-weight benchmark) has an empty
/// null-condition embedding; building it and sampling from it works on the GPU backends too (an element-wise
/// operation on that empty tensor used to panic in their debug builds). Filtered sampling on a GPU backend
/// (logits read back once per step, filtered on the host) with top-k 1 draws the greedy tokens.
#[cfg(feature = "wgpu")]
#[test]
fn a_model_without_condition_tokens_samples_on_wgpu() {
    let _turn = WGPU.lock().unwrap_or_else(|e| e.into_inner());
    type B = burn::backend::Wgpu;
    let device = burn::backend::wgpu::WgpuDevice::DefaultDevice;
    let config = GptConfig::new(40, 2, 2, 16).with_block_size(16).with_dropout(0.0);
    let model = Gpt::<B>::new(&config, &device).unwrap();
    assert_eq!(model.uncond_embedding.val().dims(), [0, 16]);
    let prefix: Vec<i64> = (0..4).collect();
    let opts = SampleOptions { filter: SamplingFilter::default(), greedy: true, cfg: None };
    let schedule = Schedule::blocks(&[], None, &prefix, 4, 4);
    let ids = sample(&model, &schedule, 1, &opts, &NoProgress, &mut |_| ()).unwrap();
    let ids = ids.into_data().convert::<i64>().into_vec::<i64>().unwrap();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|&i| (0..40).contains(&i)), "{ids:?}");
    let top1 = SampleOptions {
        filter: SamplingFilter { temperature: 1.0, top_k: Some(1), top_p: Some(0.9) },
        greedy: false,
        cfg: None,
    };
    let drawn = sample(&model, &schedule, 1, &top1, &NoProgress, &mut |_| ()).unwrap();
    assert_eq!(drawn.into_data().convert::<i64>().into_vec::<i64>().unwrap(), ids);

    // Unfiltered draws take the backend's seeded uniform numbers, one per row, through the inverse CDF.
    let plain = SampleOptions {
        filter: SamplingFilter { temperature: 1.0, top_k: None, top_p: None },
        greedy: false,
        cfg: None,
    };
    B::seed(&device, 7);
    let mut logits = vec![];
    let drawn = sample(&model, &schedule, 1, &plain, &NoProgress, &mut |l| logits.push(l.clone())).unwrap();
    let drawn = drawn.into_data().convert::<i64>().into_vec::<i64>().unwrap();
    B::seed(&device, 7);
    let u = Tensor::<B, 2>::random([4, 1], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    let u = u.into_data().into_vec::<f32>().unwrap();
    let l = logits[0].clone().into_data().into_vec::<f32>().unwrap();
    let expected: Vec<i64> = l
        .chunks_exact(40)
        .zip(&u)
        .map(|(row, &u)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f64> = row.iter().map(|&x| ((x - max) as f64).exp()).collect();
            let total: f64 = e.iter().sum();
            let mut cdf = 0.0;
            e.iter()
                .filter(|&&p| {
                    cdf += p / total;
                    cdf < u as f64
                })
                .count() as i64
        })
        .collect();
    assert_eq!(drawn, expected, "uniforms {u:?}");
}

/// CI has no NVIDIA GPU; run with `cargo test --test kv_cache -- --ignored` on a machine that has one.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: cargo test --test kv_cache -- --ignored"]
fn kv_cache_steps_equal_full_forward_on_cuda() {
    check::<burn::backend::Cuda>(&Default::default(), 1e-4, false, Precision::F32);
}

/// CubeCL's bf16 matrix products also write bf16, so the full forward (many rows) and the steps (few rows, the
/// other product order) can round a logit to neighbouring bf16 values: 2⁻⁸ of its size apart.
#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: cargo test --test kv_cache -- --ignored"]
fn kv_cache_steps_equal_full_forward_on_cuda_with_bf16_weights() {
    check::<burn::backend::Cuda>(&Default::default(), 1e-2, false, Precision::Bf16);
}
