//! Masked multi-head attention `softmax(q·kᵀ·scale + mask)·v`, one head per task.
//!
//! Keys and values are read where they lie (for example in a KV cache with room for more tokens): head `h`
//! starts at `h·head_stride` and its rows are `head_dim` apart. Score tiles whose keys are all masked for all
//! their queries are skipped, so a block-causal prefill does about half the work of a dense one.

use rayon::prelude::*;

/// Where the rows of one operand lie: element `c` of row `i` of head `h` of batch `b` is at
/// `b·batch + h·head + i·row + c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Strides {
    pub batch: usize,
    pub head: usize,
    pub row: usize,
}

impl Strides {
    /// Rows of `heads·head_dim` floats, heads side by side (`[batch, rows, heads, head_dim]`, the layout of the
    /// query/key/value layers' outputs).
    pub fn token_major(rows: usize, heads: usize, head_dim: usize) -> Self {
        Self { batch: rows * heads * head_dim, head: head_dim, row: heads * head_dim }
    }

    /// `[batch, heads, capacity, head_dim]` (a KV cache, or contiguous per-head rows when `capacity = rows`).
    pub fn head_major(capacity: usize, heads: usize, head_dim: usize) -> Self {
        Self { batch: heads * capacity * head_dim, head: capacity * head_dim, row: head_dim }
    }

    fn offset(&self, batch: usize, head: usize) -> usize {
        batch * self.batch + head * self.head
    }

    /// One past the last element used by `batches × heads × rows` rows of `width`.
    fn extent(&self, batches: usize, heads: usize, rows: usize, width: usize) -> usize {
        if batches == 0 || heads == 0 || rows == 0 {
            return 0;
        }
        self.offset(batches - 1, heads - 1) + (rows - 1) * self.row + width
    }
}

/// Shapes and layouts of an [`attention`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    /// Query rows per head.
    pub queries: usize,
    /// Key (and value) rows per head.
    pub keys: usize,
    /// Width of a query, key, value and output row.
    pub head_dim: usize,
    pub q: Strides,
    /// Keys and values (the same layout).
    pub kv: Strides,
    pub out: Strides,
}

/// `out[b, h, i, :] = Σ_j p_ij·v[b, h, j, :]` with `p_i = softmax_j(q[b, h, i]·k[b, h, j]·scale)` over the keys
/// `j` that `masked[i, j]` leaves visible (`true` = hidden; the same for every batch and head).
///
/// The operands are read and written where they lie ([`Strides`]): keys and values straight from a KV cache,
/// queries and outputs in the token-major layout of the linear layers. A query that sees no key gets zeros.
/// Returns `false` (leaving `out` untouched) without AVX-512.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    masked: &[bool],
    out: &mut [f32],
    s: AttentionShape,
    scale: f32,
) -> bool {
    let AttentionShape { batch, heads, queries, keys, head_dim: d, .. } = s;
    assert!(q.len() >= s.q.extent(batch, heads, queries, d), "attention: q too short");
    assert!(out.len() >= s.out.extent(batch, heads, queries, d), "attention: out too short");
    let kv = s.kv.extent(batch, heads, keys, d);
    assert!(k.len() >= kv && v.len() >= kv, "attention: k/v shorter than {kv}");
    assert!(masked.len() >= queries * keys, "attention: mask too short");
    if !crate::available() {
        return false;
    }
    if batch * heads * queries * d == 0 {
        return true;
    }
    let out_ptr = OutPtr(out.as_mut_ptr());
    let run = |g: usize| {
        let (b, h) = (g / heads, g % heads);
        let at = |st: &Strides| st.offset(b, h);
        let op = out_ptr;
        // SAFETY: AVX-512 was detected; the extents were checked above; every (batch, head) writes its own rows.
        unsafe {
            x86::head(
                (q.as_ptr().add(at(&s.q)), s.q.row),
                (k.as_ptr().add(at(&s.kv)), v.as_ptr().add(at(&s.kv)), s.kv.row),
                masked,
                (op.0.add(at(&s.out)), s.out.row),
                queries,
                keys,
                d,
                scale,
            )
        }
    };
    if batch * heads > 1 && queries * keys * d >= 1 << 14 {
        (0..batch * heads).into_par_iter().for_each(run);
    } else {
        (0..batch * heads).for_each(run);
    }
    true
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint rows through the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn head(
        _: &[f32],
        _: &[f32],
        _: &[f32],
        _: &[bool],
        _: &mut [f32],
        _: usize,
        _: usize,
        _: usize,
        _: f32,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::linear::x86::{Tile, tile};
    use crate::linear::{MR, NR};
    use crate::simd::x86::exp;

    /// One head: scores, a masked softmax per query, then `Σ_j p_ij·v_j`.
    ///
    /// # Safety
    /// AVX-512F; `q`, `out`: `queries` rows of `d` floats (`ldq`, `ldo` apart), `k`, `v`: `keys` rows (`ldkv`
    /// apart), `masked`: `queries·keys` flags.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head(
        (q, ldq): (*const f32, usize),
        (k, v, ldkv): (*const f32, *const f32, usize),
        masked: &[bool],
        (out, ldo): (*mut f32, usize),
        queries: usize,
        keys: usize,
        d: usize,
        scale: f32,
    ) {
        let mut scores = vec![0.0f32; queries * keys];
        let qs = (q, ldq);
        let ks = (k, ldkv);
        // Up to 16 queries (an NBP-16 step) the dot products win: for 16 queries over 1024 cached keys, 16
        // heads of 96 and 24 layers, 52–56 ms against 70–76 ms with the keys transposed by gathers first.
        if queries > 16 {
            unsafe { scores_broadcast(qs, ks, masked, &mut scores, queries, keys, d) };
        } else {
            unsafe { scores_dot(qs, ks, masked, &mut scores, queries, keys, d) };
        }
        // Softmax numerators in place; `norms[i]` is 1 / their sum, or 0 for a query that sees no key (its row
        // is all zeros, so its output is zero).
        let mut norms = vec![0.0f32; queries];
        for (i, norm) in norms.iter_mut().enumerate() {
            let row = &mut scores[i * keys..(i + 1) * keys];
            let max = scale_and_hide(row, &masked[i * keys..(i + 1) * keys], scale);
            if max == f32::NEG_INFINITY {
                row.fill(0.0);
            } else {
                *norm = 1.0 / softmax_numerators(row, max);
            }
        }
        // `Σ_j p_ij·v_j` for WR queries at a time, so that each row of v is loaded once per group.
        let mut i = 0;
        while i < queries {
            let rows = WR.min(queries - i);
            let mut c0 = 0;
            while c0 < d {
                let chunks = (d - c0).div_ceil(16).min(WC);
                let p = (scores[i * keys..].as_ptr(), keys);
                // SAFETY: rows i..i + rows of the scores and of the output, and columns c0.. of v, are in bounds.
                unsafe {
                    let o = (out.add(i * ldo), ldo);
                    macro_rules! arms {
                        ($(($r:literal, $c:literal)),*) => {
                            match (rows, chunks) {
                                $(($r, $c) => weighted::<$r, $c>(p, (v, ldkv), d, c0, o, &norms[i..i + $r]),)*
                                _ => unreachable!(),
                            }
                        };
                    }
                    arms!(
                        (1, 1),
                        (1, 2),
                        (1, 3),
                        (1, 4),
                        (2, 1),
                        (2, 2),
                        (2, 3),
                        (2, 4),
                        (3, 1),
                        (3, 2),
                        (3, 3),
                        (3, 4),
                        (4, 1),
                        (4, 2),
                        (4, 3),
                        (4, 4)
                    )
                }
                c0 += chunks * 16;
            }
            i += rows;
        }
    }

    /// Queries per pass of [`weighted`] over the values.
    const WR: usize = 4;
    /// Vectors of 16 output columns per pass of [`weighted`].
    const WC: usize = 4;

    /// `row[j] ← row[j]·scale`, or `−∞` where `hidden[j]`; returns the maximum.
    #[target_feature(enable = "avx512f")]
    fn scale_and_hide(row: &mut [f32], hidden: &[bool], scale: f32) -> f32 {
        let (s, minus_inf) = (_mm512_set1_ps(scale), _mm512_set1_ps(f32::NEG_INFINITY));
        let mut max = minus_inf;
        let whole = row.len() / 16 * 16;
        for j in (0..whole).step_by(16) {
            // SAFETY: 16 scores and 16 flags (bytes that are 0 or 1) from j on are in bounds.
            unsafe {
                let flags = _mm512_cvtepu8_epi32(_mm_loadu_si128(hidden.as_ptr().add(j).cast()));
                let hide = _mm512_test_epi32_mask(flags, flags);
                let x = _mm512_mask_mov_ps(_mm512_mul_ps(_mm512_loadu_ps(row.as_ptr().add(j)), s), hide, minus_inf);
                _mm512_storeu_ps(row.as_mut_ptr().add(j), x);
                max = _mm512_max_ps(max, x);
            }
        }
        let mut max = _mm512_reduce_max_ps(max);
        for (x, &h) in row[whole..].iter_mut().zip(&hidden[whole..]) {
            *x = if h { f32::NEG_INFINITY } else { *x * scale };
            max = max.max(*x);
        }
        max
    }

    /// Scores of a few queries: dot products by the register tiles of the linear kernel.
    ///
    /// # Safety
    /// As [`head`].
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_dot(
        (q, ldq): (*const f32, usize),
        (k, ldk): (*const f32, usize),
        masked: &[bool],
        scores: &mut [f32],
        queries: usize,
        keys: usize,
        d: usize,
    ) {
        let mut i = 0;
        while i < queries {
            let mr = MR.min(queries - i);
            let mut j = 0;
            while j < keys {
                let nr = NR.min(keys - j);
                if visible(masked, keys, i..i + mr, j..j + nr) {
                    // SAFETY: the tile's rows of q and k and its scores are in bounds.
                    unsafe {
                        let t = Tile { x: q.add(i * ldq), w: k.add(j * ldk), k: d, ldx: ldq, ldw: ldk };
                        tile(mr, nr, t, scores.as_mut_ptr().add(i * keys + j), keys, None)
                    };
                }
                j += nr;
            }
            i += mr;
        }
    }

    /// True when some query of `rows` sees some key of `cols` (`masked: [queries, keys]`).
    fn visible(masked: &[bool], keys: usize, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>) -> bool {
        rows.into_iter().any(|r| masked[r * keys + cols.start..r * keys + cols.end].iter().any(|m| !m))
    }

    /// Keys per broadcast tile (four vectors).
    const TILE_KEYS: usize = 64;

    /// Scores of many queries: the keys are transposed once, then each tile of 6 queries × 64 keys accumulates
    /// `q[i, p]·kᵀ[p, j..j + 64]` over `p` (no horizontal sums).
    ///
    /// # Safety
    /// As [`head`].
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_broadcast(
        (q, ldq): (*const f32, usize),
        (k, ldk): (*const f32, usize),
        masked: &[bool],
        scores: &mut [f32],
        queries: usize,
        keys: usize,
        d: usize,
    ) {
        // kᵀ, 16 keys at a time by gathers.
        let mut kt = vec![0.0f32; d * keys];
        let rows = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(ldk as i32),
        );
        for j in (0..keys).step_by(16) {
            let lanes: __mmask16 = (1u32 << (keys - j).min(16)).wrapping_sub(1) as __mmask16;
            for p in 0..d {
                // SAFETY: the gathered elements p of rows j.. of k and the stored elements of row p of kᵀ are in
                // bounds (lanes past the last key are masked off).
                unsafe {
                    let g = _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), lanes, rows, k.add(j * ldk + p));
                    _mm512_mask_storeu_ps(kt.as_mut_ptr().add(p * keys + j), lanes, g);
                }
            }
        }
        let mut i = 0;
        while i < queries {
            let mr = MR.min(queries - i);
            let mut j = 0;
            while j < keys {
                let nk = TILE_KEYS.min(keys - j);
                if visible(masked, keys, i..i + mr, j..j + nk) {
                    // SAFETY: rows i..i + mr of q and scores, keys j..j + nk of kt.
                    unsafe {
                        macro_rules! arms {
                            ($($r:literal),*) => {
                                match mr {
                                    $($r => broadcast_tile::<$r>((q.add(i * ldq), ldq), d, kt.as_ptr().add(j), keys, nk,
                                        scores.as_mut_ptr().add(i * keys + j)),)*
                                    _ => unreachable!(),
                                }
                            };
                        }
                        arms!(1, 2, 3, 4, 5, 6)
                    }
                }
                j += nk;
            }
            i += mr;
        }
    }

    /// `dst[r·ld + c] = Σ_p q[r·ldq + p]·kt[p·ld + c]` for `r < R`, `c < nk ≤ 64`.
    ///
    /// # Safety
    /// AVX-512F; `q`: `R` rows of `d` (`ldq` apart), `kt`: `d` rows of `ld` (from the tile's first key), `dst`: `R` rows of `ld`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn broadcast_tile<const R: usize>(
        (q, ldq): (*const f32, usize),
        d: usize,
        kt: *const f32,
        ld: usize,
        nk: usize,
        dst: *mut f32,
    ) {
        let mut masks = [0 as __mmask16; 4];
        for (c, m) in masks.iter_mut().enumerate() {
            let lanes = nk.saturating_sub(16 * c).min(16);
            *m = (1u32 << lanes).wrapping_sub(1) as __mmask16;
        }
        let mut acc = [[_mm512_setzero_ps(); 4]; R];
        for p in 0..d {
            let mut kv = [_mm512_setzero_ps(); 4];
            for c in 0..4 {
                kv[c] = unsafe { _mm512_maskz_loadu_ps(masks[c], kt.add(p * ld + 16 * c)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let qb = _mm512_set1_ps(unsafe { *q.add(r * ldq + p) });
                for c in 0..4 {
                    row[c] = _mm512_fmadd_ps(qb, kv[c], row[c]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for c in 0..4 {
                unsafe { _mm512_mask_storeu_ps(dst.add(r * ld + 16 * c), masks[c], row[c]) };
            }
        }
    }

    /// `row[j] ← e^(row[j] − max)` (0 for `−∞`); returns the sum.
    #[target_feature(enable = "avx512f")]
    fn softmax_numerators(row: &mut [f32], max: f32) -> f32 {
        let m = _mm512_set1_ps(max);
        let mut acc = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: the chunk holds 16 floats.
            let e = exp(_mm512_sub_ps(unsafe { _mm512_loadu_ps(c.as_ptr()) }, m));
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
            acc = _mm512_add_ps(acc, e);
        }
        let mut sum = _mm512_reduce_add_ps(acc);
        for s in chunks.into_remainder() {
            *s = (*s - max).exp();
            sum += *s;
        }
        sum
    }

    /// `o[r·ldo + c0..] = norms[r]·Σ_j p[r·ldp + j]·v[j·ldv + c0..]` for the `R` queries of a group, over `C`
    /// vectors of 16 columns (the last one possibly partial), skipping keys that no query of the group weighs.
    ///
    /// # Safety
    /// AVX-512F; `p`: `R` rows of `ldp` weights (one per key); `v`: `ldp` rows of `d` floats (`ldv` apart); `o`:
    /// `R` rows of `d` floats (`ldo` apart); `c0 < d`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn weighted<const R: usize, const C: usize>(
        (p, ldp): (*const f32, usize),
        (v, ldv): (*const f32, usize),
        d: usize,
        c0: usize,
        (o, ldo): (*mut f32, usize),
        norms: &[f32],
    ) {
        let mut masks = [0 as __mmask16; C];
        for (c, m) in masks.iter_mut().enumerate() {
            let lanes = (d - c0).saturating_sub(16 * c).min(16);
            *m = (1u32 << lanes).wrapping_sub(1) as __mmask16;
        }
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        for j in 0..ldp {
            // SAFETY: weight j of each row is in bounds.
            let pj: [f32; R] = std::array::from_fn(|r| unsafe { *p.add(r * ldp + j) });
            if pj.iter().all(|&x| x == 0.0) {
                continue;
            }
            let mut vj = [_mm512_setzero_ps(); C];
            for (c, x) in vj.iter_mut().enumerate() {
                // SAFETY: the masked columns of row j of v are in bounds.
                *x = unsafe { _mm512_maskz_loadu_ps(masks[c], v.add(j * ldv + c0 + 16 * c)) };
            }
            for r in 0..R {
                let pb = _mm512_set1_ps(pj[r]);
                for c in 0..C {
                    acc[r][c] = _mm512_fmadd_ps(pb, vj[c], acc[r][c]);
                }
            }
        }
        for r in 0..R {
            let nb = _mm512_set1_ps(norms[r]);
            for c in 0..C {
                // SAFETY: the masked columns of output row r are in bounds.
                unsafe { _mm512_mask_storeu_ps(o.add(r * ldo + c0 + 16 * c), masks[c], _mm512_mul_ps(acc[r][c], nb)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::values;

    fn reference(q: &[f32], k: &[f32], v: &[f32], masked: &[bool], s: AttentionShape, scale: f32) -> Vec<f32> {
        let AttentionShape { batch, heads, queries, keys, head_dim: d, .. } = s;
        let mut out = vec![0.0f32; s.out.extent(batch, heads, queries, d)];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..queries {
                    let qi = &q[s.q.offset(b, h) + i * s.q.row..][..d];
                    let row = |t: &[f32], j: usize| t[s.kv.offset(b, h) + j * s.kv.row..][..d].to_vec();
                    let logits: Vec<f64> = (0..keys)
                        .map(|j| {
                            let dot: f64 = qi.iter().zip(row(k, j)).map(|(a, b)| *a as f64 * b as f64).sum();
                            if masked[i * keys + j] { f64::NEG_INFINITY } else { dot * scale as f64 }
                        })
                        .collect();
                    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    if max == f64::NEG_INFINITY {
                        continue;
                    }
                    let e: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for c in 0..d {
                        let y: f64 = (0..keys).map(|j| e[j] / sum * row(v, j)[c] as f64).sum();
                        out[s.out.offset(b, h) + i * s.out.row + c] = y as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn matches_a_double_precision_softmax_attention_with_block_causal_masks() {
        if !crate::available() {
            return;
        }
        // (batch, heads, queries, keys, head_dim, capacity): queries are the last rows of the keys, as with a
        // cache; queries and outputs token-major, keys and values head-major with room for `capacity` rows.
        let cases = [
            (1, 2, 5, 9, 8, 12),
            (2, 3, 16, 40, 32, 40),
            (1, 1, 1, 1, 20, 4),
            (2, 4, 13, 13, 96, 20),
            (1, 2, 70, 150, 136, 150),
        ];
        for &(batch, heads, queries, keys, d, cap) in &cases {
            let shape = AttentionShape {
                batch,
                heads,
                queries,
                keys,
                head_dim: d,
                q: Strides::token_major(queries, heads, d),
                kv: Strides::head_major(cap, heads, d),
                out: Strides::token_major(queries, heads, d),
            };
            let n_q = batch * queries * heads * d;
            let n_kv = batch * heads * cap * d;
            let (q, k, v) = (values(n_q, 1), values(n_kv, 2), values(n_kv, 3));
            // Block-causal with blocks of 4 over the key positions, plus one query that sees nothing.
            let mut masked: Vec<bool> = (0..queries * keys)
                .map(|e| {
                    let (i, j) = (e / keys + keys - queries, e % keys);
                    j / 4 > i / 4
                })
                .collect();
            if queries > 2 {
                masked[keys..2 * keys].fill(true);
            }
            let mut out = vec![f32::NAN; n_q];
            assert!(attention(&q, &k, &v, &masked, &mut out, shape, 0.3));
            let want = reference(&q, &k, &v, &masked, shape, 0.3);
            for (e, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{shape:?} element {e}: {a} vs {b}");
            }
            if queries > 2 {
                // Query 1 of batch 0 sees nothing: zeros for every head.
                let row = &out[shape.out.row..2 * shape.out.row];
                assert!(row.iter().all(|x| *x == 0.0), "a query that sees nothing gets zeros");
            }
        }
    }
}
