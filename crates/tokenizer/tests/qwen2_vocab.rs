//! A real Qwen2 vocabulary: DeepSeek-R1-Distill-Qwen-7B's metadata with zero tensors
//! (`deepseek-r1-distill-qwen-7b-vocab.gguf`, made by `scripts/fetch-models.sh` through
//! `scripts/vocab-only.py`): 152,064 tokens, 151,387 BPE merges, pre-tokenizer `deepseek-r1-qwen`
//! (the Qwen2 regex), control tokens such as `<｜User｜>` and user-defined ones such as `<think>`.
//! Token ids against llama.cpp 0c1e570 from `tests/data/llamacpp-qwen2-vocab.json`
//! (`scripts/llamacpp-qwen2-vocab-reference.py`), each with the add_bos / special flags recorded.

mod common;

use common::*;
use rustorch_tokenizer::Tokenizer;

const VOCAB: &str = "deepseek-r1-distill-qwen-7b-vocab.gguf";

fn reference() -> serde_json::Value {
    let p = repo_root().join("tests/data/llamacpp-qwen2-vocab.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn qwen2_vocab_matches_llama_cpp() {
    // model_path fails (does not skip) when the file is missing, naming scripts/fetch-models.sh.
    let f = rustorch_gguf::GgufFile::open(model_path(VOCAB)).expect("open gguf");
    assert!(f.tensors().is_empty(), "the vocab-only file has no tensors");
    assert_eq!(f.get_str("general.architecture").unwrap(), "qwen2");
    assert_eq!(f.get_str("tokenizer.ggml.pre").unwrap(), "deepseek-r1-qwen");
    let tok = Tokenizer::from_gguf(&f).expect("tokenizer");

    let reference = reference();
    let cases = reference["tokenize"].as_array().expect("tokenize cases");
    assert!(cases.len() >= 100, "{} cases", cases.len());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let add_bos = case["add_bos"].as_bool().unwrap();
        let special = case["special"].as_bool().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, add_bos, special);
        if got != want {
            failures.push(format!(
                "{text:?} add_bos={add_bos} special={special}\n  want {want:?}\n  got  {got:?}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ from llama.cpp:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Every tokenization parsed with special tokens decodes back to its text (special tokens
/// rendered, BOS left out).
#[test]
fn qwen2_vocab_round_trips() {
    let f = rustorch_gguf::GgufFile::open(model_path(VOCAB)).expect("open gguf");
    let tok = Tokenizer::from_gguf(&f).expect("tokenizer");
    let reference = reference();
    for case in reference["tokenize"].as_array().unwrap() {
        if case["add_bos"].as_bool().unwrap() {
            continue;
        }
        let text = case["text"].as_str().unwrap();
        assert_eq!(tok.decode(&ids(&case["ids"]), true), text, "{text:?}");
    }
}
