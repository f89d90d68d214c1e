//! Top-k / top-p filtering and a categorical draw per row, with the same rules as
//! `nbp_core::filter::SamplingFilter` followed by `softmax` and `Tensor::categorical`.
//!
//! The tensor path sorts each whole row; here nothing of the row's length is sorted. The k-th value comes from
//! a histogram of the values' leading bits and a selection inside the one bin that holds it; the softmax weight
//! of each token that survives top-k is computed once, and serves both the top-p cut (a histogram of the mass
//! over the value range, then a sort of the one bin where the mass crosses `p`) and the draw. Plain Rust: works
//! on every CPU.

use std::cell::RefCell;

use rayon::prelude::*;

/// `out[r]` = a token drawn from row `r` of `logits: [rows, vocab]` after filtering, using the uniform number
/// `uniforms[r]` in `[0, 1)`.
///
/// Filtering: `top_k` keeps the values not below the k-th largest (ties included; `None` or `k ≥ vocab` keeps
/// all); `top_p < 1` then keeps, in descending order, the tokens whose preceding probability mass (softmax of the
/// kept logits) is at most `p`, at least one, again with ties. The draw is the inverse CDF over the kept tokens in
/// vocabulary order: the number of tokens whose cumulative probability is below the uniform number.
///
/// # Panics
/// When the slices do not match `rows × vocab`.
pub fn sample_rows(
    logits: &[f32],
    vocab: usize,
    top_k: Option<usize>,
    top_p: Option<f64>,
    uniforms: &[f32],
    out: &mut [i64],
) {
    let rows = out.len();
    assert!(vocab > 0 && logits.len() == rows * vocab && uniforms.len() == rows, "sample_rows: shapes");
    out.par_iter_mut().enumerate().for_each(|(r, o)| {
        let row = &logits[r * vocab..(r + 1) * vocab];
        *o = SCRATCH.with(|s| {
            let s = &mut s.borrow_mut();
            match filter(row, top_k, top_p, s) {
                Some(cut) => draw(&s.kept, cut, uniforms[r]).unwrap_or(vocab as i64 - 1),
                None => 0,
            }
        });
    });
}

/// The smallest logit that survives top-k then top-p (`−∞` when neither filters).
pub fn threshold(row: &[f32], top_k: Option<usize>, top_p: Option<f64>) -> f32 {
    SCRATCH.with(|s| filter(row, top_k, top_p, &mut s.borrow_mut())).unwrap_or(f32::NEG_INFINITY)
}

/// The tokens that survive top-k, in vocabulary order: their places in the row, their logits and their softmax
/// weights `e^(logit − max)`.
#[derive(Default)]
struct Kept {
    index: Vec<u32>,
    value: Vec<f32>,
    weight: Vec<f32>,
}

/// Buffers that one thread reuses from row to row.
#[derive(Default)]
struct Scratch {
    /// The tokens that survive top-k.
    kept: Kept,
    /// Room for a whole row of token places, where [`collect`] gathers the tokens it keeps.
    slots: Vec<u32>,
    /// The values of the histogram bin that holds the k-th largest.
    bin: Vec<f32>,
    /// Value and weight of the tokens in the bin where the top-p mass crosses `p`.
    crossing: Vec<(f32, f32)>,
    /// The top-p mass per bin.
    mass: Vec<f64>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// Fills `s.kept` with the tokens of `row` that survive top-k and returns the smallest logit that survives
/// top-k then top-p (`−∞` when neither filters); `None` when no logit is above `−∞` (the draw is then token 0).
fn filter(row: &[f32], top_k: Option<usize>, top_p: Option<f64>, s: &mut Scratch) -> Option<f32> {
    let top_k = top_k.map(|k| k.clamp(1, row.len())).filter(|&k| k < row.len());
    let kept = &mut s.kept;
    let mut cut = f32::NEG_INFINITY;
    match top_k {
        // Every token but NaN.
        None => collect(row, &mut s.slots, kept, |x| x >= f32::NEG_INFINITY),
        Some(k) => {
            // The candidates: the tokens in the histogram bins from the one that holds the k-th largest value up
            // (about a quarter of the row for a top-k of 16 000 in 64 000). The k-th largest is then selected among
            // the candidates of its bin, and the candidates below it (the rest of that bin, and NaN) dropped.
            let (bin, above) = kth_bin(row, k);
            collect_keys(row, &mut s.slots, kept, (bin as u32) << (32 - KEY_BITS));
            s.bin.clear();
            s.bin.extend(kept.value.iter().copied().filter(|&x| key_bin(x) == bin));
            let (_, kth, _) = s.bin.select_nth_unstable_by(k - above - 1, |a, b| b.total_cmp(a));
            cut = *kth;
            let mut n = 0;
            for t in 0..kept.value.len() {
                let (i, x) = (kept.index[t], kept.value[t]);
                kept.index[n] = i;
                kept.value[n] = x;
                n += usize::from(x >= cut);
            }
            kept.index.truncate(n);
            kept.value.truncate(n);
        }
    }
    let max = largest(&kept.value);
    if max == f32::NEG_INFINITY {
        return None;
    }
    weights(&kept.value, max, &mut kept.weight);
    if let Some(p) = top_p.filter(|&p| p < 1.0) {
        cut = cut.max(top_p_cut(&s.kept, max, p, &mut s.mass, &mut s.crossing));
    }
    Some(cut)
}

/// `weight[t] = e^(value[t] − max)` for every kept value (0 for `−∞`), 16 at a time with AVX-512.
fn weights(value: &[f32], max: f32, weight: &mut Vec<f32>) {
    weight.clear();
    #[cfg(target_arch = "x86_64")]
    if crate::available() {
        weight.resize(value.len(), 0.0);
        // SAFETY: AVX-512F was detected; both slices have the same length.
        unsafe { x86::weights(value, max, weight) };
        return;
    }
    weight.extend(value.iter().map(|&x| (x - max).exp()));
}

/// `Σ w` in f64 over the weights `w` of the values not below `cut`: eight running sums side by side (a single
/// chain of dependent additions waits for each one, about a quarter of the time of a 16-row draw).
fn sum_above(value: &[f32], weight: &[f32], cut: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::available() {
        // SAFETY: AVX-512F was detected.
        return unsafe { x86::sum_above(value, weight, cut) };
    }
    sum_above_portable(value, weight, cut)
}

/// [`sum_above`] without AVX-512.
fn sum_above_portable(value: &[f32], weight: &[f32], cut: f32) -> f64 {
    let mut lanes = [0.0f64; 8];
    let (values, weights) = (value.chunks_exact(8), weight.chunks_exact(8));
    let rest: f64 =
        values.remainder().iter().zip(weights.remainder()).map(|(&v, &w)| if v >= cut { w as f64 } else { 0.0 }).sum();
    for (vs, ws) in values.zip(weights) {
        for ((s, &v), &w) in lanes.iter_mut().zip(vs).zip(ws) {
            *s += if v >= cut { w as f64 } else { 0.0 };
        }
    }
    lanes.iter().sum::<f64>() + rest
}

/// Fills `kept` with the places and values of the tokens of `row` for which `keep` holds, in vocabulary order,
/// collected without branches (the kept tokens come in no pattern), through `slots`.
fn collect(row: &[f32], slots: &mut Vec<u32>, kept: &mut Kept, keep: impl Fn(f32) -> bool) {
    if slots.len() < row.len() {
        // Grown, never shortened: no row pays for filling it again.
        slots.resize(row.len(), 0);
    }
    let mut n = 0;
    for (i, &x) in row.iter().enumerate() {
        slots[n] = i as u32;
        n += usize::from(keep(x));
    }
    kept.index.clear();
    kept.index.extend_from_slice(&slots[..n]);
    kept.value.clear();
    kept.value.extend(kept.index.iter().map(|&i| row[i as usize]));
}

/// [`collect`] of the tokens whose [`order_key`] is at least `lowest`, 16 at a time with AVX-512.
fn collect_keys(row: &[f32], slots: &mut Vec<u32>, kept: &mut Kept, lowest: u32) {
    #[cfg(target_arch = "x86_64")]
    if crate::available() {
        kept.index.clear();
        kept.value.clear();
        // Room for a whole vector past the last kept token: each step stores 16 lanes, of which the kept ones
        // first.
        kept.index.reserve(row.len() + 16);
        kept.value.reserve(row.len() + 16);
        // SAFETY: AVX-512F was detected; both buffers have room for 16 more places than `row` has tokens, and
        // the kernel writes the first `n` of them before the lengths are set.
        unsafe {
            let n = x86::collect_keys(row, kept.index.as_mut_ptr(), kept.value.as_mut_ptr(), lowest);
            kept.index.set_len(n);
            kept.value.set_len(n);
        }
        return;
    }
    collect(row, slots, kept, |x| order_key(x) >= lowest);
}

/// The largest value of `values` (NaN ignored; `−∞` when there is none): sixteen running maxima side by side,
/// which the compiler keeps in one vector register, instead of one chain of dependent comparisons.
fn largest(values: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    rest.iter().chain(&lanes).fold(f32::NEG_INFINITY, |m, &x| if x > m { x } else { m })
}

/// The smallest value of `values` above `−∞` (`start` when there is none or `start` is smaller), as
/// [`largest`].
fn smallest_finite(values: &[f32], start: f32) -> f32 {
    let lowest = |m: f32, x: f32| if x < m && x > f32::NEG_INFINITY { x } else { m };
    let mut lanes = [start; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = lowest(*m, x);
        }
    }
    rest.iter().chain(&lanes).fold(start, |m, &x| lowest(m, x))
}

/// A key whose unsigned order is `f32::total_cmp`'s order of the values.
fn order_key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 { !b } else { b | 1 << 31 }
}

/// Leading bits of [`order_key`] that pick a histogram bin in [`kth_bin`].
const KEY_BITS: u32 = 12;

/// The histogram bin of `x` in [`kth_bin`]: the leading bits of its order key.
fn key_bin(x: f32) -> usize {
    (order_key(x) >> (32 - KEY_BITS)) as usize
}

/// The bin ([`key_bin`]) that holds the `k`-th largest value of `row` (`1 ≤ k ≤ row.len()`, in
/// `f32::total_cmp`'s order), and how many values lie in the bins above it.
fn kth_bin(row: &[f32], k: usize) -> (usize, usize) {
    // Four histograms, for the four values of each group of four: logits of one row share a few exponents, so
    // neighbours often land in one bin, and one histogram would make each count wait for the one before.
    let bins = 1 << KEY_BITS;
    let mut four = vec![0u32; 4 * bins];
    let groups = row.chunks_exact(4);
    for &x in groups.remainder() {
        four[key_bin(x)] += 1;
    }
    for g in groups {
        for (h, &x) in g.iter().enumerate() {
            four[h * bins + key_bin(x)] += 1;
        }
    }
    let count = |b: usize| (four[b] + four[bins + b] + four[2 * bins + b] + four[3 * bins + b]) as usize;
    let (mut above, mut b) = (0usize, bins - 1);
    while above + count(b) < k {
        above += count(b);
        b -= 1;
    }
    (b, above)
}

/// Bins of the top-p mass histogram in [`top_p_cut`].
const MASS_BINS: usize = 1024;

/// The value of the last token that top-p keeps among `kept` (row maximum `max`, weights `e^(x − max)`): in
/// descending order a token is kept while the mass before it is at most `p` of the whole; tokens tied with the
/// last kept one stay too. Tokens at `−∞` (no mass) are never kept, as `p < 1`.
///
/// The finite values are binned over `[lowest, max]` (higher values in lower bins, ties in one bin) with the
/// mass of each bin; walking the bins from the top finds the one where the mass crosses `p`, and only that
/// bin's tokens are sorted.
fn top_p_cut(kept: &Kept, max: f32, p: f64, mass: &mut Vec<f64>, crossing: &mut Vec<(f32, f32)>) -> f32 {
    let total = sum_above(&kept.value, &kept.weight, f32::NEG_INFINITY);
    let lowest = smallest_finite(&kept.value, max);
    if lowest == max {
        return max;
    }
    // Monotone in the value: a larger value never lands in a later bin. An infinite range gives scale 0 (one
    // bin: slower, still right).
    let scale = (MASS_BINS - 1) as f32 / (max - lowest);
    let bin_of = |v: f32| (((max - v) * scale) as usize).min(MASS_BINS - 1);
    mass.clear();
    mass.resize(MASS_BINS, 0.0);
    for (&v, &w) in kept.value.iter().zip(&kept.weight) {
        if v > f32::NEG_INFINITY {
            mass[bin_of(v)] += w as f64;
        }
    }
    // `before`: the mass of the bins above bin `b`; the first token of bin `b` is kept (`before ≤ p`).
    let (mut before, mut b) = (0.0f64, 0);
    while (before + mass[b]) / total <= p {
        before += mass[b];
        b += 1;
        if b == MASS_BINS {
            // Rounding kept the whole mass at or below `p`: every finite token is kept.
            return lowest;
        }
    }
    crossing.clear();
    let pairs = kept.value.iter().copied().zip(kept.weight.iter().copied());
    crossing.extend(pairs.filter(|&(v, _)| v > f32::NEG_INFINITY && bin_of(v) == b));
    crossing.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    let mut cut = crossing[0].0;
    let mut i = 0;
    while i < crossing.len() && before / total <= p {
        cut = crossing[i].0;
        while i < crossing.len() && crossing[i].0 == cut {
            before += crossing[i].1 as f64;
            i += 1;
        }
    }
    cut
}

/// Inverse-CDF draw over the tokens of `kept` (in vocabulary order) not below `cut`; `None` when the
/// cumulative weight never reaches the target (rounding; the caller takes the last token, as the tensor path
/// does). The cumulative sum runs over blocks of [`DRAW_BLOCK`] tokens, token by token only inside the block
/// where it crosses the target.
fn draw(kept: &Kept, cut: f32, u: f32) -> Option<i64> {
    let target = u as f64 * sum_above(&kept.value, &kept.weight, cut);
    let mut cum = 0.0f64;
    let mut start = 0;
    while start < kept.value.len() {
        let end = (start + DRAW_BLOCK).min(kept.value.len());
        let (values, weights) = (&kept.value[start..end], &kept.weight[start..end]);
        let block = sum_above(values, weights, cut);
        if cum + block < target {
            cum += block;
        } else {
            for (t, (&v, &w)) in values.iter().zip(weights).enumerate() {
                if v >= cut {
                    cum += w as f64;
                    if cum >= target {
                        return Some(kept.index[start + t] as i64);
                    }
                }
            }
        }
        start = end;
    }
    None
}

/// Tokens per block of [`draw`]'s cumulative sum.
const DRAW_BLOCK: usize = 256;

#[cfg(not(target_arch = "x86_64"))]
mod x86 {}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::x86::exp;

    /// [`super::sum_above`]: eight f64 sums side by side, 16 tokens per step.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sum_above(value: &[f32], weight: &[f32], cut: f32) -> f64 {
        let len = value.len().min(weight.len());
        let c = _mm512_set1_ps(cut);
        let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let mut t = 0;
        while t < len {
            let lanes = (len - t).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked lanes t..t + lanes of both slices are in bounds.
            let (v, w) = unsafe {
                (
                    _mm512_maskz_loadu_ps(mask, value.as_ptr().add(t)),
                    _mm512_maskz_loadu_ps(mask, weight.as_ptr().add(t)),
                )
            };
            let w = _mm512_maskz_mov_ps(mask & _mm512_cmp_ps_mask::<_CMP_GE_OQ>(v, c), w);
            lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(w)));
            hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(w)))));
            t += 16;
        }
        _mm512_reduce_add_pd(_mm512_add_pd(lo, hi))
    }

    /// The places and values of the tokens of `row` whose order key (`super::order_key`) is at least `lowest`,
    /// in vocabulary order, written from the start of `index` and `value`; returns how many.
    ///
    /// # Safety
    /// AVX-512F; `index` and `value` point at room for at least `row.len() + 16` elements.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn collect_keys(row: &[f32], index: *mut u32, value: *mut f32, lowest: u32) -> usize {
        let (sign, low) = (_mm512_set1_epi32(i32::MIN), _mm512_set1_epi32(lowest as i32));
        let step = _mm512_set1_epi32(16);
        let mut places = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let mut n = 0;
        let mut t = 0;
        while t < row.len() {
            let lanes = (row.len() - t).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked lanes t..t + lanes of `row` are in bounds.
            let bits = unsafe { _mm512_maskz_loadu_epi32(mask, row.as_ptr().add(t).cast()) };
            // The order key: all bits flipped for a set sign bit, else the sign bit set.
            let key = _mm512_xor_si512(bits, _mm512_or_si512(_mm512_srai_epi32::<31>(bits), sign));
            let keep = mask & _mm512_cmpge_epu32_mask(key, low);
            // SAFETY: `n ≤ t`, so the 16 lanes stored from `n` on stay inside the `row.len() + 16` places.
            unsafe {
                _mm512_storeu_si512(index.add(n).cast(), _mm512_maskz_compress_epi32(keep, places));
                _mm512_storeu_si512(value.add(n).cast(), _mm512_maskz_compress_epi32(keep, bits));
            }
            n += keep.count_ones() as usize;
            places = _mm512_add_epi32(places, step);
            t += 16;
        }
        n
    }

    /// `weight[t] = e^(value[t] − max)` (0 for `−∞`).
    ///
    /// # Safety
    /// AVX-512F; `weight` is as long as `value`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weights(value: &[f32], max: f32, weight: &mut [f32]) {
        let m = _mm512_set1_ps(max);
        let mut t = 0;
        while t < value.len() {
            let lanes = (value.len() - t).min(16);
            let mask = ((1u32 << lanes) - 1) as __mmask16;
            // SAFETY: the masked lanes t..t + lanes of both slices are in bounds.
            unsafe {
                let x = _mm512_maskz_loadu_ps(mask, value.as_ptr().add(t));
                _mm512_mask_storeu_ps(weight.as_mut_ptr().add(t), mask, exp(_mm512_sub_ps(x, m)));
            }
            t += 16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_vector_paths_match_the_portable_ones() {
        if !crate::available() {
            return;
        }
        let row: Vec<f32> = crate::bench::values(1000, 3)
            .iter()
            .enumerate()
            .map(|(i, v)| match i % 97 {
                5 => f32::NEG_INFINITY,
                7 => f32::NAN,
                11 => -0.0,
                // Values whose keys are the thresholds below: ties with the lowest key kept.
                13 => -1.0,
                17 => 0.0,
                19 => 2.5,
                _ => 8.0 * v,
            })
            .collect();
        for len in [0, 1, 15, 16, 17, 999, 1000] {
            let row = &row[..len];
            for lowest in [0, order_key(-1.0), order_key(0.0), order_key(2.5), u32::MAX] {
                let (mut vector, mut portable) = (Kept::default(), Kept::default());
                collect_keys(row, &mut Vec::new(), &mut vector, lowest);
                collect(row, &mut Vec::new(), &mut portable, |x| order_key(x) >= lowest);
                assert_eq!(vector.index, portable.index, "{len} tokens from key {lowest}");
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&vector.value), bits(&portable.value), "{len} tokens from key {lowest}");
            }
            let finite: Vec<f32> = row.iter().copied().filter(|x| !x.is_nan()).collect();
            let mut w = vec![];
            weights(&finite, 8.0, &mut w);
            for (&x, &got) in finite.iter().zip(&w) {
                let want = (x - 8.0).exp();
                assert!((got - want).abs() <= 1e-6 * want, "e^({x} − 8): {got} against {want}");
            }
            for cut in [f32::NEG_INFINITY, -1.0, 3.0] {
                let (a, b) = (sum_above(&finite, &w, cut), sum_above_portable(&finite, &w, cut));
                assert!((a - b).abs() <= 1e-12 * b.abs().max(1e-30), "cut {cut}: {a} against {b}");
            }
        }
    }

    #[test]
    fn thresholds_follow_top_k_with_ties_then_top_p() {
        let row = [1.0, 3.0, 2.0, 2.0, 0.0];
        assert_eq!(threshold(&row, Some(2), None), 2.0, "the 2nd largest is 2; both 2s stay");
        assert_eq!(threshold(&row, None, None), f32::NEG_INFINITY);
        // Sorted [3, 2, 2, 1, 0]: mass before each is 0, 0.5206, 0.7121, 0.9036, 0.9741.
        assert_eq!(threshold(&row, None, Some(0.5)), 3.0, "the first token is always kept");
        assert_eq!(threshold(&row, None, Some(0.6)), 2.0, "ties with the last kept value stay");
        assert_eq!(threshold(&row, None, Some(0.95)), 1.0);
        assert_eq!(threshold(&row, None, Some(0.98)), 0.0);
        assert_eq!(threshold(&row, None, Some(0.9)), 2.0);
        // Top-k 3 leaves [3, 2, 2]: mass before 0, 0.5761, 0.7881; the 1 is gone whatever p.
        assert_eq!(threshold(&row, Some(3), Some(0.55)), 3.0);
        assert_eq!(threshold(&row, Some(3), Some(0.99)), 2.0, "top-p only sees the top-k survivors");
    }

    #[test]
    fn nan_logits_are_never_kept_nor_drawn() {
        // The row of the test above with a NaN inserted at place 1: the same cuts as without it.
        let row = [1.0, f32::NAN, 3.0, 2.0, 2.0, 0.0];
        assert_eq!(threshold(&row, None, Some(0.6)), 2.0);
        assert_eq!(threshold(&row, None, Some(0.98)), 0.0);
        let us: Vec<f32> = (0..50).map(|i| i as f32 / 50.0).collect();
        let logits: Vec<f32> = (0..50).flat_map(|_| row).collect();
        let mut out = vec![0i64; 50];
        sample_rows(&logits, 6, None, None, &us, &mut out);
        assert!(out.iter().all(|&t| t != 1), "{out:?}");
        assert!([0, 2, 3, 4, 5].iter().all(|t| out.contains(t)), "{out:?}");
    }

    /// Top-p by sorting, as the tensor path does it.
    fn sorted_top_p(row: &[f32], p: f64) -> f32 {
        let mut sorted = row.to_vec();
        sorted.sort_unstable_by(|a, b| b.total_cmp(a));
        let max = sorted[0];
        let e: Vec<f64> = sorted.iter().map(|&x| ((x - max) as f64).exp()).collect();
        let total: f64 = e.iter().sum();
        let (mut before, mut count) = (0.0, 0);
        for x in &e {
            if before / total > p {
                break;
            }
            count += 1;
            before += x;
        }
        sorted[count.max(1) - 1]
    }

    #[test]
    fn top_p_by_histogram_keeps_what_sorting_keeps() {
        let mut s = 7u32;
        for case in 0..300 {
            let n = 1 + case % 97;
            // Values on a coarse grid (many ties), sometimes with −∞ entries.
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    if s.is_multiple_of(11) { f32::NEG_INFINITY } else { (s % 9) as f32 * 0.5 - 2.0 }
                })
                .collect();
            if row.iter().all(|x| *x == f32::NEG_INFINITY) {
                continue;
            }
            for p in [0.05, 0.3, 0.5, 0.77, 0.9, 0.999] {
                assert_eq!(threshold(&row, None, Some(p)), sorted_top_p(&row, p), "row {row:?}, p {p}");
            }
        }
    }

    #[test]
    fn histogram_cuts_match_sorting_on_long_rows() {
        let mut s = 99u32;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            s
        };
        for case in 0..40 {
            let n = 3000 + 37 * case;
            // Gaussian-like values, or a coarse grid (ties across the histogram bins), with some −∞ entries.
            let row: Vec<f32> = (0..n)
                .map(|_| {
                    let r = next();
                    if r.is_multiple_of(29) {
                        f32::NEG_INFINITY
                    } else if case % 2 == 0 {
                        (0..4).map(|_| (next() >> 8) as f32 / (1 << 24) as f32).sum::<f32>() * 3.0 - 6.0
                    } else {
                        (r % 23) as f32 * 0.25 - 3.0
                    }
                })
                .collect();
            let mut sorted = row.clone();
            sorted.sort_unstable_by(|a, b| b.total_cmp(a));
            for k in [1, 7, n / 4, n - 1] {
                let kth = sorted[k - 1];
                assert_eq!(threshold(&row, Some(k), None), kth, "case {case}, k {k}");
                let kept: Vec<f32> = row.iter().copied().filter(|&x| x >= kth).collect();
                for p in [0.1, 0.5, 0.9] {
                    let want = kth.max(sorted_top_p(&kept, p));
                    assert_eq!(threshold(&row, Some(k), Some(p)), want, "case {case}, k {k}, p {p}");
                }
            }
        }
    }

    #[test]
    fn draws_invert_the_cdf_of_the_kept_tokens_in_vocabulary_order() {
        let row = [0.0f32, (2.0f32).ln(), f32::NEG_INFINITY, 0.0];
        // Weights 1, 2, 0, 1 → CDF 0.25, 0.75, 0.75, 1.
        let mut out = [0i64; 5];
        let us = [0.0, 0.2, 0.5, 0.8, 0.9999];
        let logits: Vec<f32> = (0..5).flat_map(|_| row).collect();
        sample_rows(&logits, 4, None, None, &us, &mut out);
        assert_eq!(out, [0, 0, 1, 3, 3]);
        // With top-k 1 only token 1 remains.
        sample_rows(&logits, 4, Some(1), None, &us, &mut out);
        assert_eq!(out, [1; 5]);
    }

    #[test]
    fn frequencies_match_the_filtered_softmax() {
        let vocab = 6;
        let row = [0.5f32, 2.0, 1.0, -1.0, 1.5, 0.0];
        let n = 20000;
        let logits: Vec<f32> = (0..n).flat_map(|_| row).collect();
        let us: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
        let mut out = vec![0i64; n];
        sample_rows(&logits, vocab, Some(3), None, &us, &mut out);
        let kept = [1usize, 2, 4];
        let z: f64 = kept.iter().map(|&i| (row[i] as f64).exp()).sum();
        for (i, &logit) in row.iter().enumerate() {
            let freq = out.iter().filter(|&&o| o == i as i64).count() as f64 / n as f64;
            let want = if kept.contains(&i) { (logit as f64).exp() / z } else { 0.0 };
            assert!((freq - want).abs() < 1e-3, "token {i}: {freq} vs {want}");
        }
    }
}
