//! Generation through `generate`: block shapes other than rows, prefixes, conditions and errors.

use burn::backend::Flex;
use burn::prelude::*;
use nbp_core::blocks::{BlockShape, LatentGrid};
use nbp_core::filter::SamplingFilter;
use nbp_core::progress::NoProgress;
use nbp_model::generate::{Condition, Request, generate, plan, vocabulary};
use nbp_model::sampling::SampleOptions;
use nbp_model::{GeneratorSettings, Gpt, GptConfig};

type B = Flex;

fn model(settings: &GeneratorSettings, codebook: usize) -> Gpt<B> {
    let dev = Default::default();
    B::seed(&dev, 11);
    let probe = vocabulary(&GeneratorSettings { ..settings.clone() }, 10_000).unwrap();
    let v = probe.video_offset() + codebook;
    Gpt::new(
        &GptConfig::new(v, 1, 2, 16).with_block_size(300).with_cond_tokens(settings.cond_tokens).with_dropout(0.0),
        &dev,
    )
    .unwrap()
}

fn request(prefix: Vec<i64>, grid: LatentGrid, block: BlockShape) -> Request {
    Request {
        condition: Condition::None,
        prefix,
        grid,
        block_shape: block,
        samples: 2,
        options: SampleOptions { filter: SamplingFilter::default(), greedy: false, cfg: None },
        clamp_non_video: false,
    }
}

#[test]
fn block_shapes_other_than_rows_keep_the_prefix_in_place() {
    let grid = LatentGrid::new(4, 8, 8);
    let prefix: Vec<i64> = (0..128).map(|i| (i * 7 % 50) as i64).collect(); // 2 latent frames
    for (shape, steps) in [("1x1x8", 16), ("1x4x4", 8), ("2x1x8", 8), ("2x2x2", 16)] {
        let block = BlockShape::parse(shape).unwrap();
        let settings = GeneratorSettings {
            block: block.size(),
            hybrid: false,
            unconditional: true,
            cond_tokens: 0,
            cond_vocab: 0,
        };
        let m = model(&settings, 50);
        let out = generate(&m, &settings, &request(prefix.clone(), grid, block), &NoProgress).unwrap();
        assert_eq!(out.steps, steps, "{shape}");
        assert_eq!(out.new_tokens, 128);
        for codes in &out.codes {
            assert_eq!(codes.len(), 256);
            assert_eq!(&codes[..128], &prefix[..], "{shape}: the prefix frames stay where they were");
            assert!(codes.iter().all(|&c| (0..50).contains(&c)));
        }
        assert_ne!(out.codes[0][128..], out.codes[1][128..], "{shape}: samples differ");
    }
}

#[test]
fn bad_requests_are_clear_errors() {
    let grid = LatentGrid::new(4, 8, 8);
    let settings = GeneratorSettings { block: 8, hybrid: false, unconditional: true, cond_tokens: 0, cond_vocab: 0 };
    let m = model(&settings, 50);
    let err = |r: Request| generate(&m, &settings, &r, &NoProgress).unwrap_err().to_string();
    assert!(err(request(vec![], grid, BlockShape::new(1, 1, 8))).contains("--condition-video or --prefix-tokens"));
    assert!(err(request(vec![0; 64], grid, BlockShape::new(1, 2, 2))).contains("blocks of 8"));
    // One latent frame of 8x8 under blocks two frames deep: the message names the frames that would do.
    let e = err(request(vec![0; 64], grid, BlockShape::new(2, 2, 2)));
    assert!(
        e.contains("a prefix of 64 tokens (1 latent frame) does not end on a block boundary of block shape 2x2x2")
            && e.contains("(2 of the 4;"),
        "{e}"
    );
    assert!(
        err(request(vec![99; 64], grid, BlockShape::new(1, 1, 8)))
            .contains("is not a code of the generator's codebook")
    );
    let mut r = request(vec![0; 64], grid, BlockShape::new(1, 1, 8));
    r.condition = Condition::Tokens(vec![1]);
    assert!(err(r).contains("unconditional"));
    // Larger than the model's 300 positions (grids from a damaged file's metadata included): refused before
    // the grid's layout is built.
    let huge = LatentGrid::new(1 << 40, 1 << 20, 8);
    let e = err(request(vec![0; 64], huge, BlockShape::new(1, 1, 8)));
    assert!(e.contains("(9223372036854775808 tokens) is larger than the model's 300 positions"), "{e}");
}

#[test]
fn hybrid_generation_from_a_condition() {
    let settings = GeneratorSettings { block: 4, hybrid: true, unconditional: false, cond_tokens: 3, cond_vocab: 10 };
    let m = model(&settings, 64);
    let mut r = request(vec![], LatentGrid::new(3, 4, 4), BlockShape::new(1, 1, 4));
    r.condition = Condition::Tokens(vec![1, 5, 2]);
    let out = generate(&m, &settings, &r, &NoProgress).unwrap();
    // 4 NTP steps, then (48 − 4)/4 = 11 block steps.
    assert_eq!((out.steps, out.new_tokens), (15, 48));
    r.options.cfg = Some(nbp_model::sampling::Guidance { scale: 1.5, growing: true });
    let guided = generate(&m, &settings, &r, &NoProgress).unwrap();
    assert_eq!(guided.codes.len(), 2);
}

/// A conditional model (not hybrid) continues a prefix in the layout it was trained on, `[c | BOV×L | z]`: the
/// greedy first block equals the argmax of a full forward over the training sequence at the rows that predict it.
#[test]
fn conditional_frame_prediction_feeds_the_training_layout() {
    let settings = GeneratorSettings { block: 4, hybrid: false, unconditional: false, cond_tokens: 1, cond_vocab: 5 };
    let mut m = model(&settings, 64);
    // Learned positions (the initial ones are zero), so that a token fed at the wrong position changes the logits.
    let dims = m.pos_emb.val().dims();
    let dist = burn::tensor::Distribution::Normal(0.0, 1.0);
    m.pos_emb = burn::module::Param::from_tensor(Tensor::random(dims, dist, &Default::default()));
    let vocab = vocabulary(&settings, m.config().vocab_size).unwrap();
    let grid = LatentGrid::new(3, 4, 4);
    let prefix: Vec<i64> = (0..16).map(|i| (i * 11 % 64) as i64).collect();
    let mut r = request(prefix.clone(), grid, BlockShape::new(1, 1, 4));
    r.condition = Condition::Tokens(vec![2]);
    r.options.greedy = true;
    r.samples = 1;
    let out = generate(&m, &settings, &r, &NoProgress).unwrap();
    assert_eq!(out.steps, 8);

    let mut codes = out.codes[0].clone();
    assert_eq!(&codes[..16], &prefix[..]);
    // Training layout of the whole generated clip: row `cut + i` predicts z_i, so rows cut+16..cut+20 predict the
    // first generated block from the prefix alone (block-causal).
    codes.truncate(48);
    let seq = nbp_model::training::training_sequence(&vocab, &[2], &codes).unwrap();
    let n = seq.input.len();
    let mask = nbp_model::training::training_mask(&vocab).tensor::<B>(0..n, n, &Default::default());
    let ids = Tensor::<B, 2, Int>::from_data(TensorData::new(seq.input.clone(), [1, n]), &Default::default());
    let logits = m.forward(ids, mask).unwrap();
    // Sampling draws only video codes: the argmax over their logits (the random model may rank another id first).
    let codes_at = vocab.video_offset()..vocab.video_offset() + vocab.codebook;
    let rows = logits.slice([0..1, seq.cut + 16..seq.cut + 20, codes_at]).argmax(2);
    let expected: Vec<i64> = rows.into_data().convert::<i64>().to_vec::<i64>().unwrap();
    assert_eq!(&out.codes[0][16..20], &expected[..]);
}

/// Text conditions hide their padding from every row in models without the hybrid start (the official
/// non-hybrid mask); the hybrid model sees all of them (its pad detection never fires), labels are always seen.
#[test]
fn text_padding_is_hidden_as_the_official_masks_hide_it() {
    use nbp_model::generate::condition_visible;
    let text = GeneratorSettings { block: 4, hybrid: false, unconditional: false, cond_tokens: 8, cond_vocab: 32000 };
    let ids = [1, 3394, 10977, 1207, 786, 2, 2, 2];
    let seen = condition_visible(&text, &ids);
    assert_eq!(seen, [true, true, true, true, true, false, false, false]);
    let hybrid = GeneratorSettings { hybrid: true, ..text.clone() };
    assert!(condition_visible(&hybrid, &ids).iter().all(|&v| v));
    let label = GeneratorSettings { cond_tokens: 1, cond_vocab: 5, ..text.clone() };
    assert_eq!(condition_visible(&label, &[2]), [true]);

    // Sampling with that mask: what the padding embeds does not reach the logits, visible tokens do.
    let small = GeneratorSettings { cond_vocab: 20, ..text.clone() };
    let mut m = model(&small, 16);
    let vocab = vocabulary(&small, m.config().vocab_size).unwrap();
    let first_logits = |m: &Gpt<B>, condition: &[i64]| -> Vec<f32> {
        let shifted: Vec<i64> = condition.iter().map(|&c| c + vocab.condition_offset() as i64).collect();
        let mut schedule = nbp_model::Schedule::blocks(&shifted, vocab.bov().map(|b| b as i64), &[], 8, 4);
        schedule.mask.condition_visible = condition_visible(&small, condition);
        let options = SampleOptions { filter: SamplingFilter::default(), greedy: true, cfg: None };
        let mut first = None;
        nbp_model::sampling::sample(m, &schedule, 1, &options, &NoProgress, &mut |l| {
            first.get_or_insert_with(|| l.to_data().to_vec::<f32>().unwrap());
        })
        .unwrap();
        first.unwrap()
    };
    let padded = [1, 7, 9, 5, 4, 2, 2, 2];
    let before = first_logits(&m, &padded);
    // Condition ids 2 and 3 (vocabulary ids 3 and 4, after BOV) get other embeddings.
    let table = m.tok_emb.weight.val();
    let rows = Tensor::random([2, table.dims()[1]], burn::tensor::Distribution::Normal(0.0, 1.0), &Default::default());
    let pad = 2 + vocab.condition_offset();
    m.tok_emb.weight = burn::module::Param::from_tensor(table.slice_assign([pad..pad + 2, 0..16], rows));
    assert_eq!(first_logits(&m, &padded), before, "hidden padding reaches no row");
    let unpadded = [1, 7, 9, 5, 4, 3, 3, 3];
    let moved = first_logits(&m, &unpadded).iter().zip(&before).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-3, "visible condition tokens move the logits ({moved})");

    // `generate` samples with that mask: its plan hides the padding of a text condition, and nothing for a model
    // with the hybrid start (whose official pad detection never fires).
    let mut r = request(vec![], LatentGrid::new(2, 4, 4), BlockShape::new(1, 1, 4));
    r.condition = Condition::Tokens(padded.to_vec());
    let p = plan(m.config(), &small, &r).unwrap();
    assert_eq!(p.schedule.mask.condition_visible, [true, true, true, true, true, false, false, false]);
    assert_eq!(p.schedule.sampled_from, p.vocab.video_offset(), "only video codes are drawn");
    let hybrid_small = GeneratorSettings { hybrid: true, ..small.clone() };
    let hm = model(&hybrid_small, 16);
    let p = plan(hm.config(), &hybrid_small, &r).unwrap();
    assert_eq!(p.schedule.mask.condition_visible, [true; 8], "the hybrid model sees its padding");
}
