//! Tokenizer training end to end on small moving-shapes clips (flex, tiny preset): the reconstruction loss
//! falls, the unrounded warm-up of the codes runs, the GAN phase runs with the adaptive weight, and an
//! interrupted run resumes exactly.

use std::path::PathBuf;

use burn::backend::{Autodiff, Flex};
use burn_train::Interrupter;
use nbp_train::schedule::ScheduleConfig;
use nbp_train::tokenizer_training::{TokenizerTrainConfig, train_tokenizer};

type B = Autodiff<Flex>;

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nbp-tok-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn config(out: PathBuf, steps: usize) -> TokenizerTrainConfig {
    TokenizerTrainConfig {
        dataset: "moving-shapes:64".into(),
        frames: 5,
        height: 16,
        width: 16,
        preset: "tiny".into(),
        fsq_levels: Some(vec![5, 5, 5]),
        out,
        steps,
        batch_size: 2,
        checkpoint_every: 10,
        valid_clips: 4,
        schedule: ScheduleConfig { lr: 3e-3, warmup_steps: 2, ..Default::default() },
        ..Default::default()
    }
}

fn mean(v: &[(usize, f64)]) -> f64 {
    v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64
}

#[test]
fn reconstruction_loss_falls_and_resume_is_exact() {
    let device = Default::default();
    let dir = temp("run");
    let full =
        train_tokenizer::<B>(&config(dir.join("full"), 40), false, &device, Interrupter::new(), &mut |_| {}).unwrap();
    assert_eq!(full.steps_done, 40);
    let (first, last) = (mean(&full.losses[..5]), mean(&full.losses[35..]));
    assert!(last < 0.7 * first, "reconstruction loss should fall: first 5 steps {first:.4}, last 5 {last:.4}");
    let v = full.validation.clone().unwrap();
    assert!(v.psnr > 10.0 && v.psnr.is_finite(), "{v:?}");
    assert!(v.codebook_usage > 0.0 && v.codebook_usage <= 1.0, "{v:?}");
    assert!(v.psnr_frame_mean > 5.0 && v.psnr_frame_mean < 40.0, "{v:?}");
    assert!(full.model_path.exists());
    // The exported tokenizer loads back and reproduces the validation numbers' codebook, and its file records
    // the clip size it was trained at (16×16; not a crop size: this run has none).
    let (loaded, _, trained) =
        nbp_tokenizer::load_tokenizer_with_resolution::<Flex>(&full.model_path, None, &device).unwrap();
    assert_eq!(loaded.codebook_size(), 125);
    assert_eq!(trained, Some((16, 16)));

    // Stopped after one step (as Ctrl-C does), then resumed: the same losses as the uninterrupted run.
    let cfg = config(dir.join("resumed"), 12);
    let stop = Interrupter::new();
    stop.stop(Some("test"));
    let part = train_tokenizer::<B>(&cfg, false, &device, stop, &mut |_| {}).unwrap();
    assert!(part.interrupted && part.steps_done == 1);
    let err = train_tokenizer::<B>(&cfg, false, &device, Interrupter::new(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let rest = train_tokenizer::<B>(&cfg, true, &device, Interrupter::new(), &mut |_| {}).unwrap();
    assert_eq!(rest.steps_done, 12);
    // --resume on a folder that does not exist is an error (a mistyped --out); on one without checkpoints it
    // starts a new run and says so.
    let mut lines = vec![];
    let straight = config(dir.join("straight"), 12);
    let err = train_tokenizer::<B>(&straight, true, &device, Interrupter::new(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("straight") && err.contains("no such run folder"), "{err}");
    std::fs::create_dir_all(&straight.out).unwrap();
    let uninterrupted =
        train_tokenizer::<B>(&straight, true, &device, Interrupter::new(), &mut |l| lines.push(l.to_string())).unwrap();
    let notice = format!("--resume: {} holds no checkpoint yet, so this is a new run", straight.out.display());
    assert!(lines.contains(&notice), "{lines:?}");
    assert_eq!(uninterrupted.steps_done, 12);
    assert_eq!(part.losses[0], uninterrupted.losses[0]);
    for ((s1, a), (s2, b)) in rest.losses.iter().zip(&uninterrupted.losses[1..]) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "step {s1}: resumed {a} vs uninterrupted {b}");
    }
    // Resumed once more at its last step: nothing to train, and the model is still exported.
    std::fs::remove_file(&rest.model_path).unwrap();
    let again = train_tokenizer::<B>(&cfg, true, &device, Interrupter::new(), &mut |_| {}).unwrap();
    assert_eq!(again.steps_done, 12);
    assert!(again.losses.is_empty() && again.model_path.exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_unquantized_warm_up_feeds_unrounded_codes_and_must_end_before_the_run() {
    let device = Default::default();
    let dir = temp("warm-up");
    let run = |cfg: &TokenizerTrainConfig| train_tokenizer::<B>(cfg, false, &device, Interrupter::new(), &mut |_| {});
    let rounded = run(&config(dir.join("rounded"), 2)).unwrap();
    let warm = run(&TokenizerTrainConfig { unquantized_steps: 1, ..config(dir.join("warm"), 2) }).unwrap();
    // The same weights and clip at step 1: only the codes the decoder reads differ.
    let (a, b) = (rounded.losses[0].1, warm.losses[0].1);
    assert!(a.is_finite() && b.is_finite() && (a - b).abs() > 1e-6, "step 1: rounded {a}, unrounded {b}");
    let err = run(&TokenizerTrainConfig { unquantized_steps: 2, ..config(dir.join("never"), 2) }).unwrap_err();
    assert!(err.to_string().contains("unquantized_steps (2) must be smaller than steps (2)"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_gan_phase_runs_with_an_adaptive_weight() {
    let device = Default::default();
    let dir = temp("gan");
    let mut lines = vec![];
    let too_deep = TokenizerTrainConfig { gan_start: Some(2), ..config(dir.clone(), 4) };
    let err = train_tokenizer::<B>(&too_deep, false, &device, Interrupter::new(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("at least 24×24"), "{err}");
    let absurd = TokenizerTrainConfig { gan_start: Some(2), disc_layers: 64, ..config(dir.clone(), 4) };
    let err = absurd.validate().unwrap_err().to_string();
    assert!(err.contains("needs 1 to 12 stride-2 layers (3 is usual), got 64"), "{err}");
    let nan_lr = TokenizerTrainConfig { gan_start: Some(2), disc_lr: Some(f64::NAN), ..config(dir.clone(), 4) };
    assert!(nan_lr.validate().unwrap_err().to_string().contains("disc_lr must be a positive number, got NaN"));
    let cfg = TokenizerTrainConfig { gan_start: Some(2), disc_layers: 1, disc_channels: 8, ..config(dir.clone(), 4) };
    let run =
        train_tokenizer::<B>(&cfg, false, &device, Interrupter::new(), &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(run.steps_done, 4);
    let log = std::fs::read_to_string(dir.join("train.log")).unwrap();
    let gan_lines: Vec<&str> = log.lines().filter(|l| l.contains(" g ") && l.contains(" d ")).collect();
    assert!(!gan_lines.is_empty(), "GAN losses are reported once the discriminator starts:\n{log}");
    // The adaptive weight is a finite positive number.
    let w: f64 = gan_lines[0].split("  w ").nth(1).unwrap().split_whitespace().next().unwrap().parse().unwrap();
    assert!(w.is_finite() && w > 0.0, "{w}");
    // losses.csv keeps the GAN losses of steps 3 and 4 (the discriminator starts after step 2) with the
    // adaptive weight (the logged one among them), and gan.svg draws them.
    let csv = std::fs::read_to_string(dir.join("losses.csv")).unwrap();
    let rows = |series: &str| -> Vec<(usize, f64)> {
        csv.lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f.get(1) == Some(&series)).then(|| (f[0].parse().unwrap(), f[2].parse().unwrap()))
            })
            .collect()
    };
    let steps = |series: &str| rows(series).iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(steps("generator GAN loss"), [3, 4], "{csv}");
    assert_eq!(steps("discriminator loss"), [3, 4], "{csv}");
    assert!(rows("adaptive GAN weight").iter().any(|r| (r.1 - w).abs() <= 1e-3 * w), "the logged {w}: {csv}");
    assert!(rows("discriminator loss").iter().all(|r| r.1.is_finite() && r.1 >= 0.0), "hinge losses are ≥ 0: {csv}");
    assert!(std::fs::read_to_string(dir.join("gan.svg")).unwrap().contains("discriminator loss"));
    // Discriminator checkpoints are written next to the tokenizer's.
    assert!(dir.join("checkpoint/disc-4.mpk").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fine_tuning_the_decoder_from_a_file_keeps_every_token_id() {
    let device = Default::default();
    let dir = temp("fine-tune");
    let run = |cfg: &TokenizerTrainConfig, resume: bool, lines: &mut Vec<String>| {
        train_tokenizer::<B>(cfg, resume, &device, Interrupter::new(), &mut |l| lines.push(l.to_string()))
    };
    let mut lines = vec![];
    let base = run(&config(dir.join("base"), 4), false, &mut lines).unwrap();
    let tuned_cfg = TokenizerTrainConfig {
        init_from: Some(base.model_path.clone()),
        freeze_encoder: true,
        gan_start: Some(0),
        disc_layers: 1,
        disc_channels: 8,
        ..config(dir.join("tuned"), 3)
    };
    let tuned = run(&tuned_cfg, false, &mut lines).unwrap();
    assert!(lines.contains(&format!("weights from {}", base.model_path.display())), "{lines:?}");

    use burn::prelude::*;
    let load = |p: &PathBuf| nbp_tokenizer::load_tokenizer::<Flex>(p, None, &device).unwrap().0;
    let (before, after) = (load(&base.model_path), load(&tuned.model_path));
    let clip = Tensor::<Flex, 5>::random([2, 3, 5, 16, 16], burn::tensor::Distribution::Uniform(0.0, 1.0), &device);
    let ids = before.encode(clip.clone()).unwrap();
    assert_eq!(ids.to_data(), after.encode(clip).unwrap().to_data(), "the frozen encoder gives the same token ids");
    // The decoder did learn: the same ids decode to different pixels.
    let diff = (before.decode(ids.clone()) - after.decode(ids)).abs().max().into_scalar();
    assert!(diff > 1e-4, "the decoder did not change ({diff})");

    // Freezing the encoder of an untrained tokenizer is refused; a file of another architecture too.
    let fresh = TokenizerTrainConfig { freeze_encoder: true, ..config(dir.join("fresh"), 2) };
    let err = run(&fresh, false, &mut lines).unwrap_err().to_string();
    assert!(err.contains("--init-from"), "{err}");
    let other = TokenizerTrainConfig {
        init_from: Some(base.model_path.clone()),
        fsq_levels: Some(vec![8, 5]),
        ..config(dir.join("other"), 2)
    };
    let err = run(&other, false, &mut lines).unwrap_err().to_string();
    assert!(err.contains("differs from the one requested"), "{err}");

    // A run resumed with the GAN switched on starts a fresh discriminator from its last checkpoint.
    let mut lines = vec![];
    let gan =
        TokenizerTrainConfig { gan_start: Some(4), disc_layers: 1, disc_channels: 8, ..config(dir.join("base"), 6) };
    let resumed = run(&gan, true, &mut lines).unwrap();
    assert!(lines.contains(&"no discriminator checkpoint at step 4: the discriminator starts fresh".to_string()));
    assert!(lines.contains(&"resumed from step 4".to_string()), "{lines:?}");
    assert_eq!((resumed.steps_done, resumed.losses.len()), (6, 2));
    std::fs::remove_dir_all(&dir).ok();
}
