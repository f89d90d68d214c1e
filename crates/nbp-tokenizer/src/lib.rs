//! The `nbp` video tokenizer: the official MAGVIT-v2 reproduction (causal 3D CNN, no attention) with finite
//! scalar quantisation, generic over Burn backends.
//!
//! ```text
//! video [B, 3, 1+4n, H, W] in [0,1] ──encoder──▶ z [B, D, 1+n, H/8, W/8] ──FSQ──▶ indices [B, 1+n, H/8, W/8]
//! indices ──FSQ⁻¹──▶ codes [B, D, 1+n, H/8, W/8] ──decoder──▶ video [B, 3, 1+4n, H, W]
//! ```

mod autodiff;
pub mod causal_conv3d;
pub mod checkpoint;
pub mod config;
mod cpu;
pub mod decoder;
pub mod depth_to_space;
pub mod encoder;
pub mod fsq;
pub mod group_norm3d;
pub mod layer;
pub mod pipeline;
pub mod residual_unit;
pub mod swish;
pub mod tokenizer;

pub use checkpoint::{
    TokenizerSource, load_tokenizer, load_tokenizer_with_resolution, save_tokenizer, save_tokenizer_with_resolution,
};
pub use config::TokenizerConfig;
pub use fsq::Fsq;
pub use tokenizer::{VideoTokenizer, check_indices};
