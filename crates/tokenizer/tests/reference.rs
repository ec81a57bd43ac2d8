//! Token ids against llama.cpp 0c1e570 (`llama-tokenize -m FILE -p TEXT --ids`: special tokens
//! added as the vocabulary says, parsed as special) from `shared/reference/llamacpp.json`.

mod common;

use common::*;
use rustorch_tokenizer::Tokenizer;

fn check(tok: &Tokenizer, key: &str) {
    let reference = reference_json();
    let cases = reference["tokenize"][key]
        .as_array()
        .expect("tokenize cases");
    assert!(!cases.is_empty());
    let mut failures = Vec::new();
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let want: Vec<u32> = case["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true, true);
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{key}: {} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    check(smollm(), SMOLLM_KEY);
}

#[test]
fn gemma3_matches_llama_cpp() {
    check(gemma(), GEMMA_KEY);
}

/// The perplexity run tokenizes the GPL-3 text; its first 512 ids are in `teacher_forced`.
#[test]
fn gpl3_prefix_matches_llama_cpp() {
    let reference = reference_json();
    let text = std::fs::read_to_string(reference_dir().join("texts/GPL-3")).unwrap();
    for (key, tok) in [(SMOLLM_KEY, smollm()), (GEMMA_KEY, gemma())] {
        let Some(want) = reference["teacher_forced"][key]["input_ids"].as_array() else {
            continue;
        };
        let want: Vec<u32> = want.iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = tok.encode(&text, true, false);
        assert_eq!(&got[..want.len()], &want[..], "{key}");
    }
}

/// Prompts of the greedy runs (through llama.cpp's Python binding) and the text of the ids it
/// generated, piece by piece.
#[test]
fn greedy_prompts_and_pieces_match_llama_cpp() {
    let reference = reference_json();
    for (key, tok) in [(SMOLLM_KEY, smollm()), (GEMMA_KEY, gemma())] {
        for run in reference["greedy_ids"][key].as_array().unwrap() {
            let ids = |k: &str| -> Vec<u32> {
                run[k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as u32)
                    .collect()
            };
            let prompt = run["prompt"].as_str().unwrap();
            assert_eq!(
                tok.encode(prompt, true, true),
                ids("prompt_ids"),
                "{key}: {prompt:?}"
            );
            let mut dec = rustorch_tokenizer::StreamDecoder::new(tok);
            let mut text: String = ids("ids").iter().map(|&id| dec.push(id)).collect();
            text.push_str(&dec.flush());
            assert_eq!(text, run["text"].as_str().unwrap(), "{key}: {prompt:?}");
        }
    }
}
