//! The block-causal GPT generator (reference §2.2): token and learned position embeddings, pre-LN blocks,
//! final LayerNorm and an untied, bias-free head.

use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig};
use burn::prelude::*;

use nbp_core::{Error, Result};

use crate::block::{Block, BlockConfig};
use crate::config::GptConfig;
use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearConfig};
use crate::precision::Precision;

/// Decoder-only transformer that predicts a whole block of tokens per step: which tokens see which is decided
/// entirely by the attention mask (`nbp_core::mask`).
#[derive(Module, Debug)]
pub struct Gpt<B: Backend> {
    pub tok_emb: Embedding<B>,
    /// Learned absolute positions `[1, block_size, d]`.
    pub pos_emb: Param<Tensor<B, 3>>,
    /// Null-condition embedding `[cond_tokens, d]`, prepended instead of the condition for classifier-free
    /// guidance.
    pub uncond_embedding: Param<Tensor<B, 2>>,
    pub drop: Dropout,
    pub blocks: Vec<Block<B>>,
    pub ln_f: LayerNorm<B>,
    pub head: Linear<B>,
    #[module(skip)]
    config: GptConfig,
}

impl<B: Backend> Gpt<B> {
    /// A model with GPT-2 initialisation (linear and embedding weights N(0, 0.02), positions 0, null condition
    /// N(0, 1)/√d).
    pub fn new(config: &GptConfig, device: &B::Device) -> Result<Self> {
        config.validate()?;
        let d = config.n_embd;
        let normal = burn::nn::Initializer::Normal { mean: 0.0, std: 0.02 };
        Ok(Self {
            tok_emb: EmbeddingConfig::new(config.vocab_size, d).with_initializer(normal).init(device),
            pos_emb: Param::from_tensor(Tensor::zeros([1, config.block_size, d], device)),
            // Drawn with its final spread, not scaled afterwards: a model without condition tokens has a [0, d]
            // embedding, and an element-wise operation on an empty tensor panics in the GPU backends' debug builds.
            uncond_embedding: Param::from_tensor(Tensor::random(
                [config.cond_tokens, d],
                burn::tensor::Distribution::Normal(0.0, 1.0 / (d as f64).sqrt()),
                device,
            )),
            drop: DropoutConfig::new(config.dropout).init(),
            blocks: (0..config.n_layer)
                .map(|_| BlockConfig::new(d, config.n_head).with_dropout(config.dropout).init(device))
                .collect(),
            ln_f: LayerNormConfig::new(d).init(device),
            head: LinearConfig::new(d, config.vocab_size).with_bias(false).init(device),
            config: config.clone(),
        })
    }

    /// The same model with the weights of all its linear layers stored in `precision` (see [`Precision`]; for
    /// sampling, not for training).
    pub fn with_precision(self, precision: Precision) -> Self {
        let dtype = precision.dtype();
        Self {
            blocks: self.blocks.into_iter().map(|b| b.with_weight_dtype(dtype)).collect(),
            head: self.head.with_weight_dtype(dtype),
            ..self
        }
    }

    /// The number format of the linear weights.
    pub fn precision(&self) -> Precision {
        if self.head.weight.val().dtype() == burn::tensor::DType::BF16 { Precision::Bf16 } else { Precision::F32 }
    }

    /// The architecture.
    pub fn config(&self) -> &GptConfig {
        &self.config
    }

    /// Embeddings of `ids: [batch, new]` at positions `start..start + new`, optionally after `prefix`
    /// embeddings `[batch, p, d]` (the null condition of CFG), which then occupy the first positions.
    pub fn embed(&self, ids: Tensor<B, 2, Int>, prefix: Option<Tensor<B, 3>>, start: usize) -> Result<Tensor<B, 3>> {
        let tok = self.tok_emb.forward(ids);
        let x = match prefix {
            Some(p) => Tensor::cat(vec![p, tok], 1),
            None => tok,
        };
        let [_, n, d] = x.dims();
        if start + n > self.config.block_size {
            return Err(Error::invalid(format!(
                "sequence of {} tokens exceeds the model's {} positions",
                start + n,
                self.config.block_size
            )));
        }
        let pos = self.pos_emb.val().slice([0..1, start..start + n, 0..d]);
        Ok(self.drop.forward(x + pos))
    }

    /// Runs the blocks on embeddings `x: [batch, new, d]` and returns logits `[batch, new, V]`.
    ///
    /// `mask: [1, 1, new, keys]` (`true` = masked out); with `caches` (one per layer) the new keys/values are
    /// appended and the mask covers cached + new tokens.
    pub fn forward_embeddings(
        &self,
        x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        caches: Option<&mut [KvCache<B>]>,
    ) -> Tensor<B, 3> {
        self.head.forward(self.hidden(x, mask, caches))
    }

    /// Like [`Gpt::forward_embeddings`], but only for the last `last` positions: logits `[batch, last, V]` (a
    /// sampling step needs only the rows it predicts from).
    pub fn forward_last(
        &self,
        x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        caches: Option<&mut [KvCache<B>]>,
        last: usize,
    ) -> Tensor<B, 3> {
        let h = self.blocks_last(x, mask, caches, last);
        self.head.forward(self.ln_f.forward(crate::attention::last_rows(h, last)))
    }

    /// The blocks and the final LayerNorm: hidden states `[batch, new, d]` before the head.
    pub fn hidden(&self, x: Tensor<B, 3>, mask: Tensor<B, 4, Bool>, caches: Option<&mut [KvCache<B>]>) -> Tensor<B, 3> {
        let new = x.dims()[1];
        self.ln_f.forward(self.blocks_last(x, mask, caches, new))
    }

    /// The blocks, the last of them only for the last `last` positions when `0 < last < new` (`[batch, last, d]`;
    /// otherwise `[batch, new, d]`): after it nothing needs the other positions, whose keys and values it still
    /// computes for the cache. A 512-token prefill of `official-base` thus skips about 23 of its 696 GFLOP.
    fn blocks_last(
        &self,
        mut x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        mut caches: Option<&mut [KvCache<B>]>,
        last: usize,
    ) -> Tensor<B, 3> {
        let n = x.dims()[1];
        let layers = self.blocks.len();
        for (i, block) in self.blocks.iter().enumerate() {
            let cache = caches.as_deref_mut().map(|c| &mut c[i]);
            x = if i + 1 == layers && 0 < last && last < n {
                let [one, heads, _, keys] = mask.dims();
                block.forward_last(x, mask.clone().slice([0..one, 0..heads, n - last..n, 0..keys]), cache, last)
            } else {
                block.forward(x, mask.clone(), cache)
            };
        }
        x
    }

    /// Logits `[batch, S, V]` of a whole sequence `ids: [batch, S]` under `mask: [1, 1, S, S]`.
    pub fn forward(&self, ids: Tensor<B, 2, Int>, mask: Tensor<B, 4, Bool>) -> Result<Tensor<B, 3>> {
        let x = self.embed(ids, None, 0)?;
        Ok(self.forward_embeddings(x, mask, None))
    }

    /// Empty KV caches (one per layer) for `capacity` tokens.
    pub fn new_caches(&self, batch: usize, capacity: usize, device: &B::Device) -> Vec<KvCache<B>> {
        let hs = self.config.n_embd / self.config.n_head;
        (0..self.config.n_layer).map(|_| KvCache::new(batch, self.config.n_head, capacity, hs, device)).collect()
    }
}
