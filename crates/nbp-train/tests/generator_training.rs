//! Generator training end to end on a tiny token cache (flex): the loss falls, and a run stopped by its
//! interrupter and resumed reproduces the uninterrupted run's losses exactly.

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, Flex};
use burn_train::Interrupter;
use nbp_train::generator_training::{GeneratorTrainConfig, initial_model, setup, train_generator};
use nbp_train::position_init::grid_position_embedding;
use nbp_train::schedule::ScheduleConfig;
use nbp_train::token_cache::{TokenCache, TokenCacheInfo};

type B = Autodiff<Flex>;

/// Flex draws random weights from one seeded generator per process: tests that create models take turns, so
/// that the seeded run below sees the same numbers every time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nbp-gen-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// 48 clips of a 2×2×4 grid whose tokens follow the class: token i of class c is (3c + i + shift) mod 16 where
/// the shift is the clip's first token (so the first block is free and the rest follows from it).
fn cache(dir: &Path) -> PathBuf {
    cache_of(dir, (0..4).map(|c| format!("class{c}")).collect())
}

/// [`cache`] with other class names.
fn cache_of(dir: &Path, classes: Vec<String>) -> PathBuf {
    let info = TokenCacheInfo {
        grid: [2, 2, 4],
        codebook: 16,
        classes,
        class_texts: vec![],
        dataset: "synthetic".into(),
        tokenizer: "none".into(),
        tokenizer_fingerprint: None,
        frames: 5,
        height: 16,
        width: 32,
        fps: None,
        clips_per_video: 1,
    };
    let mut c = TokenCache::new(info);
    for k in 0..48i64 {
        let label = k % 4;
        let shift = (k * 7) % 5;
        let codes: Vec<i64> = (0..16).map(|i| (3 * label + i + shift) % 16).collect();
        c.push(&codes, label as usize).unwrap();
    }
    let path = dir.join("tokens.safetensors");
    c.save(&path).unwrap();
    path
}

fn config(tokens: PathBuf, out: PathBuf, steps: usize) -> GeneratorTrainConfig {
    GeneratorTrainConfig {
        tokens,
        out,
        preset: "tiny".into(),
        mode: "hybrid".into(),
        block_shape: "1x1x4".into(),
        condition: "label".into(),
        p_drop_cond: 0.2,
        batch_size: 4,
        steps,
        checkpoint_every: 5,
        valid_clips: 8,
        schedule: ScheduleConfig { lr: 3e-3, warmup_steps: 2, ..Default::default() },
        ..Default::default()
    }
}

fn mean(v: &[(usize, f64)]) -> f64 {
    v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64
}

#[test]
fn a_short_run_lowers_the_loss_and_resume_is_exact() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    unsafe { std::env::set_var("NBP_PLAIN_PROGRESS", "1") };
    let dir = temp("run");
    let tokens = cache(&dir);
    let device = Default::default();

    // Uninterrupted run.
    let full = train_generator::<B>(&config(tokens.clone(), dir.join("full"), 60), false, &device, Interrupter::new())
        .unwrap();
    assert_eq!(full.steps_done, 60);
    assert!(!full.interrupted);
    assert_eq!(full.losses.len(), 60);
    let first = mean(&full.losses[..5]);
    let last = mean(&full.losses[55..]);
    assert!(last < 0.7 * first, "loss should fall: first 5 steps {first:.3}, last 5 {last:.3}");
    assert!(full.model_path.exists());
    // The loss history and its curves are written next to the checkpoints.
    let csv = std::fs::read_to_string(dir.join("full/losses.csv")).unwrap();
    assert_eq!(csv.lines().filter(|l| l.contains(",training loss,")).count(), 60);
    assert_eq!(csv.lines().filter(|l| l.contains(",validation loss,")).count(), 12);
    assert!(std::fs::read_to_string(dir.join("full/loss.svg")).unwrap().contains("<polyline"));

    // The same run stopped after its first step (as Ctrl-C does), then resumed.
    let cfg = config(tokens.clone(), dir.join("resumed"), 60);
    let stopper = Interrupter::new();
    stopper.stop(Some("test"));
    let part = train_generator::<B>(&cfg, false, &device, stopper).unwrap();
    assert!(part.interrupted);
    assert_eq!(part.steps_done, 1);
    assert_eq!(part.losses, full.losses[..1].to_vec());
    // A second start without --resume refuses to mix runs.
    let err = train_generator::<B>(&cfg, false, &device, Interrupter::new()).unwrap_err().to_string();
    assert!(err.contains("--resume"), "{err}");
    let rest = train_generator::<B>(&cfg, true, &device, Interrupter::new()).unwrap();
    assert_eq!(rest.steps_done, 60);
    assert_eq!(rest.losses.len(), 59);
    for ((s1, a), (s2, b)) in rest.losses.iter().zip(&full.losses[1..]) {
        assert_eq!(s1, s2);
        assert!((a - b).abs() <= 1e-6 * b.abs().max(1.0), "step {s1}: resumed {a} vs uninterrupted {b}");
    }
    // Burn's per-epoch logs go on at the epoch the run stopped in (5 steps each); the lines of the epoch the
    // stop cut short are kept beside it.
    let lines = |epoch: &str| {
        let log = dir.join("resumed/train").join(epoch).join("Loss.log");
        std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display())).lines().count()
    };
    assert_eq!([lines("epoch-1-to-step-1"), lines("epoch-1"), lines("epoch-2"), lines("epoch-12")], [1, 4, 5, 5]);
    assert!(!dir.join("resumed/train/epoch-13").exists());
    // Effective config and classes are saved next to the checkpoints.
    assert!(dir.join("resumed/generator.toml").exists());
    assert_eq!(std::fs::read_to_string(dir.join("resumed/classes.txt")).unwrap().lines().count(), 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_position_initialisation_is_checked_by_name_and_starts_the_model() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = config(PathBuf::from("t.safetensors"), PathBuf::from("out"), 5);
    assert_eq!(c.pos_init, "zeros");
    c.pos_init = "grid".into();
    c.validate().unwrap();
    // The run's model starts from exactly these embeddings, and from zeros by default.
    let dir = temp("pos-init");
    let cache = TokenCache::load(cache(&dir)).unwrap();
    let s = setup(&c, &cache).unwrap();
    let device = Default::default();
    let grid: Vec<f32> = initial_model::<Flex>(&s, &c, &device).unwrap().pos_emb.val().into_data().to_vec().unwrap();
    assert_eq!(grid, grid_position_embedding(&s.vocab, &s.layout, s.gpt.block_size, s.gpt.n_embd));
    assert!(grid.iter().any(|&x| x != 0.0));
    c.pos_init = "zeros".into();
    let zeros: Vec<f32> = initial_model::<Flex>(&s, &c, &device).unwrap().pos_emb.val().into_data().to_vec().unwrap();
    assert!(zeros.iter().all(|&x| x == 0.0));
    std::fs::remove_dir_all(&dir).ok();
    c.pos_init = "sine".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("unknown pos_init 'sine' (use zeros or grid)"), "{e}");
}

#[test]
fn runs_that_would_read_more_clips_than_memory_holds_the_order_of_are_refused() {
    let mut c = config(PathBuf::from("t.safetensors"), PathBuf::from("out"), 5);
    c.validate().unwrap();
    c.steps = 1_000_000_000_000;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("read more than 2^30 clips in all"), "{e}");
    (c.steps, c.batch_size, c.grad_accumulation) = (10, 1 << 32, 1 << 32);
    assert!(c.validate().unwrap_err().to_string().contains("2^30 clips"));
}

#[test]
fn a_generator_run_is_refused_in_the_folder_of_a_tokenizer_run() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp("other-kind");
    let tokens = cache(&dir);
    let out = dir.join("tokenizer-run");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("tokenizer.toml"), "steps = 10\n").unwrap();
    let e = train_generator::<B>(&config(tokens, out.clone(), 2), false, &Default::default(), Interrupter::new())
        .unwrap_err()
        .to_string();
    assert!(e.contains("is a tokenizer run (continue it with `nbp-cli train-tokenizer --resume`), not the run"), "{e}");
    assert!(!out.join("architecture.toml").exists(), "nothing of the tokenizer run was overwritten");
    std::fs::remove_dir_all(&dir).ok();
}

/// `condition = "text"`: UCF-101 class names become the official UCF generator's 8 LLaMA-2 ids, in its vocabulary
/// layout (hybrid, condition vocabulary 32000), and the trained model is sampled by class name.
#[test]
fn text_conditions_train_the_official_ucf_layout() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = temp("text");
    let names = ["ApplyEyeMakeup", "YoYo", "Basketball", "Biking"].map(String::from).to_vec();
    let tokens = cache_of(&dir, names.clone());
    let mut c = config(tokens.clone(), dir.join("run"), 40);
    c.condition = "text".into();
    let cache = TokenCache::load(&tokens).unwrap();
    let s = setup(&c, &cache).unwrap();
    assert_eq!((s.settings.cond_tokens, s.settings.cond_vocab, s.settings.hybrid), (8, 32000, true));
    // BOV, 3 middle-bos, 32000 LLaMA ids, 16 codes.
    assert_eq!(s.vocab.size(), 4 + 32000 + 16);
    assert_eq!(s.conditions[0], [1, 3394, 10977, 1207, 786, 2, 2, 2], "ApplyEyeMakeup as the official table has it");
    assert_eq!(s.conditions[1], nbp_model::classes::find_ucf101_class("YoYo").unwrap().token_ids);

    let device = Default::default();
    let run = train_generator::<B>(&c, false, &device, Interrupter::new()).unwrap();
    let (first, last) = (mean(&run.losses[..5]), mean(&run.losses[35..]));
    assert!(last < 0.8 * first, "loss should fall: first 5 steps {first:.3}, last 5 {last:.3}");
    let g = nbp_model::load_generator::<Flex>(&run.model_path, &Default::default(), &Default::default()).unwrap();
    assert_eq!(g.settings, s.settings);
    assert_eq!(g.info.classes, names);
    // Sampling by class name gives the class's text ids; the default grid shows every class.
    use nbp_model::classes::{ConditionChoice, conditions};
    let yoyo = conditions(&g.info.classes, &g.settings, ConditionChoice::Class("yo yo")).unwrap();
    assert_eq!(yoyo[0].condition, nbp_model::generate::Condition::Tokens(s.conditions[1].clone()));
    let grid = conditions(&g.info.classes, &g.settings, ConditionChoice::Default).unwrap();
    assert_eq!(grid.len(), 4);

    // Class names that are not UCF-101 classes, and a mode without the hybrid start, are refused by name.
    let other = cache_of(&dir, (0..4).map(|c| format!("class{c}")).collect());
    let e = setup(&c, &TokenCache::load(&other).unwrap()).unwrap_err().to_string();
    assert!(e.contains("class 'class0'") && e.contains("not a UCF-101 class") && e.contains("condition label"), "{e}");
    c.mode = "nbp".into();
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("condition text trains the official UCF layout, with the hybrid start"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
