//! Several sequences in one forward call on the CPU backend: each row attends to its own
//! sequence's cache at its own position, and gets the logits it gets alone.

use rustorch_model::{load_seqs, Batch, Device, ModelError};

mod support;

#[test]
fn interleaved_sequences_match_each_alone() {
    // The CPU's matmuls group tokens by eight, and a token's sums depend on its group's size:
    // blocks of one sequence laid out as they are alone give identical logits; interleaved rows
    // agree to the rounding of the kernels (below the 1-row / many-row difference of the same
    // file, up to about 0.9).
    support::two_sequences::check(support::smollm2(), Device::Cpu, 0.0, 1.0);
}

#[test]
fn rows_outside_the_cache_are_errors() {
    let mut m = load_seqs(support::smollm2(), Device::Cpu, 16, 2, &Default::default()).unwrap();
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

/// The paged KV cache: a sequence whose blocks are scattered over the pool gets exactly the
/// logits it gets with its own contiguous blocks; a second sequence whose table shares the
/// first's prefix blocks evaluates only its suffix and gets the logits of a cold prefill of the
/// whole prompt, bit for bit; a position without a block is an error.
#[test]
fn paged_blocks_and_shared_prefixes() {
    use rustorch_model::{load_cache, KvSize, Logits, KV_BLOCK};
    let file = support::smollm2();
    let n_vocab = rustorch_model::Config::from_gguf(&file).unwrap().n_vocab;
    let tokens: Vec<u32> = (0..70).map(|i| (i * 37 + 11) % 4000 + 5).collect();
    let mut cold = Vec::new();
    let mut side = load_seqs(file.clone(), Device::Cpu, 256, 1, &Default::default()).unwrap();
    side.eval(&tokens, 0, Logits::All, &mut cold).unwrap();

    // A pool of 24 blocks for two sequences of up to 256 positions (16 blocks each): not side
    // by side, so nothing is mapped until the caller maps it.
    let size = KvSize {
        n_seq: 2,
        seq_ctx: 256,
        n_blocks: 24,
    };
    let mut m = load_cache(file, Device::Cpu, size, &Default::default()).unwrap();
    assert!(!m.kv_spec().side_by_side());
    let mut out = Vec::new();
    let err = m.eval(&tokens, 0, Logits::All, &mut out).unwrap_err();
    assert!(err.to_string().contains("no KV block"), "{err}");

    let blocks = [7, 3, 20, 11, 0];
    assert_eq!(blocks.len(), tokens.len().div_ceil(KV_BLOCK));
    m.map_blocks(0, 0, &blocks).unwrap();
    m.eval(&tokens, 0, Logits::All, &mut out).unwrap();
    assert!(out == cold, "scattered blocks change the logits");

    // Sequence 1 shares the four full blocks (64 positions) and has its own fifth block.
    m.map_blocks(1, 0, &blocks[..4]).unwrap();
    m.map_blocks(1, 4, &[21]).unwrap();
    let rows: Vec<u32> = (0..6).collect();
    let suffix = rustorch_model::Batch {
        tokens: &tokens[64..],
        seqs: &[1; 6],
        pos: &[64, 65, 66, 67, 68, 69],
    };
    m.eval_batch(&suffix, &rows, &mut out).unwrap();
    let diff = (out.iter().zip(&cold[64 * n_vocab..]))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        diff == 0.0,
        "a shared prefix differs from a cold prefill by {diff}"
    );

    // Out-of-pool blocks and tables are errors.
    assert!(m.map_blocks(0, 0, &[24]).is_err());
    assert!(m.map_blocks(2, 0, &[1]).is_err());
    assert!(m.map_blocks(0, 16, &[1]).is_err());
}
