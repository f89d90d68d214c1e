//! The pre-tokenized dataset: token grids (raster order) of every clip with its class, written once by
//! `nbp-cli tokenize-dataset` so that generator training reads tokens, not pixels.
//!
//! File format: one `.safetensors` file with the tensors `tokens` (i32 `[clips, T, H, W]`) and `labels`
//! (i32 `[clips]`), and the metadata `nbp.kind = "token-cache"`, `nbp.token_cache` (JSON of [`TokenCacheInfo`]).

use std::collections::HashMap;
use std::path::Path;

use nbp_core::{Error, Result};
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

const KIND_KEY: &str = "nbp.kind";
const KIND: &str = "token-cache";
const INFO_KEY: &str = "nbp.token_cache";

/// What a token cache holds and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenCacheInfo {
    /// Latent grid `[T, H, W]` of every clip.
    pub grid: [usize; 3],
    /// Codebook size of the tokenizer that made the tokens.
    pub codebook: usize,
    /// Class names (label `i` is `classes[i]`).
    pub classes: Vec<String>,
    /// Condition text of each class (e.g. "apply eye makeup").
    #[serde(default)]
    pub class_texts: Vec<String>,
    /// Dataset description, tokenizer file, clip size and frame rate (for the record).
    pub dataset: String,
    pub tokenizer: String,
    /// [`nbp_core::weights::file_fingerprint`] of the tokenizer file (absent in caches made before it was
    /// recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_fingerprint: Option<String>,
    pub frames: usize,
    pub height: usize,
    pub width: usize,
    pub fps: Option<f64>,
}

/// Token grids and labels in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenCache {
    pub info: TokenCacheInfo,
    /// `[clips × T·H·W]` codes, raster order.
    pub tokens: Vec<i32>,
    pub labels: Vec<i32>,
}

impl TokenCache {
    /// An empty cache for clips of `info.grid`.
    pub fn new(info: TokenCacheInfo) -> Self {
        Self { info, tokens: vec![], labels: vec![] }
    }

    /// Tokens per clip.
    pub fn clip_len(&self) -> usize {
        self.info.grid.iter().product()
    }

    /// Number of clips.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Appends one clip (raster-order codes).
    pub fn push(&mut self, codes: &[i64], label: usize) -> Result<()> {
        if codes.len() != self.clip_len() {
            return Err(Error::invalid(format!(
                "a clip of the token cache must have {} tokens (grid {:?}), got {}",
                self.clip_len(),
                self.info.grid,
                codes.len()
            )));
        }
        self.tokens.extend(codes.iter().map(|&c| c as i32));
        self.labels.push(label as i32);
        Ok(())
    }

    /// The codes of clip `i` (raster order).
    pub fn clip(&self, i: usize) -> &[i32] {
        let n = self.clip_len();
        &self.tokens[i * n..(i + 1) * n]
    }

    /// Writes the cache atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let [t, h, w] = self.info.grid;
        let tokens: Vec<u8> = self.tokens.iter().flat_map(|v| v.to_le_bytes()).collect();
        let labels: Vec<u8> = self.labels.iter().flat_map(|v| v.to_le_bytes()).collect();
        let views = vec![
            ("tokens", TensorView::new(Dtype::I32, vec![self.len(), t, h, w], &tokens).expect("consistent tokens")),
            ("labels", TensorView::new(Dtype::I32, vec![self.len()], &labels).expect("consistent labels")),
        ];
        let metadata: HashMap<String, String> = [
            (KIND_KEY.to_string(), KIND.to_string()),
            (INFO_KEY.to_string(), serde_json::to_string(&self.info).expect("info serialises")),
        ]
        .into();
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::file(path, format!("cannot serialise the token cache: {e}")))?;
        nbp_core::error::write_atomic(path, &nbp_core::weights::canonical_header(bytes))
    }

    /// Reads a cache written by [`TokenCache::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let not_cache = |why: &str| {
            Error::file(path, format!("is not a token cache ({why}); make one with `nbp-cli tokenize-dataset`"))
        };
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| not_cache(&e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        if meta.get(KIND_KEY).map(String::as_str) != Some(KIND) {
            return Err(not_cache("no `nbp.kind = token-cache` metadata"));
        }
        let info: TokenCacheInfo = serde_json::from_str(meta.get(INFO_KEY).ok_or_else(|| not_cache("no info"))?)
            .map_err(|e| not_cache(&format!("bad info: {e}")))?;
        // The codes of any tokenizer fit in an i32 (FSQ codebooks are at most 2^31).
        if info.codebook == 0 || info.codebook > i32::MAX as usize {
            return Err(not_cache(&format!("a codebook of {} codes (1 to 2^31)", info.codebook)));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| not_cache(&e.to_string()))?;
        let read = |name: &str| -> Result<(Vec<usize>, Vec<i32>)> {
            let v = st.tensor(name).map_err(|_| not_cache(&format!("no `{name}` tensor")))?;
            if v.dtype() != Dtype::I32 {
                return Err(not_cache(&format!("`{name}` is {:?}, expected I32", v.dtype())));
            }
            let data = v.data().chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            Ok((v.shape().to_vec(), data))
        };
        let (tshape, tokens) = read("tokens")?;
        let (lshape, labels) = read("labels")?;
        let n = lshape.first().copied().unwrap_or(0);
        if tshape != [n, info.grid[0], info.grid[1], info.grid[2]] {
            return Err(not_cache(&format!("tokens have shape {tshape:?}, expected [{n}, {:?}]", info.grid)));
        }
        if let Some(bad) = tokens.iter().find(|&&c| c < 0 || c as usize >= info.codebook) {
            return Err(not_cache(&format!("token {bad} is outside the codebook 0..{}", info.codebook)));
        }
        if let Some(bad) = labels.iter().find(|&&l| l < 0 || (l as usize) >= info.classes.len().max(1)) {
            return Err(not_cache(&format!("label {bad} is outside the {} classes", info.classes.len())));
        }
        Ok(Self { info, tokens, labels })
    }
}

/// Encodes every clip of `source` with `tokenizer`, `batch` clips at a time, into a token cache. Videos that
/// cannot be read are left out, recorded in `skipped` and reported on stderr.
#[allow(clippy::too_many_arguments)]
pub fn tokenize_dataset<B: burn::prelude::Backend>(
    source: &dyn crate::data::ClipSource,
    skipped: &crate::data::SkipLog,
    tokenizer: &nbp_tokenizer::VideoTokenizer<B>,
    info: TokenCacheInfo,
    batch: usize,
    seed: u64,
    device: &B::Device,
    progress: &dyn nbp_core::progress::Progress,
) -> Result<TokenCache> {
    let mut cache = TokenCache::new(info);
    progress.start("tokenizing", source.len());
    let indices: Vec<usize> = (0..source.len()).collect();
    let (mut padded_clips, mut padded_frames) = (0, 0);
    for chunk in indices.chunks(batch.max(1)) {
        let mut clips = Vec::with_capacity(chunk.len());
        for &i in chunk {
            match source.clip(i, seed) {
                Ok(c) => {
                    padded_clips += usize::from(c.padded > 0);
                    padded_frames += c.padded;
                    clips.push(c);
                }
                Err(Error::File { path, message }) => {
                    if skipped.record(path.display().to_string(), message.clone()) {
                        eprintln!("warning: skipped {}: {message}", path.display());
                    }
                }
                Err(Error::Io { path, error: source }) => {
                    if skipped.record(path.display().to_string(), source.to_string()) {
                        eprintln!("warning: skipped {}: {source}", path.display());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        progress.advance(chunk.len());
        if clips.is_empty() {
            continue;
        }
        let videos: Vec<_> = clips.iter().map(|c| c.video.clone()).collect();
        let x = nbp_core::video::videos_to_tensor::<B>(&videos, device)?;
        let ids = tokenizer.encode(x)?;
        let [_, t, h, w] = ids.dims();
        if [t, h, w] != cache.info.grid {
            return Err(Error::invalid(format!(
                "the tokenizer made {t}×{h}×{w} token grids, the cache expects {:?}",
                cache.info.grid
            )));
        }
        let ids: Vec<i64> = ids.into_data().convert::<i64>().to_vec().expect("int data");
        for (clip, codes) in clips.iter().zip(ids.chunks(t * h * w)) {
            cache.push(codes, clip.label)?;
        }
    }
    if cache.is_empty() {
        return Err(Error::invalid("no clip of the dataset could be read"));
    }
    progress.finish();
    if padded_clips > 0 {
        // Kept, so that every video of the dataset has its clip; but a model learns the black frames as data.
        eprintln!(
            "warning: {padded_clips} of {} clips came from videos shorter than the clip and end in black frames \
             ({padded_frames} black frames over those clips): fewer --frames, or a higher --fps up to the videos' \
             own rate, avoids them",
            cache.len()
        );
    }
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> TokenCacheInfo {
        TokenCacheInfo {
            grid: [2, 2, 3],
            codebook: 100,
            classes: vec!["a".into(), "b".into()],
            class_texts: vec!["a".into(), "b".into()],
            dataset: "test".into(),
            tokenizer: "none".into(),
            tokenizer_fingerprint: None,
            frames: 5,
            height: 16,
            width: 24,
            fps: None,
        }
    }

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("nbp-token-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.safetensors");
        let mut c = TokenCache::new(info());
        c.push(&(0..12).collect::<Vec<_>>(), 1).unwrap();
        c.push(&(50..62).collect::<Vec<_>>(), 0).unwrap();
        assert!(c.push(&[1, 2], 0).unwrap_err().to_string().contains("12 tokens"));
        c.save(&path).unwrap();
        let back = TokenCache::load(&path).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.clip(1)[0], 50);
        std::fs::write(&path, b"garbage").unwrap();
        let err = TokenCache::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.safetensors") && err.contains("tokenize-dataset"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
