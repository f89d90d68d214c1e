//! One pre-LN transformer block (reference §2.2).

use burn::nn::{Dropout, DropoutConfig, Gelu, LayerNorm, LayerNormConfig};
use burn::prelude::*;

use crate::attention::{SelfAttention, SelfAttentionConfig};
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearConfig};

/// Configuration of a [`Block`].
#[derive(Config, Debug)]
pub struct BlockConfig {
    pub n_embd: usize,
    pub n_head: usize,
    #[config(default = 0.1)]
    pub dropout: f64,
}

impl BlockConfig {
    /// A block with GPT-2 initialisation.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Block<B> {
        let d = self.n_embd;
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Block {
            ln1: LayerNormConfig::new(d).init(device),
            attn: SelfAttentionConfig::new(d, self.n_head).init(device),
            ln2: LayerNormConfig::new(d).init(device),
            fc: lin(d, 4 * d),
            gelu: Gelu::new(),
            fc_out: lin(4 * d, d),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

/// `x + drop(attn(ln1(x)))`, then `x + drop(fc_out(gelu(fc(ln2(x)))))` with the exact (erf) GELU.
/// Official keys: `ln1`, `attn.{key,query,value,proj}`, `ln2`, `mlp.0` (= `fc`), `mlp.2` (= `fc_out`).
#[derive(Module, Debug)]
pub struct Block<B: Backend> {
    pub ln1: LayerNorm<B>,
    pub attn: SelfAttention<B>,
    pub ln2: LayerNorm<B>,
    pub fc: Linear<B>,
    pub gelu: Gelu,
    pub fc_out: Linear<B>,
    pub dropout: Dropout,
}

impl<B: Backend> Block<B> {
    /// The same block with the weights of its linear layers stored as `dtype`.
    pub fn with_weight_dtype(self, dtype: burn::tensor::DType) -> Self {
        Self {
            attn: self.attn.with_weight_dtype(dtype),
            fc: self.fc.with_weight_dtype(dtype),
            fc_out: self.fc_out.with_weight_dtype(dtype),
            ..self
        }
    }

    /// `x: [batch, new, d]` → same; see [`SelfAttention::forward`] for `mask` and `cache`.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 4, Bool>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let new = x.dims()[1];
        self.forward_last(x, mask, cache, new)
    }

    /// Like [`Block::forward`], but only for the last `last` of the new tokens: `[batch, last, d]`. All new tokens
    /// still give their keys and values (to the cache); `mask: [1, 1, last, keys]` has the rows of the last ones.
    /// The last block of a prefill needs no more rows than the step predicts from.
    pub fn forward_last(
        &self,
        x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<&mut KvCache<B>>,
        last: usize,
    ) -> Tensor<B, 3> {
        let a = self.attn.forward_last(self.ln1.forward(x.clone()), mask, cache, last);
        let x = crate::attention::last_rows(x, last);
        let x = x + self.dropout.forward(a);
        let h = self.fc.forward(self.ln2.forward(x.clone()));
        let h = crate::cpu::gelu(h).unwrap_or_else(|h| self.gelu.forward(h));
        let h = self.fc_out.forward(h);
        x + self.dropout.forward(h)
    }
}
