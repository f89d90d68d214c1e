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
    /// Clips taken from each video, each from its own random start, stored one video after another (1 in caches
    /// made before it was recorded).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub clips_per_video: usize,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

impl TokenCacheInfo {
    /// `clips` rounded up to whole videos: how many clips from the end of the cache to hold out so that no video
    /// has clips on both sides.
    pub fn whole_videos(&self, clips: usize) -> usize {
        clips.div_ceil(self.clips_per_video.max(1)) * self.clips_per_video.max(1)
    }
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

/// Encodes `clips` in one batch and appends their token grids to `cache`.
fn encode_into<B: burn::prelude::Backend>(
    cache: &mut TokenCache,
    clips: &[crate::data::Clip],
    tokenizer: &nbp_tokenizer::VideoTokenizer<B>,
    device: &B::Device,
) -> Result<()> {
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
    Ok(())
}

/// Clips of one video [`tokenize_dataset`] reads from one decoding.
const SEEDS_PER_DECODING: usize = 64;

/// The most clips [`tokenize_dataset`] takes from one video.
pub const MAX_CLIPS_PER_VIDEO: usize = 1000;

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
    let per_video = info.clips_per_video.max(1);
    if per_video > MAX_CLIPS_PER_VIDEO {
        return Err(Error::invalid(format!(
            "{per_video} clips per video: at most {MAX_CLIPS_PER_VIDEO} (a video of a minute at 25 fps has 1484 \
             starts of 17 frames, and random starts repeat long before that)"
        )));
    }
    let mut cache = TokenCache::new(info);
    progress.start("tokenizing", source.len().saturating_mul(per_video));
    // Video-major: the clips of a video are neighbours, so that validation can hold out whole videos. Clip `k` of
    // a video draws its start with the seed `seed + k`; one decoding of the file gives up to 64 of its clips.
    let seeds: Vec<u64> = (0..per_video as u64).map(|k| seed.wrapping_add(k)).collect();
    let (mut padded_clips, mut padded_frames) = (0, 0);
    let mut pending: Vec<crate::data::Clip> = Vec::new();
    for i in 0..source.len() {
        // SEEDS_PER_DECODING clips of a video at a time: each is f32 pixels, so many at once would fill the memory.
        for seeds in seeds.chunks(SEEDS_PER_DECODING) {
            match source.clips(i, seeds) {
                Ok(clips) => {
                    for c in &clips {
                        padded_clips += usize::from(c.padded > 0);
                        padded_frames += c.padded;
                    }
                    pending.extend(clips);
                }
                Err(e) => {
                    let (path, message) = match e {
                        Error::File { path, message } => (path, message),
                        Error::Io { path, error } => (path, error.to_string()),
                        e => return Err(e),
                    };
                    if skipped.record(path.display().to_string(), message.clone()) {
                        eprintln!("warning: skipped {}: {message}", path.display());
                    }
                    break;
                }
            }
            while pending.len() >= batch.max(1) {
                let chunk: Vec<crate::data::Clip> = pending.drain(..batch.max(1)).collect();
                encode_into(&mut cache, &chunk, tokenizer, device)?;
            }
        }
        progress.advance(per_video);
    }
    if !pending.is_empty() {
        encode_into(&mut cache, &pending, tokenizer, device)?;
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
    use nbp_core::progress::NoProgress;

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
            clips_per_video: 1,
        }
    }

    /// Videos whose clips are patterns set by the video and the seed (so each start is another clip); video 2
    /// cannot be read.
    struct Greys;

    impl crate::data::ClipSource for Greys {
        fn len(&self) -> usize {
            4
        }
        fn clip(&self, index: usize, seed: u64) -> Result<crate::data::Clip> {
            if index == 2 {
                return Err(Error::file("broken.mp4", "truncated"));
            }
            // A pattern of the video and the seed: pixel i is bright where bit (i + 7·index + 13·seed) of a word is set.
            let data = (0..3 * 5 * 16 * 16)
                .map(|i| ((0x9E37_79B9_u64 >> ((i + 7 * index + 13 * seed as usize) % 32)) & 1) as f32)
                .collect();
            let video = nbp_core::video::Video::new(5, 16, 16, data)?;
            let source = format!("video{index}");
            Ok(crate::data::Clip { video, label: index % 2, text: String::new(), source, padded: 0 })
        }
        fn class_names(&self) -> Vec<String> {
            vec!["a".into(), "b".into()]
        }
        fn describe(&self) -> String {
            "greys".into()
        }
    }

    #[test]
    fn several_clips_per_video_are_neighbours_and_validation_holds_out_whole_videos() {
        type B = burn::backend::Flex;
        let dev = Default::default();
        let config = nbp_tokenizer::TokenizerConfig::preset("tiny").unwrap();
        let tokenizer = nbp_tokenizer::VideoTokenizer::<B>::new(&config, &dev).unwrap();
        let grid = config.latent_shape(5, 16, 16).unwrap();
        let codebook = tokenizer.codebook_size();
        let make = |clips_per_video: usize| {
            let info = TokenCacheInfo { grid, codebook, frames: 5, height: 16, width: 16, clips_per_video, ..info() };
            let log = crate::data::SkipLog::new();
            let cache = tokenize_dataset(&Greys, &log, &tokenizer, info, 2, 10, &dev, &NoProgress).unwrap();
            (cache, log.entries())
        };
        let (one, skipped) = make(1);
        assert_eq!((one.len(), one.labels.clone()), (3, vec![0, 1, 1]));
        assert_eq!(skipped.len(), 1);
        let (three, skipped) = make(3);
        assert_eq!(skipped.len(), 1, "an unreadable video is skipped once: {skipped:?}");
        assert_eq!(three.labels, [0, 0, 0, 1, 1, 1, 1, 1, 1], "video-major, the broken video left out");
        // Clip k of a video starts with the seed 10 + k: clip 0 is the clip of a one-per-video cache.
        for v in 0..3 {
            assert_eq!(three.clip(3 * v), one.clip(v), "video {v}");
            assert_ne!(three.clip(3 * v), three.clip(3 * v + 1), "video {v}: its clips differ");
        }
        // 4 clips to hold out are 2 whole videos of 3 clips; a cache of one clip per video holds out 4.
        assert_eq!(three.info.whole_videos(4), 6);
        assert_eq!(one.info.whole_videos(4), 4);
        // Recorded in the file, and absent (1) in caches made before it was.
        let dir = std::env::temp_dir().join(format!("nbp-token-cache-cpv-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        three.save(dir.join("c.safetensors")).unwrap();
        assert_eq!(TokenCache::load(dir.join("c.safetensors")).unwrap().info.clips_per_video, 3);
        let json = serde_json::to_string(&one.info).unwrap();
        assert!(!json.contains("clips_per_video"), "{json}");
        assert_eq!(serde_json::from_str::<TokenCacheInfo>(&json).unwrap().clips_per_video, 1);
        let info = TokenCacheInfo { grid, codebook, clips_per_video: 1001, ..info() };
        let e = tokenize_dataset(&Greys, &crate::data::SkipLog::new(), &tokenizer, info, 2, 10, &dev, &NoProgress);
        assert!(e.unwrap_err().to_string().contains("1001 clips per video: at most 1000"));
        std::fs::remove_dir_all(&dir).ok();
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
