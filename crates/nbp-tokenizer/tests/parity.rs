//! Numerical parity with the PyTorch program `scripts/fixtures/tokenizer_fixtures.py`, which builds the official
//! architecture from the reference with a reduced width, saves a random-weight checkpoint in the official key
//! layout (`tiny_magvit2.pt`, and the Lightning layout `tiny_generator.ckpt`), an input clip and its outputs.

use std::path::PathBuf;

use burn::backend::Flex;
use burn::prelude::*;
use nbp_core::npy::read_npy;
use nbp_core::progress::NoProgress;
use nbp_tokenizer::checkpoint::TokenizerSource;
use nbp_tokenizer::{TokenizerConfig, VideoTokenizer, load_tokenizer, save_tokenizer};

type B = Flex;

fn fixture(name: &str) -> PathBuf {
    nbp_core::workspace::workspace_path("tests/fixtures/tokenizer").join(name)
}

fn config() -> TokenizerConfig {
    TokenizerConfig::from_name_or_file(fixture("config.json").to_str().unwrap()).unwrap()
}

fn tensor5(name: &str) -> Tensor<B, 5> {
    let a = read_npy(fixture(name)).unwrap();
    let shape: [usize; 5] = a.shape.clone().try_into().unwrap();
    Tensor::from_data(TensorData::new(a.to_f32(), shape), &Default::default())
}

fn values(t: Tensor<B, 5>) -> Vec<f32> {
    t.into_data().into_vec::<f32>().unwrap()
}

/// max |a − b| / max |b|.
fn rel_err(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
    let scale = b.iter().map(|y| y.abs()).fold(0.0, f32::max);
    diff / scale
}

fn load(name: &str) -> (VideoTokenizer<B>, TokenizerSource) {
    load_tokenizer::<B>(fixture(name), Some(&config()), &Default::default()).unwrap()
}

#[test]
fn fixture_config_is_the_tiny_preset() {
    assert_eq!(config(), TokenizerConfig::tiny());
}

#[test]
fn official_pt_import_matches_pytorch() {
    let (tok, source) = load("tiny_magvit2.pt");
    assert_eq!(source, TokenizerSource::OfficialTokenizer);
    let clip = tensor5("clip.npy");
    let z = tok.encode_latents(clip.clone(), &NoProgress).unwrap();
    let err = rel_err(&values(z.clone()), &values(tensor5("encoder_out.npy")));
    eprintln!("encoder output relative error: {err:e}");
    assert!(err < 1e-4, "encoder output relative error {err}");

    let bound = tok.fsq.bound(z.clone());
    let err_b = rel_err(&values(bound.clone()), &values(tensor5("bound.npy")));
    eprintln!("FSQ bound relative error: {err_b:e}");
    assert!(err_b < 1e-4);

    // Indices: exact, except where PyTorch's bound lies within 1e-4 of a rounding tie (none in this fixture).
    let ids = tok.encode(clip).unwrap().into_data().into_vec::<i32>().unwrap();
    let expected = read_npy(fixture("indices.npy")).unwrap().to_i64().unwrap();
    let torch_bound = values(tensor5("bound.npy"));
    let positions = ids.len();
    let mut mismatches = 0;
    for (p, (a, b)) in ids.iter().zip(&expected).enumerate() {
        if *a as i64 != *b {
            mismatches += 1;
            let near_tie = (0..6).any(|d| {
                let v = torch_bound[d * positions + p];
                (v - v.floor() - 0.5).abs() < 1e-4
            });
            assert!(near_tie, "index mismatch at token {p}: ours {a}, PyTorch {b}, not near a rounding tie");
        }
    }
    assert_eq!(mismatches, 0, "this fixture has no value near a rounding tie");
    let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
    assert!(distinct.len() > 40, "fixture indices should be varied, got {}", distinct.len());

    // Codes and decoder.
    let codes = tok.fsq.quantize(z).0;
    assert_eq!(values(codes), values(tensor5("codes.npy")));
    let decoded = tok.decode_codes(tensor5("codes.npy"), &NoProgress);
    let err_d = rel_err(&values(decoded), &values(tensor5("decoded.npy")));
    eprintln!("decoder output relative error: {err_d:e}");
    assert!(err_d < 1e-4, "decoder output relative error {err_d}");
}

#[test]
fn generator_ckpt_embedded_tokenizer_and_native_format_give_the_same_model() {
    let (a, _) = load("tiny_magvit2.pt");
    let (b, source) = load("tiny_generator.ckpt");
    assert_eq!(source, TokenizerSource::OfficialGenerator);
    let clip = tensor5("clip.npy");
    let za = values(a.encode_latents(clip.clone(), &NoProgress).unwrap());
    let zb = values(b.encode_latents(clip.clone(), &NoProgress).unwrap());
    assert_eq!(za, zb);

    let dir = std::env::temp_dir().join(format!("nbp-tok-native-{}", std::process::id()));
    let path = dir.join("tiny.safetensors");
    save_tokenizer(&a, &path).unwrap();
    let (c, source) = load_tokenizer::<B>(&path, None, &Default::default()).unwrap();
    assert_eq!(source, TokenizerSource::Native);
    assert_eq!(c.config(), a.config());
    assert_eq!(values(c.encode_latents(clip, &NoProgress).unwrap()), za);
    let codes = tensor5("codes.npy");
    assert_eq!(values(c.decode_codes(codes.clone(), &NoProgress)), values(a.decode_codes(codes, &NoProgress)));
    // A native file refuses a different architecture.
    let err = load_tokenizer::<B>(&path, Some(&TokenizerConfig::small()), &Default::default()).unwrap_err();
    assert!(err.to_string().contains("differs from the one requested"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Strict about shapes, missing and unused tensors, on the file without a recorded architecture (the tokenizer
/// inside a Lightning checkpoint), which is read only by its weights.
#[test]
fn import_is_strict_about_shapes_missing_and_unused_tensors() {
    let dev = Default::default();
    let ckpt = fixture("tiny_generator.ckpt");
    // Wider last stage: shape mismatch, named with both shapes.
    let wrong = TokenizerConfig::new(vec![8, 16, 16, 32], vec![1, 1, 1, 1], vec![1, 1, 1, 1]).with_norm_groups(4);
    let err = load_tokenizer::<B>(&ckpt, Some(&wrong), &dev).unwrap_err().to_string();
    assert!(err.contains("tiny_generator.ckpt"), "{err}");
    assert!(
        err.contains("state_dict.first_stage_model.encoder_layers.7.fn.2.conv.weight")
            && err.contains("[16, 16, 3, 3, 3]")
            && err.contains("[32, 16, 3, 3, 3]"),
        "{err}"
    );
    // One more residual unit in stage 0: the layer numbering shifts and a conv is taken where a unit is stored.
    let more = TokenizerConfig::new(vec![8, 16, 16, 16], vec![2, 1, 1, 1], vec![1, 1, 1, 1]).with_norm_groups(4);
    let err = load_tokenizer::<B>(&ckpt, Some(&more), &dev).unwrap_err().to_string();
    assert!(err.contains("missing tensor 'state_dict.first_stage_model.encoder_layers.2.fn.0.weight'"), "{err}");
    assert!(
        err.contains("state_dict.first_stage_model.encoder_layers.2.conv.weight"),
        "the hint shows what is stored: {err}"
    );
    // The official preset is much larger: the very first missing/mismatching key is reported.
    let err = load_tokenizer::<B>(&ckpt, None, &dev).unwrap_err().to_string();
    assert!(err.contains("encoder_layers.0.conv.weight") && err.contains("[128, 3, 3, 3, 3]"), "{err}");
    // Fewer decoder units than stored: the decoder's own keys are used up and extra tensors remain.
    let fewer = TokenizerConfig::new(vec![8, 16, 16, 16], vec![1, 1, 1, 1], vec![0, 1, 1, 1]).with_norm_groups(4);
    let err = load_tokenizer::<B>(&ckpt, Some(&fewer), &dev).unwrap_err().to_string();
    assert!(err.contains("decoder_layers"), "{err}");
}

/// `tiny_magvit2.pt` records its architecture beside the weights (`config`, a pickled dict, as the official
/// files do): an architecture that differs from it is refused before any weight is read, also where the
/// weights' shapes would fit (FSQ levels, norm groups), and the message names the fix.
#[test]
fn the_architecture_a_pytorch_file_records_is_checked() {
    let dev = Default::default();
    let pt = fixture("tiny_magvit2.pt");
    let err = load_tokenizer::<B>(&pt, None, &dev).unwrap_err().to_string();
    assert!(
        err.contains(
            "tiny_magvit2.pt: records the architecture of its weights, and the one it is read as (the official one, \
             the default) differs: channels [8, 16, 16, 16] recorded, [128, 256, 256, 512] read, encoder units"
        ) && err.ends_with("; pass --tokenizer-config tiny"),
        "{err}"
    );
    // Shapes that fit, computations that would not: six FSQ levels of other sizes, other norm groups.
    for (config, field) in [
        (
            TokenizerConfig::tiny().with_fsq_levels(vec![8, 8, 8, 6, 5, 5]),
            "FSQ levels [8, 8, 8, 5, 5, 5] recorded, [8, 8, 8, 6, 5, 5] read",
        ),
        (TokenizerConfig::tiny().with_norm_groups(2), "norm groups 4 recorded, 2 read"),
    ] {
        let err = load_tokenizer::<B>(&pt, Some(&config), &dev).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!("(the configuration given) differs: {field}; pass --tokenizer-config tiny")),
            "{err}"
        );
        // The same weights without the record load silently as that architecture.
        load_tokenizer::<B>(fixture("tiny_generator.ckpt"), Some(&config), &dev).unwrap();
    }
}

#[test]
fn missing_and_corrupt_checkpoints_are_clear_errors() {
    let dev = Default::default();
    let err = load_tokenizer::<B>("/nonexistent/tok.pt", None, &dev).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/tok.pt") && err.contains("not found"), "{err}");
    let dir = std::env::temp_dir().join(format!("nbp-tok-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture("tiny_magvit2.pt")).unwrap();
    let truncated = dir.join("truncated.pt");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    let err = load_tokenizer::<B>(&truncated, Some(&config()), &dev).unwrap_err().to_string();
    assert!(err.contains("truncated.pt"), "{err}");
    let garbage = dir.join("garbage.safetensors");
    std::fs::write(&garbage, b"this is not a checkpoint").unwrap();
    let err = load_tokenizer::<B>(&garbage, None, &dev).unwrap_err().to_string();
    assert!(err.contains("garbage.safetensors") && err.contains("safetensors"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// `group_norm = false` leaves out every GroupNorm: fewer parameters, a model that differs from the one with
/// norms, a native file that keeps the switch, and an official checkpoint (which has the norms) refused.
#[test]
fn a_tokenizer_without_group_norm_saves_loads_and_refuses_official_weights() {
    let dev = Default::default();
    let with = TokenizerConfig::tiny();
    let without = TokenizerConfig::tiny().with_group_norm(false);
    let a = VideoTokenizer::<B>::new(&with, &dev).unwrap();
    let b = VideoTokenizer::<B>::new(&without, &dev).unwrap();
    // tiny (channels 8, 16, 16, 16): encoder units 8→8, 8→16, 16→16, 16→16 and its output norm over 16;
    // decoder units 16→16, 16→16, 16→16, 16→8 and its output norm over 8. Each norm has a scale and a shift.
    let encoder_channels = (8 + 8) + (8 + 16) + (16 + 16) + (16 + 16) + 16;
    let decoder_channels = (16 + 16) + (16 + 16) + (16 + 16) + (16 + 8) + 8;
    let norm_values = 2 * (encoder_channels + decoder_channels);
    assert_eq!(a.num_params() - b.num_params(), norm_values);

    let (official, _) = load("tiny_magvit2.pt");
    let err = load_tokenizer::<B>(fixture("tiny_magvit2.pt"), Some(&without), &dev).unwrap_err().to_string();
    assert!(err.contains("tiny_magvit2.pt"), "{err}");

    let dir = std::env::temp_dir().join(format!("nbp-tok-nonorm-{}", std::process::id()));
    let path = dir.join("nonorm.safetensors");
    save_tokenizer(&b, &path).unwrap();
    let (c, _) = load_tokenizer::<B>(&path, None, &dev).unwrap();
    assert!(!c.config().group_norm);
    let clip = tensor5("clip.npy");
    let zb = values(b.encode_latents(clip.clone(), &NoProgress).unwrap());
    assert_eq!(values(c.encode_latents(clip.clone(), &NoProgress).unwrap()), zb);
    // Not the same function as the model with norms (the official weights through a norm-free path differ).
    let zo = values(official.encode_latents(clip, &NoProgress).unwrap());
    assert_ne!(zo, zb);
    std::fs::remove_dir_all(&dir).ok();
}

/// Configs and checkpoints written before `group_norm` existed load with the official structure.
#[test]
fn a_json_config_without_the_newer_fields_gets_their_defaults() {
    let c = TokenizerConfig::from_json(
        r#"{"channels":[8,16,16,16],"encoder_res_blocks":[1,1,1,1],"decoder_res_blocks":[1,1,1,1]}"#,
    )
    .unwrap();
    assert_eq!(c, TokenizerConfig::new(vec![8, 16, 16, 16], vec![1, 1, 1, 1], vec![1, 1, 1, 1]));
    assert!(c.group_norm && c.norm_groups == 32 && c.fsq_levels == vec![8, 8, 8, 5, 5, 5]);
    let off = TokenizerConfig::from_json(
        r#"{"channels":[8,16,16,16],"encoder_res_blocks":[1,1,1,1],"decoder_res_blocks":[1,1,1,1],"group_norm":false,"norm_groups":3}"#,
    )
    .unwrap();
    assert!(!off.group_norm);
    // Without norms the widths need not be multiples of norm_groups.
    off.validate().unwrap();
    assert!(off.clone().with_group_norm(true).validate().is_err());
}
