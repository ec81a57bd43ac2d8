//! Models: hyper-parameters from GGUF metadata, the architectures' forward passes, and the backends
//! that execute them.
//!
//! - [`arch`]: one file per architecture, straight-line calls of [`Backend`] operations.
//! - [`backend`]: the operations' trait and one folder per backend (`cpu`, `cuda`, `wgpu`).
//! - [`runner`]: a loaded model on a chosen backend, behind the object-safe [`Model`] trait.
//! - [`convert`]: the file-conversion tools (`quantize` with llama-quantize's type rules, `synth`),
//!   apart from the runtime.

pub mod arch;
pub mod backend;
pub mod config;
pub mod convert;
pub mod debug;
pub mod host_memory;
pub mod options;
pub mod runner;

pub use arch::llama::{self, LlamaModel};
pub use arch::{Architecture, RunState};
#[cfg(feature = "cuda")]
pub use backend::cuda;
#[cfg(feature = "wgpu")]
pub use backend::wgpu;
pub use backend::{cpu, AttnShape, Backend, Batch, Device, KvSpec, Span, Step, KV_BLOCK, N_UBATCH};
pub use config::{Arch, Config, SUPPORTED_ARCHITECTURES};
pub use convert::{ftype, quantize, synth};
pub use cpu::CpuBackend;
pub use debug::Debug;
pub use options::{BackendOptions, CpuOptions, CudaOptions};
pub use runner::{load, load_cache, load_on, load_seqs, load_with, paged, KvSize, Logits, Model};

/// Checks a batch before evaluating it: not empty, every id inside the vocabulary.
pub fn check_tokens(tokens: &[u32], n_vocab: usize) -> Result<(), ModelError> {
    if tokens.is_empty() {
        return Err(ModelError::EmptyBatch);
    }
    match tokens.iter().find(|&&t| t as usize >= n_vocab) {
        Some(&token) => Err(ModelError::TokenOutOfVocab { token, n_vocab }),
        None => Ok(()),
    }
}

/// Errors of loading and running a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Gguf(rustorch_gguf::GgufError),
    #[error("unsupported architecture '{arch}' (supported: {supported})")]
    UnsupportedArchitecture { arch: String, supported: String },
    #[error("invalid model hyper-parameters: {0}")]
    InvalidConfig(String),
    #[error("tensor '{0}' is missing from the model file")]
    MissingTensor(String),
    #[error("tensor '{name}' has shape {actual}, expected {expected}")]
    TensorShape {
        name: String,
        expected: String,
        actual: String,
    },
    #[error("tensor '{name}' has type {ty}, which the {backend} backend cannot compute with")]
    UnsupportedType {
        name: String,
        ty: rustorch_gguf::GgmlType,
        backend: &'static str,
    },
    #[error("quantize: {0}")]
    Quantize(String),
    #[error("{0}")]
    Backend(String),
    /// Memory that is not there: `available` is what the system reported, when it was asked.
    #[error("{what} needs {} MiB{}: use a smaller context (-c)", needed >> 20, available.map_or(String::new(), |a| format!(", but only {} MiB of memory is available", a >> 20)))]
    Memory {
        what: String,
        needed: u64,
        available: Option<u64>,
    },
    /// A token id the model has no embedding for.
    #[error("token id {token} is outside the vocabulary of {n_vocab} tokens")]
    TokenOutOfVocab { token: u32, n_vocab: usize },
    /// An evaluation of no tokens: there are no logits to give.
    #[error("nothing to evaluate: the batch has no tokens")]
    EmptyBatch,
    /// A batch whose rows do not fit the cache or each other.
    #[error("bad batch: {0}")]
    BadBatch(String),
    #[error("prompt of {n_tokens} tokens does not fit the context of {n_ctx} tokens")]
    ContextFull { n_tokens: usize, n_ctx: usize },
}
