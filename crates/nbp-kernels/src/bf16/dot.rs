//! [`super::linear_bf16`] on CPUs with AVX512-BF16 but no AMX tile units (AMD Zen 4 and later, Intel Cooper
//! Lake): the same register tile as the f32 kernel ([`crate::linear`]), with `vdpbf16ps` in place of the FMA.
//!
//! One `vdpbf16ps` multiplies 32 bfloat16 pairs and adds each pair's two products to one of 16 f32 lanes, so a
//! 4 × 6 tile of `x` rows by weight rows takes 32 inner elements per step (twice the f32 kernel's 16) while
//! reading half the bytes. Each accumulator holds lane-wise partial sums, summed horizontally once at the end.
//! `x` is rounded to bfloat16 first (round to nearest even), the products of two bfloat16 numbers are exact in
//! f32 and the sums are in f32, as on AMX.

use crate::linear::SyncPtr;

use crate::linear::{MR, NR, ROWS};

/// Inner elements per pass over a block of rows: 1 KB of each row, as the f32 kernel's chunk.
const KC: usize = 512;

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

/// `out = bf16(x)·Wᵀ + b` as [`super::linear_bf16`] defines it, every one of the `m·n` outputs written.
///
/// # Safety
/// The caller has checked [`available`] and the slice lengths; `out` points at `m·n` writable floats.
pub(super) unsafe fn linear(x: &[f32], w: &[u16], bias: Option<&[f32]>, out: *mut f32, m: usize, k: usize, n: usize) {
    let ldx = padded(k);
    let mut xr = vec![0u16; m * ldx];
    // SAFETY: `available` (checked by the caller) includes AVX512-BF16.
    let round = |dst: &mut [u16], src: &[f32]| unsafe { x86::round(src, &mut dst[..k]) };
    crate::linear::by_rows(&mut xr, ldx, x, (m, k), round);
    let out_ptr = SyncPtr(out);
    // SAFETY: the caller checked AVX-512 F/BW/BF16 and the lengths; every task writes its own columns.
    crate::linear::by_columns((m, k, n), 2, |j0, j1| unsafe {
        x86::columns(&xr, ldx, w, bias, out_ptr.get(), m, k, n, j0, j1)
    });
}

/// The distance between rows of the rounded copy of `x`: `k` and one more cache line, so that the rows of a block
/// fall in different L1 sets. Rows exactly `k` apart would share their sets whenever `2k` is a multiple of 4096
/// bytes (`k = 6144`, the MLP's second layer): the 4 × 6 tile's x rows of a block and its 6 weight rows then
/// compete for the 12 ways of the same sets, and the kernel ran at 720 GFLOP/s there against 790–800 at `k =
/// 1536` (512 rows, a Zen 5).
fn padded(k: usize) -> usize {
    k + 32
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn columns(
        _: &[u16],
        _: usize,
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
    use std::arch::x86_64::*;

    use super::{KC, MR, NR, ROWS};

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
        /// Where the tile's weights of the next chunk begin (the same rows further on, or the next tile's rows).
        next: *const u16,
    }

    /// Columns `j0..j1` of `out = xr·Wᵀ + b`, `xr` already rounded: the loop of the f32 kernel
    /// (`crate::linear`), blocks of [`ROWS`] rows of `x`, for each tile of six weight rows the inner dimension in
    /// chunks of [`KC`] that every row tile of the block passes over before the next.
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16 must be available; `xr` holds `m` rows `ldx` apart, `w` `n·k`, `out` `m·n`, `bias` (if
    /// any) `n`, and no other thread writes columns `j0..j1`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub(super) unsafe fn columns(
        xr: &[u16],
        ldx: usize,
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
        let ahead = crate::linear::x86::prefetch_chunks(m, ROWS);
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
                let mut p = 0;
                while p < k {
                    let len = KC.min(k - p);
                    let next = crate::linear::x86::chunk_ahead(w.as_ptr(), (j, p), nr, (k, KC), ahead);
                    for (s, a) in acc.iter_mut().enumerate() {
                        let i = i0 + s * MR;
                        let mr = MR.min(i1 - i);
                        // SAFETY: rows i..i + mr of xr and j..j + nr of w, columns p..p + len, are in bounds.
                        unsafe {
                            let t = Tile {
                                x: xr.as_ptr().add(i * ldx + p),
                                w: w.as_ptr().add(j * k + p),
                                k: len,
                                ldx,
                                ldw: k,
                                next,
                            };
                            if (mr, nr) == (MR, NR) {
                                accumulate_4x6(t, a, p == 0)
                            } else {
                                if p == 0 {
                                    *a = [_mm512_setzero_ps(); MR * NR];
                                }
                                accumulate(mr, nr, t, a)
                            }
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

    /// Adds the products of a full `4 × 6` tile over `t.k` inner elements to the 24 accumulators (`acc[r·6 + c]`: row
    /// `r` of `x` times weight row `c`), or with `first` sets them to those products (the registers start at zero, as
    /// in the f32 kernel's `accumulate_4x6`). The loop over whole 32-element steps is in assembly, as the f32 kernel's,
    /// so that the accumulators, six weight vectors and a row of `x` stay in the 32 vector registers; the last partial
    /// step is masked. Each step prefetches the weights of the chunk that comes next (`t.next`, from
    /// `crate::linear::x86::chunk_ahead`): when the weights come from memory (a sampling step), the first row tile over
    /// a chunk otherwise waits for them while the vector units stand idle (`official-base pass, 16 rows, bf16` on a
    /// Zen 5: 71–78 ms against 88–108 ms with a prefetch one chunk ahead in the same rows, 47–49 ms against 57–59 ms
    /// once the last chunk of a tile prefetched the next tile's rows).
    ///
    /// # Safety
    /// AVX-512 F, BW and BF16; `t.x` and `t.w` point at 4 and 6 rows of `t.k` readable elements.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    unsafe fn accumulate_4x6(t: Tile, acc: &mut [__m512; 24], first: bool) {
        let whole = t.k / 32;
        // SAFETY: the loop reads `whole` 64-byte vectors from each of the 4 rows of x and 6 rows of W, which the
        // caller guarantees are readable; it writes only the named vector registers.
        unsafe {
            tile_4x6!(
                "vmovdqu16",
                "vdpbf16ps",
                acc,
                first = first,
                n = whole,
                w = (t.w, t.w.add(3 * t.ldw), 2 * t.ldw),
                prefetch = (t.next, t.next.wrapping_add(3 * t.ldw)),
                x = (t.x, t.x.add(3 * t.ldx), 2 * t.ldx)
            )
        };
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
