//! `out = x·Wᵀ + b` with the weight in PyTorch's `[out, in]` layout, read in place.
//!
//! Each output element is a dot product of a row of `x` with a row of `W`, so the kernel needs no packing: a
//! register tile of 4 rows of `x` by 6 rows of `W` (24 AVX-512 accumulators, its loop in assembly) walks the
//! inner dimension in chunks that keep a block of `x` rows and the tile's `W` rows in L1, with the partial
//! sums of the block's tiles waiting in memory between chunks and summed horizontally once. The columns of the
//! output are split over the cores in chunks whose weight rows fit in the L2 cache, so that every weight row
//! comes from memory once per block of `x` rows.

use rayon::prelude::*;

/// Rows of `x` per register tile.
pub(crate) const MR: usize = 4;
/// Rows of `W` (output columns) per register tile.
pub(crate) const NR: usize = 6;
/// Bytes of weight rows per parallel task (kept in L2 while the `x` rows pass over them).
const TASK_BYTES: usize = 384 * 1024;
/// Rows of `x` per block (a multiple of [`MR`]).
pub(crate) const ROWS: usize = 32;
/// Elements of the inner dimension per pass over a block of rows. With [`ROWS`], the best of the combinations
/// measured (16 or 32 rows; chunks of 256, 512 or 1536) by `nbp-cli bench sample`, whose 16-row steps read the
/// weights from memory: there, chunks of 512 lost about 2 s of 27 by pushing the 16 rows out of L1.
const KC: usize = 256;

/// `out[i, j] = Σ_p x[i, p]·w[j, p] + bias[j]` with `x: [m, k]`, `w: [n, k]`, `bias: [n]`, `out: [m, n]`.
///
/// Returns `false` (and leaves `out` untouched) when the CPU lacks AVX-512.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], m: usize, k: usize, n: usize) -> bool {
    assert!(out.len() >= m * n, "linear: output shorter than {m}×{n}");
    // SAFETY: `out` holds `m·n` writable floats.
    unsafe { linear_raw(x, w, bias, out.as_mut_ptr(), m, k, n) }
}

/// [`linear`] into a new vector of the `m·n` outputs, which the kernel writes without their being zeroed first
/// (a pass over the outputs less): `None` where [`linear`] returns `false`.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn linear_to_vec(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, k: usize, n: usize) -> Option<Vec<f32>> {
    // SAFETY: `new_outputs` hands over room for `m·n` floats.
    unsafe { new_outputs(m * n, |out| linear_raw(x, w, bias, out, m, k, n)) }
}

/// A new vector of `len` floats written by `kernel` at the pointer it gets: kept when `kernel` returns true,
/// which it must do only after writing all `len` of them.
///
/// # Safety
/// `kernel` writes only inside the `len` floats, and all of them when it returns true.
pub(crate) unsafe fn new_outputs(len: usize, kernel: impl FnOnce(*mut f32) -> bool) -> Option<Vec<f32>> {
    let mut out = Vec::with_capacity(len);
    if !kernel(out.as_mut_ptr()) {
        return None;
    }
    // SAFETY: the capacity holds `len` floats, all written (the caller guarantees it).
    unsafe { out.set_len(len) };
    Some(out)
}

/// [`linear`] writing the outputs at `out`: returns `false` (nothing written) without AVX-512, and otherwise
/// writes every one of the `m·n` outputs.
///
/// # Safety
/// `out` points at `m·n` writable floats.
unsafe fn linear_raw(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: *mut f32, m: usize, k: usize, n: usize) -> bool {
    assert!(x.len() >= m * k && w.len() >= n * k, "linear: slices shorter than their shapes");
    assert!(bias.is_none_or(|b| b.len() >= n), "linear: bias shorter than {n}");
    if !crate::available() {
        return false;
    }
    if m == 0 || n == 0 {
        return true;
    }
    let out_ptr = SyncPtr(out);
    // SAFETY: AVX-512 was detected above; every task writes its own columns `j0..j1` of `out`, which holds `m·n`
    // floats (the caller guarantees it).
    by_columns((m, k, n), 4, |j0, j1| unsafe { x86::columns(x, w, bias, out_ptr.get(), m, k, n, j0, j1) });
    true
}

/// Runs `columns(j0, j1)` over the output columns of an `m × k × n` product split into tasks, in parallel when
/// the product is large enough: each task's weight rows (of `weight_bytes` per element) fill [`TASK_BYTES`], so
/// that they stay in L2 while the blocks of `x` rows pass over them, with at least one register tile of
/// columns and enough tasks to keep every core busy. The f32 kernel and both bfloat16 register-tile kernels
/// split their work this way.
pub(crate) fn by_columns((m, k, n): (usize, usize, usize), weight_bytes: usize, columns: impl Fn(usize, usize) + Sync) {
    let by_cache = (TASK_BYTES / (weight_bytes * k.max(1))).max(NR);
    let threads = rayon::current_num_threads().max(1);
    let by_balance = n.div_ceil(4 * threads).max(NR);
    let cols = by_cache.min(by_balance).next_multiple_of(NR);
    let tasks = n.div_ceil(cols);
    let run = |t: usize| columns(t * cols, ((t + 1) * cols).min(n));
    if tasks == 1 || m * n * k < 1 << 18 {
        (0..tasks).for_each(run);
    } else {
        (0..tasks).into_par_iter().for_each(run);
    }
}

/// `round(row of dst, row of x)` for each of the `m` rows of `x: [m, k]`, whose copies lie `ldx` apart in `dst`
/// (the bfloat16 kernels' rounded copies of `x`), in parallel for large inputs.
pub(crate) fn by_rows<T: Send>(
    dst: &mut [T],
    ldx: usize,
    x: &[f32],
    (m, k): (usize, usize),
    round: impl Fn(&mut [T], &[f32]) + Sync,
) {
    let pairs = |(d, s): (&mut [T], &[f32])| round(d, s);
    if m * k >= 1 << 16 {
        dst.par_chunks_mut(ldx).zip(x[..m * k].par_chunks(k)).for_each(pairs);
    } else {
        dst.chunks_mut(ldx).zip(x[..m * k].chunks(k)).for_each(pairs);
    }
}

#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
// SAFETY: tasks write disjoint elements through the pointer.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    pub(crate) fn get(self) -> *mut f32 {
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

    use super::{KC, MR, NR, ROWS};

    /// Columns `j0..j1` of `out = x·Wᵀ + b`.
    ///
    /// Rows of `x` go in blocks of [`ROWS`]; for each tile of six weight rows the inner dimension is walked in
    /// chunks of [`KC`], and every chunk passes over all row tiles of the block before the next one, so that the
    /// chunk of the block's `x` rows and of the tile's `W` rows is read from the L1 cache. The accumulators of
    /// the block's tiles wait in `acc` between chunks and are summed horizontally once, at the end.
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
        let mut acc = [[_mm512_setzero_ps(); MR * NR]; ROWS / MR];
        let ahead = prefetch_chunks(m, ROWS);
        let mut i0 = 0;
        while i0 < m {
            let i1 = (i0 + ROWS).min(m);
            let tiles = (i1 - i0) / MR;
            let mut j = j0;
            while j < j1 {
                let nr = NR.min(j1 - j);
                // SAFETY: columns j..j + nr of the bias are in bounds.
                let b = bias.map(|b| unsafe { b.as_ptr().add(j) });
                let mut i = i0;
                if nr == NR && tiles > 0 {
                    let acc = &mut acc[..tiles];
                    let mut p = 0;
                    while p < k {
                        let len = KC.min(k - p);
                        let next = chunk_ahead(w.as_ptr(), (j, p), NR, (k, KC), ahead);
                        for (s, a) in acc.iter_mut().enumerate() {
                            // SAFETY: rows i0 + s·MR.. of x and j.. of w, from column p on for len elements,
                            // are in bounds.
                            unsafe {
                                let x = x.as_ptr().add((i0 + s * MR) * k + p);
                                let t = Tile { x, w: w.as_ptr().add(j * k + p), k: len, ldx: k, ldw: k };
                                accumulate_4x6(t, a, next, p == 0);
                            }
                        }
                        p += len;
                    }
                    for (s, a) in acc.iter().enumerate() {
                        // SAFETY: the output tile is in bounds.
                        unsafe { store(a, MR, NR, (out.add((i0 + s * MR) * n + j), n, 1), b) };
                    }
                    i += tiles * MR;
                }
                while i < i1 {
                    let mr = MR.min(i1 - i);
                    // SAFETY: rows i..i + mr of x, j..j + nr of w, and the output tile are in bounds.
                    unsafe {
                        let t = Tile { x: x.as_ptr().add(i * k), w: w.as_ptr().add(j * k), k, ldx: k, ldw: k };
                        tile(mr, nr, t, out.add(i * n + j), n, b)
                    };
                    i += mr;
                }
                j += nr;
            }
            i0 = i1;
        }
    }

    /// Where the weights of the chunk `ahead` chunks after the one at inner elements `p..` of weight rows
    /// `j..j + nr` begin, in the order the loop reads them: the same rows further on, and after their last
    /// chunk (chunks of `kc` of rows of `k`) the first chunk of the next tile's rows (`j + nr..`). Only an address
    /// for prefetching, never dereferenced (near the last tile it points past the weights). Prefetching a fixed
    /// distance ahead in the same rows instead fetched, at the last chunk of every tile, lines the tile had
    /// already read, and the first row tile of the next weight tile waited for memory: one chunk in three of
    /// `official-base`'s 1536-wide rows in bfloat16 (`official-base pass, 16 rows, bf16` on a Zen 5: 47.4–49.4 ms
    /// against 57.5–58.8 ms).
    pub(crate) fn chunk_ahead<T>(
        w: *const T,
        (j, p): (usize, usize),
        nr: usize,
        (k, kc): (usize, usize),
        ahead: usize,
    ) -> *const T {
        let (mut j, mut p) = (j, p);
        for _ in 0..ahead {
            if p + kc < k {
                p += kc;
            } else {
                (j, p) = (j + nr, 0);
            }
        }
        w.wrapping_add(j * k + p)
    }

    /// Chunks ahead at which the register-tile loops prefetch the weights ([`chunk_ahead`]) for a block of
    /// `rows` rows of `x`. When all rows fit in one block (a sampling step) every weight is read from memory
    /// once, right where the products over it follow, and one chunk of lead (the work of the block's row tiles
    /// over a chunk, about 190 ns for 16 rows in bfloat16) is hardly more than the memory's latency; two chunks
    /// took a 16-row pass through the linear layers of `official-base` in bfloat16 from 47.1–49.9 ms to
    /// 44.6–48.7 ms on a Zen 5, the one-row pass reading the same weights in 44.8–47.2 ms. Larger products (a
    /// prefill) come back to each weight tile for every block of rows, from the caches, and ran 2–5 % slower
    /// with two.
    pub(crate) fn prefetch_chunks(m: usize, rows: usize) -> usize {
        if m <= rows { 2 } else { 1 }
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

    /// `dst[r·ld + c] = Σ_p x[r·ldx + p]·w[c·ldw + p] (+ b[c])` for `r < mr ≤ 4`, `c < nr ≤ 6`: one register
    /// tile over the whole inner dimension.
    ///
    /// # Safety
    /// AVX-512F; `t.x` and `t.w` point at `mr` and `nr` rows of `t.k` readable floats, `dst` at `mr` rows of `ld`
    /// writable floats (`nr ≤ ld`), `b` at `nr` floats.
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn tile(mr: usize, nr: usize, t: Tile, dst: *mut f32, ld: usize, b: Option<*const f32>) {
        let mut acc = [_mm512_setzero_ps(); MR * NR];
        // SAFETY: as the caller guarantees.
        unsafe {
            accumulate(mr, nr, t, &mut acc);
            store(&acc, mr, nr, (dst, ld, 1), b);
        }
    }

    /// Adds the products of a full `4 × 6` tile over `t.k` elements of the inner dimension to the 24 accumulators `acc`
    /// (row-major: `acc[r·6 + c]` holds lane-wise partial sums of row `r` of `x` times row `c` of `W`), or with `first`
    /// sets them to those products: the registers start at zero, where a memset of the accumulators before every weight
    /// tile showed as 3 % of a sampling run's profile (the 512-row pass of `official-base` in bfloat16 took
    /// 1159–1183 ms after, 1205–1263 ms before). The loop over whole vectors is written in assembly so that the accumulators, the
    /// six weight vectors and the row of `x` stay in the 32 vector registers (the compiler spills the generic tile's
    /// accumulators to the stack). Each step also prefetches one line of each of six weight rows from `next` on (rows
    /// `t.ldw` apart): the linear layers pass the weights of a chunk that comes after this one ([`chunk_ahead`]), so
    /// that they are on their way from memory while this one computes (`official-base pass, 16 rows` on a Zen 5:
    /// 127–130 ms against 165–173 ms); the convolutions, whose weights stay in cache, pass `t.w`, the lines being
    /// loaded, which costs nothing measurable.
    ///
    /// # Safety
    /// AVX-512F; `t.x` and `t.w` point at 4 and 6 rows of `t.k` readable floats (`t.ldx`, `t.ldw` apart).
    /// Prefetches never fault, wherever `next` points.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn accumulate_4x6(t: Tile, acc: &mut [__m512; 24], next: *const f32, first: bool) {
        let k = t.k;
        let whole = k / 16;
        // SAFETY: the loop reads `whole` vectors from each of the 4 rows of x and 6 rows of W, which the caller
        // guarantees are readable; it writes only the named vector registers.
        unsafe {
            tile_4x6!(
                "vmovups",
                "vfmadd231ps",
                acc,
                first = first,
                n = whole,
                w = (t.w, t.w.add(3 * t.ldw), 4 * t.ldw),
                prefetch = (next, next.wrapping_add(3 * t.ldw)),
                x = (t.x, t.x.add(3 * t.ldx), 4 * t.ldx)
            )
        };
        let p = whole * 16;
        if p < k {
            let mask: __mmask16 = (1u32 << (k - p)).wrapping_sub(1) as __mmask16;
            for c in 0..6 {
                // SAFETY: the masked loads stay inside the rows.
                let wv = unsafe { _mm512_maskz_loadu_ps(mask, t.w.add(c * t.ldw + p)) };
                for r in 0..4 {
                    let xv = unsafe { _mm512_maskz_loadu_ps(mask, t.x.add(r * t.ldx + p)) };
                    acc[r * 6 + c] = _mm512_fmadd_ps(xv, wv, acc[r * 6 + c]);
                }
            }
        }
    }

    /// Adds the products of an `mr × nr` tile (`mr ≤ 4`, `nr ≤ 6`) over `t.k` elements to `acc` (laid out as in
    /// [`accumulate_4x6`], which serves the full tile).
    ///
    /// # Safety
    /// AVX-512F; `t.x` and `t.w` point at `mr` and `nr` rows of `t.k` readable floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn accumulate(mr: usize, nr: usize, t: Tile, acc: &mut [__m512; 24]) {
        if (mr, nr) == (MR, NR) {
            return unsafe { accumulate_4x6(t, acc, t.w, false) };
        }
        macro_rules! arms {
            ($($m:literal),*) => {
                match (mr, nr) {
                    $(($m, 6) => accumulate_small::<$m, 6>(t, acc),
                      ($m, 5) => accumulate_small::<$m, 5>(t, acc),
                      ($m, 4) => accumulate_small::<$m, 4>(t, acc),
                      ($m, 3) => accumulate_small::<$m, 3>(t, acc),
                      ($m, 2) => accumulate_small::<$m, 2>(t, acc),
                      ($m, 1) => accumulate_small::<$m, 1>(t, acc),)*
                    _ => unreachable!("tile {mr}x{nr}"),
                }
            };
        }
        unsafe { arms!(1, 2, 3, 4) }
    }

    /// [`accumulate`] for one tile shape, with the accumulators in a local array.
    ///
    /// # Safety
    /// As [`accumulate`] with `mr = R`, `nr = C`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn accumulate_small<const R: usize, const C: usize>(t: Tile, acc: &mut [__m512; 24]) {
        let mut a = [[_mm512_setzero_ps(); C]; R];
        for (r, row) in a.iter_mut().enumerate() {
            row.copy_from_slice(&acc[r * NR..r * NR + C]);
        }
        let mut p = 0;
        while p < t.k {
            // Whole vectors load unmasked (an NTP step streams its weights through here); the last one masked.
            let full = t.k - p >= 16;
            let mask = (1u32 << (t.k - p).min(16)).wrapping_sub(1) as __mmask16;
            // SAFETY: the loads stay inside the rows (masked past their ends).
            let load =
                |ptr: *const f32| unsafe { if full { _mm512_loadu_ps(ptr) } else { _mm512_maskz_loadu_ps(mask, ptr) } };
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = load(unsafe { t.w.add(c * t.ldw + p) });
            }
            for (r, row) in a.iter_mut().enumerate() {
                let xv = load(unsafe { t.x.add(r * t.ldx + p) });
                for c in 0..C {
                    row[c] = _mm512_fmadd_ps(xv, wv[c], row[c]);
                }
            }
            p += 16;
        }
        for (r, row) in a.iter().enumerate() {
            acc[r * NR..r * NR + C].copy_from_slice(row);
        }
    }

    /// `dst[r·rs + c·cs] = Σ lanes of acc[r·6 + c] (+ b[c])` for `r < mr`, `c < nr`.
    ///
    /// # Safety
    /// Those elements of `dst` are writable and `b` points at `nr` floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(crate) unsafe fn store(
        acc: &[__m512; 24],
        mr: usize,
        nr: usize,
        (dst, rs, cs): (*mut f32, usize, usize),
        b: Option<*const f32>,
    ) {
        if (mr, nr, cs) == (MR, NR, 1) {
            // SAFETY: as the caller guarantees, for the full tile with contiguous columns.
            unsafe { store_full(acc, dst, rs, b) };
            return;
        }
        for r in 0..mr {
            for c in 0..nr {
                // SAFETY: as the caller guarantees.
                unsafe {
                    let bias = b.map_or(0.0, |b| *b.add(c));
                    *dst.add(r * rs + c * cs) = _mm512_reduce_add_ps(acc[r * NR + c]) + bias;
                }
            }
        }
    }

    /// [`store`] for a full `4 × 6` tile whose six columns lie side by side (`cs = 1`): the 24 horizontal sums by
    /// a tree of shuffles and adds over all accumulators together (about 70 vector instructions, against about
    /// 200 for one reduction per accumulator), then one masked store of six floats per row. Each sum adds the
    /// 256-bit halves, then the 128-bit quarters, then neighbouring lanes.
    ///
    /// # Safety
    /// `dst[r·rs..r·rs + 6]` is writable for `r < 4`, and `b` points at 6 floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn store_full(acc: &[__m512; 24], dst: *mut f32, rs: usize, b: Option<*const f32>) {
        // Two accumulators with 16 partial sums each → one vector: 8 partials of `a` in the low 256 bits, of `c` in
        // the high ones.
        let halves = |a: __m512, c: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b01_00_01_00>(a, c), _mm512_shuffle_f32x4::<0b11_10_11_10>(a, c))
        };
        // Two vectors of two outputs × 8 partials → one of four outputs × 4 partials (one per 128-bit block).
        let quarters = |a: __m512, c: __m512| {
            _mm512_add_ps(_mm512_shuffle_f32x4::<0b10_00_10_00>(a, c), _mm512_shuffle_f32x4::<0b11_01_11_01>(a, c))
        };
        // Within each 128-bit block, the even and odd lanes of `a` then `c` added pairwise.
        let pairs = |a: __m512, c: __m512| {
            _mm512_add_ps(_mm512_shuffle_ps::<0b10_00_10_00>(a, c), _mm512_shuffle_ps::<0b11_01_11_01>(a, c))
        };
        // Sums of accumulators `A[0..16]` (or `A[0..8]`): lane `4·(i % 4) + i / 4` holds the sum of `A[i]`.
        let sixteen = |a: &[__m512]| {
            let v: [__m512; 8] = std::array::from_fn(|i| halves(a[2 * i], a[2 * i + 1]));
            let u: [__m512; 4] = std::array::from_fn(|i| quarters(v[2 * i], v[2 * i + 1]));
            pairs(pairs(u[0], u[1]), pairs(u[2], u[3]))
        };
        let eight = |a: &[__m512]| {
            let v: [__m512; 4] = std::array::from_fn(|i| halves(a[2 * i], a[2 * i + 1]));
            let z = pairs(quarters(v[0], v[1]), quarters(v[2], v[3]));
            pairs(z, z)
        };
        let (f, g) = (sixteen(&acc[..16]), eight(&acc[16..]));
        // SAFETY: as the caller guarantees.
        let bias = b.map_or(_mm512_setzero_ps(), |b| unsafe { _mm512_maskz_loadu_ps(0x3f, b) });
        for r in 0..MR {
            // Lane c of the row: accumulator a = 6r + c, in `f` (indices 0–15) or `g` (16–31).
            let lane = |c: usize| {
                let a = r * NR + c;
                let i = a % 16;
                (a / 16 * 16 + 4 * (i % 4) + i / 4) as i32
            };
            let idx =
                _mm512_setr_epi32(lane(0), lane(1), lane(2), lane(3), lane(4), lane(5), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
            let row = _mm512_add_ps(_mm512_permutex2var_ps(f, idx, g), bias);
            // SAFETY: six floats of row r are writable.
            unsafe { _mm512_mask_storeu_ps(dst.add(r * rs), 0x3f, row) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::check_linear;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn prefetches_follow_the_loop_into_the_next_weight_tile() {
        use x86::chunk_ahead;
        let w = std::ptr::null::<u16>();
        let at = |j: usize, p: usize, ahead: usize| chunk_ahead(w, (j, p), 6, (1536, 512), ahead) as usize / 2;
        // Rows of 1536 in chunks of 512: three chunks per tile of 6 rows, then the next tile's first chunk.
        assert_eq!([at(0, 0, 1), at(0, 0, 2), at(0, 0, 3)], [512, 1024, 6 * 1536]);
        assert_eq!([at(0, 1024, 1), at(0, 1024, 2)], [6 * 1536, 6 * 1536 + 512]);
        assert_eq!(at(6, 512, 2), 12 * 1536);
        // A last partial chunk (rows of 1300: chunks at 0, 512, 1024).
        assert_eq!(chunk_ahead(w, (0, 1024), 6, (1300, 512), 1) as usize / 2, 6 * 1300);
        assert_eq!(x86::prefetch_chunks(16, 32), 2);
        assert_eq!(x86::prefetch_chunks(512, 32), 1);
    }

    #[test]
    fn matches_a_double_precision_product_on_every_edge_shape() {
        if !crate::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (1, 16, 4),
            (7, 33, 9),
            (16, 96, 13),
            (13, 200, 70),
            (64, 17, 5),
            (3, 1536, 260),
            (40, 1000, 30),
            (20, 600, 12),
        ];
        check_linear(&shapes, 1e-4, |v| v, linear);
    }

    #[test]
    fn new_vectors_hold_what_the_slice_version_writes() {
        if !crate::available() {
            return;
        }
        for (m, k, n) in [(1, 1, 1), (7, 33, 9), (16, 1536, 100), (40, 1000, 30)] {
            let (x, w, b) =
                (crate::bench::values(m * k, 1), crate::bench::values(n * k, 2), crate::bench::values(n, 3));
            let mut want = vec![f32::NAN; m * n];
            assert!(linear(&x, &w, Some(&b), &mut want, m, k, n));
            let got = linear_to_vec(&x, &w, Some(&b), m, k, n).unwrap();
            assert_eq!(got.len(), m * n);
            assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{m}×{k}×{n}");
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
