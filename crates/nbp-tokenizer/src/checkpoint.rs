//! Loading and saving tokenizer weights.
//!
//! Supported files:
//! - the official tokenizer checkpoints `magvit2_ucf.pt` / `magvit2_k600.pt` (`model_state_dict`, keys prefixed
//!   `module.`), a bare state dict, and the tokenizer copy inside an official generator `.ckpt`
//!   (`state_dict`, prefix `first_stage_model.`);
//! - the project's own `.safetensors` files, which keep the official key names and store the configuration as
//!   JSON in the metadata (`nbp.config`).
//!
//! A PyTorch file that records its architecture beside the weights (`config`, as the official code writes it)
//! is checked against the architecture it is read as, since FSQ levels and norm groups change no shape.
//!
//! Imports are strict: every parameter is filled from the file, every tensor of the file is used, and shapes
//! must match; otherwise the error names the first offending key and both shapes.

use std::path::Path;

use burn::module::Param;
use burn::nn::conv::Conv3d;
use burn::prelude::*;

use nbp_core::pickle::{TorchFile, Value};
use nbp_core::weights::{WeightMap, WeightWriter};
use nbp_core::{Error, Result};

use crate::causal_conv3d::CausalConv3d;
use crate::config::{PRESETS, TokenizerConfig};
use crate::group_norm3d::GroupNorm3d;
use crate::layer::Layer;
use crate::residual_unit::ResidualUnit;
use crate::swish::Swish;
use crate::tokenizer::VideoTokenizer;

/// Metadata key of the file kind in the project's own format.
pub const KIND_KEY: &str = "nbp.kind";
/// Metadata key of the JSON configuration in the project's own format.
pub const CONFIG_KEY: &str = "nbp.config";
/// Metadata key of the frame size (`HxW`) a tokenizer was trained at, in the project's own format (written by
/// `nbp-cli train-tokenizer`; the default clip size of the CLI for that file).
pub const RESOLUTION_KEY: &str = "nbp.resolution";
/// Value of [`KIND_KEY`] for tokenizers.
pub const TOKENIZER_KIND: &str = "tokenizer";

/// Where a loaded tokenizer came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerSource {
    /// An official `.pt` file (`model_state_dict`).
    OfficialTokenizer,
    /// The tokenizer embedded in an official generator checkpoint (`state_dict.first_stage_model.*`).
    OfficialGenerator,
    /// A plain PyTorch state dict with `encoder_layers.*` / `decoder_layers.*` keys.
    StateDict,
    /// The project's own `.safetensors` format.
    Native,
}

impl std::fmt::Display for TokenizerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::OfficialTokenizer => "official tokenizer checkpoint",
            Self::OfficialGenerator => "tokenizer of an official generator checkpoint",
            Self::StateDict => "PyTorch state dict",
            Self::Native => "nbp safetensors",
        })
    }
}

fn param<B: Backend, const D: usize>(
    p: &Param<Tensor<B, D>>,
    w: &mut WeightMap,
    key: &str,
) -> Result<Param<Tensor<B, D>>> {
    let value = p.val();
    let t = w.take::<B, D>(key, value.dims(), &value.device())?;
    Ok(Param::from_tensor(t))
}

/// A module whose parameters map onto official checkpoint keys.
trait OfficialKeys: Sized {
    fn import(self, w: &mut WeightMap, key: &str) -> Result<Self>;
    fn export(&self, w: &mut WeightWriter, key: &str);
}

impl<B: Backend> OfficialKeys for Conv3d<B> {
    fn import(mut self, w: &mut WeightMap, key: &str) -> Result<Self> {
        self.weight = param(&self.weight, w, &format!("{key}.weight"))?;
        if let Some(b) = &self.bias {
            self.bias = Some(param(b, w, &format!("{key}.bias"))?);
        }
        Ok(self)
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        w.put(format!("{key}.weight"), &self.weight.val());
        if let Some(b) = &self.bias {
            w.put(format!("{key}.bias"), &b.val());
        }
    }
}

impl<B: Backend> OfficialKeys for CausalConv3d<B> {
    fn import(mut self, w: &mut WeightMap, key: &str) -> Result<Self> {
        self.conv = self.conv.import(w, &format!("{key}.conv"))?;
        Ok(self)
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        self.conv.export(w, &format!("{key}.conv"));
    }
}

impl<B: Backend> OfficialKeys for GroupNorm3d<B> {
    fn import(mut self, w: &mut WeightMap, key: &str) -> Result<Self> {
        self.gamma = param(&self.gamma, w, &format!("{key}.weight"))?;
        self.beta = param(&self.beta, w, &format!("{key}.bias"))?;
        Ok(self)
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        w.put(format!("{key}.weight"), &self.gamma.val());
        w.put(format!("{key}.bias"), &self.beta.val());
    }
}

impl<B: Backend> OfficialKeys for Swish<B> {
    fn import(mut self, w: &mut WeightMap, key: &str) -> Result<Self> {
        let value = self.beta.val();
        let [c] = value.dims();
        let beta = w.take::<B, 5>(&format!("{key}.beta"), [1, c, 1, 1, 1], &value.device())?;
        self.beta = Param::from_tensor(beta.reshape([c]));
        Ok(self)
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        let beta = self.beta.val();
        let [c] = beta.dims();
        w.put(format!("{key}.beta"), &beta.reshape([1, c, 1, 1, 1]));
    }
}

impl<B: Backend> OfficialKeys for ResidualUnit<B> {
    fn import(mut self, w: &mut WeightMap, key: &str) -> Result<Self> {
        self.norm1 = self.norm1.map(|n| n.import(w, &format!("{key}.fn.0"))).transpose()?;
        self.act1 = self.act1.import(w, &format!("{key}.fn.1"))?;
        self.conv1 = self.conv1.import(w, &format!("{key}.fn.2"))?;
        self.norm2 = self.norm2.map(|n| n.import(w, &format!("{key}.fn.3"))).transpose()?;
        self.act2 = self.act2.import(w, &format!("{key}.fn.4"))?;
        self.conv2 = self.conv2.import(w, &format!("{key}.fn.5"))?;
        if let Some(s) = self.shortcut {
            self.shortcut = Some(s.import(w, &format!("{key}.residual_fn.0"))?);
        }
        Ok(self)
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        if let Some(n) = &self.norm1 {
            n.export(w, &format!("{key}.fn.0"));
        }
        self.act1.export(w, &format!("{key}.fn.1"));
        self.conv1.export(w, &format!("{key}.fn.2"));
        if let Some(n) = &self.norm2 {
            n.export(w, &format!("{key}.fn.3"));
        }
        self.act2.export(w, &format!("{key}.fn.4"));
        self.conv2.export(w, &format!("{key}.fn.5"));
        if let Some(s) = &self.shortcut {
            s.export(w, &format!("{key}.residual_fn.0"));
        }
    }
}

impl<B: Backend> OfficialKeys for Layer<B> {
    fn import(self, w: &mut WeightMap, key: &str) -> Result<Self> {
        Ok(match self {
            Layer::Conv(l) => Layer::Conv(l.import(w, key)?),
            Layer::Residual(l) => Layer::Residual(l.import(w, key)?),
            Layer::Norm(l) => Layer::Norm(l.import(w, key)?),
            Layer::Swish(l) => Layer::Swish(l.import(w, key)?),
            Layer::Project(l) => Layer::Project(l.import(w, key)?),
            Layer::DepthToSpace(l) => Layer::DepthToSpace(l),
        })
    }
    fn export(&self, w: &mut WeightWriter, key: &str) {
        match self {
            Layer::Conv(l) => l.export(w, key),
            Layer::Residual(l) => l.export(w, key),
            Layer::Norm(l) => l.export(w, key),
            Layer::Swish(l) => l.export(w, key),
            Layer::Project(l) => l.export(w, key),
            Layer::DepthToSpace(_) => {}
        }
    }
}

fn import_layers<B: Backend>(layers: Vec<Layer<B>>, w: &mut WeightMap, name: &str) -> Result<Vec<Layer<B>>> {
    layers.into_iter().enumerate().map(|(i, l)| l.import(w, &format!("{name}.{i}"))).collect()
}

/// Fills a tokenizer built from `config` with the tensors of `w` (official key names, no prefix), strictly.
pub fn import_tokenizer<B: Backend>(
    config: &TokenizerConfig,
    mut w: WeightMap,
    device: &B::Device,
) -> Result<VideoTokenizer<B>> {
    let mut model = VideoTokenizer::<B>::new(config, device)?;
    model.encoder.layers = import_layers(model.encoder.layers, &mut w, "encoder_layers")?;
    model.decoder.layers = import_layers(model.decoder.layers, &mut w, "decoder_layers")?;
    w.finish()?;
    Ok(model)
}

/// Adds the tokenizer's tensors to `w` under the official key names, prefixed with `prefix`.
pub fn export_tokenizer<B: Backend>(model: &VideoTokenizer<B>, w: &mut WeightWriter, prefix: &str) {
    for (i, l) in model.encoder.layers.iter().enumerate() {
        l.export(w, &format!("{prefix}encoder_layers.{i}"));
    }
    for (i, l) in model.decoder.layers.iter().enumerate() {
        l.export(w, &format!("{prefix}decoder_layers.{i}"));
    }
}

/// Selects the tokenizer tensors of a PyTorch file: official `.pt`, generator `.ckpt`, or bare state dict.
pub fn select_official_tokenizer(w: WeightMap) -> Result<(WeightMap, TokenizerSource)> {
    let has = |w: &WeightMap, p: &str| w.keys().any(|k| k.starts_with(p));
    if has(&w, "model_state_dict.") {
        let w = w.select_prefix("model_state_dict.");
        let w = if w.keys().all(|k| k.starts_with("module.")) { w.select_prefix("module.") } else { w };
        return Ok((w, TokenizerSource::OfficialTokenizer));
    }
    if has(&w, "state_dict.first_stage_model.") {
        return Ok((w.select_prefix("state_dict.first_stage_model."), TokenizerSource::OfficialGenerator));
    }
    if has(&w, "state_dict.") {
        return Err(Error::file(
            w.path(),
            "is a Lightning checkpoint without an embedded tokenizer (no 'first_stage_model.' keys): pass the \
             tokenizer's own .pt file (magvit2_ucf.pt / magvit2_k600.pt)",
        ));
    }
    if has(&w, "module.encoder_layers.") {
        return Ok((w.select_prefix("module."), TokenizerSource::StateDict));
    }
    if has(&w, "encoder_layers.") {
        return Ok((w, TokenizerSource::StateDict));
    }
    let first: Vec<&str> = w.keys().take(3).collect();
    Err(Error::file(
        w.path(),
        format!(
            "does not contain tokenizer weights (expected 'model_state_dict', 'state_dict.first_stage_model.' or \
             'encoder_layers.' keys; found {first:?})"
        ),
    ))
}

/// Whether `path` is an official generator `.ckpt` with a copy of its tokenizer (`state_dict.first_stage_model.*`).
/// `false` for any file that is not such a checkpoint, or cannot be read.
pub fn embeds_tokenizer(path: &Path) -> bool {
    !nbp_core::weights::is_safetensors(path)
        && WeightMap::read_pytorch(path)
            .and_then(select_official_tokenizer)
            .is_ok_and(|(_, source)| source == TokenizerSource::OfficialGenerator)
}

/// Loads a tokenizer from an official PyTorch file or a project `.safetensors` file.
///
/// `config` is the architecture for PyTorch files (default: the `official` preset); project files carry their
/// own configuration, and a different `config` is an error.
pub fn load_tokenizer<B: Backend>(
    path: impl AsRef<Path>,
    config: Option<&TokenizerConfig>,
    device: &B::Device,
) -> Result<(VideoTokenizer<B>, TokenizerSource)> {
    load_tokenizer_with_resolution(path, config, device).map(|(model, source, _)| (model, source))
}

/// A loaded tokenizer, where it came from, and the frame size `(height, width)` it was trained at when its file
/// records it.
pub type LoadedTokenizer<B> = (VideoTokenizer<B>, TokenizerSource, Option<(usize, usize)>);

/// [`load_tokenizer`], and the frame size `(height, width)` the file says the tokenizer was trained at
/// ([`RESOLUTION_KEY`]; `None` for official files and files saved without it).
pub fn load_tokenizer_with_resolution<B: Backend>(
    path: impl AsRef<Path>,
    config: Option<&TokenizerConfig>,
    device: &B::Device,
) -> Result<LoadedTokenizer<B>> {
    let path = path.as_ref();
    if !path.exists() {
        return Err(Error::file(path, "tokenizer checkpoint not found"));
    }
    if let Some(e) = nbp_core::error::not_a_model_file(path, "tokenizer.safetensors", "train-tokenizer") {
        return Err(e);
    }
    if nbp_core::weights::is_safetensors(path) {
        let (w, meta) = WeightMap::read_safetensors(path)?;
        let kind = meta.get(KIND_KEY).map(String::as_str);
        if kind != Some(TOKENIZER_KIND) {
            let what = match kind {
                Some("generator") => "a generator (pass it as --generator)".to_string(),
                Some(other) => format!("of kind '{other}'"),
                None => "a safetensors file without nbp metadata".to_string(),
            };
            return Err(Error::file(path, format!("is not an nbp tokenizer file: it is {what}")));
        }
        let stored: TokenizerConfig =
            meta.get(CONFIG_KEY).ok_or_else(|| Error::file(path, "has no 'nbp.config' metadata")).and_then(|c| {
                TokenizerConfig::from_json(c).map_err(|e| Error::file(path, format!("bad 'nbp.config' metadata: {e}")))
            })?;
        stored.validate().map_err(|e| Error::file(path, e.to_string()))?;
        if let Some(c) = config.filter(|c| **c != stored) {
            return Err(Error::file(
                path,
                format!(
                    "carries its own architecture ({}), which differs from the one requested ({})",
                    stored.summary(),
                    c.summary()
                ),
            ));
        }
        let resolution = match meta.get(RESOLUTION_KEY) {
            None => None,
            Some(v) => Some(parse_resolution(v).ok_or_else(|| {
                Error::file(path, format!("bad '{RESOLUTION_KEY}' metadata '{v}': expected HxW, e.g. 64x64"))
            })?),
        };
        return Ok((import_tokenizer(&stored, w, device)?, TokenizerSource::Native, resolution));
    }
    let asked = config.cloned().unwrap_or_else(TokenizerConfig::official);
    let all = WeightMap::read_pytorch(path)?;
    if let Some(recorded) = all.torch_file().and_then(|f| recorded_config(f, &asked)).filter(|r| *r != asked) {
        // Weights that fit the shapes of another architecture would load and compute something else: FSQ levels
        // and norm groups change no shape.
        let preset = PRESETS.into_iter().find(|&p| TokenizerConfig::preset(p).is_ok_and(|c| c == recorded));
        let fix = match preset {
            Some(p) => format!("--tokenizer-config {p}"),
            None => format!(
                "--tokenizer-config with a JSON file holding {}",
                serde_json::to_string(&recorded).expect("config serialises")
            ),
        };
        let (r, a) = (&recorded, &asked);
        let fields = [
            ("channels", format!("{:?}", r.channels), format!("{:?}", a.channels)),
            ("encoder units", format!("{:?}", r.encoder_res_blocks), format!("{:?}", a.encoder_res_blocks)),
            ("decoder units", format!("{:?}", r.decoder_res_blocks), format!("{:?}", a.decoder_res_blocks)),
            ("norm groups", r.norm_groups.to_string(), a.norm_groups.to_string()),
            ("group norm", r.group_norm.to_string(), a.group_norm.to_string()),
            ("FSQ levels", format!("{:?}", r.fsq_levels), format!("{:?}", a.fsq_levels)),
        ];
        let differences: Vec<String> = fields
            .into_iter()
            .filter(|(_, r, a)| r != a)
            .map(|(name, r, a)| format!("{name} {r} recorded, {a} read"))
            .collect();
        return Err(Error::file(
            path,
            format!(
                "records the architecture of its weights, and the one it is read as ({}) differs: {}; pass {fix}",
                if config.is_some() { "the configuration given" } else { "the official one, the default" },
                differences.join(", ")
            ),
        ));
    }
    let (w, source) = select_official_tokenizer(all)?;
    Ok((import_tokenizer(&asked, w, device)?, source, None))
}

/// The architecture that a PyTorch tokenizer file records beside its weights, laid over `config`: the official
/// code and our fixtures keep the constructor's arguments as a pickled blob under `config`. The fields named as
/// ours are read where their type fits (`channels` only as four widths: the official arguments use the name for
/// the three input channels); `None` when the file records nothing readable.
fn recorded_config(file: &TorchFile, config: &TokenizerConfig) -> Option<TokenizerConfig> {
    let record = match file.root().get("config")? {
        Value::Bytes(b) => nbp_core::pickle::unpickle(&b).ok()?,
        v => v,
    };
    let count = |v: &Value| v.as_i64().and_then(|n| usize::try_from(n).ok());
    let counts = |key: &str| -> Option<Vec<usize>> { record.get(key)?.as_items()?.iter().map(count).collect() };
    let mut out = config.clone();
    let mut read = false;
    for (key, field) in [
        ("channels", &mut out.channels),
        ("encoder_res_blocks", &mut out.encoder_res_blocks),
        ("decoder_res_blocks", &mut out.decoder_res_blocks),
    ] {
        if let Some(v) = counts(key).filter(|v| v.len() == 4) {
            *field = v;
            read = true;
        }
    }
    if let Some(v) = counts("fsq_levels").filter(|v| !v.is_empty()) {
        out.fsq_levels = v;
        read = true;
    }
    if let Some(n) = record.get("norm_groups").as_ref().and_then(count) {
        out.norm_groups = n;
        read = true;
    }
    if let Some(Value::Bool(b)) = record.get("group_norm") {
        out.group_norm = b;
        read = true;
    }
    read.then_some(out)
}

/// `HxW` with both positive.
fn parse_resolution(v: &str) -> Option<(usize, usize)> {
    let (h, w) = v.split_once('x')?;
    let (h, w) = (h.trim().parse().ok()?, w.trim().parse().ok()?);
    (h > 0 && w > 0).then_some((h, w))
}

/// Saves a tokenizer in the project's own format (`.safetensors` with the official key names and the config
/// as JSON metadata), atomically.
pub fn save_tokenizer<B: Backend>(model: &VideoTokenizer<B>, path: impl AsRef<Path>) -> Result<()> {
    save_tokenizer_with_resolution(model, path, None)
}

/// [`save_tokenizer`], recording the frame size `(height, width)` the tokenizer was trained at
/// ([`RESOLUTION_KEY`]), which the CLI then reads clips at by default.
pub fn save_tokenizer_with_resolution<B: Backend>(
    model: &VideoTokenizer<B>,
    path: impl AsRef<Path>,
    resolution: Option<(usize, usize)>,
) -> Result<()> {
    let path = path.as_ref();
    if !nbp_core::weights::is_safetensors(path) {
        return Err(Error::invalid(format!("{}: tokenizer files are saved as .safetensors", path.display())));
    }
    let mut w = WeightWriter::new();
    w.metadata(KIND_KEY, TOKENIZER_KIND);
    w.metadata(CONFIG_KEY, serde_json::to_string(model.config()).expect("config serialises"));
    if let Some((h, wd)) = resolution {
        w.metadata(RESOLUTION_KEY, format!("{h}x{wd}"));
    }
    export_tokenizer(model, &mut w, "");
    w.write(path)
}
