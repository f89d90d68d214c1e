//! Facade over the nbp crates (`nbp::core`, `nbp::tokenizer`, `nbp::model`); home of the workspace integration tests.
pub use nbp_core as core;
pub use nbp_model as model;
pub use nbp_tokenizer as tokenizer;
