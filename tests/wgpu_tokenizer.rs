//! The tokenizer on wgpu (any Vulkan/Metal/DX12 adapter, including Mesa's software lavapipe driver) gives the
//! same numbers as PyTorch and as the flex CPU backend.
//!
//! Tolerance: relative error (max |a − b| / max |b|) below 1e-4 for the encoder output and 1e-3 for the decoder
//! output (GPU kernels sum in a different order), and identical token ids.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;

use burn::backend::Flex;
use burn::backend::wgpu::{Wgpu, WgpuDevice};
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

#[test]
fn tokenizer_on_wgpu_matches_pytorch_and_flex() {
    let config = TokenizerConfig::tiny();
    let gpu = WgpuDevice::DefaultDevice;
    let (tok, _) = load_tokenizer::<Wgpu>(fixture("tiny_magvit2.pt"), Some(&config), &gpu)
        .expect("wgpu needs a Vulkan/Metal/DX12 adapter; on Debian install mesa-vulkan-drivers for a software one");
    let (tok_cpu, _) = load_tokenizer::<Flex>(fixture("tiny_magvit2.pt"), Some(&config), &Default::default()).unwrap();

    let z = tok.encode_latents(tensor5::<Wgpu>("clip.npy", &gpu), &NoProgress).unwrap();
    let z_gpu = z.clone().into_data().into_vec::<f32>().unwrap();
    let z_torch = tensor5::<Flex>("encoder_out.npy", &Default::default()).into_data().into_vec::<f32>().unwrap();
    let z_cpu = tok_cpu
        .encode_latents(tensor5::<Flex>("clip.npy", &Default::default()), &NoProgress)
        .unwrap()
        .into_data()
        .into_vec::<f32>()
        .unwrap();
    let (e_torch, e_cpu) = (rel_err(&z_gpu, &z_torch), rel_err(&z_gpu, &z_cpu));
    eprintln!("wgpu encoder output: relative error {e_torch:e} vs PyTorch, {e_cpu:e} vs flex");
    assert!(e_torch < 1e-4 && e_cpu < 1e-4);

    let ids = tok.fsq.quantize(z).1.into_data().convert::<i64>().into_vec::<i64>().unwrap();
    assert_eq!(ids, read_npy(fixture("indices.npy")).unwrap().to_i64().unwrap());

    let x = tok.decode_codes(tensor5::<Wgpu>("codes.npy", &gpu), &NoProgress).into_data().into_vec::<f32>().unwrap();
    let x_torch = tensor5::<Flex>("decoded.npy", &Default::default()).into_data().into_vec::<f32>().unwrap();
    let e = rel_err(&x, &x_torch);
    eprintln!("wgpu decoder output: relative error {e:e} vs PyTorch");
    assert!(e < 1e-3);
}
