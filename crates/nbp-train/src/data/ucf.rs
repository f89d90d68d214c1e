//! UCF-101 and Kinetics-600: the official annotation files, the standard UCF split files, and class texts.
//!
//! Official rule (reference §4.1): one clip per line, `relative/path<TAB>label`, the path joined with the data
//! root; the label column is ignored, the class is the parent folder name and class indices are the sorted set
//! of parent folder names. The standard UCF split files (`trainlist01.txt`: `ApplyEyeMakeup/v_…_c01.avi 1`,
//! `testlist01.txt`: `ApplyEyeMakeup/v_…_c01.avi`) are read the same way.

use std::path::{Path, PathBuf};

use nbp_core::{Error, Result};

use super::ClipOptions;
use super::files::{VideoFileSource, VideoItem, index_classes, keep_existing, scan_videos, sorted_classes};

/// The condition text of a class name: a space at each lowercase→uppercase boundary, then lowercased — the
/// official UCF rule (`ApplyEyeMakeup` → `apply eye makeup`, `YoYo` → `yo yo`, `PlayingDaf` → `playing daf`;
/// capitals that follow a capital are not split). Beyond the official rule, `_`, `-` and `/` become spaces
/// and runs of spaces collapse, so that folder names such as `play_guitar` read as `play guitar` (UCF names
/// contain none of these, so UCF texts are exactly the official ones).
pub fn class_text(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    let mut prev: Option<char> = None;
    for ch in name.chars() {
        if prev.is_some_and(|p| p.is_lowercase()) && ch.is_uppercase() {
            out.push(' ');
        }
        out.extend(ch.to_lowercase());
        prev = Some(ch);
    }
    out.replace(['_', '-', '/'], " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The relative video paths of an annotation or split file, in file order. Accepted lines:
/// `path<TAB>label` (official annotations), `path <integer>` (UCF `trainlist0N.txt`), and `path` alone
/// (`testlist0N.txt`). Empty lines and lines starting with `#` are ignored; Windows line ends are fine.
pub fn parse_annotations(text: &str) -> Vec<PathBuf> {
    // A byte-order mark (editors on Windows write one) is not part of the first path.
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            if let Some((path, _)) = line.split_once('\t') {
                return PathBuf::from(path.trim());
            }
            match line.rsplit_once(char::is_whitespace) {
                Some((path, label)) if label.parse::<i64>().is_ok() => PathBuf::from(path.trim()),
                _ => PathBuf::from(line),
            }
        })
        .collect()
}

/// Name of the folder that holds `path` (`""` when there is none).
fn parent_name(path: &Path) -> String {
    path.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The videos of a dataset root, each with its parent folder name: the files an annotation file lists (joined
/// with `root`; missing ones left out with a warning) or, without one, every video under `root`.
fn list(root: &Path, annotations: Option<&Path>) -> Result<Vec<(PathBuf, String)>> {
    if !root.is_dir() {
        let what = if root.exists() { "is not a folder" } else { "no such folder" };
        return Err(Error::file(root, format!("{what} (the dataset root)")));
    }
    let Some(ann) = annotations else {
        let files = scan_videos(root)?;
        return Ok(files.into_iter().map(|p| (p.clone(), parent_name(&p))).collect());
    };
    let text =
        std::fs::read_to_string(ann).map_err(|e| Error::file(ann, format!("cannot read the annotation file: {e}")))?;
    let rel = parse_annotations(&text);
    if rel.is_empty() {
        return Err(Error::file(ann, "the annotation file lists no video"));
    }
    Ok(rel.into_iter().map(|r| (root.join(&r), parent_name(&r))).collect())
}

impl VideoFileSource {
    /// `ucf:<root>[:<annotation-file>]`: UCF-101. The classes are the sorted parent-folder names of the listed
    /// videos, the condition text is [`class_text`] of the class (`"apply eye makeup"`).
    pub fn ucf(root: &Path, annotations: Option<&Path>, opts: &ClipOptions) -> Result<Self> {
        let (items, classes) = index_classes(list(root, annotations)?, sorted_classes);
        let items = match annotations {
            Some(ann) => keep_existing(items, ann, root)?,
            None => items,
        };
        let texts = classes.iter().map(|c| class_text(c)).collect();
        Self::new("UCF-101", location(root, annotations), items, classes, texts, opts.clone())
    }

    /// `k600:<root>[:<annotation-file>]`: Kinetics-600 frame prediction. One dummy class `""` with an empty
    /// condition text (the official clips all share the parent folder `train` or `val`).
    pub fn k600(root: &Path, annotations: Option<&Path>, opts: &ClipOptions) -> Result<Self> {
        let labelled = list(root, annotations)?;
        let mut items: Vec<VideoItem> = labelled.into_iter().map(|(path, _)| VideoItem { path, label: 0 }).collect();
        if let Some(ann) = annotations {
            items = keep_existing(items, ann, root)?;
        }
        let location = location(root, annotations);
        Self::new("Kinetics-600", location, items, vec![String::new()], vec![String::new()], opts.clone())
    }
}

fn location(root: &Path, ann: Option<&Path>) -> String {
    match ann {
        Some(a) => format!("root {}, annotations {}", root.display(), a.display()),
        None => format!("root {}", root.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_names() {
        assert_eq!(parent_name(Path::new("UCF-101/YoYo/v_YoYo_g01_c01.avi")), "YoYo");
        assert_eq!(parent_name(Path::new("x.avi")), "");
    }

    #[test]
    fn class_text_keeps_capital_runs_together() {
        assert_eq!(class_text("TVShow"), "tvshow");
        assert_eq!(class_text("Skijet"), "skijet");
        assert_eq!(class_text(""), "");
    }
}
