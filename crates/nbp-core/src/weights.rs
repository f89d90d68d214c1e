//! Named weight tensors read from checkpoint files, handed out to models with strict checks.
//!
//! One loader per format: [`WeightMap::read_pytorch`] reads PyTorch pickles (`.pt`, `.pth`, Lightning `.ckpt`),
//! [`WeightMap::read_safetensors`] reads `.safetensors` (the project's own format, which stores the official key
//! layout plus a JSON config in the metadata). Models take their tensors with [`WeightMap::take`], which checks
//! the shape, and finish with [`WeightMap::finish`], which fails if any tensor of the file was not used: an
//! import either fills every parameter from the file and uses every tensor of it, or it is an error that names
//! the first offending key.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use std::rc::Rc;

use crate::error::{Error, Result, write_atomic};
use crate::pickle::{TensorRef, TorchFile};

enum Source {
    Torch(Rc<TensorRef>),
    Data(TensorData),
}

struct Entry {
    shape: Vec<usize>,
    source: Source,
}

/// Named tensors of a checkpoint, with the bookkeeping for strict imports.
pub struct WeightMap {
    path: PathBuf,
    entries: BTreeMap<String, Entry>,
    taken: BTreeSet<String>,
    torch: Option<Rc<TorchFile>>,
    /// Prefix that was stripped from the file's keys (only used to name keys as they appear in the file).
    prefix: String,
}

impl std::fmt::Debug for WeightMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WeightMap").field("path", &self.path).field("tensors", &self.entries.len()).finish()
    }
}

impl WeightMap {
    /// Reads every tensor of a PyTorch pickle file (zip or legacy format). Nested dictionaries become dotted
    /// keys: a Lightning checkpoint yields `state_dict.transformer.…`, a tokenizer file
    /// `model_state_dict.module.encoder_layers.…`.
    pub fn read_pytorch(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::file(path, "file not found"));
        }
        let file = Rc::new(TorchFile::open(path)?);
        let entries = file
            .tensors()
            .into_iter()
            .map(|(k, t)| (k, Entry { shape: t.shape.clone(), source: Source::Torch(t) }))
            .collect();
        Ok(Self { path: path.to_path_buf(), entries, taken: BTreeSet::new(), torch: Some(file), prefix: String::new() })
    }

    /// The unpickled PyTorch file (for reading configuration such as Lightning's `hyper_parameters`).
    pub fn torch_file(&self) -> Option<&TorchFile> {
        self.torch.as_deref()
    }

    /// Reads a `.safetensors` file and its string metadata.
    pub fn read_safetensors(path: impl AsRef<Path>) -> Result<(Self, HashMap<String, String>)> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let bad = |e: safetensors::SafeTensorError| Error::file(path, format!("not a valid safetensors file: {e}"));
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(bad)?;
        if meta.metadata().as_ref().and_then(|m| m.get("nbp.kind")).is_some_and(|k| k == "token-cache") {
            return Err(Error::file(
                path,
                "is a token cache (token ids written by `nbp-cli tokenize-dataset`), not model weights: it goes to \
                 `nbp-cli train --tokens`",
            ));
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(bad)?;
        let mut entries = BTreeMap::new();
        for (name, view) in st.tensors() {
            let shape = view.shape().to_vec();
            let raw = view.data();
            let values: Vec<f32> = match view.dtype() {
                safetensors::Dtype::F32 => {
                    raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
                }
                safetensors::Dtype::F16 => {
                    raw.chunks_exact(2).map(|c| burn::tensor::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                safetensors::Dtype::BF16 => {
                    raw.chunks_exact(2).map(|c| burn::tensor::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
                }
                other => return Err(Error::file(path, format!("tensor '{name}' has unsupported dtype {other:?}"))),
            };
            let data = TensorData::new(values, shape.clone());
            entries.insert(name, Entry { shape, source: Source::Data(data) });
        }
        let metadata = meta.metadata().clone().unwrap_or_default();
        Ok((
            Self { path: path.to_path_buf(), entries, taken: BTreeSet::new(), torch: None, prefix: String::new() },
            metadata,
        ))
    }

    /// The file the tensors come from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// All keys (after any prefix selection), sorted.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// True if a tensor named `key` exists.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// Shape of the tensor `key`, if present.
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.entries.get(key).map(|e| e.shape.as_slice())
    }

    /// Keeps only the keys that start with `prefix`, with the prefix removed. Keys of the file outside the
    /// prefix are dropped (they belong to something else, e.g. the generator in a Lightning checkpoint).
    pub fn select_prefix(mut self, prefix: &str) -> Self {
        self.entries = std::mem::take(&mut self.entries)
            .into_iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|s| (s.to_string(), v)))
            .collect();
        self.prefix.push_str(prefix);
        self
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is no tensor.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn key_in_file(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Takes the tensor `key` as `f32` values, checking that its shape is `shape`.
    pub fn take_data(&mut self, key: &str, shape: &[usize]) -> Result<TensorData> {
        let Some(entry) = self.entries.get(key) else {
            // Show what the file holds where the key was expected (same layer), else its first unused keys.
            let unused = |k: &&String| !self.taken.contains(*k);
            let parts: Vec<&str> = key.split('.').collect();
            let mut near: Vec<String> = vec![];
            for n in (2..parts.len()).rev() {
                let stem = format!("{}.", parts[..n].join("."));
                near = self
                    .entries
                    .keys()
                    .filter(unused)
                    .filter(|k| k.starts_with(&stem))
                    .take(3)
                    .map(|k| self.key_in_file(k))
                    .collect();
                if !near.is_empty() {
                    break;
                }
            }
            if near.is_empty() {
                near = self.entries.keys().filter(unused).take(3).map(|k| self.key_in_file(k)).collect();
            }
            return Err(Error::file(
                &self.path,
                format!(
                    "missing tensor '{}' (expected shape {shape:?}); the file has {near:?} there. \
                     Is this the right checkpoint, and does its configuration match?",
                    self.key_in_file(key)
                ),
            ));
        };
        if entry.shape != shape {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor '{}' has shape {:?} in the file but the model expects {shape:?}: the checkpoint was made \
                     for a different configuration",
                    self.key_in_file(key),
                    entry.shape
                ),
            ));
        }
        let data = match &entry.source {
            Source::Data(d) => d.clone(),
            Source::Torch(t) => {
                let file = self.torch.as_ref().expect("torch entries come with their file");
                TensorData::new(file.read_f32(t)?, entry.shape.clone())
            }
        };
        if let Some(at) = first_non_finite(&data) {
            return Err(Error::file(
                &self.path,
                format!(
                    "tensor '{}' holds a non-finite value (an infinity or a NaN) at element {at}: the file is damaged, \
                     or it was saved from a training run that diverged",
                    self.key_in_file(key)
                ),
            ));
        }
        self.taken.insert(key.to_string());
        Ok(data)
    }

    /// Takes the tensor `key` onto `device`, checking that its shape is `shape`.
    pub fn take<B: Backend, const D: usize>(
        &mut self,
        key: &str,
        shape: [usize; D],
        device: &B::Device,
    ) -> Result<Tensor<B, D>> {
        let data = self.take_data(key, &shape)?;
        Ok(Tensor::from_data(data, device))
    }

    /// Ends a strict import: every tensor of the (selected part of the) file must have been taken.
    pub fn finish(self) -> Result<()> {
        let unused: Vec<&String> = self.entries.keys().filter(|k| !self.taken.contains(*k)).collect();
        if let Some(first) = unused.first() {
            return Err(Error::file(
                &self.path,
                format!(
                    "{} tensor(s) of the file are not used by the model, the first is '{}' with shape {:?}: the \
                     checkpoint was made for a different configuration",
                    unused.len(),
                    self.key_in_file(first),
                    self.entries[*first].shape
                ),
            ));
        }
        Ok(())
    }
}

/// Collects named tensors and writes them as one `.safetensors` file.
#[derive(Debug, Default)]
pub struct WeightWriter {
    tensors: Vec<(String, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl WeightWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a string metadata entry.
    pub fn metadata(&mut self, key: &str, value: impl Into<String>) {
        self.metadata.insert(key.to_string(), value.into());
    }

    /// Adds `tensor` under `key` (stored as little-endian f32).
    pub fn put<B: Backend, const D: usize>(&mut self, key: impl Into<String>, tensor: &Tensor<B, D>) {
        let data = tensor.to_data().convert::<f32>();
        let bytes = data.as_slice::<f32>().expect("f32 data").iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors.push((key.into(), tensor.dims().to_vec(), bytes));
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = self
            .tensors
            .iter()
            .map(|(k, shape, bytes)| {
                let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                    .expect("consistent tensor view");
                (k.clone(), view)
            })
            .collect();
        let bytes = safetensors::serialize(views, Some(self.metadata.clone()))
            .map_err(|e| Error::file(path, format!("cannot serialise weights: {e}")))?;
        write_atomic(path, &canonical_header(bytes))
    }
}

/// A fingerprint of a file's content that is cheap for files of gigabytes: FNV-1a over its length and 16 blocks
/// of 4 KB spread evenly through it (a retrained model changes every block of weights). Recorded where a file is
/// named by path, to notice when the file at that path was replaced.
pub fn file_fingerprint(path: &Path) -> Result<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |bytes: &[u8]| {
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    mix(&len.to_le_bytes());
    const BLOCK: u64 = 4096;
    let mut buf = Vec::with_capacity(BLOCK as usize);
    for i in 0..16u64 {
        let at = len.saturating_sub(BLOCK) * i / 15;
        file.seek(SeekFrom::Start(at)).map_err(|e| Error::io(path, e))?;
        buf.clear();
        (&mut file).take(BLOCK).read_to_end(&mut buf).map_err(|e| Error::io(path, e))?;
        mix(&buf);
    }
    Ok(format!("{h:016x}"))
}

/// True when `path` names a `.safetensors` file (any case): the project's own format, which carries its own
/// architecture; every other extension is read as a PyTorch checkpoint.
pub fn is_safetensors(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("safetensors"))
}

/// `value` with the keys of every object inserted in sorted order (whether or not serde_json keeps insertion
/// order).
fn sort_keys(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(String, serde_json::Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, sort_keys(v))).collect())
        }
        other => other,
    }
}

/// A serialised `.safetensors` file with its JSON header's keys in sorted order. The safetensors crate writes
/// the metadata from a `HashMap`, in an order that changes from run to run, so the same weights would give files
/// that differ; sorted, the same content always gives the same bytes. The header keeps its length (the same
/// keys and values, compact, then the original padding), so the data offsets stay valid.
pub fn canonical_header(mut bytes: Vec<u8>) -> Vec<u8> {
    let Some(len) = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")) as usize) else {
        return bytes;
    };
    let Some(header) = bytes.get(8..8 + len) else { return bytes };
    let text = String::from_utf8_lossy(header);
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text.trim_end()) else { return bytes };
    let sorted = sort_keys(value).to_string();
    if sorted.len() <= len {
        let end = 8 + sorted.len();
        bytes[8..end].copy_from_slice(sorted.as_bytes());
        bytes[end..8 + len].fill(b' ');
    }
    bytes
}

/// The index of the first infinity or NaN of a tensor's values (the readers convert every float tensor to f32).
fn first_non_finite(data: &TensorData) -> Option<usize> {
    data.as_slice::<f32>().ok().and_then(nbp_kernels::first_non_finite)
}

#[cfg(test)]
mod tests {
    #[test]
    fn fingerprints_follow_the_content() {
        let dir = std::env::temp_dir().join(format!("nbp-fingerprint-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (dir.join("a.bin"), dir.join("b.bin"));
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        std::fs::write(&a, &bytes).unwrap();
        std::fs::write(&b, &bytes).unwrap();
        let fa = super::file_fingerprint(&a).unwrap();
        assert_eq!(fa.len(), 16);
        assert_eq!(super::file_fingerprint(&b).unwrap(), fa, "same content, same fingerprint");
        // A byte changed in the middle of the file (inside the 8th sampled block), or one byte more.
        let mut changed = bytes.clone();
        changed[(200_000 - 4096) * 7 / 15 + 100] ^= 1;
        std::fs::write(&b, &changed).unwrap();
        assert_ne!(super::file_fingerprint(&b).unwrap(), fa);
        std::fs::write(&b, [&bytes[..], &[0]].concat()).unwrap();
        assert_ne!(super::file_fingerprint(&b).unwrap(), fa);
        assert!(super::file_fingerprint(&dir.join("missing")).unwrap_err().to_string().contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    use super::*;

    #[test]
    fn the_same_weights_and_metadata_give_the_same_file() {
        let dir = std::env::temp_dir().join(format!("nbp-canonical-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let device = Default::default();
        let files: Vec<Vec<u8>> = (0..6)
            .map(|i| {
                let mut w = WeightWriter::new();
                for key in ["nbp.kind", "nbp.config", "nbp.settings", "nbp.info", "zeta", "alpha"] {
                    w.metadata(key, format!("value of {key}"));
                }
                let t = Tensor::<burn::backend::Flex, 2>::from_data([[1.0f32, 2.0], [3.0, 4.0]], &device);
                w.put("b", &t);
                w.put("a", &t);
                let path = dir.join(format!("w{i}.safetensors"));
                w.write(&path).unwrap();
                std::fs::read(&path).unwrap()
            })
            .collect();
        assert!(files.windows(2).all(|f| f[0] == f[1]), "the files differ");
        // Still a valid file with every entry.
        let (_, meta) = WeightMap::read_safetensors(dir.join("w0.safetensors")).unwrap();
        assert_eq!(meta.len(), 6);
        assert_eq!(meta["zeta"], "value of zeta");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_token_cache_given_as_model_weights_is_named() {
        let path = std::env::temp_dir().join(format!("nbp-cache-as-model-{}.safetensors", std::process::id()));
        let mut w = WeightWriter::new();
        w.metadata("nbp.kind", "token-cache");
        w.put("labels", &Tensor::<burn::backend::Flex, 1>::from_data([0.0f32, 1.0], &Default::default()));
        w.write(&path).unwrap();
        let e = WeightMap::read_safetensors(&path).unwrap_err().to_string();
        assert!(e.contains("is a token cache") && e.contains("`nbp-cli train --tokens`"), "{e}");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_tensor_with_a_nan_or_an_infinity_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("nbp-non-finite-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let device = Default::default();
        let mut w = WeightWriter::new();
        let t = |v: [f32; 3]| Tensor::<burn::backend::Flex, 1>::from_data(v, &device);
        w.put("fine", &t([1.0, -2.0, f32::MAX]));
        w.put("diverged", &t([1.0, f32::NAN, 0.0]));
        w.put("blown", &t([1.0, 0.0, f32::NEG_INFINITY]).cast(burn::tensor::DType::BF16));
        let path = dir.join("w.safetensors");
        w.write(&path).unwrap();
        let (mut map, _) = WeightMap::read_safetensors(&path).unwrap();
        assert_eq!(map.take_data("fine", &[3]).unwrap().to_vec::<f32>().unwrap(), [1.0, -2.0, f32::MAX]);
        let e = map.take_data("diverged", &[3]).unwrap_err().to_string();
        assert!(e.contains("w.safetensors") && e.contains("tensor 'diverged' holds a non-finite value"), "{e}");
        assert!(e.contains("at element 1"), "{e}");
        let e = map.take_data("blown", &[3]).unwrap_err().to_string();
        assert!(e.contains("tensor 'blown'") && e.contains("at element 2"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
