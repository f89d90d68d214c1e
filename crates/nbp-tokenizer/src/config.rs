//! Tokenizer configuration and presets.

use burn::prelude::*;

use nbp_core::{Error, Result};

/// Architecture of a [`VideoTokenizer`](crate::VideoTokenizer): the official MAGVIT-v2 reproduction,
/// generalised with widths and depths so that small models share its exact structure.
///
/// Encoder: a 3×3×3 causal conv `3 → c0`; stage `i = 0..4` has `encoder_res_blocks[i]` residual units, the first
/// mapping `c_{i−1} → c_i` (`c_{−1} = c0`); stages 0, 1, 2 end with a strided causal conv of stride (1,2,2),
/// (2,2,2), (2,2,2); then GroupNorm, Swish and a 1×1×1 conv `c3 → D` (`D` = number of FSQ levels).
/// Decoder, with `d_j = channels[3 − j]`: a causal conv `D → d0`; stage `j` has `decoder_res_blocks[j]` units
/// (the first maps `d_{j−1} → d_j`); stages 0, 1, 2 end with a causal conv to `d_j·f` channels and a
/// depth-to-space of factors (2,2,2), (2,2,2), (1,2,2); then GroupNorm, Swish and a causal conv `d3 → 3`.
/// Overall: `T = 1 + 4n` frames of `H × W` pixels ↔ `1 + n` latent frames of `H/8 × W/8` codes.
#[derive(Config, Debug, PartialEq)]
pub struct TokenizerConfig {
    /// Channel widths `[c0, c1, c2, c3]` (official `[128, 256, 256, 512]`).
    pub channels: Vec<usize>,
    /// Residual units per encoder stage (official `[4, 4, 4, 8]`).
    pub encoder_res_blocks: Vec<usize>,
    /// Residual units per decoder stage (official `[8, 4, 4, 4]`).
    pub decoder_res_blocks: Vec<usize>,
    /// Groups of every GroupNorm (official 32).
    #[config(default = 32)]
    pub norm_groups: usize,
    /// `false` leaves out every GroupNorm (the residual units' two and the one before each output stage). Not
    /// the official structure: for very small models trained on a CPU, which learnt faster without them
    /// (assets/README.md); such a model cannot load official weights.
    #[config(default = true)]
    pub group_norm: bool,
    /// FSQ levels per code dimension (official `[8, 8, 8, 5, 5, 5]`, 64 000 codes).
    #[config(default = "vec![8, 8, 8, 5, 5, 5]")]
    pub fsq_levels: Vec<usize>,
}

/// Strides of the encoder's downsampling convs after stages 0, 1, 2 (`[time, height, width]`).
pub const DOWN_STRIDES: [[usize; 3]; 3] = [[1, 2, 2], [2, 2, 2], [2, 2, 2]];
/// Factors of the decoder's depth-to-space after stages 0, 1, 2.
pub const UP_FACTORS: [[usize; 3]; 3] = [[2, 2, 2], [2, 2, 2], [1, 2, 2]];
/// Spatial downsampling factor between pixels and latent codes.
pub const SPATIAL_FACTOR: usize = 8;
/// Temporal downsampling factor: `T = 1 + 4n` frames → `1 + n` latent frames.
pub const TEMPORAL_FACTOR: usize = 4;

/// Refuses a clip of `frames` frames that the tokenizer cannot encode: the message gives the rule (1 + 4n frames)
/// and the nearest lengths that follow it.
pub fn check_clip_frames(frames: usize) -> std::result::Result<(), String> {
    if frames > 0 && (frames - 1).is_multiple_of(TEMPORAL_FACTOR) {
        return Ok(());
    }
    let step = TEMPORAL_FACTOR;
    let (below, above) =
        ((frames.saturating_sub(1)) / step * step + 1, frames.saturating_sub(1).div_ceil(step) * step + 1);
    let near = if frames > 1 && below != above { format!("{below} or {above}") } else { "1, 5, 9, 13 or 17".into() };
    Err(format!("the tokenizer encodes clips of 1 + 4n frames (1, 5, 9, 13, 17, …): give {near}"))
}

/// Names of the presets accepted by [`TokenizerConfig::preset`].
pub const PRESETS: [&str; 3] = ["official", "small", "tiny"];

impl TokenizerConfig {
    /// The official tokenizer (≈370 M parameters), as in `magvit2_ucf.pt` / `magvit2_k600.pt`.
    pub fn official() -> Self {
        Self::new(vec![128, 256, 256, 512], vec![4, 4, 4, 8], vec![8, 4, 4, 4])
    }

    /// A small model with the same structure (for demos and quick training on a CPU).
    pub fn small() -> Self {
        Self::new(vec![32, 64, 64, 64], vec![1, 1, 1, 2], vec![2, 1, 1, 1])
    }

    /// The smallest model with the same structure (tests and parity fixtures).
    pub fn tiny() -> Self {
        Self::new(vec![8, 16, 16, 16], vec![1, 1, 1, 1], vec![1, 1, 1, 1]).with_norm_groups(4)
    }

    /// A preset by name (`official`, `small`, `tiny`).
    pub fn preset(name: &str) -> Result<Self> {
        match name {
            "official" => Ok(Self::official()),
            "small" => Ok(Self::small()),
            "tiny" => Ok(Self::tiny()),
            other => Err(Error::invalid(format!("unknown tokenizer preset '{other}' (known: {})", PRESETS.join(", ")))),
        }
    }

    /// The architecture in words, for messages: `channels [8, 16, 16, 16], residual units 1,1,1,1 (encoder) /
    /// 1,1,1,1 (decoder), 4 norm groups, FSQ levels [5, 5, 5, 5]`.
    pub fn summary(&self) -> String {
        let units = |v: &[usize]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
        let norm = if self.group_norm { format!("{} norm groups", self.norm_groups) } else { "no group norm".into() };
        format!(
            "channels {:?}, residual units {} (encoder) / {} (decoder), {norm}, FSQ levels {:?}",
            self.channels,
            units(&self.encoder_res_blocks),
            units(&self.decoder_res_blocks),
            self.fsq_levels
        )
    }

    /// A preset name, or the path of a JSON config file.
    pub fn from_name_or_file(spec: &str) -> Result<Self> {
        if PRESETS.contains(&spec) {
            return Self::preset(spec);
        }
        let path = std::path::Path::new(spec);
        if !path.exists() {
            return Err(Error::invalid(format!(
                "'{spec}' is neither a tokenizer preset ({}) nor an existing JSON config file",
                PRESETS.join(", ")
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let config =
            Self::from_json(&text).map_err(|e| Error::file(path, format!("not a valid tokenizer config: {e}")))?;
        // A misspelt field would otherwise silently keep its default (for example all 64 000 FSQ codes).
        let known = serde_json::to_value(&config).map_err(|e| Error::file(path, e.to_string()))?;
        let written: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::file(path, e.to_string()))?;
        if let (Some(known), Some(written)) = (known.as_object(), written.as_object())
            && let Some(key) = written.keys().find(|k| !known.contains_key(*k))
        {
            return Err(Error::file(
                path,
                format!(
                    "unknown field '{key}' in the tokenizer config (fields: {})",
                    known.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        config.validate().map_err(|e| Error::file(path, e.to_string()))?;
        Ok(config)
    }

    /// Parses a JSON config; the fields with defaults (`norm_groups`, `group_norm`, `fsq_levels`) may be left out,
    /// so configs and checkpoints written before a field existed still load.
    pub fn from_json(text: &str) -> std::result::Result<Self, serde_json::Error> {
        let mut value: serde_json::Value = serde_json::from_str(text)?;
        if let (Some(fields), serde_json::Value::Object(defaults)) =
            (value.as_object_mut(), serde_json::to_value(Self::new(vec![], vec![], vec![]))?)
        {
            for (key, default) in defaults {
                if !matches!(key.as_str(), "channels" | "encoder_res_blocks" | "decoder_res_blocks") {
                    fields.entry(key).or_insert(default);
                }
            }
        }
        serde_json::from_value(value)
    }

    /// Checks that the configuration describes a buildable network.
    pub fn validate(&self) -> Result<()> {
        let four = |name: &str, v: &[usize]| {
            if v.len() != 4 {
                return Err(Error::invalid(format!("tokenizer config: '{name}' needs 4 entries, got {v:?}")));
            }
            Ok(())
        };
        four("channels", &self.channels)?;
        four("encoder_res_blocks", &self.encoder_res_blocks)?;
        four("decoder_res_blocks", &self.decoder_res_blocks)?;
        if self.channels.contains(&0) {
            return Err(Error::invalid(format!(
                "tokenizer config: channel widths must be positive, got {:?}",
                self.channels
            )));
        }
        // Far beyond any tokenizer (the official one: 128 to 512 channels, 4 units a level), and small enough
        // that a damaged or mistyped configuration is named before a network of that size is allocated.
        if let Some(c) = self.channels.iter().find(|&&c| c > 16384) {
            return Err(Error::invalid(format!("tokenizer config: a channel width of {c} (at most 16384)")));
        }
        if let Some(n) = self.encoder_res_blocks.iter().chain(&self.decoder_res_blocks).find(|&&n| n > 64) {
            return Err(Error::invalid(format!("tokenizer config: {n} residual units at one level (at most 64)")));
        }
        if self.group_norm && (self.norm_groups == 0 || self.channels.iter().any(|&c| c % self.norm_groups != 0)) {
            return Err(Error::invalid(format!(
                "tokenizer config: every channel width {:?} must be a positive multiple of norm_groups = {}",
                self.channels, self.norm_groups
            )));
        }
        if self.fsq_levels.is_empty() || self.fsq_levels.iter().any(|&l| l < 2) {
            return Err(Error::invalid(format!("tokenizer config: FSQ levels must be ≥ 2, got {:?}", self.fsq_levels)));
        }
        if self.fsq_levels.iter().try_fold(1u64, |n, &l| n.checked_mul(l as u64)).is_none_or(|n| n > i32::MAX as u64) {
            return Err(Error::invalid("tokenizer config: the FSQ codebook is larger than 2^31"));
        }
        Ok(())
    }

    /// Number of codes (`∏ fsq_levels`).
    pub fn codebook_size(&self) -> usize {
        self.fsq_levels.iter().product()
    }

    /// Latent grid `[T', H', W']` of a clip of `[frames, height, width]`, or an error naming the rule.
    pub fn latent_shape(&self, frames: usize, height: usize, width: usize) -> Result<[usize; 3]> {
        check_clip_frames(frames).map_err(|m| Error::invalid(format!("{frames} frames: {m}")))?;
        if height == 0 || width == 0 || !height.is_multiple_of(SPATIAL_FACTOR) || !width.is_multiple_of(SPATIAL_FACTOR)
        {
            return Err(Error::invalid(format!(
                "the tokenizer needs a height and width that are multiples of 8, got {height}x{width}"
            )));
        }
        Ok([1 + (frames - 1) / TEMPORAL_FACTOR, height / SPATIAL_FACTOR, width / SPATIAL_FACTOR])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_beyond_any_tokenizer_are_refused_before_building() {
        TokenizerConfig::official().validate().unwrap();
        let wide = TokenizerConfig { channels: vec![8, 16, 32, 1 << 40], ..TokenizerConfig::official() };
        let e = wide.validate().unwrap_err().to_string();
        assert!(e.contains("a channel width of 1099511627776 (at most 16384)"), "{e}");
        let deep = TokenizerConfig { encoder_res_blocks: vec![1, 1, 1, 100_000_000], ..TokenizerConfig::official() };
        let e = deep.validate().unwrap_err().to_string();
        assert!(e.contains("100000000 residual units at one level (at most 64)"), "{e}");
        let huge_codebook = TokenizerConfig { fsq_levels: vec![65536; 5], ..TokenizerConfig::official() };
        assert!(huge_codebook.validate().unwrap_err().to_string().contains("larger than 2^31"));
    }
}
