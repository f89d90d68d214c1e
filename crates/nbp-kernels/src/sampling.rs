//! Top-k / top-p filtering and a categorical draw per row, with the same rules as
//! `nbp_core::filter::SamplingFilter` followed by `softmax` and `Tensor::categorical`.
//!
//! The tensor path sorts each whole row; here the k-th value comes from a linear-time selection and only the
//! tokens that survive top-k are sorted for top-p. Plain Rust: works on every CPU.

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
        kept.sort_unstable_by(desc);
        let max = kept[0];
        if max == f32::NEG_INFINITY {
            return cut;
        }
        let exps: Vec<f32> = kept.iter().map(|x| (x - max).exp()).collect();
        let total: f32 = exps.iter().sum();
        // Mass strictly before each sorted position; a token is kept while that mass has not exceeded p.
        let mut before = 0.0f32;
        let mut count = 0;
        for e in &exps {
            if before / total > p as f32 {
                break;
            }
            count += 1;
            before += e;
        }
        cut = cut.max(kept[count.max(1) - 1]);
    }
    cut
}

/// Inverse-CDF draw over the logits not below `cut`, in vocabulary order.
fn draw(row: &[f32], cut: f32, u: f32) -> i64 {
    let max = row.iter().copied().filter(|x| *x >= cut).fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return 0;
    }
    let weight = |x: f32| if x >= cut { ((x - max) as f64).exp() } else { 0.0 };
    let total: f64 = row.iter().map(|&x| weight(x)).sum();
    let target = u as f64 * total;
    let mut cum = 0.0f64;
    for (i, &x) in row.iter().enumerate() {
        cum += weight(x);
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
