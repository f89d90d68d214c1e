//! Fast paths for the pure-Rust `flex` backend: the `nbp-kernels` CPU kernels run on the tensors' own memory.
//!
//! Each function returns `None` when it does not apply (another backend, including `Autodiff<Flex>` during
//! training; a CPU without AVX-512; a dtype other than f32; an unexpected layout), and the caller then takes the
//! generic tensor path. Both paths compute the same function; the kernels only change the order of the
//! floating-point sums.

use burn::prelude::*;
use burn::tensor::{DType, Distribution, bf16};
use nbp_core::filter::SamplingFilter;
use nbp_core::flex::{contiguous, flex_any, flex_bool, flex_f32 as flex, from_flex, is_flex};
use nbp_kernels::{AttentionShape, Strides};

use crate::kv_cache::KvCache;

/// True when `B` is the flex backend and this CPU can run the kernels.
pub(crate) fn enabled<B: Backend>() -> bool {
    is_flex::<B>() && nbp_kernels::available()
}

/// One token per row of `logits: [rows, V]` (temperature already applied), drawn after top-k/top-p filtering
/// with the uniform numbers of `B`'s seeded generator: `[rows, 1]`.
///
/// On flex this runs on the tensor's own memory. On the GPU backends the block's logits are read back once and
/// filtered here: Burn 0.21 has no GPU sort (its fallback reads the logits to the host anyway) and its GPU
/// cumulative sum is quadratic in the row length, so the tensor path would cost a read-back, a host sort and
/// ~V²/2 additions per row each step, where this costs one read of `rows × V` floats.
pub(crate) fn sample<B: Backend>(logits: &Tensor<B, 2>, filter: &SamplingFilter) -> Option<Tensor<B, 2, Int>> {
    let [rows, vocab] = logits.dims();
    let device = logits.device();
    let uniforms = Tensor::<B, 2>::random([rows, 1], Distribution::Uniform(0.0, 1.0), &device);
    let mut out = vec![0i64; rows];
    if is_flex::<B>() {
        let uniforms = uniforms.into_data().convert::<f32>().into_vec::<f32>().ok()?;
        let lf = contiguous(flex(logits.clone())?);
        nbp_kernels::sample_rows(lf.as_slice::<f32>()?, vocab, filter.top_k, filter.top_p, &uniforms, &mut out);
    } else {
        // One read per step: each row's uniform number travels as an extra column after its logits.
        let both = Tensor::cat(vec![logits.clone(), uniforms], 1).into_data().convert::<f32>();
        let both = both.into_vec::<f32>().ok()?;
        let host: Vec<f32> = both.chunks_exact(vocab + 1).flat_map(|r| r[..vocab].iter().copied()).collect();
        let uniforms: Vec<f32> = both.chunks_exact(vocab + 1).map(|r| r[vocab]).collect();
        nbp_kernels::sample_rows(&host, vocab, filter.top_k, filter.top_p, &uniforms, &mut out);
    }
    Some(Tensor::from_data(TensorData::new(out, [rows, 1]), &device))
}

/// `x·Wᵀ + b` for `x: [.., in]`, `w: [out, in]` (f32, or bfloat16 on the bfloat16 kernels),
/// `b: [out]`.
pub(crate) fn linear<B: Backend, const D: usize>(
    x: &Tensor<B, D>,
    w: &Tensor<B, 2>,
    b: Option<&Tensor<B, 1>>,
) -> Option<Tensor<B, D>> {
    if !enabled::<B>() {
        return None;
    }
    let dims = x.dims();
    let [n, k] = w.dims();
    let m: usize = dims[..D - 1].iter().product();
    let (xf, wf) = (contiguous(flex(x.clone())?), contiguous(flex_any(w.clone())?));
    let bf = match b {
        Some(b) => Some(flex(b.clone())?),
        None => None,
    };
    let xs = xf.as_slice::<f32>()?;
    let bs = match &bf {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    let out = match wf.dtype() {
        DType::F32 => nbp_kernels::linear_to_vec(xs, wf.as_slice::<f32>()?, bs, m, k, n)?,
        DType::BF16 => {
            let ws = wf.as_slice::<bf16>()?;
            // SAFETY: `bf16` is a transparent wrapper around its `u16` bits.
            let ws = unsafe { std::slice::from_raw_parts(ws.as_ptr().cast::<u16>(), ws.len()) };
            nbp_kernels::linear_bf16_to_vec(xs, ws, bs, m, k, n)?
        }
        _ => return None,
    };
    let mut shape = dims;
    shape[D - 1] = n;
    Some(Tensor::from_data(TensorData::new(out, shape), &x.device()))
}

/// The exact GELU, in place when `x` holds the only handle to its buffer. `Err(x)` (untouched) where the kernel
/// does not apply.
pub(crate) fn gelu<B: Backend, const D: usize>(x: Tensor<B, D>) -> Result<Tensor<B, D>, Tensor<B, D>> {
    if !enabled::<B>() {
        return Err(x);
    }
    // The kernel leaves the values untouched when it does not run.
    nbp_core::flex::update_f32(x, nbp_kernels::gelu)
}

/// Multi-head self-attention on the outputs of the query/key/value layers, `k, v: [batch, new, d]` and the
/// queries of the last of them, `q: [batch, queries, d]` (`n_head` heads side by side), under
/// `mask: [1, 1, queries, keys]` (`true` = masked out): `[batch, queries, d]` before the output projection.
/// With a cache, `k` and `v` are first written into it in place and the attention reads the cached keys and
/// values where they lie.
pub(crate) fn self_attention<B: Backend>(
    q: &Tensor<B, 3>,
    k: &Tensor<B, 3>,
    v: &Tensor<B, 3>,
    n_head: usize,
    mask: &Tensor<B, 4, Bool>,
    cache: Option<&mut KvCache<B>>,
) -> Option<Tensor<B, 3>> {
    if !enabled::<B>() {
        return None;
    }
    let [b, queries, d] = q.dims();
    let n = k.dims()[1];
    let hs = d / n_head;
    let keys = n + cache.as_ref().map_or(0, |c| c.len());
    if mask.dims() != [1, 1, queries, keys] || k.dims() != [b, n, d] || v.dims() != [b, n, d] || queries > n {
        return None;
    }
    let mf = contiguous(flex_bool(mask.clone())?);
    let (start, end) = mf.layout().contiguous_offsets()?;
    let masked = nbp_kernels::flags_from_bytes(&mf.storage::<u8>()[start..end]);
    let qf = contiguous(flex(q.clone())?);
    let (kf, vf, kv) = match cache {
        Some(cache) => {
            let capacity = cache.capacity();
            if cache.dims() != [b, n_head, capacity, hs] || !cache.append_token_major(k, v) {
                return None;
            }
            let (ck, cv) = cache.buffers();
            (flex(ck.clone())?, flex(cv.clone())?, Strides::head_major(capacity, n_head, hs))
        }
        None => (contiguous(flex(k.clone())?), contiguous(flex(v.clone())?), Strides::token_major(n, n_head, hs)),
    };
    if !kf.is_contiguous() || !vf.is_contiguous() {
        return None;
    }
    let shape = AttentionShape {
        batch: b,
        heads: n_head,
        queries,
        keys,
        head_dim: hs,
        q: Strides::token_major(queries, n_head, hs),
        kv,
        out: Strides::token_major(queries, n_head, hs),
    };
    let mut out = vec![0.0f32; b * queries * d];
    let scale = 1.0 / (hs as f32).sqrt();
    let (qs, ks, vs) = (qf.as_slice::<f32>()?, kf.as_slice::<f32>()?, vf.as_slice::<f32>()?);
    if !nbp_kernels::attention(qs, ks, vs, &masked, &mut out, shape, scale) {
        return None;
    }
    Some(Tensor::from_data(TensorData::new(out, [b, queries, d]), &q.device()))
}

/// Writes the rows of `new: [batch, n, heads·d]` (token-major) into rows `start..start + n` of
/// `cache: [batch, heads, capacity, d]` in place. False (and nothing written) when that is not possible:
/// another backend, or a shared or non-contiguous cache.
pub(crate) fn write_token_rows<B: Backend>(cache: &mut Tensor<B, 4>, new: &Tensor<B, 3>, start: usize) -> bool {
    if !enabled::<B>() || cache.dtype() != new.dtype() {
        return false;
    }
    let [b, h, cap, d] = cache.dims();
    let [nb, n, nd] = new.dims();
    if nb != b || nd != h * d || start + n > cap {
        return false;
    }
    let Some(nf) = flex(new.clone()).map(contiguous) else { return false };
    let Some(src) = nf.as_slice::<f32>() else { return false };
    let owned = std::mem::replace(cache, Tensor::empty([0, 0, 0, 0], &new.device()));
    let Some(mut c) = flex(owned.clone()) else {
        *cache = owned;
        return false;
    };
    drop(owned);
    let written = c.is_contiguous() && c.layout().start_offset() == 0 && {
        match c.try_storage_mut::<f32>() {
            Some(dst) => {
                nbp_kernels::write_cache_rows(src, [b, n, h, d], dst, cap, start);
                true
            }
            None => false,
        }
    };
    *cache = from_flex(c);
    written
}
