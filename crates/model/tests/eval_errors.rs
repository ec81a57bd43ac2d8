//! Evaluation errors are typed and checked before any work: an empty batch, a token id outside
//! the vocabulary; and a prompt longer than one batch runs the output head once.

use std::sync::Arc;

use rustorch_model::{load, Device, Logits, ModelError, N_UBATCH};

mod support;

#[test]
fn empty_batches_and_unknown_tokens_are_typed_errors() {
    let mut m = load(support::smollm2(), Device::Cpu, 64).unwrap();
    let n_vocab = m.config().n_vocab;
    let mut out = Vec::new();
    assert!(matches!(
        m.eval(&[], 0, Logits::Last, &mut out),
        Err(ModelError::EmptyBatch)
    ));
    let e = m.eval(&[1, n_vocab as u32], 0, Logits::All, &mut out);
    assert!(
        matches!(e, Err(ModelError::TokenOutOfVocab { token, n_vocab: v }) if token == n_vocab as u32 && v == n_vocab),
        "{e:?}"
    );
    // Nothing was evaluated: the same positions still take a valid batch.
    m.eval(&[1, 2], 0, Logits::All, &mut out).unwrap();
    assert_eq!(out.len(), 2 * n_vocab);
}

#[test]
fn a_long_prompt_gives_the_logits_of_its_last_token() {
    // Three batches, only the last through the output head: the logits of its last token are
    // those of the same text evaluated with every row's logits (no earlier batch's head output
    // is mistaken for them).
    let file = support::smollm2();
    let n = 2 * N_UBATCH + 7;
    let tokens: Vec<u32> = (0..n as u32).map(|i| 1 + (i * 7919) % 1000).collect();
    let mut a = load(Arc::clone(&file), Device::Cpu, n).unwrap();
    let mut b = load(file, Device::Cpu, n).unwrap();
    let n_vocab = a.config().n_vocab;
    let (mut last, mut all) = (Vec::new(), Vec::new());
    a.eval(&tokens, 0, Logits::Last, &mut last).unwrap();
    b.eval(&tokens, 0, Logits::All, &mut all).unwrap();
    assert_eq!(last.len(), n_vocab);
    // One row through the head takes the decode kernels, many rows the prompt's: the same up to
    // their rounding.
    let want = &all[(n - 1) * n_vocab..];
    let diff = last
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let argmax = |v: &[f32]| rustorch_model::runner::argmax(v);
    assert!(diff < 0.25, "largest logit difference {diff}");
    assert_eq!(argmax(&last), argmax(want));
}
