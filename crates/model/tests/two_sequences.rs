//! Several sequences in one forward call on the CPU backend: each row attends to its own
//! sequence's cache at its own position, and gets the logits it gets alone.

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load_seqs, Batch, Device, ModelError};

mod support;

fn smollm2() -> Arc<GgufFile> {
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

#[test]
fn interleaved_sequences_match_each_alone() {
    // The CPU's matmuls group tokens by eight, and a token's sums depend on its group's size:
    // blocks of one sequence laid out as they are alone give identical logits; interleaved rows
    // agree to the rounding of the kernels (below the 1-row / many-row difference of the same
    // file, up to about 0.9).
    support::two_sequences::check(smollm2(), Device::Cpu, 0.0, 1.0);
}

#[test]
fn rows_outside_the_cache_are_errors() {
    let mut m = load_seqs(smollm2(), Device::Cpu, 16, 2, &Default::default()).unwrap();
    let mut out = Vec::new();
    let bad = |tokens: &[u32],
               seqs: &[u32],
               pos: &[u32],
               rows: &[u32],
               m: &mut Box<dyn rustorch_model::Model>| {
        let mut out = Vec::new();
        m.eval_batch(&Batch { tokens, seqs, pos }, rows, &mut out)
    };
    assert!(matches!(
        bad(&[1], &[2], &[0], &[0], &mut m),
        Err(ModelError::BadBatch(_))
    ));
    assert!(matches!(
        bad(&[1], &[0], &[16], &[0], &mut m),
        Err(ModelError::ContextFull { .. })
    ));
    assert!(matches!(
        bad(&[1, 2], &[0], &[0, 1], &[0], &mut m),
        Err(ModelError::BadBatch(_))
    ));
    assert!(matches!(
        bad(&[1, 2], &[0, 0], &[0, 1], &[1, 0], &mut m),
        Err(ModelError::BadBatch(_))
    ));
    assert!(matches!(
        bad(&[1, 2], &[0, 0], &[0, 1], &[2], &mut m),
        Err(ModelError::BadBatch(_))
    ));
    // None of those evaluated anything; a good batch still works.
    m.eval_batch(
        &Batch {
            tokens: &[1, 2],
            seqs: &[1, 1],
            pos: &[0, 1],
        },
        &[1],
        &mut out,
    )
    .unwrap();
    assert_eq!(out.len(), m.config().n_vocab);
}
