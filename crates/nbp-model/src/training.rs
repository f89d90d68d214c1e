//! Training sequences and the loss (reference §2.6, §2.9): N-to-N targets, where token `j` of block `i` predicts
//! token `j` of block `i + 1`.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

use nbp_core::mask::MaskSpec;
use nbp_core::vocab::Vocabulary;
use nbp_core::{Error, Result};

use crate::gpt::Gpt;

/// One assembled training sequence (ids in the generator vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrainingSequence {
    /// Model input, `cut + targets.len()` ids.
    pub input: Vec<i64>,
    /// Target ids; logits row `cut + i` predicts `targets[i]`.
    pub targets: Vec<i64>,
    /// First logits row with a target (= the number of condition tokens).
    pub cut: usize,
}

/// Builds the training sequence of video codes `codes` (block order) and condition ids `condition` (unshifted):
/// - unconditional: input `z[..N−L]`, targets `z[L..]`;
/// - conditional: `[c | BOV×L | z]` without its last block, targets all of `z` (the official code repeats BOV `L`
///   times here and then cuts the logits inconsistently, reference §7.8; this is the consistent form);
/// - hybrid: `[c | BOV | z₀…z_{L−1} | middle-bos₁…₍L−1₎ | z_L…]` without its last `L` ids, targets all of `z`.
pub fn training_sequence(vocab: &Vocabulary, condition: &[i64], codes: &[i64]) -> Result<TrainingSequence> {
    let l = vocab.block;
    let n = codes.len();
    if n <= l || !n.is_multiple_of(l) {
        return Err(Error::invalid(format!(
            "a training sequence needs a whole number (≥ 2) of blocks of {l}, got {n} tokens"
        )));
    }
    if condition.len() != vocab.conditioning.tokens() {
        return Err(Error::invalid(format!(
            "expected {} condition tokens, got {}",
            vocab.conditioning.tokens(),
            condition.len()
        )));
    }
    let z: Vec<i64> = codes.iter().map(|&c| vocab.video_id(c as usize) as i64).collect();
    let c: Vec<i64> = condition.iter().map(|&c| c + vocab.condition_offset() as i64).collect();
    let mut seq = c.clone();
    match vocab.bov() {
        None => {
            return Ok(TrainingSequence { input: z[..n - l].to_vec(), targets: z[l..].to_vec(), cut: 0 });
        }
        Some(bov) if vocab.hybrid => {
            seq.push(bov as i64);
            seq.extend_from_slice(&z[..l]);
            seq.extend((1..l).map(|j| vocab.middle_bos(j) as i64));
            seq.extend_from_slice(&z[l..]);
        }
        Some(bov) => {
            seq.extend(std::iter::repeat_n(bov as i64, l));
            seq.extend_from_slice(&z);
        }
    }
    seq.truncate(seq.len() - l);
    Ok(TrainingSequence { input: seq, targets: z, cut: c.len() })
}

/// Sequence position of each video token `z_i` (block order) of a clip of `n` tokens in the layout of
/// [`training_sequence`], continued by the last block that sampling feeds as well (so every position is below
/// the input length plus one block).
pub fn video_positions(vocab: &Vocabulary, n: usize) -> Vec<usize> {
    let l = vocab.block;
    let cut = vocab.conditioning.tokens();
    (0..n)
        .map(|i| match vocab.bov() {
            None => i,
            // [c | BOV | z_0…z_{L−1} | middle-bos_1…_{L−1} | z_L…]
            Some(_) if vocab.hybrid => cut + 1 + i + if i >= l { l - 1 } else { 0 },
            // [c | BOV×L | z]
            Some(_) => cut + l + i,
        })
        .collect()
}

/// The mask of training sequences of `vocab` with `condition_tokens` condition tokens.
pub fn training_mask(vocab: &Vocabulary) -> MaskSpec {
    MaskSpec::new(vocab.block, vocab.hybrid, vocab.conditioning.tokens())
}

/// Mean cross-entropy of the logits rows `cut..` of `hidden: [batch, S, d]` (after the final LayerNorm) against
/// `targets: [batch, S − cut]`, computing the head `chunk` positions at a time so that a 64K-vocabulary step never
/// holds more than `batch · chunk · V` logits.
pub fn chunked_cross_entropy<B: Backend>(
    model: &Gpt<B>,
    hidden: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    cut: usize,
    chunk: usize,
) -> Tensor<B, 1> {
    chunked_loss(model, hidden, targets, cut, chunk, false).loss
}

/// The loss of a batch and, when asked, how many targets were the model's first choice and among its first
/// five (training metrics; the official trainer logs the same top-1/top-5 accuracies).
#[derive(Debug, Clone)]
pub struct ChunkedLoss<B: Backend> {
    /// Mean cross-entropy, `[1]`.
    pub loss: Tensor<B, 1>,
    /// Targets ranked first (ties counted in the target's favour), `[1]` (zero when not asked).
    pub top1: Tensor<B, 1, Int>,
    /// Targets ranked among the first five, `[1]` (zero when not asked).
    pub top5: Tensor<B, 1, Int>,
    /// Number of targets.
    pub count: usize,
}

/// [`chunked_cross_entropy`] with optional top-1/top-5 counts (a target is in the top `k` when fewer than `k`
/// logits are strictly larger than its own).
pub fn chunked_loss<B: Backend>(
    model: &Gpt<B>,
    hidden: Tensor<B, 3>,
    targets: Tensor<B, 2, Int>,
    cut: usize,
    chunk: usize,
    accuracy: bool,
) -> ChunkedLoss<B> {
    let [b, s, d] = hidden.dims();
    let device = hidden.device();
    let n = s - cut;
    let chunk = chunk.max(1);
    let mut total: Option<Tensor<B, 1>> = None;
    let mut top1 = Tensor::<B, 1, Int>::zeros([1], &device);
    let mut top5 = Tensor::<B, 1, Int>::zeros([1], &device);
    for start in (0..n).step_by(chunk) {
        let len = chunk.min(n - start);
        let h = hidden.clone().slice([0..b, cut + start..cut + start + len, 0..d]);
        let logits = model.head.forward(h).reshape([b * len, model.config().vocab_size]);
        let t = targets.clone().slice([0..b, start..start + len]).reshape([b * len, 1]);
        if accuracy {
            let own = logits.clone().gather(1, t.clone()).expand([b * len, model.config().vocab_size]);
            // Logits not at most the target's: with a NaN anywhere in a row, that row is no hit.
            let above = logits.clone().lower_equal(own).bool_not().int().sum_dim(1).reshape([b * len]);
            top1 = top1 + above.clone().lower_elem(1).int().sum();
            top5 = top5 + above.lower_elem(5).int().sum();
        }
        let nll = -log_softmax(logits, 1).gather(1, t).sum();
        total = Some(match total {
            Some(acc) => acc + nll,
            None => nll,
        });
    }
    let loss = total.expect("at least one target").div_scalar((b * n) as f64);
    ChunkedLoss { loss, top1, top5, count: b * n }
}

/// Hidden states of a batch of training inputs `[batch, S]`; with `drop_condition` the condition tokens are
/// replaced by the null-condition embedding (condition dropout for classifier-free guidance; the mask still
/// comes from the real condition, as in the official code).
pub fn training_hidden<B: Backend>(
    model: &Gpt<B>,
    input: Tensor<B, 2, Int>,
    mask: &MaskSpec,
    drop_condition: bool,
) -> Result<Tensor<B, 3>> {
    let [b, s] = input.dims();
    let device = input.device();
    let p = mask.prefix();
    let x = if drop_condition && p > 0 {
        let null = model.uncond_embedding.val().unsqueeze_dim::<3>(0).repeat_dim(0, b);
        model.embed(input.slice([0..b, p..s]), Some(null), 0)?
    } else {
        model.embed(input, None, 0)?
    };
    Ok(model.hidden(x, mask.tensor::<B>(0..s, s, &device), None))
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbp_core::vocab::Conditioning;

    #[test]
    fn video_positions_point_at_the_video_tokens_of_every_layout() {
        let (n, l) = (24, 4);
        let codes: Vec<i64> = (0..n as i64).collect();
        for (conditioning, hybrid) in [
            (Conditioning::Unconditional, false),
            (Conditioning::Text { vocab: 10, tokens: 2 }, false),
            (Conditioning::Text { vocab: 10, tokens: 2 }, true),
        ] {
            let v = Vocabulary::new(100, conditioning, hybrid, l).unwrap();
            let condition = vec![3; conditioning.tokens()];
            let seq = training_sequence(&v, &condition, &codes).unwrap();
            let pos = video_positions(&v, n);
            for (i, &p) in pos.iter().enumerate() {
                if p < seq.input.len() {
                    assert_eq!(seq.input[p], v.video_id(i) as i64, "{conditioning:?} hybrid {hybrid}: z_{i}");
                }
            }
            // The last block follows the input, one position per token.
            assert_eq!(pos[n - l..], (seq.input.len()..seq.input.len() + l).collect::<Vec<_>>(), "{conditioning:?}");
            // The other positions (condition, BOV, middle-bos) number the condition plus one block.
            let others = if v.bov().is_some() { conditioning.tokens() + l } else { 0 };
            assert_eq!(seq.input.len() + l - n, others, "{conditioning:?} hybrid {hybrid}");
        }
    }
}
