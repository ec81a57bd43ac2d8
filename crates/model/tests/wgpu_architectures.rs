//! Every architecture on the wgpu backend: the tiny random-weight file of each (Llama with
//! rope_freqs, Qwen2, Qwen3, Gemma 3 with sliding-window layers and its default layer pattern,
//! Phi-3 with LongRoPE's short and long factors) against llama.cpp's logits, as the CPU's
//! `architectures.rs` checks them, once as one prompt (the batched kernels) and once as a shorter
//! prompt and single-token steps after it (the decode kernels, with the RoPE and the cache store
//! folded into attention); and the real Gemma 3 270M (its embedding and output head larger than
//! lavapipe lets one buffer bind, so uploaded in parts) against the CPU backend over a short
//! prompt and decode steps.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load, Device, Logits};
use rustorch_tokenizer::Tokenizer;

mod support;
use support::tiny_arch;

fn gpu_device() -> Device {
    if cfg!(target_os = "macos") {
        Device::Metal
    } else {
        Device::Vulkan
    }
}

/// Rows of the prompt before the single-token steps of the decode run.
const PROMPT: usize = 40;

/// The tiny file of `arch` on the GPU: its 64 tokens as one prompt, then the first [`PROMPT`] as a
/// prompt and the rest one by one; every position's logits against llama.cpp's both times.
fn check(arch: &str) {
    let r = tiny_arch::reference(arch);
    // llama.cpp ran this file with its context padded to 256.
    let file = Arc::new(GgufFile::open(&r.file).unwrap());
    let mut m = load(file, gpu_device(), 256)
        .unwrap_or_else(|e| panic!("{arch} on wgpu: {e} (CI installs mesa-vulkan-drivers)"));
    let n_vocab = m.config().n_vocab;
    let mut got = Vec::new();
    m.eval(&r.tokens, 0, Logits::All, &mut got).unwrap();
    tiny_arch::check(&r, &format!("{arch} (wgpu, one prompt)"), &got, n_vocab);

    // The cache's positions are written again from 0.
    let mut all = Vec::new();
    m.eval(&r.tokens[..PROMPT], 0, Logits::All, &mut all)
        .unwrap();
    let mut step = Vec::new();
    for (pos, &t) in r.tokens.iter().enumerate().skip(PROMPT) {
        m.eval(&[t], pos, Logits::Last, &mut step).unwrap();
        all.extend_from_slice(&step);
    }
    tiny_arch::check(&r, &format!("{arch} (wgpu, decode)"), &all, n_vocab);
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

/// Relative L2 error of `got` against `want`.
fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let (mut err, mut norm) = (0f64, 0f64);
    for (a, b) in got.iter().zip(want) {
        err += ((a - b) as f64).powi(2);
        norm += (*b as f64).powi(2);
    }
    (err / norm).sqrt()
}

#[test]
fn gemma3_sliding_window_rings_match_the_cpu_backend() {
    // With a context of 1024 the tiny Gemma 3's sliding-window layers (window 8) keep a ring of
    // 8 + 512 - 1 = 519 positions per sequence, its global layer a paged pool. 600 positions (its
    // reference tokens over and over) as a prompt (the runner's steps of 512 and 88 rows, the
    // second's windows reaching into the first's ring) and 40 decode steps wrap the rings. Every
    // position's logits against the CPU backend's rings: relative L2 error within the 2% the tiny
    // files are held to against llama.cpp.
    let r = tiny_arch::reference("gemma3");
    let file = Arc::new(GgufFile::open(&r.file).unwrap());
    let mut cpu = load(Arc::clone(&file), Device::Cpu, 1024).unwrap();
    let mut gpu = load(file, gpu_device(), 1024).unwrap();
    assert_eq!(gpu.kv_spec().ring, [519, 519, 0]);
    let n_vocab = cpu.config().n_vocab;
    let tokens: Vec<u32> = r.tokens.iter().copied().cycle().take(640).collect();
    let (mut lc, mut lg) = (Vec::new(), Vec::new());
    cpu.eval(&tokens[..600], 0, Logits::All, &mut lc).unwrap();
    gpu.eval(&tokens[..600], 0, Logits::All, &mut lg).unwrap();
    for pos in 600..640 {
        let (mut c, mut g) = (Vec::new(), Vec::new());
        cpu.eval(&tokens[pos..pos + 1], pos, Logits::Last, &mut c)
            .unwrap();
        gpu.eval(&tokens[pos..pos + 1], pos, Logits::Last, &mut g)
            .unwrap();
        lc.extend_from_slice(&c);
        lg.extend_from_slice(&g);
    }
    let mut worst = 0f64;
    for (pos, (c, g)) in lc.chunks(n_vocab).zip(lg.chunks(n_vocab)).enumerate() {
        let e = rel_l2(g, c);
        worst = worst.max(e);
        assert!(e <= 0.02, "position {pos}: relative L2 error {e:.4}");
    }
    eprintln!("gemma3 rings (wgpu vs cpu, 640 positions): worst relative L2 error {worst:.5}");
}

#[test]
fn phi3_short_factors() {
    check("phi3");
}

#[test]
fn phi3_long_factors() {
    check("phi3-long");
}

fn gemma_path() -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        }
    };
    let path = dir.join("gemma-3-270m-q4_k_m.gguf");
    assert!(
        path.exists(),
        "test model {} is missing: run scripts/fetch-models.sh (or set RUSTORCH_MODELS)",
        path.display()
    );
    path
}

/// Index of the largest value and how far the second is below it.
fn top2(row: &[f32]) -> (usize, f32) {
    let best = rustorch_model::runner::argmax(row) as usize;
    let second = row
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &x)| x)
        .fold(f32::NEG_INFINITY, f32::max);
    (best, row[best] - second)
}

#[test]
fn gemma3_270m_agrees_with_the_cpu_backend() {
    // The real file: its token embedding, also the output head (262,144 rows of 640 in Q8_0,
    // 180 MiB as the kernels read it), is past the 128 MiB that lavapipe lets a storage buffer
    // bind, so the embedding and the head run in parts there. A prompt of 16 rows, then 4 decode
    // steps fed the CPU's greedy choice: every position's logits, CPU against GPU.
    let file = Arc::new(GgufFile::open(gemma_path()).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let prompt = tok.encode(
        "The history of the printing press begins in a small town where a young man",
        true,
        false,
    );
    assert!(prompt.len() >= 12, "prompt {prompt:?}");
    let mut cpu = load(Arc::clone(&file), Device::Cpu, 64).unwrap();
    let mut gpu = load(Arc::clone(&file), gpu_device(), 64).unwrap();
    let n_vocab = cpu.config().n_vocab;
    let (mut compared, mut agreed, mut max_diff) = (0usize, 0usize, 0f32);
    let mut check = |c: &[f32], g: &[f32]| {
        let (ca, gap) = top2(c);
        for (a, b) in c.iter().zip(g) {
            max_diff = max_diff.max((a - b).abs());
        }
        if gap >= 0.5 {
            compared += 1;
            agreed += (ca as u32 == rustorch_model::runner::argmax(g)) as usize;
        }
        ca as u32
    };
    let (mut lc, mut lg) = (Vec::new(), Vec::new());
    cpu.eval(&prompt, 0, Logits::All, &mut lc).unwrap();
    gpu.eval(&prompt, 0, Logits::All, &mut lg).unwrap();
    let mut next = 0;
    for (c, g) in lc.chunks(n_vocab).zip(lg.chunks(n_vocab)) {
        next = check(c, g);
    }
    for pos in prompt.len()..prompt.len() + 4 {
        cpu.eval(&[next], pos, Logits::Last, &mut lc).unwrap();
        gpu.eval(&[next], pos, Logits::Last, &mut lg).unwrap();
        next = check(&lc, &lg);
    }
    eprintln!(
        "gemma-3-270m ({} prompt rows), wgpu vs cpu: {agreed}/{compared} confident positions agree, largest logit difference {max_diff}",
        prompt.len()
    );
    assert!(compared >= 8, "only {compared} confident positions");
    // The CPU rounds activations to 8 bits and the GPU keeps f32; Gemma's activations are large
    // (logits span about 40), and the CPU's own prompt and decode kernels give logits up to 3.9
    // apart at the same positions (the GPU's: 0.005).
    assert!(max_diff < 4.0, "largest logit difference {max_diff}");
    assert_eq!(agreed, compared, "argmax differs at a confident position");
}
