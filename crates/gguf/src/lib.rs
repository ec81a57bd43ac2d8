//! The GGUF file format: reader (memory-mapped, every count and offset checked) and writer.
//!
//! This crate knows the container only: header, metadata values, tensor infos and where each
//! tensor's bytes are. What the metadata means (architectures, tokenizers) and what the bytes mean
//! (quantization formats) belong to other crates.

mod error;
mod file;
pub mod output;
mod parse;
mod tensor;
mod types;
mod value;
mod writer;

pub use error::GgufError;
pub use file::GgufFile;
pub use output::{OutputError, OutputFile};
pub use parse::MAX_ARRAY_DEPTH;
pub use tensor::{TensorInfo, TensorSpec, MAX_DIMS, MAX_NAME_BYTES};
pub use types::{GgmlType, QK_K};
pub use value::{Array, Value};
pub use writer::GgufWriter;

/// Metadata keys this crate itself interprets.
pub mod keys {
    /// Alignment of the data section and of tensor offsets (u32, a power of two; default 32).
    pub const GENERAL_ALIGNMENT: &str = "general.alignment";
}

/// Alignment used when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

#[cfg(test)]
mod tests {
    /// The engine shares one opened model between threads.
    #[test]
    fn file_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::GgufFile>();
        check::<crate::GgufError>();
    }
}
