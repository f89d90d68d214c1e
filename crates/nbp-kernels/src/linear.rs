//! `out = x·Wᵀ + b` with the weight in PyTorch's `[out, in]` layout, read in place.
//!
//! Each output element is a dot product of a row of `x` with a row of `W`, so the kernel needs no packing: a
//! register tile of up to 6 rows of `x` by 4 rows of `W` (24 AVX-512 accumulators) walks the inner dimension
//! once, and the columns of the output are split over the cores in chunks whose weight rows fit in the L2
//! cache, so that every weight row comes from memory once per block of `x` rows.

use rayon::prelude::*;

/// Rows of `x` per register tile.
const MR: usize = 6;
/// Rows of `W` (output columns) per register tile.
const NR: usize = 4;
/// Bytes of weight rows per parallel task (kept in L2 while the `x` rows pass over them).
const TASK_BYTES: usize = 384 * 1024;
/// Bytes of `x` rows per row block.
const ROW_BLOCK_BYTES: usize = 256 * 1024;

/// `out[i, j] = Σ_p x[i, p]·w[j, p] + bias[j]` with `x: [m, k]`, `w: [n, k]`, `bias: [n]`, `out: [m, n]`.
///
/// Returns `false` (and leaves `out` untouched) when the CPU lacks AVX-512.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    assert!(x.len() >= m * k && w.len() >= n * k && out.len() >= m * n, "linear: slices shorter than their shapes");
    assert!(bias.is_none_or(|b| b.len() >= n), "linear: bias shorter than {n}");
    if !crate::available() {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    let out_ptr = SyncPtr(out.as_mut_ptr());
    let cols = task_columns(k, n);
    let tasks = n.div_ceil(cols);
    let run = |t: usize| {
        let (j0, j1) = (t * cols, ((t + 1) * cols).min(n));
        // SAFETY: AVX-512 was detected above; every task writes its own columns `j0..j1` of `out`, whose
        // length was checked.
        unsafe { x86::columns(x, w, bias, out_ptr.get(), m, k, n, j0, j1) }
    };
    if tasks == 1 || m * n * k < 1 << 18 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
    true
}

/// Output columns per task: weight rows that fill [`TASK_BYTES`], at least one tile, and enough tasks to keep
/// every core busy.
fn task_columns(k: usize, n: usize) -> usize {
    let by_cache = (TASK_BYTES / (4 * k.max(1))).max(NR);
    let threads = rayon::current_num_threads().max(1);
    let by_balance = n.div_ceil(4 * threads).max(NR);
    by_cache.min(by_balance).next_multiple_of(NR)
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// SAFETY: tasks write disjoint elements through the pointer.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn columns(
        _: &[f32],
        _: &[f32],
        _: Option<&[f32]>,
        _: *mut f32,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
        _: usize,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR, ROW_BLOCK_BYTES};

    /// Columns `j0..j1` of `out = x·Wᵀ + b`.
    ///
    /// # Safety
    /// AVX-512F must be available; `out` must hold `m·n` elements and no other thread may write columns
    /// `j0..j1`.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn columns(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        out: *mut f32,
        m: usize,
        k: usize,
        n: usize,
        j0: usize,
        j1: usize,
    ) {
        let rows_per_block = (ROW_BLOCK_BYTES / (4 * k.max(1))).max(MR);
        let mut i0 = 0;
        while i0 < m {
            let i1 = (i0 + rows_per_block).min(m);
            let mut j = j0;
            while j < j1 {
                let nr = NR.min(j1 - j);
                let mut i = i0;
                while i < i1 {
                    let mr = MR.min(i1 - i);
                    // SAFETY: rows i..i + mr of x, j..j + nr of w and bias, and the output tile are in bounds.
                    unsafe {
                        let t = Tile { x: x.as_ptr().add(i * k), w: w.as_ptr().add(j * k), k, ldx: k, ldw: k };
                        let b = bias.map(|b| b.as_ptr().add(j));
                        dispatch(mr, nr, t, out.add(i * n + j), n, b)
                    };
                    i += mr;
                }
                j += nr;
            }
            i0 = i1;
        }
    }

    /// Pointers to the first row of `x` and of `W` of a register tile, the inner dimension, and the distances
    /// between consecutive rows of `x` and of `W`.
    #[derive(Clone, Copy)]
    pub(crate) struct Tile {
        pub x: *const f32,
        pub w: *const f32,
        pub k: usize,
        pub ldx: usize,
        pub ldw: usize,
    }

    /// Calls the `mr × nr` instance of [`tile`].
    ///
    /// # Safety
    /// As [`tile`].
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn dispatch(mr: usize, nr: usize, t: Tile, dst: *mut f32, ld: usize, b: Option<*const f32>) {
        macro_rules! arms {
            ($($m:literal),*) => {
                match (mr, nr) {
                    $(($m, 4) => tile::<$m, 4>(t, dst, ld, b),
                      ($m, 3) => tile::<$m, 3>(t, dst, ld, b),
                      ($m, 2) => tile::<$m, 2>(t, dst, ld, b),
                      ($m, 1) => tile::<$m, 1>(t, dst, ld, b),)*
                    _ => unreachable!("tile {mr}x{nr}"),
                }
            };
        }
        unsafe { arms!(1, 2, 3, 4, 5, 6) }
    }

    /// `dst[r·ld + c] = Σ_p x[r·k + p]·w[c·k + p] (+ b[c])` for `r < R`, `c < C`.
    ///
    /// # Safety
    /// AVX-512F; `x` and `w` point at `R` and `C` rows of `k` readable floats (`ldx`, `ldw` apart), `dst` at `R` rows of `ld`
    /// writable floats (`C ≤ ld`), `b` at `C` floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(t: Tile, dst: *mut f32, ld: usize, b: Option<*const f32>) {
        let k = t.k;
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p + 16 <= k {
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = unsafe { _mm512_loadu_ps(t.w.add(c * t.ldw + p)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm512_loadu_ps(t.x.add(r * t.ldx + p)) };
                for c in 0..C {
                    row[c] = _mm512_fmadd_ps(xv, wv[c], row[c]);
                }
            }
            p += 16;
        }
        if p < k {
            let mask: __mmask16 = (1u32 << (k - p)).wrapping_sub(1) as __mmask16;
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = unsafe { _mm512_maskz_loadu_ps(mask, t.w.add(c * t.ldw + p)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = unsafe { _mm512_maskz_loadu_ps(mask, t.x.add(r * t.ldx + p)) };
                for c in 0..C {
                    row[c] = _mm512_fmadd_ps(xv, wv[c], row[c]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                let bias = b.map_or(0.0, |b| unsafe { *b.add(c) });
                unsafe { *dst.add(r * ld + c) = _mm512_reduce_add_ps(*a) + bias };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| x[i * k + p] as f64 * w[j * k + p] as f64).sum();
                out[i * n + j] = s as f32 + bias.map_or(0.0, |b| b[j]);
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matches_a_double_precision_product_on_every_edge_shape() {
        if !crate::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        for &(m, k, n) in &[(1, 1, 1), (1, 16, 4), (7, 33, 9), (16, 96, 13), (13, 200, 70), (64, 17, 5), (3, 1536, 260)]
        {
            let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
            for bias in [None, Some(b.as_slice())] {
                let mut out = vec![f32::NAN; m * n];
                assert!(linear(&x, &w, bias, &mut out, m, k, n));
                let want = reference(&x, &w, bias, m, k, n);
                for (i, (a, e)) in out.iter().zip(&want).enumerate() {
                    assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{m}x{k}x{n} element {i}: {a} vs {e}");
                }
            }
        }
    }

    #[test]
    fn leaves_the_output_alone_without_avx512_or_fills_it_with_it() {
        let mut out = vec![7.0f32; 2];
        let done = linear(&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0], None, &mut out, 1, 2, 2);
        assert_eq!(done, crate::available());
        assert_eq!(out, if done { vec![11.0, 17.0] } else { vec![7.0, 7.0] });
    }
}
