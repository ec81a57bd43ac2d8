//! The whole model on the wgpu backend against the CPU backend, on SmolLM2 135M (Q4_1 with Q8_0 /
//! Q6_K tensors): teacher-forced argmax agreement over a prompt (the batched kernels) and over
//! single-token steps after it (decode kernels, split-K attention).
#![cfg(feature = "wgpu")]

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load, Device, Logits};
use rustorch_tokenizer::Tokenizer;

const TEXT: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based ink and a wooden press adapted from \
those used to make wine. Within fifty years, printing shops had spread to more than two hundred \
cities across Europe, and the price of books fell sharply. Scholars could now compare identical \
copies of a text, which changed how knowledge was checked and shared.";

fn model_path() -> PathBuf {
    let dir = match std::env::var_os("RUSTORCH_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/rustorch/models")
        }
    };
    let path = dir.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "test model {} is missing: run scripts/fetch-models.sh (or set RUSTORCH_MODELS)",
        path.display()
    );
    path
}

fn top2(row: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    let mut second = f32::NEG_INFINITY;
    for (i, &x) in row.iter().enumerate() {
        if x > best.1 {
            second = best.1;
            best = (i, x);
        } else if x > second {
            second = x;
        }
    }
    (best.0, best.1 - second)
}

#[test]
fn smollm2_agrees_with_the_cpu_backend() {
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let prompt = tok.encode(TEXT, true, false);
    assert!(prompt.len() > 64, "prompt of {} tokens", prompt.len());
    let gpu_dev = if cfg!(target_os = "macos") {
        Device::Metal
    } else {
        Device::Vulkan
    };
    let mut cpu = load(Arc::clone(&file), Device::Cpu, 256).unwrap();
    let mut gpu = load(Arc::clone(&file), gpu_dev, 256).unwrap();
    let n_vocab = cpu.config().n_vocab;

    let (mut compared, mut agreed, mut max_diff) = (0usize, 0usize, 0f32);
    let mut check = |c: &[f32], g: &[f32]| {
        let (ca, gap) = top2(c);
        let (ga, _) = top2(g);
        for (a, b) in c.iter().zip(g) {
            max_diff = max_diff.max((a - b).abs());
        }
        if gap >= 0.5 {
            compared += 1;
            agreed += (ca == ga) as usize;
        }
        ca as u32
    };

    // The prompt in one batch, logits of every position.
    let (mut lc, mut lg) = (Vec::new(), Vec::new());
    cpu.eval(&prompt, 0, Logits::All, &mut lc).unwrap();
    gpu.eval(&prompt, 0, Logits::All, &mut lg).unwrap();
    let mut next = 0;
    for (c, g) in lc.chunks(n_vocab).zip(lg.chunks(n_vocab)) {
        next = check(c, g);
    }
    // Then 24 single-token steps, both fed the CPU's greedy choice.
    for pos in prompt.len()..prompt.len() + 24 {
        cpu.eval(&[next], pos, Logits::Last, &mut lc).unwrap();
        gpu.eval(&[next], pos, Logits::Last, &mut lg).unwrap();
        next = check(&lc, &lg);
    }
    eprintln!(
        "wgpu vs cpu: {agreed}/{compared} confident positions agree, largest logit difference {max_diff}"
    );
    assert!(compared >= 40, "only {compared} confident positions");
    // The CPU rounds activations to 8 bits and the GPU keeps f32: 1.15 at most on lavapipe.
    assert!(
        max_diff < 2.5,
        "largest logit difference {max_diff} (logits of SmolLM2 span about 30)"
    );
    assert!(
        agreed as f64 >= 0.99 * compared as f64,
        "argmax agreement {agreed}/{compared} is below 99%"
    );
}
