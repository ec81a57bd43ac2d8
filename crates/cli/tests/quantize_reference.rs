//! `rustorch quantize` must write, tensor for tensor, the same types and bytes as llama-quantize
//! (llama.cpp 0c1e570) on the SmolLM2 Q4_1 file: `shared/reference/quantize-hashes.json`.

mod common;

use rustorch_gguf::GgufFile;
use sha2::{Digest, Sha256};

fn check(ftype: &str) {
    let reference = common::reference_json("quantize-hashes.json");
    let want = &reference["files"][format!("smollm2-{ftype}.gguf")];
    assert!(want.is_object(), "no reference for {ftype}");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("out-{ftype}.gguf"));
    let src = common::model(common::SMOLLM);
    common::rustorch_ok(&[
        "quantize",
        "--allow-requantize",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        ftype,
    ]);

    let file = GgufFile::open(&out).unwrap();
    let want = want.as_object().unwrap();
    assert_eq!(file.tensors().len(), want.len(), "{ftype}: tensor count");
    let mut mismatches = Vec::new();
    for t in file.tensors() {
        let w = &want[&t.name];
        let hash = hex(&Sha256::digest(file.tensor_data(t)))[..16].to_string();
        let ty = t.ty.name().to_uppercase();
        let (wty, whash) = (
            w["type"].as_str().unwrap().to_uppercase(),
            w["sha256"].as_str().unwrap(),
        );
        if ty != wty || hash != whash {
            mismatches.push(format!(
                "{}: ours {ty} {hash}, llama.cpp {wty} {whash}",
                t.name
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{ftype}: {} tensors differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn q4_k_m_matches_llama_quantize() {
    check("Q4_K_M");
}

#[test]
fn q6_k_matches_llama_quantize() {
    check("Q6_K");
}

#[test]
fn q8_0_matches_llama_quantize() {
    check("Q8_0");
}

#[test]
fn f16_matches_llama_quantize() {
    check("F16");
}

#[test]
fn refuses_to_requantize_without_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let src = common::model(common::SMOLLM);
    let o = common::rustorch(&[
        "quantize",
        src.to_str().unwrap(),
        out.to_str().unwrap(),
        "Q8_0",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--allow-requantize"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!out.exists());
}
