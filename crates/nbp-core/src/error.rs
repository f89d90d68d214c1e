//! The error type shared by every `nbp` library crate.
//!
//! Every error that concerns a file names the file; every error about a value says what was expected.

use std::path::{Path, PathBuf};

/// Result alias used across the `nbp` crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error of the `nbp` libraries.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing `path` failed at the operating-system level. (The I/O error is part of the message,
    /// not a separate `source`, so that a printed error chain does not repeat it.)
    #[error("{}: {error}", path.display())]
    Io { path: PathBuf, error: std::io::Error },
    /// The content of `path` is not what it should be (corrupt, wrong format, wrong shapes, ...).
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    /// An argument or a value is invalid (wrong shape, out of range, unsupported option, ...).
    #[error("{0}")]
    Invalid(String),
    /// An external program (ffmpeg) is missing or failed.
    #[error("{0}")]
    External(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Self::Io { path: path.as_ref().to_path_buf(), error: source }
    }

    /// A content error in `path`.
    pub fn file(path: impl AsRef<Path>, message: impl Into<String>) -> Self {
        Self::File { path: path.as_ref().to_path_buf(), message: message.into() }
    }

    /// An invalid argument or value.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }
}

/// The error for a model path that names a training run's folder or one of its checkpoints instead of the model
/// file the run writes (`file`: `generator.safetensors` or `tokenizer.safetensors`; `command`: the training
/// command, `train` or `train-tokenizer`), saying which file to give or how to make it; `None` for other paths.
pub fn not_a_model_file(path: &Path, file: &str, command: &str) -> Option<Error> {
    let finish = |run: &Path| {
        format!(
            "`nbp-cli {command} --resume --out {}` writes {file} when the run ends or is stopped (Ctrl-C) from its \
             latest checkpoint",
            run.display()
        )
    };
    if path.is_dir() {
        let model = path.join(file);
        let message = if model.is_file() {
            format!("is a folder: give the model file in it, {}", model.display())
        } else if path.join("checkpoint").is_dir() {
            format!("is the folder of a training run that has not written {file} yet: {}", finish(path))
        } else {
            format!("is a folder: give the model file (a training run writes {file} into its --out)")
        };
        return Some(Error::file(path, message));
    }
    if path.extension().is_some_and(|e| e == "mpk") {
        let parent = path.parent().filter(|p| p.file_name().is_some_and(|n| n == "checkpoint"));
        let run = parent.and_then(Path::parent).filter(|r| !r.as_os_str().is_empty()).unwrap_or(Path::new("RUN"));
        return Some(Error::file(
            path,
            format!("is a training checkpoint (Burn's .mpk), not a model file: {}", finish(run)),
        ));
    }
    None
}

/// Checks, before the work that produces it, that `path` can be written: with `folder`, as a folder of files,
/// otherwise as a file. What exists there must be of that kind, the nearest existing folder above it must be a
/// folder, and a new file must be creatable in it. A check rather than a guarantee (a disk can still fill up),
/// but it turns the usual mistakes into an error before minutes of work instead of after.
pub fn check_output(path: &Path, folder: bool) -> Result<()> {
    if folder && path.exists() && !path.is_dir() {
        return Err(Error::file(path, "is a file, but a folder is written there: remove it or give another name"));
    }
    if !folder && path.is_dir() {
        return Err(Error::file(path, "is a folder: give a file name"));
    }
    let mut dir = if folder && path.is_dir() { Some(path) } else { path.parent() };
    while let Some(d) = dir {
        let d = if d.as_os_str().is_empty() { Path::new(".") } else { d };
        if d.exists() {
            if !d.is_dir() {
                return Err(Error::file(path, format!("cannot write there: {} is a file, not a folder", d.display())));
            }
            let probe = d.join(format!(".nbp-write-check{}", std::process::id()));
            return match std::fs::OpenOptions::new().write(true).create_new(true).open(&probe) {
                Ok(_) => {
                    let _ = std::fs::remove_file(&probe);
                    Ok(())
                }
                Err(e) => Err(Error::file(path, format!("cannot write into the folder {}: {e}", d.display()))),
            };
        }
        dir = d.parent();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically: first to a temporary file next to it, then renamed over it, so that a
/// crash never leaves a half-written file (or loses the previous one).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file_name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    // Named by the file asked for: the temporary name means nothing to whoever reads the error.
    std::fs::write(&tmp, bytes).map_err(|e| {
        // A full disk leaves part of the file: none of it stays.
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run folder or a checkpoint given where a model file goes: the message says which file to give, or how a
    /// stopped run writes it.
    #[test]
    fn run_folders_and_checkpoints_are_not_model_files() {
        let dir = std::env::temp_dir().join(format!("nbp-not-a-model-{}", std::process::id()));
        let run = dir.join("run");
        std::fs::create_dir_all(run.join("checkpoint")).unwrap();
        let message = |p: &Path| not_a_model_file(p, "generator.safetensors", "train").map(|e| e.to_string());
        let finish = format!("`nbp-cli train --resume --out {}` writes generator.safetensors", run.display());
        let m = message(&run).unwrap();
        assert!(
            m.contains("is the folder of a training run that has not written generator.safetensors yet")
                && m.contains(&finish),
            "{m}"
        );
        let m = message(&run.join("checkpoint/model-50.mpk")).unwrap();
        assert!(m.contains("is a training checkpoint (Burn's .mpk), not a model file") && m.contains(&finish), "{m}");
        std::fs::write(run.join("generator.safetensors"), b"").unwrap();
        let m = message(&run).unwrap();
        assert!(
            m.ends_with(&format!(
                "is a folder: give the model file in it, {}",
                run.join("generator.safetensors").display()
            )),
            "{m}"
        );
        let m = message(&dir).unwrap();
        assert!(
            m.ends_with(
                "is a folder: give the model file (a training run writes generator.safetensors into its --out)"
            ),
            "{m}"
        );
        assert!(message(&run.join("generator.safetensors")).is_none());
        assert!(message(Path::new("model-3.mpk")).unwrap().contains("--resume --out RUN"));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn outputs_that_cannot_be_written_are_named_before_the_work() {
        let dir = std::env::temp_dir().join(format!("nbp-check-output-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("folder")).unwrap();
        std::fs::write(dir.join("file"), b"x").unwrap();
        // Writable: an existing folder, a new file in it, and one in folders still to be made.
        check_output(&dir.join("new.gif"), false).unwrap();
        check_output(&dir.join("a/b/new.npy"), false).unwrap();
        check_output(&dir.join("folder"), true).unwrap();
        assert!(std::fs::read_dir(&dir).unwrap().count() == 2, "the write check leaves nothing behind");
        let err = |p: &Path, folder: bool| check_output(p, folder).unwrap_err().to_string();
        assert!(err(&dir.join("folder"), false).ends_with("folder: is a folder: give a file name"));
        assert!(err(&dir.join("file"), true).contains("file: is a file, but a folder is written there"));
        let under_file = err(&dir.join("file/x.npy"), false);
        assert!(
            under_file.contains("x.npy: cannot write there:") && under_file.ends_with("file is a file, not a folder")
        );
        // A folder that takes no new files (procfs refuses them, even to root).
        if Path::new("/proc/self").exists() {
            let e = err(Path::new("/proc/nbp-out.gif"), false);
            assert!(e.starts_with("/proc/nbp-out.gif: cannot write into the folder /proc:"), "{e}");
            // And should a write fail anyway, the error names the file asked for, not the temporary one.
            let e = write_atomic("/proc/nbp-out.gif", b"x").unwrap_err().to_string();
            assert!(e.starts_with("/proc/nbp-out.gif: ") && !e.contains(".tmp"), "{e}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
