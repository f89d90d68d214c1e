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

    /// Appends `k, v: [batch, heads, new, head_dim]` and returns the keys and values of the first `keys`
    /// positions: all cached tokens, then (when `keys` is larger) unused zero-filled slots that the caller's
    /// mask hides.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>, keys: usize) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let [b, h, n, hs] = k.dims();
        let (start, end) = (self.len, self.len + n);
        assert!(end <= self.capacity(), "KV cache overflow: {end} tokens for a capacity of {}", self.capacity());
        // Written in place: the buffer is taken out of `self` so that it has no other owner. The placeholder
        // is a clone of the new keys, not `Tensor::empty`, because empty tensors upset Burn 0.21's fusion
        // streams on the GPU backends ("Should have handle for tensor", tracel-ai/burn#4347).
        let old = std::mem::replace(&mut self.k, k.clone());
        self.k = old.slice_assign([0..b, 0..h, start..end, 0..hs], k);
        let old = std::mem::replace(&mut self.v, v.clone());
        self.v = old.slice_assign([0..b, 0..h, start..end, 0..hs], v);
        self.len = end;
        assert!(
            end <= keys && keys <= self.capacity(),
            "{keys} keys asked of a cache of {end} tokens in {}",
            self.capacity()
        );
        (self.k.clone().slice([0..b, 0..h, 0..keys, 0..hs]), self.v.clone().slice([0..b, 0..h, 0..keys, 0..hs]))
    }

    /// The cache's shape `[batch, heads, capacity, head_dim]`.
    pub fn dims(&self) -> [usize; 4] {
        self.k.dims()
    }

    /// The whole key and value buffers `[batch, heads, capacity, head_dim]` (rows `len..` unused).
    pub(crate) fn buffers(&self) -> (&Tensor<B, 4>, &Tensor<B, 4>) {
        (&self.k, &self.v)
    }

    /// Appends `k, v: [batch, new, heads·head_dim]` as the key/value layers give them, in place, on the flex
    /// backend; false (nothing appended) where that path does not apply.
    pub(crate) fn append_token_major(&mut self, k: &Tensor<B, 3>, v: &Tensor<B, 3>) -> bool {
        let n = k.dims()[1];
        if self.len + n > self.capacity() || !crate::cpu::write_token_rows(&mut self.k, k, self.len) {
            return false;
        }
        if !crate::cpu::write_token_rows(&mut self.v, v, self.len) {
            // Keys written, values not: undo nothing (rows past `len` are unused) and let the caller fall back.
            return false;
        }
        self.len += n;
        true
    }
}
