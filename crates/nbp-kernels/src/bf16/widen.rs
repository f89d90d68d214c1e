//! [`super::linear_bf16`] for more than a few rows on CPUs with AVX-512 but neither AMX nor a fast
//! AVX512-BF16 dot product: Intel's Xeons without AMX tile units (Cooper Lake, or Sapphire Rapids and later
//! where a virtual machine hides AMX), whose `vdpbf16ps` issues once every two cycles against two f32 FMAs per
//! cycle, and Skylake to Ice Lake, which have no AVX512-BF16 at all.
//!
//! The f32 kernel's loop ([`crate::linear`]) with its 4 × 6 register tile, reading the weights from a chunk
//! widened to f32: for each tile of six weight rows, every chunk of [`KC`] inner elements is widened once (a
//! bfloat16 number is the upper half of an f32) into a buffer that stays in L1, and all row tiles of the block
//! then multiply from there. The weights' bytes from memory are half of f32 weights, and the products run at the
//! f32 FMA rate. `x` is rounded to bfloat16 first (round to nearest even) and kept in f32, so every product of
//! two bfloat16 numbers is exact and the sums are in f32, as in the other bfloat16 kernels.

use crate::linear::SyncPtr;

use crate::linear::{MR, NR, ROWS};

/// Inner elements per chunk: a block's 32 rows of `x` take 16 KB of L1 and the widened weights of a tile 3 KB.
/// 16 rows through the linear layers of `official-base` (a sampling step of NBP-16) took 145–159 ms with 128
/// against 171–176 ms with 256, 180–181 ms with 512 and 168–174 ms with 64 or 96, on a 2-core Xeon
/// (Sapphire/Emerald Rapids without AMX); the 512-row products of the prefill took about as long with 128 as
/// with 256 (a layer's six products, summed from `time_linear` of each shape: 149 ms against 148 ms).
const KC: usize = 128;

/// True when this CPU has AVX-512 F and BW (the widening, and the few-row kernel that serves up to 4 rows).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        crate::available() && std::is_x86_feature_detected!("avx512bw")
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
    // Rows one cache line further apart than `k`, so that the rows of a block fall in different L1 sets (see
    // `dot::padded`).
    let ldx = k + 16;
    let mut xr = vec![0.0f32; m * ldx];
    let round = |dst: &mut [f32], src: &[f32]| {
        for (d, &v) in dst.iter_mut().zip(src) {
            *d = super::from_bf16(super::to_bf16(v));
        }
    };
    crate::linear::by_rows(&mut xr, ldx, x, (m, k), round);
    let out_ptr = SyncPtr(out);
    // SAFETY: the caller checked AVX-512 F/BW and the lengths; every task writes its own columns.
    crate::linear::by_columns((m, k, n), 2, |j0, j1| unsafe {
        x86::columns(&xr, ldx, w, bias, out_ptr.get(), m, k, n, j0, j1)
    });
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn columns(
        _: &[f32],
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
        unreachable!("the kernel is only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{KC, MR, NR, ROWS};
    use crate::linear::x86::{Tile, accumulate, accumulate_4x6, chunk_ahead, prefetch_chunks, store};

    /// The widened weights of one chunk of a tile: six rows of [`KC`] floats, aligned for whole-vector stores.
    #[repr(C, align(64))]
    struct Chunk([f32; NR * KC]);

    /// Columns `j0..j1` of `out = xr·Wᵀ + b`, `xr` already rounded: blocks of [`ROWS`] rows of `x`; for each
    /// tile of six weight rows, chunks of [`KC`] inner elements, each widened once and then multiplied with
    /// every row tile of the block.
    ///
    /// # Safety
    /// AVX-512 F and BW must be available; `xr` holds `m` rows `ldx` apart, `w` `n·k`, `out` `m·n`, `bias` (if
    /// any) `n`, and no other thread writes columns `j0..j1`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn columns(
        xr: &[f32],
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
        let mut chunk = Chunk([0.0; NR * KC]);
        let wf = chunk.0.as_mut_ptr();
        let ahead = prefetch_chunks(m, ROWS);
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
                    let next = chunk_ahead(w.as_ptr(), (j, p), nr, (k, KC), ahead);
                    // SAFETY: rows j..j + nr of w, columns p..p + len, are in bounds; `wf` holds NR rows of KC.
                    unsafe { widen(w.as_ptr().add(j * k + p), k, nr, len, wf, next) };
                    for (s, a) in acc.iter_mut().enumerate() {
                        let i = i0 + s * MR;
                        let mr = MR.min(i1 - i);
                        let t = Tile {
                            // SAFETY: row i of xr, from column p on, is in bounds.
                            x: unsafe { xr.as_ptr().add(i * ldx + p) },
                            w: wf,
                            k: len,
                            ldx,
                            ldw: KC,
                        };
                        // SAFETY: rows i..i + mr of xr and the nr widened rows hold `len` elements each.
                        unsafe {
                            if (mr, nr) == (MR, NR) {
                                // The widened chunk is in L1: nothing to prefetch (its own lines are passed).
                                accumulate_4x6(t, a, wf, p == 0)
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
                    unsafe { store(a, MR.min(i1 - i), nr, (out.add(i * n + j), n, 1), b) };
                }
                j += nr;
            }
            i0 = i1;
        }
    }

    /// `dst[c·KC + p] = f32(w[c·ldw + p])` for `c < nr`, `p < len`, 16 at a time; prefetches the same rows of the
    /// chunk at `next` (the one the loop widens `ahead` chunks later, from [`chunk_ahead`]) while it reads these.
    ///
    /// # Safety
    /// AVX-512 F and BW; `w` points at `nr` rows of `len` readable elements `ldw` apart, `dst` at `NR·KC`
    /// writable floats, `len ≤ KC`. Prefetches never fault, wherever `next` points.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn widen(w: *const u16, ldw: usize, nr: usize, len: usize, dst: *mut f32, next: *const u16) {
        for c in 0..nr {
            let row = w.wrapping_add(c * ldw);
            let ahead = next.wrapping_add(c * ldw).cast::<i8>();
            for line in (0..2 * len).step_by(64) {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(line));
            }
            let mut p = 0;
            while p + 16 <= len {
                // SAFETY: elements p..p + 16 of the row and of `dst`'s row c are in bounds.
                unsafe {
                    let v = _mm256_loadu_si256(row.add(p).cast());
                    let f = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(v));
                    _mm512_store_si512(dst.add(c * KC + p).cast(), f);
                }
                p += 16;
            }
            for q in p..len {
                // SAFETY: as above, element by element.
                unsafe { *dst.add(c * KC + q) = super::super::from_bf16(*row.add(q)) };
            }
        }
    }
}
