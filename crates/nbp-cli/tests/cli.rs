//! `nbp-cli` run as a user runs it, on real video files made with ffmpeg.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nbp-cli")).args(args).output().expect("run nbp-cli")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn fixture(name: &str) -> String {
    nbp_core::workspace::workspace_path("tests/fixtures/tokenizer").join(name).display().to_string()
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nbp-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A 3-second 30 fps test pattern, encoded as H.264 MP4 (ffmpeg is installed by .ci/run).
fn make_video(dir: &Path) -> PathBuf {
    let path = dir.join("testsrc.mp4");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=3:size=96x64:rate=30"])
        .args(["-pix_fmt", "yuv420p"])
        .arg(&path)
        .status()
        .expect("ffmpeg must be installed to run the CLI tests (apt-get install ffmpeg)");
    assert!(st.success());
    path
}

/// `--save-tokens` for commands with `--no-decode` that are expected to fail before writing anything.
fn unused_ids() -> String {
    std::env::temp_dir().join(format!("nbp-cli-unused-{}.npy", std::process::id())).display().to_string()
}

fn tiny() -> [String; 4] {
    ["--tokenizer".into(), fixture("tiny_magvit2.pt"), "--tokenizer-config".into(), "tiny".into()]
}

#[test]
fn reconstruct_encode_and_decode_a_real_video() {
    let dir = workdir("roundtrip");
    let video = make_video(&dir);
    let v = video.to_str().unwrap();
    let gif = dir.join("recon.gif");
    let ids = dir.join("ids.npy");
    let mut args = vec!["tokenizer", "reconstruct", v, "-o", gif.to_str().unwrap(), "--resolution", "32"];
    args.extend(["--save-tokens", ids.to_str().unwrap()]);
    let t = tiny();
    args.extend(t.iter().map(String::as_str));
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("native 30.00 fps, 24 frames after resampling"), "{out}");
    let psnr: f64 = out.split("PSNR ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(psnr.is_finite() && psnr > 0.0, "{out}");
    // Also scored as the official tokenizer_eval.py scores: the 17 frames but the last (another SSIM here).
    let ssim_of =
        |line: &str| -> f64 { line.split("SSIM ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap() };
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("PSNR ")).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[1].ends_with("over the first 16 frames (the official tokenizer_eval.py leaves out the last frame)"));
    assert!(ssim_of(lines[1]) > 0.0 && ssim_of(lines[1]) != ssim_of(lines[0]), "{out}");
    assert!(std::fs::metadata(&gif).unwrap().len() > 1000);
    // A clip longer than the video ends in black padding, which the metrics leave out.
    let mut args = vec!["tokenizer", "reconstruct", v, "-o", gif.to_str().unwrap(), "--resolution", "32"];
    args.extend(["--frames", "33"]);
    args.extend(t.iter().map(String::as_str));
    let o = cli(&args);
    assert!(o.status.success() && text(&o).contains(" over the 24 frames read (not the padding)"), "{}", text(&o));
    assert!(!text(&o).contains("tokenizer_eval.py"), "no official score of a padded clip: {}", text(&o));

    // encode → decode gives the same tokens and a decodable video.
    let ids2 = dir.join("ids2.npy");
    let mut args = vec!["tokenizer", "encode", v, "-o", ids2.to_str().unwrap(), "--resolution", "32"];
    args.extend(t.iter().map(String::as_str));
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(std::fs::read(&ids).unwrap(), std::fs::read(&ids2).unwrap());
    let a = nbp_core::npy::read_npy(&ids2).unwrap();
    assert_eq!(a.shape, vec![1, 5, 4, 4]);
    // Without --resolution, a checkpoint that does not record its training size (the official layout) is read
    // at the official 128×128.
    let ids128 = dir.join("ids128.npy");
    let mut args = vec!["tokenizer", "encode", v, "-o", ids128.to_str().unwrap(), "--frames", "5"];
    args.extend(t.iter().map(String::as_str));
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(nbp_core::npy::read_npy(&ids128).unwrap().shape, vec![1, 2, 16, 16]);

    let raw = dir.join("pixels.npy");
    let mut args = vec!["tokenizer", "decode", ids2.to_str().unwrap(), "-o", raw.to_str().unwrap()];
    args.extend(t.iter().map(String::as_str));
    let o = cli(&args);
    assert!(o.status.success(), "{}", text(&o));
    let px = nbp_core::npy::read_npy(&raw).unwrap();
    assert_eq!(px.shape, vec![1, 3, 17, 32, 32]);
    assert!(px.to_f32().iter().all(|v| (0.0..=1.0).contains(v)));

    let frames = dir.join("frames");
    let mut args = vec!["tokenizer", "decode", ids2.to_str().unwrap(), "-o", frames.to_str().unwrap()];
    args.extend(t.iter().map(String::as_str));
    assert!(cli(&args).status.success());
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 17);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_inputs_give_clear_errors_without_panics() {
    let dir = workdir("errors");
    let video = make_video(&dir);
    let t = tiny();
    let check = |args: &[&str], needles: &[&str]| {
        let o = cli(args);
        let out = text(&o);
        assert!(!o.status.success(), "should fail: {args:?}\n{out}");
        assert!(!out.contains("panicked"), "{out}");
        for n in needles {
            assert!(out.contains(n), "missing '{n}' in:\n{out}");
        }
    };
    let mut base = vec!["tokenizer", "encode"];
    // Truncated video: ffmpeg cannot even find the stream.
    let bytes = std::fs::read(&video).unwrap();
    let truncated = dir.join("truncated.mp4");
    std::fs::write(&truncated, &bytes[..600]).unwrap();
    let mut a = base.clone();
    a.push(truncated.to_str().unwrap());
    a.extend(t.iter().map(String::as_str));
    check(&a, &["truncated.mp4"]);
    // Not a video at all.
    let text_file = dir.join("notes.mp4");
    std::fs::write(&text_file, "hello").unwrap();
    let mut a = base.clone();
    a.push(text_file.to_str().unwrap());
    a.extend(t.iter().map(String::as_str));
    check(&a, &["notes.mp4", "cannot be read as a video"]);
    // Missing checkpoint.
    base.push(video.to_str().unwrap());
    check(&[&base[..], &["--tokenizer", "/no/such/tok.pt"]].concat(), &["/no/such/tok.pt", "not found"]);
    // Wrong frame count and resolution flags.
    let mut a = base.clone();
    a.extend(t.iter().map(String::as_str));
    check(&[&a[..], &["--frames", "16", "--resolution", "32"]].concat(), &["1 + 4n"]);
    check(&[&a[..], &["--resolution", "30"]].concat(), &["multiples of 8"]);
    check(&[&a[..], &["--device", "tpu"]].concat(), &["invalid value 'tpu'"]);
    // Token ids outside the codebook.
    let bad = dir.join("bad.npy");
    nbp_core::npy::write_npy(&bad, &nbp_core::npy::NpyArray::i32(vec![1, 1, 1, 2], vec![5, 64000])).unwrap();
    let mut a = vec!["tokenizer", "decode", bad.to_str().unwrap()];
    a.extend(t.iter().map(String::as_str));
    check(&a, &["64000", "outside the codebook"]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn help_explains_every_flag() {
    let o = cli(&["tokenizer", "encode", "--help"]);
    let out = text(&o);
    for flag in
        ["--tokenizer ", "--tokenizer-config", "--frames", "--fps", "--resolution", "--clip", "--device", "--output"]
    {
        assert!(out.contains(flag), "{flag} missing in help:\n{out}");
    }
}

fn gen_fixture(name: &str) -> String {
    nbp_core::workspace::workspace_path("tests/fixtures/generator").join(name).display().to_string()
}

#[test]
fn sample_reproduces_the_official_greedy_hybrid_ids() {
    let dir = workdir("sample-hybrid");
    let out = dir.join("ids.npy");
    let generator = gen_fixture("hybrid_text.ckpt");
    let greedy = |extra: &[&str]| {
        let args = ["sample", "--generator", &generator, "--condition-ids", "1,5,2", "--latent-grid", "3x4x4"];
        let o = cli(&[&args[..], &["--greedy", "--no-decode", "--save-tokens", out.to_str().unwrap()], extra].concat());
        assert!(o.status.success(), "{}", text(&o));
        (text(&o), nbp_core::npy::read_npy(&out).unwrap())
    };
    let (log, ours) = greedy(&["--mode", "hybrid", "--official-clamp"]);
    assert!(log.contains("1 clip ([1, 5, 2]), 15 steps, 48 tokens"), "{log}");
    assert!(log.contains("sampled ids were not video codes and were clamped"), "{log}");
    // The official sampler's greedy ids (shifted vocabulary), mapped to codes with the official clamp.
    let official: Vec<i64> = nbp_core::npy::read_npy(gen_fixture("hybrid_text_greedy.npy")).unwrap().to_i64().unwrap();
    let expected: Vec<i64> = official.iter().map(|&id| (id - 14).clamp(0, 63)).collect();
    assert_eq!(ours.shape, vec![1, 3, 4, 4]);
    assert_eq!(&ours.to_i64().unwrap()[..24], &expected[..]);

    // By default only video codes are drawn: the same ids up to the first place where the official sampler drew
    // another id (this random model does), then others, and nothing to clamp.
    let first_other = official.iter().position(|&id| id < 14).expect("the fixture draws a non-video id");
    let (log, codes) = greedy(&[]);
    assert!(!log.contains("clamped"), "{log}");
    let codes = codes.to_i64().unwrap();
    assert_eq!(&codes[..first_other], &expected[..first_other]);
    assert_ne!(&codes[..24], &expected[..]);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_continues_a_video_and_decodes_it() {
    let dir = workdir("sample-video");
    let video = make_video(&dir);
    // The fixture generator knows 64 codes, the tiny tokenizer 64000: encoding a real video gives codes the
    // generator cannot read, and that is a clear error.
    let o = cli(&[
        "sample",
        "--generator",
        &gen_fixture("nbp_uncond.ckpt"),
        "--tokenizer-config",
        "tiny",
        "--condition-video",
        video.to_str().unwrap(),
        "--latent-grid",
        "3x4x4",
    ]);
    assert!(!o.status.success() && text(&o).contains("is not a code of the generator's codebook"), "{}", text(&o));
    // Token-level frame prediction: continue 2 given latent frames, decode with the embedded tokenizer.
    let prefix = dir.join("prefix.npy");
    let first: Vec<i32> = (0..32).map(|i| i * 5 % 64).collect();
    nbp_core::npy::write_npy(&prefix, &nbp_core::npy::NpyArray::i32(vec![2, 4, 4], first.clone())).unwrap();
    let gif = dir.join("sample.gif");
    let ids = dir.join("ids.npy");
    let args = |out_ids: &Path, decode: bool| {
        let mut a: Vec<String> =
            ["sample", "--generator", &gen_fixture("nbp_uncond.ckpt"), "--tokenizer-config", "tiny"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(
            ["--prefix-tokens", prefix.to_str().unwrap(), "--latent-grid", "3x4x4", "--num-samples", "2"]
                .map(String::from),
        );
        a.extend(["--save-tokens", out_ids.to_str().unwrap(), "--seed", "7"].map(String::from));
        match decode {
            true => a.extend(["--out", gif.to_str().unwrap()].map(String::from)),
            false => a.push("--no-decode".into()),
        }
        a
    };
    let a = args(&ids, true);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("2 clips (unconditional), 4 steps, 32 tokens") && out.contains("decoder: 18 frames"), "{out}");
    assert!(std::fs::metadata(&gif).unwrap().len() > 500);
    let tokens = nbp_core::npy::read_npy(&ids).unwrap();
    assert_eq!(tokens.shape, vec![2, 3, 4, 4]);
    let t = tokens.to_i64().unwrap();
    // Both samples keep the given frames and differ after them.
    let first: Vec<i64> = first.iter().map(|&v| v as i64).collect();
    assert_eq!(t[..32], first[..]);
    assert_eq!(t[48..80], first[..]);
    assert_ne!(t[32..48], t[80..96]);
    // Same seed, same tokens.
    let ids2 = dir.join("ids2.npy");
    let a = args(&ids2, false);
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(nbp_core::npy::read_npy(&ids2).unwrap().to_i64().unwrap(), t);
    // What --save-tokens wrote continues as it is: the first latent frame of its second clip, here.
    let ids3 = dir.join("ids3.npy");
    let mut a = args(&ids3, false);
    let at = a.iter().position(|x| x == "--prefix-tokens").unwrap();
    a[at + 1] = ids.to_str().unwrap().to_string();
    a.extend(["--prefix-clip", "1", "--prefix-frames", "1"].map(String::from));
    let o = cli(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let t3 = nbp_core::npy::read_npy(&ids3).unwrap().to_i64().unwrap();
    assert_eq!((t3[..16].to_vec(), t3[48..64].to_vec()), (t[48..64].to_vec(), t[48..64].to_vec()));
    assert_ne!(t3[16..48], t[64..96], "a new continuation");
    std::fs::remove_dir_all(&dir).ok();
}

/// `generator convert --tokenizer-out` converts the tokenizer an official .ckpt embeds too, and the converted
/// generator records it: sampled without --tokenizer, it gives the very video the .ckpt gives.
#[test]
fn a_converted_generator_decodes_with_its_converted_tokenizer() {
    let dir = workdir("convert-tokenizer");
    let p = |name: &str| dir.join(name).display().to_string();
    let ckpt = gen_fixture("nbp_uncond.ckpt");
    let refused = |args: &[&str], needle: &str| {
        let o = cli(args);
        assert!(!o.status.success() && text(&o).contains(needle), "{args:?}\n{}", text(&o));
    };
    let o = cli(&["generator", "convert", &ckpt, &p("plain.safetensors")]);
    assert!(o.status.success() && text(&o).contains("also embeds its tokenizer; --tokenizer-out"), "{}", text(&o));
    // The embedded tokenizer is the tiny architecture: read as the default (official) one, refused.
    let o = cli(&["generator", "convert", &ckpt, &p("g.safetensors"), "--tokenizer-out", &p("t.safetensors")]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("pass --tokenizer-config") && out.contains("different configuration"),
        "{out}"
    );
    assert!(!dir.join("g.safetensors").exists() && !dir.join("t.safetensors").exists(), "nothing written");
    let convert = ["generator", "convert", &ckpt, &p("g.safetensors"), "--tokenizer-out", &p("t.safetensors")];
    let o = cli(&[&convert[..], &["--tokenizer-config", "tiny"]].concat());
    assert!(o.status.success() && text(&o).contains("converted the tokenizer of"), "{}", text(&o));
    let prefix = p("prefix.npy");
    let first: Vec<i32> = (0..32).map(|i| i * 7 % 64).collect();
    nbp_core::npy::write_npy(&prefix, &nbp_core::npy::NpyArray::i32(vec![2, 4, 4], first)).unwrap();
    let sample = |generator: &str, extra: &[&str], name: &str| {
        let grid = ["--latent-grid", "3x4x4", "--prefix-tokens", &prefix, "--seed", "3", "--out", &p(name)];
        let args = [&["sample", "--generator", generator][..], &grid].concat();
        let o = cli(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", text(&o));
        (text(&o), std::fs::read(dir.join(name)).unwrap())
    };
    let (_, from_ckpt) = sample(&ckpt, &["--tokenizer-config", "tiny"], "ckpt.gif");
    let (out, converted) = sample(&p("g.safetensors"), &[], "converted.gif");
    assert!(out.contains(&format!("tokenizer {} (the one the generator file records)", p("t.safetensors"))), "{out}");
    assert!(from_ckpt == converted, "the same video from the .ckpt and from the converted files");
    // Misuse: an nbp input embeds no tokenizer; --tokenizer-config alone converts nothing.
    refused(
        &["generator", "convert", &p("g.safetensors"), &p("h.safetensors"), "--tokenizer-out", &p("u.safetensors")],
        "g.safetensors is an nbp file, which embeds no tokenizer",
    );
    refused(&["generator", "convert", &ckpt, &p("h.safetensors"), "--tokenizer-config", "tiny"], "--tokenizer-out");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn converted_generators_sample_the_same_tokens() {
    let dir = workdir("convert");
    let st = dir.join("hybrid.safetensors");
    let o = cli(&["generator", "convert", &gen_fixture("hybrid_text.ckpt"), st.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let run = |g: &str, out: &Path| {
        let o = cli(&[
            "sample",
            "--generator",
            g,
            "--condition-ids",
            "1,5,2",
            "--latent-grid",
            "3x4x4",
            "--no-decode",
            "--save-tokens",
            out.to_str().unwrap(),
            "--seed",
            "3",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        nbp_core::npy::read_npy(out).unwrap().to_i64().unwrap()
    };
    assert_eq!(
        run(&gen_fixture("hybrid_text.ckpt"), &dir.join("a.npy")),
        run(st.to_str().unwrap(), &dir.join("b.npy"))
    );
    // Converting nbp files keeps what they record beside the weights: the generator's classes, latent grid,
    // block shape and tokenizer, the tokenizer's training size.
    let meta = |p: &Path| nbp_core::weights::WeightMap::read_safetensors(p).unwrap().1;
    for (kind, name) in [("generator", "generator.safetensors"), ("tokenizer", "tokenizer.safetensors")] {
        let bundled = nbp_core::workspace::workspace_path(format!("assets/demo/{name}"));
        let copy = dir.join(name);
        let o = cli(&[kind, "convert", bundled.to_str().unwrap(), copy.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        assert_eq!(meta(&copy), meta(&bundled), "{kind}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn sample_errors_name_the_fix() {
    let ids = unused_ids();
    let check = |args: &[&str], needle: &str| {
        let o = cli(&[args, &["--save-tokens", &ids]].concat());
        let out = text(&o);
        assert!(!o.status.success() && out.contains(needle) && !out.contains("panicked"), "{args:?}\n{out}");
    };
    let g = gen_fixture("nbp_uncond.ckpt");
    check(
        &["sample", "--generator", &g, "--latent-grid", "3x4x4", "--no-decode"],
        "--condition-video or --prefix-tokens",
    );
    check(&["sample", "--generator", &g, "--mode", "ntp", "--no-decode"], "does not match the model");
    check(&["sample", "--generator", "/no/such.ckpt"], "not found");
    let h = gen_fixture("hybrid_text.ckpt");
    check(&["sample", "--generator", &h, "--class", "NotAClass", "--no-decode"], "not a UCF-101 class");
    check(
        &["sample", "--generator", &h, "--condition-ids", "1,2", "--latent-grid", "3x4x4", "--no-decode"],
        "expects 3 condition tokens",
    );
    // The bundled model records block 8 and 4 heads: other values are errors, the same ones are not.
    check(&["sample", "--block-size", "7", "--no-decode"], "--block-size 7 differs from what this nbp file records");
    check(&["sample", "--n-head", "2", "--no-decode"], "leave out --n-head");
    // More sequences than any machine holds the key/value cache of: refused before allocating.
    check(
        &["sample", "--class", "circle-grow", "--num-samples", "100000000000", "--no-decode"],
        "of key/value cache (at most 1000 GB): generate fewer sequences at a time (--num-samples",
    );
    let o = cli(&[
        "sample",
        "--block-size",
        "8",
        "--n-head",
        "4",
        "--num-samples",
        "1",
        "--no-decode",
        "--save-tokens",
        &ids,
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn moving_shapes_preview_is_written() {
    let dir = workdir("shapes");
    let png = dir.join("shapes.png");
    let o = cli(&[
        "dataset",
        "moving-shapes",
        "--out",
        png.to_str().unwrap(),
        "--count",
        "3",
        "--frames",
        "5",
        "--resolution",
        "16x24",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("circle-bounce, circle-orbit, circle-zigzag"), "{}", text(&o));
    let (w, h) = image::image_dimensions(&png).unwrap();
    assert_eq!((w, h), (5 * 24 + 4 * 2, 3 * 16 + 2 * 2));
    std::fs::remove_dir_all(&dir).ok();
}

/// Two classes of short real videos (ffmpeg sources) and one truncated file.
fn make_video_folder(dir: &Path) -> PathBuf {
    let root = dir.join("videos");
    for (class, source) in [("pattern", "testsrc"), ("fractal", "mandelbrot")] {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..2 {
            let path = root.join(class).join(format!("{class}{i}.mp4"));
            let st = Command::new("ffmpeg")
                .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
                .arg(format!("{source}=size=48x32:rate=8"))
                .args(["-ss", &i.to_string(), "-t", "1", "-pix_fmt", "yuv420p"])
                .arg(&path)
                .status()
                .expect("ffmpeg must be installed to run the CLI tests (apt-get install ffmpeg)");
            assert!(st.success());
        }
    }
    let good = std::fs::read(root.join("pattern/pattern0.mp4")).unwrap();
    std::fs::write(root.join("pattern/truncated.mp4"), &good[..good.len().min(1500)]).unwrap();
    root
}

#[test]
fn train_both_models_on_real_videos_resume_and_sample() {
    let dir = workdir("train");
    let videos = make_video_folder(&dir);
    let data = format!("folder:{}", videos.display());
    let p = |name: &str| dir.join(name).display().to_string();
    let run = |args: &[&str]| {
        let o = cli(args);
        let out = text(&o);
        assert!(o.status.success(), "{args:?}\n{out}");
        out
    };
    let tok_args = [
        "train-tokenizer",
        "--dataset",
        &data,
        "--frames",
        "5",
        "--height",
        "16",
        "--width",
        "16",
        "--preset",
        "tiny",
        "--fsq-levels",
        "5,5,5",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--checkpoint-every",
        "2",
        "--valid-clips",
        "1",
    ];
    let mut args = tok_args.to_vec();
    let tok_out = p("tok");
    args.extend(["--out", &tok_out]);
    let out = run(&args);
    assert!(out.contains("skipped") && out.contains("truncated.mp4"), "{out}");
    assert!(out.contains("validation at step 4: PSNR") && out.contains("done after 4 of 4 steps"), "{out}");
    let tokenizer = p("tok/tokenizer.safetensors");
    // The file records the 16×16 it was trained at, and `tokenizer encode` reads clips at that size by default.
    let clip = make_video(&dir);
    let ids = p("ids.npy");
    run(&["tokenizer", "encode", clip.to_str().unwrap(), "--tokenizer", &tokenizer, "--frames", "5", "-o", &ids]);
    assert_eq!(nbp_core::npy::read_npy(Path::new(&ids)).unwrap().shape, vec![1, 2, 2, 2]);

    let tokens = p("tokens.safetensors");
    let out = run(&[
        "tokenize-dataset",
        "--dataset",
        &data,
        "--tokenizer",
        &tokenizer,
        "--frames",
        "5",
        "--resolution",
        "16",
        "--out",
        &tokens,
    ]);
    assert!(out.contains("4 clips") && out.contains("2×2×2 tokens each"), "{out}");
    // Two clips from each video: validation then holds out whole videos.
    let tokens2 = p("tokens2.safetensors");
    let cache2 = ["--dataset", &data, "--tokenizer", &tokenizer, "--frames", "5", "--resolution", "16"];
    let out = run(&[&["tokenize-dataset", "--clips-per-video", "2", "--out", &tokens2][..], &cache2].concat());
    assert!(out.contains("8 clips (2 per video)") && out.matches("warning: skipped").count() == 1, "{out}");
    // A video lying in the root beside class folders would be a class without a name: warned about.
    let loose = dir.join("loose");
    std::fs::create_dir_all(loose.join("pattern")).unwrap();
    std::fs::copy(videos.join("pattern/pattern0.mp4"), loose.join("pattern/pattern0.mp4")).unwrap();
    std::fs::copy(videos.join("fractal/fractal0.mp4"), loose.join("stray.mp4")).unwrap();
    let loose_data = format!("folder:{}", loose.display());
    let cache3 = ["--dataset", &loose_data, "--tokenizer", &tokenizer, "--frames", "5", "--resolution", "16"];
    let out = run(&[&["tokenize-dataset", "--out", &p("tokens3.safetensors")][..], &cache3].concat());
    assert!(
        out.contains(&format!("warning: 1 video lies directly in {} in no class folder", loose.display()))
            && out.contains("2 clips"),
        "{out}"
    );
    let train2 = ["--preset", "tiny", "--steps", "1", "--batch-size", "2", "--valid-clips", "1", "--out", &p("gen2")];
    let out = run(&[&["train", "--tokens", &tokens2][..], &train2].concat());
    assert!(out.contains("holds out 2 clips for --valid-clips 1: the last 1 video whole (2 clips each; `eval-frame-prediction --clips 1`"), "{out}");

    let gen_out = p("gen");
    let gen_args = |steps: &'static str| {
        vec![
            "train",
            "--tokens",
            tokens.as_str(),
            "--out",
            gen_out.as_str(),
            "--preset",
            "tiny",
            "--mode",
            "hybrid",
            "--block-shape",
            "1x1x2",
            "--steps",
            steps,
            "--batch-size",
            "2",
            "--checkpoint-every",
            "2",
            "--valid-clips",
            "1",
            "--warmup-steps",
            "1",
        ]
    };
    let out = run(&gen_args("4"));
    assert!(out.contains("done after 4 of 4 steps") && out.contains("Loss"), "{out}");
    // A second run into the same directory must be asked to resume; resuming continues the step count.
    let o = cli(&gen_args("6"));
    assert!(!o.status.success() && text(&o).contains("--resume"), "{}", text(&o));
    let mut resume = gen_args("6");
    resume.push("--resume");
    let out = run(&resume);
    assert!(out.contains("done after 6 of 6 steps"), "{out}");
    assert!(std::fs::read_to_string(dir.join("gen/train.log")).unwrap().contains("step 6/6"));

    // The trained models sample a class grid (one clip per class) and a named class.
    let gif = p("grid.gif");
    let out =
        run(&["sample", "--generator", &p("gen/generator.safetensors"), "--tokenizer", &tokenizer, "--out", &gif]);
    assert!(out.contains("2 clips (fractal, pattern)"), "{out}");
    // Without --tokenizer, the one its token cache was made with, which the generator file records.
    let out = run(&["sample", "--generator", &p("gen/generator.safetensors"), "--out", &gif]);
    let recorded = std::path::Path::new(&tokenizer).canonicalize().unwrap();
    assert!(out.contains(&format!("tokenizer {} (the one the generator file records)", recorded.display())), "{out}");
    let out = run(&[
        "sample",
        "--generator",
        &p("gen/generator.safetensors"),
        "--tokenizer",
        &tokenizer,
        "--class",
        "pattern",
        "--out",
        &gif,
    ]);
    assert!(out.contains("1 clip (pattern)"), "{out}");
    // Trained without condition dropout (the default), its null condition learnt nothing: guidance is warned
    // about, and `generator info` says why.
    let generator = p("gen/generator.safetensors");
    let guided = ["sample", "--generator", &generator, "--class", "pattern", "--cfg-scale", "2", "--no-decode"];
    let out = run(&[&guided[..], &["--save-tokens", &p("cfg.npy")]].concat());
    assert!(out.contains("was trained without condition dropout (p_drop_cond 0)"), "{out}");
    let out = run(&["generator", "info", &generator]);
    assert!(out.contains("trained with condition dropout 0: its null condition is untrained"), "{out}");

    // A config file with a typo names the file and the key.
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "stepz = 3\n").unwrap();
    let o = cli(&["train", "--config", bad.to_str().unwrap()]);
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("bad.toml") && out.contains("stepz") && !out.contains("panicked"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn training_help_explains_the_flags() {
    let out = text(&cli(&["train", "--help"]));
    for flag in ["--config", "--tokens", "--block-shape", "--mode", "--p-drop-cond", "--grad-accumulation", "--resume"]
    {
        assert!(out.contains(flag), "{flag} missing in help:\n{out}");
    }
    // The defaults of the run config, shown with the flags that override it (nested sections and f32 fields
    // included; none for values the preset decides).
    for shown in ["Sequences per micro-batch [default: 8]", "Peak learning rate [default: 0.0006]", "[default: 0.01]"] {
        assert!(out.contains(shown), "{shown} missing in help:\n{out}");
    }
    assert!(!out.contains("(overrides the preset) [default"), "{out}");
    let out = text(&cli(&["train-tokenizer", "--help"]));
    for flag in ["--dataset", "--lpips-vgg", "--gan-start", "--crop", "--fsq-levels", "--resume"] {
        assert!(out.contains(flag), "{flag} missing in help:\n{out}");
    }
    assert!(out.contains("Clips per step [default: 4]") && out.contains("[default: moving-shapes:20000]"), "{out}");
}

/// The first README command: `nbp-cli sample` with no model arguments, run from the repository root, uses the
/// bundled demo models and draws one clip for each of 8 classes; frame prediction continues the bundled clip.
#[test]
fn sample_with_no_arguments_uses_the_bundled_demo_model() {
    let dir = workdir("demo-sample");
    let root = nbp_core::workspace::workspace_path(".");
    let run = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_nbp-cli")).args(args).current_dir(&root).output().expect("run nbp-cli")
    };
    let gif = dir.join("sample.gif");
    let ids = dir.join("ids.npy");
    let o = run(&["sample", "--out", gif.to_str().unwrap(), "--save-tokens", ids.to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "8 clips (circle-bounce, square-orbit, triangle-zigzag, ring-grow, square-bounce, triangle-orbit, \
             ring-zigzag, circle-grow), 376 steps, 2560 tokens"
        ) && out.contains("decoder: 136 frames"),
        "{out}"
    );
    let gif_bytes = std::fs::read(&gif).unwrap();
    assert_eq!(&gif_bytes[..6], b"GIF89a");
    let tokens = nbp_core::npy::read_npy(&ids).unwrap();
    assert_eq!(tokens.shape, vec![8, 5, 8, 8]);
    let t = tokens.to_i64().unwrap();
    assert!(t.iter().all(|&c| (0..625).contains(&c)));
    // Different classes give different clips, and each is the clip --class gives alone (square-orbit is second).
    assert_ne!(t[..320], t[320..640]);
    let alone = dir.join("alone.npy");
    let o = run(&["sample", "--class", "square-orbit", "--no-decode", "--save-tokens", alone.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(nbp_core::npy::read_npy(&alone).unwrap().to_i64().unwrap(), t[320..640]);
    // The bundled model samples with the official top-p 0.9 unless told otherwise: the same seed with an
    // explicit --top-p 0.9 gives the same tokens, with --top-p 1 other ones.
    let ids_p = dir.join("ids_p.npy");
    for (top_p, same) in [("0.9", true), ("1", false)] {
        let o = run(&["sample", "--no-decode", "--top-p", top_p, "--save-tokens", ids_p.to_str().unwrap()]);
        assert!(o.status.success(), "{}", text(&o));
        let tp = nbp_core::npy::read_npy(&ids_p).unwrap().to_i64().unwrap();
        assert_eq!(tp == t, same, "--top-p {top_p}");
    }

    // Frame prediction from the bundled held-out clip: its first 2 latent frames are kept, 24 steps follow.
    let ids2 = dir.join("next.npy");
    let o = run(&[
        "sample",
        "--condition-video",
        "assets/demo/shapes.mp4",
        "--class",
        "ring-orbit",
        "--no-decode",
        "--save-tokens",
        ids2.to_str().unwrap(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 clip (ring-orbit), 24 steps, 192 tokens"), "{out}");
    // 3 new latent frames after the 2 given are 12 pixel frames (17 − 5): frames/s is 12/192 of tokens/s.
    let rates: Vec<f64> = out
        .split("tokens in ")
        .nth(1)
        .and_then(|t| t.split(['(', ')']).nth(1))
        .map(|r| r.split(", ").map(|x| x.split_whitespace().next().unwrap().parse().unwrap()).collect())
        .unwrap();
    assert!((rates[1] / rates[0] - 12.0 / 192.0).abs() < 1e-3, "{rates:?}\n{out}");
    // `tokenizer encode` without --tokenizer uses the bundled demo tokenizer too, at its 64×64 unless
    // --resolution says otherwise: the same first 2 latent frames.
    let encoded = dir.join("encoded.npy");
    let encode = |extra: &[&str]| {
        let base = ["tokenizer", "encode", "assets/demo/shapes.mp4", "--frames", "5", "-o", encoded.to_str().unwrap()];
        let o = run(&[&base[..], extra].concat());
        let out = text(&o);
        assert!(o.status.success() && out.contains("loaded tokenizer assets/demo/tokenizer.safetensors"), "{out}");
        nbp_core::npy::read_npy(&encoded).unwrap()
    };
    let given = encode(&[]);
    assert_eq!(given.shape, vec![1, 2, 8, 8]);
    let next = nbp_core::npy::read_npy(&ids2).unwrap().to_i64().unwrap();
    assert_eq!(next[..128], given.to_i64().unwrap()[..]);
    // Named with --tokenizer, a checkpoint is read at the size its file records (the trainer writes it: 64×64
    // for the bundled one); the official 128×128 is the default only for files that do not say.
    assert_eq!(encode(&["--tokenizer", "assets/demo/tokenizer.safetensors"]).shape, vec![1, 2, 8, 8]);
    assert_eq!(encode(&["--resolution", "32"]).shape, vec![1, 2, 4, 4]);
    std::fs::remove_dir_all(&dir).ok();
}

/// A GPU backend that cannot start on this machine (no Vulkan driver visible; no CUDA driver) is a clear error
/// that names the device and the fix, not a panic from Burn's device thread.
#[test]
fn a_gpu_device_that_cannot_start_is_a_clear_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_nbp-cli"))
        .args(["sample", "--device", "wgpu", "--no-decode", "--num-samples", "1", "--save-tokens", &unused_ids()])
        .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
        .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(!out.contains("panicked"), "{out}");
    assert!(
        out.contains("--device wgpu could not start") && out.contains("apt-get install mesa-vulkan-drivers")
            || out.contains("built without the `wgpu` feature"),
        "{out}"
    );

    // CUDA: on a machine with an NVIDIA driver the command runs; anywhere else it says what is missing.
    let o = cli(&["sample", "--device", "cuda", "--no-decode", "--num-samples", "1", "--save-tokens", &unused_ids()]);
    let out = text(&o);
    assert!(!out.contains("panicked"), "{out}");
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(
            out.contains("--device cuda could not start") && out.contains("or use --device flex")
                || out.contains("built without the `cuda` feature"),
            "{out}"
        );
    }
}

/// A model with a tensor larger than the largest buffer the wgpu adapter can bind (Mesa's software driver: 128
/// MiB; here a 1.1M-token embedding of 32-wide rows, 141 MB) is a clear error, not a panic from the device
/// thread. An adapter that can bind it runs the benchmark instead.
#[cfg(feature = "wgpu")]
#[test]
fn a_tensor_larger_than_the_wgpu_adapter_can_bind_is_a_clear_error() {
    let o = cli(&[
        "bench", "sample", "--device", "wgpu", "--preset", "tiny", "--vocab", "1100000", "--prefix", "16", "--tokens",
        "16",
    ]);
    let out = text(&o);
    assert!(!out.contains("panicked"), "{out}");
    if !o.status.success() {
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("--device wgpu failed while working"), "{out}");
        assert!(out.contains("larger than the largest buffer this wgpu adapter can allocate or bind"), "{out}");
    }
}

/// Out-of-range sampling flags are refused before any model is loaded, with the flag and its range named.
#[test]
fn sampling_flags_out_of_range_are_clear_errors() {
    for (flag, value, expected) in [
        ("--num-samples", "0", "--num-samples must be at least 1"),
        ("--temperature", "-1", "--temperature must be a positive number of at least 1e-6, got -1"),
        ("--temperature", "0", "--temperature must be a positive number of at least 1e-6, got 0"),
        // Divided by this, f32 logits overflow into infinities and NaN (1e-6 is already greedy in effect).
        ("--temperature", "1e-39", "--temperature must be a positive number of at least 1e-6, got 0.000000000000000"),
        ("--top-p", "2", "--top-p must be in (0, 1], got 2"),
        ("--top-p", "0", "--top-p must be in (0, 1], got 0"),
        ("--cfg-scale", "-3", "--cfg-scale must be 0 (off) or positive, at most 10000, got -3"),
        ("--cfg-scale", "1e39", "--cfg-scale must be 0 (off) or positive, at most 10000, got 1000000000000000"),
        ("--out", "clips.xyz", "clips.xyz: unknown video extension '.xyz'"),
        (
            "--save-tokens",
            "ids.txt",
            "ids.txt: token ids are written as a NumPy array: give --save-tokens a name ending in .npy",
        ),
    ] {
        // --out is only checked when the clips are decoded.
        let decode = if flag == "--out" { "--num-samples=1" } else { "--no-decode" };
        let o = cli(&["sample", flag, value, decode]);
        let out = text(&o);
        assert_eq!(o.status.code(), Some(1), "{flag} {value}: {out}");
        assert!(out.contains(expected) && !out.contains("loaded generator"), "{flag} {value}: {out}");
    }
    // Flags that would do nothing with the others given are refused by the parser (exit code 2), and a negative
    // number reaches the flag's own check.
    for (args, expected) in [
        (&["--condition-frames", "9"][..], "required arguments were not provided:\n  --condition-video"),
        (&["--condition-fps", "16"], "--condition-video"),
        (&["--cfg-growing"], "--cfg-scale"),
        (&["--greedy", "--top-k", "5"], "the argument '--greedy' cannot be used with '--top-k <TOP_K>'"),
        (&["--seed", "-1"], "invalid value '-1' for '--seed <SEED>'"),
        (&["--condition-video", "x.mp4", "--condition-fps", "-8"], "'-8' is not a frame rate"),
    ] {
        let o = cli(&[&["sample", "--no-decode"], args].concat());
        let out = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {out}");
        assert!(out.contains(expected), "{args:?}: {out}");
    }
}

/// `bench sample` runs its schedule (here 2 NBP steps of 16 tokens after a 32-token prefix) and refuses
/// empty work with a clear error instead of a tensor panic.
#[test]
fn bench_sample_counts_its_steps_and_refuses_empty_work() {
    let o = cli(&["bench", "sample", "--preset", "tiny", "--block", "16", "--prefix", "32", "--tokens", "32"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("block 16, prefix 32, 32 new tokens x 1") && out.contains("2 steps in "), "{out}");
    assert!(
        out.contains("of which the prefill of 32 tokens with the first step ") && out.contains("then 1 more step of "),
        "{out}"
    );
    let o = cli(&["bench", "sample", "--preset", "tiny", "--tokens", "0"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("--tokens, --batch, --vocab and --tokens-per-frame must be at least 1"), "{out}");
    // --versus times a second block size on the same weights and prints the ratio of the two times.
    let o = cli(&[
        "bench", "sample", "--preset", "tiny", "--block", "16", "--versus", "1", "--prefix", "32", "--tokens", "32",
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    // A time and half its last printed digit, in seconds: "0.12 s" or, under 0.1 s, "7.88 ms".
    let secs = |prefix: &str| -> (f64, f64) {
        let line = out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in {out}"));
        let (value, unit) = line[prefix.len()..].split(':').next().unwrap().split_once(' ').unwrap();
        let scale = match unit {
            "s" => 1.0,
            "ms" => 1e-3,
            u => panic!("unit {u:?} in {line}"),
        };
        (value.parse::<f64>().unwrap() * scale, 0.005 * scale)
    };
    let ((nbp, dn), (ntp, dt)) = (secs("block 16: 2 steps in "), secs("block 1: 32 steps in "));
    let line = out.lines().find(|l| l.starts_with("block 16 is ")).unwrap_or_else(|| panic!("{out}"));
    let ratio: f64 = line["block 16 is ".len()..].split('x').next().unwrap().parse().unwrap();
    let (lo, hi) = ((ntp - dt) / (nbp + dn), (ntp + dt) / (nbp - dn));
    assert!(ratio >= lo - 0.01 && ratio <= hi + 0.01, "{ratio} from {ntp} / {nbp}: {out}");
    assert!(line.ends_with("as fast as block 1 on the same weights"), "{line}");
    assert!(out.contains("untimed warm-up: the prefill and first step of block 16 took "), "{out}");
    // The steps alone, without the prefill and first step: their two rates and the ratio of those.
    let later =
        out.lines().find(|l| l.starts_with("after the prefill and first step: ")).unwrap_or_else(|| panic!("{out}"));
    let number = |after: &str| -> f64 {
        let rest = &later[later.find(after).unwrap_or_else(|| panic!("no {after:?} in {later}")) + after.len()..];
        rest.split([' ', 'x']).next().unwrap().parse().unwrap()
    };
    let (a, b, r) = (number("block 16 draws "), number("block 1 "), number("tokens/s ("));
    assert!(a > 0.0 && b > 0.0 && (r - a / b).abs() <= 0.01 + 0.06 * r / a.min(b), "{later}");
    assert!(later.ends_with("x, the steps alone)"), "{later}");
    let o = cli(&["bench", "sample", "--preset", "tiny", "--versus", "3", "--prefix", "32", "--tokens", "32"]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("--prefix must be a positive multiple of --versus (3), got 32"), "{out}");
    // The hybrid start of the UCF model: 8 condition ids and BOV, the first block token by token, then blocks.
    let o = cli(&["bench", "sample", "--preset", "tiny", "--hybrid", "--tokens", "64", "--versus", "1"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(
            "block 16 with the hybrid start (8 condition tokens and BOV, vocabulary 96016), prefix 0, 64 new tokens"
        ),
        "{out}"
    );
    // 16 steps of one token, then 3 blocks of 16; NTP from the same [condition | BOV]: 64 steps.
    assert!(out.contains("block 16: 19 steps in ") && out.contains("block 1: 64 steps in "), "{out}");
    assert!(out.contains("block 16: of which the prefill of 9 tokens with the first step "), "{out}");
    // The tokenizer benchmark says what its runs include, and lists them in one unit.
    let o = cli(&["bench", "tokenizer", "--preset", "tiny", "--frames", "5", "--resolution", "16"]);
    assert!(
        o.status.success() && text(&o).contains("one timed run, which includes the process's first use"),
        "{}",
        text(&o)
    );
    let o = cli(&["bench", "tokenizer", "--preset", "tiny", "--frames", "5", "--resolution", "16", "--repeats", "2"]);
    let tok = text(&o);
    assert!(o.status.success() && tok.contains("fastest of 2 timed runs after 0 warm-up runs"), "{tok}");
    let encode = tok.lines().find(|l| l.starts_with("encode: ")).unwrap_or_else(|| panic!("{tok}"));
    let runs = encode.split("runs: ").nth(1).unwrap();
    assert!(runs.split(", ").count() == 2 && (runs.ends_with(" ms") || runs.ends_with(" s")), "{encode}");
    // 1280 tokens from nothing are 5 latent frames, 17 pixel frames, as `sample` counts them.
    let line = out.lines().find(|l| l.starts_with("block 1: 64 steps in ")).unwrap_or_else(|| panic!("{out}"));
    let rate = |unit: &str| -> f64 {
        let before = &line[..line.find(unit).unwrap_or_else(|| panic!("{line}"))];
        before.trim().rsplit([' ', ':']).next().unwrap().parse().unwrap()
    };
    let (tokens_per_s, frames_per_s) = (rate(" tokens/s"), rate(" frames/s"));
    assert!((frames_per_s / tokens_per_s - 0.25 / 64.0).abs() < 1e-3 * frames_per_s / tokens_per_s, "{line}");
}

/// A tokenizer given where a generator is expected (and the other way round) is named for what it is.
#[test]
fn swapped_model_files_are_named_for_what_they_are() {
    let tok = nbp_core::workspace::workspace_path("assets/demo/tokenizer.safetensors").display().to_string();
    let gen_ = nbp_core::workspace::workspace_path("assets/demo/generator.safetensors").display().to_string();
    let o = cli(&["sample", "--generator", &tok, "--no-decode", "--save-tokens", &unused_ids()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("is not an nbp generator file: it is a tokenizer (pass it as --tokenizer)"), "{out}");
    // The same for an official tokenizer checkpoint.
    let pt = nbp_core::workspace::workspace_path("tests/fixtures/tokenizer/tiny_magvit2.pt").display().to_string();
    let o = cli(&["generator", "info", &pt]);
    let out = text(&o);
    assert!(
        out.contains(
            "not an official generator checkpoint (it holds a tokenizer's encoder and decoder: pass it as --tokenizer)"
        ),
        "{out}"
    );
    let dir = workdir("swapped");
    let ids = dir.join("ids.npy");
    let clip = nbp_core::workspace::workspace_path("assets/demo/shapes.mp4").display().to_string();
    let o = cli(&["tokenizer", "encode", &clip, "--tokenizer", &gen_, "-o", ids.to_str().unwrap()]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("is not an nbp tokenizer file: it is a generator (pass it as --generator)"), "{out}");
    // A training run's folder instead of the file it wrote.
    let folder = dir.display().to_string();
    let o = cli(&["sample", "--generator", &folder, "--no-decode", "--save-tokens", &unused_ids()]);
    let out = text(&o);
    assert!(out.contains("is a folder: give the model file (a training run writes generator.safetensors"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--precision bf16` samples with bfloat16 linear weights: on the bundled demo model its greedy ids agree with
/// the f32 ones (rounding moves the logits by about 1 %, which changes an id only at near-ties), and an unknown
/// format is refused by name.
#[test]
fn bf16_weights_sample_the_same_greedy_clips_as_f32() {
    let dir = workdir("bf16-sample");
    let root = nbp_core::workspace::workspace_path(".");
    let greedy = |precision: &str| {
        let ids = dir.join(format!("{precision}.npy"));
        let o = Command::new(env!("CARGO_BIN_EXE_nbp-cli"))
            .args(["sample", "--greedy", "--no-decode", "--precision", precision, "--save-tokens"])
            .arg(&ids)
            .current_dir(&root)
            .output()
            .expect("run nbp-cli");
        let out = text(&o);
        assert!(o.status.success() && out.contains(&format!("{precision} linear weights")), "{out}");
        // bf16 on a CPU without its kernels is slow, and the command says so.
        let slow = precision == "bf16" && !nbp_kernels::bf16_available();
        assert_eq!(out.contains("has no AVX-512 (F and BW)"), slow, "{out}");
        nbp_core::npy::read_npy(&ids).unwrap().to_i64().unwrap()
    };
    let (f32_ids, bf16_ids) = (greedy("f32"), greedy("bf16"));
    assert_eq!(f32_ids.len(), 8 * 320);
    let same = f32_ids.iter().zip(&bf16_ids).filter(|(a, b)| a == b).count();
    // Measured with the bundled generator: 2156 of 2560 (84 %; each clip differs in 6 to 186 of its 320 ids,
    // from the first near-tie that tips the other way) on AMX, 2429 (95 %) with AVX512-BF16 on a Zen 5. This
    // checks the flag end to end; the bf16 logits themselves are compared with f32 in tests/kv_cache.rs.
    assert!(same as f64 >= 0.75 * f32_ids.len() as f64, "{same} of {} ids agree", f32_ids.len());
    let o = cli(&["sample", "--precision", "f16", "--no-decode"]);
    assert!(text(&o).contains("precision 'f16': expected f32 or bf16"), "{}", text(&o));
    let o = cli(&["sample", "--precision", "bf16", "--device", "wgpu", "--no-decode"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("--precision bf16 does not run on --device wgpu: WebGPU shaders have no bfloat16"));
    let o = cli(&["bench", "sample", "--preset", "tiny", "--prefix", "32", "--tokens", "32", "--precision", "bf16"]);
    assert!(o.status.success() && text(&o).contains("bf16 linear weights"), "{}", text(&o));
    std::fs::remove_dir_all(&dir).ok();
}

/// Mistakes a user can make with `sample`, `tokenizer`, `train` and `dataset` are refused with a message that
/// names the input and the fix, before any model runs, and never with a panic.
#[test]
fn user_mistakes_are_named_before_the_work_starts() {
    let dir = workdir("mistakes");
    let root = nbp_core::workspace::workspace_path(".");
    let path = |name: &str| dir.join(name).display().to_string();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_nbp-cli")).args(args).current_dir(&root).output().unwrap();
        let out = text(&o);
        assert!(!out.contains("panicked"), "{args:?}\n{out}");
        (o.status.code(), out)
    };
    let refused = |args: &[&str], needles: &[&str]| {
        let (code, out) = run(args);
        assert!(code == Some(1) || code == Some(2), "should fail: {args:?}\n{out}");
        for n in needles {
            assert!(out.contains(n), "missing '{n}' for {args:?} in:\n{out}");
        }
        assert!(!out.contains("generator: "), "{args:?} generated before refusing:\n{out}");
    };
    let ids = |name: &str, shape: Vec<usize>| {
        let n = shape.iter().product();
        nbp_core::npy::write_npy(dir.join(name), &nbp_core::npy::NpyArray::i32(shape, vec![3; n])).unwrap();
        path(name)
    };
    refused(&["sample", "--no-decode"], &["--no-decode stops at token ids", "--save-tokens"]);
    refused(
        &["tokenize-dataset", "--dataset", "moving-shapes:3", "-o", &path("tokens.npy")],
        &["tokens.npy: a token cache is a safetensors file: give --out a name ending in .safetensors"],
    );
    let cache = path("tokens.safetensors");
    refused(
        &["tokenize-dataset", "--dataset", "moving-shapes:3", "--clips-per-video", "2", "-o", &cache],
        &["moving-shapes clips have no video to take more clips from", "--dataset moving-shapes:4000"],
    );
    refused(
        &["tokenize-dataset", "--dataset", "folder:assets/demo", "--clips-per-video", "2", "--center", "-o", &cache],
        &["--clips-per-video 2 with --clip center: a video has one centre clip"],
    );
    refused(
        &[
            "tokenize-dataset",
            "--dataset",
            "folder:assets/demo",
            "--clips-per-video",
            "2",
            "--clip",
            "center",
            "-o",
            &cache,
        ],
        &["--clips-per-video 2 with --clip center: a video has one centre clip"],
    );
    refused(
        &["tokenize-dataset", "--dataset", "folder:assets/demo", "--clips-per-video", "0", "-o", &cache],
        &["--clips-per-video 0: give 1 to 1000"],
    );
    // The bundled model's latent grid is 5x8x8: a prefix is whole 8x8 frames of a clip, fewer than 5.
    for (name, shape) in [("flat", vec![16, 8]), ("empty", vec![1, 0, 8, 8])] {
        let p = ids(&format!("{name}.npy"), shape);
        refused(
            &["sample", "--prefix-tokens", &p],
            &[&format!("{name}.npy"), "[T', 8, 8] (one clip) or [N, T', 8, 8]"],
        );
    }
    let whole = ids("whole.npy", vec![5, 8, 8]);
    refused(
        &["sample", "--prefix-tokens", &whole],
        &["leave nothing to generate in a latent grid of 5 frames: keep fewer with --prefix-frames (1 to 4"],
    );
    let two = ids("two.npy", vec![2, 5, 8, 8]);
    refused(&["sample", "--prefix-tokens", &two, "--prefix-clip", "2"], &["holds 2 clips: --prefix-clip takes 0 to 1"]);
    refused(&["sample", "--prefix-tokens", &two, "--prefix-frames", "6"], &["--prefix-frames takes 1 to 5"]);
    refused(&["sample", "--prefix-frames", "2"], &["--prefix-tokens"]);
    refused(
        &["sample", "--condition-video", "assets/demo/shapes.mp4", "--condition-frames", "21"],
        &["--condition-frames 21 is 6 latent frames", "latent grid of 5 frames: give at most 13"],
    );
    // Ids beyond the bundled model's 625 codes, named with the file.
    let mut codes = vec![3; 64];
    codes[10] = 700;
    nbp_core::npy::write_npy(dir.join("beyond.npy"), &nbp_core::npy::NpyArray::i32(vec![1, 8, 8], codes)).unwrap();
    refused(
        &["sample", "--prefix-tokens", &path("beyond.npy")],
        &["beyond.npy: prefix token 700 is not a code of the generator's codebook (0 to 624;"],
    );
    let empty = ids("empty-decode.npy", vec![1, 0, 8, 8]);
    refused(&["tokenizer", "decode", &empty, "-o", &path("x.gif")], &["empty-decode.npy", "is empty"]);
    refused(&["sample", "--fps", "0"], &["'0' is not a frame rate"]);
    refused(&["sample", "--fps", "1e-300"], &["'1e-300' is not a frame rate: give 0.01 to 1000 frames per second"]);
    refused(&["tokenizer", "encode", "assets/demo/shapes.mp4", "--fps", "nan"], &["'nan' is not a frame rate"]);
    std::fs::write(dir.join("file"), "not a folder").unwrap();
    refused(&["sample", "--out", &path("file/clips.gif")], &["is a file, not a folder"]);
    // Refused before the clip is read and encoded, not when the result is written.
    for args in [
        &["tokenizer", "encode", "assets/demo/shapes.mp4", "-o", &path("file/ids.npy")][..],
        &["tokenizer", "reconstruct", "assets/demo/shapes.mp4", "-o", &path("file/r.gif")],
        &["dataset", "moving-shapes", "-o", &path("file/shapes.gif")],
    ] {
        let (code, out) = run(args);
        let early = out.contains("is a file, not a folder") && !out.contains("loaded tokenizer");
        assert!(code == Some(1) && early, "{args:?}:\n{out}");
    }
    let clip = "assets/demo/shapes.mp4";
    refused(&["sample", "--condition-video", clip, "--condition-frames", "4"], &["--condition-frames must be 1 + 4n"]);
    // A tokenizer with more codes (64 000) than the generator's (625) decodes them, with a warning (one with
    // fewer is refused before generating).
    let t = tiny();
    let (code, out) = run(&["sample", &t[0], &t[1], &t[2], &t[3], "--out", &path("mismatch.gif")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: ") && out.contains("has 64000 codes but the generator"), "{out}");
    assert!(out.contains("was trained on 625, so the decoded video will not show"), "{out}");
    // An nbp generator file holds no tokenizer.
    refused(
        &["sample", "--generator", "assets/demo/generator.safetensors"],
        &["the file does not say which tokenizer made its training tokens: pass --tokenizer"],
    );
    let (code, out) = run(&["tokenizer", "info", "--tokenizer-config", "tiny"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("warning: --tokenizer-config is ignored for assets/demo/tokenizer.safetensors"), "{out}");
    // The file can also be named as `generator info` names it.
    let (code, out) = run(&["tokenizer", "info", "assets/demo/tokenizer.safetensors"]);
    assert!(code == Some(0) && out.contains("parameters: 0.8 M\ncodebook: 625 codes"), "{out}");
    // A PyTorch tokenizer of another architecture than the official one: the error names the flag that reads it,
    // from the architecture the file records, or else from its weights' shapes.
    let pt = "tests/fixtures/tokenizer/tiny_magvit2.pt";
    refused(&["tokenizer", "info", pt], &["records the architecture of its weights", "pass --tokenizer-config tiny"]);
    refused(
        &["tokenizer", "info", "tests/fixtures/tokenizer/tiny_generator.ckpt"],
        &["made for a different configuration", "pass --tokenizer-config (small, tiny"],
    );
    let (code, out) = run(&["tokenizer", "info", pt, "--tokenizer-config", "tiny"]);
    assert!(code == Some(0) && out.contains("parameters: 0.2 M\ncodebook: 64000 codes"), "{out}");
    let arch = dir.join("arch.json");
    std::fs::write(
        &arch,
        r#"{"channels": [8, 16, 16, 16], "encoder_res_blocks": [1, 1, 1, 1], "decoder_res_blocks": [1, 1, 1, 1],
            "norm_groups": 4, "fsq_level": [5, 5, 5, 5]}"#,
    )
    .unwrap();
    refused(&["train-tokenizer", "--preset", arch.to_str().unwrap()], &["arch.json", "unknown field 'fsq_level'"]);
    refused(&["train", "--dropout", "1.5"], &["dropout must be in [0, 1), got 1.5"]);
    // Clip lengths the tokenizer cannot encode are named by their flag before any model is read.
    refused(
        &["eval-frame-prediction", "--given-frames", "3"],
        &["--given-frames 3: the tokenizer encodes clips of 1 + 4n frames (1, 5, 9, 13, 17, …): give 1 or 5"],
    );
    refused(
        &["tokenize-dataset", "--dataset", "moving-shapes:4", "--frames", "8", "-o", &path("t.safetensors")],
        &["--frames 8: the tokenizer", "give 5 or 9"],
    );
    refused(&["eval-frame-prediction", "--seed", "3"], &["--sample"]);
    // (--output names the run folder as on every other command.)
    refused(
        &["train", "--output", &path("run"), "--p-drop-cond", "1"],
        &["p_drop_cond must be in [0, 1) (at 1 no condition is ever seen)"],
    );
    refused(
        &["dataset", "moving-shapes", "--resolution", "16000", "--count", "100", "-o", &path("big.gif")],
        &["GB of memory"],
    );
    refused(
        &["dataset", "moving-shapes", "--resolution", "20000", "-o", &path("big.gif")],
        &["at most 16384 pixels a side"],
    );
    refused(&["sample", "--latent-grid", "0x8x8"], &["latent grid '0x8x8' must be written TxHxW"]);
    let official = gen_fixture("nbp_uncond.ckpt");
    let ids_out = path("ids.npy");
    for flag in ["--block-size", "--n-head"] {
        refused(
            &["sample", "--generator", &official, flag, "0", "--no-decode", "--save-tokens", &ids_out],
            &["nbp_uncond.ckpt", "both must be at least 1"],
        );
    }
    // Converting a converted file copies it (its architecture is its own).
    let (code, out) = run(&["tokenizer", "convert", "assets/demo/tokenizer.safetensors", &path("copy.safetensors")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("(nbp safetensors)"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `--resume` with only `--out` continues a run with the settings it saved, and a flag that would change the
/// architecture is refused by name instead of failing to load the checkpoint.
#[test]
fn resume_reads_the_run_config_and_refuses_another_architecture() {
    let dir = workdir("resume-arch");
    let root = nbp_core::workspace::workspace_path(".");
    let tokens = dir.join("tokens.safetensors").display().to_string();
    let out = dir.join("run").display().to_string();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_nbp-cli")).args(args).current_dir(&root).output().unwrap();
        (o.status.code(), text(&o))
    };
    let (code, text_) =
        run(&["tokenize-dataset", "--dataset", "moving-shapes-plain:8", "--frames", "5", "--out", &tokens]);
    assert_eq!(code, Some(0), "{text_}");
    assert!(text_.contains("at 64x64") && text_.contains("2×8×8 tokens each"), "{text_}");
    let base = ["train", "--tokens", &tokens, "--out", &out, "--preset", "tiny", "--valid-clips", "5"];
    let (code, text_) = run(&[&base[..], &["--steps", "1", "--batch-size", "2"]].concat());
    assert_eq!(code, Some(0), "{text_}");
    // The validation line shows the mean over the held-out clips (batches of 2, 2 and 1 here), as losses.csv
    // records it.
    let shown = text_.split("validation at step 1: Loss ").nth(1).and_then(|t| t.split_whitespace().next());
    let csv = std::fs::read_to_string(dir.join("run/losses.csv")).unwrap();
    let mean: f64 = csv.lines().find_map(|l| l.strip_prefix("1,validation loss,")).unwrap().parse().unwrap();
    assert_eq!(shown, Some(format!("{mean:.4}").as_str()), "{text_}\n{csv}");
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--preset", "small"]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(!text_.contains("panicked"), "{text_}");
    assert!(
        text_.contains("architecture.toml") && text_.contains("n_layer = 2 when the run started, 6 now"),
        "{text_}"
    );
    // Dropout is not architecture: it may change on resume.
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "2", "--dropout", "0"]);
    assert_eq!(code, Some(0), "{text_}");
    assert!(text_.contains("the run's settings from") && text_.contains("done after 2 of 2 steps"), "{text_}");
    // A second resume: the two latest checkpoints stay, the first session's among them removed.
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "3"]);
    assert_eq!(code, Some(0), "{text_}");
    let mut models: Vec<String> = std::fs::read_dir(dir.join("run/checkpoint"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("model-"))
        .collect();
    models.sort();
    assert_eq!(models, ["model-2.mpk", "model-3.mpk"]);
    // A damaged latest checkpoint (a crash or a full disk while it was written): the run resumes from the one
    // before, and says so.
    let model3 = dir.join("run/checkpoint/model-3.mpk");
    let bytes = std::fs::read(&model3).unwrap();
    std::fs::write(&model3, &bytes[..bytes.len() / 2]).unwrap();
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "4"]);
    assert_eq!(code, Some(0), "{text_}");
    assert!(text_.contains("checkpoint at step 3") && text_.contains("model-3.mpk: damaged or truncated"), "{text_}");
    assert!(text_.contains("resuming from the checkpoint at step 2") && text_.contains("done after 4 of 4"), "{text_}");
    // What the checkpoints learnt from cannot change on resume: here the block shape the tokens are ordered by.
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "5", "--block-shape", "1x2x4"]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("data.toml: records what the run's checkpoints were trained with"), "{text_}");
    assert!(
        text_.contains("block_shape = \"1x1x8\" when the run started, \"1x2x4\" now (set by --block-shape)"),
        "{text_}"
    );
    // Nor can the clips: another cache of the same data and classes, or another --valid-clips, would move clips
    // between training and validation.
    let more = dir.join("more.safetensors").display().to_string();
    let (code, text_) =
        run(&["tokenize-dataset", "--dataset", "moving-shapes-plain:9", "--frames", "5", "--out", &more]);
    assert_eq!(code, Some(0), "{text_}");
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "5", "--tokens", &more]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("clips = 8 when the run started, 9 now (set by the --tokens cache)"), "{text_}");
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "5", "--valid-clips", "3"]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(
        text_.contains("valid_clips = 5 when the run started, 3 now (the clips held out: set by --valid-clips)"),
        "{text_}"
    );
    // A --steps below the steps done is refused (it would train nothing and report nonsense).
    let (code, text_) = run(&["train", "--out", &out, "--resume", "--steps", "1"]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("has done 4 steps, more than --steps 1"), "{text_}");
    // A mistyped run folder is not a new run.
    let nope = dir.join("nope").display().to_string();
    let (code, text_) = run(&["train", "--out", &nope, "--resume"]);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("nope") && text_.contains("no such run folder"), "{text_}");
    // The block shape is recorded in the generator file, and sampling and evaluation use it: blocks of 1x4x4
    // (16 tokens) do not fit the rows of 8 that were the default before.
    let square = dir.join("square").display().to_string();
    let (code, text_) =
        run(&["train", "--tokens", &tokens, "--out", &square, "--preset", "tiny", "--valid-clips", "2"]
            .iter()
            .copied()
            .chain(["--steps", "1", "--batch-size", "2", "--block-shape", "1x4x4"])
            .collect::<Vec<_>>());
    assert_eq!(code, Some(0), "{text_}");
    let model = format!("{square}/generator.safetensors");
    let ids = dir.join("square.npy").display().to_string();
    let (code, text_) = run(&["sample", "--generator", &model, "--no-decode", "--save-tokens", &ids, "--class", "0"]);
    assert_eq!(code, Some(0), "{text_}");
    assert!(text_.contains("1 clip (") && text_.contains("128 tokens"), "{text_}");
    // The clip size comes from the latent grid the generator records (5 frames), and with it one given frame.
    let (code, text_) = run(&["eval-frame-prediction", "--generator", &model, "--clips", "1"]);
    assert_eq!(code, Some(0), "{text_}");
    assert!(text_.contains("frame prediction on 1 clip (1 given frames, greedy)"), "{text_}");
    // And the clips come from the data it was trained on, which the file records.
    assert!(text_.contains("dataset moving-shapes-plain:8 (the one the generator was trained on"), "{text_}");
    assert!(text_.contains("clips: moving shapes (plain backgrounds): 8 clips"), "{text_}");
    let (code, text_) = run(&["generator", "info", &model]);
    assert!(code == Some(0) && text_.contains("trained on moving-shapes-plain:8\n"), "{text_}");
    // Clips are conditioned on their class found by name: a class the generator never saw is an error, not
    // whichever class happens to have the same index.
    let eval_on = |folder: &Path| {
        let spec = format!("folder:{}", folder.display());
        let args = ["--dataset", &spec, "--clips", "1", "--frames", "5", "--given-frames", "1"];
        run(&[&["eval-frame-prediction", "--generator", &model][..], &args].concat())
    };
    let other = dir.join("other");
    make_video(&workdir_in(&other, "zzz"));
    let (code, text_) = eval_on(&other);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("class 'zzz' is not one of the"), "{text_}");
    // A video shorter than the clip would be scored against black padding: it is skipped, and said so.
    let short = dir.join("short");
    let st = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=duration=0.1:size=64x64:rate=30"])
        .arg(workdir_in(&short, "circle-bounce").join("brief.mp4"))
        .status()
        .unwrap();
    assert!(st.success());
    let (code, text_) = eval_on(&short);
    assert_eq!(code, Some(1), "{text_}");
    assert!(text_.contains("could be read whole: its one video is shorter than 5 frames"), "{text_}");
    std::fs::remove_dir_all(&dir).ok();
}

/// The folder `name` inside `dir`, created.
fn workdir_in(dir: &Path, name: &str) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sampling_in_another_layout_than_trained_is_warned_about() {
    let ids = unused_ids();
    let warned = |args: &[&str]| {
        let o = cli(&[&["sample", "--class", "ring-orbit", "--no-decode", "--save-tokens", &ids], args].concat());
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
            .lines()
            .filter(|l| l.starts_with("warning: the model was trained"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    // The bundled model records rows of 8 on a 5x8x8 grid.
    let w = warned(&["--block-shape", "1x2x4"]);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("trained with blocks of 1x1x8: blocks of 1x2x4"), "{w:?}");
    let w = warned(&["--latent-grid", "5x4x16", "--block-shape", "1x1x8"]);
    assert!(w.iter().any(|l| l.contains("latent frames of 8x8 tokens: on 4x16")), "{w:?}");
    // Fewer latent frames, or the recorded shape spelt out: no warning.
    assert!(warned(&["--latent-grid", "3x8x8", "--block-shape", "1x1x8"]).is_empty());
    std::fs::remove_file(&ids).ok();
}

/// A generator names the tokenizer its tokens were made with by path; a file at that path that was retrained or
/// replaced since is noticed by its fingerprint.
#[test]
fn a_replaced_tokenizer_is_noticed() {
    let dir = workdir("tokenizer-fingerprint");
    let tok = dir.join("tok.safetensors");
    std::fs::copy(nbp_core::workspace::workspace_path("assets/demo/tokenizer.safetensors"), &tok).unwrap();
    let p = |name: &str| dir.join(name).display().to_string();
    let ok = |args: &[&str]| {
        let o = cli(args);
        assert!(o.status.success(), "{args:?}\n{}", text(&o));
        text(&o)
    };
    let (tok_path, tokens, run) = (p("tok.safetensors"), p("t.safetensors"), p("run"));
    let cache = ["--dataset", "moving-shapes-plain:6", "--frames", "5", "--tokenizer", &tok_path, "--out", &tokens];
    ok(&[&["tokenize-dataset"][..], &cache].concat());
    let train = ["--preset", "tiny", "--steps", "1", "--batch-size", "2", "--valid-clips", "2", "--out", &run];
    ok(&[&["train", "--tokens", &tokens][..], &train].concat());
    let gen_ = dir.join("run/generator.safetensors").display().to_string();
    let sample = || ok(&["sample", "--generator", &gen_, "--class", "circle-bounce", "--out", &p("a.gif")]);
    assert!(!sample().contains("changed since"));
    // Flip the lowest bit of one weight in the middle of the file (a sampled block of the fingerprint).
    let mut bytes = std::fs::read(&tok).unwrap();
    let data = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mid = (bytes.len() - 4096) * 7 / 15 + 100;
    bytes[data + (mid - data) / 4 * 4] ^= 1;
    std::fs::write(&tok, &bytes).unwrap();
    assert!(sample().contains("changed since the generator's training tokens were made with it"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `generator info` prints what a checkpoint holds: the bundled demo's layout and recorded training facts, and an
/// official-layout fixture's vocabulary.
#[test]
fn generator_info_describes_a_checkpoint() {
    let o = cli(&[
        "generator",
        "info",
        &nbp_core::workspace::workspace_path("assets/demo/generator.safetensors").display().to_string(),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("condition: a class label, 1 token of 16 classes"), "{out}");
    assert!(out.contains("vocabulary: BOV 0, middle-bos 1–7, condition ids from 8, video codes from 24 (625 codes)"));
    assert!(
        out.contains("classes (16): circle-bounce, circle-orbit") && out.contains("latent grids of 5x8x8"),
        "{out}"
    );
    let o = cli(&["generator", "info", &gen_fixture("nbp_uncond.ckpt")]);
    assert!(o.status.success() && text(&o).contains("vocabulary: video codes from 0 (64 codes)"), "{}", text(&o));
    let o = cli(&["generator", "info", "no-such.ckpt"]);
    assert!(!o.status.success() && text(&o).contains("no-such.ckpt") && !text(&o).contains("panicked"));
}

/// `eval-tokenizer` scores the bundled demo tokenizer on held-out clips, also as the official tokenizer_eval.py
/// does (measured: PSNR 20.32 dB over 4 clips, see assets/README.md).
#[test]
fn eval_tokenizer_scores_the_demo_tokenizer() {
    let o = cli(&["eval-tokenizer", "--clips", "2"]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    let line = out.lines().find(|l| l.starts_with("reconstruction of 2 clips: PSNR ")).expect(&out);
    let psnr: f64 = line["reconstruction of 2 clips: PSNR ".len()..].split(' ').next().unwrap().parse().unwrap();
    assert!((19.0..23.0).contains(&psnr), "{out}");
    assert!(
        out.contains("as the official tokenizer_eval.py: PSNR ") && out.contains("over frames 0–15; on frame 5: L1")
    );
    assert!(out.contains("the centre of each of the last videos"), "{out}");
    let o = cli(&["eval-tokenizer", "--clips", "1", "--frames", "5", "--random-start"]);
    assert!(o.status.success() && text(&o).contains("a random start of each of the last videos"), "{}", text(&o));
    let o = cli(&["eval-tokenizer", "--clips", "0"]);
    assert!(!o.status.success() && text(&o).contains("--clips and --batch must be at least 1"));
}

/// Mistakes about outputs and flags that make no sense together are named before any model is loaded, so that
/// no run is lost at its end; overriding what an official checkpoint records is warned about.
#[test]
fn outputs_and_flag_combinations_are_checked_before_the_work() {
    let dir = workdir("early-checks");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    std::fs::create_dir_all(dir.join("folder.npy")).unwrap();
    std::fs::write(dir.join("plain"), "x").unwrap();
    let fails = |args: &[&str], expected: &str| {
        let o = cli(args);
        let out = text(&o);
        assert!(!o.status.success() && out.contains(expected), "{args:?}: {out}");
        assert!(!out.contains("panicked") && !out.contains("loaded generator"), "{args:?}: {out}");
    };
    fails(&["sample", "--no-decode", "--save-tokens", &p("folder.npy")], "folder.npy: is a folder: give a file name");
    fails(&["sample", "--out", &p("plain")], "plain: is a file, and a name without extension writes a folder");
    fails(&["sample", "--out", "/proc/nbp-sample.gif"], "/proc/nbp-sample.gif: cannot write into the folder /proc");
    fails(&["sample", "--no-decode", "--save-tokens", &p("t.npy"), "--out", &p("s.gif")], "cannot be used with");
    fails(&["sample", "--cfg-scale", "0", "--cfg-growing"], "give it --cfg-scale above 0");
    fails(&["bench", "sample", "--preset", "tiny", "--block", "4", "--versus", "4"], "--versus 4 is --block itself");
    std::fs::create_dir_all(dir.join("conv.safetensors")).unwrap();
    fails(
        &["generator", "convert", &gen_fixture("nbp_uncond.ckpt"), &p("conv.safetensors")],
        "conv.safetensors: is a folder: give a file name",
    );

    // An unconditional model takes no class and no guidance, and says so (not that the class is unknown).
    let uncond = gen_fixture("nbp_uncond.ckpt");
    let tokens = ["--no-decode", "--save-tokens", &p("u.npy"), "--latent-grid", "3x4x4"];
    for (extra, expected) in [
        (&["--class", "foo"][..], "this model is unconditional (frame prediction): it takes no --class"),
        (&["--cfg-scale", "2"], "is unconditional (frame prediction): leave out --cfg-scale"),
    ] {
        let o = cli(&[&["sample", "--generator", &uncond][..], &tokens, extra].concat());
        let out = text(&o);
        assert!(!o.status.success() && out.contains(expected), "{extra:?}: {out}");
        assert!(!out.contains("random null-condition embedding"), "{out}");
    }

    // A flag that differs from what an official checkpoint records still overrides it, with a warning; a block
    // longer than the model's positions is an error.
    let o = cli(&["generator", "info", &uncond, "--block-size", "2"]);
    let out = text(&o);
    assert!(o.status.success() && out.contains("--block-size 2 overrides the block size 4 that its"), "{out}");
    let o = cli(&["generator", "info", &uncond, "--block-size", "1000"]);
    let out = text(&o);
    assert!(
        !o.status.success()
            && out.contains(
                "nbp_uncond.ckpt: is inconsistent: its block size 1000 must be 1 to the model's 128 positions"
            ),
        "{out}"
    );

    // A condition video shorter than the frames to continue from is refused, with the count that fits.
    let short = dir.join("short.mp4");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=8", "-frames:v", "3"])
        .arg(&short)
        .status();
    assert!(made.is_ok_and(|s| s.success()), "ffmpeg is needed for this test (apt-get install ffmpeg)");
    let o =
        cli(&["sample", "--condition-video", short.to_str().unwrap(), "--class", "ring-orbit", "--out", &p("c.gif")]);
    let out = text(&o);
    assert!(
        !o.status.success()
            && out.contains(
                "short.mp4: has only 3 frames at 8 frames/s, fewer than the 5 to continue from: give \
                             --condition-frames 1, or a lower --condition-fps"
            ),
        "{out}"
    );
    assert!(!dir.join("c.gif").exists());
    // At the native rate there is no lower rate to suggest.
    let o =
        cli(&["sample", "--condition-video", short.to_str().unwrap(), "--condition-fps", "0", "--out", &p("c.gif")]);
    let out = text(&o);
    assert!(
        out.contains("short.mp4: has only 3 frames, fewer than the 5 to continue from: give --condition-frames 1\n"),
        "{out}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
