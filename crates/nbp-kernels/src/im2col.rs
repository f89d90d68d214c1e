//! Helpers of the convolution's backward pass in training: replicate padding and its adjoint, and the im2col
//! gather and scatter that turn a convolution's weight and input gradients into matrix products. Plain Rust,
//! compiled at opt-level 3 with the other kernels.

use rayon::prelude::*;

use crate::Conv3dShape;

/// The source index along one axis of a replicate-padded position `p` (`before` copies of the first element in
/// front, the last one repeated behind).
fn source(p: usize, before: usize, n: usize) -> usize {
    p.saturating_sub(before).min(n - 1)
}

/// Replicate padding of `x: [batch, c, T, H, W]`: `pad[0]` copies of the first frame in front (none behind),
/// `pad[1]` rows and `pad[2]` columns on each side.
pub fn replicate_pad(x: &[f32], [b, c, t, h, w]: [usize; 5], [pt, ph, pw]: [usize; 3]) -> Vec<f32> {
    let (tp, hp, wp) = (t + pt, h + 2 * ph, w + 2 * pw);
    let mut out = Vec::with_capacity(b * c * tp * hp * wp);
    for plane in x.chunks(t * h * w) {
        for ti in 0..tp {
            let frame = &plane[source(ti, pt, t) * h * w..][..h * w];
            for hi in 0..hp {
                let row = &frame[source(hi, ph, h) * w..][..w];
                out.extend(std::iter::repeat_n(row[0], pw));
                out.extend_from_slice(row);
                out.extend(std::iter::repeat_n(row[w - 1], pw));
            }
        }
    }
    out
}

/// The adjoint of [`replicate_pad`]: the gradient of a padded tensor summed back onto the positions it copies.
pub fn fold_replicate_pad(g: &[f32], [b, c, t, h, w]: [usize; 5], [pt, ph, pw]: [usize; 3]) -> Vec<f32> {
    let (tp, hp, wp) = (t + pt, h + 2 * ph, w + 2 * pw);
    let mut out = vec![0.0f32; b * c * t * h * w];
    for (plane, gp) in out.chunks_mut(t * h * w).zip(g.chunks(tp * hp * wp)) {
        for ti in 0..tp {
            let frame = &mut plane[source(ti, pt, t) * h * w..][..h * w];
            for hi in 0..hp {
                let row = &mut frame[source(hi, ph, h) * w..][..w];
                for (wi, &v) in gp[(ti * hp + hi) * wp..][..wp].iter().enumerate() {
                    row[source(wi, pw, w)] += v;
                }
            }
        }
    }
    out
}

/// Columns of the im2col matrix of `s`: `c_in·kt·kh·kw`.
fn width(s: &Conv3dShape) -> usize {
    s.c_in * s.kernel.iter().product::<usize>()
}

/// Index in one padded input channel of the first tap of output position `p`.
fn origin(s: &Conv3dShape, p: usize) -> usize {
    let ([_, hp, wp], [st, sh, sw], [_, ho, wo]) = (s.padded(), s.stride, s.output());
    let (t, y, x) = (p / (ho * wo), (p / wo) % ho, p % wo);
    (t * st * hp + y * sh) * wp + x * sw
}

/// The im2col matrix `[r, c_in·kt·kh·kw]` of the `r` output positions from `p0` of the convolution `s`, read from
/// its already padded input `x: [c_in, T + pt, H + 2·ph, W + 2·pw]` (columns ordered `(channel, dt, dh, dw)`,
/// like a `[c_out, c_in, kt, kh, kw]` weight), rows in parallel.
pub fn gather(s: &Conv3dShape, x: &[f32], p0: usize, r: usize) -> Vec<f32> {
    let ([tp, hp, wp], [kt, kh, kw]) = (s.padded(), s.kernel);
    let k = width(s);
    let mut col = vec![0.0f32; r * k];
    col.par_chunks_mut(k).enumerate().for_each(|(row, dst)| {
        let origin = origin(s, p0 + row);
        let mut runs = dst.chunks_exact_mut(kw);
        for ci in 0..s.c_in {
            for a in 0..kt {
                for b in 0..kh {
                    let src = &x[ci * tp * hp * wp + origin + (a * hp + b) * wp..][..kw];
                    // An element loop: runs are short (3 for the tokenizer), too short for a call to memmove.
                    for (d, &v) in runs.next().expect("k = c_in·kt·kh·kw").iter_mut().zip(src) {
                        *d = v;
                    }
                }
            }
        }
    });
    col
}

/// The adjoint of [`gather`]: adds the im2col-shaped `col` (`[r, c_in·kt·kh·kw]`) back onto the padded input
/// positions `x` it was read from, input channels in parallel.
pub fn scatter_add(s: &Conv3dShape, col: &[f32], x: &mut [f32], p0: usize, r: usize) {
    let ([tp, hp, wp], [kt, kh, kw]) = (s.padded(), s.kernel);
    let k = width(s);
    x[..s.c_in * tp * hp * wp].par_chunks_mut(tp * hp * wp).enumerate().for_each(|(ci, plane)| {
        for row in 0..r {
            let origin = origin(s, p0 + row);
            let mut runs = col[row * k + ci * kt * kh * kw..][..kt * kh * kw].chunks_exact(kw);
            for a in 0..kt {
                for b in 0..kh {
                    let dst = &mut plane[origin + (a * hp + b) * wp..][..kw];
                    for (d, &v) in dst.iter_mut().zip(runs.next().expect("kt·kh runs of kw")) {
                        *d += v;
                    }
                }
            }
        }
    });
}

/// Columns `p0..p0 + r` of the row-major matrix `m: [rows, cols]`, as a `[rows, r]` matrix.
pub fn columns(m: &[f32], [rows, cols]: [usize; 2], p0: usize, r: usize) -> Vec<f32> {
    if p0 == 0 && r == cols {
        return m[..rows * cols].to_vec();
    }
    let mut out = Vec::with_capacity(rows * r);
    for row in m[..rows * cols].chunks(cols) {
        out.extend_from_slice(&row[p0..p0 + r]);
    }
    out
}

/// The sums over batches and positions of `g: [batch, channels, positions]`, per channel (a bias gradient).
pub fn channel_sums(g: &[f32], [batch, channels, positions]: [usize; 3]) -> Vec<f32> {
    let mut sums = vec![0.0f64; channels];
    for (i, plane) in g[..batch * channels * positions].chunks(positions.max(1)).enumerate() {
        let mut lanes = [0.0f32; 16];
        for (j, &v) in plane.iter().enumerate() {
            lanes[j % 16] += v;
        }
        sums[i % channels] += lanes.iter().map(|&v| v as f64).sum::<f64>();
    }
    sums.iter().map(|&v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_channel_sums() {
        let m: Vec<f32> = (0..12).map(|v| v as f32).collect();
        assert_eq!(columns(&m, [3, 4], 1, 2), vec![1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
        assert_eq!(columns(&m, [3, 4], 0, 4), m);
        // [batch 2, channels 3, positions 2]
        assert_eq!(
            channel_sums(&m, [2, 3, 2]),
            vec![0.0 + 1.0 + 6.0 + 7.0, 2.0 + 3.0 + 8.0 + 9.0, 4.0 + 5.0 + 10.0 + 11.0]
        );
    }

    #[test]
    fn gather_reads_each_kernel_offset_and_scatter_is_its_adjoint() {
        // One channel, padded 3×4×5 (input 3×2×3 with pad (0, 1, 1)), kernel 2×2×3, stride (1, 2, 1): output 2×2×3.
        let g =
            Conv3dShape { c_in: 1, c_out: 1, input: [3, 2, 3], pad: [0, 1, 1], kernel: [2, 2, 3], stride: [1, 2, 1] };
        assert_eq!((g.padded(), g.output()), ([3, 4, 5], [2, 2, 3]));
        let x: Vec<f32> = (0..60).map(|v| v as f32).collect();
        let col = gather(&g, &x, 0, 12);
        // Row 7 is output (t, y, x) = (1, 0, 1); its column (a, b, c) = (1, 1, 2) reads x[1 + 1, 0 + 1, 1 + 2].
        assert_eq!(col[7 * 12 + (2 + 1) * 3 + 2], ((2 * 4 + 1) * 5 + 3) as f32);
        // Chunks give the same rows.
        assert_eq!(gather(&g, &x, 5, 4), col[5 * 12..9 * 12].to_vec());
        let w: Vec<f32> = (0..col.len()).map(|i| ((i * 37) % 11) as f32 - 5.0).collect();
        let mut back = vec![0.0f32; 60];
        scatter_add(&g, &w, &mut back, 0, 12);
        let lhs: f32 = col.iter().zip(&w).map(|(a, b)| a * b).sum();
        let rhs: f32 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
        assert_eq!(lhs, rhs);
    }
}
