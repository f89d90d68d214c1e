//! Winograd's minimal filtering F(2×2, 3×3) for the 3×3 spatial taps of a stride-1 3D convolution (Lavin and
//! Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! Every 2×2 patch of an output frame (a *tile*) depends on the 4×4 window of each input frame under it. The
//! window is transformed, `U = Bᵀ·d·B`, the 3×3 kernel of each (output channel, input channel, time tap) is
//! transformed, `V = G·g·Gᵀ`, and then
//!
//! ```text
//! M[point, tile, o] = Σ_{dt, c} U[point, frame t + dt, tile, c] · V[point, o, dt, c]      (16 matrix products)
//! Y[tile, o]        = Aᵀ·M[·, tile, o]·A                                                 (the 2×2 outputs)
//! ```
//!
//! The matrix products take 16 multiplications per tile, channel pair and time tap where the direct
//! convolution takes 4·9 = 36: 2.25× fewer. They run on the register tile of the linear kernel, with the time
//! taps and input channels of a tile contiguous (`U` is laid out `[point, tile, frame, c_in]`), so the inner
//! dimension is `kt·c_in` long. The transforms themselves cost a few additions per element.
//!
//! ```text
//!      ⎡1  0 −1  0⎤        ⎡ 1    0    0 ⎤
//! Bᵀ = ⎢0  1  1  0⎥    G = ⎢ 1/2  1/2  1/2⎥    Aᵀ = ⎡1 1  1  0⎤
//!      ⎢0 −1  1  0⎥        ⎢ 1/2 −1/2  1/2⎥         ⎣0 1 −1 −1⎦
//!      ⎣0  1  0 −1⎦        ⎣ 0    0    1 ⎦
//! ```

use rayon::prelude::*;

use crate::conv3d::Conv3dShape;
use crate::linear::SyncPtr;

/// Points of the 4×4 transform.
const POINTS: usize = 16;
/// Tiles per register block of the products, and the fewest tiles per task.
const BAND: usize = 8;
/// Rows (tiles × output frames) over which a task reuses each point's weights, when those are too large to stay
/// in cache between tasks.
const ROWS_PER_WEIGHT_PASS: usize = 512;
/// Weight bytes per point up to which the weights stay in cache between tasks.
const CACHED_WEIGHT_BYTES: usize = 256 << 10;
/// Bytes of transformed input and products per task and chunk of output frames, so that they stay in the L2
/// cache between the transforms and the products.
pub(crate) const CHUNK_BYTES: usize = 3 << 19;

/// Whether [`conv3d`] computes this convolution: 3×3 spatial taps, stride 1, an even output height and width,
/// and at least 16 input channels (one vector).
pub(crate) fn applies(s: &Conv3dShape) -> bool {
    let [_, ho, wo] = s.output();
    s.kernel[1..] == [3, 3] && s.stride == [1, 1, 1] && ho % 2 == 0 && wo % 2 == 0 && s.c_in >= 16
}

/// Whether [`conv3d`] is faster than the direct product for this convolution: where it applies, with at least
/// 1024 tiles × output frames to spread the cost of transforming the weights over (measured on a 2-core Xeon:
/// 1.6× faster for 512 → 512 channels on 17×16×16, 1088 of them; 0.9× as fast on 5×16×16, 320 of them).
pub(crate) fn pays_off(s: &Conv3dShape) -> bool {
    let [to, ho, wo] = s.output();
    applies(s) && to * (ho / 2) * (wo / 2) >= 1024
}

thread_local! {
    /// Each worker's transformed input and products, kept between tasks and calls.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The convolution of [`crate::conv3d()`] when [`applies`] holds, from the padded input `xt` in channels-last
/// layout `[T + pad, H + 2·pad, W + 2·pad, c_in]`.
///
/// The tiles are split into bands of consecutive tiles, one task each, and the output frames into chunks whose
/// transformed input and products for a band fit in `chunk_bytes`; each task transforms its windows,
/// multiplies and transforms back, so that its intermediate results stay in the core's cache. Where a point's
/// weights are too large for the cache, bands and chunks grow so that each task reads them fewer times.
///
/// # Safety
/// AVX-512F; the slices hold their shapes.
pub(crate) unsafe fn conv3d(
    xt: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    s: Conv3dShape,
    chunk_bytes: usize,
) {
    let [_, hp, wp] = s.padded();
    let [to, ho, wo] = s.output();
    let kt = s.kernel[0];
    let (ci, co) = (s.c_in, s.c_out);
    let (tiles_h, tiles_w) = (ho / 2, wo / 2);
    let nt = tiles_h * tiles_w;
    let kdim = kt * ci;
    // Output channels padded to whole vectors.
    let cp = co.next_multiple_of(16);
    // V: [point, panel, kt·c_in, 48] (padded with zeros): for each point, panels of up to 48 output channels
    // (the columns of one register block), each a contiguous run of rows, one per input.
    let mut v = vec![0.0f32; POINTS * kdim * cp];
    let v_ptr = SyncPtr(v.as_mut_ptr());
    (0..co).into_par_iter().for_each(|o| {
        let (o0, width) = panel(o, cp);
        for c in 0..ci {
            for dt in 0..kt {
                let g: [f32; 9] = std::array::from_fn(|i| w[((o * ci + c) * kt + dt) * 9 + i]);
                let q = dt * ci + c;
                for (p, value) in transform_kernel(&g).into_iter().enumerate() {
                    // SAFETY: in bounds; each task writes the columns of its own output channel.
                    unsafe { *v_ptr.get().add(p * kdim * cp + o0 * kdim + q * width + o - o0) = value };
                }
            }
        }
    });
    let mut b = vec![0.0f32; cp];
    if let Some(bias) = bias {
        b[..co].copy_from_slice(&bias[..co]);
    }
    // Output frames per chunk for bands of BAND tiles: 4·16·BAND·((frames + kt − 1)·c_in + frames·cp) bytes.
    let fit = (chunk_bytes / (4 * POINTS * BAND)).saturating_sub((kt - 1) * ci) / (ci + cp);
    let (mut band, mut frames) = (BAND, fit.clamp(1, to));
    if 4 * kdim * cp > CACHED_WEIGHT_BYTES && band * frames < ROWS_PER_WEIGHT_PASS {
        // Each task streams all weights from memory: amortise them over more tiles and frames, with the
        // intermediate results in the L3 cache instead of L2 (for 256 → 256 channels on 17×64×64, 0.90 s
        // against 1.48 s with 64 rows per pass), keeping two tasks per core where the frame allows.
        frames = to.min(8);
        let threads = rayon::current_num_threads().max(1);
        let most = (nt / (2 * threads)).max(BAND) / BAND * BAND;
        band = (ROWS_PER_WEIGHT_PASS.div_ceil(frames)).next_multiple_of(BAND).min(most);
    }
    let frames = to.div_ceil(to.div_ceil(frames));
    let out_ptr = SyncPtr(out.as_mut_ptr());
    for t0 in (0..to).step_by(frames) {
        let f = frames.min(to - t0);
        let slots = f + kt - 1;
        let (u_len, m_len) = (POINTS * band * slots * ci, f * POINTS * band * cp);
        (0..nt.div_ceil(band)).into_par_iter().for_each(|task| {
            let tiles = task * band..((task + 1) * band).min(nt);
            SCRATCH.with_borrow_mut(|scratch| {
                if scratch.len() < u_len + m_len {
                    scratch.resize(u_len + m_len, 0.0);
                }
                let (u, m) = scratch.split_at_mut(u_len);
                let g = Geometry { hp, wp, ci, tiles_w, slots, band };
                // SAFETY: AVX-512 as the caller guarantees; U, V and M hold their shapes, and the band's output
                // positions are written by this task only.
                unsafe {
                    for slot in 0..slots {
                        x86::transform_input(xt, u, g, (t0 + slot, slot), tiles.clone());
                    }
                    for p in 0..POINTS {
                        x86::products(u, &v[p * kdim * cp..(p + 1) * kdim * cp], m, g, p, f, (cp, kt));
                    }
                    let planes = (out_ptr.get(), [to, ho, wo], co);
                    x86::transform_output(m, &b, planes, (t0, f), tiles.clone(), g);
                }
            });
        });
    }
}

/// Sizes of one chunk: the padded frame's height and width, input channels, tiles per row, frames held in the
/// transformed input, and tiles per task.
#[derive(Clone, Copy)]
struct Geometry {
    hp: usize,
    wp: usize,
    ci: usize,
    tiles_w: usize,
    slots: usize,
    /// Tiles per task (a multiple of [`BAND`]).
    band: usize,
}

/// Output channels per panel of the transformed weights (three vectors: the columns of one register block).
const PANEL: usize = 48;

/// First channel and width of the panel of the transformed weights that holds output channel `o`, of `cp`.
fn panel(o: usize, cp: usize) -> (usize, usize) {
    let o0 = o / PANEL * PANEL;
    (o0, PANEL.min(cp - o0))
}

/// `G·g·Gᵀ` of a row-major 3×3 kernel, row-major 4×4.
fn transform_kernel(g: &[f32; 9]) -> [f32; 16] {
    let col = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    // G·g: 4 rows of 3.
    let rows: [[f32; 3]; 4] = {
        let c: [[f32; 4]; 3] = std::array::from_fn(|j| col(g[j], g[3 + j], g[6 + j]));
        std::array::from_fn(|i| [c[0][i], c[1][i], c[2][i]])
    };
    let mut v = [0.0; 16];
    for (i, r) in rows.iter().enumerate() {
        v[4 * i..4 * i + 4].copy_from_slice(&col(r[0], r[1], r[2]));
    }
    v
}

#[cfg(not(target_arch = "x86_64"))]
mod x86 {
    use super::Geometry;

    pub(super) unsafe fn transform_input(
        _: &[f32],
        _: &mut [f32],
        _: Geometry,
        _: (usize, usize),
        _: std::ops::Range<usize>,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }

    pub(super) unsafe fn products(
        _: &[f32],
        _: &[f32],
        _: &mut [f32],
        _: Geometry,
        _: usize,
        _: usize,
        _: (usize, usize),
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }

    pub(super) unsafe fn transform_output(
        _: &[f32],
        _: &[f32],
        _: (*mut f32, [usize; 3], usize),
        _: (usize, usize),
        _: std::ops::Range<usize>,
        _: Geometry,
    ) {
        unreachable!("the kernels are only called after the AVX-512 check")
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BAND, Geometry, POINTS};

    /// `U[p, i, slot, c] = (Bᵀ·d·B)[p]` of the window under tile `tiles.start + i` of padded frame `frame`, 16
    /// channels at a time.
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_input(
        xt: &[f32],
        u: &mut [f32],
        g: Geometry,
        (frame, slot): (usize, usize),
        tiles: std::ops::Range<usize>,
    ) {
        let Geometry { hp, wp, ci, tiles_w, slots, band } = g;
        assert!(u.len() >= POINTS * band * slots * ci && slot < slots, "transform_input: U shorter than its shape");
        for (i, tile) in tiles.enumerate() {
            let (th, tw) = (tile / tiles_w, tile % tiles_w);
            assert!(xt.len() >= ((frame * hp + 2 * th + 4) * wp) * ci, "transform_input: window outside the input");
            let mut c = 0;
            while c < ci {
                let mask: __mmask16 = (1u32 << (ci - c).min(16)).wrapping_sub(1) as __mmask16;
                // SAFETY: the window's rows 2·th + i and columns 2·tw + j are inside the padded frame (asserted
                // above for the last row), and the masked lanes stay inside the channels.
                let d: [[__m512; 4]; 4] = std::array::from_fn(|r| {
                    std::array::from_fn(|j| unsafe {
                        let at = ((frame * hp + 2 * th + r) * wp + 2 * tw + j) * ci + c;
                        _mm512_maskz_loadu_ps(mask, xt.as_ptr().add(at))
                    })
                });
                // Bᵀ·d, column by column.
                let t: [[__m512; 4]; 4] = [
                    std::array::from_fn(|j| _mm512_sub_ps(d[0][j], d[2][j])),
                    std::array::from_fn(|j| _mm512_add_ps(d[1][j], d[2][j])),
                    std::array::from_fn(|j| _mm512_sub_ps(d[2][j], d[1][j])),
                    std::array::from_fn(|j| _mm512_sub_ps(d[1][j], d[3][j])),
                ];
                for (r, row) in t.iter().enumerate() {
                    // (Bᵀ·d)·B, row by row.
                    let out = [
                        _mm512_sub_ps(row[0], row[2]),
                        _mm512_add_ps(row[1], row[2]),
                        _mm512_sub_ps(row[2], row[1]),
                        _mm512_sub_ps(row[1], row[3]),
                    ];
                    for (j, value) in out.into_iter().enumerate() {
                        let p = 4 * r + j;
                        // SAFETY: point p, tile i, this slot and channels c.. (masked) lie in U (asserted above).
                        unsafe {
                            let at = ((p * band + i) * slots + slot) * ci + c;
                            _mm512_mask_storeu_ps(u.as_mut_ptr().add(at), mask, value)
                        };
                    }
                }
                c += 16;
            }
        }
    }

    /// `M[frame, p, i, o] = Σ_{dt, c} U[p, i, frame + dt, c]·V[p, dt·c_in + c, o]` for one point `p`, all
    /// `g.band` tiles of the task (rows past its end hold stale inputs and give products nobody reads), the
    /// chunk's `frames` output frames and the `cp` padded output channels (`v` holds point `p`'s panels
    /// `[cp / 48, kt·c_in, 48]`).
    ///
    /// # Safety
    /// AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn products(
        u: &[f32],
        v: &[f32],
        m: &mut [f32],
        g: Geometry,
        p: usize,
        frames: usize,
        (cp, kt): (usize, usize),
    ) {
        let Geometry { ci, slots, band, .. } = g;
        let kdim = kt * ci;
        assert!(
            cp % 16 == 0
                && band % BAND == 0
                && frames + kt - 1 <= slots
                && u.len() >= POINTS * band * slots * ci
                && v.len() >= kdim * cp
                && m.len() >= frames * POINTS * band * cp,
            "products: a buffer shorter than its shape"
        );
        for o0 in (0..cp).step_by(super::PANEL) {
            let width = super::panel(o0, cp).1;
            for (frame, r0) in (0..frames).flat_map(|f| (0..band).step_by(BAND).map(move |r| (f, r))) {
                // SAFETY: the rows of the block's tiles hold kt·c_in inputs from this frame on (frames + kt − 1 ≤
                // slots), the weight rows hold cp channels from o0 on, and M holds this frame, point and block
                // (asserted above).
                unsafe {
                    let x = u.as_ptr().add(((p * band + r0) * slots + frame) * ci);
                    let w = v.as_ptr().add(o0 * kdim);
                    let dst = m.as_mut_ptr().add(((frame * POINTS + p) * band + r0) * cp + o0);
                    let t = (x, slots * ci, w, width, kdim, dst, cp);
                    match width / 16 {
                        1 => block::<1>(t),
                        2 => block::<2>(t),
                        _ => block::<3>(t),
                    }
                }
            }
        }
    }

    /// `dst[r·ldd + o] = Σ_q x[r·ldx + q]·w[q·ldw + o]` for the [`BAND`] rows `r` and `16·C` columns `o`: the
    /// accumulators (8 × C vectors) stay in registers, each input is broadcast to a vector and multiplies `C`
    /// vectors of weights, and no horizontal sums are needed.
    ///
    /// # Safety
    /// AVX-512F; the rows of `x`, `w` and `dst` are in bounds.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn block<const C: usize>(
        (x, ldx, w, ldw, k, dst, ldd): (*const f32, usize, *const f32, usize, usize, *mut f32, usize),
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; BAND];
        for q in 0..k {
            // SAFETY: as the caller guarantees.
            let wv: [__m512; C] = std::array::from_fn(|j| unsafe { _mm512_loadu_ps(w.add(q * ldw + 16 * j)) });
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_set1_ps(unsafe { *x.add(r * ldx + q) });
                for j in 0..C {
                    row[j] = _mm512_fmadd_ps(xv, wv[j], row[j]);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (j, a) in row.iter().enumerate() {
                // SAFETY: as the caller guarantees.
                unsafe { _mm512_storeu_ps(dst.add(r * ldd + 16 * j), *a) };
            }
        }
    }

    /// `out[o, t0 + frame, 2·th + a, 2·tw + b] = (Aᵀ·M[frame, ·, i, o]·A)[a, b] + bias[o]` for the tiles
    /// `tiles` (tile `tiles.start + i` at row `th`, column `tw`), 16 output channels at a time.
    ///
    /// # Safety
    /// AVX-512F; `out` holds `[c_out, T', H', W']` (`planes` = (out, [T', H', W'], c_out)), whose positions
    /// under `tiles` no other thread writes; `bias` holds the padded channels.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transform_output(
        m: &[f32],
        bias: &[f32],
        (out, [to, ho, wo], co): (*mut f32, [usize; 3], usize),
        (t0, frames): (usize, usize),
        tiles: std::ops::Range<usize>,
        g: Geometry,
    ) {
        let Geometry { tiles_w, band, .. } = g;
        let cp = bias.len();
        assert!(
            m.len() >= frames * POINTS * band * cp && co <= cp && tiles.len() <= band,
            "transform_output: M shorter than its shape"
        );
        let mut y = [[0.0f32; 16]; 4];
        for frame in 0..frames {
            for (i, tile) in tiles.clone().enumerate() {
                let (th, tw) = (tile / tiles_w, tile % tiles_w);
                let corner = (t0 + frame) * ho * wo + 2 * th * wo + 2 * tw;
                for o0 in (0..co).step_by(16) {
                    // SAFETY: the 16 points of this frame, tile and channels lie in M (asserted above).
                    let mp = |p: usize| unsafe {
                        _mm512_loadu_ps(m.as_ptr().add(((frame * POINTS + p) * band + i) * cp + o0))
                    };
                    let add3 = |a, b, c| _mm512_add_ps(_mm512_add_ps(a, b), c);
                    let sub3 = |a, b, c| _mm512_sub_ps(_mm512_sub_ps(a, b), c);
                    // Aᵀ·M: two rows of four.
                    let r0: [__m512; 4] = std::array::from_fn(|j| add3(mp(j), mp(4 + j), mp(8 + j)));
                    let r1: [__m512; 4] = std::array::from_fn(|j| sub3(mp(4 + j), mp(8 + j), mp(12 + j)));
                    // SAFETY: the bias holds cp channels.
                    let b = unsafe { _mm512_loadu_ps(bias.as_ptr().add(o0)) };
                    let outs = [
                        add3(r0[0], r0[1], r0[2]),
                        sub3(r0[1], r0[2], r0[3]),
                        add3(r1[0], r1[1], r1[2]),
                        sub3(r1[1], r1[2], r1[3]),
                    ];
                    for (dst, value) in y.iter_mut().zip(outs) {
                        // SAFETY: a row of 16 floats.
                        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), _mm512_add_ps(value, b)) };
                    }
                    // The four outputs of a channel are the same lane of the four rows of `y`.
                    #[allow(clippy::needless_range_loop)]
                    for l in 0..16.min(co - o0) {
                        // SAFETY: output channel o0 + l, this frame and the tile's 2×2 positions are in bounds.
                        unsafe {
                            let at = out.add((o0 + l) * to * ho * wo + corner);
                            *at = y[0][l];
                            *at.add(1) = y[1][l];
                            *at.add(wo) = y[2][l];
                            *at.add(wo + 1) = y[3][l];
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_one_dimensional_transforms_compute_a_correlation() {
        // With g supported on one row and d on one row, the 2D transform reduces to F(2, 3) along a row.
        let g = [0.0, 0.0, 0.0, 1.5, -2.0, 0.25, 0.0, 0.0, 0.0];
        let v = transform_kernel(&g);
        let d = [3.0f32, -1.0, 2.0, 5.0];
        // U = Bᵀ·d·B for d in row 1 of the window (B's row transform of the one-hot row 1 is (0, 1, −1, 1)).
        let row_t = [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]];
        let col = [0.0f32, 1.0, -1.0, 1.0];
        let mut m = [0.0f32; 16];
        for i in 0..4 {
            for j in 0..4 {
                m[4 * i + j] = col[i] * row_t[j] * v[4 * i + j];
            }
        }
        // Aᵀ·M·A, written out.
        let a: [f32; 4] = std::array::from_fn(|j| m[j] + m[4 + j] + m[8 + j]);
        let b: [f32; 4] = std::array::from_fn(|j| m[4 + j] - m[8 + j] - m[12 + j]);
        let y = [a[0] + a[1] + a[2], a[1] - a[2] - a[3], b[0] + b[1] + b[2], b[1] - b[2] - b[3]];
        // Output row 0 sees input row 1 through kernel row 1; output row 1 sees it through kernel row 0 (zero).
        let want0 = d[0] * 1.5 - d[1] * 2.0 + d[2] * 0.25;
        let want1 = d[1] * 1.5 - d[2] * 2.0 + d[3] * 0.25;
        assert_eq!(y, [want0, want1, 0.0, 0.0]);
    }
}
