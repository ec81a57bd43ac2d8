//! Where the test models and llama.cpp's reference outputs are.
#![allow(dead_code)]

use rustorch_tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::OnceLock;

pub const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOLLM_KEY: &str = "smollm2-135m-instruct-q4_1";
pub const GEMMA_KEY: &str = "gemma-3-270m-q4_k_m";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A test model fetched by `scripts/fetch-models.sh` (directory overridable by RUSTORCH_MODELS).
pub fn model_path(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-models.sh (or set RUSTORCH_MODELS)",
        p.display()
    );
    p
}

fn load(name: &str) -> Tokenizer {
    let f = rustorch_gguf::GgufFile::open(model_path(name)).expect("open gguf");
    Tokenizer::from_gguf(&f).expect("tokenizer")
}

/// Loaded once per test binary: Gemma's vocabulary is 262k tokens.
pub fn smollm() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(SMOLLM))
}

pub fn gemma() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| load(GEMMA))
}

/// `shared/reference`, beside the repository (override with RUSTORCH_REFERENCE).
pub fn reference_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUSTORCH_REFERENCE") {
        return PathBuf::from(d);
    }
    let p = repo_root().join("../shared/reference");
    assert!(
        p.exists(),
        "llama.cpp reference outputs not found at {} (set RUSTORCH_REFERENCE)",
        p.display()
    );
    p
}

pub fn reference_json() -> serde_json::Value {
    let p = reference_dir().join("llamacpp.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}
