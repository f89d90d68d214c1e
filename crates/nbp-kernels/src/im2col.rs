//! Helpers of the convolution's backward pass in training: replicate padding and its adjoint, and the im2col
//! gather and scatter that turn a convolution's weight and input gradients into matrix products. Plain Rust,
//! compiled at opt-level 3 with the other kernels.

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

/// Where the kernel of a convolution (no padding of its own, no dilation) reads its padded input.
pub struct Im2Col {
    /// Input channels.
    pub c_in: usize,
    /// Padded input `[time, height, width]`.
    pub padded: [usize; 3],
    /// Kernel `[time, height, width]`.
    pub kernel: [usize; 3],
    /// Stride `[time, height, width]`.
    pub stride: [usize; 3],
    /// Output `[time, height, width]`.
    pub output: [usize; 3],
}

impl Im2Col {
    /// Calls `f(row, column, input index)` for the `r` output positions from `p0`, every input channel and kernel
    /// offset (row-major `[r, c_in·kt·kh·kw]` columns), with runs of `kw` consecutive columns.
    fn for_each_run(&self, p0: usize, r: usize, mut f: impl FnMut(usize, usize, usize)) {
        let ([tp, hp, wp], [kt, kh, kw], [st, sh, sw], [_, ho, wo]) =
            (self.padded, self.kernel, self.stride, self.output);
        for row in 0..r {
            let p = p0 + row;
            let (t, y, x) = (p / (ho * wo), (p / wo) % ho, p % wo);
            let mut column = 0;
            for ci in 0..self.c_in {
                for a in 0..kt {
                    for b in 0..kh {
                        f(row, column, ((ci * tp + t * st + a) * hp + y * sh + b) * wp + x * sw);
                        column += kw;
                    }
                }
            }
        }
    }

    /// The im2col matrix `[r, c_in·kt·kh·kw]` of the `r` output positions from `p0`.
    pub fn gather(&self, x: &[f32], p0: usize, r: usize) -> Vec<f32> {
        let kw = self.kernel[2];
        let k = self.c_in * self.kernel.iter().product::<usize>();
        let mut col = vec![0.0f32; r * k];
        self.for_each_run(p0, r, |row, column, i| col[row * k + column..][..kw].copy_from_slice(&x[i..i + kw]));
        col
    }

    /// Adds the im2col-shaped `col` (`[r, c_in·kt·kh·kw]`) back onto the input positions it was read from.
    pub fn scatter_add(&self, col: &[f32], x: &mut [f32], p0: usize, r: usize) {
        let kw = self.kernel[2];
        let k = self.c_in * self.kernel.iter().product::<usize>();
        self.for_each_run(p0, r, |row, column, i| {
            for (d, &v) in x[i..i + kw].iter_mut().zip(&col[row * k + column..][..kw]) {
                *d += v;
            }
        });
    }
}
