//! Preallocated key/value cache of one attention layer, updated in place.

use burn::prelude::*;

/// Keys and values of every token fed so far: `[batch, heads, capacity, head_dim]`, of which the first `len`
/// positions are filled. Appending writes in place (no re-concatenation of the whole cache per step).
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `capacity` tokens (zero-filled: unused slots must never hold NaN).
    pub fn new(batch: usize, heads: usize, capacity: usize, head_dim: usize, device: &B::Device) -> Self {
        Self {
            k: Tensor::zeros([batch, heads, capacity, head_dim], device),
            v: Tensor::zeros([batch, heads, capacity, head_dim], device),
            len: 0,
        }
    }

    /// Number of cached tokens.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in tokens.
    pub fn capacity(&self) -> usize {
        self.k.dims()[2]
    }

    /// Appends `k, v: [batch, heads, new, head_dim]` and returns the keys and values of all cached tokens.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, n, hs] = k.dims();
        let (start, end) = (self.len, self.len + n);
        assert!(end <= self.capacity(), "KV cache overflow: {end} tokens for a capacity of {}", self.capacity());
        self.k.inplace(|t| t.slice_assign([0..b, 0..h, start..end, 0..hs], k));
        self.v.inplace(|t| t.slice_assign([0..b, 0..h, start..end, 0..hs], v));
        self.len = end;
        (self.k.clone().slice([0..b, 0..h, 0..end, 0..hs]), self.v.clone().slice([0..b, 0..h, 0..end, 0..hs]))
    }
}
