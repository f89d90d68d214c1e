//! Masked multi-head attention `softmax(q·kᵀ·scale + mask)·v`, one head per task.
//!
//! Keys and values are read where they lie (for example in a KV cache with room for more tokens): head `h`
//! starts at `h·head_stride` and its rows are `head_dim` apart. Two or more queries (an NBP step, a prefill) are
//! processed 16 at a time as the lanes of the vectors; keys that no query of a group sees are skipped, so a
//! block-causal prefill does about half the work of a dense one. A single query (an NTP step) takes dot
//! products by the linear kernel's register tiles.

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

impl AttentionShape {
    /// New tokens attending to a KV cache: queries and outputs token-major (as the linear layers give them),
    /// keys and values head-major with room for `capacity` rows per head.
    pub fn cached(batch: usize, heads: usize, queries: usize, keys: usize, head_dim: usize, capacity: usize) -> Self {
        Self {
            batch,
            heads,
            queries,
            keys,
            head_dim,
            q: Strides::token_major(queries, heads, head_dim),
            kv: Strides::head_major(capacity, heads, head_dim),
            out: Strides::token_major(queries, heads, head_dim),
        }
    }
}

/// The benchmarks' and tests' stand-in for the model's mask (`nbp_core::mask`): `true` = hidden, for `queries`
/// new tokens that are the last of `keys`, a key visible when its block of `block` positions is not later than
/// the query's.
pub(crate) fn block_causal_mask(queries: usize, keys: usize, block: usize) -> Vec<bool> {
    (0..queries * keys)
        .map(|e| {
            let (i, j) = (e / keys + keys - queries, e % keys);
            j / block > i / block
        })
        .collect()
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
    let lanes = (queries > 1).then(|| LaneMask::new(masked, queries, keys));
    let run = |g: usize| {
        let (b, h) = (g / heads, g % heads);
        let at = |st: &Strides| st.offset(b, h);
        let op = out_ptr;
        // SAFETY: AVX-512 was detected; the extents were checked above; every (batch, head) writes its own rows.
        unsafe {
            let qh = (q.as_ptr().add(at(&s.q)), s.q.row);
            let oh = (op.0.add(at(&s.out)), s.out.row);
            let kv = (k.as_ptr().add(at(&s.kv)), v.as_ptr().add(at(&s.kv)), s.kv.row);
            match &lanes {
                Some(lanes) => x86::head_lanes(qh, kv, lanes, oh, d, scale),
                None => x86::head_one(qh.0, kv, masked, oh.0, keys, d, scale),
            }
        }
    };
    if batch * heads > 1 && queries * keys * d >= 1 << 14 {
        (0..batch * heads).into_par_iter().for_each(run);
    } else {
        (0..batch * heads).for_each(run);
    }
    true
}

/// Copies the rows of `new: [batch, n, heads·d]` (token-major, as the key and value layers give them) into rows
/// `start..start + n` of `cache: [batch, heads, capacity, d]`: `batch·n·heads` copies of `d` floats (768 per
/// layer in a 16-row step of `official-base`), here at this crate's optimisation level rather than in the
/// generic caller's.
///
/// # Panics
/// When the rows do not fit.
pub fn write_cache_rows(
    new: &[f32],
    [batch, n, heads, d]: [usize; 4],
    cache: &mut [f32],
    capacity: usize,
    start: usize,
) {
    assert!(new.len() >= batch * n * heads * d && start + n <= capacity, "write_cache_rows: shapes");
    assert!(cache.len() >= batch * heads * capacity * d, "write_cache_rows: cache too short");
    for b in 0..batch {
        for t in 0..n {
            for h in 0..heads {
                let from = ((b * n + t) * heads + h) * d;
                let to = ((b * heads + h) * capacity + start + t) * d;
                cache[to..to + d].copy_from_slice(&new[from..from + d]);
            }
        }
    }
}

/// The mask regrouped for [`x86::head_lanes`]: queries in groups of 16, and for each group and key the bits of
/// the group's queries that see the key, with the range of keys that some query of the group sees.
pub(crate) struct LaneMask {
    queries: usize,
    keys: usize,
    /// `bits[g·keys + j]`: bit `l` set when query `16g + l` sees key `j`.
    bits: Vec<u16>,
    /// Per group, the keys `lo..hi` outside which no query of the group sees anything.
    ranges: Vec<(usize, usize)>,
}

impl LaneMask {
    fn new(masked: &[bool], queries: usize, keys: usize) -> Self {
        let groups = queries.div_ceil(16);
        let mut bits = vec![0u16; groups * keys];
        for i in 0..queries {
            let (g, l) = (i / 16, i % 16);
            for (b, &m) in bits[g * keys..(g + 1) * keys].iter_mut().zip(&masked[i * keys..(i + 1) * keys]) {
                *b |= u16::from(!m) << l;
            }
        }
        let ranges = bits
            .chunks(keys.max(1))
            .map(|row| match row.iter().position(|&b| b != 0) {
                Some(lo) => (lo, keys - row.iter().rev().position(|&b| b != 0).unwrap_or(0)),
                None => (0, 0),
            })
            .collect();
        Self { queries, keys, bits, ranges }
    }
}

/// Mask flags from bytes (nonzero = hidden), as a boolean tensor stores them. Here rather than at the caller
/// so that it runs at this crate's optimisation level.
pub fn flags_from_bytes(bytes: &[u8]) -> Vec<bool> {
    bytes.iter().map(|&b| b != 0).collect()
}

#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint rows through the pointer.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn head_one(
        _: *const f32,
        _: (*const f32, *const f32, usize),
        _: &[bool],
        _: *mut f32,
        _: usize,
        _: usize,
        _: f32,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }

    pub(super) unsafe fn head_lanes(
        _: (*const f32, usize),
        _: (*const f32, *const f32, usize),
        _: &super::LaneMask,
        _: (*mut f32, usize),
        _: usize,
        _: f32,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::linear::NR;
    use crate::linear::x86::{Tile, tile};
    use crate::simd::x86::exp;

    /// One head for a single query (an NTP step): scores by dot products, a masked softmax, then
    /// `Σ_j p_j·v_j`.
    ///
    /// # Safety
    /// AVX-512F; `q`, `out`: `d` floats; `k`, `v`: `keys` rows of `d` floats (`ldkv` apart); `masked`: `keys`
    /// flags.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head_one(
        q: *const f32,
        (k, v, ldkv): (*const f32, *const f32, usize),
        masked: &[bool],
        out: *mut f32,
        keys: usize,
        d: usize,
        scale: f32,
    ) {
        let mut scores = vec![0.0f32; keys];
        unsafe { scores_dot(q, (k, ldkv), masked, &mut scores, d) };
        // Softmax numerators in place; the norm is 1 / their sum, or 0 when the query sees no key (its weights
        // are all zeros, so its output is zero).
        let max = scale_and_hide(&mut scores, &masked[..keys], scale);
        let norm = if max == f32::NEG_INFINITY {
            scores.fill(0.0);
            0.0
        } else {
            1.0 / softmax_numerators(&mut scores, max)
        };
        let mut c0 = 0;
        while c0 < d {
            let chunks = (d - c0).div_ceil(16).min(WC);
            // SAFETY: columns c0.. of v and of the output are in bounds.
            unsafe {
                macro_rules! arms {
                    ($($c:literal),*) => {
                        match chunks {
                            $($c => weighted::<$c>(&scores, (v, ldkv), d, c0, out, norm),)*
                            _ => unreachable!(),
                        }
                    };
                }
                arms!(1, 2, 3, 4)
            }
            c0 += chunks * 16;
        }
    }

    /// Keys per register block of [`lane_scores`].
    const LK: usize = 16;

    /// One head with its queries as vector lanes, 16 at a time: for each key `j` the scores of the group's
    /// queries form one vector, `Σ_p k[j, p]·qᵀ[p, :]` with the queries transposed (and scaled) once, so no
    /// horizontal sums are needed and each key row is read once per group; the softmax runs across keys with
    /// one maximum and one sum per lane, and `Σ_j p_ij·v_j` takes the weights of 4 queries at a time.
    ///
    /// # Safety
    /// AVX-512F; `q`, `out`: `lanes.queries` rows of `d` floats (`ldq`, `ldo` apart); `k`, `v`: `lanes.keys`
    /// rows (`ldkv` apart).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn head_lanes(
        (q, ldq): (*const f32, usize),
        (k, v, ldkv): (*const f32, *const f32, usize),
        lanes: &super::LaneMask,
        (out, ldo): (*mut f32, usize),
        d: usize,
        scale: f32,
    ) {
        let (queries, keys) = (lanes.queries, lanes.keys);
        let mut qt = vec![0.0f32; d * 16];
        let mut st = vec![0.0f32; keys * 16];
        for g in 0..queries.div_ceil(16) {
            let (i0, gq) = (16 * g, (queries - 16 * g).min(16));
            let bits = &lanes.bits[g * keys..(g + 1) * keys];
            let (lo, hi) = lanes.ranges[g];
            for l in 0..gq {
                for p in 0..d {
                    // SAFETY: element p of query row i0 + l is in bounds.
                    qt[p * 16 + l] = unsafe { *q.add((i0 + l) * ldq + p) } * scale;
                }
            }
            for l in gq..16 {
                for p in 0..d {
                    qt[p * 16 + l] = 0.0;
                }
            }
            // Scores of the visible range, −∞ where hidden; the per-lane maximum.
            let mut max = _mm512_set1_ps(f32::NEG_INFINITY);
            let mut j = lo;
            while j < hi {
                let n = LK.min(hi - j);
                // SAFETY: keys j..j + n of k and rows j..j + n of st are in bounds.
                max = unsafe {
                    if n == LK {
                        lane_scores::<LK>(
                            k.add(j * ldkv),
                            ldkv,
                            &qt,
                            d,
                            &bits[j..j + LK],
                            st.as_mut_ptr().add(16 * j),
                            max,
                        )
                    } else {
                        let mut m = max;
                        for r in 0..n {
                            m = lane_scores::<1>(
                                k.add((j + r) * ldkv),
                                ldkv,
                                &qt,
                                d,
                                &bits[j + r..j + r + 1],
                                st.as_mut_ptr().add(16 * (j + r)),
                                m,
                            );
                        }
                        m
                    }
                };
                j += n;
            }
            // Numerators in place, 1 / their sum per lane (0 for a query that sees no key: zero output).
            let none = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max, _mm512_set1_ps(f32::NEG_INFINITY));
            let max = _mm512_mask_mov_ps(max, none, _mm512_setzero_ps());
            let mut sum = _mm512_setzero_ps();
            for j in lo..hi {
                // SAFETY: row j of st holds 16 floats.
                unsafe {
                    let e = exp(_mm512_sub_ps(_mm512_loadu_ps(st.as_ptr().add(16 * j)), max));
                    _mm512_storeu_ps(st.as_mut_ptr().add(16 * j), e);
                    sum = _mm512_add_ps(sum, e);
                }
            }
            let positive = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(sum, _mm512_setzero_ps());
            let norm = _mm512_maskz_div_ps(positive, _mm512_set1_ps(1.0), sum);
            let mut norms = [0.0f32; 16];
            // SAFETY: 16 floats.
            unsafe { _mm512_storeu_ps(norms.as_mut_ptr(), norm) };
            // Σ_j p_ij·v_j, 4 queries and up to 6 vectors of columns at a time.
            let mut l0 = 0;
            while l0 < gq {
                let rows = LR.min(gq - l0);
                let mut c0 = 0;
                while c0 < d {
                    let chunks = (d - c0).div_ceil(16).min(LC);
                    // SAFETY: rows l0.. of the group's outputs, columns c0.. of v and of the outputs are in bounds.
                    unsafe {
                        let o = (out.add((i0 + l0) * ldo), ldo);
                        let p = st.as_ptr().add(l0);
                        macro_rules! arms {
                            ($($c:literal),*) => {
                                match chunks {
                                    $($c => lane_weighted::<$c>(p, (lo, hi), (v, ldkv), d, c0, o, &norms[l0..], rows),)*
                                    _ => unreachable!(),
                                }
                            };
                        }
                        arms!(1, 2, 3, 4, 5, 6)
                    }
                    c0 += chunks * 16;
                }
                l0 += rows;
            }
        }
    }

    /// Queries per pass of [`lane_weighted`].
    const LR: usize = 4;
    /// Vectors of 16 columns per pass of [`lane_weighted`].
    const LC: usize = 6;
    /// Keys ahead at which [`lane_weighted`] prefetches the value rows.
    const V_AHEAD: usize = 8;

    /// Scores of `R` consecutive keys for the 16 lanes of `qt: [d, 16]`: `st[16r + l] = k[r]·qt[:, l]`, or −∞
    /// where bit `l` of `bits[r]` is clear; returns `max` updated with them.
    ///
    /// # Safety
    /// AVX-512F; `k`: `R` rows of `d` floats (`ldk` apart); `st`: `16·R` floats.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn lane_scores<const R: usize>(
        k: *const f32,
        ldk: usize,
        qt: &[f32],
        d: usize,
        bits: &[u16],
        st: *mut f32,
        mut max: __m512,
    ) -> __m512 {
        let mut acc = [_mm512_setzero_ps(); R];
        // The keys two blocks ahead, into L1 (without this the scores ran at half the speed of memory), one
        // line per step of the loop below: all of a block's prefetches at once, at its start, left the scores of
        // 16 queries over 1024 keys in the 24 layers of `official-base` at 12.2–12.9 ms on a Zen 5, against
        // 9.5–10.1 ms spread out (the scores alone had taken 7.8 ms: the keys came at 19 GB/s). A
        // prefetch of an address past the keys is harmless.
        let (lines, ahead) = (d.div_ceil(16), k.wrapping_add(2 * R * ldk));
        // The next line to prefetch: `col`-th of row `row` of the block ahead.
        let (mut row, mut col) = (0, 0);
        let mut prefetch = || {
            if row < R {
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(row * ldk + 16 * col).cast());
                col += 1;
                if col == lines {
                    (row, col) = (row + 1, 0);
                }
            }
        };
        for p in 0..d {
            prefetch();
            // SAFETY: row p of qt holds 16 floats; element p of each key row is in bounds.
            unsafe {
                let qv = _mm512_loadu_ps(qt.as_ptr().add(16 * p));
                for (r, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*k.add(r * ldk + p)), qv, *a);
                }
            }
        }
        // The lines the loop had no step for (rows of more than 16·⌊d/16⌋ floats).
        for _ in d..R * lines {
            prefetch();
        }
        let minus_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        for (r, a) in acc.iter().enumerate() {
            let x = _mm512_mask_mov_ps(minus_inf, bits[r], *a);
            // SAFETY: row r of st is in bounds.
            unsafe { _mm512_storeu_ps(st.add(16 * r), x) };
            max = _mm512_max_ps(max, x);
        }
        max
    }

    /// `o[r·ldo + c0..] = norms[r]·Σ_{j ∈ lo..hi} p[16j + r]·v[j·ldv + c0..]` for the first `rows ≤ 4` lanes at
    /// `p`, over `C` vectors of 16 columns (the last one possibly partial).
    ///
    /// # Safety
    /// AVX-512F; `p`: rows of 16 weights (from the group's lane `l0`) for the keys `lo..hi`; `v`: those rows of
    /// `d` floats (`ldv` apart); `o`: `rows` rows of `d` floats (`ldo` apart); `c0 < d`.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn lane_weighted<const C: usize>(
        p: *const f32,
        (lo, hi): (usize, usize),
        (v, ldv): (*const f32, usize),
        d: usize,
        c0: usize,
        (o, ldo): (*mut f32, usize),
        norms: &[f32],
        rows: usize,
    ) {
        let mut masks = [0 as __mmask16; C];
        for (c, m) in masks.iter_mut().enumerate() {
            let lanes = (d - c0).saturating_sub(16 * c).min(16);
            *m = (1u32 << lanes).wrapping_sub(1) as __mmask16;
        }
        let mut acc = [[_mm512_setzero_ps(); C]; LR];
        for j in lo..hi {
            // The value row V_AHEAD keys on, into L1: the first pass over the values reads them from memory,
            // and without this the vector units waited for them (16 queries over 1024 keys in the 24 layers of
            // `official-base` on a Zen 5: 12.0 ms against 15.6–19.6 ms). Past the keys, harmless.
            for c in 0..C {
                _mm_prefetch::<_MM_HINT_T0>(v.wrapping_add((j + V_AHEAD) * ldv + c0 + 16 * c).cast());
            }
            let mut vj = [_mm512_setzero_ps(); C];
            for (c, x) in vj.iter_mut().enumerate() {
                // SAFETY: the masked columns of row j of v are in bounds.
                *x = unsafe { _mm512_maskz_loadu_ps(masks[c], v.add(j * ldv + c0 + 16 * c)) };
            }
            for (r, row) in acc.iter_mut().enumerate() {
                // SAFETY: weight r of key j lies within its row of 16.
                let pb = _mm512_set1_ps(unsafe { *p.add(16 * j + r) });
                for c in 0..C {
                    row[c] = _mm512_fmadd_ps(pb, vj[c], row[c]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(rows) {
            let nb = _mm512_set1_ps(norms[r]);
            for c in 0..C {
                // SAFETY: the masked columns of output row r are in bounds.
                unsafe { _mm512_mask_storeu_ps(o.add(r * ldo + c0 + 16 * c), masks[c], _mm512_mul_ps(row[c], nb)) };
            }
        }
    }

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

    /// Scores of one query, `scores[j] = q·k[j]`: dot products by the register tiles of the linear kernel,
    /// skipping tiles of keys that are all hidden.
    ///
    /// # Safety
    /// AVX-512F; `q`: `d` floats; `k`: `scores.len()` rows of `d` floats (`ldk` apart); `masked`: as many flags.
    #[target_feature(enable = "avx512f")]
    unsafe fn scores_dot(q: *const f32, (k, ldk): (*const f32, usize), masked: &[bool], scores: &mut [f32], d: usize) {
        let keys = scores.len();
        let mut j = 0;
        while j < keys {
            let nr = NR.min(keys - j);
            if masked[j..j + nr].iter().any(|m| !m) {
                // SAFETY: the query, the tile's rows of k and its scores are in bounds.
                unsafe {
                    let t = Tile { x: q, w: k.add(j * ldk), k: d, ldx: d, ldw: ldk };
                    tile(1, nr, t, scores.as_mut_ptr().add(j), keys, None)
                };
            }
            j += nr;
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

    /// `o[c0..] = norm·Σ_j p[j]·v[j·ldv + c0..]` over `C` vectors of 16 columns (the last one possibly partial),
    /// skipping keys of weight 0.
    ///
    /// # Safety
    /// AVX-512F; `v`: `p.len()` rows of `d` floats (`ldv` apart); `o`: `d` floats; `c0 < d`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn weighted<const C: usize>(
        p: &[f32],
        (v, ldv): (*const f32, usize),
        d: usize,
        c0: usize,
        o: *mut f32,
        norm: f32,
    ) {
        let mut masks = [0 as __mmask16; C];
        for (c, m) in masks.iter_mut().enumerate() {
            let lanes = (d - c0).saturating_sub(16 * c).min(16);
            *m = (1u32 << lanes).wrapping_sub(1) as __mmask16;
        }
        let mut acc = [_mm512_setzero_ps(); C];
        for (j, &pj) in p.iter().enumerate() {
            if pj == 0.0 {
                continue;
            }
            let pb = _mm512_set1_ps(pj);
            for (c, a) in acc.iter_mut().enumerate() {
                // SAFETY: the masked columns of row j of v are in bounds.
                *a = _mm512_fmadd_ps(pb, unsafe { _mm512_maskz_loadu_ps(masks[c], v.add(j * ldv + c0 + 16 * c)) }, *a);
            }
        }
        let nb = _mm512_set1_ps(norm);
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: the masked columns of the output are in bounds.
            unsafe { _mm512_mask_storeu_ps(o.add(c0 + 16 * c), masks[c], _mm512_mul_ps(*a, nb)) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::values;

    #[test]
    fn cache_rows_land_head_major_after_the_cached_ones() {
        let [batch, n, heads, d, capacity, start] = [2, 3, 2, 4, 6, 2];
        let new: Vec<f32> = (0..batch * n * heads * d).map(|i| i as f32).collect();
        let mut cache = vec![-1.0f32; batch * heads * capacity * d];
        write_cache_rows(&new, [batch, n, heads, d], &mut cache, capacity, start);
        for b in 0..batch {
            for h in 0..heads {
                for row in 0..capacity {
                    for c in 0..d {
                        let got = cache[((b * heads + h) * capacity + row) * d + c];
                        let want = if (start..start + n).contains(&row) {
                            (((b * n + row - start) * heads + h) * d + c) as f32
                        } else {
                            -1.0
                        };
                        assert_eq!(got, want, "batch {b}, head {h}, row {row}, column {c}");
                    }
                }
            }
        }
    }

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
            (1, 3, 33, 40, 24, 48),
            (1, 2, 1, 50, 40, 64),
        ];
        for &(batch, heads, queries, keys, d, cap) in &cases {
            let shape = AttentionShape::cached(batch, heads, queries, keys, d, cap);
            let n_q = batch * queries * heads * d;
            let n_kv = batch * heads * cap * d;
            let (q, k, v) = (values(n_q, 1), values(n_kv, 2), values(n_kv, 3));
            // Block-causal with blocks of 4 over the key positions, plus one query that sees nothing.
            let mut masked = block_causal_mask(queries, keys, 4);
            if queries > 2 {
                masked[keys..2 * keys].fill(true);
            }
            let mut out = vec![f32::NAN; n_q];
            assert!(attention(&q, &k, &v, &masked, &mut out, shape, 0.3));
            let want = reference(&q, &k, &v, &masked, shape, 0.3);
            for (e, (a, b)) in out.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{shape:?} element {e}: {a} vs {b}");
            }
            // A sliding window of 7 keys: later query groups see no early keys (their ranges start past 0).
            let window: Vec<bool> = (0..queries * keys)
                .map(|e| {
                    let (i, j) = (e / keys + keys - queries, e % keys);
                    j > i || j + 7 <= i
                })
                .collect();
            let mut windowed = vec![f32::NAN; n_q];
            assert!(attention(&q, &k, &v, &window, &mut windowed, shape, 0.3));
            let want = reference(&q, &k, &v, &window, shape, 0.3);
            for (e, (a, b)) in windowed.iter().zip(&want).enumerate() {
                assert!((a - b).abs() < 1e-5 * (1.0 + b.abs()), "{shape:?} window, element {e}: {a} vs {b}");
            }
            if queries > 2 {
                // Query 1 of batch 0 sees nothing: zeros for every head.
                let row = &out[shape.out.row..2 * shape.out.row];
                assert!(row.iter().all(|x| *x == 0.0), "a query that sees nothing gets zeros");
            }
        }
        // A single query (the NTP path) that sees no key gets zeros too.
        let shape = AttentionShape::cached(1, 2, 1, 20, 40, 20);
        let (q, kv) = (values(80, 1), values(2 * 20 * 40, 2));
        let mut out = vec![f32::NAN; 80];
        assert!(attention(&q, &kv, &kv, &[true; 20], &mut out, shape, 0.3));
        assert!(out.iter().all(|x| *x == 0.0), "{out:?}");
    }
}
