//! A dataset made of video files on disk: the list of files with their classes, and the folder scan.
//!
//! Opening only lists files; a video is decoded when its clip is asked for.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use nbp_core::{Error, Result};

use super::ucf::class_text;
use super::{Clip, ClipOptions, ClipSource, Split, out_of_range};

/// File extensions (lowercase) recognised as videos when a folder is scanned.
pub const VIDEO_EXTENSIONS: [&str; 11] =
    ["mp4", "avi", "webm", "mkv", "mov", "gif", "m4v", "mpg", "mpeg", "wmv", "flv"];

/// Folder levels followed below the root of a scan (guards against symbolic-link cycles).
const MAX_DEPTH: usize = 32;

/// Whether `path` has a video extension (case-insensitive) and is not a hidden file (such as macOS `._x.mp4`).
pub fn is_video_file(path: &Path) -> bool {
    let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    !hidden && ext.is_some_and(|e| VIDEO_EXTENSIONS.contains(&e.as_str()))
}

/// Every video file under `dir`, recursively (hidden files and folders left out), sorted by path.
/// Errors when `dir` is not a folder or holds no video file.
pub fn scan_videos(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Err(Error::file(dir, "no such folder"));
    }
    if !dir.is_dir() {
        return Err(Error::file(dir, "is not a folder"));
    }
    let mut found = Vec::new();
    scan_into(dir, 0, &mut found, &mut std::collections::HashSet::new())?;
    if found.is_empty() {
        return Err(Error::file(
            dir,
            format!("no video files under this folder; supported extensions: {}", VIDEO_EXTENSIONS.join(", ")),
        ));
    }
    found.sort();
    Ok(found)
}

/// The video files under `dir` into `found`: each folder once (`visited` holds their canonical paths, so that a
/// link back to a folder above does not list its videos again), regular files only (a FIFO named `.mp4` would
/// block the reader).
fn scan_into(dir: &Path, depth: usize, found: &mut Vec<PathBuf>, visited: &mut HashSet<PathBuf>) -> Result<()> {
    if !visited.insert(dir.canonicalize().map_err(|e| Error::io(dir, e))?) {
        return Ok(());
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path.file_name().and_then(|n| n.to_str()).is_none_or(|n| n.starts_with('.'));
        if path.is_dir() {
            if !hidden && depth < MAX_DEPTH {
                scan_into(&path, depth + 1, found, visited)?;
            }
        } else if path.is_file() && is_video_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}

/// One video of a file dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoItem {
    /// The video file.
    pub path: PathBuf,
    /// Its class index.
    pub label: usize,
}

/// A [`ClipSource`] over a list of video files (the `folder:`, `csv:`, `ucf:` and `k600:` datasets).
#[derive(Debug, Clone)]
pub struct VideoFileSource {
    name: String,
    location: String,
    items: Vec<VideoItem>,
    classes: Vec<String>,
    texts: Vec<String>,
    opts: ClipOptions,
}

impl VideoFileSource {
    /// A dataset named `name` (`location` completes its description, e.g. `root /data/UCF-101`): `items` with
    /// labels indexing `classes`, `texts[label]` the condition text of each class. `opts.fps` is used as given
    /// (`None`: native rate).
    pub fn new(
        name: impl Into<String>,
        location: impl Into<String>,
        items: Vec<VideoItem>,
        classes: Vec<String>,
        texts: Vec<String>,
        opts: ClipOptions,
    ) -> Result<Self> {
        let name = name.into();
        opts.validate()?;
        if items.is_empty() {
            return Err(Error::invalid(format!("dataset {name} has no video")));
        }
        if texts.len() != classes.len() {
            return Err(Error::invalid(format!(
                "dataset {name}: {} condition texts for {} classes",
                texts.len(),
                classes.len()
            )));
        }
        if let Some(bad) = items.iter().find(|i| i.label >= classes.len()) {
            return Err(Error::file(
                &bad.path,
                format!("label {} is out of range: the dataset has {} classes", bad.label, classes.len()),
            ));
        }
        if let Some(w) = empty_classes_warning(&name, &classes, &items) {
            eprintln!("warning: {w}");
        }
        Ok(Self { name, location: location.into(), items, classes, texts, opts })
    }

    /// `folder:<dir>`: every video under `dir`; the class of a file is its parent folder relative to `dir`
    /// (`a/b` for `dir/a/b/x.mp4`; `""` for files directly in `dir`); classes are sorted; the condition text is
    /// [`class_text`] of the class.
    pub fn folder(dir: &Path, opts: &ClipOptions) -> Result<Self> {
        let files = scan_videos(dir)?;
        let class_of = |p: &Path| -> String {
            let rel = p.strip_prefix(dir).unwrap_or(p);
            let parent = rel.parent().unwrap_or(Path::new(""));
            parent.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
        };
        let labelled: Vec<(PathBuf, String)> = files.into_iter().map(|p| (p.clone(), class_of(&p))).collect();
        let loose = labelled.iter().filter(|(_, c)| c.is_empty()).count();
        if loose > 0 && loose < labelled.len() {
            eprintln!(
                "warning: {loose} {} directly in {} in no class folder: a class without a name (\"\") beside \
                 those of its folders; move them into the folder of their class",
                if loose == 1 { "video lies" } else { "videos lie" },
                dir.display()
            );
        }
        let (items, classes) = index_classes(labelled, sorted_classes);
        let texts = classes.iter().map(|c| class_text(c)).collect();
        Self::new("folder", format!("root {}", dir.display()), items, classes, texts, opts.clone())
    }

    /// The videos, in dataset order.
    pub fn items(&self) -> &[VideoItem] {
        &self.items
    }

    /// The clip options every clip is read with.
    pub fn options(&self) -> &ClipOptions {
        &self.opts
    }

    /// The same videos read with the clip rule of `split` (random or centre start).
    pub fn with_split(mut self, split: Split) -> Self {
        self.opts.split = split;
        self
    }
}

impl ClipSource for VideoFileSource {
    fn len(&self) -> usize {
        self.items.len()
    }

    fn clip(&self, index: usize, seed: u64) -> Result<Clip> {
        Ok(self.clips(index, &[seed])?.remove(0))
    }

    fn clips(&self, index: usize, seeds: &[u64]) -> Result<Vec<Clip>> {
        let item = self.items.get(index).ok_or_else(|| out_of_range(index, self.items.len()))?;
        let clips = super::decode::read_clips(&item.path, &self.opts, seeds, index)?;
        Ok(clips
            .into_iter()
            .map(|(video, padded)| Clip {
                video,
                label: item.label,
                text: self.texts[item.label].clone(),
                source: item.path.display().to_string(),
                padded,
            })
            .collect())
    }

    fn class_names(&self) -> Vec<String> {
        self.classes.clone()
    }

    fn describe(&self) -> String {
        let k = self.classes.len();
        format!(
            "{}: {} videos, {k} class{}, {}",
            self.name,
            self.items.len(),
            if k == 1 { "" } else { "es" },
            self.location
        )
    }
}

/// A warning naming the classes of dataset `name` that no item has (their condition would never be trained).
fn empty_classes_warning(name: &str, classes: &[String], items: &[VideoItem]) -> Option<String> {
    let mut used = vec![false; classes.len()];
    items.iter().for_each(|i| used[i.label] = true);
    let empty: Vec<String> = classes.iter().zip(&used).filter(|(_, u)| !**u).map(|(c, _)| format!("'{c}'")).collect();
    if empty.is_empty() {
        return None;
    }
    let more = if empty.len() > 3 { format!(" and {} more", empty.len() - 3) } else { String::new() };
    let (has, their) = if empty.len() == 1 { ("has", "its") } else { ("have", "their") };
    Some(format!(
        "dataset {name}: {n} of its {total} classes {has} no video ({names}{more}); a generator trained on it never \
         sees {their} condition",
        n = empty.len(),
        total = classes.len(),
        names = empty[..empty.len().min(3)].join(", ")
    ))
}

/// The sorted set of class names.
pub(crate) fn sorted_classes(names: BTreeSet<String>) -> Vec<String> {
    names.into_iter().collect()
}

/// Gives every `(path, class name)` the index of its class in `order(set of names)`.
pub(crate) fn index_classes(
    labelled: Vec<(PathBuf, String)>,
    order: impl FnOnce(BTreeSet<String>) -> Vec<String>,
) -> (Vec<VideoItem>, Vec<String>) {
    let classes = order(labelled.iter().map(|(_, c)| c.clone()).collect());
    let index: HashMap<&str, usize> = classes.iter().enumerate().map(|(i, c)| (c.as_str(), i)).collect();
    let items = labelled.into_iter().map(|(path, c)| VideoItem { label: index[c.as_str()], path }).collect();
    (items, classes)
}

/// Leaves out the files of a list that do not exist, with a warning; an error when none exists.
pub(crate) fn keep_existing(items: Vec<VideoItem>, listed_in: &Path, relative_to: &Path) -> Result<Vec<VideoItem>> {
    let total = items.len();
    let (kept, missing): (Vec<_>, Vec<_>) = items.into_iter().partition(|i| i.path.is_file());
    if kept.is_empty() {
        return Err(Error::file(
            listed_in,
            format!(
                "none of the {total} videos it lists exists (paths are taken relative to {}; the first is {})",
                relative_to.display(),
                missing[0].path.display()
            ),
        ));
    }
    if !missing.is_empty() {
        eprintln!(
            "warning: {}: {} of {total} listed videos do not exist and are left out (first: {})",
            listed_in.display(),
            missing.len(),
            missing[0].path.display()
        );
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_without_videos_are_named() {
        let classes: Vec<String> = ["a", "b", "c", "d", "e", "f"].map(String::from).to_vec();
        let item = |label| VideoItem { path: "v.mp4".into(), label };
        assert_eq!(empty_classes_warning("x", &classes, &(0..6).map(item).collect::<Vec<_>>()), None);
        assert_eq!(
            empty_classes_warning("CSV manifest", &classes[..2], &[item(0)]).unwrap(),
            "dataset CSV manifest: 1 of its 2 classes has no video ('b'); a generator trained on it never sees its \
             condition"
        );
        assert_eq!(
            empty_classes_warning("x", &classes, &[item(0)]).unwrap(),
            "dataset x: 5 of its 6 classes have no video ('b', 'c', 'd' and 2 more); a generator trained on it never \
             sees their condition"
        );
    }
}
