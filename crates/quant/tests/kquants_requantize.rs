//! Requantizing a real model gives llama-quantize's exact bytes.
//!
//! `shared/reference/quantize-hashes.json` lists, for `llama-quantize --allow-requantize
//! SmolLM2-135M-Instruct.Q4_1.gguf OUT {Q4_K_M, Q6_K}` (llama.cpp 0c1e570, no imatrix), each
//! tensor's output type and the first 16 hex digits of the sha256 of its bytes. llama-quantize
//! dequantizes the source tensor to f32 and quantizes that whole tensor; we do the same for every
//! tensor that came out as a K-quant (Q4_K and Q6_K: the only K-quants this model's 576-wide rows
//! allow) and compare.

use std::path::PathBuf;

use rustorch_gguf::GgufFile;
use rustorch_quant::{dispatch, BlockFormat, BlockQ4K, BlockQ6K};
use sha2::{Digest, Sha256};

fn model(name: &str) -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/rustorch/models"),
    };
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "test model {} is missing: run scripts/fetch-models.sh (or set RUSTORCH_MODELS)",
        path.display()
    );
    path
}

/// `shared/reference/quantize-hashes.json`, beside the repository (override the folder with
/// RUSTORCH_REFERENCE).
fn reference_hashes() -> serde_json::Value {
    let dir = match std::env::var_os("RUSTORCH_REFERENCE") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/reference"),
    };
    let path = dir.join("quantize-hashes.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e} (set RUSTORCH_REFERENCE)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn requantize<B: BlockFormat>(f: &GgufFile, name: &str) -> String {
    let t = f
        .tensor(name)
        .unwrap_or_else(|| panic!("{name} not in source"));
    let n = t.n_elements as usize;
    let mut x = vec![0.0f32; n];
    dispatch::dequantize_row(t.ty, f.tensor_data(t), &mut x).unwrap();
    let mut blocks = vec![B::zeroed(); n / B::BLOCK];
    B::quantize(&x, &mut blocks);
    let digest = Sha256::digest(bytemuck::cast_slice::<B, u8>(&blocks));
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn requantized_smollm2_tensors_match_llama_quantize() {
    let src = GgufFile::open(model("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let json = reference_hashes();
    let mut checked = 0;
    let mut bad = Vec::new();
    for file in ["smollm2-Q4_K_M.gguf", "smollm2-Q6_K.gguf"] {
        let tensors = json["files"][file]
            .as_object()
            .expect("file in quantize-hashes.json");
        for (name, entry) in tensors {
            let (ty, want) = (
                entry["type"].as_str().unwrap(),
                entry["sha256"].as_str().unwrap(),
            );
            let got = match ty {
                "Q4_K" => requantize::<BlockQ4K>(&src, name),
                "Q6_K" => requantize::<BlockQ6K>(&src, name),
                _ => continue,
            };
            checked += 1;
            if got != want {
                bad.push(format!("{file} {name} ({ty}): want {want}, got {got}"));
            }
        }
    }
    // 16 Q4_K + 14 Q6_K tensors in the Q4_K_M file, 30 Q6_K in the Q6_K file.
    assert_eq!(checked, 60, "K-quant tensors found in quantize-hashes.json");
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}
