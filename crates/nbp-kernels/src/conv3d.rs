//! 3D convolution without padding, `out = w ⊛ x + b` over `[channels, time, height, width]` volumes, as an
//! implicit matrix product.
//!
//! The input is copied once, padded, to the channels-last layout `[T, H, W, c_in]` and the weight to
//! `[c_out, kt, kh, kw, c_in]`. For every `(dt, dh)` the `kw·c_in` inputs of an output position are then
//! contiguous, as are their weights for an output channel, so the register tile of the linear kernel (4 output positions
//! of one output row × 6 output channels) sums over taps and chunks of input channels without an im2col copy.
//! Work is split over the cores by output rows; each task keeps a tile's weights in cache while it walks its
//! rows.
//!
//! Stride-1 convolutions with 3×3 spatial taps over large enough frames take [`crate::winograd`] instead, from
//! the same padded channels-last copy.

use rayon::prelude::*;

use crate::linear::SyncPtr;
use crate::winograd;

/// Sizes of a [`conv3d`] call (one batch item).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dShape {
    pub c_in: usize,
    pub c_out: usize,
    /// Input `[time, height, width]`, before padding.
    pub input: [usize; 3],
    /// Replicate padding `[time, height, width]`: `pad[0]` copies of the first frame in front (none at the back,
    /// so the convolution is causal in time), `pad[1]` copies of the first and last row and `pad[2]` of the first
    /// and last column on each side.
    pub pad: [usize; 3],
    /// Kernel `[time, height, width]`.
    pub kernel: [usize; 3],
    /// Stride `[time, height, width]`.
    pub stride: [usize; 3],
}

impl Conv3dShape {
    /// Padded input `[time, height, width]`.
    pub fn padded(&self) -> [usize; 3] {
        let [t, h, w] = self.input;
        let [pt, ph, pw] = self.pad;
        [t + pt, h + 2 * ph, w + 2 * pw]
    }

    /// Output `[time, height, width]`: `(padded − kernel) / stride + 1` on each axis.
    pub fn output(&self) -> [usize; 3] {
        let padded = self.padded();
        std::array::from_fn(|a| (padded[a] - self.kernel[a]) / self.stride[a] + 1)
    }
}

/// Bytes of input rows per task, so that a task's rows stay in the L2 cache while a tile of weights walks them.
const TASK_INPUT_BYTES: usize = 1 << 20;

/// `out[o, t, h, w] = b[o] + Σ_{c, dt, dh, dw} w[o, c, dt, dh, dw]·x̃[c, t·st + dt, h·sh + dh, w·sw + dw]`, where
/// `x̃` is `x: [c_in, T, H, W]` with the replicate padding of [`Conv3dShape::pad`], `w: [c_out, c_in, kt, kh, kw]` (PyTorch's layout), `b: [c_out]`,
/// `out: [c_out, T', H', W']` ([`Conv3dShape::output`]).
///
/// Returns `false` (and leaves `out` untouched) when the CPU lacks AVX-512. The vector lanes run over input
/// channels, so inputs with only a few channels (an RGB video) use a fraction of each vector. Stride-1
/// convolutions with 3×3 spatial taps over large enough frames go through Winograd's transform
/// ([`crate::winograd`]: 2.25× fewer multiplications; results differ from the direct product by rounding).
///
/// # Panics
/// When a stride is zero, the kernel is larger than the input, or a slice is shorter than its shape says.
pub fn conv3d(x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32], s: Conv3dShape) -> bool {
    run(x, w, bias, out, s, winograd::pays_off(&s).then_some(winograd::CHUNK_BYTES))
}

/// [`conv3d`], through [`winograd`] (with output frames in chunks of at most `winograd` bytes of intermediate
/// results) where that applies, or always as the direct product when `winograd` is `None`.
pub(crate) fn run(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: Conv3dShape,
    winograd: Option<usize>,
) -> bool {
    let [t, h, wd] = s.padded();
    assert!(
        (0..3).all(|a| s.stride[a] > 0 && s.kernel[a] > 0 && s.kernel[a] <= s.padded()[a] && s.input[a] > 0),
        "conv3d: kernel {:?} with stride {:?} does not fit the input {:?} padded by {:?}",
        s.kernel,
        s.stride,
        s.input,
        s.pad
    );
    let [to, ho, wo] = s.output();
    let taps = s.kernel.iter().product::<usize>();
    let (plane, positions, kdim) = (t * h * wd, to * ho * wo, taps * s.c_in);
    let [t0, h0, w0] = s.input;
    let [pt, ph, pw] = s.pad;
    assert!(x.len() >= s.c_in * t0 * h0 * w0, "conv3d: input shorter than {} channels of {:?}", s.c_in, s.input);
    assert!(w.len() >= s.c_out * kdim, "conv3d: weight shorter than {} × {kdim}", s.c_out);
    assert!(out.len() >= s.c_out * positions, "conv3d: output shorter than {} × {positions}", s.c_out);
    assert!(bias.is_none_or(|b| b.len() >= s.c_out), "conv3d: bias shorter than {}", s.c_out);
    if !crate::available() {
        return false;
    }
    if s.c_out == 0 || s.c_in == 0 {
        out[..s.c_out * positions]
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v = bias.map_or(0.0, |b| b[i / positions]));
        return true;
    }
    let ci = s.c_in;
    let mut xt = vec![0.0f32; plane * ci];
    xt.par_chunks_mut(wd * ci).enumerate().for_each(|(row, dst)| {
        // Padded row (tp, hp) copies input row (clamped tp − pt, clamped hp − ph).
        let src_t = (row / h).saturating_sub(pt).min(t0 - 1);
        let src_h = (row % h).saturating_sub(ph).min(h0 - 1);
        let src_row = (src_t * h0 + src_h) * w0;
        // 16 × 16 blocks of (channels, positions), so that the lines read and written stay in L1.
        for c0 in (0..ci).step_by(16) {
            for i0 in (0..wd).step_by(16) {
                for c in c0..(c0 + 16).min(ci) {
                    let src = &x[c * t0 * h0 * w0 + src_row..][..w0];
                    for i in i0..(i0 + 16).min(wd) {
                        dst[i * ci + c] = src[i.saturating_sub(pw).min(w0 - 1)];
                    }
                }
            }
        }
    });
    if let Some(chunk_bytes) = winograd.filter(|_| winograd::applies(&s)) {
        // SAFETY: AVX-512 was detected; the buffers hold their shapes (checked above).
        unsafe { winograd::conv3d(&xt, w, bias, out, s, chunk_bytes) };
        return true;
    }
    let mut wt = vec![0.0f32; s.c_out * kdim];
    wt.par_chunks_mut(kdim).enumerate().for_each(|(o, dst)| {
        for c in 0..ci {
            for tap in 0..taps {
                dst[tap * ci + c] = w[o * kdim + c * taps + tap];
            }
        }
    });
    let rows = to * ho;
    let threads = rayon::current_num_threads().max(1);
    let by_cache = (TASK_INPUT_BYTES / (4 * wd * ci * s.stride[1])).max(1);
    let per_task = by_cache.min(rows.div_ceil(4 * threads)).max(1);
    let out_ptr = SyncPtr(out.as_mut_ptr());
    (0..rows.div_ceil(per_task)).into_par_iter().for_each(|task| {
        let first = task * per_task;
        let last = (first + per_task).min(rows);
        // SAFETY: AVX-512 was detected; the buffers hold their shapes (checked above) and each task writes the
        // output positions of its own rows.
        unsafe { x86::rows(&xt, &wt, out_ptr.get(), s, first..last) }
    });
    if let Some(b) = bias {
        out[..s.c_out * positions]
            .par_chunks_mut(positions)
            .zip(b)
            .for_each(|(o, &bv)| o.iter_mut().for_each(|v| *v += bv));
    }
    true
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    pub(super) unsafe fn rows(_: &[f32], _: &[f32], _: *mut f32, _: super::Conv3dShape, _: std::ops::Range<usize>) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::Conv3dShape;
    use crate::linear::x86::{Tile, accumulate, store};
    use crate::linear::{MR, NR};

    /// Output positions per block of a row (a multiple of [`MR`]); 8, 16, 64 and 128 measured slower.
    const POSITIONS: usize = 32;
    /// Elements of the inner dimension per pass over a block of positions: a whole `(dt, dh)` run `kw·c_in` for up
    /// to 512 channels, so that the accumulators go to memory once per run (measured: 149 GFLOP/s against 124 with
    /// chunks of 256, for 128 → 128 channels at 17×128×128; with 32 positions per block, 165).
    const KC: usize = 1536;

    /// All output channels of the output rows `rows` (row = `t'·H' + h'`).
    ///
    /// # Safety
    /// AVX-512F; `xt`: the input channels-last, `wt`: the weight as `[c_out, taps, c_in]`, `out`: the whole
    /// `[c_out, T'·H'·W']` output, whose positions in `rows` no other thread writes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn rows(xt: &[f32], wt: &[f32], out: *mut f32, s: Conv3dShape, rows: std::ops::Range<usize>) {
        let [_, h, wd] = s.padded();
        let [kt, kh, kw] = s.kernel;
        let [st, sh, sw] = s.stride;
        let [to, ho, wo] = s.output();
        let ci = s.c_in;
        let kdim = kt * kh * kw * ci;
        let positions = to * ho * wo;
        let mut acc = [[_mm512_setzero_ps(); MR * NR]; POSITIONS / MR];
        let mut o0 = 0;
        while o0 < s.c_out {
            let no = NR.min(s.c_out - o0);
            for row in rows.clone() {
                let (ot, oh) = (row / ho, row % ho);
                let mut p0 = 0;
                while p0 < wo {
                    let np = POSITIONS.min(wo - p0);
                    let tiles = np.div_ceil(MR);
                    let acc = &mut acc[..tiles];
                    acc.iter_mut().for_each(|a| *a = [_mm512_setzero_ps(); MR * NR]);
                    for dt in 0..kt {
                        for dh in 0..kh {
                            // The taps (dt, dh, 0..kw) of an output position read kw·c_in consecutive inputs, and
                            // their weights are consecutive too: one inner dimension of kw·c_in.
                            let in_row = ((ot * st + dt) * h + oh * sh + dh) * wd;
                            let tap = (dt * kh + dh) * kw;
                            let mut c0 = 0;
                            while c0 < kw * ci {
                                let len = KC.min(kw * ci - c0);
                                for (i, a) in acc.iter_mut().enumerate() {
                                    let p = p0 + i * MR;
                                    let mr = MR.min(p0 + np - p);
                                    // SAFETY: input positions in_row + (p + r)·sw + 0..kw for r < mr lie in the
                                    // padded input row, so elements c0..c0 + len of their kw·c_in inputs, and of
                                    // the weight rows o0..o0 + no from this tap on, are in bounds.
                                    unsafe {
                                        let t = Tile {
                                            x: xt.as_ptr().add((in_row + p * sw) * ci + c0),
                                            w: wt.as_ptr().add(o0 * kdim + tap * ci + c0),
                                            k: len,
                                            ldx: sw * ci,
                                            ldw: kdim,
                                        };
                                        accumulate(mr, no, t, a);
                                    }
                                }
                                c0 += len;
                            }
                        }
                    }
                    for (i, a) in acc.iter().enumerate() {
                        let p = p0 + i * MR;
                        let mr = MR.min(p0 + np - p);
                        // SAFETY: output channels o0..o0 + no at positions row·W' + p.. are in bounds and this
                        // task's.
                        unsafe { store(a, mr, no, (out.add(o0 * positions + row * wo + p), 1, positions), None) };
                    }
                    p0 += np;
                }
            }
            o0 += no;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::values;

    /// The definition, in double precision, padding by clamping the indices.
    fn reference(x: &[f32], w: &[f32], b: &[f32], s: Conv3dShape) -> Vec<f32> {
        let [t0, h0, w0] = s.input;
        let [kt, kh, kw] = s.kernel;
        let [to, ho, wo] = s.output();
        let src = |i: usize, pad: usize, n: usize| i.saturating_sub(pad).min(n - 1);
        let mut out = Vec::new();
        for o in 0..s.c_out {
            for (t, y, z) in (0..to).flat_map(|t| (0..ho).flat_map(move |y| (0..wo).map(move |z| (t, y, z)))) {
                let mut sum = b[o] as f64;
                for c in 0..s.c_in {
                    for (dt, dh, dw) in (0..kt).flat_map(|a| (0..kh).flat_map(move |b| (0..kw).map(move |c| (a, b, c))))
                    {
                        let ti = src(t * s.stride[0] + dt, s.pad[0], t0);
                        let yi = src(y * s.stride[1] + dh, s.pad[1], h0);
                        let zi = src(z * s.stride[2] + dw, s.pad[2], w0);
                        let xi = ((c * t0 + ti) * h0 + yi) * w0 + zi;
                        let wi = (((o * s.c_in + c) * kt + dt) * kh + dh) * kw + dw;
                        sum += x[xi] as f64 * w[wi] as f64;
                    }
                }
                out.push(sum as f32);
            }
        }
        out
    }

    /// [`run`] with random inputs, weights and bias (`winograd` as there) against [`reference`].
    fn assert_matches_the_definition(s: Conv3dShape, winograd: Option<usize>) {
        let x = values(s.c_in * s.input.iter().product::<usize>(), 1);
        let w = values(s.c_out * s.c_in * s.kernel.iter().product::<usize>(), 2);
        let b = values(s.c_out, 3);
        let want = reference(&x, &w, &b, s);
        let mut out = vec![f32::NAN; want.len()];
        assert!(run(&x, &w, Some(&b), &mut out, s, winograd));
        for (i, (a, e)) in out.iter().zip(&want).enumerate() {
            assert!((a - e).abs() <= 1e-4 * (1.0 + e.abs()), "{s:?} {winograd:?} element {i}: {a} vs {e}");
        }
    }

    #[test]
    fn winograd_matches_the_definition_and_the_direct_product() {
        if !crate::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        // (c_in, c_out, input, kt, pad, chunk bytes): channel tails, tiles that do not fill a block, a single
        // frame padded in time, one and two time taps, and budgets that force chunks of one or two output frames
        // (and one that asks for less than a frame); bands of 8 tiles, full and partial.
        let cases = [
            (16, 8, [3, 6, 8], 3, [2, 1, 1], super::winograd::CHUNK_BYTES),
            (21, 13, [5, 10, 14], 3, [2, 1, 1], 1),
            (40, 7, [4, 4, 6], 3, [2, 1, 1], 4 * 16 * 8 * (4 * 40 + 2 * 7)),
            (600, 6, [1, 2, 2], 3, [2, 1, 1], super::winograd::CHUNK_BYTES),
            (17, 9, [4, 8, 10], 2, [0, 0, 0], 1),
            // Weights too large to stay in cache: bands of 16 tiles, the last one half full.
            (96, 240, [1, 16, 18], 3, [2, 1, 1], super::winograd::CHUNK_BYTES),
        ];
        for &(c_in, c_out, input, kt, pad, chunk) in &cases {
            let s = Conv3dShape { c_in, c_out, input, pad, kernel: [kt, 3, 3], stride: [1, 1, 1] };
            assert!(super::winograd::applies(&s), "{s:?}");
            assert_matches_the_definition(s, Some(chunk));
            assert_matches_the_definition(s, None);
        }
        // Odd output sizes and strides take the direct product.
        let odd = Conv3dShape { c_in: 16, c_out: 4, input: [2, 5, 6], pad: [2, 1, 1], kernel: [3; 3], stride: [1; 3] };
        assert!(!super::winograd::applies(&odd));
        assert!(!super::winograd::applies(&Conv3dShape { stride: [1, 2, 2], input: [2, 8, 8], ..odd }));
        assert!(!super::winograd::applies(&Conv3dShape { c_in: 15, input: [2, 8, 8], ..odd }));
    }

    #[test]
    fn matches_the_definition_for_strides_edges_and_channel_chunks() {
        if !crate::available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            return;
        }
        // (c_in, c_out, input, kernel, stride, pad): full and partial tiles of positions and channels, temporal and
        // spatial strides, causal replicate padding (a single frame padded to three, too), and (dt, dh) runs
        // longer than one chunk of the inner dimension.
        let cases = [
            (16, 8, [3, 6, 7], [3, 3, 3], [1, 1, 1], [2, 1, 1]),
            (5, 3, [4, 5, 9], [3, 3, 3], [1, 1, 1], [0, 0, 0]),
            (20, 13, [5, 9, 21], [3, 3, 3], [2, 2, 2], [2, 1, 1]),
            (300, 6, [3, 4, 10], [3, 3, 3], [1, 1, 1], [2, 1, 1]),
            (600, 7, [1, 3, 6], [3, 3, 3], [1, 1, 1], [2, 1, 1]),
            (7, 12, [2, 3, 24], [1, 1, 1], [1, 1, 1], [0, 0, 0]),
        ];
        for &(c_in, c_out, input, kernel, stride, pad) in &cases {
            assert_matches_the_definition(Conv3dShape { c_in, c_out, input, pad, kernel, stride }, None);
        }
    }
}
