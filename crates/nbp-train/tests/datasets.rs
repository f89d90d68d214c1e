//! The video datasets: spec strings, file lists (folder, CSV, UCF-101, Kinetics-600), frame selection, and real
//! video files made with ffmpeg, including unreadable ones that must be skipped and reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nbp_core::Error;
use nbp_core::video::{ClipStart, ReadOptions, read_video};
use nbp_train::data::{
    ClipOptions, ClipSource, DatasetSpec, MovingShapesSource, SkipLog, Skipping, Split, VideoFileSource, VideoItem,
    class_text, parse_annotations, parse_manifest, random_start, scan_videos, select_frames,
};
use nbp_train::moving_shapes::MovingShapes;

/// A fresh empty folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(name: &str) -> TempDir {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("nbp-datasets-{}-{n}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Creates `root/rel` (and its folders) with some bytes; the content does not matter for listing.
fn touch(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, b"not decoded when listing").unwrap();
    p
}

fn opts(frames: usize, height: usize, width: usize, fps: Option<f64>, split: Split) -> ClipOptions {
    ClipOptions { frames, height, width, fps, split }
}

fn eval17() -> ClipOptions {
    opts(17, 32, 32, None, Split::Eval)
}

fn spec(s: &str) -> DatasetSpec {
    s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
}

// ---------------------------------------------------------------------------------------------------------------
// Spec strings

#[test]
fn spec_parses_every_form() {
    let shapes = |count, plain, large, single| DatasetSpec::MovingShapes { count, plain, large, single, fixed: false };
    assert_eq!(spec("moving-shapes"), shapes(10_000, false, false, false));
    assert_eq!(spec("moving-shapes:250"), shapes(250, false, false, false));
    assert_eq!(spec("moving-shapes-plain:40"), shapes(40, true, false, false));
    assert_eq!(spec("moving-shapes-large"), shapes(10_000, false, true, false));
    assert_eq!(spec("moving-shapes-plain-large:9"), shapes(9, true, true, false));
    assert_eq!(spec("moving-shapes-plain-large-single:7"), shapes(7, true, true, true));
    assert_eq!(
        spec("moving-shapes-plain-large-single-fixed:5"),
        DatasetSpec::MovingShapes { count: 5, plain: true, large: true, single: true, fixed: true }
    );
    assert_eq!(spec("moving-shapes-single-fixed").to_string(), "moving-shapes-single-fixed:10000");
    assert_eq!(spec("moving-shapes-plain:40").to_string(), "moving-shapes-plain:40");
    assert_eq!(spec("Moving-Shapes-Plain-Large:9").to_string(), "moving-shapes-plain-large:9");
    assert_eq!(spec("moving-shapes-single").to_string(), "moving-shapes-single:10000");
    assert_eq!(spec("folder:/data/clips"), DatasetSpec::Folder { dir: "/data/clips".into() });
    assert_eq!(spec("csv:lists/train.csv"), DatasetSpec::Csv { file: "lists/train.csv".into() });
    assert_eq!(spec("ucf:/data/UCF-101"), DatasetSpec::Ucf { root: "/data/UCF-101".into(), annotations: None });
    assert_eq!(
        spec("ucf:/data:annotations/ucf_train.txt"),
        DatasetSpec::Ucf { root: "/data".into(), annotations: Some("annotations/ucf_train.txt".into()) }
    );
    assert_eq!(
        spec("k600:/data:annotations/k600_val.txt"),
        DatasetSpec::K600 { root: "/data".into(), annotations: Some("annotations/k600_val.txt".into()) }
    );
    assert_eq!(spec("k600:/data/k600"), DatasetSpec::K600 { root: "/data/k600".into(), annotations: None });
    // Surrounding whitespace and the case of the kind do not matter.
    assert_eq!(spec("  UCF:/d "), DatasetSpec::Ucf { root: "/d".into(), annotations: None });
    // Recorded in run configs and token caches with absolute paths (those that exist), read back the same.
    let here = std::env::current_dir().unwrap();
    assert_eq!(spec("folder:.").absolute(), DatasetSpec::Folder { dir: here.canonicalize().unwrap() });
    assert_eq!(spec("csv:no/such.csv").absolute(), DatasetSpec::Csv { file: "no/such.csv".into() });
    assert_eq!(spec("moving-shapes:3").absolute(), spec("moving-shapes:3"));
    let abs = spec("folder:.").absolute();
    assert_eq!(spec(&abs.to_string()), abs);
}

#[test]
fn spec_errors_name_the_accepted_forms() {
    for (s, why) in [
        ("imagenet", "unknown dataset kind 'imagenet'"),
        ("moving-shapes:0", "an integer from 1 to 100000000, got '0'"),
        ("moving-shapes:many", "an integer from 1 to 100000000, got 'many'"),
        ("moving-shapes:18446744073709551615", "an integer from 1 to 100000000"),
        ("moving-shapes-large-plain", "unknown dataset kind 'moving-shapes-large-plain'"),
        ("moving-shapes-single-large", "unknown dataset kind 'moving-shapes-single-large'"),
        ("folder", "'folder' needs a path"),
        ("folder:", "the folder is missing"),
        ("csv:", "the CSV file is missing"),
        ("ucf::ann.txt", "the root folder is missing"),
        ("ucf:/data:", "the annotation file is missing"),
        ("k600", "'k600' needs a path"),
        ("", "unknown dataset kind ''"),
    ] {
        let err = s.parse::<DatasetSpec>().unwrap_err();
        assert!(matches!(err, Error::Invalid(_)));
        let msg = err.to_string();
        assert!(msg.contains(why), "{s}: {msg}");
        assert!(msg.contains(&format!("invalid dataset '{s}'")), "{msg}");
        assert!(
            msg.contains("moving-shapes[-plain][-large][-single][-fixed][:<count>], folder:<dir>, csv:<file>, ucf:<root>[:<annotation-file>], k600:"),
            "{msg}"
        );
    }
}

#[test]
fn spec_display_round_trips() {
    for s in ["moving-shapes:7", "folder:/a/b", "csv:x.csv", "ucf:/r", "ucf:/r:a.txt", "k600:/r", "k600:/r:v.txt"] {
        assert_eq!(spec(s).to_string(), s);
        assert_eq!(spec(&spec(s).to_string()), spec(s));
    }
    assert_eq!(spec("moving-shapes").to_string(), "moving-shapes:10000");
    // Configs hold specs as strings.
    let json = serde_json::to_string(&spec("ucf:/r:a.txt")).unwrap();
    assert_eq!(json, r#""ucf:/r:a.txt""#);
    assert_eq!(serde_json::from_str::<DatasetSpec>(&json).unwrap(), spec("ucf:/r:a.txt"));
    let err = serde_json::from_str::<DatasetSpec>(r#""nope""#).unwrap_err().to_string();
    assert!(err.contains("unknown dataset kind 'nope'"), "{err}");
}

#[test]
fn default_frame_rates_follow_the_official_scripts() {
    assert_eq!(spec("ucf:/r").default_fps(), Some(8.0));
    assert_eq!(spec("k600:/r:a").default_fps(), Some(16.0));
    assert_eq!(spec("moving-shapes").default_fps(), None);
    assert_eq!(spec("folder:/r").default_fps(), None);
    assert_eq!(spec("csv:/r.csv").default_fps(), None);
    // Generated data has no frame rate to resample: asking for one is warned about.
    assert!(spec("moving-shapes-plain:4").fps_warning(Some(8.0)).unwrap().contains("--fps is ignored"));
    assert_eq!(spec("moving-shapes").fps_warning(None), None);
    assert_eq!(spec("folder:/r").fps_warning(Some(8.0)), None);
}

#[test]
fn invalid_clip_options_are_refused_at_open() {
    let err = spec("moving-shapes:3").open(&opts(0, 8, 8, None, Split::Train), 0).err().unwrap();
    assert!(err.to_string().contains("at least 1 frame"), "{err}");
    let err = spec("moving-shapes:3").open(&opts(4, 8, 8, Some(-1.0), Split::Train), 0).err().unwrap();
    assert!(err.to_string().contains("positive number, got -1"), "{err}");
}

// ---------------------------------------------------------------------------------------------------------------
// Class names and annotation files

#[test]
fn class_text_follows_the_official_camel_case_rule() {
    assert_eq!(class_text("ApplyEyeMakeup"), "apply eye makeup");
    assert_eq!(class_text("YoYo"), "yo yo");
    assert_eq!(class_text("PlayingDaf"), "playing daf");
    assert_eq!(class_text("HandstandPushups"), "handstand pushups");
    assert_eq!(class_text("BlowDryHair"), "blow dry hair");
    assert_eq!(class_text("Skijet"), "skijet");
    // Beyond UCF: separators of folder names become spaces.
    assert_eq!(class_text("play_guitar"), "play guitar");
    assert_eq!(class_text("sports/TableTennis"), "sports table tennis");
    assert_eq!(class_text(""), "");
}

#[test]
fn annotation_lines_in_official_and_split_file_formats() {
    let text = "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi\t1\r\n\
                \n\
                ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi 1\n\
                # a comment\n\
                YoYo/v_YoYo_g01_c01.avi\n\
                k600/val/OALI_5D8pV0_000174_000184.mp4\t0\n";
    assert_eq!(
        parse_annotations(text),
        [
            "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi",
            "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c02.avi",
            "YoYo/v_YoYo_g01_c01.avi",
            "k600/val/OALI_5D8pV0_000174_000184.mp4",
        ]
        .map(PathBuf::from)
    );
    // A byte-order mark is not part of the first path.
    assert_eq!(parse_annotations("\u{feff}a/x1.mp4 1\nb/x2.mp4 2\n"), ["a/x1.mp4", "b/x2.mp4"].map(PathBuf::from));
}

/// A fake UCF-101 tree (empty files): 2 ApplyEyeMakeup, 1 BabyCrawling, 2 YoYo.
fn ucf_tree(name: &str) -> TempDir {
    let root = temp_dir(name);
    for rel in [
        "UCF-101/YoYo/v_YoYo_g01_c01.avi",
        "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
        "UCF-101/YoYo/v_YoYo_g01_c02.avi",
        "UCF-101/BabyCrawling/v_BabyCrawling_g01_c01.avi",
        "UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi",
    ] {
        touch(&root, rel);
    }
    touch(&root, "UCF-101/YoYo/notes.txt");
    root
}

#[test]
fn ucf_official_annotations_give_sorted_parent_folder_classes() {
    let root = ucf_tree("ucf-official");
    let ann = root.join("ucf_train.txt");
    // The label column is ignored (it disagrees with the folder order on purpose).
    std::fs::write(
        &ann,
        "UCF-101/YoYo/v_YoYo_g01_c01.avi\t1\nUCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\t3\n\
         UCF-101/BabyCrawling/v_BabyCrawling_g01_c01.avi\t1\n",
    )
    .unwrap();
    let ds = VideoFileSource::ucf(&root, Some(&ann), &eval17()).unwrap();
    assert_eq!(ds.class_names(), ["ApplyEyeMakeup", "BabyCrawling", "YoYo"]);
    assert_eq!(
        ds.items(),
        [
            VideoItem { path: root.join("UCF-101/YoYo/v_YoYo_g01_c01.avi"), label: 2 },
            VideoItem { path: root.join("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"), label: 0 },
            VideoItem { path: root.join("UCF-101/BabyCrawling/v_BabyCrawling_g01_c01.avi"), label: 1 },
        ]
    );
    let opened = spec(&format!("ucf:{}:{}", root.display(), ann.display())).open(&eval17(), 0).unwrap();
    assert_eq!(opened.len(), 3);
    assert_eq!(
        opened.describe(),
        format!("UCF-101: 3 videos, 3 classes, root {}, annotations {}", root.display(), ann.display())
    );
}

#[test]
fn ucf_split_files_and_missing_videos() {
    let root = ucf_tree("ucf-split");
    let ucf = root.join("UCF-101");
    let train = root.join("trainlist01.txt");
    std::fs::write(
        &train,
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c02.avi 1\nYoYo/v_YoYo_g01_c02.avi 101\nYoYo/v_YoYo_g09_c09.avi 101\n",
    )
    .unwrap();
    // One listed video does not exist: it is left out, but its class still counts (official class indices).
    let ds = VideoFileSource::ucf(&ucf, Some(&train), &eval17()).unwrap();
    assert_eq!(ds.class_names(), ["ApplyEyeMakeup", "YoYo"]);
    assert_eq!(ds.items().iter().map(|i| i.label).collect::<Vec<_>>(), [0, 1]);
    let test = root.join("testlist01.txt");
    std::fs::write(&test, "BabyCrawling/v_BabyCrawling_g01_c01.avi\nYoYo/v_YoYo_g01_c01.avi\n").unwrap();
    let ds = VideoFileSource::ucf(&ucf, Some(&test), &eval17()).unwrap();
    assert_eq!(ds.class_names(), ["BabyCrawling", "YoYo"]);
    assert_eq!(ds.items()[1], VideoItem { path: ucf.join("YoYo/v_YoYo_g01_c01.avi"), label: 1 });

    // Paths relative to the wrong root: nothing exists, and the error says where it looked.
    let err = VideoFileSource::ucf(&root, Some(&test), &eval17()).unwrap_err().to_string();
    assert!(err.starts_with(&test.display().to_string()), "{err}");
    assert!(err.contains("none of the 2 videos it lists exists"), "{err}");
    assert!(err.contains(&root.join("BabyCrawling/v_BabyCrawling_g01_c01.avi").display().to_string()), "{err}");
}

#[test]
fn ucf_without_annotations_lists_every_video_and_texts_are_class_names() {
    let root = ucf_tree("ucf-all");
    let ds = VideoFileSource::ucf(&root.join("UCF-101"), None, &eval17()).unwrap();
    assert_eq!(ds.len(), 5);
    assert_eq!(ds.class_names(), ["ApplyEyeMakeup", "BabyCrawling", "YoYo"]);
    assert_eq!(ds.items().iter().map(|i| i.label).collect::<Vec<_>>(), [0, 0, 1, 2, 2]);
    assert_eq!(ds.items()[0].path, root.join("UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"));
    assert_eq!(ds.describe(), format!("UCF-101: 5 videos, 3 classes, root {}", root.join("UCF-101").display()));
}

#[test]
fn missing_roots_and_files_are_named_in_errors() {
    let dir = temp_dir("missing");
    let nowhere = dir.join("nowhere");
    for s in [format!("ucf:{}", nowhere.display()), format!("k600:{}:a.txt", nowhere.display())] {
        let err = spec(&s).open(&eval17(), 0).err().unwrap().to_string();
        assert!(err.contains(&nowhere.display().to_string()) && err.contains("no such folder"), "{err}");
    }
    let err = spec(&format!("ucf:{}:{}", dir.display(), dir.join("ann.txt").display())).open(&eval17(), 0);
    let err = err.err().unwrap().to_string();
    assert!(err.contains("ann.txt") && err.contains("cannot read the annotation file"), "{err}");
    let err = spec(&format!("csv:{}", dir.join("x.csv").display())).open(&eval17(), 0).err().unwrap().to_string();
    assert!(err.contains("x.csv") && err.contains("cannot read the CSV manifest"), "{err}");
    let err = spec(&format!("folder:{}", nowhere.display())).open(&eval17(), 0).err().unwrap().to_string();
    assert!(err.contains(&nowhere.display().to_string()) && err.contains("no such folder"), "{err}");
    std::fs::write(dir.join("empty.txt"), "\n\n").unwrap();
    let err = VideoFileSource::ucf(&dir, Some(&dir.join("empty.txt")), &eval17()).unwrap_err().to_string();
    assert!(err.contains("empty.txt") && err.contains("lists no video"), "{err}");
}

#[test]
fn k600_annotations_give_one_unconditional_class() {
    let root = temp_dir("k600");
    touch(&root, "k600/val/OALI_5D8pV0_000174_000184.mp4");
    touch(&root, "k600/val/zz_000001_000011.mp4");
    let ann = root.join("k600_val.txt");
    std::fs::write(&ann, "k600/val/zz_000001_000011.mp4\t0\nk600/val/OALI_5D8pV0_000174_000184.mp4\t0\n").unwrap();
    let ds = VideoFileSource::k600(&root, Some(&ann), &eval17()).unwrap();
    assert_eq!(ds.class_names(), [""]);
    assert_eq!(ds.items()[0], VideoItem { path: root.join("k600/val/zz_000001_000011.mp4"), label: 0 });
    assert_eq!(ds.items()[1].label, 0);
    assert!(ds.describe().starts_with("Kinetics-600: 2 videos, 1 class, root "), "{}", ds.describe());
}

// ---------------------------------------------------------------------------------------------------------------
// CSV manifests and folders

#[test]
fn csv_manifest_with_labels() {
    let dir = temp_dir("csv-labels");
    let a = touch(&dir, "clips/a.mp4");
    let b = touch(&dir, "clips/b.webm");
    let elsewhere = temp_dir("csv-abs");
    let c = touch(&elsewhere, "c.avi");
    let csv = dir.join("train.csv");
    std::fs::write(
        &csv,
        format!("path,label\nclips/a.mp4,play_guitar\n\"clips/b.webm\", Dancing\n{},play_guitar\n", c.display()),
    )
    .unwrap();
    let rows = parse_manifest(&std::fs::read_to_string(&csv).unwrap(), &csv).unwrap();
    assert_eq!(
        rows,
        [(a.clone(), "play_guitar".into()), (b.clone(), "Dancing".into()), (c.clone(), "play_guitar".into())]
    );
    let ds = VideoFileSource::csv(&csv, &eval17()).unwrap();
    assert_eq!(ds.class_names(), ["Dancing", "play_guitar"]);
    assert_eq!(
        ds.items(),
        [VideoItem { path: a, label: 1 }, VideoItem { path: b, label: 0 }, VideoItem { path: c, label: 1 }]
    );
    assert_eq!(ds.describe(), format!("CSV manifest: 3 videos, 2 classes, file {}", csv.display()));
}

#[test]
fn csv_manifest_without_labels_and_bad_manifests() {
    let dir = temp_dir("csv-nolabel");
    let a = touch(&dir, "a.mp4");
    let csv = dir.join("list.csv");
    std::fs::write(&csv, "path\na.mp4\nmissing.mp4\n").unwrap();
    let ds = VideoFileSource::csv(&csv, &eval17()).unwrap();
    assert_eq!(ds.class_names(), [""]);
    assert_eq!(ds.items(), [VideoItem { path: a, label: 0 }]);

    let m = |text: &str| parse_manifest(text, &csv).unwrap_err().to_string();
    let err = m("file,class\na.mp4,x\n");
    assert!(err.contains("list.csv") && err.contains("header `path,label` or `path`, found `file,class`"), "{err}");
    assert!(m("path\na.mp4,x\n").contains("line 2 has 2 fields, the header has 1"));
    assert!(m("path,label\n,x\n").contains("line 2 has an empty path"));
    assert!(m("path,label\n").contains("lists no video"));
    assert!(m("").contains("the manifest is empty"));
    let err = m("path,label\n\"four.mp4,a\nb.mp4,x\n");
    assert!(err.contains("line 2 has a quote that is not closed: `\"four.mp4,a`"), "{err}");
    // A doubled quote inside a quoted field is a quote, not an unclosed one.
    assert_eq!(parse_manifest("path,label\n\"a \"\"b\"\".mp4\",x\n", &csv).unwrap()[0].0, dir.join("a \"b\".mp4"));
}

#[test]
fn folder_scan_classes_are_sorted_relative_parent_folders() {
    let dir = temp_dir("folder");
    for rel in ["zebra/b.MP4", "zebra/a.gif", "animals/cats/c.mkv", "top.mov", ".hidden/x.mp4", "._junk.mp4"] {
        touch(&dir, rel);
    }
    touch(&dir, "zebra/readme.txt");
    touch(&dir, "zebra/frame.png");
    assert_eq!(
        scan_videos(&dir).unwrap(),
        ["animals/cats/c.mkv", "top.mov", "zebra/a.gif", "zebra/b.MP4"].map(|r| dir.join(r))
    );
    let ds = VideoFileSource::folder(&dir, &eval17()).unwrap();
    assert_eq!(ds.class_names(), ["", "animals/cats", "zebra"]);
    assert_eq!(ds.items().iter().map(|i| i.label).collect::<Vec<_>>(), [1, 0, 2, 2]);
    assert_eq!(ds.describe(), format!("folder: 4 videos, 3 classes, root {}", dir.display()));

    // Files directly in the folder: one class "".
    let flat = temp_dir("folder-flat");
    touch(&flat, "one.mp4");
    touch(&flat, "two.avi");
    let ds = spec(&format!("folder:{}", flat.display())).open(&eval17(), 0).unwrap();
    assert_eq!((ds.len(), ds.class_names()), (2, vec![String::new()]));

    let empty = temp_dir("folder-empty");
    touch(&empty, "notes.txt");
    let err = spec(&format!("folder:{}", empty.display())).open(&eval17(), 0).err().unwrap().to_string();
    assert!(err.contains(&empty.display().to_string()), "{err}");
    assert!(err.contains("no video files under this folder; supported extensions: mp4, avi, webm, mkv, mov"), "{err}");

    // A link back to a folder above is not followed again, and a FIFO named like a video is not a video.
    #[cfg(unix)]
    {
        let looped = temp_dir("folder-loop");
        touch(&looped, "a/one.mp4");
        std::os::unix::fs::symlink(&*looped, looped.join("a/up")).unwrap();
        let made = std::process::Command::new("mkfifo").arg(looped.join("a/pipe.mp4")).status();
        assert!(made.is_ok_and(|s| s.success()), "mkfifo");
        assert_eq!(scan_videos(&looped).unwrap(), [looped.join("a/one.mp4")]);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Frame selection

#[test]
fn eval_takes_the_centre_window() {
    let sel = select_frames(100, 25.0, None, 17, Split::Eval, 0, 0);
    assert_eq!(sel.indices, (42..59).collect::<Vec<_>>());
    assert_eq!((sel.available, sel.padded), (100, 0));
    // Native rate not above the target: every frame is kept.
    assert_eq!(select_frames(40, 8.0, Some(8.0), 4, Split::Eval, 0, 0).indices, [18, 19, 20, 21]);
    assert_eq!(select_frames(17, 30.0, None, 17, Split::Eval, 0, 0).indices, (0..17).collect::<Vec<_>>());
}

#[test]
fn resampling_uses_the_official_index_rule_and_pads_short_videos() {
    // 2 s at 16 fps read at 8 fps: 16 frames at floor(linspace(0, 31, 16)), one black frame of padding.
    let sel = select_frames(32, 16.0, Some(8.0), 17, Split::Train, 5, 3);
    assert_eq!(sel.indices, [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 31]);
    assert_eq!((sel.available, sel.padded), (16, 1));
    // 10 s at 30 fps read at 8 fps: 80 frames; the centre window starts at 40 − 8 = 32.
    let sel = select_frames(300, 30.0, Some(8.0), 17, Split::Eval, 0, 0);
    assert_eq!(sel.available, 80);
    let expected: Vec<usize> = (32..49).map(|i| (i as f64 * 299.0 / 79.0).floor() as usize).collect();
    assert_eq!(sel.indices, expected);
}

#[test]
fn train_start_is_uniform_in_range_and_deterministic_per_seed_and_index() {
    let mut starts = std::collections::BTreeSet::new();
    for seed in 0..20u64 {
        for index in 0..20 {
            let sel = select_frames(30, 25.0, None, 17, Split::Train, seed, index);
            let start = sel.indices[0];
            assert!(start <= 13, "start {start}");
            assert_eq!(sel.indices, (start..start + 17).collect::<Vec<_>>());
            assert_eq!(start, random_start(30, 17, seed, index));
            assert_eq!(sel, select_frames(30, 25.0, None, 17, Split::Train, seed, index));
            starts.insert(start);
        }
    }
    // All 14 possible starts occur, including both ends of the range.
    assert_eq!(starts, (0..=13).collect());
    // The seed changes the start of a given index.
    assert!((0..10).map(|seed| random_start(1000, 17, seed, 4)).collect::<std::collections::HashSet<_>>().len() > 5);
}

// ---------------------------------------------------------------------------------------------------------------
// Moving shapes

#[test]
fn moving_shapes_source_labels_texts_and_determinism() {
    let o = opts(5, 16, 24, None, Split::Train);
    let ds = spec("moving-shapes:20").open(&o, 9).unwrap();
    assert_eq!(ds.len(), 20);
    assert_eq!(ds.class_names().len(), 16);
    assert_eq!(ds.class_names()[3], "circle-grow");
    let clip = ds.clip(3, 123).unwrap();
    assert_eq!((clip.label, clip.text.as_str(), clip.source.as_str()), (3, "circle grow", "moving-shapes #3"));
    assert_eq!(clip.video, MovingShapes::new(5, 16, 24, 9).clip(3).0);
    assert_eq!((clip.video.frames, clip.video.height, clip.video.width), (5, 16, 24));
    assert_eq!(ds.clip(3, 0).unwrap().video, clip.video);
    assert_eq!(ds.clip(19, 0).unwrap().label, 3);
    assert!(ds.clip(20, 0).err().unwrap().to_string().contains("out of range"));
    assert_eq!(ds.describe(), "moving shapes: 20 clips, 16 classes, seed 9");
    let direct = MovingShapesSource::new(20, &o, 9).unwrap();
    assert_eq!(direct.shapes, MovingShapes::new(5, 16, 24, 9));
    // The variants of the spec reach the clips, and the description names them.
    let variant = spec("moving-shapes-plain-large:20").open(&o, 9).unwrap();
    assert_eq!(variant.describe(), "moving shapes (plain backgrounds, large shapes): 20 clips, 16 classes, seed 9");
    let want = MovingShapes::new(5, 16, 24, 9).with_plain_backgrounds().with_large_shapes().clip(3).0;
    assert_eq!(variant.clip(3, 0).unwrap().video, want);
    assert_ne!(want, clip.video);
    let single = spec("moving-shapes-plain-large-single:20").open(&o, 9).unwrap();
    assert_eq!(
        single.describe(),
        "moving shapes (plain backgrounds, large shapes, no distractors): 20 clips, 16 classes, seed 9"
    );
    let fixed = spec("moving-shapes-plain-large-single-fixed:20").open(&o, 9).unwrap();
    let want = MovingShapes::new(5, 16, 24, 9)
        .with_plain_backgrounds()
        .with_large_shapes()
        .with_single_shape()
        .with_fixed_look()
        .clip(3)
        .0;
    assert_eq!(fixed.clip(3, 0).unwrap().video, want);
}

// ---------------------------------------------------------------------------------------------------------------
// Real video files

/// A 2-second 16 fps 64×48 test pattern (32 frames), encoded with ffmpeg.
fn make_video(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x48:rate=16", "-t", "2"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .expect("ffmpeg must be installed to run the dataset tests (apt-get install ffmpeg)");
    assert!(st.success());
}

/// A folder with one good video (`good/a.mp4`), a truncated copy (`bad/t.mp4`, its first 2 KB) and a corrupt
/// file (`bad/c.mp4`, garbage bytes). Sorted order: bad/c.mp4, bad/t.mp4, good/a.mp4.
fn video_folder(name: &str) -> TempDir {
    let dir = temp_dir(name);
    let good = dir.join("good/a.mp4");
    make_video(&good);
    let bytes = std::fs::read(&good).unwrap();
    std::fs::create_dir_all(dir.join("bad")).unwrap();
    std::fs::write(dir.join("bad/t.mp4"), &bytes[..2048.min(bytes.len() / 2)]).unwrap();
    let garbage: Vec<u8> = (0..5000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(dir.join("bad/c.mp4"), garbage).unwrap();
    dir
}

fn is_black(v: &nbp_core::video::Video, t: usize) -> bool {
    (0..3).all(|c| (0..v.height).all(|y| (0..v.width).all(|x| v.data[v.index(c, t, y, x)] == 0.0)))
}

#[test]
fn folder_of_real_videos_reads_padded_clips_and_skips_unreadable_files() {
    let dir = video_folder("real");
    let good = dir.join("good/a.mp4");
    // Read at 8 fps: 16 frames available, 17 requested → one black frame at the end, resized to 24×40.
    let o = opts(17, 24, 40, Some(8.0), Split::Eval);
    let ds = spec(&format!("folder:{}", dir.display())).open(&o, 0).unwrap();
    assert_eq!(ds.len(), 3);
    assert_eq!(ds.class_names(), ["bad", "good"]);
    let clip = ds.clip(2, 0).unwrap();
    assert_eq!((clip.label, clip.text.as_str()), (1, "good"));
    assert_eq!(clip.source, good.display().to_string());
    assert_eq!((clip.video.frames, clip.video.height, clip.video.width), (17, 24, 40));
    assert!(is_black(&clip.video, 16), "the padding frame must be black");
    assert!(!is_black(&clip.video, 15), "the last real frame must not be black");
    // Same pixels as nbp-core's reader with the official centre rule.
    let core =
        read_video(&good, &ReadOptions { frames: 17, fps: Some(8.0), size: Some((24, 40)), start: ClipStart::Center })
            .unwrap();
    assert_eq!(core.padded_frames, 1);
    assert_eq!(clip.video, core.video);

    // Without the wrapper, a broken file is an error that names it.
    for (i, name) in [(0, "c.mp4"), (1, "t.mp4")] {
        let err = ds.clip(i, 0).err().unwrap();
        assert!(matches!(err, Error::File { .. }), "{err}");
        assert!(err.to_string().contains(&dir.join("bad").join(name).display().to_string()), "{err}");
    }

    // With it, both are skipped (to the next readable video), logged and summarised.
    let skipping = Skipping::new(ds);
    assert_eq!(skipping.clip(0, 0).unwrap().source, good.display().to_string());
    assert_eq!(skipping.clip(1, 0).unwrap().source, good.display().to_string());
    assert_eq!(skipping.clip(2, 0).unwrap().video, core.video);
    let log: &SkipLog = skipping.log();
    assert_eq!(log.len(), 2);
    let summary = log.summary().unwrap();
    assert_eq!(
        summary,
        format!(
            "2 of 3 videos were skipped (unreadable or corrupt): {}, {}",
            dir.join("bad/c.mp4").display(),
            dir.join("bad/t.mp4").display()
        )
    );
    for (_, reason) in log.entries() {
        assert!(reason.contains("cannot be read as a video"), "{reason}");
    }
}

#[test]
fn train_clips_start_at_the_seeded_random_frame() {
    let dir = temp_dir("train");
    let path = dir.join("a.mp4");
    make_video(&path);
    // Native rate (32 frames), 8-frame clips: starts 0..=24.
    let ds = spec(&format!("folder:{}", dir.display())).open(&opts(8, 24, 32, None, Split::Train), 0).unwrap();
    let all = read_video(&path, &ReadOptions { frames: 32, fps: None, size: Some((24, 32)), start: ClipStart::Start })
        .unwrap();
    assert_eq!((all.available_frames, all.padded_frames), (32, 0));
    let seed = (0..100).find(|&s| random_start(32, 8, s, 0) != random_start(32, 8, 0, 0)).unwrap();
    for s in [0, seed] {
        let start = random_start(32, 8, s, 0);
        assert!(start <= 24);
        let clip = ds.clip(0, s).unwrap();
        assert_eq!(clip.video, all.video.frames_range(start, 8).unwrap(), "seed {s}, start {start}");
    }
    assert_ne!(ds.clip(0, 0).unwrap().video, ds.clip(0, seed).unwrap().video);
    // Several starts in one decoding: the clips of those seeds, in order.
    let many = ds.clips(0, &[seed, 0, seed, 7]).unwrap();
    let videos: Vec<_> = many.iter().map(|c| c.video.clone()).collect();
    let one_by_one: Vec<_> = [seed, 0, seed, 7].iter().map(|&s| ds.clip(0, s).unwrap().video).collect();
    assert_eq!(videos, one_by_one);
    assert!(many.iter().all(|c| c.source == path.display().to_string() && c.padded == 0));

    // One listing, two clip rules: the training view starts at the seeded frame, the held-out view at the centre
    // (frames 12..20 of 32), whatever split the options name.
    let [train, eval] = spec(&format!("folder:{}", dir.display()))
        .open_views(&opts(8, 24, 32, None, Split::Eval), 0, [Split::Train, Split::Eval])
        .unwrap();
    assert_eq!((train.len(), eval.len()), (1, 1));
    assert_eq!(train.clip(0, seed).unwrap().video, ds.clip(0, seed).unwrap().video);
    assert_eq!(eval.clip(0, seed).unwrap().video, all.video.frames_range(12, 8).unwrap());
}
