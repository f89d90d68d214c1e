//! Depth-to-space upsampling with causal time handling (reference §1.2, `Depth2Space3D`).

use burn::prelude::*;

/// Moves channel blocks into time, height and width.
///
/// The channel axis of the input is read as `(tb, hb, wb, c)` with `tb` most significant (the official order,
/// which differs from `pixel_shuffle`): output `(c, t·ft + tb, h·fh + hb, w·fw + wb)` takes input channel
/// `((tb·fh + hb)·fw + wb)·C + c` at `(t, h, w)`. When `ft > 1` the first `ft − 1` output frames are dropped,
/// so `T` latent frames become `ft·(T − 1) + 1` frames (causal time upsampling).
#[derive(Module, Clone, Debug)]
pub struct DepthToSpace3d {
    /// Factors `[time, height, width]`.
    pub factors: [usize; 3],
}

impl DepthToSpace3d {
    /// A depth-to-space with the given `[time, height, width]` factors.
    pub fn new(factors: [usize; 3]) -> Self {
        Self { factors }
    }

    /// `[batch, ft·fh·fw·C, T, H, W]` → `[batch, C, ft·T − (ft − 1), fh·H, fw·W]`.
    pub fn forward<B: Backend>(&self, x: Tensor<B, 5>) -> Tensor<B, 5> {
        let [ft, fh, fw] = self.factors;
        let [b, cin, t, h, w] = x.dims();
        let c = cin / (ft * fh * fw);
        assert_eq!(c * ft * fh * fw, cin, "DepthToSpace3d: {cin} channels are not divisible by {ft}·{fh}·{fw}");
        let y = x.reshape([b, ft, fh, fw, c, t, h, w]).permute([0, 4, 5, 1, 6, 2, 7, 3]).reshape([
            b,
            c,
            t * ft,
            h * fh,
            w * fw,
        ]);
        if ft > 1 { y.slice([0..b, 0..c, ft - 1..t * ft, 0..h * fh, 0..w * fw]) } else { y }
    }
}
