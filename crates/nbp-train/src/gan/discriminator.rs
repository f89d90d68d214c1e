//! PatchGAN discriminator (pix2pix `NLayerDiscriminator`, as used by taming-transformers/VQGAN) applied to every
//! frame of a video.
//!
//! Layout for `layers = n` and `channels = c` (all convolutions 4×4 with padding 1, LeakyReLU slope 0.2):
//!
//! | step | convolution | stride | norm |
//! |---|---|---|---|
//! | input | `3 → c` (with bias) | 2 | none |
//! | `k = 1 … n−1` | `c·min(2^(k−1), 8) → c·min(2^k, 8)` (no bias) | 2 | GroupNorm |
//! | last hidden | `c·min(2^(n−1), 8) → c·min(2^n, 8)` (no bias) | 1 | GroupNorm |
//! | output | `→ 1` (with bias), no activation | 1 | none |
//!
//! pix2pix uses BatchNorm; here it is GroupNorm, because tokenizer batches are a handful of clips. As with
//! BatchNorm in pix2pix, the convolutions followed by a norm have no bias (the norm's shift replaces it). With the
//! defaults (`c = 64`, `n = 3`) each logit sees a 70×70 patch of its frame.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{GroupNorm, GroupNormConfig, Initializer, PaddingConfig2d};
use burn::prelude::*;
use burn::tensor::activation::leaky_relu;

/// Slope of the LeakyReLU activations (pix2pix).
pub const LEAKY_SLOPE: f64 = 0.2;

/// Configuration of a [`PatchDiscriminator`].
#[derive(Config, Debug)]
pub struct PatchDiscriminatorConfig {
    /// Width of the first convolution; later ones double it up to 8×.
    #[config(default = 64)]
    pub channels: usize,
    /// Number of stride-2 convolutions (pix2pix `n_layers`); 0 is allowed (one stride-1 hidden layer only).
    #[config(default = 3)]
    pub layers: usize,
    /// Number of GroupNorm groups. A layer whose width `w` is not a multiple uses `gcd(norm_groups, w)` groups.
    #[config(default = 32)]
    pub norm_groups: usize,
    /// Standard deviation of the normal initialisation of the convolutions (taming's `weights_init`: 0.02).
    #[config(default = 0.02)]
    pub init_std: f64,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl PatchDiscriminatorConfig {
    /// Width of the hidden convolution `k` (0-based: `k = 0` is the input convolution).
    fn width(&self, k: usize) -> usize {
        self.channels * (1usize << k.min(3))
    }

    /// Builds the discriminator with normal(0, `init_std`) convolutions and identity GroupNorms.
    ///
    /// Panics if `channels` or `norm_groups` is 0.
    pub fn init<B: Backend>(&self, device: &B::Device) -> PatchDiscriminator<B> {
        assert!(self.channels > 0, "PatchDiscriminator: channels must be positive");
        assert!(self.norm_groups > 0, "PatchDiscriminator: norm_groups must be positive");
        let init = Initializer::Normal { mean: 0.0, std: self.init_std };
        let conv = |c_in: usize, c_out: usize, stride: usize, bias: bool| {
            Conv2dConfig::new([c_in, c_out], [4, 4])
                .with_stride([stride, stride])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .with_bias(bias)
                .with_initializer(init.clone())
                .init(device)
        };
        let block = |c_in: usize, c_out: usize, stride: usize| DiscriminatorBlock {
            conv: conv(c_in, c_out, stride, false),
            norm: GroupNormConfig::new(gcd(self.norm_groups, c_out), c_out).init(device),
        };
        let input = conv(3, self.channels, 2, true);
        let mut blocks: Vec<DiscriminatorBlock<B>> =
            (1..self.layers).map(|k| block(self.width(k - 1), self.width(k), 2)).collect();
        let last = self.layers.saturating_sub(1);
        blocks.push(block(self.width(last), self.width(self.layers), 1));
        let output = conv(self.width(self.layers), 1, 1, true);
        PatchDiscriminator { input, blocks, output }
    }
}

/// Convolution (4×4, padding 1, no bias), GroupNorm and LeakyReLU(0.2).
#[derive(Module, Debug)]
pub struct DiscriminatorBlock<B: Backend> {
    /// The 4×4 convolution, weight `[c_out, c_in, 4, 4]`.
    pub conv: Conv2d<B>,
    /// GroupNorm over `c_out` channels.
    pub norm: GroupNorm<B>,
}

impl<B: Backend> DiscriminatorBlock<B> {
    /// `[n, c_in, h, w]` → `[n, c_out, h', w']`.
    pub fn forward(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        leaky_relu(self.norm.forward(self.conv.forward(x)), LEAKY_SLOPE)
    }
}

/// PatchGAN discriminator: one logit per overlapping patch of every frame (positive means "real").
#[derive(Module, Debug)]
pub struct PatchDiscriminator<B: Backend> {
    /// Input convolution `3 → channels`, stride 2, with bias, followed by LeakyReLU (no norm).
    pub input: Conv2d<B>,
    /// `layers − 1` stride-2 blocks, then one stride-1 block.
    pub blocks: Vec<DiscriminatorBlock<B>>,
    /// Output convolution to one channel of patch logits, stride 1, with bias.
    pub output: Conv2d<B>,
}

impl<B: Backend> PatchDiscriminator<B> {
    /// Patch logits of images already in [−1, 1]: `[n, 3, h, w]` → `[n, 1, h', w']`.
    ///
    /// Each stride-2 layer maps a side `s` to `⌊s/2⌋`, each stride-1 layer to `s − 1`; with the default 3 layers
    /// a 128×128 frame gives 14×14 logits, 256×256 gives 30×30.
    pub fn forward_images(&self, x: Tensor<B, 4>) -> Tensor<B, 4> {
        let [_, c, _, _] = x.dims();
        assert_eq!(c, 3, "PatchDiscriminator expects 3 input channels, got {c}");
        let mut x = leaky_relu(self.input.forward(x), LEAKY_SLOPE);
        for block in &self.blocks {
            x = block.forward(x);
        }
        self.output.forward(x)
    }

    /// Patch logits of a video in [0, 1]: `[batch, 3, time, height, width]` → `[batch·time, 1, h', w']`.
    ///
    /// The video is mapped to [−1, 1] (`2x − 1`) and time is folded into the batch, batch-major: row
    /// `b·time + t` holds frame `t` of clip `b`. Frames are judged independently.
    pub fn forward(&self, video: Tensor<B, 5>) -> Tensor<B, 4> {
        self.forward_images(fold_time(video).mul_scalar(2.0).sub_scalar(1.0))
    }
}

/// `[batch, c, time, h, w]` → `[batch·time, c, h, w]`, row `b·time + t` = frame `t` of clip `b`.
pub fn fold_time<B: Backend>(video: Tensor<B, 5>) -> Tensor<B, 4> {
    let [b, c, t, h, w] = video.dims();
    video.permute([0, 2, 1, 3, 4]).reshape([b * t, c, h, w])
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use burn::module::Param;

    type B = Flex;

    fn values<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
        t.into_data().into_vec::<f32>().unwrap()
    }

    /// A deterministic pseudo-random sequence in [−1, 1).
    fn pseudo(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// Plain-loop reference: a 4-D array `[n, c, h, w]` in row-major order.
    #[derive(Clone)]
    struct Array {
        shape: [usize; 4],
        data: Vec<f64>,
    }

    impl Array {
        fn at(&self, n: usize, c: usize, y: usize, x: usize) -> f64 {
            let [_, cs, hs, ws] = self.shape;
            self.data[((n * cs + c) * hs + y) * ws + x]
        }
    }

    fn conv_ref(x: &Array, weight: &[f32], bias: Option<&[f32]>, c_out: usize, stride: usize) -> Array {
        let [n, c_in, h, w] = x.shape;
        let (ho, wo) = ((h + 2 - 4) / stride + 1, (w + 2 - 4) / stride + 1);
        let mut data = vec![0.0; n * c_out * ho * wo];
        for b in 0..n {
            for o in 0..c_out {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let mut acc = bias.map_or(0.0, |bv| bv[o] as f64);
                        for i in 0..c_in {
                            for ky in 0..4 {
                                for kx in 0..4 {
                                    let (y, xx) = ((oy * stride + ky) as isize - 1, (ox * stride + kx) as isize - 1);
                                    if y < 0 || xx < 0 || y >= h as isize || xx >= w as isize {
                                        continue;
                                    }
                                    let wv = weight[((o * c_in + i) * 4 + ky) * 4 + kx] as f64;
                                    acc += wv * x.at(b, i, y as usize, xx as usize);
                                }
                            }
                        }
                        data[((b * c_out + o) * ho + oy) * wo + ox] = acc;
                    }
                }
            }
        }
        Array { shape: [n, c_out, ho, wo], data }
    }

    fn group_norm_ref(x: &Array, groups: usize, gamma: &[f32], beta: &[f32]) -> Array {
        let [n, c, h, w] = x.shape;
        let per = c / groups;
        let mut out = x.clone();
        for b in 0..n {
            for g in 0..groups {
                let idx: Vec<usize> =
                    (g * per..(g + 1) * per).flat_map(|ch| (0..h * w).map(move |p| (b * c + ch) * h * w + p)).collect();
                let mean = idx.iter().map(|&i| x.data[i]).sum::<f64>() / idx.len() as f64;
                let var = idx.iter().map(|&i| (x.data[i] - mean).powi(2)).sum::<f64>() / idx.len() as f64;
                for &i in &idx {
                    let ch = (i / (h * w)) % c;
                    out.data[i] = (x.data[i] - mean) / (var + 1e-5).sqrt() * gamma[ch] as f64 + beta[ch] as f64;
                }
            }
        }
        out
    }

    fn leaky_ref(mut x: Array) -> Array {
        x.data.iter_mut().for_each(|v| *v = if *v < 0.0 { *v * LEAKY_SLOPE } else { *v });
        x
    }

    fn set<const D: usize>(p: &mut Param<Tensor<B, D>>, seed: u64, scale: f32) -> Vec<f32> {
        let dims = p.val().dims();
        let v: Vec<f32> = pseudo(dims.iter().product(), seed).into_iter().map(|x| x * scale).collect();
        *p = Param::from_tensor(Tensor::from_data(TensorData::new(v.clone(), dims), &Default::default()));
        v
    }

    #[test]
    fn output_shape_default_config() {
        let d = PatchDiscriminatorConfig::new().with_channels(8).init::<B>(&Default::default());
        assert_eq!(d.blocks.len(), 3);
        assert_eq!(d.blocks[0].conv.weight.dims(), [16, 8, 4, 4]);
        assert_eq!(d.blocks[1].conv.weight.dims(), [32, 16, 4, 4]);
        assert_eq!(d.blocks[2].conv.weight.dims(), [64, 32, 4, 4]);
        assert_eq!(d.output.weight.dims(), [1, 64, 4, 4]);
        assert!(d.blocks.iter().all(|b| b.conv.bias.is_none()));
        let video = Tensor::<B, 5>::ones([2, 3, 3, 64, 64], &Default::default()).mul_scalar(0.5);
        // 64 → 32 → 16 → 8 → 7 → 6
        assert_eq!(d.forward(video).dims(), [6, 1, 6, 6]);
    }

    #[test]
    fn width_is_capped_at_eight_times() {
        let d = PatchDiscriminatorConfig::new().with_channels(2).with_layers(5).init::<B>(&Default::default());
        let widths: Vec<usize> = d.blocks.iter().map(|b| b.conv.weight.dims()[0]).collect();
        assert_eq!(widths, [4, 8, 16, 16, 16]);
        let x = Tensor::<B, 4>::zeros([1, 3, 128, 128], &Default::default());
        assert_eq!(d.forward_images(x).dims(), [1, 1, 2, 2]);
    }

    #[test]
    fn zero_weights_give_the_output_bias() {
        let mut d = PatchDiscriminatorConfig::new().with_channels(4).with_layers(2).init::<B>(&Default::default());
        d = d.map(&mut ZeroWeights);
        let bias = Tensor::<B, 1>::from_floats([0.75], &Default::default());
        d.output.bias = Some(Param::from_tensor(bias));
        let video = Tensor::<B, 5>::ones([1, 3, 2, 32, 32], &Default::default());
        let out = d.forward(video);
        // 32 → 16 → 8 → 7 → 6
        assert_eq!(out.dims(), [2, 1, 6, 6]);
        assert!(values(out).iter().all(|&v| (v - 0.75).abs() < 1e-6));
    }

    struct ZeroWeights;
    impl burn::module::ModuleMapper<B> for ZeroWeights {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
            param.map(|t| t.zeros_like())
        }
    }

    #[test]
    fn matches_a_plain_loop_reference() {
        // 1 layer, 2 channels: conv 3→2 s2 + lrelu, conv 2→4 s1 + GN(2 groups) + lrelu, conv 4→1 s1.
        let dev = Default::default();
        let mut d = PatchDiscriminatorConfig::new().with_channels(2).with_layers(1).with_norm_groups(2).init::<B>(&dev);
        let w0 = set(&mut d.input.weight, 1, 0.3);
        let b0 = set(d.input.bias.as_mut().unwrap(), 2, 0.1);
        let w1 = set(&mut d.blocks[0].conv.weight, 3, 0.3);
        let g1 = set(d.blocks[0].norm.gamma.as_mut().unwrap(), 4, 0.5);
        let be1 = set(d.blocks[0].norm.beta.as_mut().unwrap(), 5, 0.5);
        let w2 = set(&mut d.output.weight, 6, 0.3);
        let b2 = set(d.output.bias.as_mut().unwrap(), 7, 0.1);
        let (b, t, h, w) = (2, 3, 10, 9);
        let pixels: Vec<f32> = pseudo(b * 3 * t * h * w, 8).into_iter().map(|v| 0.5 + 0.5 * v).collect();
        let video = Tensor::<B, 5>::from_data(TensorData::new(pixels.clone(), [b, 3, t, h, w]), &dev);
        let out = d.forward(video);

        // Reference: fold frames (row bi·t + ti), map to [−1, 1], then the three layers.
        let mut frames = vec![0.0f64; b * t * 3 * h * w];
        for bi in 0..b {
            for ti in 0..t {
                for c in 0..3 {
                    for p in 0..h * w {
                        let src = ((bi * 3 + c) * t + ti) * h * w + p;
                        frames[(((bi * t + ti) * 3) + c) * h * w + p] = 2.0 * pixels[src] as f64 - 1.0;
                    }
                }
            }
        }
        let x = Array { shape: [b * t, 3, h, w], data: frames };
        let x = leaky_ref(conv_ref(&x, &w0, Some(&b0), 2, 2));
        let x = leaky_ref(group_norm_ref(&conv_ref(&x, &w1, None, 4, 1), 2, &g1, &be1));
        let expected = conv_ref(&x, &w2, Some(&b2), 1, 1);

        assert_eq!(out.dims(), expected.shape); // [6, 1, 3, 2]
        let got = values(out);
        let err = got.iter().zip(&expected.data).map(|(a, e)| (*a as f64 - e).abs()).fold(0.0, f64::max);
        assert!(err < 1e-5, "max abs error {err}: {got:?} vs {:?}", expected.data);
    }
}
