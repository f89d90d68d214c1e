//! Temperature, top-k and top-p filtering of next-token logits, with tensor operations, for all positions of a
//! block at once (reference §3.5). The sampler draws with the same rule in `nbp-kernels` (`sample_rows`); this
//! is the tensor form of it, for any backend.

use burn::prelude::*;
use burn::tensor::activation::softmax;

/// How logits are turned into a sampling distribution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SamplingFilter {
    /// Divides the logits (1 = unchanged).
    pub temperature: f64,
    /// Keep the `k` largest logits (ties with the `k`-th are kept). `None` keeps all.
    pub top_k: Option<usize>,
    /// Keep the smallest set of most likely tokens whose probability reaches `p` (the first token crossing the
    /// threshold is kept, and so is the most likely token). `None` or `1.0` keeps all. Tokens whose logit equals
    /// the last kept one are kept too: the official code keeps those of them that its (unstable) sort happens to
    /// put first, an order no other implementation can reproduce; exact ties of float logits are rare.
    pub top_p: Option<f64>,
}

impl Default for SamplingFilter {
    /// The official evaluation settings: temperature 1, top-k 16000, top-p 0.9.
    fn default() -> Self {
        Self { temperature: 1.0, top_k: Some(16000), top_p: Some(0.9) }
    }
}

impl SamplingFilter {
    /// Applies temperature, then top-k, then top-p to `logits: [rows, vocab]`; removed entries become `−∞`.
    ///
    /// Like the official code, top-p is applied to the softmax of the top-k-filtered logits. On Burn 0.21's GPU
    /// backends the sort reads the logits back to the host and the cumulative sum is quadratic in the vocabulary,
    /// which is why the sampler filters on the host there.
    pub fn apply<B: Backend>(&self, logits: Tensor<B, 2>) -> Tensor<B, 2> {
        let [_, vocab] = logits.dims();
        let mut logits = if self.temperature != 1.0 { logits.div_scalar(self.temperature) } else { logits };
        let top_k = self.top_k.map(|k| k.clamp(1, vocab)).filter(|&k| k < vocab);
        let top_p = self.top_p.filter(|&p| p < 1.0);
        if top_k.is_none() && top_p.is_none() {
            return logits;
        }
        // One descending sort serves both filters: masking below the k-th value commutes with sorting.
        let mut sorted = logits.clone().sort_descending(1);
        if let Some(k) = top_k {
            let kth = sorted.clone().narrow(1, k - 1, 1); // [rows, 1]
            logits = logits.clone().mask_fill(logits.lower(kth.clone()), f32::NEG_INFINITY);
            sorted = sorted.clone().mask_fill(sorted.lower(kth), f32::NEG_INFINITY);
        }
        if let Some(p) = top_p {
            let probs = softmax(sorted.clone(), 1);
            // Mass strictly before each sorted position; a token is kept while that mass has not exceeded p.
            let before = probs.clone().cumsum(1) - probs;
            let kept = before.lower_equal_elem(p).int().sum_dim(1).clamp_min(1); // [rows, 1], ≥ 1
            let threshold = sorted.gather(1, kept.sub_scalar(1));
            logits = logits.clone().mask_fill(logits.lower(threshold), f32::NEG_INFINITY);
        }
        logits
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    fn kept(filter: SamplingFilter, logits: Vec<f32>, v: usize) -> Vec<bool> {
        let rows = logits.len() / v;
        let t = Tensor::<Flex, 2>::from_data(TensorData::new(logits, [rows, v]), &Default::default());
        filter.apply(t).into_data().into_vec::<f32>().unwrap().iter().map(|x| x.is_finite()).collect()
    }

    #[test]
    fn top_k_keeps_ties_with_the_kth_value() {
        let f = SamplingFilter { temperature: 1.0, top_k: Some(2), top_p: None };
        assert_eq!(kept(f, vec![1.0, 3.0, 2.0, 2.0, 0.0], 5), vec![false, true, true, true, false]);
        let all = SamplingFilter { temperature: 1.0, top_k: Some(10), top_p: None };
        assert_eq!(kept(all, vec![1.0, 3.0], 2), vec![true, true]);
    }

    #[test]
    fn top_p_keeps_the_first_token_above_the_threshold() {
        // Probabilities 0.5, 0.3, 0.2 (as logits of their logs): p = 0.6 keeps the first two (0.5 < 0.6, then 0.8).
        let logits: Vec<f32> = [0.5f32, 0.2, 0.3].iter().map(|p| p.ln()).collect();
        let f = SamplingFilter { temperature: 1.0, top_k: None, top_p: Some(0.6) };
        assert_eq!(kept(f, logits.clone(), 3), vec![true, false, true]);
        // p below the top probability keeps only the most likely token.
        let f = SamplingFilter { temperature: 1.0, top_k: None, top_p: Some(0.1) };
        assert_eq!(kept(f, logits, 3), vec![true, false, false]);
    }
}
