//! LPIPS perceptual distance with a VGG16 backbone (Zhang et al. 2018, `lpips` v0.1), as in
//! `nbp/modules/lpips.py` (reference §1.9) and taming-transformers.
//!
//! For images `x`, `y` in [−1, 1]:
//!
//! 1. scaling layer `(x − shift) / scale`, shift [`LPIPS_SHIFT`], scale [`LPIPS_SCALE`];
//! 2. torchvision VGG16 `features` up to `relu5_3`, taps `relu1_2 … relu5_3` ([`Vgg16Features`]);
//! 3. per tap, unit-normalise every pixel's channel vector: `f / (‖f‖₂ + 1e-10)`;
//! 4. squared difference of the normalised taps, a 1×1 convolution to one channel without bias
//!    (`lin{k}.model.1.weight`, `[1, C_k, 1, 1]`; the Dropout before it is inactive in evaluation mode and is
//!    left out), mean over the pixels;
//! 5. sum over the five taps.
//!
//! # Weight files
//!
//! Nothing is downloaded; the caller supplies the files ([`LpipsConfig::load`] / [`Lpips::load`]):
//!
//! - the backbone: a torchvision `vgg16` state dict, e.g. `vgg16-397923af.pth` (PyTorch pickle, or the same
//!   keys in a `.safetensors` file). Its tensors `features.{0,2,5,7,10,12,14,17,19,21,24,26,28}.{weight,bias}`
//!   are used; `classifier.*` is ignored; any other `features.*` tensor (e.g. the BatchNorm of `vgg16_bn`) is an
//!   error;
//! - the LPIPS head: `vgg.pth` of richzhang/PerceptualSimilarity (`lpips/weights/v0.1/vgg.pth`) or the identical
//!   file of taming-transformers, exactly the five tensors `lin{0..4}.model.1.weight`.
//!
//! [`LpipsConfig::load_combined`] / [`Lpips::load_combined`] read one file (`.safetensors` or PyTorch) holding
//! the union of both key sets: `features.{index}.{weight,bias}` plus `lin{k}.model.1.weight`, optionally
//! `classifier.*` (ignored), nothing else.
//!
//! Imports are strict: a missing tensor or a wrong shape is an error naming the file, the key and both shapes.
//!
//! # Freezing
//!
//! Every constructor returns a *frozen* module: all parameters have `require_grad = false`
//! ([`Module::no_grad`]). On an autodiff backend the distance still backpropagates into its *inputs* (the
//! reconstruction), but no gradient is computed or stored for the LPIPS weights. Keep the module on the training
//! (autodiff) backend for the loss, do not give it to an optimizer or put it inside a trained module, and use
//! [`AutodiffModule::valid`](burn::module::AutodiffModule::valid) for evaluation-only use. A module loaded on
//! the inner backend and moved with `Lpips::<Autodiff<_>>::from_inner` stays frozen as well.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::prelude::*;

use nbp_core::weights::WeightMap;
use nbp_core::{Error, Result};

use super::discriminator::fold_time;
use super::vgg::{VGG16_CONV_INDICES, Vgg16Features, Vgg16FeaturesConfig};

/// Shift of the LPIPS scaling layer (per RGB channel).
pub const LPIPS_SHIFT: [f32; 3] = [-0.030, -0.088, -0.188];
/// Scale of the LPIPS scaling layer (per RGB channel).
pub const LPIPS_SCALE: [f32; 3] = [0.458, 0.448, 0.450];
/// Added to the channel norm before dividing (`normalize_tensor`).
pub const LPIPS_EPS: f64 = 1e-10;

/// Lower bound applied to the squared channel norm before the square root: keeps the gradient finite where a
/// pixel's whole feature vector is zero (where PyTorch's `sqrt` backward gives NaN). It changes the value only
/// where the squared norm is below 1e-20, i.e. where the normalised features are 0 either way up to ~1.
const NORM_SQ_FLOOR: f64 = 1e-20;

/// Configuration of [`Lpips`].
#[derive(Config, Debug)]
pub struct LpipsConfig {
    /// Widths of the five VGG16 stages (torchvision: 64, 128, 256, 512, 512); smaller values are for tests.
    #[config(default = "[64, 128, 256, 512, 512]")]
    pub widths: [usize; 5],
}

impl LpipsConfig {
    /// A frozen LPIPS with random weights (Burn's default initialisation): only useful for tests and shapes.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Lpips<B> {
        self.init_lazy(device).no_grad()
    }

    /// Loads a frozen LPIPS from a torchvision `vgg16` state dict (`vgg_path`) and an LPIPS head file
    /// (`lin_path`, `lin{0..4}.model.1.weight`); see the [module documentation](self) for the layouts.
    ///
    /// Files ending in `.safetensors` are read as safetensors, all others as PyTorch pickles.
    pub fn load<B: Backend>(
        &self,
        vgg_path: impl AsRef<Path>,
        lin_path: impl AsRef<Path>,
        device: &B::Device,
    ) -> Result<Lpips<B>> {
        let model = self.init_lazy::<B>(device);
        let vgg = import_vgg(model.vgg, read_weights(vgg_path.as_ref())?)?;
        let mut lin = read_weights(lin_path.as_ref())?;
        let lins = import_lins(model.lins, &mut lin, "lin")?;
        lin.finish()?;
        Ok(Lpips { vgg, lins }.no_grad())
    }

    /// Loads a frozen LPIPS from one file with `features.{index}.{weight,bias}` and `lin{k}.model.1.weight`
    /// tensors (and optionally `classifier.*`, ignored); see the [module documentation](self).
    pub fn load_combined<B: Backend>(&self, path: impl AsRef<Path>, device: &B::Device) -> Result<Lpips<B>> {
        let path = path.as_ref();
        let all = read_weights(path)?;
        if let Some(other) = all.keys().find(|k| !["features.", "lin", "classifier."].iter().any(|p| k.starts_with(p)))
        {
            return Err(Error::file(
                path,
                format!(
                    "tensor '{other}' is not part of the combined LPIPS layout (only 'features.*', \
                     'lin{{0..4}}.model.1.weight' and the ignored 'classifier.*')"
                ),
            ));
        }
        let model = self.init_lazy::<B>(device);
        let vgg = import_vgg(model.vgg, all)?;
        let mut lin = read_weights(path)?.select_prefix("lin");
        let lins = import_lins(model.lins, &mut lin, "")?;
        lin.finish()?;
        Ok(Lpips { vgg, lins }.no_grad())
    }

    /// The module with lazily initialised parameters (never materialised when every one is loaded).
    fn init_lazy<B: Backend>(&self, device: &B::Device) -> Lpips<B> {
        let vgg = Vgg16FeaturesConfig::new().with_widths(self.widths).init(device);
        let lins =
            self.widths.iter().map(|&c| Conv2dConfig::new([c, 1], [1, 1]).with_bias(false).init(device)).collect();
        Lpips { vgg, lins }
    }
}

/// Reads `.safetensors` files as safetensors and everything else as PyTorch pickles.
fn read_weights(path: &Path) -> Result<WeightMap> {
    if nbp_core::weights::is_safetensors(path) {
        Ok(WeightMap::read_safetensors(path)?.0)
    } else {
        WeightMap::read_pytorch(path)
    }
}

/// Replaces `param` by the tensor `key` of `w`, with the parameter's shape (without materialising it).
fn take_param<B: Backend, const D: usize>(
    param: Param<Tensor<B, D>>,
    w: &mut WeightMap,
    key: &str,
) -> Result<Param<Tensor<B, D>>> {
    let shape = param.lazy_shape().dims::<D>();
    let t = w.take::<B, D>(key, shape, &param.lazy_device())?;
    Ok(Param::initialized(param.id, t))
}

fn import_conv<B: Backend>(mut conv: Conv2d<B>, w: &mut WeightMap, key: &str) -> Result<Conv2d<B>> {
    conv.weight = take_param(conv.weight, w, &format!("{key}.weight"))?;
    if let Some(bias) = conv.bias.take() {
        conv.bias = Some(take_param(bias, w, &format!("{key}.bias"))?);
    }
    Ok(conv)
}

/// Fills the VGG convolutions from the `features.*` tensors of `w` (other prefixes are ignored), strictly.
fn import_vgg<B: Backend>(mut vgg: Vgg16Features<B>, w: WeightMap) -> Result<Vgg16Features<B>> {
    let path = w.path().to_path_buf();
    let mut w = w.select_prefix("features.");
    if w.is_empty() {
        return Err(Error::file(
            path,
            "has no 'features.*' tensors: expected a torchvision vgg16 state dict (features.0.weight, …)",
        ));
    }
    vgg.convs = std::mem::take(&mut vgg.convs)
        .into_iter()
        .zip(VGG16_CONV_INDICES)
        .map(|(conv, index)| import_conv(conv, &mut w, &index.to_string()))
        .collect::<Result<_>>()?;
    w.finish()?;
    Ok(vgg)
}

/// Fills the five heads from the tensors `{stem}{k}.model.1.weight` of `w`: `stem` is `"lin"` for a whole
/// file and `""` for a map already selected with the prefix `lin`.
fn import_lins<B: Backend>(lins: Vec<Conv2d<B>>, w: &mut WeightMap, stem: &str) -> Result<Vec<Conv2d<B>>> {
    lins.into_iter().enumerate().map(|(k, lin)| import_conv(lin, w, &format!("{stem}{k}.model.1"))).collect()
}

/// Unit-normalises each pixel's channel vector: `f / (‖f‖₂ + 1e-10)`, `[n, c, h, w]` → same shape.
fn unit_normalize<B: Backend>(f: Tensor<B, 4>) -> Tensor<B, 4> {
    let norm = f.clone().square().sum_dim(1).clamp_min(NORM_SQ_FLOOR).sqrt();
    f / norm.add_scalar(LPIPS_EPS)
}

/// LPIPS (VGG16) perceptual distance; see the [module documentation](self).
#[derive(Module, Debug)]
pub struct Lpips<B: Backend> {
    /// The VGG16 backbone (`features.*`).
    pub vgg: Vgg16Features<B>,
    /// The five 1×1 heads `lin{k}.model.1`, weights `[1, widths[k], 1, 1]`, no bias.
    pub lins: Vec<Conv2d<B>>,
}

impl<B: Backend> Lpips<B> {
    /// Loads the standard (torchvision-width) LPIPS from two files; see [`LpipsConfig::load`].
    pub fn load(vgg_path: impl AsRef<Path>, lin_path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        LpipsConfig::new().load(vgg_path, lin_path, device)
    }

    /// Loads the standard (torchvision-width) LPIPS from one combined file; see [`LpipsConfig::load_combined`].
    pub fn load_combined(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        LpipsConfig::new().load_combined(path, device)
    }

    /// Distances between images in [−1, 1]: `x`, `y` `[n, 3, h, w]` → `[n]`.
    ///
    /// Both images go through VGG in one batch of `2n`. Sides below 16 pixels leave the deepest taps empty;
    /// use at least 16×16 (the usual minimum is 32×32).
    pub fn forward(&self, x: Tensor<B, 4>, y: Tensor<B, 4>) -> Tensor<B, 1> {
        let [n, c, _, _] = x.dims();
        assert_eq!(c, 3, "LPIPS expects 3-channel images, got {c} channels");
        assert_eq!(x.dims(), y.dims(), "LPIPS inputs have different shapes");
        let device = x.device();
        let shift = Tensor::<B, 1>::from_floats(LPIPS_SHIFT, &device).reshape([1, 3, 1, 1]);
        let scale = Tensor::<B, 1>::from_floats(LPIPS_SCALE, &device).reshape([1, 3, 1, 1]);
        let input = (Tensor::cat(vec![x, y], 0) - shift) / scale;
        let mut total: Option<Tensor<B, 1>> = None;
        for (tap, lin) in self.vgg.forward(input).into_iter().zip(&self.lins) {
            let tap = unit_normalize(tap);
            let diff = (tap.clone().narrow(0, 0, n) - tap.narrow(0, n, n)).square();
            let value = lin.forward(diff).mean_dim(3).mean_dim(2).reshape([n]);
            total = Some(match total {
                Some(t) => t + value,
                None => value,
            });
        }
        total.expect("five taps")
    }

    /// Mean distance over all frames of two videos in [0, 1]: `[batch, 3, time, h, w]` → `[1]`.
    ///
    /// Frames are mapped to [−1, 1] and folded into the batch (`batch·time` LPIPS evaluations).
    pub fn forward_video(&self, x: Tensor<B, 5>, y: Tensor<B, 5>) -> Tensor<B, 1> {
        let to_images = |v: Tensor<B, 5>| fold_time(v).mul_scalar(2.0).sub_scalar(1.0);
        self.forward(to_images(x), to_images(y)).mean()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, Flex};
    use nbp_core::npy::read_npy;
    use nbp_core::weights::WeightWriter;
    use std::path::PathBuf;

    type B = Flex;
    type A = Autodiff<Flex>;

    /// Widths of the PyTorch fixture (`scripts/fixtures/lpips_fixture.py`).
    const WIDTHS: [usize; 5] = [4, 8, 8, 16, 16];

    fn fixture(name: &str) -> PathBuf {
        nbp_core::workspace::workspace_path("tests/fixtures/lpips").join(name)
    }

    fn config() -> LpipsConfig {
        LpipsConfig::new().with_widths(WIDTHS)
    }

    fn load<BB: Backend>() -> Lpips<BB> {
        config().load(fixture("vgg16.pth"), fixture("lin.pth"), &Default::default()).unwrap()
    }

    /// A `[2, 3, 32, 32]` uint8 fixture image mapped to [−1, 1].
    fn image<BB: Backend>(name: &str) -> Tensor<BB, 4> {
        let a = read_npy(fixture(name)).unwrap();
        let shape: [usize; 4] = a.shape.clone().try_into().unwrap();
        Tensor::<BB, 4>::from_data(TensorData::new(a.to_f32(), shape), &Default::default())
            .div_scalar(127.5)
            .sub_scalar(1.0)
    }

    fn expected() -> Vec<f32> {
        read_npy(fixture("distances.npy")).unwrap().to_f32()
    }

    fn values<BB: Backend, const D: usize>(t: Tensor<BB, D>) -> Vec<f32> {
        t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            let rel = (g - w).abs() / w.abs();
            eprintln!("LPIPS {g} vs PyTorch {w}: relative error {rel:e}");
            assert!(rel < 1e-4, "got {got:?}, PyTorch {want:?} (relative error {rel:e})");
        }
    }

    fn temp_path(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("nbp-lpips-{}-{name}", std::process::id()))
    }

    #[test]
    fn identical_inputs_give_zero() {
        let lpips = config().init::<B>(&Default::default());
        let x =
            Tensor::<B, 4>::random([2, 3, 32, 32], burn::tensor::Distribution::Uniform(-1.0, 1.0), &Default::default());
        let d = values(lpips.forward(x.clone(), x));
        assert_eq!(d, [0.0, 0.0]);
    }

    #[test]
    fn matches_pytorch_fixture() {
        let lpips = load::<B>();
        let d = values(lpips.forward(image("image0.npy"), image("image1.npy")));
        assert_close(&d, &expected());
        // Symmetric, and zero on itself with real weights too.
        let d = values(lpips.forward(image("image1.npy"), image("image0.npy")));
        assert_close(&d, &expected());
        assert_eq!(values(lpips.forward(image("image0.npy"), image("image0.npy"))), [0.0, 0.0]);
    }

    #[test]
    fn video_helper_is_the_mean_over_frames() {
        let lpips = load::<B>();
        // One clip of two frames: frame t = image t of the fixture batch, pixels in [0, 1].
        let video =
            |name: &str| image::<B>(name).add_scalar(1.0).div_scalar(2.0).permute([1, 0, 2, 3]).unsqueeze_dim(0);
        let d = values(lpips.forward_video(video("image0.npy"), video("image1.npy")));
        let want = expected();
        assert_close(&d, &[(want[0] + want[1]) / 2.0]);
    }

    /// Copies every tensor of the fixture files (and `extra`) into one `.safetensors` file.
    fn combined_file(name: &str, extra: &[&str]) -> PathBuf {
        let dev = Default::default();
        let mut writer = WeightWriter::new();
        let mut put = |key: &str, data: TensorData| match data.shape.len() {
            1 => writer.put(key, &Tensor::<B, 1>::from_data(data, &dev)),
            2 => writer.put(key, &Tensor::<B, 2>::from_data(data, &dev)),
            4 => writer.put(key, &Tensor::<B, 4>::from_data(data, &dev)),
            n => panic!("unexpected rank {n} of {key}"),
        };
        for file in ["vgg16.pth", "lin.pth"] {
            let mut w = WeightMap::read_pytorch(fixture(file)).unwrap();
            let keys: Vec<(String, Vec<usize>)> =
                w.keys().map(|k| (k.to_string(), w.shape(k).unwrap().to_vec())).collect();
            for (key, shape) in keys {
                put(&key, w.take_data(&key, &shape).unwrap());
            }
        }
        for key in extra {
            put(key, TensorData::new(vec![0.5f32; 2], [2]));
        }
        let path = temp_path(name);
        writer.write(&path).unwrap();
        path
    }

    #[test]
    fn combined_file_gives_the_same_distances() {
        let path = combined_file("combined.safetensors", &[]);
        let lpips = config().load_combined::<B>(&path, &Default::default());
        std::fs::remove_file(&path).unwrap();
        let d = values(lpips.unwrap().forward(image("image0.npy"), image("image1.npy")));
        assert_close(&d, &expected());
    }

    #[test]
    fn combined_file_rejects_unknown_tensors() {
        let path = combined_file("unknown.safetensors", &["net.scaling_layer.shift"]);
        let err = config().load_combined::<B>(&path, &Default::default()).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("unknown.safetensors") && err.contains("net.scaling_layer.shift"), "{err}");

        let path = combined_file("extra_lin.safetensors", &["lin5.model.1.weight"]);
        let err = config().load_combined::<B>(&path, &Default::default()).unwrap_err().to_string();
        std::fs::remove_file(&path).unwrap();
        assert!(err.contains("extra_lin.safetensors") && err.contains("lin5.model.1.weight"), "{err}");
    }

    #[test]
    fn frozen_weights_but_gradients_reach_the_input() {
        let lpips = load::<A>();
        let x = image::<A>("image0.npy").require_grad();
        let grads = lpips.forward(x.clone(), image("image1.npy")).sum().backward();
        let gx = x.grad(&grads).expect("gradient for the input");
        assert!(values(gx.clone().abs().sum())[0] > 0.0);
        assert!(values(gx).iter().all(|v| v.is_finite()));
        assert!(lpips.lins.iter().all(|l| l.weight.grad(&grads).is_none()));
        assert!(lpips.vgg.convs.iter().all(|c| c.weight.grad(&grads).is_none()));
        assert!(lpips.vgg.convs.iter().all(|c| !c.weight.is_require_grad()));
    }

    #[test]
    fn wrong_widths_name_the_file_key_and_shapes() {
        let err = LpipsConfig::new()
            .with_widths([4, 8, 8, 16, 32])
            .load::<B>(fixture("vgg16.pth"), fixture("lin.pth"), &Default::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("vgg16.pth"), "{err}");
        assert!(err.contains("features.24.weight"), "{err}");
        assert!(err.contains("[16, 16, 3, 3]") && err.contains("[32, 16, 3, 3]"), "{err}");
    }

    #[test]
    fn swapped_files_are_rejected() {
        let err = config().load::<B>(fixture("lin.pth"), fixture("vgg16.pth"), &Default::default()).unwrap_err();
        let err = err.to_string();
        assert!(err.contains("lin.pth") && err.contains("features"), "{err}");
    }
}
