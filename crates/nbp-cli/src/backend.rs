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
                $body
            }
            #[cfg(feature = "wgpu")]
            DeviceArg::Vulkan => {
                type $B = burn::backend::Wgpu;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                burn::backend::wgpu::init_setup::<burn::backend::wgpu::graphics::Vulkan>(&$dev, Default::default());
                $body
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice::default();
                $body
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
