//! Every architecture against llama.cpp: full logits of tiny random-weight files
//! (`tests/data/tiny-arch`, made by `scripts/tiny-arch.py`; llama.cpp's logits in
//! `tests/data/llamacpp-tiny-arch.json`, see `tests/data/README-arch.md`).

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load, Device, Logits};

fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data")
}

/// Relative L2 error of each position's logits ≤ 2%, and the same argmax wherever llama.cpp's
/// top-two margin is at least 0.5.
fn check(arch: &str) {
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(data().join("llamacpp-tiny-arch.json")).unwrap(),
    )
    .unwrap();
    let r = &json[arch];
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(r["file"].as_str().unwrap());
    let tokens: Vec<u32> = r["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    let want: Vec<Vec<f32>> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    let margins: Vec<f64> = r["margins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    // llama.cpp ran this file with its context padded to 256.
    let mut m = load(Arc::new(GgufFile::open(&file).unwrap()), Device::Cpu, 256).unwrap();
    let n_vocab = m.config().n_vocab;
    let mut got = Vec::new();
    m.eval(&tokens, 0, Logits::All, &mut got).unwrap();
    let (mut worst, mut decisive, mut same) = (0f64, 0, 0);
    for (t, w) in want.iter().enumerate() {
        let g = &got[t * n_vocab..(t + 1) * n_vocab];
        let (mut err, mut norm) = (0f64, 0f64);
        for (a, b) in g.iter().zip(w) {
            err += ((a - b) as f64).powi(2);
            norm += (*b as f64).powi(2);
        }
        let rel = (err / norm).sqrt();
        worst = worst.max(rel);
        assert!(
            rel <= 0.02,
            "{arch} position {t}: relative L2 error {rel:.4}"
        );
        if margins[t] >= 0.5 {
            decisive += 1;
            let argmax = |v: &[f32]| rustorch_model::runner::argmax(v);
            if argmax(g) == argmax(w) {
                same += 1;
            }
        }
    }
    eprintln!(
        "{arch}: worst relative L2 error {worst:.5}, argmax {same}/{decisive} decisive positions"
    );
    assert_eq!(
        same, decisive,
        "{arch}: argmax differs at a decisive position"
    );
}

#[test]
fn llama_with_rope_freqs() {
    check("llama");
}

#[test]
fn qwen2() {
    check("qwen2");
}

#[test]
fn qwen3() {
    check("qwen3");
}

#[test]
fn gemma3() {
    check("gemma3");
}

#[test]
fn gemma3_default_pattern() {
    check("gemma3-pattern6");
}

#[test]
fn phi3_short_factors() {
    check("phi3");
}

#[test]
fn phi3_long_factors() {
    check("phi3-long");
}
