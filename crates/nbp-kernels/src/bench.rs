//! Timing of the kernels on the shapes of the official models, for `nbp-cli bench kernels`.

use std::time::Instant;

use crate::conv3d::{Conv3dShape, run};
use crate::linear::linear;

/// One timed kernel call.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelTiming {
    /// What was timed, e.g. `linear 16×1536×6144`.
    pub name: String,
    /// Floating-point operations per call (multiply and add counted separately).
    pub flops: f64,
    /// Bytes of weights (for attention, of cached keys and values) read per call.
    pub weight_bytes: f64,
    /// What those bytes are: `"weights"`, or `"keys and values"` for attention.
    pub bytes_of: &'static str,
    /// Best time per call over the repeats, in seconds.
    pub seconds: f64,
}

impl KernelTiming {
    pub fn gflops(&self) -> f64 {
        self.flops / self.seconds / 1e9
    }

    /// Weight bytes per second, in GB/s.
    pub fn weight_gbs(&self) -> f64 {
        self.weight_bytes / self.seconds / 1e9
    }
}

/// Deterministic values in [−1, 1] (xorshift), for the benchmarks and the kernels' tests.
pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Checks a linear kernel `run(x, w, bias, out, m, k, n)` against a double-precision product on `shapes`,
/// with and without bias: the reference multiplies `round(x)` by `round(w)` (the operands as the kernel sees
/// them) and each output must be within `tol·(1 + |want|)`.
#[cfg(test)]
pub(crate) fn check_linear(
    shapes: &[(usize, usize, usize)],
    tol: f32,
    round: impl Fn(f32) -> f32,
    run: impl Fn(&[f32], &[f32], Option<&[f32]>, &mut [f32], usize, usize, usize) -> bool,
) {
    for &(m, k, n) in shapes {
        let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
        let (xr, wr): (Vec<f32>, Vec<f32>) =
            (x.iter().map(|&v| round(v)).collect(), w.iter().map(|&v| round(v)).collect());
        for bias in [None, Some(b.as_slice())] {
            let mut out = vec![f32::NAN; m * n];
            assert!(run(&x, &w, bias, &mut out, m, k, n), "{m}x{k}x{n}: the kernel did not run");
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k).map(|p| xr[i * k + p] as f64 * wr[j * k + p] as f64).sum();
                    let (got, want) = (out[i * n + j], s as f32 + bias.map_or(0.0, |b| b[j]));
                    assert!((got - want).abs() <= tol * (1.0 + want.abs()), "{m}x{k}x{n} [{i}, {j}]: {got} vs {want}");
                }
            }
        }
    }
}

/// Best time of `f` over `repeats` rounds of calls that last at least `min_seconds` each.
fn best(repeats: usize, min_seconds: f64, mut f: impl FnMut() -> bool) -> Option<f64> {
    if !f() {
        return None;
    }
    let mut best = f64::INFINITY;
    for _ in 0..repeats.max(1) {
        let (t0, mut calls) = (Instant::now(), 0u32);
        while calls == 0 || t0.elapsed().as_secs_f64() < min_seconds {
            f();
            calls += 1;
        }
        best = best.min(t0.elapsed().as_secs_f64() / calls as f64);
    }
    Some(best)
}

/// Times `out = x·Wᵀ + b` with `x: [m, k]`, `W: [n, k]`, in f32 ([`linear`]) or with bfloat16 weights
/// ([`crate::linear_bf16`]); `None` without AVX-512 (or, for `bf16`, without AVX-512 BW).
pub fn time_linear(m: usize, k: usize, n: usize, bf16: bool, repeats: usize, min_seconds: f64) -> Option<KernelTiming> {
    let (x, w, b) = (values(m * k, 1), values(n * k, 2), values(n, 3));
    let wb: Vec<u16> = if bf16 { w.iter().map(|&v| crate::bf16::to_bf16(v)).collect() } else { vec![] };
    let mut out = vec![0.0f32; m * n];
    let seconds = best(repeats, min_seconds, || match bf16 {
        true => crate::linear_bf16(&x, &wb, Some(&b), &mut out, m, k, n),
        false => linear(&x, &w, Some(&b), &mut out, m, k, n),
    })?;
    Some(KernelTiming {
        name: format!("linear {}{m}×{k}×{n}", if bf16 { "bf16 " } else { "" }),
        flops: 2.0 * (m * k * n) as f64,
        weight_bytes: (if bf16 { 2 } else { 4 } * n * k) as f64,
        bytes_of: "weights",
        seconds,
    })
}

/// The shapes `(in, out)` of the linear layers of one `official-base` sampling step: 24 blocks of
/// key/query/value/proj (1536 → 1536) and the MLP (1536 → 6144 → 1536), then the head (1536 → 64 000).
fn official_base_layers() -> Vec<(usize, usize)> {
    let d = 1536;
    let block = [(d, d), (d, d), (d, d), (d, d), (d, 4 * d), (4 * d, d)];
    (0..24).flat_map(|_| block).chain([(d, 64000)]).collect()
}

/// Times one pass of `m` rows through all linear layers of `official-base` ([`official_base_layers`]), each
/// with its own weights (3.1 GB in f32, 1.6 GB in bfloat16: far more than the caches, so they come from
/// memory as in a sampling step). `None` without AVX-512 (or, for `bf16`, without AVX-512 BW).
pub fn time_model_pass(m: usize, bf16: bool, repeats: usize) -> Option<KernelTiming> {
    let layers = official_base_layers();
    let x = values(m * 4 * 1536, 1);
    let params: usize = layers.iter().map(|(k, n)| k * n).sum();
    let seconds = if bf16 {
        let one = crate::bf16::to_bf16(0.01);
        let ws: Vec<Vec<u16>> = layers.iter().map(|&(k, n)| vec![one; k * n]).collect();
        best(repeats, 0.0, || {
            layers.iter().zip(&ws).all(|(&(k, n), w)| {
                let mut out = vec![0.0f32; m * n];
                crate::linear_bf16(&x[..m * k], w, None, &mut out, m, k, n)
            })
        })?
    } else {
        let ws: Vec<Vec<f32>> = layers.iter().map(|&(k, n)| vec![0.01; k * n]).collect();
        best(repeats, 0.0, || {
            layers.iter().zip(&ws).all(|(&(k, n), w)| {
                let mut out = vec![0.0f32; m * n];
                crate::linear(&x[..m * k], w, None, &mut out, m, k, n)
            })
        })?
    };
    Some(KernelTiming {
        name: format!(
            "official-base pass, {m} row{}{}",
            if m == 1 { "" } else { "s" },
            if bf16 { ", bf16" } else { "" }
        ),
        flops: 2.0 * (m * params) as f64,
        weight_bytes: (if bf16 { 2 } else { 4 } * params) as f64,
        bytes_of: "weights",
        seconds,
    })
}

/// Times the AMX tile unit on one core ([`crate::bf16::time_tile_products`]): four 16 × 32 by 32 × 16
/// bfloat16 products per round, on tiles already loaded or (`loads`) after loading their four 1 KB operands
/// from L1, as each round of the linear kernel's 2 × 2 block does. `weight_bytes` counts the bytes loaded.
pub fn time_tiles(loads: bool, repeats: usize) -> Option<KernelTiming> {
    let iters = 1 << 20;
    let seconds = best(repeats, 0.0, || crate::bf16::time_tile_products(iters, loads).is_some())?;
    Some(KernelTiming {
        name: format!("AMX, 1 core: 4 tile products{}", if loads { " + 4 tile loads" } else { "" }),
        flops: (iters * 4 * 2 * 16 * 16 * 32) as f64,
        weight_bytes: if loads { (iters * 4 * 1024) as f64 } else { 0.0 },
        bytes_of: "tiles",
        seconds,
    })
}

/// Times [`crate::attention`] on the layers of one `official-base` sampling step: `queries` new tokens (the
/// last of `keys`) attend, under a block-causal mask with blocks of 16, to the keys and values of a KV cache
/// with room for 1280 tokens, for 24 layers of 16 heads of 96, each layer with its own cache (377 MB in all:
/// more than the caches, so they come from memory as in a step). `flops` counts the two products over the
/// visible keys; `weight_bytes` the keys and values read. `None` without AVX-512.
pub fn time_attention(queries: usize, keys: usize, repeats: usize) -> Option<KernelTiming> {
    use crate::attention::{AttentionShape, attention, block_causal_mask};
    let (layers, heads, d, cap) = (24, 16, 96, 1280.max(keys));
    let shape = AttentionShape::cached(1, heads, queries, keys, d, cap);
    let q = values(queries * heads * d, 1);
    let caches: Vec<(Vec<f32>, Vec<f32>)> =
        (0..layers).map(|l| (values(heads * cap * d, 2 + l as u32), values(heads * cap * d, 40 + l as u32))).collect();
    let masked = block_causal_mask(queries, keys, 16);
    let visible = masked.iter().filter(|m| !**m).count();
    let mut out = vec![0.0f32; queries * heads * d];
    let seconds =
        best(repeats, 0.0, || caches.iter().all(|(k, v)| attention(&q, k, v, &masked, &mut out, shape, 0.1)))?;
    Some(KernelTiming {
        name: format!("attention {queries} quer{} × {keys} keys, 24 layers", if queries == 1 { "y" } else { "ies" }),
        flops: (layers * heads * 4 * d * visible) as f64,
        weight_bytes: (layers * heads * 2 * keys * d * 4) as f64,
        bytes_of: "keys and values",
        seconds,
    })
}

/// Times [`crate::sample_rows`] on `rows` rows of 64 000 logits (the K600 vocabulary, values spread evenly over
/// [−4, 4]) with the official filter (top-k 16 000, top-p 0.9): the sampling of an NTP step (1 row) or of an
/// NBP-16 step (16). `flops` is 0; `weight_bytes` counts the logits read.
pub fn time_sampling(rows: usize, repeats: usize, min_seconds: f64) -> Option<KernelTiming> {
    let vocab = 64000;
    let logits: Vec<f32> = values(rows * vocab, 5).iter().map(|v| 4.0 * v).collect();
    let uniforms: Vec<f32> = (0..rows).map(|r| (r as f32 + 0.5) / rows as f32).collect();
    let mut out = vec![0i64; rows];
    let seconds = best(repeats, min_seconds, || {
        crate::sample_rows(&logits, vocab, Some(16000), Some(0.9), &uniforms, &mut out);
        true
    })?;
    Some(KernelTiming {
        name: format!("sample {rows} row{} of 64000, top-k and top-p", if rows == 1 { "" } else { "s" }),
        flops: 0.0,
        weight_bytes: (rows * vocab * 4) as f64,
        bytes_of: "logits",
        seconds,
    })
}

/// Times one convolution as [`crate::conv3d()`] computes it, either always as the direct product or
/// (`winograd`) through Winograd's transform wherever its shape allows, even on frames too small for
/// [`crate::conv3d()`] to choose it; the operations counted are those of the direct product either way. `None`
/// without AVX-512.
pub fn time_conv3d(s: Conv3dShape, winograd: bool, repeats: usize, min_seconds: f64) -> Option<KernelTiming> {
    let taps = s.kernel.iter().product::<usize>();
    let x = values(s.c_in * s.input.iter().product::<usize>(), 1);
    let w = values(s.c_out * s.c_in * taps, 2);
    let b = values(s.c_out, 3);
    let positions = s.output().iter().product::<usize>();
    let mut out = vec![0.0f32; s.c_out * positions];
    let chunk = winograd.then_some(crate::winograd::CHUNK_BYTES);
    let seconds = best(repeats, min_seconds, || run(&x, &w, Some(&b), &mut out, s, chunk))?;
    let [t, h, wd] = s.input;
    let method = if winograd && crate::winograd::applies(&s) { "Winograd F(2×2, 3×3)" } else { "direct" };
    Some(KernelTiming {
        name: format!("conv3d {}→{} on {t}×{h}×{wd}, stride {:?}, {method}", s.c_in, s.c_out, s.stride),
        flops: 2.0 * (positions * s.c_out * s.c_in * taps) as f64,
        weight_bytes: 4.0 * (s.c_out * s.c_in * taps) as f64,
        bytes_of: "weights",
        seconds,
    })
}

/// The kernels on the shapes of `official-base` sampling (a 16-token step, the 512-token prefill; in f32 and, where the
/// CPU runs them ([`crate::bf16_available`]), with bfloat16 weights; one pass of 1 and of 16 rows through all of its linear layers,
/// with the weights coming from memory; attention; the top-k/top-p draw of 1 and 16 rows) and of typical layers of the
/// `official` tokenizer (on a 17×128×128 clip, on its 2× smaller level and on the latent grid), these both as the
/// direct product and through Winograd's transform.
pub fn official_shapes(repeats: usize, min_seconds: f64) -> Option<Vec<KernelTiming>> {
    let mut out = Vec::new();
    for m in [1, 16, 512] {
        for (k, n) in [(1536, 1536), (1536, 6144), (6144, 1536)] {
            out.push(time_linear(m, k, n, false, repeats, min_seconds)?);
        }
    }
    if crate::bf16_available() {
        for m in [1, 16, 512] {
            for (k, n) in [(1536, 1536), (1536, 6144), (6144, 1536)] {
                out.extend(time_linear(m, k, n, true, repeats, min_seconds));
            }
        }
    }
    if crate::amx_available() {
        out.extend(time_tiles(false, repeats));
        out.extend(time_tiles(true, repeats));
    }
    for m in [1, 16] {
        out.push(time_model_pass(m, false, repeats)?);
        out.extend(crate::bf16_available().then(|| time_model_pass(m, true, repeats)).flatten());
    }
    for (queries, keys) in [(1, 1024), (16, 1024), (512, 512)] {
        out.push(time_attention(queries, keys, repeats)?);
    }
    for rows in [1, 16] {
        out.extend(time_sampling(rows, repeats, min_seconds));
    }
    let conv =
        |c_in, c_out, input| Conv3dShape { c_in, c_out, input, pad: [2, 1, 1], kernel: [3, 3, 3], stride: [1, 1, 1] };
    for s in [conv(128, 128, [17, 128, 128]), conv(256, 256, [17, 64, 64]), conv(512, 512, [5, 16, 16])] {
        for winograd in [false, true] {
            out.push(time_conv3d(s, winograd, repeats, min_seconds)?);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_count_the_work_of_each_call() {
        let Some(t) = time_linear(2, 32, 12, false, 1, 0.0) else {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        };
        assert_eq!(t.name, "linear 2×32×12");
        assert_eq!((t.flops, t.weight_bytes), (1536.0, 1536.0));
        assert!(t.seconds > 0.0 && t.gflops() > 0.0);
        let s = Conv3dShape { c_in: 16, c_out: 4, input: [3, 5, 6], pad: [0; 3], kernel: [3, 3, 3], stride: [1; 3] };
        let c = time_conv3d(s, true, 1, 0.0).unwrap();
        let sampling = time_sampling(2, 1, 0.0).unwrap();
        assert_eq!(
            (sampling.name.as_str(), sampling.weight_bytes),
            ("sample 2 rows of 64000, top-k and top-p", 512000.0)
        );
        // 1×3×4 output positions, 4 channels, 16·27 products each.
        assert_eq!(c.flops, 2.0 * 12.0 * 4.0 * 432.0);
        if let Some(t) = time_tiles(true, 1) {
            // 2²⁰ rounds of four 16×16×32 products and four 1 KB loads.
            assert_eq!((t.flops, t.weight_bytes), (68719476736.0, 4294967296.0));
            assert!(t.gflops() > 1.0, "{} GFLOP/s", t.gflops());
        }
    }
}
