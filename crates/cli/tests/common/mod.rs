//! Shared helpers of the end-to-end tests: where the models and llama.cpp's reference outputs are,
//! and running the `rustorch` binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub const SMOLLM: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA: &str = "gemma-3-270m-q4_k_m.gguf";
pub const SMOLLM_KEY: &str = "smollm2-135m-instruct-q4_1";
pub const GEMMA_KEY: &str = "gemma-3-270m-q4_k_m";

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A test model fetched by `scripts/fetch-models.sh`.
pub fn model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        }
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
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

pub fn reference_json(name: &str) -> serde_json::Value {
    let p = reference_dir().join(name);
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

/// Runs the `rustorch` binary with `args`.
pub fn rustorch(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args(args)
        .output()
        .expect("running rustorch")
}

/// Runs `rustorch` and returns stdout, asserting success.
pub fn rustorch_ok(args: &[&str]) -> String {
    let out = rustorch(args);
    assert!(
        out.status.success(),
        "rustorch {:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}
