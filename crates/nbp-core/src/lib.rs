//! Core building blocks of `nbp` shared by the tokenizer, the generator, the trainers and the CLI: errors,
//! `.npy` arrays, video clips and their I/O, image-quality metrics, PyTorch checkpoint reading, latent grids and
//! blocks, the vocabulary layout, the attention-mask builder and the sampling filter.

pub mod blocks;
pub mod error;
pub mod filter;
pub mod flex;
pub mod mask;
pub mod metrics;
pub mod module;
pub mod npy;
pub mod pickle;
pub mod plot;
pub mod progress;
pub mod system;
pub mod video;
pub mod vocab;
pub mod weights;
pub mod workspace;

pub use error::{Error, Result};
