//! Two sequences evaluated in one call give each sequence's logits as when it runs alone: the
//! check shared by every backend's tests (`two_sequences.rs` on the CPU, `cuda.rs` on the device,
//! `wgpu_model.rs` on Vulkan).

use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load_seqs, BackendOptions, Batch, Device, Logits, Model};

/// Checks that two logit rows differ by at most `tol`, and that their argmax agrees wherever the
/// reference's top two are more than `2 * tol` apart (closer ones may swap within the tolerance).
fn compare(what: &str, got: &[f32], want: &[f32], tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let diff = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    eprintln!("{what}: largest difference {diff}");
    assert!(
        diff <= tol,
        "{what}: logits differ by {diff} (tolerance {tol})"
    );
    let best = rustorch_model::runner::argmax(want) as usize;
    let second = want
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != best)
        .map(|(_, &v)| v)
        .fold(f32::NEG_INFINITY, f32::max);
    if want[best] - second > 2.0 * tol {
        assert_eq!(
            rustorch_model::runner::argmax(got) as usize,
            best,
            "{what}: argmax"
        );
    }
}

fn alone(
    file: &Arc<GgufFile>,
    device: Device,
    opts: &BackendOptions,
    tokens: &[u32],
    next: u32,
) -> (Vec<f32>, Vec<f32>) {
    let mut m = load_seqs(Arc::clone(file), device, 64, 1, opts).unwrap();
    let (mut prompt, mut step) = (Vec::new(), Vec::new());
    m.eval(tokens, 0, Logits::All, &mut prompt).unwrap();
    m.eval(&[next], tokens.len(), Logits::Last, &mut step)
        .unwrap();
    (prompt, step)
}

/// Two sequences in one cache of three. First blocks: A (8 tokens, cache slot 2) then B (8
/// tokens, slot 0) in one call, each block laid out as when it runs alone, so every row's logits
/// must be within `tol_same` of the sequence alone (0 where the backend's arithmetic depends only
/// on the rows' layout). Then rows interleaved A0 B0 A1 B1 ... with A longer (its last three in a
/// run), and one decode row of each sequence in one call: within `tol_mixed` of alone (the
/// batch's shape changes the kernels' summation order), with the same argmax.
pub fn check(file: Arc<GgufFile>, device: Device, tol_same: f32, tol_mixed: f32) {
    check_with(file, device, &Default::default(), tol_same, tol_mixed)
}

/// [`check`] with the backend's options `opts`.
pub fn check_with(
    file: Arc<GgufFile>,
    device: Device,
    opts: &BackendOptions,
    tol_same: f32,
    tol_mixed: f32,
) {
    let n_vocab;
    {
        let a: Vec<u32> = vec![1, 504, 2240, 314, 260, 3458, 28, 216];
        let b: Vec<u32> = vec![1, 17, 9012, 30, 4402, 982, 4, 1187];
        let (a_prompt, _) = alone(&file, device, opts, &a, 2);
        let (b_prompt, _) = alone(&file, device, opts, &b, 2);
        let mut m = load_seqs(Arc::clone(&file), device, 64, 3, opts).unwrap();
        n_vocab = m.config().n_vocab;
        let tokens: Vec<u32> = a.iter().chain(&b).copied().collect();
        let seqs: Vec<u32> = (0..16).map(|i| if i < 8 { 2 } else { 0 }).collect();
        let pos: Vec<u32> = (0..16).map(|i| i % 8).collect();
        let rows: Vec<u32> = (0..16).collect();
        let mut out = Vec::new();
        let batch = Batch {
            tokens: &tokens,
            seqs: &seqs,
            pos: &pos,
        };
        m.eval_batch(&batch, &rows, &mut out).unwrap();
        let want: Vec<f32> = a_prompt.iter().chain(&b_prompt).copied().collect();
        for r in 0..16 {
            let rr = r * n_vocab..(r + 1) * n_vocab;
            compare(
                &format!("{device:?} blocks row {r}"),
                &out[rr.clone()],
                &want[rr],
                tol_same,
            );
        }
    }

    let tol = tol_mixed;
    let a: Vec<u32> = vec![1, 504, 2240, 314, 260, 3458, 28, 216, 5127];
    let b: Vec<u32> = vec![1, 17, 9012, 30, 4402, 982];
    let (next_a, next_b) = (1042u32, 77u32);
    let (a_prompt, a_step) = alone(&file, device, opts, &a, next_a);
    let (b_prompt, b_step) = alone(&file, device, opts, &b, next_b);

    let mut m: Box<dyn Model> = load_seqs(file, device, 64, 3, opts).unwrap();
    assert_eq!(m.n_seq(), 3);
    let (mut tokens, mut seqs, mut pos, mut which) = (vec![], vec![], vec![], vec![]);
    for i in 0..a.len().max(b.len()) {
        for (seq, t, name) in [(2u32, &a, 'A'), (0u32, &b, 'B')] {
            if let Some(&tok) = t.get(i) {
                tokens.push(tok);
                seqs.push(seq);
                pos.push(i as u32);
                which.push((name, i));
            }
        }
    }
    let rows: Vec<u32> = (0..tokens.len() as u32).collect();
    let mut out = Vec::new();
    let batch = Batch {
        tokens: &tokens,
        seqs: &seqs,
        pos: &pos,
    };
    m.eval_batch(&batch, &rows, &mut out).unwrap();
    assert_eq!(out.len(), tokens.len() * n_vocab);
    for (r, &(name, i)) in which.iter().enumerate() {
        let want = match name {
            'A' => &a_prompt[i * n_vocab..(i + 1) * n_vocab],
            _ => &b_prompt[i * n_vocab..(i + 1) * n_vocab],
        };
        compare(
            &format!("{device:?} prompt row {r} ({name}{i})"),
            &out[r * n_vocab..(r + 1) * n_vocab],
            want,
            tol,
        );
    }

    // One decode step of both sequences in one call, B's row first.
    let batch = Batch {
        tokens: &[next_b, next_a],
        seqs: &[0, 2],
        pos: &[b.len() as u32, a.len() as u32],
    };
    m.eval_batch(&batch, &[0, 1], &mut out).unwrap();
    compare(
        &format!("{device:?} decode B"),
        &out[..n_vocab],
        &b_step,
        tol,
    );
    compare(
        &format!("{device:?} decode A"),
        &out[n_vocab..],
        &a_step,
        tol,
    );

    // Only the rows asked for come back, in row order.
    let batch = Batch {
        tokens: &[next_b, next_a],
        seqs: &[0, 2],
        pos: &[b.len() as u32, a.len() as u32],
    };
    m.eval_batch(&batch, &[1], &mut out).unwrap();
    assert_eq!(out.len(), n_vocab);
    compare(&format!("{device:?} decode A alone"), &out, &a_step, tol);
}
