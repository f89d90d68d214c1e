//! The tokenizer on the GPU backends gives the same numbers as PyTorch and as the flex CPU backend: wgpu (any
//! Vulkan/Metal/DX12 adapter, including Mesa's software lavapipe driver, so it runs in CI) and CUDA (ignored by
//! default because CI has no NVIDIA GPU; run it with `cargo test --test gpu_tokenizer -- --ignored`).
//!
//! Tolerance on wgpu: relative error (max |a − b| / max |b|) below 1e-4 for the encoder output and 1e-3 for the
//! decoder output (GPU kernels sum in a different order), and identical token ids. On CUDA, CubeCL runs f32
//! matrix products (and so the convolutions) on the tensor cores in TF32, with a 10-bit mantissa, as PyTorch does
//! for convolutions by default: relative error below 5e-3 for both outputs (measured on an H100: 4e-4 to 1.6e-3
//! for the encoder, depending on the kernels that autotuning picks, and 7e-4 for the decoder), and at most 2 % of
//! the token ids may differ (a latent closer to an FSQ rounding boundary than the TF32 error rounds the other way;
//! none differed on the H100).
#![cfg(any(feature = "wgpu", feature = "cuda"))]

use std::path::PathBuf;

use burn::backend::Flex;
use burn::prelude::*;
use nbp::core::npy::read_npy;
use nbp::core::progress::NoProgress;
use nbp::tokenizer::{TokenizerConfig, load_tokenizer};

fn fixture(name: &str) -> PathBuf {
    nbp_core::workspace::workspace_path("tests/fixtures/tokenizer").join(name)
}

fn tensor5<B: Backend>(name: &str, device: &B::Device) -> Tensor<B, 5> {
    let a = read_npy(fixture(name)).unwrap();
    let shape: [usize; 5] = a.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(a.to_f32(), shape), device)
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    diff / b.iter().map(|y| y.abs()).fold(0.0, f32::max)
}

/// Encodes, quantizes and decodes the fixture clip on `B` and compares with PyTorch and flex: relative errors
/// below `enc_tol` and `dec_tol`, and at most the fraction `id_slack` of the token ids different.
fn check<B: Backend>(gpu: &B::Device, name: &str, enc_tol: f32, dec_tol: f32, id_slack: f64) {
    let config = TokenizerConfig::tiny();
    let (tok, _) = load_tokenizer::<B>(fixture("tiny_magvit2.pt"), Some(&config), gpu).unwrap();
    let (tok_cpu, _) = load_tokenizer::<Flex>(fixture("tiny_magvit2.pt"), Some(&config), &Default::default()).unwrap();

    let z = tok.encode_latents(tensor5::<B>("clip.npy", gpu), &NoProgress).unwrap();
    let z_gpu = z.clone().into_data().into_vec::<f32>().unwrap();
    let z_torch = tensor5::<Flex>("encoder_out.npy", &Default::default()).into_data().into_vec::<f32>().unwrap();
    let z_cpu = tok_cpu
        .encode_latents(tensor5::<Flex>("clip.npy", &Default::default()), &NoProgress)
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    let (e_torch, e_cpu) = (rel_err(&z_gpu, &z_torch), rel_err(&z_gpu, &z_cpu));
    eprintln!("{name} encoder output: relative error {e_torch:e} vs PyTorch, {e_cpu:e} vs flex");
    assert!(e_torch < enc_tol && e_cpu < enc_tol);

    let ids = tok.fsq.quantize(z).1.into_data().convert::<i64>().into_vec::<i64>().unwrap();
    let expected = read_npy(fixture("indices.npy")).unwrap().to_i64().unwrap();
    assert_eq!(ids.len(), expected.len());
    let differ = ids.iter().zip(&expected).filter(|(a, b)| a != b).count();
    eprintln!("{name} token ids: {differ} of {} differ from PyTorch", ids.len());
    assert!(differ as f64 <= id_slack * ids.len() as f64);

    let x = tok.decode_codes(tensor5::<B>("codes.npy", gpu), &NoProgress).into_data().into_vec::<f32>().unwrap();
    let x_torch = tensor5::<Flex>("decoded.npy", &Default::default()).into_data().into_vec::<f32>().unwrap();
    let e = rel_err(&x, &x_torch);
    eprintln!("{name} decoder output: relative error {e:e} vs PyTorch");
    assert!(e < dec_tol);
}

#[cfg(feature = "wgpu")]
#[test]
fn tokenizer_on_wgpu_matches_pytorch_and_flex() {
    // Panics with wgpu's own message when there is no adapter; on Debian, mesa-vulkan-drivers provides a
    // software one.
    check::<burn::backend::Wgpu>(&burn::backend::wgpu::WgpuDevice::DefaultDevice, "wgpu", 1e-4, 1e-3, 0.0);
}

#[cfg(feature = "cuda")]
#[test]
#[ignore = "needs an NVIDIA GPU: cargo test --test gpu_tokenizer -- --ignored"]
fn tokenizer_on_cuda_matches_pytorch_and_flex() {
    check::<burn::backend::Cuda>(&Default::default(), "cuda", 5e-3, 5e-3, 0.02);
}
