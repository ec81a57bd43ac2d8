//! The fuzz targets as plain functions: each takes the fuzzer's bytes, builds what it feeds to the
//! product code (a GGUF file, a vocabulary and a text, a template and a conversation, a model with
//! odd hyper-parameters), runs it, and returns. Untrusted input must give `Ok` or an error: a
//! panic, a hang or a huge allocation is a finding.
//!
//! The same functions run twice: under libFuzzer (`fuzz/fuzz_targets/*.rs`, one line each) and as
//! a regular test that replays every committed corpus file (`tests/corpus.rs`), so what the fuzzer
//! once explored keeps being checked in CI without nightly.
//!
//! Each input format is written for mutation: a few fixed header bytes choose flags and numbers,
//! then sections split at bytes that never occur in UTF-8 (`0xFF` between sections, `0xFE`
//! between the items of a list). Every module also has the inverse (`*Case::to_bytes`) so
//! `examples/make_seeds.rs` can write seeds from real models.

pub mod chat_template;
pub mod gguf_reader;
mod input;
pub mod model_loader;
pub mod tokenizer;

pub use chat_template::chat_template;
pub use gguf_reader::gguf_reader;
pub use model_loader::model_loader;
pub use tokenizer::tokenizer;

/// A fuzz target: any bytes in, a return (or a panic, the finding).
pub type Target = fn(&[u8]);

/// The targets by name (the names of `fuzz/fuzz_targets/*.rs` and of the corpus folders).
pub const TARGETS: &[(&str, Target)] = &[
    ("gguf_reader", gguf_reader),
    ("tokenizer", tokenizer),
    ("chat_template", chat_template),
    ("model_loader", model_loader),
];
