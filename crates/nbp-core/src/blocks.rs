//! Latent grids, block shapes and the token order that keeps every block contiguous.

use crate::error::{Error, Result};

/// A `T × H × W` grid of latent tokens (the tokenizer's output for one clip; 5×16×16 for 17×128×128 pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatentGrid {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl LatentGrid {
    /// A grid; every side must be at least 1.
    pub fn new(t: usize, h: usize, w: usize) -> Self {
        Self { t, h, w }
    }

    /// Parses `TxHxW` (e.g. `5x16x16`); every side must be at least 1.
    pub fn parse(s: &str) -> Result<Self> {
        let [t, h, w] = parse_sides(s, "latent grid", "5x16x16")?;
        Ok(Self::new(t, h, w))
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.t * self.h * self.w
    }

    /// True for an empty grid.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The shape `t × h × w` of one block. `1 × 1 × W` (a latent row) is the paper's default, `1 × 1 × 1` is plain
/// next-token prediction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockShape {
    pub t: usize,
    pub h: usize,
    pub w: usize,
}

impl BlockShape {
    /// A block shape.
    pub fn new(t: usize, h: usize, w: usize) -> Self {
        Self { t, h, w }
    }

    /// Tokens per block.
    pub fn size(&self) -> usize {
        self.t * self.h * self.w
    }

    /// Parses `TxHxW` (e.g. `1x1x16`, `2x2x2`).
    pub fn parse(s: &str) -> Result<Self> {
        let [t, h, w] = parse_sides(s, "block shape", "1x1x16")?;
        Ok(Self::new(t, h, w))
    }
}

/// The three positive sides of `TxHxW`, or an error naming `what` and an example.
fn parse_sides(s: &str, what: &str, example: &str) -> Result<[usize; 3]> {
    let bad = || Error::invalid(format!("{what} '{s}' must be written TxHxW with positive integers, e.g. {example}"));
    let parts: Vec<usize> =
        s.split(['x', 'X']).map(|p| p.trim().parse::<usize>()).collect::<Result<_, _>>().map_err(|_| bad())?;
    match parts.as_slice() {
        // At most 2^32 tokens in all, so that every product of sides stays far from overflowing.
        [t, h, w] if *t > 0 && *h > 0 && *w > 0 && (*t as u128) * (*h as u128) * (*w as u128) <= 1 << 32 => {
            Ok([*t, *h, *w])
        }
        [t, h, w] if *t > 0 && *h > 0 && *w > 0 => {
            Err(Error::invalid(format!("{what} '{s}' has more than 2^32 tokens: no model has that many positions")))
        }
        _ => Err(bad()),
    }
}

impl std::fmt::Display for BlockShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.t, self.h, self.w)
    }
}

/// A latent grid tiled by blocks, with the permutation between raster order (`t`, then `h`, then `w`, as the
/// tokenizer flattens its output) and block order (blocks in raster order of the block grid, tokens of a block
/// in raster order inside it). Row blocks `1 × 1 × W` need no reordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    pub grid: LatentGrid,
    pub block: BlockShape,
    /// `order[i]` = raster index of the `i`-th token in block order.
    order: Vec<usize>,
}

impl BlockLayout {
    /// Tiles `grid` with `block`; an error if the block does not divide the grid.
    pub fn new(grid: LatentGrid, block: BlockShape) -> Result<Self> {
        if block.size() == 0
            || !grid.t.is_multiple_of(block.t)
            || !grid.h.is_multiple_of(block.h)
            || !grid.w.is_multiple_of(block.w)
        {
            return Err(Error::invalid(format!(
                "block shape {block} does not tile the latent grid {}x{}x{}: each block side must divide the grid side",
                grid.t, grid.h, grid.w
            )));
        }
        let (nt, nh, nw) = (grid.t / block.t, grid.h / block.h, grid.w / block.w);
        let mut order = Vec::with_capacity(grid.len());
        for bt in 0..nt {
            for bh in 0..nh {
                for bw in 0..nw {
                    for it in 0..block.t {
                        for ih in 0..block.h {
                            for iw in 0..block.w {
                                let (t, h, w) = (bt * block.t + it, bh * block.h + ih, bw * block.w + iw);
                                order.push((t * grid.h + h) * grid.w + w);
                            }
                        }
                    }
                }
            }
        }
        Ok(Self { grid, block, order })
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block.size()
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> usize {
        self.grid.len() / self.block.size()
    }

    /// True when block order equals raster order (e.g. row blocks).
    pub fn is_identity(&self) -> bool {
        self.order.iter().enumerate().all(|(i, &r)| i == r)
    }

    /// Raster index of each position in block order.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    /// Reorders raster-ordered tokens into block order.
    pub fn to_blocks<T: Copy>(&self, raster: &[T]) -> Vec<T> {
        assert_eq!(raster.len(), self.grid.len(), "token count does not match the latent grid");
        self.order.iter().map(|&r| raster[r]).collect()
    }

    /// Reorders block-ordered tokens back into raster order.
    pub fn to_raster<T: Copy + Default>(&self, blocks: &[T]) -> Vec<T> {
        assert_eq!(blocks.len(), self.grid.len(), "token count does not match the latent grid");
        let mut out = vec![T::default(); blocks.len()];
        for (i, &r) in self.order.iter().enumerate() {
            out[r] = blocks[i];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_and_blocks_too_large_for_any_model_are_refused() {
        assert_eq!(LatentGrid::parse("5x16x16").unwrap().len(), 1280);
        for s in ["18446744073709551615x8x8", "65536x65536x2"] {
            let e = LatentGrid::parse(s).unwrap_err().to_string();
            assert!(e.contains("more than 2^32 tokens"), "{e}");
        }
        assert!(BlockShape::parse("4294967296x4294967296x8").is_err());
        assert!(LatentGrid::parse("0x16x16").unwrap_err().to_string().contains("positive integers"));
    }

    #[test]
    fn row_blocks_need_no_permutation() {
        let l = BlockLayout::new(LatentGrid::new(5, 16, 16), BlockShape::new(1, 1, 16)).unwrap();
        assert!(l.is_identity());
        assert_eq!((l.block_size(), l.num_blocks()), (16, 80));
    }

    #[test]
    fn other_block_shapes_permute_and_round_trip() {
        let grid = LatentGrid::new(2, 4, 4);
        let raster: Vec<usize> = (0..32).collect();
        // 1x2x2 blocks: first block = (0,0,0),(0,0,1),(0,1,0),(0,1,1) = raster 0, 1, 4, 5.
        let l = BlockLayout::new(grid, BlockShape::new(1, 2, 2)).unwrap();
        let b = l.to_blocks(&raster);
        assert_eq!(&b[..8], &[0, 1, 4, 5, 2, 3, 6, 7]);
        assert_eq!(l.to_raster(&b), raster);
        // 2x2x2 blocks span both frames: raster 0,1,4,5 then 16,17,20,21.
        let l = BlockLayout::new(grid, BlockShape::new(2, 2, 2)).unwrap();
        assert_eq!(&l.to_blocks(&raster)[..8], &[0, 1, 4, 5, 16, 17, 20, 21]);
        for shape in ["1x4x4", "2x1x4", "2x2x2", "1x1x1", "2x4x4"] {
            let l = BlockLayout::new(grid, BlockShape::parse(shape).unwrap()).unwrap();
            assert_eq!(l.to_raster(&l.to_blocks(&raster)), raster, "{shape}");
        }
    }

    #[test]
    fn shapes_that_do_not_tile_are_errors() {
        let err = BlockLayout::new(LatentGrid::new(5, 16, 16), BlockShape::new(2, 2, 2)).unwrap_err();
        assert!(err.to_string().contains("does not tile the latent grid 5x16x16"), "{err}");
        assert!(BlockShape::parse("1x0x4").is_err());
        assert!(BlockShape::parse("4x4").is_err());
        assert_eq!(BlockShape::parse("2x1x8").unwrap(), BlockShape::new(2, 1, 8));
    }
}
