//! The GGUF file format: reader (memory-mapped, every count and offset checked) and writer.

mod types;

pub use types::{GgmlType, QK_K};
