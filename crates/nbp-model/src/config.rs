//! Generator configuration and presets.

use burn::prelude::*;

use nbp_core::{Error, Result};

/// Architecture of the block-causal GPT (the official minGPT/GPT-2 layout, reference §2.2).
#[derive(Config, Debug, PartialEq)]
pub struct GptConfig {
    /// Vocabulary size `V` (see `nbp_core::vocab::Vocabulary`).
    pub vocab_size: usize,
    /// Length of the learned position table (5120 in the official models).
    #[config(default = 5120)]
    pub block_size: usize,
    /// Number of transformer blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Model width `d`.
    pub n_embd: usize,
    /// Rows of the null-condition embedding used for classifier-free guidance (0 without a condition).
    #[config(default = 0)]
    pub cond_tokens: usize,
    /// Dropout on embeddings and residual branches during training.
    #[config(default = 0.1)]
    pub dropout: f64,
}

/// Names of the presets accepted by [`GptConfig::preset`].
pub const PRESETS: [&str; 5] = ["official-base", "official-xl", "official-3b", "small", "tiny"];

impl GptConfig {
    /// A preset by name with the given vocabulary and condition length.
    pub fn preset(name: &str, vocab_size: usize, cond_tokens: usize) -> Result<Self> {
        let (n_layer, n_head, n_embd) = match name {
            "official-base" => (24, 16, 1536),
            "official-xl" => (24, 32, 2048),
            "official-3b" => (32, 32, 3072),
            "small" => (6, 8, 256),
            "tiny" => (2, 2, 32),
            other => {
                return Err(Error::invalid(format!(
                    "unknown generator preset '{other}' (known: {})",
                    PRESETS.join(", ")
                )));
            }
        };
        Ok(Self::new(vocab_size, n_layer, n_head, n_embd).with_cond_tokens(cond_tokens))
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("block_size (positions)", self.block_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(format!("generator config: {name} must be at least 1")));
            }
        }
        // Embeddings, head and 12·d² weights per layer, in f32.
        let d = self.n_embd;
        let params = nbp_core::system::product(&[self.vocab_size, d, 2])
            .zip(nbp_core::system::product(&[self.block_size, d]))
            .zip(nbp_core::system::product(&[self.n_layer, 12, d, d]))
            .and_then(|((a, b), c)| a.checked_add(b)?.checked_add(c));
        nbp_core::system::check_memory(
            &format!(
                "a generator of {} layers {d} wide with {} ids and {} positions",
                self.n_layer, self.vocab_size, self.block_size
            ),
            params.and_then(|p| p.checked_mul(4)),
            "use a smaller preset or vocabulary",
        )?;
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::invalid(format!(
                "generator width {} is not divisible by {} heads",
                self.n_embd, self.n_head
            )));
        }
        Ok(())
    }
}
