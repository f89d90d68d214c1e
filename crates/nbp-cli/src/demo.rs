//! The bundled demo model (`assets/demo/`): read where it lies in a source checkout, or else unpacked from the
//! copy compiled into this binary, so that `nbp-cli sample` works from any directory, with the source tree gone
//! (`cargo install --path crates/nbp-cli`, a copied binary).

use std::path::{Path, PathBuf};

/// The demo files compiled into the binary (7 MB): the two checkpoints `nbp-cli sample` and
/// `nbp-cli eval-frame-prediction` load when no `--generator` or `--tokenizer` is given.
const EMBEDDED: [(&str, &[u8]); 2] = [
    ("generator.safetensors", include_bytes!("../../../assets/demo/generator.safetensors")),
    ("tokenizer.safetensors", include_bytes!("../../../assets/demo/tokenizer.safetensors")),
];

/// A file of the bundled demo: `assets/demo/<name>` under the working directory, else in the source checkout
/// (`nbp_core::workspace::workspace_path`), else the binary's own copy unpacked into the user's cache directory
/// (`$XDG_CACHE_HOME/nbp`, `~/.cache/nbp` or the system's temporary directory). When none of these works the
/// checkout's path is returned, and loading it then fails with an error that names it.
pub(crate) fn demo_asset(name: &str) -> PathBuf {
    let in_checkout = nbp_core::workspace::workspace_path("assets/demo").join(name);
    let candidates = [Path::new("assets/demo").join(name), in_checkout.clone()];
    match find_or_unpack(name, &candidates, &cache_root()) {
        Ok(Some(path)) => path,
        Ok(None) => in_checkout,
        Err(e) => {
            eprintln!("warning: could not unpack the bundled demo file {name}: {e:#}");
            in_checkout
        }
    }
}

/// The first of `candidates` that exists, else the embedded copy of `name` written under `cache` (in a folder
/// named after the embedded files' hash, so that a binary with other demo weights never reads these), else `None` when
/// `name` is not embedded.
fn find_or_unpack(name: &str, candidates: &[PathBuf], cache: &Path) -> anyhow::Result<Option<PathBuf>> {
    use anyhow::Context;
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(Some(found.clone()));
    }
    let Some((_, bytes)) = EMBEDDED.iter().find(|(n, _)| *n == name) else {
        return Ok(None);
    };
    // Hashed once per process, however many demo files it asks for.
    static HASH: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let hash = HASH.get_or_init(|| EMBEDDED.iter().fold(FNV_OFFSET, |h, (_, bytes)| fnv1a(h, bytes)));
    let dir = cache.join(format!("demo-{hash:016x}"));
    let path = dir.join(name);
    if std::fs::metadata(&path).is_ok_and(|m| m.len() == bytes.len() as u64) {
        return Ok(Some(path));
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written beside its final name and renamed, so that a concurrent or interrupted run never leaves a partial file.
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    eprintln!("unpacked the bundled demo file {name} into {} (assets/demo/ was not found)", dir.display());
    Ok(Some(path))
}

/// Where the embedded demo files are unpacked: `$XDG_CACHE_HOME/nbp`, else `$HOME/.cache/nbp`, else `nbp` in the
/// system's temporary directory.
fn cache_root() -> PathBuf {
    let absolute = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    std::env::var_os("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| std::env::var_os("HOME").and_then(absolute).map(|h| h.join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("nbp")
}

/// The 64-bit FNV-1a hash's starting value.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// The 64-bit FNV-1a hash `h` continued over `bytes` (`fnv1a(FNV_OFFSET, bytes)`: the hash of `bytes`).
fn fnv1a(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, &b| (h ^ b as u64).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_file_is_used_where_it_lies() {
        let cache = std::env::temp_dir().join(format!("nbp-demo-test-found-{}", std::process::id()));
        let real = nbp_core::workspace::workspace_path("assets/demo/generator.safetensors");
        let found = find_or_unpack("generator.safetensors", &[PathBuf::from("/nonexistent/g"), real.clone()], &cache);
        assert_eq!(found.unwrap(), Some(real));
        assert!(!cache.exists(), "nothing is unpacked when the file is found");
    }

    #[test]
    fn the_embedded_copy_is_unpacked_once_and_equals_the_assets() {
        let cache = std::env::temp_dir().join(format!("nbp-demo-test-unpack-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&cache);
        for name in ["generator.safetensors", "tokenizer.safetensors"] {
            let path = find_or_unpack(name, &[PathBuf::from("/nonexistent").join(name)], &cache).unwrap().unwrap();
            assert!(path.starts_with(&cache), "{}", path.display());
            let assets = std::fs::read(nbp_core::workspace::workspace_path("assets/demo").join(name)).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), assets, "{name}");
            let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
            let again = find_or_unpack(name, &[], &cache).unwrap().unwrap();
            assert_eq!(again, path);
            assert_eq!(std::fs::metadata(&again).unwrap().modified().unwrap(), modified, "not written twice");
        }
        assert_eq!(find_or_unpack("clip.mp4", &[], &cache).unwrap(), None, "only the checkpoints are embedded");
        assert_eq!(cache.read_dir().unwrap().count(), 1, "one folder for the embedded files");
        let leftovers: Vec<_> = std::fs::read_dir(cache.read_dir().unwrap().next().unwrap().unwrap().path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn the_hash_is_fnv1a() {
        assert_eq!(fnv1a(FNV_OFFSET, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(fnv1a(FNV_OFFSET, b"foo"), b"bar"), fnv1a(FNV_OFFSET, b"foobar"));
        assert_eq!(fnv1a(FNV_OFFSET, b"foobar"), 0x85944171f73967e8);
    }
}
