//! Loading and saving generator weights: official Lightning `.ckpt` files (`state_dict.transformer.*`, with the
//! architecture in the pickled `hyper_parameters.args`) and the project's own `.safetensors` files (official key
//! names plus JSON metadata). Imports are strict (see `nbp_core::weights`).

use std::path::Path;

use burn::module::Param;
use burn::nn::LayerNorm;
use burn::prelude::*;

use nbp_core::pickle::Value;
use nbp_core::vocab::Conditioning;
use nbp_core::weights::{WeightMap, WeightWriter};
use nbp_core::{Error, Result};

use crate::config::GptConfig;
use crate::gpt::Gpt;
use crate::linear::Linear;

/// Metadata key of the file kind in the project's own format.
pub const KIND_KEY: &str = "nbp.kind";
/// Metadata key of the JSON model configuration.
pub const CONFIG_KEY: &str = "nbp.config";
/// Metadata key of the JSON generation settings ([`GeneratorSettings`]).
pub const SETTINGS_KEY: &str = "nbp.settings";
/// Metadata key of the [`GeneratorInfo`] (JSON) of models trained by nbp.
pub const INFO_KEY: &str = "nbp.info";

/// What a model trained by nbp knows about its data: class names (label `i` is `classes[i]`), the latent grid
/// of its training clips, the block shape `[t, h, w]` it was trained with (files written before it was
/// recorded, and official checkpoints, use row blocks) and the tokenizer file its token cache was made with.
/// Official checkpoints carry none of these.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeneratorInfo {
    #[serde(default)]
    pub classes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_grid: Option<[usize; 3]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block_shape: Option<[usize; 3]>,
    /// The tokenizer file the training tokens were made with, as the token cache records it (an absolute path
    /// for caches made since it was recorded so): `sample` and `eval-frame-prediction` decode with it when no
    /// `--tokenizer` is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<String>,
    /// [`nbp_core::weights::file_fingerprint`] of that tokenizer file when the tokens were made: a file at the
    /// same path with another fingerprint was retrained or replaced since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_fingerprint: Option<String>,
    /// The condition dropout it was trained with (`p_drop_cond`): at 0 its null-condition embedding never
    /// learnt anything, so classifier-free guidance has nothing to guide by. `None` in files from before it was
    /// recorded, and in official checkpoints (trained without it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_drop_cond: Option<f64>,
    /// The dataset its token cache was made from (a dataset spec, as `tokenize-dataset --dataset` takes it) and
    /// the frame rate its clips were read at: `eval-frame-prediction` scores it on that data by default. `None` in
    /// files from before they were recorded, and in official checkpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fps: Option<f64>,
}

impl GeneratorInfo {
    /// Whether the tokenizer file at `path` is not the one the training tokens were made with: its fingerprint
    /// differs from the recorded one (`false` when none was recorded).
    pub fn tokenizer_changed(&self, path: &Path) -> Result<bool> {
        match &self.tokenizer_fingerprint {
            Some(then) => Ok(*then != nbp_core::weights::file_fingerprint(path)?),
            None => Ok(false),
        }
    }
}

/// How a checkpoint's model builds and reads sequences (from the official `hyper_parameters.args`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GeneratorSettings {
    /// Block size (`token_number_per_step`).
    pub block: usize,
    /// Hybrid start (NTP for the first block, then the middle-bos block, then NBP).
    pub hybrid: bool,
    /// No condition.
    pub unconditional: bool,
    /// Condition tokens per sequence (`cond_token_num`).
    pub cond_tokens: usize,
    /// Size of the condition vocabulary (32000 LLaMA-2 ids for the official UCF model; classes for label
    /// conditioning; 0 without a condition).
    #[serde(default)]
    pub cond_vocab: usize,
}

impl std::fmt::Display for GeneratorSettings {
    /// `block 8, hybrid start, 1 condition token (16 condition ids)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "block {}", self.block)?;
        if self.hybrid {
            write!(f, ", hybrid start")?;
        }
        if self.unconditional {
            return write!(f, ", unconditional");
        }
        let s = if self.cond_tokens == 1 { "" } else { "s" };
        write!(f, ", {} condition token{s}", self.cond_tokens)?;
        if self.cond_vocab > 0 {
            write!(f, " ({} condition ids)", self.cond_vocab)?;
        }
        Ok(())
    }
}

/// Command-line overrides and fallbacks for values a checkpoint may not carry.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub n_head: Option<usize>,
    pub block: Option<usize>,
    pub hybrid: Option<bool>,
    pub unconditional: Option<bool>,
    /// Refuse `n_head` or `block` where they differ from what an official checkpoint records, instead of warning
    /// (`generator convert`: the converted file would record the override as what the model was trained with).
    pub refuse_changes: bool,
}

/// Checks that what a generator file says about its model holds together: the architecture, the way it reads
/// sequences (`settings`) and what training recorded (`info`). A file that contradicts itself is refused when it
/// is loaded, with the field named, rather than failing later with a message about something else.
fn check_consistent(config: &GptConfig, settings: &GeneratorSettings, info: &GeneratorInfo) -> Result<()> {
    let bad = |m: String| Err(Error::invalid(format!("is inconsistent: {m}")));
    if settings.block == 0 || settings.block > config.block_size {
        return bad(format!(
            "its block size {} must be 1 to the model's {} positions",
            settings.block, config.block_size
        ));
    }
    if !settings.unconditional && (settings.cond_tokens == 0 || settings.cond_vocab == 0) {
        return bad(format!(
            "it is conditional but has {} condition tokens of {} ids",
            settings.cond_tokens, settings.cond_vocab
        ));
    }
    if settings.unconditional && settings.hybrid {
        return bad(
            "it is unconditional, but the hybrid start needs a condition before its begin-of-video token".into()
        );
    }
    crate::generate::vocabulary(settings, config.vocab_size)
        .map_err(|e| Error::invalid(format!("is inconsistent: {e}")))?;
    if let Some(p) = info.p_drop_cond.filter(|p| !(0.0..=1.0).contains(p)) {
        return bad(format!("its condition dropout {p} is not a probability"));
    }
    if let Some(b) = info.block_shape
        && (b.contains(&0) || b.iter().product::<usize>() != settings.block)
    {
        return bad(format!("its block shape {}x{}x{} is not a block of {} tokens", b[0], b[1], b[2], settings.block));
    }
    if let Some(g) = info.latent_grid.filter(|g| g.contains(&0)) {
        return bad(format!("its latent grid {}x{}x{} is empty", g[0], g[1], g[2]));
    }
    Ok(())
}

fn arg(args: Option<&Value>, name: &str) -> Option<Value> {
    args.and_then(|a| a.get(name))
}

/// A hyper-parameter as Python pickled it, for messages: `'16' (a string)`, `16.5`, `None`.
fn shown(v: &Value) -> String {
    match v {
        Value::None => "None".into(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Str(s) => format!("'{s}' (a string)"),
        Value::List(_) | Value::Tuple(_) => "a list".into(),
        Value::Dict(_) => "a dict".into(),
        _ => "an object".into(),
    }
}

/// A whole-number hyper-parameter: `None` when absent or Python's `None`. A float without a fraction and a string
/// of digits read as the number they hold (an edited or re-saved `args`); anything else is an error that shows
/// the value, rather than reading as missing.
fn int_arg(args: Option<&Value>, name: &str) -> std::result::Result<Option<i64>, String> {
    let Some(v) = arg(args, name) else { return Ok(None) };
    match &v {
        Value::None => Ok(None),
        Value::Int(_) | Value::Bool(_) => Ok(v.as_i64()),
        Value::Float(f) if f.fract() == 0.0 && f.abs() <= 2f64.powi(53) => Ok(Some(*f as i64)),
        Value::Str(s) if s.trim().parse::<i64>().is_ok() => Ok(s.trim().parse().ok()),
        _ => Err(format!("hyper_parameters.args.{name} is {}, not a whole number", shown(&v))),
    }
}

/// A yes/no hyper-parameter: `None` when absent or Python's `None`; booleans, 0/1 and the strings `true`/`false`
/// (any case) are read; anything else is an error that shows the value.
fn bool_arg(path: &Path, args: Option<&Value>, name: &str) -> Result<Option<bool>> {
    let Some(v) = arg(args, name) else { return Ok(None) };
    match &v {
        Value::None => Ok(None),
        Value::Bool(b) => Ok(Some(*b)),
        Value::Int(i @ (0 | 1)) => Ok(Some(*i == 1)),
        Value::Str(s) if s.eq_ignore_ascii_case("true") => Ok(Some(true)),
        Value::Str(s) if s.eq_ignore_ascii_case("false") => Ok(Some(false)),
        _ => Err(Error::file(path, format!("hyper_parameters.args.{name} is {}, not True or False", shown(&v)))),
    }
}

/// A count among the hyper-parameters (heads, block size) of the checkpoint `path`: `None` when absent, an error
/// naming the value when it is not a whole number, negative or absurd (above 2^20). `flag` overrides it.
fn count_arg(path: &Path, args: Option<&Value>, name: &str, flag: &str) -> Result<Option<usize>> {
    let Some(n) = int_arg(args, name).map_err(|m| Error::file(path, format!("{m} (pass {flag})")))? else {
        return Ok(None);
    };
    match usize::try_from(n) {
        Ok(n) if n <= 1 << 20 => Ok(Some(n)),
        _ => Err(Error::file(path, format!("hyper_parameters.args.{name} is {n} (pass {flag})"))),
    }
}

fn linear<B: Backend>(l: &Linear<B>, w: &mut WeightMap, key: &str) -> Result<Linear<B>> {
    let weight = l.weight.val();
    let device = weight.device();
    // Same [out, in] layout as PyTorch.
    let wt = w.take::<B, 2>(&format!("{key}.weight"), weight.dims(), &device)?;
    let bias = match &l.bias {
        Some(b) => Some(Param::from_tensor(w.take::<B, 1>(&format!("{key}.bias"), b.val().dims(), &device)?)),
        None => None,
    };
    let mut out = l.clone();
    out.weight = Param::from_tensor(wt);
    out.bias = bias;
    Ok(out)
}

fn layer_norm<B: Backend>(l: &LayerNorm<B>, w: &mut WeightMap, key: &str) -> Result<LayerNorm<B>> {
    let mut l = l.clone();
    let g = l.gamma.val();
    l.gamma = Param::from_tensor(w.take::<B, 1>(&format!("{key}.weight"), g.dims(), &g.device())?);
    if let Some(b) = &l.beta {
        l.beta = Some(Param::from_tensor(w.take::<B, 1>(&format!("{key}.bias"), b.val().dims(), &g.device())?));
    }
    Ok(l)
}

/// Fills a model built from `config` with the tensors of `w` (official names without the `transformer.`
/// prefix), strictly.
pub fn import_gpt<B: Backend>(config: &GptConfig, mut w: WeightMap, device: &B::Device) -> Result<Gpt<B>> {
    let (v, d, bs, c) = (config.vocab_size, config.n_embd, config.block_size, config.cond_tokens);
    // The sizes the file has, before the model is built: a configuration that promises more (a damaged or
    // mismatched header) would otherwise allocate a model larger than the file before any shape is compared.
    let tok_emb = w.take::<B, 2>("tok_emb.weight", [v, d], device)?;
    let pos_emb = w.take::<B, 3>("pos_emb", [1, bs, d], device)?;
    let uncond_embedding = w.take::<B, 2>("uncond_embedding", [c, d], device)?;
    let last = config.n_layer.saturating_sub(1);
    let layer = format!("blocks.{last}.");
    if config.n_layer > 0 && !w.keys().any(|k| k.starts_with(&layer)) {
        return Err(Error::file(
            w.path(),
            format!("the configuration has {} layers, but the file has no tensors of layer {last}", config.n_layer),
        ));
    }
    let mut m = Gpt::<B>::new(config, device)?;
    m.tok_emb.weight = Param::from_tensor(tok_emb);
    m.pos_emb = Param::from_tensor(pos_emb);
    m.uncond_embedding = Param::from_tensor(uncond_embedding);
    let blocks = std::mem::take(&mut m.blocks);
    for (i, mut b) in blocks.into_iter().enumerate() {
        let p = format!("blocks.{i}");
        b.ln1 = layer_norm(&b.ln1, &mut w, &format!("{p}.ln1"))?;
        b.ln2 = layer_norm(&b.ln2, &mut w, &format!("{p}.ln2"))?;
        b.attn.key = linear(&b.attn.key, &mut w, &format!("{p}.attn.key"))?;
        b.attn.query = linear(&b.attn.query, &mut w, &format!("{p}.attn.query"))?;
        b.attn.value = linear(&b.attn.value, &mut w, &format!("{p}.attn.value"))?;
        b.attn.proj = linear(&b.attn.proj, &mut w, &format!("{p}.attn.proj"))?;
        b.fc = linear(&b.fc, &mut w, &format!("{p}.mlp.0"))?;
        b.fc_out = linear(&b.fc_out, &mut w, &format!("{p}.mlp.2"))?;
        m.blocks.push(b);
    }
    m.ln_f = layer_norm(&m.ln_f, &mut w, "ln_f")?;
    m.head = linear(&m.head, &mut w, "head")?;
    w.finish()?;
    Ok(m)
}

/// Adds the model's tensors to `w` under the official names, prefixed with `prefix`.
pub fn export_gpt<B: Backend>(m: &Gpt<B>, w: &mut WeightWriter, prefix: &str) {
    let lin = |w: &mut WeightWriter, l: &Linear<B>, key: String| {
        w.put(format!("{key}.weight"), &l.weight.val());
        if let Some(b) = &l.bias {
            w.put(format!("{key}.bias"), &b.val());
        }
    };
    let ln = |w: &mut WeightWriter, l: &LayerNorm<B>, key: String| {
        w.put(format!("{key}.weight"), &l.gamma.val());
        if let Some(b) = &l.beta {
            w.put(format!("{key}.bias"), &b.val());
        }
    };
    w.put(format!("{prefix}tok_emb.weight"), &m.tok_emb.weight.val());
    w.put(format!("{prefix}pos_emb"), &m.pos_emb.val());
    w.put(format!("{prefix}uncond_embedding"), &m.uncond_embedding.val());
    for (i, b) in m.blocks.iter().enumerate() {
        let p = format!("{prefix}blocks.{i}");
        ln(w, &b.ln1, format!("{p}.ln1"));
        ln(w, &b.ln2, format!("{p}.ln2"));
        lin(w, &b.attn.key, format!("{p}.attn.key"));
        lin(w, &b.attn.query, format!("{p}.attn.query"));
        lin(w, &b.attn.value, format!("{p}.attn.value"));
        lin(w, &b.attn.proj, format!("{p}.attn.proj"));
        lin(w, &b.fc, format!("{p}.mlp.0"));
        lin(w, &b.fc_out, format!("{p}.mlp.2"));
    }
    ln(w, &m.ln_f, format!("{prefix}ln_f"));
    lin(w, &m.head, format!("{prefix}head"));
}

/// A loaded generator with what is needed to sample from it.
#[derive(Debug)]
pub struct LoadedGenerator<B: Backend> {
    pub model: Gpt<B>,
    pub settings: GeneratorSettings,
    pub info: GeneratorInfo,
}

impl<B: Backend> LoadedGenerator<B> {
    /// What the file holds, for `nbp-cli generator info`: the architecture, how it reads sequences (mode,
    /// condition, vocabulary layout) and what training recorded (classes, latent grid, block shape, tokenizer).
    pub fn describe(&self) -> Result<String> {
        use std::fmt::Write;
        let c = self.model.config();
        let s = &self.settings;
        let v = crate::generate::vocabulary(s, c.vocab_size)?;
        let mut out = String::new();
        let w = &mut out;
        let params = nbp_core::module::parameter_count(self.model.num_params());
        let _ = writeln!(w, "parameters: {params}");
        let _ = writeln!(
            w,
            "architecture: {} layers, {} heads, width {}, {} positions, vocabulary {}",
            c.n_layer, c.n_head, c.n_embd, c.block_size, c.vocab_size
        );
        let mode = match crate::generate::Mode::of(s) {
            crate::generate::Mode::Hybrid if s.block == 1 => "NTP (one token per step, after the begin-of-video token)",
            crate::generate::Mode::Hybrid => {
                "hybrid start (NTP for the first block, then the middle-bos block, then NBP)"
            }
            crate::generate::Mode::Ntp => "NTP (one token per step)",
            crate::generate::Mode::Nbp => "NBP (one block per step)",
        };
        let plural = if s.block == 1 { "" } else { "s" };
        let _ = writeln!(w, "generation: {mode}, blocks of {} token{plural}", s.block);
        let condition = match v.conditioning {
            Conditioning::Unconditional => "none (frame prediction: continues given frames)".to_string(),
            Conditioning::Text { tokens: 1, vocab: classes } | Conditioning::Label { classes } => {
                format!("a class label, 1 token of {classes} classes")
            }
            Conditioning::Text { tokens, vocab } => format!("text, {tokens} tokens of {vocab} ids"),
        };
        let _ = writeln!(w, "condition: {condition}");
        let mut layout = vec![];
        if let Some(b) = v.bov() {
            layout.push(format!("BOV {b}"));
        }
        if s.hybrid && s.block > 1 {
            layout.push(match s.block {
                2 => "middle-bos 1".to_string(),
                b => format!("middle-bos 1–{}", b - 1),
            });
        }
        if v.conditioning.vocab() > 0 {
            layout.push(format!("condition ids from {}", v.condition_offset()));
        }
        layout.push(format!("video codes from {} ({} codes)", v.video_offset(), v.codebook));
        let _ = writeln!(w, "vocabulary: {}", layout.join(", "));
        let i = &self.info;
        if !i.classes.is_empty() {
            let shown: Vec<&str> = i.classes.iter().take(8).map(String::as_str).collect();
            let more = if i.classes.len() > 8 { ", …" } else { "" };
            let _ = writeln!(w, "classes ({}): {}{more}", i.classes.len(), shown.join(", "));
        }
        if let Some([t, h, x]) = i.latent_grid {
            let _ = writeln!(w, "trained on latent grids of {t}x{h}x{x}");
        }
        if let Some([t, h, x]) = i.block_shape {
            let _ = writeln!(w, "trained with blocks of {t}x{h}x{x}");
        }
        if let Some(d) = &i.dataset {
            let rate = i.fps.map_or(String::new(), |f| format!(" at {f} fps"));
            let _ = writeln!(w, "trained on {d}{rate}");
        }
        if let Some(t) = &i.tokenizer {
            let _ = writeln!(w, "tokenizer: {t} (the one its tokens were made with; sample decodes with it)");
        }
        if let Some(p) = i.p_drop_cond.filter(|_| !s.unconditional) {
            let guidance = if p > 0.0 {
                "classifier-free guidance (--cfg-scale) can work"
            } else {
                "its null condition is untrained, so classifier-free guidance (--cfg-scale) cannot work"
            };
            let _ = writeln!(w, "trained with condition dropout {p}: {guidance}");
        }
        Ok(out)
    }

    /// The block shape to generate with when none is asked for: the one the model was trained with when its
    /// file records it, else rows of `block` tokens, which must tile the rows of `grid`.
    pub fn default_block_shape(&self, grid: &nbp_core::blocks::LatentGrid) -> Result<nbp_core::blocks::BlockShape> {
        use nbp_core::blocks::BlockShape;
        let block = self.settings.block;
        match self.info.block_shape {
            Some([t, h, w]) => Ok(BlockShape::new(t, h, w)),
            None if grid.w.is_multiple_of(block) => Ok(BlockShape::new(1, 1, block)),
            None => Err(Error::invalid(format!("blocks of {block} tokens do not fit rows of {}", grid.w))),
        }
    }
}

/// Loads a generator from an official Lightning `.ckpt` or a project `.safetensors` file.
///
/// For `.ckpt` files the architecture is inferred from the tensor shapes (`V`, `d`, layers, positions) and the
/// pickled `hyper_parameters.args` (heads, block size, hybrid, unconditional, condition length); `overrides`
/// take precedence, and a value that can be found nowhere is an error that names the flag to pass.
pub fn load_generator<B: Backend>(
    path: impl AsRef<Path>,
    overrides: &Overrides,
    device: &B::Device,
) -> Result<LoadedGenerator<B>> {
    let path = path.as_ref();
    read_generator(path, overrides, device).map_err(|e| match e {
        // An error about a value (a layout that does not fit, an architecture that does not build) is one about
        // this file.
        Error::Invalid(m) => Error::file(path, m),
        e => e,
    })
}

fn read_generator<B: Backend>(path: &Path, overrides: &Overrides, device: &B::Device) -> Result<LoadedGenerator<B>> {
    if !path.exists() {
        return Err(Error::file(path, "generator checkpoint not found"));
    }
    if let Some(e) = nbp_core::error::not_a_model_file(path, "generator.safetensors", "train") {
        return Err(e);
    }
    if nbp_core::weights::is_safetensors(path) {
        let (w, meta) = WeightMap::read_safetensors(path)?;
        let kind = meta.get(KIND_KEY).map(String::as_str);
        if kind != Some("generator") {
            let what = match kind {
                Some("tokenizer") => "a tokenizer (pass it as --tokenizer)".to_string(),
                Some(other) => format!("of kind '{other}'"),
                None => "a safetensors file without nbp metadata".to_string(),
            };
            return Err(Error::file(path, format!("is not an nbp generator file: it is {what}")));
        }
        let parse = |key: &str| -> Result<&String> {
            meta.get(key).ok_or_else(|| Error::file(path, format!("has no '{key}' metadata")))
        };
        let config: GptConfig =
            serde_json::from_str(parse(CONFIG_KEY)?).map_err(|e| Error::file(path, format!("bad config: {e}")))?;
        let settings: GeneratorSettings =
            serde_json::from_str(parse(SETTINGS_KEY)?).map_err(|e| Error::file(path, format!("bad settings: {e}")))?;
        let info: GeneratorInfo = match meta.get(INFO_KEY) {
            Some(text) => serde_json::from_str(text).map_err(|e| Error::file(path, format!("bad info: {e}")))?,
            None => GeneratorInfo::default(),
        };
        // The three records must agree, or sampling would fail later with a message about the wrong thing.
        if !settings.unconditional && settings.cond_tokens != config.cond_tokens {
            return Err(Error::file(
                path,
                format!(
                    "is inconsistent: its settings say {} condition tokens, its model config {}",
                    settings.cond_tokens, config.cond_tokens
                ),
            ));
        }
        if settings.cond_vocab > 0 && info.classes.len() > settings.cond_vocab {
            return Err(Error::file(
                path,
                format!(
                    "is inconsistent: it names {} classes but embeds {} condition ids",
                    info.classes.len(),
                    settings.cond_vocab
                ),
            ));
        }
        // The file records what the model was trained with; an override that differs would silently sample
        // a model other than the trained one.
        let recorded = [
            ("--n-head", overrides.n_head, config.n_head, format!("{} attention heads", config.n_head)),
            ("--block-size", overrides.block, settings.block, format!("block size {}", settings.block)),
        ];
        for (flag, asked, value, what) in recorded {
            if let Some(asked) = asked.filter(|&a| a != value) {
                return Err(Error::file(
                    path,
                    format!(
                        "{flag} {asked} differs from what this nbp file records ({what}), which the model was \
                         trained with: leave out {flag} (it is for official .ckpt files)"
                    ),
                ));
            }
        }
        check_consistent(&config, &settings, &info)?;
        let model = import_gpt(&config, w, device)?;
        return Ok(LoadedGenerator { model, settings, info });
    }
    let all = WeightMap::read_pytorch(path)?;
    if !all.keys().any(|k| k.starts_with("state_dict.transformer.")) {
        let tokenizer = all.keys().any(|k| k.contains("encoder")) && all.keys().any(|k| k.contains("decoder"));
        return Err(Error::file(
            path,
            format!(
                "has no 'state_dict.transformer.*' tensors: not an official generator checkpoint{}",
                if tokenizer { " (it holds a tokenizer's encoder and decoder: pass it as --tokenizer)" } else { "" }
            ),
        ));
    }
    let args = all.torch_file().and_then(|f| f.root().get("hyper_parameters")).and_then(|h| h.get("args").or(Some(h)));
    let w = all.select_prefix("state_dict.transformer.");
    let OfficialShapes { v, d, block_size, cond_tokens, n_layer } = official_shapes(&w)?;
    let recorded_heads = count_arg(path, args.as_ref(), "n_head", "--n-head")?;
    let recorded_block = count_arg(path, args.as_ref(), "token_number_per_step", "--block-size")?;
    // The flags override what the file records (a file can record a wrong value), but a different value almost
    // always means a mistake: sampled so, a model reads its weights as another architecture or feeds its
    // tokens in another grouping than it learnt.
    for (flag, asked, recorded, what) in [
        ("--n-head", overrides.n_head, recorded_heads, "attention heads"),
        ("--block-size", overrides.block, recorded_block, "block size"),
    ] {
        if let (Some(asked), Some(recorded)) = (asked, recorded)
            && asked != recorded
        {
            if overrides.refuse_changes {
                return Err(Error::file(
                    path,
                    format!(
                        "{flag} {asked} differs from the {what} {recorded} that its hyper-parameters record: the \
                         converted file would record {asked} as what the model was trained with, so leave out \
                         {flag} (sampling the .ckpt takes it, with a warning)"
                    ),
                ));
            }
            eprintln!(
                "warning: {}: {flag} {asked} overrides the {what} {recorded} that its hyper-parameters record; \
                 the model was trained with {recorded}, so expect noise unless the record is wrong (leave out \
                 {flag})",
                path.display()
            );
        }
    }
    let n_head = overrides
        .n_head
        .or(recorded_heads)
        .ok_or_else(|| Error::file(path, "the number of attention heads cannot be inferred from the weights and the file has no hyper_parameters.args.n_head: pass --n-head (16 for base, 32 for xl and 3b)"))?;
    let block = overrides.block.or(recorded_block).ok_or_else(|| {
        Error::file(path, "the block size is not recorded in the file: pass --block-size (16 for the official models)")
    })?;
    if block == 0 || n_head == 0 {
        return Err(Error::file(
            path,
            format!(
                "block size {block} and {n_head} attention heads: both must be at least 1 (--block-size 16 and \
                 --n-head 16 for the official base models)"
            ),
        ));
    }
    let hybrid = match overrides.hybrid {
        Some(h) => h,
        None => bool_arg(path, args.as_ref(), "hybrid")?.unwrap_or(false),
    };
    let unconditional = match overrides.unconditional {
        Some(u) => u,
        None => bool_arg(path, args.as_ref(), "unconditional")?.unwrap_or(cond_tokens == 0),
    };
    // The hyper-parameters against the weights, named as the file holds them.
    if hybrid && unconditional {
        return Err(Error::file(
            path,
            "is inconsistent: hyper_parameters.args.hybrid and .unconditional are both true, but the hybrid start \
             needs a condition before its begin-of-video token",
        ));
    }
    if !unconditional && cond_tokens == 0 {
        return Err(Error::file(
            path,
            "is inconsistent: it is conditional (hyper_parameters.args.unconditional is false), but \
             uncond_embedding, one row per condition token, has no rows",
        ));
    }
    check_bov_layout(path, args.as_ref(), hybrid, unconditional)?;
    let cond_vocab = if unconditional {
        0
    } else {
        official_cond_vocab(args.as_ref(), v, if hybrid { block } else { 1 }).map_err(|m| Error::file(path, m))?
    };
    let config = GptConfig::new(v, n_layer, n_head, d)
        .with_block_size(block_size)
        .with_cond_tokens(cond_tokens)
        .with_dropout(0.0);
    let settings = GeneratorSettings { block, hybrid, unconditional, cond_tokens, cond_vocab };
    check_consistent(&config, &settings, &GeneratorInfo::default())?;
    let model = import_gpt(&config, w, device).map_err(|e| match e {
        // An architecture the weights and the hyper-parameters (or --n-head) do not make together.
        Error::Invalid(m) => {
            Error::file(path, format!("{m} (width and heads from the weights, --n-head or the hyper-parameters)"))
        }
        e => e,
    })?;
    Ok(LoadedGenerator { model, settings, info: GeneratorInfo::default() })
}

/// The sizes of an official GPT that its weights give (the keys without `transformer.`).
#[derive(Debug, PartialEq)]
struct OfficialShapes {
    v: usize,
    d: usize,
    block_size: usize,
    cond_tokens: usize,
    n_layer: usize,
}

/// Reads [`OfficialShapes`] from the tensors that define each size, so that a damaged tensor is reported as
/// itself when it is loaded: the width comes from `ln_f.weight` (else `tok_emb.weight`), the layers from the
/// highest `blocks.N`, and a layer missing in between is named.
fn official_shapes(w: &WeightMap) -> Result<OfficialShapes> {
    let path = w.path();
    let shape = |k: &str| w.shape(k).map(<[usize]>::to_vec);
    let [v, emb_width] = shape("tok_emb.weight")
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| Error::file(path, "tok_emb.weight is missing or not 2-D"))?;
    let d = match shape("ln_f.weight").as_deref() {
        Some(&[d]) => d,
        _ => emb_width,
    };
    let block_size =
        shape("pos_emb").and_then(|s| s.get(1).copied()).ok_or_else(|| Error::file(path, "pos_emb is missing"))?;
    let cond_tokens = match shape("uncond_embedding") {
        Some(s) => *s.first().ok_or_else(|| Error::file(path, "uncond_embedding is 0-D, not [condition tokens, d]"))?,
        None => 0,
    };
    let layers: std::collections::BTreeSet<usize> =
        w.keys().filter_map(|k| k.strip_prefix("blocks.")?.split('.').next()?.parse().ok()).collect();
    let n_layer = layers.last().map_or(0, |l| l + 1);
    if n_layer == 0 {
        return Err(Error::file(
            path,
            "has no transformer blocks: 'state_dict.transformer.blocks.0.ln1.weight' is missing (is the file damaged?)",
        ));
    }
    if let Some(gap) = (0..n_layer).find(|i| !layers.contains(i)) {
        return Err(Error::file(
            path,
            format!(
                "has tensors of transformer blocks up to {} but none of block {gap} \
                 ('state_dict.transformer.blocks.{gap}.*'): the file is damaged",
                n_layer - 1
            ),
        ));
    }
    Ok(OfficialShapes { v, d, block_size, cond_tokens, n_layer })
}

/// Refuses a conditional checkpoint without the hybrid start whose hyper-parameters `args` record training
/// without the begin-of-video token. The official non-hybrid conditional model cannot train with it (reference
/// §7.8), so its files are laid out without one: unshifted condition ids, video codes right after them, a first
/// block that is never predicted (§2.4, §2.6). That layout is not ours, and reading it as ours would misplace every
/// id.
fn check_bov_layout(path: &Path, args: Option<&Value>, hybrid: bool, unconditional: bool) -> Result<()> {
    let without_bov = bool_arg(path, args, "starts_with_bov")? == Some(false);
    if hybrid || unconditional || !without_bov {
        return Ok(());
    }
    Err(Error::file(
        path,
        "a conditional generator without the hybrid start that was trained without a begin-of-video token \
         (hyper_parameters.args.starts_with_bov is false): its condition ids are not shifted and it never predicts \
         its first block (reference §2.4, §2.6), a layout nbp does not load. The released UCF (hybrid) and K600 \
         (unconditional) checkpoints do not use it",
    ))
}

/// Codes of the official tokenizer (FSQ levels 8, 8, 8, 5, 5, 5).
const OFFICIAL_CODEBOOK: usize = 64_000;

/// The condition vocabulary of a conditional official checkpoint of `v` ids with `specials` special tokens (BOV
/// and the middle-bos placeholders), from its `hyper_parameters.args`: the number of classes of a label model is
/// `class_cond_dim` (reference §2.4; `cond_stage_vocab_size` is read too), or else what `v` leaves beside the
/// official tokenizer's 64 000 codes and the specials (the official model ignores `--first_stage_vocab_size`, whose
/// default is 16 384, reference §7.9, so it is not read); a text model embeds LLaMA-2 ids (32 000).
fn official_cond_vocab(args: Option<&Value>, v: usize, specials: usize) -> std::result::Result<usize, String> {
    let mut recorded = None;
    for name in ["class_cond_dim", "cond_stage_vocab_size"] {
        if let Some(n) = int_arg(args, name)? {
            recorded = Some((name, n));
            break;
        }
    }
    if let Some((name, n)) = recorded {
        return usize::try_from(n)
            .ok()
            .filter(|&n| n <= u32::MAX as usize)
            .ok_or_else(|| format!("hyper_parameters.args.{name} is {n}"));
    }
    if arg(args, "cond_stage_key").and_then(|k| k.as_str().map(str::to_string)).as_deref() != Some("label") {
        return Ok(crate::classes::UCF_TEXT_VOCAB);
    }
    OFFICIAL_CODEBOOK.checked_add(specials).and_then(|n| v.checked_sub(n)).filter(|&n| n > 0).ok_or_else(|| {
        format!(
            "a label-conditional checkpoint whose hyper_parameters record no class_cond_dim, and whose vocabulary of \
             {v} ids leaves no classes beside {OFFICIAL_CODEBOOK} codes and {specials} special tokens"
        )
    })
}

/// Saves a generator in the project's own format (atomically).
pub fn save_generator<B: Backend>(m: &Gpt<B>, settings: &GeneratorSettings, path: impl AsRef<Path>) -> Result<()> {
    save_generator_with_info(m, settings, &GeneratorInfo::default(), path)
}

/// [`save_generator`] with class names and the training latent grid.
pub fn save_generator_with_info<B: Backend>(
    m: &Gpt<B>,
    settings: &GeneratorSettings,
    info: &GeneratorInfo,
    path: impl AsRef<Path>,
) -> Result<()> {
    let mut w = WeightWriter::new();
    if *info != GeneratorInfo::default() {
        w.metadata(INFO_KEY, serde_json::to_string(info).expect("info serialises"));
    }
    w.metadata(KIND_KEY, "generator");
    w.metadata(CONFIG_KEY, serde_json::to_string(m.config()).expect("config serialises"));
    w.metadata(SETTINGS_KEY, serde_json::to_string(settings).expect("settings serialise"));
    export_gpt(m, &mut w, "");
    w.write(path)
}

#[cfg(test)]
mod tests {
    use nbp_core::blocks::{BlockShape, LatentGrid};

    use super::*;

    #[test]
    fn the_condition_vocabulary_of_official_label_and_text_checkpoints() {
        use std::{cell::RefCell, rc::Rc};
        let args = |pairs: &[(&str, Value)]| {
            Value::Dict(Rc::new(RefCell::new(
                pairs.iter().map(|(k, v)| (Value::Str(k.to_string()), v.clone())).collect(),
            )))
        };
        let label = Value::Str("label".into());
        // Recorded as the official code names it, or as our fixtures do.
        let a = args(&[("cond_stage_key", label.clone()), ("class_cond_dim", Value::Int(101))]);
        assert_eq!(official_cond_vocab(Some(&a), 64_102, 1), Ok(101));
        let a = args(&[("cond_stage_key", label.clone()), ("cond_stage_vocab_size", Value::Int(7))]);
        assert_eq!(official_cond_vocab(Some(&a), 0, 1), Ok(7));
        // Not recorded: what the vocabulary leaves beside the codes and the specials (BOV, middle-bos).
        let a = args(&[("cond_stage_key", label.clone())]);
        assert_eq!(official_cond_vocab(Some(&a), 64_000 + 16 + 101, 16), Ok(101));
        // The official model ignores --first_stage_vocab_size (its default 16 384 included): 64 000 codes.
        let a = args(&[("cond_stage_key", label.clone()), ("first_stage_vocab_size", Value::Int(16384))]);
        assert_eq!(official_cond_vocab(Some(&a), 64_000 + 1 + 101, 1), Ok(101));
        let e = official_cond_vocab(Some(&args(&[("cond_stage_key", label)])), 64_001, 1).unwrap_err();
        assert!(e.contains("leaves no classes beside 64000 codes and 1 special tokens"), "{e}");
        // Text models (and checkpoints without hyper_parameters) embed LLaMA-2 ids.
        let text = args(&[("cond_stage_key", Value::Str("text".into()))]);
        assert_eq!(official_cond_vocab(Some(&text), 96_016, 16), Ok(32000));
        assert_eq!(official_cond_vocab(None, 96_016, 16), Ok(32000));
        let bad = args(&[("class_cond_dim", Value::Int(-3))]);
        assert_eq!(official_cond_vocab(Some(&bad), 0, 1), Err("hyper_parameters.args.class_cond_dim is -3".into()));
    }

    #[test]
    fn a_conditional_layout_without_the_begin_of_video_token_is_refused() {
        use std::{cell::RefCell, rc::Rc};
        let args = |bov: Value| Value::Dict(Rc::new(RefCell::new(vec![(Value::Str("starts_with_bov".into()), bov)])));
        let (no, yes) = (args(Value::Bool(false)), args(Value::Bool(true)));
        let path = Path::new("m.ckpt");
        let e = check_bov_layout(path, Some(&no), false, false).unwrap_err().to_string();
        assert!(e.contains("m.ckpt") && e.contains("starts_with_bov is false") && e.contains("does not load"), "{e}");
        // With BOV, not recorded (the project's layout), hybrid (which needs BOV), or unconditional: loaded.
        assert!(check_bov_layout(path, Some(&yes), false, false).is_ok());
        assert!(check_bov_layout(path, None, false, false).is_ok());
        assert!(check_bov_layout(path, Some(&no), true, false).is_ok());
        assert!(check_bov_layout(path, Some(&no), false, true).is_ok(), "K600 records starts_with_bov false");
    }

    #[test]
    fn the_default_block_shape_is_the_trained_one_else_rows() {
        let model = Gpt::<burn::backend::Flex>::new(&GptConfig::new(40, 1, 2, 16), &Default::default()).unwrap();
        let settings =
            GeneratorSettings { block: 8, hybrid: false, unconditional: true, cond_tokens: 0, cond_vocab: 0 };
        let mut g = LoadedGenerator { model, settings, info: GeneratorInfo::default() };
        assert_eq!(g.default_block_shape(&LatentGrid::new(5, 8, 16)).unwrap(), BlockShape::new(1, 1, 8));
        let err = g.default_block_shape(&LatentGrid::new(5, 12, 12)).unwrap_err().to_string();
        assert!(err.contains("blocks of 8 tokens do not fit rows of 12"), "{err}");
        g.info.block_shape = Some([2, 2, 2]);
        assert_eq!(g.default_block_shape(&LatentGrid::new(5, 12, 12)).unwrap(), BlockShape::new(2, 2, 2));
    }

    /// A configuration that promises a larger model than the file holds (a damaged header) is refused by the
    /// file's own sizes, before a model of the promised size is allocated.
    #[test]
    fn the_file_sizes_are_compared_before_the_model_is_built() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let config = GptConfig::new(40, 2, 2, 16);
        let model = Gpt::<B>::new(&config, &device).unwrap();
        let settings =
            GeneratorSettings { block: 8, hybrid: false, unconditional: true, cond_tokens: 0, cond_vocab: 0 };
        let path = std::env::temp_dir().join(format!("nbp-sizes-first-{}.safetensors", std::process::id()));
        save_generator(&model, &settings, &path).unwrap();
        let file = || WeightMap::read_safetensors(&path).unwrap().0;
        import_gpt::<B>(&config, file(), &device).unwrap();
        let huge = GptConfig { vocab_size: 1 << 40, ..config.clone() };
        let e = import_gpt::<B>(&huge, file(), &device).unwrap_err().to_string();
        assert!(e.contains("tok_emb.weight") && e.contains("has shape [40, 16] in the file"), "{e}");
        let deep = GptConfig { n_layer: 1 << 30, ..config };
        let e = import_gpt::<B>(&deep, file(), &device).unwrap_err().to_string();
        assert!(e.contains("1073741824 layers, but the file has no tensors of layer 1073741823"), "{e}");
        // Settings that contradict the model config (a label-conditional model without its condition row).
        let label = GeneratorSettings { unconditional: false, cond_tokens: 1, cond_vocab: 4, ..settings };
        save_generator(&model, &label, &path).unwrap();
        let e = load_generator::<B>(&path, &Overrides::default(), &device).err().unwrap().to_string();
        assert!(e.contains("is inconsistent: its settings say 1 condition tokens, its model config 0"), "{e}");
        std::fs::remove_file(path).unwrap();
    }

    /// Hyper-parameters pickled as another type than the official code writes (an edited or re-saved `args`)
    /// are read where they say a number or a yes/no, and refused with their value shown otherwise, rather than
    /// read as missing.
    #[test]
    fn hyper_parameters_of_another_type_are_read_or_shown() {
        use std::{cell::RefCell, rc::Rc};
        let args = |v: Value| Value::Dict(Rc::new(RefCell::new(vec![(Value::Str("n".into()), v)])));
        let path = Path::new("m.ckpt");
        let count = |v: Value| count_arg(path, Some(&args(v)), "n", "--n").map_err(|e| e.to_string());
        assert_eq!(count(Value::Int(16)), Ok(Some(16)));
        assert_eq!(count(Value::Float(16.0)), Ok(Some(16)));
        assert_eq!(count(Value::Str(" 16".into())), Ok(Some(16)));
        assert_eq!(count(Value::None), Ok(None));
        assert_eq!(count_arg(path, None, "n", "--n").unwrap(), None);
        let e = count(Value::Str("sixteen".into())).unwrap_err();
        assert_eq!(e, "m.ckpt: hyper_parameters.args.n is 'sixteen' (a string), not a whole number (pass --n)");
        assert_eq!(
            count(Value::Float(16.5)).unwrap_err(),
            "m.ckpt: hyper_parameters.args.n is 16.5, not a whole number (pass --n)"
        );
        assert_eq!(count(Value::Int(-2)).unwrap_err(), "m.ckpt: hyper_parameters.args.n is -2 (pass --n)");
        let flag = |v: Value| bool_arg(path, Some(&args(v)), "n").map_err(|e| e.to_string());
        assert_eq!(flag(Value::Bool(true)), Ok(Some(true)));
        assert_eq!(flag(Value::Int(0)), Ok(Some(false)));
        assert_eq!(flag(Value::Str("False".into())), Ok(Some(false)));
        assert_eq!(flag(Value::None), Ok(None));
        assert_eq!(flag(Value::Int(2)).unwrap_err(), "m.ckpt: hyper_parameters.args.n is 2, not True or False");
        assert_eq!(
            flag(Value::Str("yes".into())).unwrap_err(),
            "m.ckpt: hyper_parameters.args.n is 'yes' (a string), not True or False"
        );
    }

    /// A damaged official-layout file is reported at the tensor that is damaged: a layer missing in between is
    /// named (not its successors as unused), and so are one missing tensor and an embedding of the wrong width
    /// (not the positions after it).
    #[test]
    fn a_damaged_tensor_is_reported_as_itself() {
        type B = burn::backend::Flex;
        let device = Default::default();
        let config = GptConfig::new(40, 3, 2, 16).with_block_size(24);
        let model = Gpt::<B>::new(&config, &device).unwrap();
        let dir = std::env::temp_dir().join(format!("nbp-damaged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut full = WeightWriter::new();
        export_gpt(&model, &mut full, "");
        full.write(dir.join("full.safetensors")).unwrap();
        // The file without the tensors that `drop` selects, and with tok_emb.weight `narrow`er when asked.
        let damaged = |drop: &dyn Fn(&str) -> bool, narrow: bool| {
            let mut src = WeightMap::read_safetensors(dir.join("full.safetensors")).unwrap().0;
            let mut out = WeightWriter::new();
            let keys: Vec<String> = src.keys().map(str::to_string).collect();
            for k in keys.iter().filter(|k| !drop(k)) {
                let shape = src.shape(k).unwrap().to_vec();
                let data = src.take_data(k, &shape).unwrap();
                match shape.len() {
                    1 => out.put(k, &Tensor::<B, 1>::from_data(data, &device)),
                    2 if narrow && k == "tok_emb.weight" => {
                        out.put(k, &Tensor::<B, 2>::from_data(data, &device).narrow(1, 0, 15))
                    }
                    2 => out.put(k, &Tensor::<B, 2>::from_data(data, &device)),
                    _ => out.put(k, &Tensor::<B, 3>::from_data(data, &device)),
                }
            }
            let path = dir.join("damaged.safetensors");
            out.write(&path).unwrap();
            WeightMap::read_safetensors(&path).unwrap().0
        };
        let whole = official_shapes(&damaged(&|_| false, false)).unwrap();
        assert_eq!(whole, OfficialShapes { v: 40, d: 16, block_size: 24, cond_tokens: 0, n_layer: 3 });
        let e = official_shapes(&damaged(&|k| k.starts_with("blocks.1."), false)).unwrap_err().to_string();
        assert!(e.contains("has tensors of transformer blocks up to 2 but none of block 1"), "{e}");
        let e = official_shapes(&damaged(&|k| k.starts_with("blocks."), false)).unwrap_err().to_string();
        assert!(
            e.contains("has no transformer blocks: 'state_dict.transformer.blocks.0.ln1.weight' is missing"),
            "{e}"
        );
        let one = damaged(&|k| k == "blocks.1.ln1.weight", false);
        assert_eq!(official_shapes(&one).unwrap(), whole);
        let e = import_gpt::<B>(&config, one, &device).err().unwrap().to_string();
        assert!(e.contains("missing tensor 'blocks.1.ln1.weight'"), "{e}");
        let narrow = damaged(&|_| false, true);
        assert_eq!(official_shapes(&narrow).unwrap(), whole);
        let e = import_gpt::<B>(&config, narrow, &device).err().unwrap().to_string();
        assert!(
            e.contains("tensor 'tok_emb.weight' has shape [40, 15] in the file but the model expects [40, 16]"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
