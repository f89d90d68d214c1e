//! Run-time choice of the Burn backend (`--device`).

use clap::ValueEnum;

/// The compute backend a command runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// Pure-Rust CPU backend (always available).
    Flex,
    /// GPU through wgpu: Vulkan on Linux/Windows, Metal on macOS, DX12 (feature `wgpu`); also runs on a
    /// software Vulkan driver such as Mesa lavapipe.
    Wgpu,
    /// wgpu forced onto the Vulkan API (feature `wgpu`).
    Vulkan,
    /// NVIDIA GPU through CUDA (feature `cuda`; needs the driver, NVRTC and the CUDA headers at run time).
    Cuda,
}

impl std::fmt::Display for DeviceArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.to_possible_value().expect("named").get_name())
    }
}

/// The error for a backend that this binary was built without.
pub fn not_compiled(device: DeviceArg, feature: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--device {device} is not available: this nbp-cli was built without the `{feature}` feature. Rebuild with \
         `cargo build --release -p nbp-cli --features {feature}` (it is on by default), or use --device flex"
    )
}

/// Checks that a GPU backend can start on this machine, before any work is done on it.
///
/// Burn's GPU backends start their device on a service thread and panic there when no adapter or driver is
/// found (for CUDA: `libcuda.so` missing; for wgpu: no Vulkan/Metal/DX12 adapter), which then panics the calling
/// thread too. This moves two numbers to the device and back while catching such a panic (its message is kept,
/// the backtrace is not printed), and turns it into an error that names the device and the fix. The round trip
/// compiles no kernel, so it is cheap even on a software Vulkan driver.
pub fn probe<B: burn::prelude::Backend>(device: &B::Device, arg: DeviceArg) -> anyhow::Result<()> {
    use std::sync::{Arc, Mutex};
    let first: Arc<Mutex<Option<String>>> = Arc::default();
    let previous = std::panic::take_hook();
    let seen = first.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        if let Ok(mut m) = seen.lock() {
            m.get_or_insert(text);
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], device).into_data().to_vec::<f32>()
    }));
    std::panic::set_hook(previous);
    match result {
        Ok(Ok(v)) if v == [1.0, 2.0] => Ok(()),
        Ok(Ok(v)) => Err(anyhow::anyhow!("--device {arg}: a round trip of [1, 2] through the device gave {v:?}")),
        Ok(Err(e)) => Err(anyhow::anyhow!("--device {arg}: reading back from the device failed: {e:?}")),
        Err(_) => {
            let cause = first.lock().ok().and_then(|m| m.clone()).unwrap_or_else(|| "unknown error".into());
            // cudarc's message lists thirty library names: keep its first sentence.
            let cause = cause.split(" - searched for").next().unwrap_or(&cause).trim().to_string();
            let fix = match arg {
                DeviceArg::Cuda => {
                    "--device cuda needs an NVIDIA GPU with its driver (libcuda.so) and the CUDA toolkit's NVRTC \
                     installed"
                }
                _ => {
                    "--device wgpu/vulkan needs a GPU adapter: a Vulkan, Metal or DX12 driver (on Linux without a \
                     GPU, Mesa's software driver works: apt-get install mesa-vulkan-drivers)"
                }
            };
            Err(anyhow::anyhow!("--device {arg} could not start: {cause}\n{fix}; or use --device flex (the CPU)"))
        }
    }
}

/// Runs `$body` with `$B` bound to the backend type of `$device` and `$dev` to its device.
macro_rules! with_backend {
    ($device:expr, |$B:ident, $dev:ident| $body:expr) => {{
        use $crate::backend::DeviceArg;
        match $device {
            DeviceArg::Flex => {
                type $B = burn::backend::Flex;
                let $dev: burn::prelude::Device<$B> = Default::default();
                $body
            }
            #[cfg(feature = "wgpu")]
            DeviceArg::Wgpu => {
                type $B = burn::backend::Wgpu;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                match $crate::backend::probe::<$B>(&$dev, DeviceArg::Wgpu) {
                    Ok(()) => $body,
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "wgpu")]
            DeviceArg::Vulkan => {
                type $B = burn::backend::Wgpu;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                burn::backend::wgpu::init_setup::<burn::backend::wgpu::graphics::Vulkan>(&$dev, Default::default());
                match $crate::backend::probe::<$B>(&$dev, DeviceArg::Vulkan) {
                    Ok(()) => $body,
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice::default();
                match $crate::backend::probe::<$B>(&$dev, DeviceArg::Cuda) {
                    Ok(()) => $body,
                    Err(e) => Err(e),
                }
            }
            #[allow(unreachable_patterns)]
            other => {
                let feature = if other == DeviceArg::Cuda { "cuda" } else { "wgpu" };
                Err($crate::backend::not_compiled(other, feature))
            }
        }
    }};
}
pub(crate) use with_backend;
