//! The bundled demo models (`assets/demo/`) on held-out moving-shapes clips (flex): the tokenizer reconstructs
//! them as well as it was measured to, and the generator's frame prediction beats the copy-the-last-frame
//! baseline by a margin. The measured numbers are in `assets/README.md`; the thresholds sit a little below them,
//! so a broken model file, loader, tokenizer or sampler fails here (random weights give about 8–11 dB).

use burn::backend::Flex;
use nbp_core::video::Video;
use nbp_core::workspace::workspace_path;
use nbp_model::generate::Condition;
use nbp_model::load_generator;
use nbp_model::sampling::SampleOptions;
use nbp_tokenizer::VideoTokenizer;
use nbp_tokenizer::checkpoint::load_tokenizer;
use nbp_train::data::{ClipOptions, DatasetSpec, Split};
use nbp_train::evaluate::evaluate_frame_prediction;
use nbp_train::tokenizer_training::evaluate_reconstruction;

type B = Flex;

/// Seed of the held-out clips: the demo models were trained on clips of seed 1234.
const HELD_OUT_SEED: u64 = 99;

fn tokenizer() -> VideoTokenizer<B> {
    let path = workspace_path("assets/demo/tokenizer.safetensors");
    load_tokenizer::<B>(&path, None, &Default::default()).expect("bundled demo tokenizer").0
}

/// The last `n` clips of the demo's moving-shapes variant (one large shape, fixed look) at seed
/// [`HELD_OUT_SEED`]: 17 frames of 64×64.
fn held_out(n: usize) -> Vec<(Video, usize)> {
    let spec: DatasetSpec = "moving-shapes-plain-large-single-fixed:100000".parse().unwrap();
    let opts = ClipOptions { frames: 17, height: 64, width: 64, fps: None, split: Split::Eval };
    let source = spec.open(&opts, HELD_OUT_SEED).unwrap();
    let len = source.len();
    (len - n..len)
        .map(|i| {
            let c = source.clip(i, HELD_OUT_SEED).unwrap();
            (c.video, c.label)
        })
        .collect()
}

#[test]
fn demo_tokenizer_reconstructs_held_out_clips() {
    let tok = tokenizer();
    let clips: Vec<Video> = held_out(4).into_iter().map(|c| c.0).collect();
    let r = evaluate_reconstruction(&tok, &clips, 1, &Default::default()).unwrap();
    println!("{r:?}");
    // Measured: PSNR 20.32 dB, SSIM 0.856 (each frame's mean colour: 12.69 dB).
    assert!(r.psnr > 19.8 && r.ssim > 0.83, "{r:?}");
    assert!(r.psnr > r.psnr_frame_mean + 5.0, "{r:?}");
}

#[test]
fn demo_generator_predicts_frames_better_than_copying_the_last_one() {
    let device = Default::default();
    let tok = tokenizer();
    let path = workspace_path("assets/demo/generator.safetensors");
    let generator = load_generator::<B>(&path, &Default::default(), &device).expect("bundled demo generator");
    let clips: Vec<(Video, Condition)> =
        held_out(4).into_iter().map(|(v, label)| (v, Condition::Tokens(vec![label as i64]))).collect();
    let options = SampleOptions { filter: Default::default(), greedy: true, cfg: None };
    let r = evaluate_frame_prediction(&generator, &tok, &clips, 5, &options, 0, &device).unwrap();
    println!("{r:?}");
    // Measured: 15.43 dB against 10.19 dB for copying the last frame (+5.24 dB).
    assert!(r.margin() > 4.0, "{r:?}");
}
