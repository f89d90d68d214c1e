pub use nbp_core as core;
pub use nbp_tokenizer as tokenizer;
