//! [`super::linear_bf16`] on CPUs with AVX512-BF16 but no AMX tile units (AMD Zen 4 and later, Intel Cooper
//! Lake): the same register tile as the f32 kernel ([`crate::linear`]), with `vdpbf16ps` in place of the FMA.
//!
//! One `vdpbf16ps` multiplies 32 bfloat16 pairs and adds each pair's two products to one of 16 f32 lanes, so a
//! 4 × 6 tile of `x` rows by weight rows takes 32 inner elements per step (twice the f32 kernel's 16) while
//! reading half the bytes. Each accumulator holds lane-wise partial sums, summed horizontally once at the end.
//! `x` is rounded to bfloat16 first (round to nearest even), the products of two bfloat16 numbers are exact in
//! f32 and the sums are in f32, as on AMX.

use rayon::prelude::*;

use crate::linear::SyncPtr;

/// Rows of `x` per register tile.
const MR: usize = 4;
/// Weight rows (output columns) per register tile.
const NR: usize = 6;
/// Rows of `x` per block (a multiple of [`MR`]).
const ROWS: usize = 32;
/// Inner elements per pass over a block of rows: 1 KB of each row, as the f32 kernel's chunk.
const KC: usize = 512;
/// Bytes ahead (one chunk of a weight row) at which the register tile prefetches its weights.
const AHEAD: usize = 2 * KC;
/// Bytes of weight rows per parallel task (kept in L2 while the blocks of `x` rows pass over them).
const TASK_BYTES: usize = 384 * 1024;

/// True when this CPU has AVX-512 F, BW and BF16.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::available() && std::is_x86_feature_detected!("avx512bw") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out = bf16(x)·Wᵀ + b` as [`super::linear_bf16`] defines it. The caller has checked [`available`] and the
/// slice lengths.
pub(super) fn linear(x: &[f32], w: &[u16], bias: Option<&[f32]>, out: &mut [f32], m: usize, k: usize, n: usize) {
    let mut xr = vec![0u16; m * k];
    // SAFETY: `available` (checked by the caller) includes AVX512-BF16.
    let round = |(dst, src): (&mut [u16], &[f32])| unsafe { x86::round(src, dst) };
    if m * k >= 1 << 16 {
        xr.par_chunks_mut(k).zip(x[..m * k].par_chunks(k)).for_each(round);
    } else {
        round((&mut xr, &x[..m * k]));
    }
    let by_cache = (TASK_BYTES / (2 * k.max(1))).max(NR);
    let threads = rayon::current_num_threads().max(1);
    let by_balance = n.div_ceil(4 * threads).max(NR);
    let cols = by_cache.min(by_balance).next_multiple_of(NR);
    let tasks = n.div_ceil(cols);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let run = |t: usize| {
        let (j0, j1) = (t * cols, ((t + 1) * cols).min(n));
        // SAFETY: the caller checked AVX-512 F/BW/BF16 and the lengths; every task writes its own columns.
        unsafe { x86::columns(&xr, w, bias, out_ptr.get(), m, k, n, j0, j1) }
    };
    if tasks == 1 || m * n * k < 1 << 18 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn columns(
        _: &[u16],
        _: &[u16],
        _: Option<&[f32]>,
        _: *mut f32,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("the kernel is only called after the AVX512-BF16 check")
    }

    pub(super) unsafe fn round(_: &[f32], _: &mut [u16]) {
        unreachable!("the kernel is only called after the AVX512-BF16 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{AHEAD, KC, MR, NR, ROWS};

    /// `dst[i] = bf16(src[i])`, rounded to nearest even 32 at a time by `vcvtne2ps2bf16` (which, like
    /// `vdpbf16ps`, treats denormals as zero), the last few by [`super::super::to_bf16`].
    ///
    /// # Safety
    /// AVX-512 F and BF16; `dst` is at least as long as `src`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn round(src: &[f32], dst: &mut [u16]) {
        let whole = src.len() / 32 * 32;
        for i in (0..whole).step_by(32) {
            // SAFETY: elements i..i + 32 of both slices are in bounds.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(i));
                let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
                let v: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), v);
            }
        }
        for (d, &v) in dst[whole..].iter_mut().zip(&src[whole..]) {
            *d = super::super::to_bf16(v);
        }
    }

    /// Pointers to the first row of `x` and of `W` (bfloat16 bits) of a register tile, the inner dimension, and
    /// the distances (in elements) between consecutive rows.
    #[derive(Clone, Copy)]
    struct Tile {
        x: *const u16,
        w: *const u16,
        k: usize,
        ldx: usize,
        ldw: usize,
    }

    /// Columns `j0..j1` of `out = xr·Wᵀ + b`, `xr` already rounded: the loop of the f32 kernel
    /// (`crate::linear`), blocks of [`ROWS`] rows of `x`, for each tile of six weight rows the inner dimension in
    /// chunks of [`KC`] that every row tile of the block passes over before the next.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 must be available; `xr` holds `m·k` elements, `w` `n·k`, `out` `m·n`, `bias` (if
    /// any) `n`, and no other thread writes columns `j0..j1`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn columns(
        xr: &[u16],
        w: &[u16],
        bias: Option<&[f32]>,
        out: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        let mut acc = [[_mm512_setzero_ps(); MR * NR]; ROWS / MR];
        let mut i0 = 0;
        while i0 < m {
            let i1 = (i0 + ROWS).min(m);
            let mut j = j0;
            while j < j1 {
                let nr = NR.min(j1 - j);
                // SAFETY: columns j..j + nr of the bias are in bounds.
                let b = bias.map(|b| unsafe { b.as_ptr().add(j) });
                let tiles = (i1 - i0).div_ceil(MR);
                let acc = &mut acc[..tiles];
                acc.iter_mut().for_each(|a| *a = [_mm512_setzero_ps(); MR * NR]);
                let mut p = 0;
                while p < k {
                    let len = KC.min(k - p);
                    for (s, a) in acc.iter_mut().enumerate() {
                        let i = i0 + s * MR;
                        let mr = MR.min(i1 - i);
                        // SAFETY: rows i..i + mr of xr and j..j + nr of w, columns p..p + len, are in bounds.
                        unsafe {
                            let t = Tile {
                                x: xr.as_ptr().add(i * k + p),
                                w: w.as_ptr().add(j * k + p),
                                k: len,
                                ldx: k,
                                ldw: k,
                            };
                            if (mr, nr) == (MR, NR) { accumulate_4x6(t, a) } else { accumulate(mr, nr, t, a) }
                        }
                    }
                    p += len;
                }
                for (s, a) in acc.iter().enumerate() {
                    let i = i0 + s * MR;
                    // SAFETY: the output tile is in bounds.
                    unsafe { crate::linear::x86::store(a, MR.min(i1 - i), nr, (out.add(i * n + j), n, 1), b) };
                }
                j += nr;
            }
            i0 = i1;
        }
    }

    /// Adds the products of a full `4 × 6` tile over `t.k` inner elements to the 24 accumulators
    /// (`acc[r·6 + c]`: row `r` of `x` times weight row `c`). The loop over whole 32-element steps is in
    /// assembly, as the f32 kernel's, so that the accumulators, six weight vectors and a row of `x` stay in the
    /// 32 vector registers; the last partial step is masked. Each step prefetches the weights [`AHEAD`] bytes
    /// further on, the same place in the next chunk: when the weights come from memory (a sampling step), the
    /// first row tile over a chunk otherwise waits for them while the vector units stand idle
    /// (`official-base pass, 16 rows, bf16` on a Zen 5: 71–78 ms against 88–108 ms).
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16; `t.x` and `t.w` point at 4 and 6 rows of `t.k` readable elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn accumulate_4x6(t: Tile, acc: &mut [__m512; 24]) {
        let whole = t.k / 32;
        if whole > 0 {
            // SAFETY: the loop reads `whole` 64-byte vectors from each of the 4 rows of x and 6 rows of W, which
            // the caller guarantees are readable; it writes only the named vector registers.
            unsafe {
                asm!(
                    "2:",
                    "prefetcht0 [{pa}]",
                    "prefetcht0 [{pa} + {sw}]",
                    "prefetcht0 [{pa} + {sw}*2]",
                    "prefetcht0 [{pb}]",
                    "prefetcht0 [{pb} + {sw}]",
                    "prefetcht0 [{pb} + {sw}*2]",
                    "vmovdqu16 zmm24, [{wa}]",
                    "vmovdqu16 zmm25, [{wa} + {sw}]",
                    "vmovdqu16 zmm26, [{wa} + {sw}*2]",
                    "vmovdqu16 zmm27, [{wb}]",
                    "vmovdqu16 zmm28, [{wb} + {sw}]",
                    "vmovdqu16 zmm29, [{wb} + {sw}*2]",
                    "vmovdqu16 zmm30, [{xa}]",
                    "vdpbf16ps zmm0, zmm30, zmm24",
                    "vdpbf16ps zmm1, zmm30, zmm25",
                    "vdpbf16ps zmm2, zmm30, zmm26",
                    "vdpbf16ps zmm3, zmm30, zmm27",
                    "vdpbf16ps zmm4, zmm30, zmm28",
                    "vdpbf16ps zmm5, zmm30, zmm29",
                    "vmovdqu16 zmm31, [{xa} + {sx}]",
                    "vdpbf16ps zmm6, zmm31, zmm24",
                    "vdpbf16ps zmm7, zmm31, zmm25",
                    "vdpbf16ps zmm8, zmm31, zmm26",
                    "vdpbf16ps zmm9, zmm31, zmm27",
                    "vdpbf16ps zmm10, zmm31, zmm28",
                    "vdpbf16ps zmm11, zmm31, zmm29",
                    "vmovdqu16 zmm30, [{xa} + {sx}*2]",
                    "vdpbf16ps zmm12, zmm30, zmm24",
                    "vdpbf16ps zmm13, zmm30, zmm25",
                    "vdpbf16ps zmm14, zmm30, zmm26",
                    "vdpbf16ps zmm15, zmm30, zmm27",
                    "vdpbf16ps zmm16, zmm30, zmm28",
                    "vdpbf16ps zmm17, zmm30, zmm29",
                    "vmovdqu16 zmm31, [{xb}]",
                    "vdpbf16ps zmm18, zmm31, zmm24",
                    "vdpbf16ps zmm19, zmm31, zmm25",
                    "vdpbf16ps zmm20, zmm31, zmm26",
                    "vdpbf16ps zmm21, zmm31, zmm27",
                    "vdpbf16ps zmm22, zmm31, zmm28",
                    "vdpbf16ps zmm23, zmm31, zmm29",
                    "add {wa}, 64",
                    "add {pa}, 64",
                    "add {pb}, 64",
                    "add {wb}, 64",
                    "add {xa}, 64",
                    "add {xb}, 64",
                    "dec {n}",
                    "jnz 2b",
                    wa = inout(reg) t.w => _,
                    pa = inout(reg) t.w.wrapping_byte_add(AHEAD) => _,
                    pb = inout(reg) t.w.add(3 * t.ldw).wrapping_byte_add(AHEAD) => _,
                    wb = inout(reg) t.w.add(3 * t.ldw) => _,
                    xa = inout(reg) t.x => _,
                    xb = inout(reg) t.x.add(3 * t.ldx) => _,
                    sw = in(reg) 2 * t.ldw,
                    sx = in(reg) 2 * t.ldx,
                    n = inout(reg) whole => _,
                    inout("zmm0") acc[0],
                    inout("zmm1") acc[1],
                    inout("zmm2") acc[2],
                    inout("zmm3") acc[3],
                    inout("zmm4") acc[4],
                    inout("zmm5") acc[5],
                    inout("zmm6") acc[6],
                    inout("zmm7") acc[7],
                    inout("zmm8") acc[8],
                    inout("zmm9") acc[9],
                    inout("zmm10") acc[10],
                    inout("zmm11") acc[11],
                    inout("zmm12") acc[12],
                    inout("zmm13") acc[13],
                    inout("zmm14") acc[14],
                    inout("zmm15") acc[15],
                    inout("zmm16") acc[16],
                    inout("zmm17") acc[17],
                    inout("zmm18") acc[18],
                    inout("zmm19") acc[19],
                    inout("zmm20") acc[20],
                    inout("zmm21") acc[21],
                    inout("zmm22") acc[22],
                    inout("zmm23") acc[23],
                    out("zmm24") _,
                    out("zmm25") _,
                    out("zmm26") _,
                    out("zmm27") _,
                    out("zmm28") _,
                    out("zmm29") _,
                    out("zmm30") _,
                    out("zmm31") _,
                    options(nostack, readonly),
                );
            }
        }
        let p = whole * 32;
        if p < t.k {
            // SAFETY: as the caller guarantees.
            unsafe { accumulate(MR, NR, Tile { x: t.x.add(p), w: t.w.add(p), k: t.k - p, ..t }, acc) };
        }
    }

    /// Adds the products of an `mr × nr` tile (`mr ≤ 4`, `nr ≤ 6`) over `t.k` elements to `acc` (laid out as in
    /// [`accumulate_4x6`]), with intrinsics: the edge tiles, and the last partial step of the full one.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16; `t.x` and `t.w` point at `mr` and `nr` rows of `t.k` readable elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn accumulate(mr: usize, nr: usize, t: Tile, acc: &mut [__m512; 24]) {
        let mut p = 0;
        while p < t.k {
            let mask = (1u64 << (t.k - p).min(32)).wrapping_sub(1) as __mmask32;
            let mask = if t.k - p >= 32 { !0 } else { mask };
            // SAFETY: the masked loads stay inside the rows.
            let load = |ptr: *const u16| -> __m512bh {
                unsafe { std::mem::transmute(_mm512_maskz_loadu_epi16(mask, ptr.cast())) }
            };
            let mut wv: [__m512bh; NR] = unsafe { std::mem::zeroed() };
            for (c, v) in wv.iter_mut().enumerate().take(nr) {
                *v = load(unsafe { t.w.add(c * t.ldw + p) });
            }
            for r in 0..mr {
                let xv = load(unsafe { t.x.add(r * t.ldx + p) });
                for (c, v) in wv.iter().enumerate().take(nr) {
                    acc[r * NR + c] = _mm512_dpbf16_ps(acc[r * NR + c], xv, *v);
                }
            }
            p += 32;
        }
    }
}
