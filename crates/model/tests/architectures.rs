//! Every architecture against llama.cpp: full logits of tiny random-weight files
//! (`tests/data/tiny-arch`, made by `scripts/tiny-arch.py`; llama.cpp's logits in
//! `tests/data/llamacpp-tiny-arch.json`, see `tests/data/README-arch.md`).

use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load, Device, Logits};

mod support;
use support::tiny_arch;

/// Relative L2 error of each position's logits ≤ 2%, and the same argmax wherever llama.cpp's
/// top-two margin is at least 0.5 ([`tiny_arch::check`]).
fn check(arch: &str) {
    // llama.cpp ran this file with its context padded to 256.
    check_ctx(arch, 256);
}

/// [`check`] with a context of `n_ctx` positions.
fn check_ctx(arch: &str, n_ctx: usize) {
    let r = tiny_arch::reference(arch);
    let mut m = load(
        Arc::new(GgufFile::open(&r.file).unwrap()),
        Device::Cpu,
        n_ctx,
    )
    .unwrap();
    let n_vocab = m.config().n_vocab;
    let mut got = Vec::new();
    m.eval(&r.tokens, 0, Logits::All, &mut got).unwrap();
    tiny_arch::check(&r, arch, &got, n_vocab);
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

/// LongRoPE compares the context padded to 256, as llama.cpp does: `-c 100` of a file whose
/// original context is 128 still takes the long factors (llama.cpp runs it at 256).
#[test]
fn phi3_long_factors_from_the_padded_context() {
    check_ctx("phi3-long", 100);
}

/// The largest difference between two logit rows, relative to the largest logit.
fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = a.iter().fold(1e-6f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

/// Gemma 3's sliding-window layers keep a ring of their last positions (here 8 + 511 of a
/// 2,048-position context): a long sequence gives the same logits whether it runs in 512-row
/// steps or one row at a time past the ring's wrap; a sequence resumed inside what the ring
/// holds continues exactly; one resumed behind it is refused with an error; one restarted at 0
/// runs.
#[test]
fn gemma3_sliding_window_ring() {
    let r = tiny_arch::reference("gemma3");
    let file = Arc::new(GgufFile::open(&r.file).unwrap());
    let mut a = load(file.clone(), Device::Cpu, 2048).unwrap();
    let n_vocab = a.config().n_vocab;
    let n = 1400;
    let tokens: Vec<u32> = (0..n).map(|i| ((i * 7919 + 3) % n_vocab) as u32).collect();
    let mut all = Vec::new();
    a.eval(&tokens, 0, Logits::All, &mut all).unwrap();
    let row = |t: usize| &all[t * n_vocab..(t + 1) * n_vocab];

    let mut b = load(file, Device::Cpu, 2048).unwrap();
    let mut got = Vec::new();
    b.eval(&tokens[..600], 0, Logits::Last, &mut got).unwrap();
    assert!(max_rel_diff(row(599), &got) < 1e-3);
    for t in 600..n {
        b.eval(&tokens[t..t + 1], t, Logits::Last, &mut got)
            .unwrap();
        let d = max_rel_diff(row(t), &got);
        assert!(d < 1e-3, "position {t}: one row at a time differs by {d}");
    }

    // The ring holds positions 881..1400: resuming at 1300 sees 1293..1299.
    b.eval(&tokens[1300..1310], 1300, Logits::All, &mut got)
        .unwrap();
    for t in 0..10 {
        let d = max_rel_diff(row(1300 + t), &got[t * n_vocab..(t + 1) * n_vocab]);
        assert!(d < 1e-3, "resumed position {}: differs by {d}", 1300 + t);
    }
    let err = b
        .eval(&tokens[500..510], 500, Logits::Last, &mut got)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no longer hold position 493"), "{err}");
    b.eval(&tokens[..10], 0, Logits::All, &mut got).unwrap();
    assert!(max_rel_diff(&all[..10 * n_vocab], &got) < 1e-3);
}
