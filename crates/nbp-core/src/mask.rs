//! The one attention-mask builder of the generator (reference §2.7).
//!
//! Sequences are `[condition (P tokens) | video part]`. With **block-causal** attention a video token sees every
//! visible condition token and every token of its own or an earlier block (blocks of `block` tokens counted from
//! position `P`): bidirectional inside a block, causal across blocks. The **hybrid** variant (official UCF model)
//! is strictly causal up to `P + block` (BOV and the first `block − 1` video tokens, generated token by token) and
//! block-causal from there on. Block size 1 is ordinary causal attention.

use std::ops::Range;

use burn::prelude::*;

/// What the mask of a sequence looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaskSpec {
    /// Block size (`token_number_per_step`).
    pub block: usize,
    /// Hybrid start: causal up to `prefix + block`, then block-causal.
    pub hybrid: bool,
    /// One entry per condition token: whether other tokens may attend to it. The official hybrid model sees all
    /// condition tokens, padding included (its pad detection never fires, reference §7.5).
    pub condition_visible: Vec<bool>,
}

impl MaskSpec {
    /// A mask with `prefix` fully visible condition tokens.
    pub fn new(block: usize, hybrid: bool, prefix: usize) -> Self {
        Self { block: block.max(1), hybrid, condition_visible: vec![true; prefix] }
    }

    /// Number of condition tokens `P`.
    pub fn prefix(&self) -> usize {
        self.condition_visible.len()
    }

    /// True if query position `r` may attend to key position `c`.
    pub fn allows(&self, r: usize, c: usize) -> bool {
        let p = self.prefix();
        if c < p {
            // Condition columns: visible to all rows, or (hidden padding) to nobody but causal hybrid rows.
            return self.condition_visible[c] || (self.hybrid && c <= r);
        }
        if self.hybrid {
            if c <= r {
                return true;
            }
            let start = p + self.block;
            return r >= start && c >= start && (c - start) / self.block == (r - start) / self.block;
        }
        r >= p && (c - p) / self.block <= (r - p) / self.block
    }

    /// One past the last video column that row `r` sees: it sees the video columns `P..limit` (none when
    /// `limit ≤ P`) and no later one ([`MaskSpec::allows`] with the video columns of a row as one range).
    fn video_limit(&self, r: usize) -> usize {
        let p = self.prefix();
        if self.hybrid {
            let start = p + self.block;
            let block_end = if r >= start { start + ((r - start) / self.block + 1) * self.block } else { 0 };
            (r + 1).max(block_end)
        } else if r >= p {
            p + ((r - p) / self.block + 1) * self.block
        } else {
            p
        }
    }

    /// Writes row `r` of the mask over `row.len()` key columns, of which the first `kv_len` are keys:
    /// `row[c] = seen` where `r` may attend to `c`, `!seen` elsewhere (and in the padding). The video columns
    /// are filled as ranges: a sampling step builds the rows of its block over up to 5120 keys each.
    fn fill_row(&self, r: usize, row: &mut [bool], kv_len: usize, seen: bool) {
        let p = self.prefix().min(kv_len);
        for (c, x) in row[..p].iter_mut().enumerate() {
            *x = self.allows(r, c) == seen;
        }
        let limit = self.video_limit(r).clamp(p, kv_len);
        row[p..limit].fill(seen);
        row[limit..].fill(!seen);
    }

    /// Rows `rows` of the mask over keys `0..kv_len`, row-major, `true` = may attend.
    pub fn allowed(&self, rows: Range<usize>, kv_len: usize) -> Vec<bool> {
        let mut out = vec![false; rows.len() * kv_len];
        for (row, r) in out.chunks_mut(kv_len.max(1)).zip(rows) {
            self.fill_row(r, row, kv_len, true);
        }
        out
    }

    /// The mask as Burn's attention expects it: `[1, 1, rows, kv_len]`, `true` = masked out.
    pub fn tensor<B: Backend>(&self, rows: Range<usize>, kv_len: usize, device: &B::Device) -> Tensor<B, 4, Bool> {
        self.padded_tensor(rows, kv_len, kv_len, device)
    }

    /// [`MaskSpec::tensor`] over `keys ≥ kv_len` columns, of which `kv_len..keys` are masked out: `[1, 1, rows,
    /// keys]`. GPU samplers attend over a few fixed key lengths instead of one per step, so that their kernels
    /// are compiled and tuned once per length.
    pub fn padded_tensor<B: Backend>(
        &self,
        rows: Range<usize>,
        kv_len: usize,
        keys: usize,
        device: &B::Device,
    ) -> Tensor<B, 4, Bool> {
        assert!(keys >= kv_len, "{keys} key columns for {kv_len} keys");
        let n = rows.len();
        let mut masked = vec![true; n * keys];
        for (row, r) in masked.chunks_mut(keys.max(1)).zip(rows) {
            self.fill_row(r, row, kv_len, false);
        }
        Tensor::from_data(TensorData::new(masked, [1, 1, n, keys]), device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(spec: &MaskSpec, s: usize) -> Vec<String> {
        (0..s).map(|r| (0..s).map(|c| if spec.allows(r, c) { '1' } else { '0' }).collect()).collect()
    }

    #[test]
    fn hybrid_matches_the_reference_example() {
        // Reference §2.7: P = 1, tps = 2, S = 7: c0 b z0 | z1 m1 | z2 z3.
        let spec = MaskSpec::new(2, true, 1);
        assert_eq!(render(&spec, 7), ["1000000", "1100000", "1110000", "1111100", "1111100", "1111111", "1111111"]);
    }

    #[test]
    fn rows_built_by_ranges_match_the_rule_everywhere() {
        let mut specs = vec![];
        for block in [1, 2, 3, 4, 16] {
            for hybrid in [false, true] {
                for prefix in [0, 1, 3] {
                    specs.push(MaskSpec::new(block, hybrid, prefix));
                }
            }
        }
        // Hidden condition padding (the official treatment of padded condition tokens).
        specs.push(MaskSpec { block: 2, hybrid: false, condition_visible: vec![true, false, true] });
        specs.push(MaskSpec { block: 3, hybrid: true, condition_visible: vec![false, true, false, false] });
        for spec in &specs {
            for (s, kv_len) in [(20, 20), (9, 25), (30, 7)] {
                let rule: Vec<bool> =
                    (0..s).flat_map(|r| (0..kv_len).map(move |c| (r, c))).map(|(r, c)| spec.allows(r, c)).collect();
                assert_eq!(spec.allowed(0..s, kv_len), rule, "{spec:?}, {s} rows over {kv_len} keys");
                let rows = s / 3..s;
                let keys = kv_len + 5;
                let t = spec.padded_tensor::<burn::backend::Flex>(rows.clone(), kv_len, keys, &Default::default());
                let masked = t.into_data().into_vec::<bool>().unwrap();
                let expected: Vec<bool> = rows
                    .flat_map(|r| (0..keys).map(move |c| (r, c)))
                    .map(|(r, c)| c >= kv_len || !spec.allows(r, c))
                    .collect();
                assert_eq!(masked, expected, "{spec:?}, padded");
            }
        }
    }

    #[test]
    fn padded_columns_are_masked_out() {
        let spec = MaskSpec::new(2, false, 0);
        let t = spec.padded_tensor::<burn::backend::Flex>(2..4, 4, 6, &Default::default());
        assert_eq!(t.dims(), [1, 1, 2, 6]);
        // Rows 2 and 3 (block 1) see keys 0..4; columns 4 and 5 are padding.
        let masked = t.into_data().into_vec::<bool>().unwrap();
        assert_eq!(masked, [false, false, false, false, true, true, false, false, false, false, true, true]);
    }

    #[test]
    fn block_causal_and_ntp() {
        let spec = MaskSpec::new(2, false, 1);
        assert_eq!(render(&spec, 5), ["10000", "11100", "11100", "11111", "11111"]);
        let ntp = MaskSpec::new(1, false, 0);
        assert_eq!(render(&ntp, 3), ["100", "110", "111"]);
    }

    #[test]
    fn official_spot_checks() {
        // UCF hybrid, S = 1288, P = 8, tps = 16: row 23 sees 0..=23, row 24 sees 0..=39, row 40 sees 0..=55.
        let ucf = MaskSpec::new(16, true, 8);
        let last_seen = |spec: &MaskSpec, r: usize, s: usize| {
            let row = spec.allowed(r..r + 1, s);
            assert!(row.iter().take_while(|a| **a).count() == row.iter().filter(|a| **a).count(), "row {r} has holes");
            row.iter().filter(|a| **a).count() - 1
        };
        assert_eq!(last_seen(&ucf, 23, 1288), 23);
        assert_eq!(last_seen(&ucf, 24, 1288), 39);
        assert_eq!(last_seen(&ucf, 40, 1288), 55);
        assert_eq!(last_seen(&ucf, 1287, 1288), 1287);
        // K600, S = 1264, P = 0: row 0 sees 0..=15.
        let k600 = MaskSpec::new(16, false, 0);
        assert_eq!(last_seen(&k600, 0, 1264), 15);
        assert_eq!(last_seen(&k600, 1263, 1264), 1263);
    }

    #[test]
    fn hidden_condition_tokens_are_not_attended() {
        let mut spec = MaskSpec::new(2, false, 2);
        spec.condition_visible[1] = false;
        assert_eq!(render(&spec, 4), ["1000", "1000", "1011", "1011"]);
    }
}
