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

/// Writes `bytes` to `path` atomically: first to a temporary file next to it, then renamed over it, so that a
/// crash never leaves a half-written file (or loses the previous one).
pub fn write_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<()> {
    let path = path.as_ref();
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let file_name = path.file_name().ok_or_else(|| Error::invalid(format!("{}: not a file path", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp{}", file_name.to_string_lossy(), std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}
