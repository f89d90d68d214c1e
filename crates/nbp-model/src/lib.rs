//! The `nbp` block-causal generator: the official GPT-2-style layout, KV-cached sampling driven by block
//! schedules (NBP, NTP, hybrid start), and checkpoint import/export.

pub mod attention;
pub mod bench;
pub mod block;
pub mod checkpoint;
pub mod classes;
pub mod config;
mod cpu;
pub mod generate;
pub mod gpt;
pub mod kv_cache;
pub mod linear;
pub mod precision;
pub mod sampling;
pub mod schedule;
pub mod training;

pub use checkpoint::{GeneratorSettings, LoadedGenerator, Overrides, load_generator, save_generator};
pub use config::GptConfig;
pub use gpt::Gpt;
pub use precision::Precision;
pub use schedule::Schedule;
