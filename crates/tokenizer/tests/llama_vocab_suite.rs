//! llama.cpp's own tokenizer test suite (`tests/test-tokenizer-0.cpp`): the vocabulary-only
//! GGUF files in its `models/` folder (`ggml-vocab-*.gguf`), each with `.inp` texts and `.out`
//! ids that llama.cpp's CI checks with add_special = false, parse_special = false.
//!
//! The files are not in this repository (20+ MB); point LLAMA_CPP_VOCABS at llama.cpp's
//! `models/` folder (e.g. from the `llama-cpp-python==0.3.36` sdist, `vendor/llama.cpp/models`).
//! Without it the test says so and passes.

use rustorch_tokenizer::{Tokenizer, TokenizerError};
use std::path::PathBuf;

fn vocab_dir() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("LLAMA_CPP_VOCABS")?);
    assert!(
        dir.is_dir(),
        "LLAMA_CPP_VOCABS={} is not a directory",
        dir.display()
    );
    Some(dir)
}

fn read_cases(inp: &str, out: &str) -> Vec<(String, Vec<u32>)> {
    const SEP: &str = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut pos = 0;
    while pos < inp.len() {
        match inp[pos..].find(SEP) {
            Some(n) => {
                texts.push(inp[pos..pos + n].to_owned());
                pos += n + SEP.len();
            }
            None => {
                texts.push(inp[pos..].to_owned());
                break;
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "input and output files have different numbers of tests"
    );
    texts.into_iter().zip(ids).collect()
}

#[test]
fn llama_cpp_vocab_suite() {
    let Some(dir) = vocab_dir() else {
        eprintln!("LLAMA_CPP_VOCABS not set: skipping llama.cpp's ggml-vocab-*.gguf suite");
        return;
    };
    let mut report = Vec::new();
    let mut checked = 0;
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
        .collect();
    names.sort();
    for path in names {
        let inp = path.with_extension("gguf.inp");
        let out = path.with_extension("gguf.out");
        let (Ok(inp), Ok(out)) = (std::fs::read_to_string(&inp), std::fs::read_to_string(&out))
        else {
            continue;
        };
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let f = rustorch_gguf::GgufFile::open(&path).unwrap();
        let tok = match Tokenizer::from_gguf(&f) {
            Ok(t) => t,
            Err(e @ TokenizerError::UnsupportedModel { .. }) => {
                eprintln!("{name}: skipped ({e})");
                continue;
            }
            Err(e) => panic!("{name}: {e}"),
        };
        let cases = read_cases(&inp, &out);
        let failed: Vec<String> = cases
            .iter()
            .filter_map(|(text, want)| {
                let got = tok.encode(text, false, false);
                (&got != want).then(|| format!("  {text:?}\n    want {want:?}\n    got  {got:?}"))
            })
            .collect();
        eprintln!(
            "{name}: {} of {} match",
            cases.len() - failed.len(),
            cases.len()
        );
        checked += cases.len();
        if !failed.is_empty() {
            report.push(format!("{name}:\n{}", failed.join("\n")));
        }
    }
    assert!(
        checked > 0,
        "no ggml-vocab-*.gguf with .inp/.out in {}",
        dir.display()
    );
    assert!(report.is_empty(), "{}", report.join("\n"));
}
