//! Parity with the PyTorch program `scripts/fixtures/generator_fixtures.py`: a tiny GPT in the official layout,
//! saved as Lightning `.ckpt` files, with full-forward logits, losses and greedy KV-cached samples for NBP,
//! NTP and the hybrid start.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::prelude::*;
use burn::tensor::activation::log_softmax;
use nbp_core::filter::SamplingFilter;
use nbp_core::mask::MaskSpec;
use nbp_core::npy::read_npy;
use nbp_core::progress::NoProgress;
use nbp_core::vocab::{Conditioning, Vocabulary};
use nbp_model::sampling::{SampleOptions, sample};
use nbp_model::{GeneratorSettings, Overrides, Schedule, load_generator, save_generator};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    nbp_core::workspace::workspace_path("tests/fixtures/generator").join(name)
}

fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let d = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    d / b.iter().map(|y| y.abs()).fold(0.0, f32::max)
}

fn ids(name: &str) -> Vec<i64> {
    read_npy(fixture(name)).unwrap().to_i64().unwrap()
}

fn load(case: &str) -> nbp_model::LoadedGenerator<B> {
    load_generator::<B>(fixture(&format!("{case}.ckpt")), &Overrides::default(), &Default::default()).unwrap()
}

#[test]
fn settings_come_from_the_pickled_hyper_parameters() {
    assert_eq!(
        load("nbp_uncond").settings,
        GeneratorSettings { block: 4, hybrid: false, unconditional: true, cond_tokens: 0, cond_vocab: 0 }
    );
    assert_eq!(
        load("hybrid_text").settings,
        GeneratorSettings { block: 4, hybrid: true, unconditional: false, cond_tokens: 3, cond_vocab: 10 }
    );
    assert_eq!(
        load("ntp_uncond").settings,
        GeneratorSettings { block: 1, hybrid: false, unconditional: true, cond_tokens: 0, cond_vocab: 0 }
    );
    let g = load("hybrid_text");
    assert_eq!((g.model.config().vocab_size, g.model.config().n_head, g.model.config().n_layer), (78, 2, 2));
}

/// `nbp-cli generator info`: what a file holds, in words, including the vocabulary layout of reference §2.4.
#[test]
fn describe_names_the_layout() {
    let d = load("hybrid_text").describe().unwrap();
    let expected = "architecture: 2 layers, 2 heads, width 32, 128 positions, vocabulary 78\n\
        generation: hybrid start (NTP for the first block, then the middle-bos block, then NBP), blocks of 4 tokens\n\
        condition: text, 3 tokens of 10 ids\n\
        vocabulary: BOV 0, middle-bos 1–3, condition ids from 4, video codes from 14 (64 codes)\n";
    assert!(d.ends_with(expected), "{d}");
    let params = load("hybrid_text").model.num_params();
    assert!((34_650..34_750).contains(&params) && d.starts_with("parameters: 34.7 k\n"), "{params}: {d}");
    let d = load("nbp_uncond").describe().unwrap();
    assert!(d.contains("generation: NBP (one block per step), blocks of 4 tokens\n"), "{d}");
    assert!(d.contains("condition: none (frame prediction: continues given frames)\nvocabulary: video codes from 0"));
    assert!(load("ntp_uncond").describe().unwrap().contains("generation: NTP (one token per step), blocks of 1"));
}

#[test]
fn full_forward_logits_and_loss_match_pytorch() {
    let dev = Default::default();
    for (case, cut) in [("nbp_uncond", 0), ("hybrid_text", 3), ("ntp_uncond", 0)] {
        let g = load(case);
        let s = &g.settings;
        let input = ids(&format!("{case}_input_ids.npy"));
        let n = input.len();
        let x = Tensor::<B, 2, Int>::from_data(TensorData::new(input, [1, n]), &dev);
        let mask = MaskSpec::new(s.block, s.hybrid, s.cond_tokens).tensor::<B>(0..n, n, &dev);
        let logits = g.model.forward(x, mask).unwrap();
        let v = logits.dims()[2];
        let ours = logits.clone().into_data().into_vec::<f32>().unwrap();
        let expected = read_npy(fixture(&format!("{case}_logits.npy"))).unwrap().to_f32();
        let err = rel_err(&ours, &expected);
        eprintln!("{case}: logits relative error {err:e}");
        assert!(err < 1e-4, "{case}: {err}");
        // Cross-entropy of the rows that predict targets.
        let targets = ids(&format!("{case}_targets.npy"));
        let rows = logits.slice([0..1, cut..n, 0..v]).reshape([n - cut, v]);
        let t = Tensor::<B, 2, Int>::from_data(TensorData::new(targets.clone(), [targets.len(), 1]), &dev);
        let loss = -log_softmax(rows, 1).gather(1, t).mean().into_scalar();
        let expected = read_npy(fixture(&format!("{case}_loss.npy"))).unwrap().to_f32()[0];
        assert!((loss - expected).abs() < 1e-4, "{case}: loss {loss} vs {expected}");
    }
}

fn greedy(case: &str, schedule: &Schedule) -> (Vec<i64>, Vec<f32>) {
    let g = load(case);
    let mut logits = vec![];
    let opts = SampleOptions { filter: SamplingFilter::default(), greedy: true, cfg: None };
    let out = sample(&g.model, schedule, 1, &opts, &NoProgress, &mut |l| {
        logits.extend(l.clone().into_data().into_vec::<f32>().unwrap())
    })
    .unwrap();
    (out.into_data().convert::<i64>().into_vec::<i64>().unwrap(), logits)
}

#[test]
fn greedy_kv_cached_sampling_matches_the_official_samplers() {
    let z = ids("z.npy");
    // NBP, blocks of 4 (one latent row), frame prediction from the first 2 latent frames (32 tokens).
    let (out, logits) = greedy("nbp_uncond", &Schedule::blocks(&[], None, &z[..32], 16, 4));
    assert_eq!(out, ids("nbp_uncond_greedy.npy"));
    let e = rel_err(&logits, &read_npy(fixture("nbp_uncond_step_logits.npy")).unwrap().to_f32());
    assert!(e < 1e-4, "nbp step logits {e}");
    // NTP.
    let (out, logits) = greedy("ntp_uncond", &Schedule::blocks(&[], None, &z[..16], 8, 1));
    assert_eq!(out, ids("ntp_uncond_greedy.npy"));
    assert!(rel_err(&logits, &read_npy(fixture("ntp_uncond_step_logits.npy")).unwrap().to_f32()) < 1e-4);
    // Hybrid: text condition [1, 5, 2] shifted by the block size, BOV, 4 NTP steps, middle-bos block, NBP.
    let vocab = Vocabulary::new(64, Conditioning::Text { vocab: 10, tokens: 3 }, true, 4).unwrap();
    assert_eq!(vocab.size(), 78);
    let cond: Vec<i64> = [1i64, 5, 2].iter().map(|c| c + vocab.condition_offset() as i64).collect();
    let schedule = Schedule::hybrid(&cond, &vocab, &[], 24);
    assert_eq!(schedule.len(), 9);
    let (out, logits) = greedy("hybrid_text", &schedule);
    assert_eq!(out, ids("hybrid_text_greedy.npy"));
    assert!(rel_err(&logits, &read_npy(fixture("hybrid_text_step_logits.npy")).unwrap().to_f32()) < 1e-4);
}

#[test]
fn native_format_round_trips() {
    let g = load("hybrid_text");
    let path = std::env::temp_dir().join(format!("nbp-gen-{}.safetensors", std::process::id()));
    save_generator(&g.model, &g.settings, &path).unwrap();
    let h = load_generator::<B>(&path, &Overrides::default(), &Default::default()).unwrap();
    assert_eq!(h.settings, g.settings);
    let dev = Default::default();
    let x = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![5i64, 9, 6, 0, 20], [1, 5]), &dev);
    let mask = MaskSpec::new(4, true, 3).tensor::<B>(0..5, 5, &dev);
    let a = g.model.forward(x.clone(), mask.clone()).unwrap().into_data().into_vec::<f32>().unwrap();
    let b = h.model.forward(x, mask).unwrap().into_data().into_vec::<f32>().unwrap();
    assert_eq!(a, b);
    // What the file records is what it was trained with: the same value as a flag is fine, another an error.
    let same = Overrides { n_head: Some(g.model.config().n_head), block: Some(4), ..Default::default() };
    assert_eq!(g.settings.block, 4);
    assert!(load_generator::<B>(&path, &same, &Default::default()).is_ok());
    for (other, flag) in [
        (
            Overrides { block: Some(8), ..Default::default() },
            "--block-size 8 differs from what this nbp file records (block size 4)",
        ),
        (Overrides { n_head: Some(1), ..Default::default() }, "--n-head 1 differs from what this nbp file records ("),
    ] {
        let Err(err) = load_generator::<B>(&path, &other, &Default::default()) else {
            panic!("{flag}: a mismatch is an error");
        };
        let msg = err.to_string();
        assert!(msg.contains(flag) && msg.contains(path.to_str().unwrap()), "{msg}");
    }
    std::fs::remove_file(&path).ok();
}

/// A file that contradicts itself is refused when it is loaded, naming the file and the field, whichever way it
/// was written; `generator convert` refuses a flag that differs from what an official checkpoint records.
#[test]
fn self_contradictory_generator_files_are_refused_on_loading() {
    use nbp_model::checkpoint::{GeneratorInfo, save_generator_with_info};
    let g = load("hybrid_text");
    let path = std::env::temp_dir().join(format!("nbp-gen-bad-{}.safetensors", std::process::id()));
    let info = GeneratorInfo::default();
    let cases = [
        (
            GeneratorSettings { block: 200, ..g.settings.clone() },
            info.clone(),
            "its block size 200 must be 1 to the model's 128 positions",
        ),
        (
            GeneratorSettings { cond_vocab: 0, ..g.settings.clone() },
            info.clone(),
            "it is conditional but has 3 condition tokens of 0 ids",
        ),
        (
            g.settings.clone(),
            GeneratorInfo { p_drop_cond: Some(-3.0), ..info.clone() },
            "its condition dropout -3 is not a probability",
        ),
        (
            g.settings.clone(),
            GeneratorInfo { block_shape: Some([1, 1, 3]), ..info.clone() },
            "its block shape 1x1x3 is not a block of 4 tokens",
        ),
        (
            g.settings.clone(),
            GeneratorInfo { latent_grid: Some([0, 4, 4]), ..info.clone() },
            "its latent grid 0x4x4 is empty",
        ),
    ];
    for (settings, info, expected) in cases {
        save_generator_with_info(&g.model, &settings, &info, &path).unwrap();
        let Err(e) = load_generator::<B>(&path, &Overrides::default(), &Default::default()) else {
            panic!("{expected}: loaded");
        };
        let e = e.to_string();
        assert!(e.starts_with(&format!("{}: is inconsistent: {expected}", path.display())), "{e}");
    }
    std::fs::remove_file(&path).ok();
    // An official checkpoint: conditional with the hybrid start by its flags, but with no condition rows.
    let conditional = Overrides { unconditional: Some(false), hybrid: Some(true), ..Default::default() };
    let e =
        load_generator::<B>(fixture("nbp_uncond.ckpt"), &conditional, &Default::default()).err().unwrap().to_string();
    assert!(e.contains("nbp_uncond.ckpt: is inconsistent: it is conditional (hyper_parameters.args.unconditional is false), but uncond_embedding"), "{e}");
    // Converting with a block size that differs from the recorded one would record it as trained: refused.
    let convert = Overrides { block: Some(8), refuse_changes: true, ..Default::default() };
    let e = load_generator::<B>(fixture("hybrid_text.ckpt"), &convert, &Default::default()).err().unwrap().to_string();
    assert!(e.contains("--block-size 8 differs from the block size 4 that its hyper-parameters record"), "{e}");
}

#[test]
fn training_sequences_and_chunked_loss_match_pytorch() {
    use nbp_model::training::{chunked_cross_entropy, training_hidden, training_mask, training_sequence};
    let dev = Default::default();
    let z = ids("z.npy");
    for (case, vocab, cond) in [
        ("nbp_uncond", Vocabulary::new(64, Conditioning::Unconditional, false, 4).unwrap(), vec![]),
        (
            "hybrid_text",
            Vocabulary::new(64, Conditioning::Text { vocab: 10, tokens: 3 }, true, 4).unwrap(),
            vec![1, 5, 2],
        ),
        ("ntp_uncond", Vocabulary::new(64, Conditioning::Unconditional, false, 1).unwrap(), vec![]),
    ] {
        let seq = training_sequence(&vocab, &cond, &z).unwrap();
        assert_eq!(seq.input, ids(&format!("{case}_input_ids.npy")), "{case}: input ids");
        assert_eq!(seq.targets, ids(&format!("{case}_targets.npy")), "{case}: targets");
        let g = load(case);
        let n = seq.input.len();
        let input = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.input.clone(), [1, n]), &dev);
        let targets =
            Tensor::<B, 2, Int>::from_data(TensorData::new(seq.targets.clone(), [1, seq.targets.len()]), &dev);
        let hidden = training_hidden(&g.model, input, &training_mask(&vocab), false).unwrap();
        let expected = read_npy(fixture(&format!("{case}_loss.npy"))).unwrap().to_f32()[0];
        for chunk in [1, 7, 1000] {
            let loss = chunked_cross_entropy(&g.model, hidden.clone(), targets.clone(), seq.cut, chunk).into_scalar();
            assert!((loss - expected).abs() < 1e-4, "{case}, chunk {chunk}: {loss} vs {expected}");
        }
    }
}

#[test]
fn bf16_checkpoints_load_as_the_rounded_fp32_weights() {
    let a = load("hybrid_text");
    let b = load_generator::<B>(fixture("hybrid_text_bf16.ckpt"), &Overrides::default(), &Default::default()).unwrap();
    let round = |v: f32| burn::tensor::bf16::from_f32(v).to_f32();
    let fp32 = a.model.tok_emb.weight.val().into_data().into_vec::<f32>().unwrap();
    let bf16 = b.model.tok_emb.weight.val().into_data().into_vec::<f32>().unwrap();
    assert_eq!(bf16, fp32.iter().map(|&v| round(v)).collect::<Vec<_>>());
    let w32 = a.model.blocks[1].attn.proj.weight.val().into_data().into_vec::<f32>().unwrap();
    let w16 = b.model.blocks[1].attn.proj.weight.val().into_data().into_vec::<f32>().unwrap();
    assert_eq!(w16, w32.iter().map(|&v| round(v)).collect::<Vec<_>>());
}
