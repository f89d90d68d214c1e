//! Finite scalar quantisation (FSQ, reference §1.6).

use burn::prelude::*;

/// FSQ constants of one code dimension with `levels` quantisation levels, computed in `f32` exactly as the
/// official code does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsqDim {
    /// Number of levels `L`.
    pub levels: usize,
    /// `(L − 1)·(1 − 1e-3)/2`: the bound of `tanh`'s output.
    pub half_l: f32,
    /// `0.5` for even `L` (the integer grid is then `−L/2 … L/2 − 1`), else `0`.
    pub offset: f32,
    /// `tan(offset / half_l)`, so that `bound(0) = 0` for even `L`.
    pub shift: f32,
    /// `⌊L/2⌋`: integer `q` maps to the code `q / half_width`.
    pub half_width: i64,
    /// Place value of this digit in the code index (exclusive cumulative product of the levels).
    pub basis: i64,
}

/// Finite scalar quantiser: each of the `D` dimensions is bounded with `tanh`, rounded to one of `L_i`
/// integer levels (half to even) and rescaled to `[-1, 1]`. The code index is the mixed-radix number of the
/// digits `k_i = q_i + ⌊L_i/2⌋`, dimension 0 least significant. Levels `[8,8,8,5,5,5]` give 64 000 codes with
/// the basis `[1, 8, 64, 512, 2560, 12800]`.
#[derive(Module, Clone, Debug)]
pub struct Fsq {
    /// Levels per dimension.
    pub levels: Vec<usize>,
}

impl Fsq {
    /// A quantiser with the given levels (each at least 2).
    pub fn new(levels: Vec<usize>) -> Self {
        assert!(!levels.is_empty() && levels.iter().all(|&l| l >= 2), "FSQ levels must be ≥ 2, got {levels:?}");
        Self { levels }
    }

    /// Number of code dimensions `D`.
    pub fn dim(&self) -> usize {
        self.levels.len()
    }

    /// Number of codes `∏ L_i`.
    pub fn codebook_size(&self) -> usize {
        self.levels.iter().product()
    }

    /// The per-dimension constants.
    pub fn dims(&self) -> Vec<FsqDim> {
        let mut basis = 1i64;
        self.levels
            .iter()
            .map(|&l| {
                let half_l = (l as f32 - 1.0) * (1.0f32 - 1e-3) / 2.0;
                let offset = if l % 2 == 0 { 0.5f32 } else { 0.0 };
                let shift = ((offset as f64) / (half_l as f64)).tan() as f32;
                let d = FsqDim { levels: l, half_l, offset, shift, half_width: (l / 2) as i64, basis };
                basis *= l as i64;
                d
            })
            .collect()
    }

    fn per_dim<B: Backend>(&self, f: impl Fn(&FsqDim) -> f32, device: &B::Device) -> Tensor<B, 5> {
        let values: Vec<f32> = self.dims().iter().map(f).collect();
        Tensor::<B, 1>::from_floats(values.as_slice(), device).reshape([1, self.dim(), 1, 1, 1])
    }

    /// `bound(z) = tanh(z + shift)·half_l − offset`, per dimension. `[B, D, T, H, W]` → same.
    pub fn bound<B: Backend>(&self, z: Tensor<B, 5>) -> Tensor<B, 5> {
        let device = z.device();
        let shift = self.per_dim(|d| d.shift, &device);
        let half_l = self.per_dim(|d| d.half_l, &device);
        let offset = self.per_dim(|d| d.offset, &device);
        (z + shift).tanh() * half_l - offset
    }

    /// Quantises encoder outputs `z: [B, D, T, H, W]` into codes `[B, D, T, H, W]` (values in `[-1, 1]`) and
    /// indices `[B, T, H, W]`.
    pub fn quantize<B: Backend>(&self, z: Tensor<B, 5>) -> (Tensor<B, 5>, Tensor<B, 4, Int>) {
        let device = z.device();
        let codes = self.bound(z).round() / self.per_dim(|d| d.half_width as f32, &device);
        let indices = self.codes_to_indices(codes.clone());
        (codes, indices)
    }

    /// Training form of [`Fsq::quantize`]: the same codes, with the straight-through estimator (the gradient of
    /// the rounding is taken as 1, so the encoder learns through the quantiser; official `round_ste`).
    pub fn quantize_straight_through<B: Backend>(&self, z: Tensor<B, 5>) -> Tensor<B, 5> {
        let device = z.device();
        let bounded = self.bound(z);
        let rounded = bounded.clone().round();
        let codes = bounded.clone() + (rounded - bounded).detach();
        codes / self.per_dim(|d| d.half_width as f32, &device)
    }

    /// The codes before rounding: `bound(z) / ⌊L/2⌋`, continuous values in about `[-1, 1]`. Training can feed
    /// these to the decoder for its first steps ([`crate::VideoTokenizer::forward_train`] with `quantize` off),
    /// so that encoder and decoder agree on a continuous code before the rounding starts.
    pub fn unrounded_codes<B: Backend>(&self, z: Tensor<B, 5>) -> Tensor<B, 5> {
        let device = z.device();
        self.bound(z) / self.per_dim(|d| d.half_width as f32, &device)
    }

    /// Indices `[B, T, H, W]` of codes `[B, D, T, H, W]` that lie on the code grid:
    /// `Σ_i (ẑ_i·⌊L_i/2⌋ + ⌊L_i/2⌋)·basis_i`.
    pub fn codes_to_indices<B: Backend>(&self, codes: Tensor<B, 5>) -> Tensor<B, 4, Int> {
        let device = codes.device();
        let half_width = self.per_dim(|d| d.half_width as f32, &device);
        let digits = (codes * half_width.clone() + half_width).round().int();
        let basis = self.per_dim(|d| d.basis as f32, &device).int();
        (digits * basis).sum_dim(1).squeeze_dim::<4>(1)
    }

    /// Codes `[B, D, T, H, W]` of indices `[B, T, H, W]` (the exact inverse of [`Fsq::quantize`]).
    /// Indices must lie in `0..codebook_size()`.
    pub fn indices_to_codes<B: Backend>(&self, indices: Tensor<B, 4, Int>) -> Tensor<B, 5> {
        let [b, t, h, w] = indices.dims();
        let codes: Vec<Tensor<B, 4>> = self
            .dims()
            .iter()
            .map(|d| {
                let above = indices.clone().div_scalar(d.basis);
                let digit = above.clone() - above.div_scalar(d.levels as i64).mul_scalar(d.levels as i64);
                digit.sub_scalar(d.half_width).float().div_scalar(d.half_width as f32)
            })
            .collect();
        Tensor::stack::<5>(codes, 1).reshape([b, self.dim(), t, h, w])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;

    type B = Flex;

    fn official() -> Fsq {
        Fsq::new(vec![8, 8, 8, 5, 5, 5])
    }

    fn codes_of(fsq: &Fsq, ids: &[i32]) -> Vec<f32> {
        let dev = Default::default();
        let t = Tensor::<B, 4, Int>::from_data(TensorData::new(ids.to_vec(), [1, ids.len(), 1, 1]), &dev);
        // [1, D, N, 1, 1] → position-major [N, D]
        let c = fsq.indices_to_codes(t).reshape([fsq.dim(), ids.len()]).transpose();
        c.into_data().into_vec::<f32>().unwrap()
    }

    #[test]
    fn constants_match_the_official_float32_values() {
        let d = official().dims();
        assert_eq!(d.iter().map(|d| d.basis).collect::<Vec<_>>(), vec![1, 8, 64, 512, 2560, 12800]);
        assert_eq!(d[0].half_l.to_bits(), 0x405fc6a8);
        assert_eq!(d[3].half_l.to_bits(), 0x3fffbe77);
        assert_eq!(d[0].shift.to_bits(), 0x3e137042);
        assert_eq!((d[0].offset, d[3].offset, d[3].shift), (0.5, 0.0, 0.0));
        assert_eq!((d[0].half_width, d[5].half_width), (4, 2));
        assert_eq!(official().codebook_size(), 64000);
    }

    #[test]
    fn known_indices_map_to_known_codes() {
        let fsq = official();
        let c = codes_of(&fsq, &[0, 1, 63999]);
        assert_eq!(&c[0..6], &[-1.0; 6]);
        assert_eq!(&c[6..12], &[-0.75, -1.0, -1.0, -1.0, -1.0, -1.0]);
        assert_eq!(&c[12..18], &[0.75, 0.75, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn all_64000_indices_round_trip_exactly() {
        let fsq = official();
        let dev = Default::default();
        let ids: Vec<i32> = (0..64000).collect();
        let t = Tensor::<B, 4, Int>::from_data(TensorData::new(ids.clone(), [1, 40, 40, 40]), &dev);
        let codes = fsq.indices_to_codes(t);
        let back = fsq.codes_to_indices(codes.clone()).into_data().into_vec::<i32>().unwrap();
        assert_eq!(back, ids);
        // Codes lie on the grid {-1, …, (L−1−⌊L/2⌋)/⌊L/2⌋}.
        let c = codes.into_data().into_vec::<f32>().unwrap();
        assert!(c.iter().all(|v| (v * 4.0).fract() == 0.0 && (-1.0..=1.0).contains(v)));
    }

    #[test]
    fn quantize_inverts_the_bound_at_grid_points_and_rounds_half_to_even() {
        let fsq = official();
        let dev = Default::default();
        // Pre-images of every integer level of every dimension: z = atanh((q + offset)/half_l) − shift.
        let dims = fsq.dims();
        let mut z = vec![0.0f32; 6 * 8];
        let mut expected = vec![0i32; 8];
        for (i, d) in dims.iter().enumerate() {
            for k in 0..8usize {
                let digit = k % d.levels;
                let q = digit as f64 - d.half_width as f64;
                // The outermost levels lie beyond tanh's range (|q + offset| > half_l): saturate instead.
                let t = (q + d.offset as f64) / d.half_l as f64;
                let zz = if t.abs() < 1.0 { t.atanh() - d.shift as f64 } else { 10.0 * t.signum() };
                z[i * 8 + k] = zz as f32;
                expected[k] += digit as i32 * d.basis as i32;
            }
        }
        let zt = Tensor::<B, 5>::from_data(TensorData::new(z, [1, 6, 8, 1, 1]), &dev);
        let (_, ids) = fsq.quantize(zt);
        assert_eq!(ids.into_data().into_vec::<i32>().unwrap(), expected);
        // The rounding FSQ relies on is half to even, as PyTorch's.
        let halves = Tensor::<B, 1>::from_floats([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997], &dev);
        assert_eq!(halves.round().into_data().into_vec::<f32>().unwrap(), vec![0.0, 2.0, 2.0, -0.0, -2.0, -2.0, 0.0]);
    }
}
