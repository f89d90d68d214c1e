//! Generator vocabulary layouts as the official code builds them (reference §2.4).

use crate::error::{Error, Result};

/// How a generator is conditioned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conditioning {
    /// No condition (K600 frame prediction).
    Unconditional,
    /// `tokens` condition ids from a vocabulary of `vocab` (UCF: 8 LLaMA-2 ids of the class name, vocab 32000).
    Text { vocab: usize, tokens: usize },
    /// One token per class.
    Label { classes: usize },
}

impl Conditioning {
    /// Size of the condition vocabulary.
    pub fn vocab(&self) -> usize {
        match self {
            Self::Unconditional => 0,
            Self::Text { vocab, .. } => *vocab,
            Self::Label { classes } => *classes,
        }
    }

    /// Number of condition tokens per sequence.
    pub fn tokens(&self) -> usize {
        match self {
            Self::Unconditional => 0,
            Self::Text { tokens, .. } => *tokens,
            Self::Label { .. } => 1,
        }
    }
}

/// Token-id layout of a generator: where condition ids, the begin-of-video token (BOV), the middle-bos
/// placeholders of the hybrid start, and the video codes live.
///
/// | layout | ids |
/// |---|---|
/// | unconditional | video code `v` ↦ `v`; `V = codebook` |
/// | conditional with BOV | BOV = 0, condition `c` ↦ `c + 1`, video `v` ↦ `v + C + 1`; `V = codebook + C + 1` |
/// | hybrid (block `L`) | BOV = 0, middle-bos `1 … L−1`, condition `c` ↦ `c + L`, video `v` ↦ `v + C + L`; `V = codebook + C + L` |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vocabulary {
    /// Number of video codes (64 000 for the official tokenizer).
    pub codebook: usize,
    pub conditioning: Conditioning,
    /// Hybrid start with `block − 1` middle-bos placeholders.
    pub hybrid: bool,
    /// Block size (`token_number_per_step`).
    pub block: usize,
}

impl Vocabulary {
    /// A layout; hybrid needs a condition (the official hybrid model always starts from BOV after one).
    pub fn new(codebook: usize, conditioning: Conditioning, hybrid: bool, block: usize) -> Result<Self> {
        if codebook == 0 || block == 0 {
            return Err(Error::invalid("the codebook and the block size must be positive"));
        }
        if hybrid && conditioning == Conditioning::Unconditional {
            return Err(Error::invalid(
                "a hybrid start needs a condition (class, label or text) followed by the begin-of-video token",
            ));
        }
        Ok(Self { codebook, conditioning, hybrid, block })
    }

    /// Number of special ids before the condition ids (0, 1 for BOV, or `block` for BOV + middle-bos).
    pub fn specials(&self) -> usize {
        match (self.conditioning, self.hybrid) {
            (Conditioning::Unconditional, _) => 0,
            (_, true) => self.block,
            (_, false) => 1,
        }
    }

    /// The begin-of-video id, if the layout has one.
    pub fn bov(&self) -> Option<usize> {
        (self.specials() > 0).then_some(0)
    }

    /// Id of the `j`-th middle-bos placeholder (`1 ≤ j < block`), hybrid layouts only.
    pub fn middle_bos(&self, j: usize) -> usize {
        assert!(self.hybrid && (1..self.block).contains(&j), "middle-bos {j} does not exist in this layout");
        j
    }

    /// First id of the condition range.
    pub fn condition_offset(&self) -> usize {
        self.specials()
    }

    /// First id of the video range.
    pub fn video_offset(&self) -> usize {
        self.specials() + self.conditioning.vocab()
    }

    /// Total vocabulary size `V`.
    pub fn size(&self) -> usize {
        self.video_offset() + self.codebook
    }

    /// Generator id of video code `v`.
    pub fn video_id(&self, v: usize) -> usize {
        v + self.video_offset()
    }

    /// Video code of a generated id; ids outside the video range are clamped to the nearest code, as the
    /// official sampler does; the flag is false when that happened.
    pub fn code_of(&self, id: usize) -> (usize, bool) {
        let off = self.video_offset();
        if id < off {
            (0, false)
        } else if id - off >= self.codebook {
            (self.codebook - 1, false)
        } else {
            (id - off, true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn official_layouts() {
        let ucf = Vocabulary::new(64000, Conditioning::Text { vocab: 32000, tokens: 8 }, true, 16).unwrap();
        assert_eq!(ucf.size(), 96016);
        assert_eq!((ucf.bov(), ucf.middle_bos(15), ucf.condition_offset(), ucf.video_id(0)), (Some(0), 15, 16, 32016));
        assert_eq!(ucf.code_of(96015), (63999, true));
        assert_eq!(ucf.code_of(20), (0, false));
        let k600 = Vocabulary::new(64000, Conditioning::Unconditional, false, 16).unwrap();
        assert_eq!((k600.size(), k600.bov(), k600.video_id(5)), (64000, None, 5));
        let label = Vocabulary::new(64000, Conditioning::Label { classes: 101 }, false, 16).unwrap();
        assert_eq!((label.size(), label.condition_offset(), label.video_id(0)), (64102, 1, 102));
        assert!(Vocabulary::new(64000, Conditioning::Unconditional, true, 16).is_err());
    }
}
