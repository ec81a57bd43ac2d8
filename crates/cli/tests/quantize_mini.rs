//! Every file type `rustorch quantize` offers, byte for byte against llama-quantize, on a small F16
//! Llama whose widths are multiples of 256 (so the K-quant mixes, not their fallbacks, are used):
//! `tests/data/quantize-mini.json`, made by `scripts/quantize-reference.py` with llama.cpp 0c1e570.
//! The source file is rebuilt here from the same integer generator.

mod common;

use half::f16;
use rustorch_gguf::{Array, GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

const N_LAYER: u64 = 8;
const E: u64 = 256;
const FF: u64 = 512;
const H: u64 = 4;
const HK: u64 = 1;
const V: u64 = 512;

fn hex16(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// (name, ggml dims) in the script's order.
fn shapes() -> Vec<(String, Vec<u64>)> {
    let mut t = vec![("token_embd.weight".to_string(), vec![E, V])];
    for i in 0..N_LAYER {
        let p = |s: &str| format!("blk.{i}.{s}.weight");
        t.push((p("attn_norm"), vec![E]));
        t.push((p("attn_q"), vec![E, E]));
        t.push((p("attn_k"), vec![E, E / H * HK]));
        t.push((p("attn_v"), vec![E, E / H * HK]));
        t.push((p("attn_output"), vec![E, E]));
        t.push((p("ffn_norm"), vec![E]));
        t.push((p("ffn_gate"), vec![E, FF]));
        t.push((p("ffn_up"), vec![E, FF]));
        t.push((p("ffn_down"), vec![FF, E]));
    }
    t.push(("output_norm.weight".to_string(), vec![E]));
    t.push(("output.weight".to_string(), vec![E, V]));
    t
}

fn write_source(path: &std::path::Path, want_hashes: &Json) {
    let mut state: u32 = 0x9E37_79B9;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        ((state % 2001) as f32 - 1000.0) / 16384.0
    };
    let shapes = shapes();
    let mut data = Vec::new();
    let mut specs = Vec::new();
    for (name, dims) in &shapes {
        let n: u64 = dims.iter().product();
        let bytes: Vec<u8> = if dims.len() == 1 {
            (0..n).flat_map(|_| 1f32.to_le_bytes()).collect()
        } else {
            (0..n)
                .flat_map(|_| f16::from_f32(next()).to_le_bytes())
                .collect()
        };
        assert_eq!(
            hex16(&bytes),
            want_hashes[name],
            "generated source tensor {name} differs from the script's"
        );
        let ty = if dims.len() == 1 {
            GgmlType::F32
        } else {
            GgmlType::F16
        };
        specs.push(TensorSpec {
            name: name.clone(),
            dims: dims.clone(),
            ty,
        });
        data.push(bytes);
    }
    let u = |v: u64| Value::U32(v as u32);
    let n_tok = V as usize;
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    tokens.extend((0..256).map(|i| format!("<0x{i:02X}>")));
    tokens.extend((0..n_tok - 259).map(|i| format!("\u{2581}t{i}")));
    let mut types = vec![2, 3, 3];
    types.extend(std::iter::repeat_n(6, 256));
    types.extend(std::iter::repeat_n(1, n_tok - 259));
    let md = vec![
        (
            "general.architecture".to_string(),
            Value::String("llama".into()),
        ),
        ("llama.block_count".into(), u(N_LAYER)),
        ("llama.context_length".into(), u(512)),
        ("llama.embedding_length".into(), u(E)),
        ("llama.feed_forward_length".into(), u(FF)),
        ("llama.attention.head_count".into(), u(H)),
        ("llama.attention.head_count_kv".into(), u(HK)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.dimension_count".into(), u(E / H)),
        ("general.file_type".into(), u(1)),
        ("tokenizer.ggml.model".into(), Value::String("llama".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(Array::String(tokens)),
        ),
        (
            "tokenizer.ggml.scores".into(),
            Value::Array(Array::F32(vec![0.0; n_tok])),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(Array::I32(types)),
        ),
    ];
    let mut w = GgufWriter::create(path, &md, &specs).unwrap();
    for d in &data {
        w.write_tensor_data(d).unwrap();
    }
    w.commit().unwrap();
}

#[test]
fn every_file_type_matches_llama_quantize() {
    let reference: Json = serde_json::from_str(
        &std::fs::read_to_string(common::repo_root().join("tests/data/quantize-mini.json"))
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("mini-f16.gguf");
    write_source(&src, &reference["source_sha256"]);
    let files = reference["files"].as_object().unwrap();
    assert_eq!(files.len(), 17);
    let mut failures = Vec::new();
    for (ftype, want) in files {
        let out = dir.path().join(format!("mini-{ftype}.gguf"));
        common::rustorch_ok(&[
            "quantize",
            src.to_str().unwrap(),
            out.to_str().unwrap(),
            ftype,
        ]);
        let file = GgufFile::open(&out).unwrap();
        let want = want.as_object().unwrap();
        assert_eq!(file.tensors().len(), want.len(), "{ftype}: tensor count");
        for t in file.tensors() {
            let (ty, hash) = (t.ty.name().to_uppercase(), hex16(file.tensor_data(t)));
            let w = &want[&t.name];
            if ty != w["type"].as_str().unwrap().to_uppercase() || hash != w["sha256"] {
                failures.push(format!(
                    "{ftype} {}: ours {ty} {hash}, llama.cpp {}",
                    t.name, w
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} tensors differ:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
