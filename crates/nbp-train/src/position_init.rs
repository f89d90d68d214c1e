//! A structured start for the learned position embeddings (`--pos-init grid`).
//!
//! The official generator starts its position embeddings at zero, so a model first has to learn from gradients
//! alone where each position lies in the latent grid, before its attention can look at the same place in the
//! previous frame. With `grid`, each position that holds a video token starts as sinusoids of that token's
//! latent coordinates instead: a third of the width for its frame, a third for its row, a third for its column,
//! each pair `(sin ωc, cos ωc)` with frequencies `ω` spread over `(0, π)`. The dot product of two such
//! embeddings is then a function of the coordinate differences alone, largest where they agree, so attention
//! can find "one frame back, same place" from the first step. Condition, BOV and middle-bos positions start at
//! zero as before. Only the initial values change: the model, its checkpoints and sampling are the same.

use std::f32::consts::PI;

use nbp_core::blocks::BlockLayout;
use nbp_core::vocab::Vocabulary;
use nbp_model::training::video_positions;

/// Root mean square of each initialised component: that of GPT-2's N(0, 0.02) token embeddings.
pub const GRID_POSITION_RMS: f32 = 0.02;

/// Position embeddings `[positions, d]` (row-major) for sequences of `vocab`'s layout over `layout`'s grid.
pub fn grid_position_embedding(vocab: &Vocabulary, layout: &BlockLayout, positions: usize, d: usize) -> Vec<f32> {
    let grid = layout.grid;
    // Even widths for the row and column groups; the frame group takes the rest.
    let third = (d / 3) & !1;
    let widths = [d - 2 * third, third, third];
    let amplitude = GRID_POSITION_RMS * std::f32::consts::SQRT_2;
    let mut out = vec![0f32; positions * d];
    for (i, p) in video_positions(vocab, grid.len()).into_iter().enumerate() {
        if p >= positions {
            continue;
        }
        let r = layout.order()[i];
        let coords = [r / (grid.h * grid.w), (r / grid.w) % grid.h, r % grid.w];
        let mut offset = p * d;
        for (&c, &width) in coords.iter().zip(&widths) {
            let pairs = width / 2;
            for k in 0..pairs {
                let angle = PI * (k + 1) as f32 / (pairs + 1) as f32 * c as f32;
                out[offset + 2 * k] = amplitude * angle.sin();
                out[offset + 2 * k + 1] = amplitude * angle.cos();
            }
            offset += width;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nbp_core::blocks::{BlockShape, LatentGrid};
    use nbp_core::vocab::Conditioning;

    fn dot(e: &[f32], d: usize, a: usize, b: usize) -> f32 {
        (0..d).map(|k| e[a * d + k] * e[b * d + k]).sum()
    }

    #[test]
    fn grid_positions_encode_each_video_token_s_coordinates() {
        let grid = LatentGrid::new(3, 4, 4);
        let layout = BlockLayout::new(grid, BlockShape::new(1, 1, 4)).unwrap();
        let v = Vocabulary::new(50, Conditioning::Text { vocab: 5, tokens: 1 }, true, 4).unwrap();
        let d = 48;
        let n_pos = 1 + 4 + grid.len(); // condition, BOV and 3 middle-bos, the 48 video tokens
        let e = grid_position_embedding(&v, &layout, n_pos, d);
        let pos = video_positions(&v, grid.len());
        // Condition (0), BOV (1) and middle-bos (6..9) stay zero.
        for p in [0, 1, 6, 7, 8] {
            assert!(e[p * d..(p + 1) * d].iter().all(|&x| x == 0.0), "position {p}");
        }
        // z_0 is at (0, 0, 0): every sine 0, every cosine the amplitude.
        let a = GRID_POSITION_RMS * std::f32::consts::SQRT_2;
        let z0 = &e[pos[0] * d..(pos[0] + 1) * d];
        assert!(z0.chunks(2).all(|p| p[0] == 0.0 && (p[1] - a).abs() < 1e-7), "{z0:?}");
        // Each video embedding has the intended spread.
        let rms = (dot(&e, d, pos[17], pos[17]) / d as f32).sqrt();
        assert!((rms - GRID_POSITION_RMS).abs() < 1e-6, "{rms}");
        // The same place one frame back is closer than any other token of that frame, and the similarity
        // depends on the offset alone: (1, 2, 3) vs (0, 2, 3) equals (2, 1, 1) vs (1, 1, 1).
        let at = |t: usize, y: usize, x: usize| pos[(t * 4 + y) * 4 + x];
        let q = at(1, 2, 3);
        let same = dot(&e, d, q, at(0, 2, 3));
        for y in 0..4 {
            for x in 0..4 {
                if (y, x) != (2, 3) {
                    assert!(same > dot(&e, d, q, at(0, y, x)) + 1e-6, "({y}, {x})");
                }
            }
        }
        assert!((same - dot(&e, d, at(2, 1, 1), at(1, 1, 1))).abs() < 1e-7);
    }
}
