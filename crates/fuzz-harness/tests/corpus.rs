//! Replays every committed fuzz input through its target's function: the seeds
//! (`fuzz/seeds/<target>/`), the corpus the fuzzer grew from them (`fuzz/corpus/<target>/`) and
//! the inputs that once crashed it (`fuzz/regressions/<target>/`). So CI keeps checking, without
//! nightly or libFuzzer, everything the fuzzer once reached.
//!
//! Inputs of bugs not fixed yet wait in `fuzz/regressions/<target>/open/`: they are not replayed
//! (an abort for memory cannot be caught and would end the whole test binary), only counted here;
//! move one up a folder when its fix lands.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Instant;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `dir`, sorted; `None` when it does not exist.
fn files(dir: &Path) -> Option<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).ok()?;
    let mut v: Vec<PathBuf> = entries
        .map(|e| e.expect("reading a corpus folder").path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    Some(v)
}

fn replay(target: &str) {
    let run = rustorch_fuzz_harness::TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, f)| f)
        .expect("a target of the harness");
    let root = fuzz_dir();
    let mut inputs = Vec::new();
    for kind in ["seeds", "corpus"] {
        let dir = root.join(kind).join(target);
        match files(&dir) {
            Some(f) if !f.is_empty() => inputs.extend(f),
            _ => panic!(
                "{}: missing or empty; the fuzz inputs of '{target}' must be committed (fuzz/README.md)",
                dir.display()
            ),
        }
    }
    let regressions = root.join("regressions").join(target);
    inputs.extend(files(&regressions).unwrap_or_default());
    let open = files(&regressions.join("open")).unwrap_or_default();
    if !open.is_empty() {
        eprintln!(
            "{target}: {} input(s) of open bugs in {} not replayed",
            open.len(),
            regressions.join("open").display()
        );
    }

    let start = Instant::now();
    let mut failed = Vec::new();
    for path in &inputs {
        let data = std::fs::read(path).expect("reading a fuzz input");
        if catch_unwind(AssertUnwindSafe(|| run(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    eprintln!(
        "{target}: {} inputs in {:.1} s",
        inputs.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        failed.is_empty(),
        "{target}: {} input(s) panicked (replay one with `cargo +nightly fuzz run {target} <file>`):\n{}",
        failed.len(),
        failed.join("\n")
    );
}

#[test]
fn gguf_reader_corpus() {
    replay("gguf_reader");
}

#[test]
fn tokenizer_corpus() {
    replay("tokenizer");
}

#[test]
fn chat_template_corpus() {
    replay("chat_template");
}

#[test]
fn model_loader_corpus() {
    replay("model_loader");
}
