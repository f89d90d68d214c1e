//! Per-frame group normalisation and the per-channel Swish of the tokenizer, each in one parallel pass over a
//! `[batch, channels, time, pixels]` buffer (instead of the ten or so whole-tensor operations of the generic
//! path). Plain Rust, so they run on every CPU; Swish uses the AVX-512 exponential where the CPU has it.

use rayon::prelude::*;

/// Lanes of the partial sums (vectorised by the compiler).
const LANES: usize = 16;

/// `Σ f(x)` over `xs` in `LANES` partial sums, then in f64.
fn sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = xs.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x);
        }
    }
    acc.iter().map(|&a| a as f64).sum::<f64>() + chunks.remainder().iter().map(|&x| f(x) as f64).sum::<f64>()
}

/// In place: `x[b, c, t, :] ← (x − μ)/√(σ² + ε)·γ[c] + β[c]`, where the mean `μ` and the biased variance `σ²`
/// of each batch item, group of `channels / groups` consecutive channels and frame `t` run over the group's
/// channels and the frame's pixels (PyTorch's `GroupNorm` applied to every frame).
///
/// # Panics
/// When `groups` does not divide `channels`, or a slice is shorter than its shape says.
pub fn group_norm(
    x: &mut [f32],
    [batch, channels, time, pixels]: [usize; 4],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
) {
    assert!(groups > 0 && channels.is_multiple_of(groups), "group_norm: {channels} channels in {groups} groups");
    assert!(x.len() >= batch * channels * time * pixels, "group_norm: buffer shorter than its shape");
    assert!(gamma.len() >= channels && beta.len() >= channels, "group_norm: γ/β shorter than {channels}");
    let per_group = channels / groups;
    let block = per_group * time * pixels;
    if block == 0 {
        return;
    }
    x[..batch * channels * time * pixels].par_chunks_mut(block).enumerate().for_each(|(bg, data)| {
        let c0 = (bg % groups) * per_group;
        for t in 0..time {
            let run = |c: usize| (c * time + t) * pixels..(c * time + t + 1) * pixels;
            let (mean, inv) = frame_stats(data, per_group, time, pixels, t, eps);
            for c in 0..per_group {
                let (scale, shift) = (inv * gamma[c0 + c], beta[c0 + c] - mean * inv * gamma[c0 + c]);
                data[run(c)].iter_mut().for_each(|v| *v = *v * scale + shift);
            }
        }
    });
}

/// Mean and `1/√(var + eps)` of frame `t` of one (batch, group) block `[per_group, time, pixels]`: the statistics
/// the forward pass normalises with and the backward pass differentiates, computed the same way for both.
fn frame_stats(block: &[f32], per_group: usize, time: usize, pixels: usize, t: usize, eps: f32) -> (f32, f32) {
    let run = |c: usize| (c * time + t) * pixels..(c * time + t + 1) * pixels;
    let n = (per_group * pixels) as f64;
    let mean = ((0..per_group).map(|c| sum(&block[run(c)], |v| v)).sum::<f64>() / n) as f32;
    let var = (0..per_group).map(|c| sum(&block[run(c)], |v| (v - mean) * (v - mean))).sum::<f64>() / n;
    (mean, (1.0 / (var + eps as f64).sqrt()) as f32)
}

/// In place: `x[b, c, :] ← x·σ(β[c]·x)` for `x: [batch, channels, rest]`.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn swish(x: &mut [f32], [batch, channels, rest]: [usize; 3], beta: &[f32]) {
    assert!(x.len() >= batch * channels * rest, "swish: buffer shorter than its shape");
    assert!(beta.len() >= channels, "swish: β shorter than {channels}");
    if rest == 0 {
        return;
    }
    let fast = crate::available();
    x[..batch * channels * rest].par_chunks_mut(rest).enumerate().for_each(|(bc, data)| {
        let b = beta[bc % channels];
        if fast {
            // SAFETY: AVX-512 was detected.
            unsafe { x86::swish(data, b) };
        } else {
            data.iter_mut().for_each(|v| *v /= 1.0 + (-b * *v).exp());
        }
    });
}

/// Gradients of [`group_norm`] for training: given its input `x` (before normalisation) and the gradient `dy`
/// of its output, returns `(dx, dγ, dβ)` (`dx` shaped like `x`, the other two `[channels]`).
///
/// With `x̂ = (x − μ)·r`, `r = 1/√(σ² + ε)` and `g = dy·γ[c]`, over the `n` values of a (batch, group, frame):
/// `dx = r·(g − mean(g) − x̂·mean(g·x̂))`, `dγ[c] = Σ dy·x̂`, `dβ[c] = Σ dy`.
///
/// # Panics
/// When `groups` does not divide `channels`, or a slice is shorter than its shape says.
pub fn group_norm_backward(
    x: &[f32],
    dy: &[f32],
    [batch, channels, time, pixels]: [usize; 4],
    groups: usize,
    gamma: &[f32],
    eps: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    assert!(groups > 0 && channels.is_multiple_of(groups), "group_norm: {channels} channels in {groups} groups");
    let len = batch * channels * time * pixels;
    assert!(x.len() >= len && dy.len() >= len, "group_norm_backward: buffer shorter than its shape");
    assert!(gamma.len() >= channels, "group_norm_backward: γ shorter than {channels}");
    let per_group = channels / groups;
    let block = per_group * time * pixels;
    let mut dx = vec![0.0f32; len];
    if block == 0 {
        return (dx, vec![0.0; channels], vec![0.0; channels]);
    }
    // Per (batch, group): the dγ and dβ of its channels, summed over batches afterwards.
    let partial: Vec<(Vec<f64>, Vec<f64>)> = dx
        .par_chunks_mut(block)
        .zip(x[..len].par_chunks(block).zip(dy[..len].par_chunks(block)))
        .enumerate()
        .map(|(bg, (dxb, (xb, dyb)))| {
            let c0 = (bg % groups) * per_group;
            let (mut dgamma, mut dbeta) = (vec![0.0f64; per_group], vec![0.0f64; per_group]);
            for t in 0..time {
                let run = |c: usize| (c * time + t) * pixels..(c * time + t + 1) * pixels;
                let (mean, r) = frame_stats(xb, per_group, time, pixels, t, eps);
                let n = (per_group * pixels) as f64;
                let (mut sum_g, mut sum_gx) = (0.0f64, 0.0f64);
                for c in 0..per_group {
                    let (xs, ds) = (&xb[run(c)], &dyb[run(c)]);
                    let (mut d, mut dx_hat) = ([0.0f32; LANES], [0.0f32; LANES]);
                    for (i, (&xv, &dv)) in xs.iter().zip(ds).enumerate() {
                        d[i % LANES] += dv;
                        dx_hat[i % LANES] += dv * (xv - mean) * r;
                    }
                    let (d, dx_hat) =
                        (d.iter().map(|&v| v as f64).sum::<f64>(), dx_hat.iter().map(|&v| v as f64).sum::<f64>());
                    dbeta[c] += d;
                    dgamma[c] += dx_hat;
                    sum_g += d * gamma[c0 + c] as f64;
                    sum_gx += dx_hat * gamma[c0 + c] as f64;
                }
                let (mean_g, mean_gx) = ((sum_g / n) as f32, (sum_gx / n) as f32);
                for c in 0..per_group {
                    let gm = gamma[c0 + c];
                    let (xs, ds) = (&xb[run(c)], &dyb[run(c)]);
                    for ((o, &xv), &dv) in dxb[run(c)].iter_mut().zip(xs).zip(ds) {
                        *o = r * (dv * gm - mean_g - (xv - mean) * r * mean_gx);
                    }
                }
            }
            (dgamma, dbeta)
        })
        .collect();
    let (mut dgamma, mut dbeta) = (vec![0.0f64; channels], vec![0.0f64; channels]);
    for (bg, (g, b)) in partial.iter().enumerate() {
        let c0 = (bg % groups) * per_group;
        for c in 0..per_group {
            dgamma[c0 + c] += g[c];
            dbeta[c0 + c] += b[c];
        }
    }
    (dx, dgamma.iter().map(|&v| v as f32).collect(), dbeta.iter().map(|&v| v as f32).collect())
}

/// Gradients of [`swish`] for training: given its input `x` and the gradient `dy` of its output, returns
/// `(dx, dβ)`. With `s = σ(β·x)`: `dx = dy·(s + β·x·s·(1 − s))`, `dβ[c] = Σ dy·x²·s·(1 − s)`.
///
/// # Panics
/// When a slice is shorter than its shape says.
pub fn swish_backward(
    x: &[f32],
    dy: &[f32],
    [batch, channels, rest]: [usize; 3],
    beta: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let len = batch * channels * rest;
    assert!(x.len() >= len && dy.len() >= len, "swish_backward: buffer shorter than its shape");
    assert!(beta.len() >= channels, "swish_backward: β shorter than {channels}");
    let mut dx = vec![0.0f32; len];
    if rest == 0 {
        return (dx, vec![0.0; channels]);
    }
    let partial: Vec<f64> = dx
        .par_chunks_mut(rest)
        .zip(x[..len].par_chunks(rest).zip(dy[..len].par_chunks(rest)))
        .enumerate()
        .map(|(bc, (dxr, (xr, dyr)))| {
            let b = beta[bc % channels];
            let mut acc = [0.0f32; LANES];
            for (i, ((o, &xv), &dv)) in dxr.iter_mut().zip(xr).zip(dyr).enumerate() {
                let s = 1.0 / (1.0 + (-b * xv).exp());
                let ds = s * (1.0 - s);
                *o = dv * (s + b * xv * ds);
                acc[i % LANES] += dv * xv * xv * ds;
            }
            acc.iter().map(|&v| v as f64).sum::<f64>()
        })
        .collect();
    let mut dbeta = vec![0.0f64; channels];
    for (bc, v) in partial.iter().enumerate() {
        dbeta[bc % channels] += v;
    }
    (dx, dbeta.iter().map(|&v| v as f32).collect())
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn swish(_: &mut [f32], _: f32) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use crate::simd::x86::exp;

    /// `v ← v / (1 + e^(−b·v))` over `data`, 16 lanes at a time.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn swish(data: &mut [f32], b: f32) {
        let (minus_b, one) = (_mm512_set1_ps(-b), _mm512_set1_ps(1.0));
        let mut chunks = data.chunks_exact_mut(16);
        for c in &mut chunks {
            // SAFETY: the chunk holds 16 floats.
            unsafe {
                let v = _mm512_loadu_ps(c.as_ptr());
                let e = exp(_mm512_mul_ps(minus_b, v));
                _mm512_storeu_ps(c.as_mut_ptr(), _mm512_div_ps(v, _mm512_add_ps(one, e)));
            }
        }
        for v in chunks.into_remainder() {
            *v /= 1.0 + (-b * *v).exp();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_norm_matches_the_definition_per_frame() {
        let shape @ [batch, channels, time, pixels] = [2, 6, 3, 37];
        let x: Vec<f32> =
            (0..batch * channels * time * pixels).map(|i| ((i * 7919) % 1013) as f32 / 100.0 - 4.0).collect();
        let gamma: Vec<f32> = (0..channels).map(|c| 0.5 + c as f32 * 0.25).collect();
        let beta: Vec<f32> = (0..channels).map(|c| c as f32 * 0.1 - 0.2).collect();
        let mut y = x.clone();
        group_norm(&mut y, shape, 3, &gamma, &beta, 1e-5);
        let at = |b: usize, c: usize, t: usize, p: usize| ((b * channels + c) * time + t) * pixels + p;
        for (b, g, t) in (0..batch).flat_map(|b| (0..3).flat_map(move |g| (0..time).map(move |t| (b, g, t)))) {
            let members: Vec<(usize, usize)> =
                (2 * g..2 * g + 2).flat_map(|c| (0..pixels).map(move |p| (c, p))).collect();
            let n = members.len() as f64;
            let mean = members.iter().map(|&(c, p)| x[at(b, c, t, p)] as f64).sum::<f64>() / n;
            let var = members.iter().map(|&(c, p)| (x[at(b, c, t, p)] as f64 - mean).powi(2)).sum::<f64>() / n;
            for &(c, p) in &members {
                let want = (x[at(b, c, t, p)] as f64 - mean) / (var + 1e-5).sqrt() * gamma[c] as f64 + beta[c] as f64;
                let got = y[at(b, c, t, p)] as f64;
                assert!((got - want).abs() < 1e-5 * (1.0 + want.abs()), "b{b} c{c} t{t} p{p}: {got} vs {want}");
            }
        }
    }

    #[test]
    fn swish_uses_each_channels_slope() {
        let mut x = vec![-2.0f32, 0.0, 3.0, -2.0, 0.0, 3.0];
        swish(&mut x, [1, 2, 3], &[1.0, 0.5]);
        let s = |v: f32, b: f32| v / (1.0 + (-b * v).exp());
        let want = [s(-2.0, 1.0), 0.0, s(3.0, 1.0), s(-2.0, 0.5), 0.0, s(3.0, 0.5)];
        for (a, e) in x.iter().zip(want) {
            assert!((a - e).abs() < 1e-6, "{a} vs {e}");
        }
        assert!((x[2] - 2.857_722_5).abs() < 1e-5);
    }

    #[test]
    fn swish_is_accurate_over_whole_vectors_and_the_remainder() {
        // 2 channels of 37 values in [−60, 60]: two whole vectors and a remainder each.
        let x: Vec<f32> = (0..74).map(|i| (i as f32 - 37.0) * 1.63).collect();
        let mut y = x.clone();
        swish(&mut y, [1, 2, 37], &[1.0, 0.25]);
        for (i, (v, got)) in x.iter().zip(&y).enumerate() {
            let b = if i < 37 { 1.0 } else { 0.25 };
            let want = *v as f64 / (1.0 + (-b * *v as f64).exp());
            assert!((*got as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "x = {v}: {got} vs {want}");
        }
    }

    /// `Σ w·group_norm(x)` in f64, for finite differences.
    fn group_norm_loss(
        x: &[f64],
        gamma: &[f64],
        beta: &[f64],
        w: &[f64],
        [batch, channels, time, pixels]: [usize; 4],
        groups: usize,
    ) -> f64 {
        let per = channels / groups;
        let at = |b: usize, c: usize, t: usize, p: usize| ((b * channels + c) * time + t) * pixels + p;
        let mut loss = 0.0;
        for (b, g, t) in (0..batch).flat_map(|b| (0..groups).flat_map(move |g| (0..time).map(move |t| (b, g, t)))) {
            let idx: Vec<(usize, usize)> =
                (g * per..(g + 1) * per).flat_map(|c| (0..pixels).map(move |p| (c, at(b, c, t, p)))).collect();
            let n = idx.len() as f64;
            let mean = idx.iter().map(|&(_, i)| x[i]).sum::<f64>() / n;
            let var = idx.iter().map(|&(_, i)| (x[i] - mean).powi(2)).sum::<f64>() / n;
            for &(c, i) in &idx {
                loss += w[i] * ((x[i] - mean) / (var + 1e-5).sqrt() * gamma[c] + beta[c]);
            }
        }
        loss
    }

    /// Central difference of `f` at `v[i]`.
    fn numeric(v: &mut [f64], i: usize, f: &dyn Fn(&[f64]) -> f64) -> f64 {
        let (h, keep) = (1e-5, v[i]);
        v[i] = keep + h;
        let up = f(v);
        v[i] = keep - h;
        let down = f(v);
        v[i] = keep;
        (up - down) / (2.0 * h)
    }

    fn close(got: f32, want: f64, what: &str) {
        assert!((got as f64 - want).abs() < 2e-4 * (1.0 + want.abs()), "{what}: {got} vs {want}");
    }

    #[test]
    fn group_norm_gradients_match_finite_differences() {
        let shape @ [batch, channels, time, pixels] = [2, 4, 3, 19];
        let len = batch * channels * time * pixels;
        let x: Vec<f64> = (0..len).map(|i| ((i * 7919) % 1013) as f64 / 200.0 - 2.0).collect();
        let w: Vec<f64> = (0..len).map(|i| ((i * 104_729) % 997) as f64 / 500.0 - 1.0).collect();
        let gamma = vec![0.5, 1.25, -0.75, 2.0];
        let beta = vec![0.1, -0.2, 0.3, 0.0];
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (dx, dgamma, dbeta) = group_norm_backward(&f32s(&x), &f32s(&w), shape, 2, &f32s(&gamma), 1e-5);
        let mut xv = x.clone();
        for i in (0..len).step_by(7) {
            let want = numeric(&mut xv, i, &|v| group_norm_loss(v, &gamma, &beta, &w, shape, 2));
            close(dx[i], want, &format!("dx[{i}]"));
        }
        let mut gv = gamma.clone();
        let mut bv = beta.clone();
        for c in 0..channels {
            close(dgamma[c], numeric(&mut gv, c, &|g| group_norm_loss(&x, g, &beta, &w, shape, 2)), "dγ");
            close(dbeta[c], numeric(&mut bv, c, &|b| group_norm_loss(&x, &gamma, b, &w, shape, 2)), "dβ");
        }
    }

    #[test]
    fn swish_gradients_match_finite_differences() {
        let shape @ [batch, channels, rest] = [2, 3, 23];
        let len = batch * channels * rest;
        let x: Vec<f64> = (0..len).map(|i| ((i * 7919) % 1013) as f64 / 100.0 - 5.0).collect();
        let w: Vec<f64> = (0..len).map(|i| ((i * 104_729) % 997) as f64 / 500.0 - 1.0).collect();
        let beta = vec![1.0, 0.4, -0.8];
        let loss = |x: &[f64], beta: &[f64]| -> f64 {
            (0..len).map(|i| w[i] * x[i] / (1.0 + (-beta[(i / rest) % channels] * x[i]).exp())).sum()
        };
        let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
        let (dx, dbeta) = swish_backward(&f32s(&x), &f32s(&w), shape, &f32s(&beta));
        let mut xv = x.clone();
        for (i, &got) in dx.iter().enumerate() {
            close(got, numeric(&mut xv, i, &|v| loss(v, &beta)), &format!("dx[{i}]"));
        }
        let mut bv = beta.clone();
        for (c, &got) in dbeta.iter().enumerate() {
            close(got, numeric(&mut bv, c, &|b| loss(&x, b)), &format!("dβ[{c}]"));
        }
    }
}
