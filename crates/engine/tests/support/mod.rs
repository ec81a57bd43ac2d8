//! The engine tests' model, prompts and solo runs, shared by the CPU (`engine.rs`) and GPU
//! (`engine_gpu.rs`: wgpu or CUDA) tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_engine::engine::{Engine, EngineConfig, Request};
use rustorch_engine::sampler::SamplerConfig;
use rustorch_gguf::GgufFile;
use rustorch_model::{load_cache, Device, KvSize, Logits};
use rustorch_tokenizer::Tokenizer;

/// SmolLM2-135M-Instruct Q4_1, fetched by `scripts/fetch-models.sh` (`RUSTORCH_MODELS`, else
/// `~/.cache/rustorch/models`).
pub fn smollm2() -> Arc<GgufFile> {
    let dir = std::env::var_os("RUSTORCH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        });
    let p = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    Arc::new(GgufFile::open(p).unwrap())
}

/// An engine on `device` over a cache of `n_seq` sequences of up to 512 positions and a pool of
/// `n_blocks` blocks.
pub fn engine_on(
    device: Device,
    file: &Arc<GgufFile>,
    n_seq: usize,
    n_blocks: usize,
    cfg: EngineConfig,
) -> Engine {
    let size = KvSize {
        n_seq,
        seq_ctx: 512,
        n_blocks,
    };
    let model = load_cache(file.clone(), device, size, &Default::default()).unwrap();
    let tok = Arc::new(Tokenizer::from_gguf(file).unwrap());
    Engine::new(model, tok, cfg)
}

const PROMPTS: [&str; 8] = [
    "The capital of France is",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "The three primary colors are",
    "Water boils at a temperature of",
    "My favourite book is",
    "The quick brown fox",
    "In 1969, the first humans",
];

pub fn prompts(file: &Arc<GgufFile>) -> Vec<Vec<u32>> {
    let tok = Tokenizer::from_gguf(file).unwrap();
    PROMPTS.iter().map(|p| tok.encode(p, true, false)).collect()
}

pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Request {
    Request {
        prompt,
        max_tokens,
        sampling: SamplerConfig::greedy(),
        stop: Vec::new(),
        ignore_eos: true,
        logprobs: None,
    }
}

/// Greedy tokens of `prompt` run alone on `device`, one token at a time, with each step's
/// top-two margin.
pub fn alone_on(
    device: Device,
    file: &Arc<GgufFile>,
    prompt: &[u32],
    n: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut m = rustorch_model::load(file.clone(), device, 512).unwrap();
    let mut logits = Vec::new();
    m.eval(prompt, 0, Logits::Last, &mut logits).unwrap();
    let (mut ids, mut margins) = (Vec::new(), Vec::new());
    for i in 0..n {
        let best = rustorch_model::runner::argmax(&logits) as usize;
        let second = (logits.iter().enumerate())
            .filter(|&(j, _)| j != best)
            .map(|(_, &v)| v)
            .fold(f32::NEG_INFINITY, f32::max);
        ids.push(best as u32);
        margins.push(logits[best] - second);
        m.eval(&[best as u32], prompt.len() + i, Logits::Last, &mut logits)
            .unwrap();
    }
    (ids, margins)
}

/// `got` equals `want` up to the first position where the solo run's top two were closer than
/// 0.25 (a near-tie that rounding may flip); returns how many tokens were compared.
pub fn agree_to_near_tie(what: &str, got: &[u32], want: &[u32], margins: &[f32]) -> usize {
    let n = margins.iter().position(|&m| m < 0.25).unwrap_or(want.len());
    assert_eq!(
        &got[..n],
        &want[..n],
        "{what}: differs before the first near-tie ({n})"
    );
    n
}
