//! Datasets and training for `nbp`: the moving-shapes and video-file datasets, the token cache, generator
//! training on Burn's Learner, tokenizer training, and what the trainers share (optimiser recipe, learning-rate
//! schedule, run directories and checkpoints).

pub mod data;
pub mod evaluate;
pub mod gan;
pub mod generator_training;
pub mod metrics;
pub mod moving_shapes;
pub mod optim;
pub mod position_init;
pub mod run;
pub mod schedule;
pub mod token_cache;
pub mod tokenizer_training;
