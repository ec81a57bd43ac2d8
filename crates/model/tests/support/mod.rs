//! Checks shared by the backends' test files.
#![allow(dead_code)]

pub mod tiny_arch;
pub mod two_sequences;

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;

/// SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-models.sh` (`RUSTORCH_MODELS`, else
/// `~/.cache/rustorch/models`).
pub fn smollm2() -> Arc<GgufFile> {
    let dir = std::env::var_os("RUSTORCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        });
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    Arc::new(GgufFile::open(p).unwrap())
}
