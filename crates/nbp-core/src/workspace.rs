//! Files of the source checkout (test fixtures, bundled demo assets), found at run time.

use std::path::{Path, PathBuf};

/// `relative` inside the workspace root of the source checkout.
///
/// The root is the nearest directory holding `Cargo.lock` above the `CARGO_MANIFEST_DIR` that cargo sets when it
/// runs tests and `cargo run`, so a build cache shared between checkouts still finds this checkout's files.
/// Outside cargo, the checkout this crate was compiled in is used.
pub fn workspace_path(relative: impl AsRef<Path>) -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // `/checkout/crates/nbp-core/../..` reads better as `/checkout` in messages.
    let compiled = compiled.canonicalize().unwrap_or(compiled);
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .and_then(|dir| dir.ancestors().find(|d| d.join("Cargo.lock").exists()).map(Path::to_path_buf))
        .unwrap_or(compiled);
    root.join(relative)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_root_holds_the_fixtures() {
        assert!(workspace_path("Cargo.lock").is_file());
        assert!(workspace_path("tests/fixtures/generator").is_dir());
    }
}
