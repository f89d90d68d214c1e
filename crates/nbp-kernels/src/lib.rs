//! CPU kernels for the hot spots of KV-cached sampling and of the tokenizer on the pure-Rust `flex` backend.
//!
//! Sampling pushes only a block of tokens (1 to a few hundred rows) through each layer per step. For such
//! products Burn's general matrix multiply spends most of its time packing and on edge tiles; these kernels
//! read the weight matrix in its stored `[out, in]` layout exactly once per row block, keep the activations in
//! cache, and split the output columns over all cores. The tokenizer's 3D convolutions use the same register
//! tile as an implicit matrix product ([`conv3d()`]), or Winograd's F(2×2, 3×3) for stride-1 3×3 spatial taps
//! ([`winograd`]). They need AVX-512 (checked at run time): every function
//! returns `false` without touching its output when the CPU lacks it, and the caller then uses the generic
//! tensor path.
//!
//! The exceptions are [`sample_rows`] (top-k/top-p filtering and the categorical draw) and the tokenizer's
//! group norm and Swish ([`norm`]), which are plain Rust and run everywhere.
//!
//! All buffers are row-major `f32` slices; shapes are given in the doc comment of each function. Binaries that
//! run the kernels should declare [`LineAligned`] as their global allocator, so that large buffers start on a
//! cache line ([`alloc`]).

#[macro_use]
mod tile_asm;

pub mod alloc;
pub mod attention;
pub mod bench;
pub mod bf16;
pub mod conv3d;
pub mod finite;
pub mod gelu;
pub mod im2col;
pub mod linear;
pub mod norm;
pub mod sampling;
mod simd;
pub mod winograd;

pub use alloc::LineAligned;
pub use attention::{AttentionShape, Strides, attention, flags_from_bytes, write_cache_rows};
pub use bf16::{BlockKernel, amx_available, bf16_available, block_kernel, linear_bf16, linear_bf16_to_vec};
pub use conv3d::{Conv3dShape, conv3d};
pub use finite::first_non_finite;
pub use gelu::gelu;
pub use linear::{linear, linear_to_vec};
pub use sampling::sample_rows;

/// True when this CPU can run the kernels (x86-64 with AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Stack size of the kernels' worker threads when [`on_pool`] sets up the pool: the work that runs there
/// (a whole `nbp-cli` command) needs what a main thread has, in debug builds too.
const POOL_STACK: usize = 16 << 20;

/// Runs `f` on a worker thread of the pool that runs the kernels' parallel loops, and returns its result.
///
/// Called from a thread outside the pool (a program's main thread), every parallel loop hands its work to the
/// pool and sleeps until the pool is done: two thread switches per loop, and a sampling step of `official-base`
/// runs a few hundred loops. From a worker thread the caller takes its share of each loop at once. Binaries
/// that run the kernels should run their work through this. The first call sets up the pool (one thread per
/// core, [`POOL_STACK`] of stack each) unless it already exists.
pub fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means the pool already exists (set up by an earlier call, or used before): keep it.
    let _ = rayon::ThreadPoolBuilder::new().stack_size(POOL_STACK).build_global();
    rayon::scope(|_| f())
}

/// Which of these kernels flex uses on this CPU, for benchmark reports: for example `AVX-512; bf16 weights on
/// AMX tiles`, `AVX-512; bf16 weights with AVX512-BF16`, or `none (no AVX-512): Burn's generic kernels`.
pub fn description() -> String {
    if !available() {
        return "none (no AVX-512): Burn's generic kernels".to_string();
    }
    let bf16 = match block_kernel() {
        Some(BlockKernel::Amx) => "bf16 weights on AMX tiles",
        Some(BlockKernel::Dot) => "bf16 weights with AVX512-BF16",
        Some(BlockKernel::Widen) => "bf16 weights widened to f32 (no AMX; no AVX512-BF16 at the FMA rate)",
        None => "bf16 weights through Burn's generic product (no AVX-512 BW; slower than f32)",
    };
    format!("AVX-512; {bf16}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_description_names_the_kernels_this_cpu_runs() {
        let d = super::description();
        assert_eq!(d.starts_with("AVX-512"), super::available(), "{d}");
        if super::available() {
            assert_eq!(d.contains("AMX tiles"), super::amx_available(), "{d}");
            assert_eq!(d.contains("widened"), super::block_kernel() == Some(super::BlockKernel::Widen), "{d}");
            assert_eq!(d.contains("generic product"), !super::bf16_available(), "{d}");
        }
    }
}
