//! Top-k / top-p filtering and a categorical draw per row, with the same rules as
//! `nbp_core::filter::SamplingFilter` followed by `softmax` and `Tensor::categorical`.
//!
//! The tensor path sorts each whole row; here the k-th value comes from a linear-time selection and the top-p
//! cut from partitions of the tokens that survive top-k (no sort). Plain Rust: works on every CPU.

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
    let top_k = top_k.map(|k| k.clamp(1, vocab)).filter(|&k| k < vocab);
    let top_p = top_p.filter(|&p| p < 1.0);
    out.par_iter_mut().enumerate().for_each(|(r, o)| {
        let row = &logits[r * vocab..(r + 1) * vocab];
        let cut = threshold(row, top_k, top_p);
        *o = draw(row, cut, uniforms[r]);
    });
}

/// The smallest logit that survives top-k then top-p (`−∞` when neither filters).
///
/// Top-k is a linear-time selection. Top-p needs the probability mass in descending order only up to where it
/// passes `p`, so instead of sorting the survivors it partitions them around pivots by value (as a selection
/// does) and follows the part where the mass crosses `p`: linear time on average.
pub fn threshold(row: &[f32], top_k: Option<usize>, top_p: Option<f64>) -> f32 {
    let desc = |a: &f32, b: &f32| b.total_cmp(a);
    let mut cut = f32::NEG_INFINITY;
    let mut kept: Vec<f32> = row.to_vec();
    if let Some(k) = top_k {
        let (_, kth, _) = kept.select_nth_unstable_by(k - 1, desc);
        cut = *kth;
        kept.retain(|x| *x >= cut);
    }
    if let Some(p) = top_p {
        let max = kept.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return cut;
        }
        let total: f64 = kept.iter().map(|&x| (x - max).exp() as f64).sum();
        cut = cut.max(top_p_cut(&mut kept, max, total, p));
    }
    cut
}

/// The value of the last token that top-p keeps among `values` (all finite or `−∞`, maximum `max`, softmax
/// normaliser `total` of `e^(x − max)`): in descending order a token is kept while the mass before it is at most
/// `p`; tokens tied with the last kept one stay too. Reorders `values`.
fn top_p_cut(values: &mut [f32], max: f32, total: f64, p: f64) -> f32 {
    let mass = |xs: &[f32]| -> f64 { xs.iter().map(|&x| (x - max).exp() as f64).sum() };
    // `before`: the mass of the tokens above the current range, whose first token is always kept.
    let (mut before, mut range) = (0.0f64, values);
    loop {
        let pivot = {
            let (a, b, c) = (range[0], range[range.len() / 2], range[range.len() - 1]);
            a.max(b).min(a.min(b).max(c))
        };
        // [greater | equal | less] around the pivot.
        let mut gt = 0;
        for i in 0..range.len() {
            if range[i] > pivot {
                range.swap(i, gt);
                gt += 1;
            }
        }
        let mut eq = gt;
        for i in gt..range.len() {
            if range[i] == pivot {
                range.swap(i, eq);
                eq += 1;
            }
        }
        let above = before + mass(&range[..gt]);
        if above / total > p {
            // The crossing lies among the greater values (the first of them is kept: `before ≤ p`).
            range = &mut range[..gt];
            continue;
        }
        // Every greater value is kept, and so is the pivot (the mass before its first copy is `above ≤ p`).
        let through = above + mass(&range[gt..eq]);
        if through / total > p || eq == range.len() {
            return pivot;
        }
        before = through;
        range = &mut range[eq..];
    }
}

/// Inverse-CDF draw over the logits not below `cut`, in vocabulary order.
fn draw(row: &[f32], cut: f32, u: f32) -> i64 {
    let max = row.iter().copied().filter(|x| *x >= cut).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return 0;
    }
    let weight = |x: f32| if x >= cut { (x - max).exp() as f64 } else { 0.0 };
    let weights: Vec<f64> = row.iter().map(|&x| weight(x)).collect();
    let total: f64 = weights.iter().sum();
    let target = u as f64 * total;
    let mut cum = 0.0f64;
    for (i, (&w, &x)) in weights.iter().zip(row).enumerate() {
        cum += w;
        if cum >= target && x >= cut {
            return i as i64;
        }
    }
    (row.len() - 1) as i64
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn top_p_by_partitions_keeps_what_sorting_keeps() {
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
