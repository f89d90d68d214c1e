//! [`DatasetSpec`]: a dataset named by a short string (CLI flag or TOML value), and how to open it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use nbp_core::{Error, Result};

use super::files::VideoFileSource;
use super::moving_shapes_source::MovingShapesSource;
use super::{ClipOptions, ClipSource, Split};

/// The most moving-shapes clips a spec may ask for: the trainers keep an index per clip, and a token cache
/// holds every clip's tokens in memory.
pub const MAX_MOVING_SHAPES: usize = 100_000_000;

/// Number of moving-shapes clips when the spec gives none.
const DEFAULT_MOVING_SHAPES: usize = 10_000;

/// The accepted forms, for error messages.
const FORMS: &str = "moving-shapes[-plain][-large][-single][-fixed][:<count>], folder:<dir>, csv:<file>, ucf:<root>[:<annotation-file>], \
                     k600:<root>[:<annotation-file>]";

/// Which dataset to use. Parsed from (and printed back to) these strings:
///
/// - `moving-shapes` or `moving-shapes:<count>` — the procedural dataset (10 000 clips by default; the seed is
///   [`DatasetSpec::open`]'s); `-plain` after the name gives plain backgrounds only, `-large` shapes
///   [`crate::moving_shapes::LARGE_SHAPES`] times larger (`moving-shapes-plain-large:1500`), `-single` the
///   class's shape alone, without distractors (`moving-shapes-plain-large-single`), `-fixed` one colour per
///   shape kind, one size and one background (`moving-shapes-plain-large-single-fixed`, the bundled demo's data);
/// - `folder:<dir>` — every video file under `<dir>` (extensions in [`super::VIDEO_EXTENSIONS`]), the class
///   being the parent folder relative to `<dir>`;
/// - `csv:<file>` — a manifest with the header `path,label` or `path` (paths relative to the CSV's folder);
/// - `ucf:<root>` or `ucf:<root>:<annotation-file>` — UCF-101, with an official annotation file
///   (`path<TAB>label`) or a standard split file (`trainlist01.txt`, `testlist01.txt`), or every video under
///   `<root>`; 8 fps by default;
/// - `k600:<root>` or `k600:<root>:<annotation-file>` — Kinetics-600 frame prediction (one class, empty text);
///   16 fps by default (the official training rate; the official evaluation script reads at 25 fps).
///
/// The root of `ucf:`/`k600:` is everything up to the next `:`, so it must not contain a colon.
#[derive(Debug, Clone, PartialEq)]
pub enum DatasetSpec {
    /// Procedural moving shapes.
    MovingShapes { count: usize, plain: bool, large: bool, single: bool, fixed: bool },
    /// Every video under a folder.
    Folder { dir: PathBuf },
    /// A CSV manifest.
    Csv { file: PathBuf },
    /// UCF-101.
    Ucf { root: PathBuf, annotations: Option<PathBuf> },
    /// Kinetics-600 frame prediction.
    K600 { root: PathBuf, annotations: Option<PathBuf> },
}

impl DatasetSpec {
    /// The same spec with its paths made absolute (those that exist), so that a run resumed or a cache read from
    /// another folder finds the same files.
    pub fn absolute(&self) -> Self {
        let abs = |p: &PathBuf| p.canonicalize().unwrap_or_else(|_| p.clone());
        match self {
            Self::MovingShapes { .. } => self.clone(),
            Self::Folder { dir } => Self::Folder { dir: abs(dir) },
            Self::Csv { file } => Self::Csv { file: abs(file) },
            Self::Ucf { root, annotations } => {
                Self::Ucf { root: abs(root), annotations: annotations.as_ref().map(abs) }
            }
            Self::K600 { root, annotations } => {
                Self::K600 { root: abs(root), annotations: annotations.as_ref().map(abs) }
            }
        }
    }

    /// A warning when a frame rate is asked of a dataset that has none (the generated moving shapes).
    pub fn fps_warning(&self, fps: Option<f64>) -> Option<String> {
        (fps.is_some() && matches!(self, Self::MovingShapes { .. }))
            .then(|| "--fps is ignored for the generated moving-shapes data (it has no frame rate)".to_string())
    }

    /// Frame rate clips are read at when [`ClipOptions::fps`] is `None`: 8 for UCF-101, 16 for Kinetics-600
    /// (official training settings), `None` (native rate) otherwise.
    pub fn default_fps(&self) -> Option<f64> {
        match self {
            Self::Ucf { .. } => Some(8.0),
            Self::K600 { .. } => Some(16.0),
            Self::MovingShapes { .. } | Self::Folder { .. } | Self::Csv { .. } => None,
        }
    }

    /// Opens the dataset: lists its files (nothing is decoded yet) or sets up the generator (seeded with `seed`).
    /// `opts.fps` of `None` means [`Self::default_fps`].
    pub fn open(&self, opts: &ClipOptions, seed: u64) -> Result<Box<dyn ClipSource>> {
        Ok(self.opened(opts, seed)?.view(opts.split))
    }

    /// Opens the dataset once and gives one view of it per split in `splits` (the clip rule differs, the files
    /// and classes are the same): a folder is scanned and a list's missing files are reported only once.
    pub fn open_views<const N: usize>(
        &self,
        opts: &ClipOptions,
        seed: u64,
        splits: [Split; N],
    ) -> Result<[Box<dyn ClipSource>; N]> {
        let opened = self.opened(opts, seed)?;
        Ok(splits.map(|split| opened.view(split)))
    }

    fn opened(&self, opts: &ClipOptions, seed: u64) -> Result<Opened> {
        let mut opts = opts.clone();
        opts.fps = opts.fps.or(self.default_fps());
        opts.validate()?;
        Ok(match self {
            Self::MovingShapes { count, plain, large, single, fixed } => {
                let mut source = MovingShapesSource::new(*count, &opts, seed)?;
                source.shapes.plain = *plain;
                source.shapes.large = *large;
                source.shapes.single = *single;
                source.shapes.fixed = *fixed;
                Opened::Shapes(source)
            }
            Self::Folder { dir } => Opened::Files(VideoFileSource::folder(dir, &opts)?),
            Self::Csv { file } => Opened::Files(VideoFileSource::csv(file, &opts)?),
            Self::Ucf { root, annotations } => {
                Opened::Files(VideoFileSource::ucf(root, annotations.as_deref(), &opts)?)
            }
            Self::K600 { root, annotations } => {
                Opened::Files(VideoFileSource::k600(root, annotations.as_deref(), &opts)?)
            }
        })
    }
}

/// An opened dataset, before a split is chosen.
enum Opened {
    Shapes(MovingShapesSource),
    Files(VideoFileSource),
}

impl Opened {
    /// The dataset read with the clip rule of `split` (moving shapes have no longer video to cut a clip from).
    fn view(&self, split: Split) -> Box<dyn ClipSource> {
        match self {
            Self::Shapes(source) => Box::new(*source),
            Self::Files(source) => Box::new(source.clone().with_split(split)),
        }
    }
}

fn bad(s: &str, why: &str) -> Error {
    Error::invalid(format!("invalid dataset '{s}': {why}; accepted forms: {FORMS}"))
}

fn path(s: &str, value: &str, what: &str) -> Result<PathBuf> {
    if value.is_empty() { Err(bad(s, &format!("the {what} is missing"))) } else { Ok(PathBuf::from(value)) }
}

/// `<root>` or `<root>:<annotation-file>`.
fn root_and_annotations(s: &str, rest: &str) -> Result<(PathBuf, Option<PathBuf>)> {
    match rest.split_once(':') {
        Some((root, ann)) => Ok((path(s, root, "root folder")?, Some(path(s, ann, "annotation file")?))),
        None => Ok((path(s, rest, "root folder")?, None)),
    }
}

/// `(plain, large, single, fixed)` of a moving-shapes kind: `moving-shapes`, then `-plain`, `-large`, `-single`
/// and `-fixed`, each optional, in that order.
fn moving_shapes_variant(kind: &str) -> Option<(bool, bool, bool, bool)> {
    /// Whether `rest` starts with `suffix`, and what follows it.
    fn take<'a>(rest: &'a str, suffix: &str) -> (bool, &'a str) {
        rest.strip_prefix(suffix).map_or((false, rest), |r| (true, r))
    }
    let (plain, rest) = take(kind.strip_prefix("moving-shapes")?, "-plain");
    let (large, rest) = take(rest, "-large");
    let (single, rest) = take(rest, "-single");
    let (fixed, rest) = take(rest, "-fixed");
    rest.is_empty().then_some((plain, large, single, fixed))
}

impl FromStr for DatasetSpec {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let t = s.trim();
        let (kind, rest) = match t.split_once(':') {
            Some((k, r)) => (k, Some(r)),
            None => (t, None),
        };
        let kind_lower = kind.to_ascii_lowercase();
        if let Some((plain, large, single, fixed)) = moving_shapes_variant(&kind_lower) {
            let count = match rest {
                None => DEFAULT_MOVING_SHAPES,
                Some(n) => match n.trim().parse::<usize>() {
                    Ok(count) if count > 0 && count <= MAX_MOVING_SHAPES => count,
                    _ => {
                        return Err(bad(
                            s,
                            &format!("the clip count must be an integer from 1 to {MAX_MOVING_SHAPES}, got '{n}'"),
                        ));
                    }
                },
            };
            return Ok(Self::MovingShapes { count, plain, large, single, fixed });
        }
        match (kind_lower.as_str(), rest) {
            ("folder", Some(dir)) => Ok(Self::Folder { dir: path(s, dir, "folder")? }),
            ("csv", Some(file)) => Ok(Self::Csv { file: path(s, file, "CSV file")? }),
            ("ucf", Some(rest)) => {
                let (root, annotations) = root_and_annotations(s, rest)?;
                Ok(Self::Ucf { root, annotations })
            }
            ("k600", Some(rest)) => {
                let (root, annotations) = root_and_annotations(s, rest)?;
                Ok(Self::K600 { root, annotations })
            }
            ("folder" | "csv" | "ucf" | "k600", None) => Err(bad(s, &format!("'{kind}' needs a path after ':'"))),
            _ => Err(bad(s, &format!("unknown dataset kind '{kind}'"))),
        }
    }
}

impl fmt::Display for DatasetSpec {
    /// The string [`DatasetSpec::from_str`] parses back to the same spec.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with_ann = |f: &mut fmt::Formatter<'_>, kind: &str, root: &Path, ann: &Option<PathBuf>| match ann {
            Some(a) => write!(f, "{kind}:{}:{}", root.display(), a.display()),
            None => write!(f, "{kind}:{}", root.display()),
        };
        match self {
            Self::MovingShapes { count, plain, large, single, fixed } => {
                let (p, l) = (if *plain { "-plain" } else { "" }, if *large { "-large" } else { "" });
                let (s, x) = (if *single { "-single" } else { "" }, if *fixed { "-fixed" } else { "" });
                write!(f, "moving-shapes{p}{l}{s}{x}:{count}")
            }
            Self::Folder { dir } => write!(f, "folder:{}", dir.display()),
            Self::Csv { file } => write!(f, "csv:{}", file.display()),
            Self::Ucf { root, annotations } => with_ann(f, "ucf", root, annotations),
            Self::K600 { root, annotations } => with_ann(f, "k600", root, annotations),
        }
    }
}

impl serde::Serialize for DatasetSpec {
    /// Serialised as its spec string (`"ucf:/data:ucf_train.txt"`), so configs can hold a `DatasetSpec`.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DatasetSpec {
    /// Parsed from a spec string, with the same errors as [`DatasetSpec::from_str`].
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
