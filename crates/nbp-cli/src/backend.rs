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

/// Runs `f`, catching a panic: `Err` holds the first panic message (the backtrace is not printed).
///
/// Burn's GPU backends run their device on a service thread and panic there on a driver or validation error,
/// which then panics the calling thread too; this is how such a failure becomes an error message.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn catching<T>(f: impl FnOnce() -> T) -> Result<T, String> {
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
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(previous);
    result.map_err(|_| first.lock().ok().and_then(|m| m.clone()).unwrap_or_else(|| "unknown error".into()))
}

/// Checks that a GPU backend can start on this machine, before any work is done on it.
///
/// When no adapter or driver is found (for CUDA: `libcuda.so` missing; for wgpu: no Vulkan/Metal/DX12 adapter)
/// the backend panics on its service thread. This moves two numbers to the device and back while catching such a
/// panic, and turns it into an error that names the device and the fix. The round trip compiles no kernel, so it
/// is cheap even on a software Vulkan driver.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn probe<B: burn::prelude::Backend>(device: &B::Device, arg: DeviceArg) -> anyhow::Result<()> {
    let result = catching(|| burn::tensor::Tensor::<B, 1>::from_floats([1.0, 2.0], device).into_data().to_vec::<f32>());
    match result {
        Ok(Ok(v)) if v == [1.0, 2.0] => Ok(()),
        Ok(Ok(v)) => Err(anyhow::anyhow!("--device {arg}: a round trip of [1, 2] through the device gave {v:?}")),
        Ok(Err(e)) => Err(anyhow::anyhow!("--device {arg}: reading back from the device failed: {e:?}")),
        Err(cause) => Err(start_failure(arg, &cause)),
    }
}

/// Forces wgpu onto the Vulkan API (`--device vulkan`), turning a failure to find a Vulkan adapter (a panic in
/// wgpu's setup) into the error of [`probe`].
#[cfg(feature = "wgpu")]
pub fn setup_vulkan(device: &burn::backend::wgpu::WgpuDevice) -> anyhow::Result<()> {
    catching(|| {
        burn::backend::wgpu::init_setup::<burn::backend::wgpu::graphics::Vulkan>(device, Default::default());
    })
    .map_err(|cause| start_failure(DeviceArg::Vulkan, &cause))
}

/// The error for a GPU backend that could not start (`cause`: its panic message), naming what it needs.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn start_failure(arg: DeviceArg, cause: &str) -> anyhow::Error {
    // cudarc's message lists thirty library names, and wgpu's says it falls back where it does not: keep the first
    // sentence.
    let cause = cause.split(" - searched for").next().unwrap_or(cause);
    let cause = cause.split(". Falling back").next().unwrap_or(cause).trim();
    let fix = match arg {
        DeviceArg::Cuda => {
            "--device cuda needs an NVIDIA GPU with its driver (libcuda.so) and the CUDA toolkit's NVRTC installed"
                .to_string()
        }
        _ => {
            let icd = std::env::var("VK_ICD_FILENAMES").ok().filter(|v| !v.is_empty()).map_or(String::new(), |v| {
                format!("; VK_ICD_FILENAMES={v} is set, so Vulkan loads only the driver it names: unset it")
            });
            format!(
                "--device {arg} needs a GPU adapter: a Vulkan, Metal or DX12 driver (on Linux without a GPU, Mesa's \
                 software driver works: apt-get install mesa-vulkan-drivers){icd}"
            )
        }
    };
    anyhow::anyhow!("--device {arg} could not start: {cause}\n{fix}; or use --device flex (the CPU)")
}

/// Runs the work `f` of a command on a GPU backend that has started, turning a failure of the backend (a panic
/// on its service thread: a wgpu validation error, a CUDA launch error) into an error that names the device and
/// the cause instead of a panic with a backtrace.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn guarded<T>(arg: DeviceArg, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    catching(f).unwrap_or_else(|cause| Err(backend_failure(arg, &cause)))
}

/// The error for a GPU backend that failed while working, with the fix where one is known.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn backend_failure(arg: DeviceArg, cause: &str) -> anyhow::Error {
    let cause = cause.trim();
    let fix = if cause.contains("buffer_binding_size") || cause.contains("can't allocate buffer") {
        // wgpu binds each tensor as one storage buffer, and adapters limit its size: Mesa's software driver to
        // 128 MiB, less than the 393 MB token embedding of the official models.
        "a tensor of this model is larger than the largest buffer this wgpu adapter can allocate or bind (the \
         message above gives the size, and the limit where wgpu names it): use a smaller model or vocabulary \
         (`bench sample`: --preset, --vocab), --device cuda on an NVIDIA GPU, another adapter, or --device flex \
         (the CPU)"
    } else if cfg!(feature = "cuda") && cause.contains("CUDA_ERROR_INVALID_VALUE") {
        // Seen on an H100 in two sessions, each time in every run after one that was killed while CubeCL tuned
        // its kernels, and gone once the autotune cache was removed.
        &format!(
            "if an earlier run on this machine was interrupted, its incomplete tuning results in CubeCL's autotune \
             cache can cause this: remove {} and run again (the first run then tunes its kernels anew, minutes \
             for the official models). Otherwise this is a failure of the GPU backend or its driver, not of the \
             input: --device flex (the CPU) runs the same computation",
            cubecl_autotune_dir().display()
        )
    } else {
        "this is a failure of the GPU backend or its driver, not of the input: --device flex (the CPU) runs the \
         same computation"
    };
    anyhow::anyhow!("--device {arg} failed while working: {cause}\n{fix}")
}

/// Where CubeCL keeps its autotune results, as its configuration says (`cubecl.toml`, `CUBECL_*` variables; by
/// default `target/autotune` under the nearest directory above the working directory that holds a `Cargo.toml`,
/// else `cubecl/autotune` in the user's cache directory).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn cubecl_autotune_dir() -> std::path::PathBuf {
    use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
    CubeClRuntimeConfig::get().autotune.cache.root().join("autotune")
}

/// Prints, before the first work of a GPU backend on this machine, that its kernels are compiled and tuned as
/// they are first needed: without the note a first run looks stuck at its first step for minutes.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
pub fn note_first_run(arg: DeviceArg) {
    if let Some(note) = first_run_note(arg, &cubecl_autotune_dir()) {
        eprintln!("{note}");
    }
}

/// The note of [`note_first_run`], or `None` when CubeCL's autotune cache `dir` already holds results of this
/// device's runtime (a run has tuned kernels on it before).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn first_run_note(arg: DeviceArg, dir: &std::path::Path) -> Option<String> {
    let runtime = if arg == DeviceArg::Cuda { "cuda" } else { "wgpu" };
    if has_tuned(dir, runtime) {
        return None;
    }
    Some(format!(
        "note: the first run on --device {arg} here compiles and tunes GPU kernels as they are first needed, which \
         takes minutes (the bundled demo's `nbp-cli sample`: 3.4 min on Mesa's software Vulkan driver with 2 CPU \
         cores, 4 min with CUDA on an H100); CubeCL keeps what it learnt in {}, so later runs start in seconds",
        dir.display()
    ))
}

/// The version of CubeCL that Burn 0.21 builds with (`Cargo.lock`'s `cubecl-common`): its autotune results are
/// kept in a folder of that name, and those of another version are not read.
#[cfg(any(feature = "wgpu", feature = "cuda"))]
const CUBECL_VERSION: &str = "0.10.0";

/// Whether CubeCL's autotune cache `dir` (laid out `<version>/device-<type>-<index>-<runtime>/`) has, for this
/// build's CubeCL version, a folder for a runtime whose name contains `runtime` (`wgpu<wgsl>` and `wgpu<spirv>` are
/// stored as `wgpu_wgsl_`, `wgpu_spirv_`).
#[cfg(any(feature = "wgpu", feature = "cuda"))]
fn has_tuned(dir: &std::path::Path, runtime: &str) -> bool {
    let Ok(devices) = std::fs::read_dir(dir.join(CUBECL_VERSION)) else {
        return false;
    };
    devices.flatten().any(|device| device.file_name().to_string_lossy().contains(runtime))
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
                    Ok(()) => {
                        $crate::backend::note_first_run(DeviceArg::Wgpu);
                        $crate::backend::guarded(DeviceArg::Wgpu, || $body)
                    }
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "wgpu")]
            DeviceArg::Vulkan => {
                type $B = burn::backend::Wgpu;
                let $dev = burn::backend::wgpu::WgpuDevice::DefaultDevice;
                match $crate::backend::setup_vulkan(&$dev)
                    .and_then(|()| $crate::backend::probe::<$B>(&$dev, DeviceArg::Vulkan))
                {
                    Ok(()) => {
                        $crate::backend::note_first_run(DeviceArg::Vulkan);
                        $crate::backend::guarded(DeviceArg::Vulkan, || $body)
                    }
                    Err(e) => Err(e),
                }
            }
            #[cfg(feature = "cuda")]
            DeviceArg::Cuda => {
                type $B = burn::backend::Cuda;
                let $dev = burn::backend::cuda::CudaDevice::default();
                match $crate::backend::probe::<$B>(&$dev, DeviceArg::Cuda) {
                    Ok(()) => {
                        $crate::backend::note_first_run(DeviceArg::Cuda);
                        $crate::backend::guarded(DeviceArg::Cuda, || $body)
                    }
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

#[cfg(all(test, any(feature = "wgpu", feature = "cuda")))]
mod tests {
    use super::*;

    #[test]
    fn the_first_run_note_is_printed_until_the_runtime_has_tuned_kernels() {
        let dir = std::env::temp_dir().join(format!("nbp-first-run-note-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // No cache folder yet: a first run for every GPU backend.
        let note = first_run_note(DeviceArg::Wgpu, &dir).expect("a note before any tuning");
        assert!(note.starts_with("note: the first run on --device wgpu here compiles and tunes"), "{note}");
        assert!(note.contains(&format!("keeps what it learnt in {},", dir.display())), "{note}");
        // CubeCL's layout after a wgpu run (as on Mesa's software driver): wgpu has tuned, CUDA has not.
        std::fs::create_dir_all(dir.join("0.10.0/device-4-0-wgpu_wgsl_")).unwrap();
        assert_eq!(first_run_note(DeviceArg::Wgpu, &dir), None);
        assert_eq!(first_run_note(DeviceArg::Vulkan, &dir), None);
        let cuda = first_run_note(DeviceArg::Cuda, &dir).expect("CUDA has not tuned here");
        assert!(cuda.starts_with("note: the first run on --device cuda here"), "{cuda}");
        std::fs::create_dir_all(dir.join("0.10.0/device-0-0-cuda")).unwrap();
        assert_eq!(first_run_note(DeviceArg::Cuda, &dir), None);
        std::fs::remove_dir_all(&dir).unwrap();
        // Results of another CubeCL version are not read: still a first run.
        std::fs::create_dir_all(dir.join("0.9.0/device-0-0-cuda")).unwrap();
        assert!(first_run_note(DeviceArg::Cuda, &dir).is_some());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_cubecl_version_is_the_locked_one() {
        let lock = std::fs::read_to_string(nbp_core::workspace::workspace_path("Cargo.lock")).unwrap();
        let locked = lock.split("name = \"cubecl-common\"\nversion = \"").nth(1).and_then(|r| r.split('"').next());
        assert_eq!(locked, Some(CUBECL_VERSION), "update CUBECL_VERSION to Cargo.lock's cubecl-common");
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn a_cuda_launch_error_names_the_autotune_cache() {
        let e = backend_failure(
            DeviceArg::Cuda,
            "An unknown error happened during launch\nCaused by:\n  \
            DriverError(CUDA_ERROR_INVALID_VALUE, \"invalid argument\")",
        )
        .to_string();
        assert!(e.starts_with("--device cuda failed while working: An unknown error"), "{e}");
        // Tests run in this crate's folder: CubeCL's default is the target folder beside the nearest Cargo.toml.
        let dir = std::env::current_dir().unwrap().join("target/autotune");
        assert_eq!(cubecl_autotune_dir(), dir);
        assert!(e.contains(&format!("remove {} and run again", dir.display())), "{e}");
        let other = backend_failure(DeviceArg::Wgpu, "Validation Error").to_string();
        assert!(other.contains("not of the input") && !other.contains("autotune"), "{other}");
    }
}
