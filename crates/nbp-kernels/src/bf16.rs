//! `out = x·Wᵀ + b` with the weight stored in bfloat16 (`[out, in]`, PyTorch's layout), on CPUs with Intel's
//! AMX tile units (blocks of rows on the tiles, 1–4 rows with AVX-512), with AVX512-BF16's dot-product
//! instruction ([`dot`]: AMD Zen 4 and later; 1–4 rows there too with the AVX-512 kernel), or on any other
//! CPU with AVX-512 F and BW by widening the weights to f32 ([`widen`]; 1–4 rows with the same AVX-512 kernel).
//!
//! bfloat16 weights are half the bytes of f32 ones, and a sampling step that reads every weight once (an NTP
//! step, or an NBP step of a few rows) is bound by how fast those bytes come from memory. The products of a
//! block of rows are then also cheap: one AMX `tdpbf16ps` multiplies a 16 × 32 bfloat16 tile by a 32 × 16 one
//! and adds the 16 × 16 result to f32 accumulators, about ten times the f32 AVX-512 rate per core.
//!
//! The function computed is: `x` rounded to bfloat16 (round to nearest even), every product of two bfloat16
//! numbers exact, the sums in f32 (AMX flushes denormal inputs to zero), the bias added in f32.
//!
//! Layout: AMX wants its second operand in pairs along the inner dimension (`[k/2][cols][2]`). Here the weight
//! is the *first* operand — its rows (output columns) and their consecutive bfloat16 inner elements are exactly
//! what a tile row holds — so the weight is read where it lies, and only `x` (few rows, reused for every weight
//! tile) is packed into pairs. The tiles compute `outᵀ`, transposed back when stored.

use rayon::prelude::*;

use crate::linear::SyncPtr;

mod dot;
mod widen;

/// Rows (and columns) of a tile.
const T: usize = 16;
/// Inner-dimension elements per tile: 16 rows of 64 bytes of bfloat16.
const KT: usize = 32;

/// True when this CPU and operating system can run [`linear_bf16`]: x86-64 Linux with AMX-BF16 and the tile
/// data state granted to this process (asked for once, on the first call).
pub fn amx_available() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(amx::request)
}

/// True when [`linear_bf16`] runs on this CPU: on the AMX tile units ([`amx_available`]), with AVX512-BF16's
/// dot-product instruction (AMD Zen 4 and later), or on any other CPU with AVX-512 F and BW by widening the
/// weights to f32 ([`BlockKernel`]).
pub fn bf16_available() -> bool {
    block_kernel().is_some()
}

/// How [`linear_bf16`] multiplies more than a few rows of `x` (up to 4 rows, every CPU widens each weight
/// vector in registers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockKernel {
    /// Intel's AMX tile units.
    Amx,
    /// AVX512-BF16's `vdpbf16ps`, where it runs at the f32 FMA rate or faster: AMD Zen 4 and later.
    Dot,
    /// Weights widened to f32 a chunk at a time, then the f32 FMA kernel: CPUs whose `vdpbf16ps` issues at half
    /// the f32 FMA rate (Intel's), or that have none. On a 2-core Sapphire/Emerald Rapids Xeon without AMX, a
    /// 512 × 1536 × 6144 product took 46–47 ms widened against 59 ms with `vdpbf16ps` (`nbp-cli bench kernels`),
    /// and NBP-16 sampling of `official-base` (`nbp-cli bench sample --precision bf16`) 11.7–11.9 s against
    /// 14.2–14.3 s.
    Widen,
}

/// The kernel [`linear_bf16`] uses on this CPU for more than a few rows; `None` when it does not run here.
/// Decided once (`CPUID` leaves a virtual machine, and a sampling step multiplies a few hundred times).
pub fn block_kernel() -> Option<BlockKernel> {
    static KERNEL: std::sync::OnceLock<Option<BlockKernel>> = std::sync::OnceLock::new();
    *KERNEL.get_or_init(|| {
        if amx_available() {
            Some(BlockKernel::Amx)
        } else if dot::available() && amd() {
            Some(BlockKernel::Dot)
        } else if widen::available() {
            Some(BlockKernel::Widen)
        } else {
            None
        }
    })
}

/// True on an AMD CPU, whose AVX512-BF16 (Zen 4 and later) issues `vdpbf16ps` as fast as an f32 FMA.
fn amd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).eq(*b"AuthenticAMD")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Seconds for `iters` rounds of four `tdpbf16ps` products on one core, each round either on tiles already
/// loaded (`loads = false`: the tile unit's own rate) or as in [`linear_bf16`]'s inner loop, a 2 × 2 block
/// that first loads its two weight tiles and two tiles of `x` (1 KB each, cycling through 16 KB that stay in
/// L1). `None` without AMX. For `nbp-cli bench kernels`.
pub fn time_tile_products(iters: usize, loads: bool) -> Option<f64> {
    if !amx_available() {
        return None;
    }
    let buf = vec![0u16; 1 << 16];
    let t0 = std::time::Instant::now();
    // SAFETY: AMX was granted; the loads read 1 KB tiles at offsets below 16 KB of the 128 KB buffer.
    unsafe { amx::tile_products(&buf, iters, loads) };
    Some(t0.elapsed().as_secs_f64())
}

/// bfloat16 bits of `v`, rounded to nearest even (NaN stays NaN).
pub fn to_bf16(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The f32 value of bfloat16 bits.
pub fn from_bf16(v: u16) -> f32 {
    f32::from_bits((v as u32) << 16)
}

/// `out[i, j] = Σ_p bf16(x[i, p])·w[j, p] + bias[j]` with `x: [m, k]` (f32), `w: [n, k]` (bfloat16 bits),
/// `bias: [n]`, `out: [m, n]`.
///
/// Returns `false` (and leaves `out` untouched) on CPUs without AVX-512 F and BW ([`bf16_available`]).
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn linear_bf16(x: &[f32], w: &[u16], bias: Option<&[f32]>, out: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    assert!(out.len() >= m * n, "linear_bf16: output shorter than {m}×{n}");
    // SAFETY: `out` holds `m·n` writable floats.
    unsafe { linear_bf16_raw(x, w, bias, out.as_mut_ptr(), m, k, n) }
}

/// [`linear_bf16`] into a new vector of the `m·n` outputs, which the kernels write without their being zeroed
/// first: `None` where [`linear_bf16`] returns `false`.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn linear_bf16_to_vec(
    x: &[f32],
    w: &[u16],
    bias: Option<&[f32]>,
    m: usize,
    k: usize,
    n: usize,
) -> Option<Vec<f32>> {
    // SAFETY: `new_outputs` hands over room for `m·n` floats.
    unsafe { crate::linear::new_outputs(m * n, |out| linear_bf16_raw(x, w, bias, out, m, k, n)) }
}

/// [`linear_bf16`] writing the outputs at `out`: returns `false` (nothing written) without AVX-512 F and BW,
/// and otherwise writes every one of the `m·n` outputs.
///
/// # Safety
/// `out` points at `m·n` writable floats.
unsafe fn linear_bf16_raw(
    x: &[f32],
    w: &[u16],
    bias: Option<&[f32]>,
    out: *mut f32,
    m: usize,
    k: usize,
    n: usize,
) -> bool {
    assert!(x.len() >= m * k && w.len() >= n * k, "linear_bf16: slices shorter than their shapes");
    assert!(bias.is_none_or(|b| b.len() >= n), "linear_bf16: bias shorter than {n}");
    let Some(kernel) = block_kernel() else {
        return false;
    };
    if m == 0 || n == 0 {
        return true;
    }
    if m <= FEW && cfg!(all(target_arch = "x86_64", target_os = "linux")) {
        // SAFETY: as the caller guarantees.
        unsafe { few_rows(x, w, bias, out, m, k, n) };
        return true;
    }
    match kernel {
        BlockKernel::Amx => {}
        BlockKernel::Dot => {
            // SAFETY: as the caller guarantees; `block_kernel` checked AVX512-BF16.
            unsafe { dot::linear(x, w, bias, out, m, k, n) };
            return true;
        }
        BlockKernel::Widen => {
            // SAFETY: as the caller guarantees; `block_kernel` checked AVX-512 F and BW.
            unsafe { widen::linear(x, w, bias, out, m, k, n) };
            return true;
        }
    }
    let packed = Packed::new(x, m, k);
    let tiles = n.div_ceil(T);
    let per_task = task_tiles(k, tiles);
    let tasks = tiles.div_ceil(per_task);
    let out_ptr = SyncPtr(out);
    let run = |t: usize| {
        let (t0, t1) = (t * per_task, ((t + 1) * per_task).min(tiles));
        // SAFETY: AMX was granted above; every task writes its own columns `16·t0..16·t1` of `out`, which holds
        // `m·n` floats (the caller guarantees it), and `packed` covers the `m` rows of `x`.
        unsafe { amx::columns(&packed, w, bias, out_ptr.get(), n, t0, t1) }
    };
    if tasks == 1 || m * n * k < 1 << 18 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
    true
}

/// Row counts up to which [`linear_bf16`] uses AVX-512 instead of AMX: for so few rows the product is bound by
/// reading the weights, and plain vector loads stream them faster than tile loads, which take 64 bytes from
/// each of 16 rows at a time. Without AMX the same holds against the AVX512-BF16 kernel (one row through all
/// layers of `official-base` on a Zen 5: 47 ms against 63 ms).
const FEW: usize = 4;

/// [`linear_bf16`] for `m ≤ 4` rows: each weight vector is widened to f32 in registers and multiplied with the
/// bfloat16-rounded rows of `x` (those products are exact in f32, as on AMX), the output columns split over the
/// cores.
///
/// # Safety
/// `out` points at `m·n` writable floats; AVX-512 F and BW are available.
unsafe fn few_rows(x: &[f32], w: &[u16], bias: Option<&[f32]>, out: *mut f32, m: usize, k: usize, n: usize) {
    let xr: Vec<f32> = x[..m * k].iter().map(|&v| from_bf16(to_bf16(v))).collect();
    let cols = ((256 * 1024) / (2 * k.max(1))).clamp(8, n.div_ceil(4 * rayon::current_num_threads().max(1)).max(8));
    let cols = cols.next_multiple_of(8);
    let out_ptr = SyncPtr(out);
    let run = |t: usize| {
        let (j0, j1) = (t * cols, ((t + 1) * cols).min(n));
        // SAFETY: AVX-512 F and BW were checked by the caller (`block_kernel` finds no kernel without them);
        // every task writes its own columns of `out`.
        unsafe { amx::few_rows(&xr, w, bias, out_ptr.get(), m, k, n, j0, j1) }
    };
    let tasks = n.div_ceil(cols);
    if tasks == 1 || m * n * k < 1 << 16 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// Weight tiles (16 output columns each) per parallel task: an even number, enough tasks for every core, and
/// at most about 1 MB of weights per task.
fn task_tiles(k: usize, tiles: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_balance = tiles.div_ceil(4 * threads);
    let by_cache = ((1 << 20) / (2 * T * k.max(1))).max(2);
    by_balance.min(by_cache).max(2).next_multiple_of(2)
}

/// `x` rounded to bfloat16 and packed as AMX's second operand: for each tile of 16 rows, `[k/2][16]` pairs
/// (the low half of each `u32` holds the even inner element), the inner dimension padded with zeros to a
/// multiple of 32 and the rows to a multiple of 16.
struct Packed {
    data: Vec<u32>,
    m: usize,
    k: usize,
    /// Padded inner dimension (a multiple of [`KT`]).
    kp: usize,
}

impl Packed {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let kp = k.next_multiple_of(KT);
        let tile_len = kp / 2 * T;
        let mut data = vec![0u32; m.div_ceil(T) * tile_len];
        let vector = vector_rounding();
        // One tile of 16 rows at a time, and in it one 1 KB block of 16 pairs × 16 rows at a time: each row's 32
        // elements are rounded into a 16 × 16 scratch block, which is then written transposed.
        let pack = |(tile, dst): (usize, &mut [u32])| {
            let mut scratch = [[0u32; T]; T];
            let rows = T.min(m - tile * T);
            for (c, block) in dst.chunks_mut(T * T).enumerate() {
                for (r, pairs) in scratch.iter_mut().enumerate().take(rows) {
                    let i = tile * T + r;
                    let (p0, p1) = ((i * k + c * KT).min((i + 1) * k), (i * k + (c + 1) * KT).min((i + 1) * k));
                    round_pairs(&x[p0..p1], pairs, vector);
                }
                for (q, out) in block.chunks_exact_mut(T).enumerate() {
                    for (r, pairs) in scratch.iter().enumerate().take(rows) {
                        out[r] = pairs[q];
                    }
                }
            }
        };
        if m * k >= 1 << 16 {
            data.par_chunks_mut(tile_len).enumerate().for_each(pack);
        } else {
            data.chunks_mut(tile_len).enumerate().for_each(pack);
        }
        Self { data, m, k, kp }
    }

    fn row_tiles(&self) -> usize {
        self.m.div_ceil(T)
    }

    /// The tile of rows `16·tile..` and inner elements `32·chunk..` (16 rows of 16 pairs, 64 bytes apart).
    fn tile(&self, tile: usize, chunk: usize) -> *const u32 {
        self.data[(tile * self.kp / 2 + chunk * T) * T..].as_ptr()
    }
}

/// Whether [`round_pairs`] may use AVX512-BF16's conversion instruction.
fn vector_rounding() -> bool {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
    {
        false
    }
}

/// Up to 32 elements rounded to bfloat16, as 16 pairs (zeros past the end of `src`); `vector` from
/// [`vector_rounding`].
fn round_pairs(src: &[f32], pairs: &mut [u32; T], vector: bool) {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    if vector && src.len() == KT {
        // SAFETY: AVX512-BF16 was detected; `src` holds 32 floats and `pairs` 16 words.
        unsafe { amx::round_pairs_avx512(src, pairs) };
        return;
    }
    let _ = vector;
    for (q, pair) in pairs.iter_mut().enumerate() {
        let lo = src.get(2 * q).map_or(0, |&v| to_bf16(v) as u32);
        let hi = src.get(2 * q + 1).map_or(0, |&v| to_bf16(v) as u32);
        *pair = lo | hi << 16;
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
mod amx {
    pub(super) fn request() -> bool {
        false
    }

    pub(super) unsafe fn tile_products(_: &[u16], _: usize, _: bool) {
        unreachable!("the kernel is only called after the AMX check")
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn few_rows(
        _: &[f32],
        _: &[u16],
        _: Option<&[f32]>,
        _: *mut f32,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("the kernel is only called after the AMX check")
    }

    pub(super) unsafe fn columns(
        _: &super::Packed,
        _: &[u16],
        _: Option<&[f32]>,
        _: *mut f32,
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("the kernel is only called after the AMX check")
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod amx {
    use std::arch::asm;

    use super::{KT, Packed, T};

    /// CPUID says AMX-TILE and AMX-BF16 (and AVX-512 F and BW, for the few-rows kernel), and Linux grants this process the tile data state
    /// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`; without it the first tile instruction faults).
    pub(super) fn request() -> bool {
        if std::env::var_os("NBP_NO_AMX").is_some_and(|v| v != "0") {
            return false;
        }
        #[allow(unused_unsafe)]
        // SAFETY: CPUID leaf 7 exists on every x86-64 CPU that has AVX-512, checked first.
        let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0).edx };
        let (amx_bf16, amx_tile) = (edx & (1 << 22) != 0, edx & (1 << 24) != 0);
        if !(crate::available() && std::is_x86_feature_detected!("avx512bw") && amx_bf16 && amx_tile) {
            return false;
        }
        const ARCH_PRCTL: i64 = 158;
        const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
        const XFEATURE_XTILEDATA: i64 = 18;
        let ret: i64;
        // SAFETY: the arch_prctl system call with these arguments only changes this process's permissions; the
        // kernel clobbers rcx and r11.
        unsafe {
            asm!(
                "syscall",
                inlateout("rax") ARCH_PRCTL => ret,
                in("rdi") ARCH_REQ_XCOMP_PERM,
                in("rsi") XFEATURE_XTILEDATA,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        ret == 0
    }

    /// [`super::round_pairs`] for 32 elements with one `vcvtne2ps2bf16` (round to nearest even; denormals become
    /// zero, as AMX treats them anyway).
    ///
    /// # Safety
    /// AVX512-BF16 must be available; `src` holds 32 floats.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round_pairs_avx512(src: &[f32], pairs: &mut [u32; T]) {
        use std::arch::x86_64::*;
        // SAFETY: as the caller guarantees.
        unsafe {
            let lo = _mm512_loadu_ps(src.as_ptr());
            let hi = _mm512_loadu_ps(src.as_ptr().add(16));
            let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
            _mm512_storeu_si512(pairs.as_mut_ptr().cast(), v);
        }
    }

    /// Columns `j0..j1` of `out = xr·Wᵀ + b` for `m ≤ 4` rows `xr` (already rounded to bfloat16), 8 weight rows
    /// at a time (4 when there are more than 2 rows of `x`, to keep the accumulators in registers).
    ///
    /// # Safety
    /// AVX-512F and BW must be available; `xr` holds `m·k` floats, `w` `n·k` bfloat16 numbers, `out` `m·n`
    /// floats, and no other thread writes these columns.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn few_rows(
        xr: &[f32],
        w: &[u16],
        bias: Option<&[f32]>,
        out: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        // SAFETY: as the caller guarantees.
        unsafe {
            match m {
                1 => rows::<1, 8>(xr, w, bias, out, k, n, j0, j1),
                2 => rows::<2, 8>(xr, w, bias, out, k, n, j0, j1),
                3 => rows::<3, 4>(xr, w, bias, out, k, n, j0, j1),
                _ => rows::<4, 4>(xr, w, bias, out, k, n, j0, j1),
            }
        }
    }

    /// Elements ahead in each weight row at which [`rows`] prefetches.
    const PF: usize = 256;

    /// [`few_rows`] for `R` rows and `C` weight rows per pass.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn rows<const R: usize, const C: usize>(
        xr: &[f32],
        w: &[u16],
        bias: Option<&[f32]>,
        out: *mut f32,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        use std::arch::x86_64::*;
        let mut j = j0;
        while j < j1 {
            if j1 - j < C {
                // The last columns, one at a time.
                // SAFETY: as the caller guarantees.
                return unsafe { rows::<R, 1>(xr, w, bias, out, k, n, j, j1) };
            }
            let mut acc = [[_mm512_setzero_ps(); C]; R];
            let mut p = 0;
            while p + 16 <= k {
                let mut wv = [_mm512_setzero_ps(); C];
                for (ci, v) in wv.iter_mut().enumerate() {
                    let row = w.as_ptr().wrapping_add((j + ci) * k + p);
                    if p % 32 == 0 {
                        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(PF).cast());
                    }
                    // SAFETY: elements p..p + 16 of weight row j + ci are in bounds.
                    let h = unsafe { _mm256_loadu_si256(row.cast()) };
                    *v = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                }
                for (r, a) in acc.iter_mut().enumerate() {
                    // SAFETY: elements p..p + 16 of row r of xr are in bounds.
                    let xv = unsafe { _mm512_loadu_ps(xr.as_ptr().add(r * k + p)) };
                    for ci in 0..C {
                        a[ci] = _mm512_fmadd_ps(xv, wv[ci], a[ci]);
                    }
                }
                p += 16;
            }
            if p < k {
                let mask: __mmask16 = ((1u32 << (k - p)) - 1) as __mmask16;
                for ci in 0..C {
                    // SAFETY: the masked loads stay inside the rows.
                    let h = unsafe { _mm256_maskz_loadu_epi16(mask, w.as_ptr().add((j + ci) * k + p).cast()) };
                    let wv = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)));
                    for (r, a) in acc.iter_mut().enumerate() {
                        let xv = unsafe { _mm512_maskz_loadu_ps(mask, xr.as_ptr().add(r * k + p)) };
                        a[ci] = _mm512_fmadd_ps(xv, wv, a[ci]);
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                for (ci, v) in a.iter().enumerate() {
                    let b = bias.map_or(0.0, |b| b[j + ci]);
                    // SAFETY: row r, column j + ci of `out` is in bounds.
                    unsafe { *out.add(r * n + j + ci) = _mm512_reduce_add_ps(*v) + b };
                }
            }
            j += C;
        }
    }

    /// Weight tiles ahead of the current group whose rows are prefetched.
    const AHEAD: usize = 4;

    /// Prefetches the cache line at `p` into L2.
    #[inline(always)]
    fn prefetch(p: *const u8) {
        // SAFETY: prefetching never faults.
        unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(p.cast()) };
    }

    /// Palette 1 with all eight tiles at 16 rows of 64 bytes.
    #[repr(C, align(64))]
    struct Config([u8; 64]);

    impl Config {
        fn full() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t] = 64;
                c[48 + t] = T as u8;
            }
            Self(c)
        }
    }

    macro_rules! load {
        ($tmm:literal, $ptr:expr, $stride:expr) => {
            asm!(
                concat!("tileloadd tmm", $tmm, ", [{p} + {s} * 1]"),
                p = in(reg) $ptr,
                s = in(reg) $stride,
                options(nostack, readonly),
            )
        };
    }

    macro_rules! dot {
        ($c:literal, $a:literal, $b:literal) => {
            asm!(concat!("tdpbf16ps tmm", $c, ", tmm", $a, ", tmm", $b), options(nostack, nomem))
        };
    }

    macro_rules! zero {
        ($c:literal) => {
            asm!(concat!("tilezero tmm", $c), options(nostack, nomem))
        };
    }

    macro_rules! store {
        ($c:literal, $ptr:expr) => {
            asm!(
                concat!("tilestored [{p} + {s} * 1], tmm", $c),
                p = in(reg) $ptr,
                s = in(reg) 64usize,
                options(nostack),
            )
        };
    }

    /// The loop of [`super::time_tile_products`].
    ///
    /// # Safety
    /// AMX must have been granted ([`request`]); `buf` holds at least 16 KB.
    pub(super) unsafe fn tile_products(buf: &[u16], iters: usize, loads: bool) {
        let config = Config::full();
        let at = |i: usize| buf[(i % 16) * 512..].as_ptr();
        // SAFETY: a valid palette-1 layout; every load reads 16 rows of 64 bytes inside `buf`.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            load!(4, at(0), 64usize);
            load!(5, at(1), 64usize);
            load!(6, at(2), 64usize);
            load!(7, at(3), 64usize);
            zero!(0);
            zero!(1);
            zero!(2);
            zero!(3);
            for i in 0..iters {
                if loads {
                    load!(4, at(4 * i), 64usize);
                    load!(6, at(4 * i + 1), 64usize);
                    load!(7, at(4 * i + 2), 64usize);
                }
                dot!(0, 4, 6);
                dot!(1, 4, 7);
                if loads {
                    load!(5, at(4 * i + 3), 64usize);
                }
                dot!(2, 5, 6);
                dot!(3, 5, 7);
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// Columns `16·t0..16·t1` (clipped to `n`) of `out = x·Wᵀ + b`.
    ///
    /// Tiles 4 and 5 hold 16 weight rows each (two groups of 16 output columns), tiles 6 and 7 the packed pairs
    /// of 16 rows of `x` each, and tiles 0–3 the four 16 × 16 f32 accumulators of `outᵀ`. For each pair of
    /// weight tiles the rows of `x` pass in pairs of tiles over the whole inner dimension; the weight rows of
    /// that pass stay in the L2 cache for the next pair of row tiles.
    ///
    /// # Safety
    /// AMX must have been granted ([`request`]); `w` holds `n·packed.k` elements, `out` holds `packed.m·n`, and
    /// no other thread writes these columns.
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn columns(
        packed: &Packed,
        w: &[u16],
        bias: Option<&[f32]>,
        out: *mut f32,
        n: usize,
        t0: usize,
        t1: usize,
    ) {
        let (m, k, kp) = (packed.m, packed.k, packed.kp);
        let chunks = kp / KT;
        let config = Config::full();
        let mut pad: Vec<u16> = Vec::new();
        let mut acc = [0.0f32; T * T];
        // With a single tile of rows of `x`, each weight tile is used once: groups of one weight tile keep the
        // number of interleaved row streams low. Otherwise two weight tiles share every load of `x`.
        let width = if packed.row_tiles() == 1 { 1 } else { 2 };
        // SAFETY: the configuration is a valid palette-1 layout; tiles are loaded from buffers that hold 16 rows
        // of 64 bytes at the given strides (whole weight rows, the zero-padded copy, or the packed rows), and
        // stored into the local 16 × 16 buffer.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) config.0.as_ptr(), options(nostack, readonly));
            let mut tile = t0;
            while tile < t1 {
                let groups = (t1 - tile).min(width);
                let (c0, c1) = (tile * T, ((tile + groups) * T).min(n));
                // The weight rows of these columns, read in place when they fill whole tiles; otherwise (the
                // last columns, or an inner dimension that is not a multiple of 32) copied into a zero-padded
                // buffer.
                let (wp, stride) = if c1 - c0 == groups * T && k % KT == 0 {
                    (w.as_ptr().add(c0 * k), 2 * k)
                } else {
                    pad.clear();
                    pad.resize(groups * T * kp, 0);
                    for (r, c) in (c0..c1).enumerate() {
                        pad[r * kp..r * kp + k].copy_from_slice(&w[c * k..(c + 1) * k]);
                    }
                    (pad.as_ptr(), 2 * kp)
                };
                let wtile = |g: usize, ch: usize| wp.byte_add(g * T * stride).add(ch * KT);
                // The next weight rows (a contiguous run of memory) are prefetched into L2 in address order while
                // this group computes, spread evenly over its first pass: the hardware prefetcher alone does not
                // keep up with the interleaved row streams of the tile loads.
                let next = {
                    let (n0, n1) =
                        ((c1 + AHEAD * T).min(t1 * T).min(n), (c1 + (AHEAD + groups) * T).min(t1 * T).min(n));
                    (n0 < n1).then(|| (w.as_ptr().add(n0 * k).cast::<u8>(), (n1 - n0) * k * 2))
                };
                let per_chunk = next.map_or(0, |(_, bytes)| bytes.div_ceil(64 * chunks));
                let mut rows = 0;
                while rows < packed.row_tiles() {
                    let pairs = (packed.row_tiles() - rows).min(2);
                    zero!(0);
                    zero!(1);
                    zero!(2);
                    zero!(3);
                    for ch in 0..chunks {
                        if let (Some((base, bytes)), 0) = (next, rows) {
                            for line in ch * per_chunk..((ch + 1) * per_chunk).min(bytes.div_ceil(64)) {
                                prefetch(base.add(64 * line));
                            }
                        }
                        load!(4, wtile(0, ch), stride);
                        load!(6, packed.tile(rows, ch), 64usize);
                        dot!(0, 4, 6);
                        if pairs == 2 {
                            load!(7, packed.tile(rows + 1, ch), 64usize);
                            dot!(1, 4, 7);
                        }
                        if groups == 2 {
                            load!(5, wtile(1, ch), stride);
                            dot!(2, 5, 6);
                            if pairs == 2 {
                                dot!(3, 5, 7);
                            }
                        }
                    }
                    for g in 0..groups {
                        for p in 0..pairs {
                            match (g, p) {
                                (0, 0) => store!(0, acc.as_mut_ptr()),
                                (0, _) => store!(1, acc.as_mut_ptr()),
                                (_, 0) => store!(2, acc.as_mut_ptr()),
                                _ => store!(3, acc.as_mut_ptr()),
                            }
                            // acc[c·16 + r] is column c0 + 16g + c of row 16(rows + p) + r.
                            let (col0, row0) = (c0 + g * T, (rows + p) * T);
                            let cols = T.min(n.saturating_sub(col0));
                            for r in 0..T.min(m.saturating_sub(row0)) {
                                let dst = out.add((row0 + r) * n + col0);
                                for c in 0..cols {
                                    let b = bias.map_or(0.0, |b| b[col0 + c]);
                                    *dst.add(c) = acc[c * T + r] + b;
                                }
                            }
                        }
                    }
                    rows += pairs;
                }
                tile += groups;
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::{check_linear, values};

    #[test]
    fn rounding_to_bfloat16_is_to_nearest_even() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        assert_eq!(to_bf16(-2.0), 0xc000);
        // 1 + 2⁻⁸ lies halfway between 1 and 1 + 2⁻⁷: ties go to the even mantissa (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ lies halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: to the even one, 1 + 2⁻⁶.
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(1.0 + 1.5 / 256.0), 0x3f81);
        assert_eq!(to_bf16(f32::INFINITY), 0x7f80);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "overflows to infinity");
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(0x4049), 3.140625);
    }

    #[test]
    fn matches_a_double_precision_product_of_the_rounded_operands_on_every_edge_shape() {
        if !bf16_available() {
            eprintln!("skipped: no AVX-512 BW on this CPU");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (1, 32, 16),
            (1, 64, 48),
            (7, 33, 9),
            (16, 96, 13),
            (17, 128, 40),
            (33, 200, 70),
            (64, 17, 5),
            (3, 1536, 260),
            (40, 1000, 30),
            (100, 64, 512),
        ];
        let round = |v: f32| from_bf16(to_bf16(v));
        check_linear(&shapes, 1e-5, round, |x, w, b, out, m, k, n| {
            let w: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            linear_bf16(x, &w, b, out, m, k, n)
        });
    }

    /// The AVX512-BF16 kernel on its own: on CPUs with AMX, [`linear_bf16`] takes the tile units instead.
    #[test]
    fn the_dot_product_kernel_matches_on_every_edge_shape() {
        if !dot::available() {
            eprintln!("skipped: no AVX512-BF16 on this CPU");
            return;
        }
        let shapes = [(1, 1, 1), (1, 64, 7), (4, 32, 6), (5, 33, 13), (16, 1536, 100), (33, 700, 25), (70, 96, 14)];
        let round = |v: f32| from_bf16(to_bf16(v));
        check_linear(&shapes, 1e-5, round, |x, w, b, out, m, k, n| {
            let w: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            // SAFETY: AVX512-BF16 was checked; `out` holds `m·n` floats (`check_linear` makes it so).
            unsafe { dot::linear(x, &w, b, out.as_mut_ptr(), m, k, n) };
            true
        });
    }

    /// The widening kernel on its own: on CPUs with AMX or AMD's AVX512-BF16, [`linear_bf16`] takes those.
    #[test]
    fn the_widening_kernel_matches_on_every_edge_shape() {
        if !widen::available() {
            eprintln!("skipped: no AVX-512 BW on this CPU");
            return;
        }
        // Chunks of 256: whole and partial, with inner lengths that end inside a vector; row blocks of 32.
        let shapes = [(1, 1, 1), (5, 15, 7), (4, 256, 6), (5, 257, 13), (16, 1536, 100), (33, 700, 25), (70, 96, 14)];
        let round = |v: f32| from_bf16(to_bf16(v));
        check_linear(&shapes, 1e-5, round, |x, w, b, out, m, k, n| {
            let w: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
            // SAFETY: AVX-512 F and BW were checked; `out` holds `m·n` floats (`check_linear` makes it so).
            unsafe { widen::linear(x, &w, b, out.as_mut_ptr(), m, k, n) };
            true
        });
    }

    #[test]
    fn new_vectors_hold_what_the_slice_version_writes() {
        if !bf16_available() {
            return;
        }
        // Few rows, the tile kernels, and uneven edges of both.
        for (m, k, n) in [(1, 1, 1), (3, 1536, 40), (7, 33, 9), (16, 1536, 100), (40, 1000, 30)] {
            let (x, b) = (values(m * k, 1), values(n, 3));
            let w: Vec<u16> = values(n * k, 2).iter().map(|&v| to_bf16(v)).collect();
            let mut want = vec![f32::NAN; m * n];
            assert!(linear_bf16(&x, &w, Some(&b), &mut want, m, k, n));
            let got = linear_bf16_to_vec(&x, &w, Some(&b), m, k, n).unwrap();
            assert_eq!(got.len(), m * n);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}×{k}×{n}");
        }
    }

    #[test]
    fn is_close_to_the_f32_product() {
        if !bf16_available() {
            return;
        }
        let (m, k, n) = (20, 512, 64);
        let (x, w) = (values(m * k, 4), values(n * k, 5));
        let wb: Vec<u16> = w.iter().map(|&v| to_bf16(v)).collect();
        let (mut got, mut want) = (vec![0.0; m * n], vec![0.0; m * n]);
        assert!(linear_bf16(&x, &wb, None, &mut got, m, k, n));
        assert!(crate::linear(&x, &w, None, &mut want, m, k, n));
        let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        // Two roundings to 8 significant bits, averaged over 512 terms: well under 1 % of the largest output.
        assert!(worst < 0.01 * scale, "worst difference {worst} against outputs up to {scale}");
        assert!(worst > 0.0, "the operands were rounded");
    }
}
