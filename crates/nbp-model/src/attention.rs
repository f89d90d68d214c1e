//! Multi-head self-attention with an explicit boolean mask and an optional KV cache (reference §2.2, §3.1).

use burn::prelude::*;
use burn::tensor::module::attention as fused_attention;
use burn::tensor::ops::AttentionModuleOptions;

use crate::kv_cache::KvCache;
use crate::linear::{Linear, LinearConfig};

/// Configuration of [`SelfAttention`].
#[derive(Config, Debug)]
pub struct SelfAttentionConfig {
    pub n_embd: usize,
    pub n_head: usize,
}

impl SelfAttentionConfig {
    /// Linear layers with GPT-2 initialisation (weights N(0, 0.02), biases 0).
    pub fn init<B: Backend>(&self, device: &B::Device) -> SelfAttention<B> {
        let lin = || LinearConfig::new(self.n_embd, self.n_embd).init(device);
        SelfAttention { key: lin(), query: lin(), value: lin(), proj: lin(), n_head: self.n_head }
    }
}

/// `softmax(q·kᵀ/√d_h + mask)·v` over `n_head` heads, with separate biased key/query/value/proj layers.
/// Channel `h·d_h + j` belongs to head `h`.
#[derive(Module, Debug)]
pub struct SelfAttention<B: Backend> {
    pub key: Linear<B>,
    pub query: Linear<B>,
    pub value: Linear<B>,
    pub proj: Linear<B>,
    n_head: usize,
}

impl<B: Backend> SelfAttention<B> {
    /// The same layer with the weights of its four linear layers stored as `dtype`.
    pub fn with_weight_dtype(self, dtype: burn::tensor::DType) -> Self {
        Self {
            key: self.key.with_weight_dtype(dtype),
            query: self.query.with_weight_dtype(dtype),
            value: self.value.with_weight_dtype(dtype),
            proj: self.proj.with_weight_dtype(dtype),
            n_head: self.n_head,
        }
    }

    /// `x: [batch, new, d]` → `[batch, new, d]`.
    ///
    /// `mask: [1, 1, new, keys]` (`true` = masked out) covers the keys the new tokens see: with a cache, the
    /// cached tokens followed by the new ones (and possibly unused cache slots, masked out); the new keys and
    /// values are appended to the cache.
    pub fn forward(&self, x: Tensor<B, 3>, mask: Tensor<B, 4, Bool>, cache: Option<&mut KvCache<B>>) -> Tensor<B, 3> {
        let new = x.dims()[1];
        self.forward_last(x, mask, cache, new)
    }

    /// Like [`SelfAttention::forward`], but only the last `last` new tokens (`1 ≤ last ≤ new`) query:
    /// `[batch, last, d]`, with `mask: [1, 1, last, keys]` (their rows). Every new token's key and value is
    /// still computed and appended to the cache.
    pub fn forward_last(
        &self,
        x: Tensor<B, 3>,
        mask: Tensor<B, 4, Bool>,
        cache: Option<&mut KvCache<B>>,
        last: usize,
    ) -> Tensor<B, 3> {
        let [b, _, d] = x.dims();
        let hs = d / self.n_head;
        let asking = last_rows(x.clone(), last);
        let (q, k, v) = (self.query.forward(asking), self.key.forward(x.clone()), self.value.forward(x));
        let mut cache = cache;
        if let Some(y) = crate::cpu::self_attention(&q, &k, &v, self.n_head, &mask, cache.as_deref_mut()) {
            return self.proj.forward(y);
        }
        let heads = |t: Tensor<B, 3>| {
            let rows = t.dims()[1];
            t.reshape([b, rows, self.n_head, hs]).swap_dims(1, 2) // [b, h, rows, hs]
        };
        let (q, k, v) = (heads(q), heads(k), heads(v));
        let (k, v) = match cache {
            Some(c) => c.append(k, v, mask.dims()[3]),
            None => (k, v),
        };
        let (queries, keys) = (q.dims()[2], k.dims()[2]);
        let mask = mask.expand([b, self.n_head, queries, keys]);
        let y = fused_attention(q, k, v, Some(mask), None, AttentionModuleOptions::default());
        self.proj.forward(y.swap_dims(1, 2).reshape([b, queries, d]))
    }
}

/// The last `last` positions of `x: [batch, n, d]` (`[batch, last, d]`), or `x` itself when `last ≥ n`.
pub(crate) fn last_rows<B: Backend>(x: Tensor<B, 3>, last: usize) -> Tensor<B, 3> {
    let [b, n, d] = x.dims();
    if last < n { x.slice([0..b, n - last..n, 0..d]) } else { x }
}
