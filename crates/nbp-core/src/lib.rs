//! Core data types of `nbp`: errors, `.npy` arrays, video clips and their I/O, and image-quality metrics.
//!
//! Nothing here depends on a Burn backend: these are the plain-data building blocks that the tokenizer,
//! the generator, the trainers and the CLI share.

pub mod error;
pub mod metrics;
pub mod npy;
pub mod pickle;
pub mod progress;
pub mod system;
pub mod video;
pub mod weights;

pub use error::{Error, Result};
