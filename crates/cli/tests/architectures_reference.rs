//! The architectures beyond Llama against llama.cpp (`tests/data/llamacpp-arch.json`, made as
//! `tests/data/README-arch.md` says): the real Gemma 3 270M, and SmolLM2's real weights rewritten
//! exactly into the qwen2, qwen3 and phi3 layouts by `scripts/convert-arch.py` (run here, into the
//! models folder, and checked against the recorded sha256). Perplexity within 1%, teacher-forced
//! argmax at least 99% where llama.cpp's margin is at least 0.5, greedy text up to the first
//! near-tie.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sha2::{Digest, Sha256};

fn arch_json() -> Value {
    let p = common::repo_root().join("tests/data/llamacpp-arch.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    let mut h = Sha256::new();
    let mut f = std::fs::File::open(path).unwrap();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

/// SmolLM2 rewritten as `key` (`smollm2-qwen2`, ...), made once into the models folder.
fn converted(key: &str) -> PathBuf {
    let json = arch_json();
    let m = &json["models"][key];
    let src = common::model(common::SMOLLM);
    let out = src.with_file_name(m["file"].as_str().unwrap());
    let want = m["sha256"].as_str().unwrap();
    if !out.exists() || sha256(&out) != want {
        let arch = key.strip_prefix("smollm2-").unwrap();
        let tmp = out.with_extension(format!("{}.partial", std::process::id()));
        let status = Command::new("python3")
            .arg(common::repo_root().join("scripts/convert-arch.py"))
            .args([src.as_os_str(), arch.as_ref(), tmp.as_os_str()])
            .status()
            .expect("python3 runs scripts/convert-arch.py (pip install gguf==0.19.0)");
        assert!(status.success(), "scripts/convert-arch.py {arch} failed");
        std::fs::rename(&tmp, &out).unwrap();
    }
    assert_eq!(
        sha256(&out),
        want,
        "{}: not the file the references were made from",
        out.display()
    );
    out
}

fn perplexity(model: &Path, n_ctx: usize) -> (f64, u64) {
    let text = common::reference_dir().join("texts/GPL-3");
    let out = common::rustorch_ok(&[
        "perplexity",
        "-m",
        model.to_str().unwrap(),
        "-f",
        text.to_str().unwrap(),
        "-c",
        &n_ctx.to_string(),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    (v["ppl"].as_f64().unwrap(), v["chunks"].as_u64().unwrap())
}

fn check_perplexity(model: &Path, key: &str) {
    for r in arch_json()["perplexity"][key].as_array().unwrap() {
        let n_ctx = r["n_ctx"].as_u64().unwrap() as usize;
        let (ours, chunks) = perplexity(model, n_ctx);
        let theirs = r["ppl"].as_f64().unwrap();
        assert_eq!(
            chunks,
            r["chunks"].as_u64().unwrap(),
            "{key} c={n_ctx}: chunks"
        );
        let rel = (ours - theirs).abs() / theirs;
        eprintln!(
            "{key} c={n_ctx}: PPL ours {ours:.4}, llama.cpp {theirs:.4} ({:.3}%)",
            rel * 100.0
        );
        assert!(
            rel <= 0.01,
            "{key} c={n_ctx}: perplexity {ours:.4} not within 1% of {theirs:.4}"
        );
    }
}

fn check_teacher_forced(model: &Path, key: &str) {
    let text = common::reference_dir().join("texts/GPL-3");
    for tf in arch_json()["teacher_forced"][key].as_array().unwrap() {
        let ids = tf["input_ids"].as_array().unwrap();
        let n = ids.len().to_string();
        // One batch in a context of its own length, as llama.cpp's run at n_ctx = its length.
        let n_ctx = tf["n_ctx"].as_u64().unwrap();
        let out = common::rustorch_ok(&[
            "logits",
            "-m",
            model.to_str().unwrap(),
            "-f",
            text.to_str().unwrap(),
            "--max-tokens",
            &n,
            "--json",
        ]);
        let ours: Value = serde_json::from_str(&out).unwrap();
        let positions = ours["positions"].as_array().unwrap();
        assert_eq!(positions.len(), ids.len(), "{key}: positions");
        let (argmax, margins) = (
            tf["argmax"].as_array().unwrap(),
            tf["margins"].as_array().unwrap(),
        );
        let (mut confident, mut agree) = (0usize, 0usize);
        for (i, p) in positions.iter().enumerate() {
            assert_eq!(p["id"], ids[i], "{key}: input id at {i}");
            if margins[i].as_f64().unwrap() >= 0.5 {
                confident += 1;
                agree += (p["argmax"] == argmax[i]) as usize;
            }
        }
        let rate = agree as f64 / confident as f64;
        eprintln!("{key} ({n} tokens, c={n_ctx}): argmax {agree}/{confident} where llama.cpp's margin >= 0.5");
        assert!(
            rate >= 0.99,
            "{key} c={n_ctx}: teacher-forced agreement {rate:.4}"
        );
    }
}

fn check_greedy(model: &Path, key: &str) {
    for case in arch_json()["greedy_ids"][key].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let prefix = case["stable_prefix_text"].as_str().unwrap();
        let out = common::rustorch_ok(&[
            "run",
            "-m",
            model.to_str().unwrap(),
            "-p",
            prompt,
            "-n",
            "32",
            "--temp",
            "0",
        ]);
        assert!(
            out.starts_with(prefix),
            "{key} {prompt:?}: got {out:?}, want a start of {prefix:?}"
        );
    }
}

fn check_all(model: &Path, key: &str) {
    check_perplexity(model, key);
    check_teacher_forced(model, key);
    check_greedy(model, key);
}

#[test]
fn gemma3_270m() {
    check_all(&common::model(common::GEMMA), common::GEMMA_KEY);
}

#[test]
fn smollm2_as_qwen2() {
    check_all(&converted("smollm2-qwen2"), "smollm2-qwen2");
}

#[test]
fn smollm2_as_qwen3() {
    check_all(&converted("smollm2-qwen3"), "smollm2-qwen3");
}

#[test]
fn smollm2_as_phi3() {
    check_all(&converted("smollm2-phi3"), "smollm2-phi3");
}
