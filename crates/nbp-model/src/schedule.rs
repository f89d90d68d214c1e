//! Block schedules: which tokens are fed and how many are predicted at each sampling step (reference §3.2–3.3).

use nbp_core::mask::MaskSpec;
use nbp_core::vocab::Vocabulary;

/// A token of the fed sequence: known in advance, or the `i`-th generated token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Known(i64),
    Generated(usize),
}

/// One forward call: feed `chunk` (appended to the cache) and sample `predict` tokens from its last rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub chunk: Vec<Slot>,
    pub predict: usize,
}

/// The steps of a generation and the mask they follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub steps: Vec<Step>,
    pub mask: MaskSpec,
    /// Number of generated tokens.
    pub generated: usize,
    /// Length of the whole fed sequence (condition, specials, prefix and generated tokens): the KV-cache capacity.
    pub total_len: usize,
    /// The first id sampling may draw: the ids below it (condition ids and special tokens) are masked out of the
    /// logits. 0 draws from the whole vocabulary, as the official sampler (which then clamps what is not a video
    /// code, reference §7.13).
    pub sampled_from: usize,
}

impl Schedule {
    /// Block-wise generation (NBP; NTP when `block == 1`) of `new_tokens` video ids after `condition` (condition
    /// ids, already in the generator vocabulary) and `prefix` (known video ids, e.g. the first latent frames).
    /// Token `j` of a fed block predicts token `j` of the next block, so the first step feeds everything known and
    /// samples from its last `block` rows. With `bov` (conditional models), `block` BOV copies follow the
    /// condition, before any prefix, as the official non-hybrid layout and training lay it out (`[c | BOV×L | z]`);
    /// without a prefix the first block is predicted from them.
    pub fn blocks(condition: &[i64], bov: Option<i64>, prefix: &[i64], new_tokens: usize, block: usize) -> Self {
        let block = block.max(1);
        let mut known: Vec<Slot> = condition.iter().map(|&c| Slot::Known(c)).collect();
        if let Some(b) = bov {
            known.extend(std::iter::repeat_n(Slot::Known(b), block));
        }
        known.extend(prefix.iter().map(|&p| Slot::Known(p)));
        assert!(known.len() - condition.len() >= block, "block-wise generation needs at least one known block");
        let mut steps = vec![Step { chunk: known.clone(), predict: block.min(new_tokens) }];
        let mut done = block.min(new_tokens);
        while done < new_tokens {
            let n = block.min(new_tokens - done);
            steps.push(Step { chunk: (done - block.min(done)..done).map(Slot::Generated).collect(), predict: n });
            done += n;
        }
        let mask = MaskSpec::new(block, false, condition.len());
        Self { total_len: known.len() + new_tokens, steps, mask, generated: new_tokens, sampled_from: 0 }
    }

    /// The official hybrid start (UCF): `[condition | BOV]`, the first `block` video tokens one by one (NTP), then
    /// the block `[z_{L−1}, middle-bos_1 … middle-bos_{L−1}]`, then one block per step (NBP).
    ///
    /// With a `prefix` (known video ids, whole blocks: frame prediction with a hybrid model), the first step feeds
    /// the sequence exactly as training lays it out, `[condition | BOV | z_0…z_{L−1} | middle-bos | z_L…z_{P−1}]`,
    /// and the rest is NBP.
    pub fn hybrid(condition: &[i64], vocab: &Vocabulary, prefix: &[i64], new_tokens: usize) -> Self {
        let l = vocab.block;
        let bov = vocab.bov().expect("hybrid layouts have a BOV") as i64;
        let middle_bos = || (1..l).map(|j| Slot::Known(vocab.middle_bos(j) as i64));
        let mut steps = vec![];
        let mut chunk: Vec<Slot> = condition.iter().map(|&c| Slot::Known(c)).chain([Slot::Known(bov)]).collect();
        let mut done = 0;
        if prefix.is_empty() {
            let ntp = l.min(new_tokens);
            for i in 0..ntp {
                steps.push(Step { chunk: std::mem::take(&mut chunk), predict: 1 });
                chunk = vec![Slot::Generated(i)];
            }
            done = ntp;
            if done < new_tokens {
                chunk.extend(middle_bos());
            }
        } else {
            assert!(prefix.len() >= l && prefix.len().is_multiple_of(l), "the prefix must be whole blocks");
            chunk.extend(prefix[..l].iter().map(|&p| Slot::Known(p)));
            chunk.extend(middle_bos());
            chunk.extend(prefix[l..].iter().map(|&p| Slot::Known(p)));
        }
        while done < new_tokens {
            let n = l.min(new_tokens - done);
            steps.push(Step { chunk: std::mem::take(&mut chunk), predict: n });
            chunk = (done..done + n).map(Slot::Generated).collect();
            done += n;
        }
        let mask = MaskSpec::new(l, true, condition.len());
        let total_len = condition.len() + 1 + prefix.len() + new_tokens + l.saturating_sub(1);
        Self { steps, mask, generated: new_tokens, total_len, sampled_from: 0 }
    }

    /// Number of forward calls.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    /// True when nothing is generated.
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbp_core::vocab::Conditioning;

    #[test]
    fn k600_frame_prediction_takes_48_steps() {
        let prefix = vec![0i64; 512];
        let s = Schedule::blocks(&[], None, &prefix, 768, 16);
        assert_eq!(s.len(), 48);
        assert_eq!(s.steps[0].chunk.len(), 512);
        assert_eq!(s.steps[1].chunk, (0..16).map(Slot::Generated).collect::<Vec<_>>());
        let ntp = Schedule::blocks(&[], None, &prefix, 768, 1);
        assert_eq!(ntp.len(), 768);
    }

    #[test]
    fn ucf_hybrid_takes_95_steps() {
        let v = Vocabulary::new(64000, Conditioning::Text { vocab: 32000, tokens: 8 }, true, 16).unwrap();
        let s = Schedule::hybrid(&[16; 8], &v, &[], 1280);
        assert_eq!(s.len(), 95);
        assert_eq!(s.steps[0].chunk.len(), 9);
        assert_eq!(s.steps[15].chunk, vec![Slot::Generated(14)]);
        let mut mbos = vec![Slot::Generated(15)];
        mbos.extend((1..16).map(|j| Slot::Known(j as i64)));
        assert_eq!(s.steps[16].chunk, mbos);
        assert_eq!(s.steps[16].predict, 16);
        assert_eq!(s.total_len, 8 + 1 + 1280 + 15);
    }

    #[test]
    fn hybrid_with_a_prefix_feeds_the_training_layout() {
        // Fed ids (generated slots replaced by the true tokens) must be the training input plus the last block,
        // and every step must predict the tokens that training makes those rows predict.
        let v = Vocabulary::new(100, Conditioning::Text { vocab: 10, tokens: 1 }, true, 4).unwrap();
        let codes: Vec<i64> = (0..24).map(|i| (i * 7 % 100) as i64).collect();
        let seq = crate::training::training_sequence(&v, &[3], &codes).unwrap();
        let z: Vec<i64> = codes.iter().map(|&c| v.video_id(c as usize) as i64).collect();
        for p in [4, 8, 12] {
            let s = Schedule::hybrid(&[3 + v.condition_offset() as i64], &v, &z[..p], 24 - p);
            let fed: Vec<i64> = s
                .steps
                .iter()
                .flat_map(|st| {
                    st.chunk.iter().map(|slot| match *slot {
                        Slot::Known(id) => id,
                        Slot::Generated(i) => z[p + i],
                    })
                })
                .collect();
            let mut expected = seq.input.clone();
            expected.extend_from_slice(&z[24 - 4..]);
            assert_eq!(fed[..expected.len() - 4], expected[..expected.len() - 4], "prefix {p}");
            assert_eq!(s.total_len, expected.len(), "prefix {p}");
            // The first step predicts the tokens right after the prefix from its last 4 rows.
            let first = &s.steps[0];
            let rows_end = first.chunk.len();
            let target_of_row = |row: usize| seq.targets[row - seq.cut];
            for j in 0..first.predict {
                assert_eq!(target_of_row(rows_end - first.predict + j), z[p + j], "prefix {p}, token {j}");
            }
            assert_eq!(s.generated, 24 - p);
        }
    }
}
