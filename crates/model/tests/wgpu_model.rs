//! The whole model on the wgpu backend against the CPU backend, on SmolLM2 135M (Q4_1 with Q8_0 /
//! Q6_K tensors): teacher-forced argmax agreement over a prompt (the batched kernels) and over
//! single-token steps after it (decode kernels, split-K attention); two sequences in one call
//! against each alone; and the paged KV cache: sequences on scattered blocks against the same on
//! their own, and a shared prefix against a cold prefill.
#![cfg(feature = "wgpu")]

use std::path::PathBuf;
use std::sync::Arc;

use rustorch_gguf::GgufFile;
use rustorch_model::{load, load_seqs, Batch, Device, Logits};
use rustorch_tokenizer::Tokenizer;

mod support;

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

/// The options of the tests that compare a row computed beside other rows with the same row
/// alone, within 1e-3: prompt steps from 8 rows tiled (`wgpu.tile_min`, `wgpu.attn_tile_min`;
/// 16 by default), so that the 8-row and longer steps these tests take go through the same
/// kernels. Which rows share a tile does not change a row's sums; steps on either side of the
/// default threshold go through kernels that sum in other orders, and with the f16 cache that
/// reaches 1.3e-3 in SmolLM2's logits (the mixed-batch tolerance, 5e-3, covers those).
fn same_kernels() -> rustorch_model::BackendOptions {
    let mut o = rustorch_model::BackendOptions::from_env();
    o.set("wgpu.tile_min", "8").unwrap();
    o.set("wgpu.attn_tile_min", "8").unwrap();
    o
}

fn gpu_device() -> Device {
    if cfg!(target_os = "macos") {
        Device::Metal
    } else {
        Device::Vulkan
    }
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
    let gpu_dev = gpu_device();
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

const PROMPT_A: &str = "The history of the printing press begins in the fifteenth century, when \
Johannes Gutenberg combined movable metal type, oil-based ink and a wooden press.";
const PROMPT_B: &str = "Photosynthesis turns light, water and carbon dioxide into sugar.";

/// Largest difference of two rows of logits.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn two_sequences_in_one_call_match_each_alone() {
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    let tok = Tokenizer::from_gguf(&file).unwrap();
    let (a, b) = (
        tok.encode(PROMPT_A, true, false),
        tok.encode(PROMPT_B, true, false),
    );
    assert!(
        a.len() > b.len() + 4 && b.len() > 8,
        "prompts of {} and {}",
        a.len(),
        b.len()
    );
    let dev = gpu_device();
    let n_ctx = 128;

    // Each prompt alone on sequence 0 (B overwrites A's positions), then one decode step of its
    // greedy next token.
    let opts = same_kernels();
    let mut alone = load_seqs(Arc::clone(&file), dev, n_ctx, 1, &opts).unwrap();
    let n_vocab = alone.config().n_vocab;
    let mut run_alone = |p: &[u32]| {
        let (mut prompt, mut step) = (Vec::new(), Vec::new());
        alone.eval(p, 0, Logits::All, &mut prompt).unwrap();
        let next = rustorch_model::runner::argmax(&prompt[(p.len() - 1) * n_vocab..]);
        alone
            .eval(&[next], p.len(), Logits::Last, &mut step)
            .unwrap();
        (prompt, next, step)
    };
    let (a_prompt, next_a, a_step) = run_alone(&a);
    let (b_prompt, next_b, b_step) = run_alone(&b);

    // Both prompts in one call, rows interleaved A0 B0 A1 B1 ... (then the rest of A), A on
    // sequence 0 and B on sequence 1, logits of every row.
    let mut m = load_seqs(Arc::clone(&file), dev, n_ctx, 2, &opts).unwrap();
    let (mut tokens, mut seqs, mut pos, mut which) = (vec![], vec![], vec![], vec![]);
    for i in 0..a.len() {
        for (seq, p) in [(0u32, &a), (1, &b)] {
            if let Some(&t) = p.get(i) {
                tokens.push(t);
                seqs.push(seq);
                pos.push(i as u32);
                which.push((seq, i));
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
    // Tolerance 1e-3 (logits of SmolLM2 span about 30): every kernel of a prompt step computes a
    // row's values in an order that does not depend on the other rows (the tiled matmul sums
    // each row on its own; the tiled attention takes a tile's rows sequence by sequence, over
    // key tiles at fixed offsets), and with `same_kernels` both runs' prompt steps are tiled, so
    // the rows match their sequence alone to the last bit on the adapters met so far (lavapipe:
    // 0); the margin allows a driver that schedules a tile's sums differently.
    let mut worst = 0f32;
    for (r, &(seq, i)) in which.iter().enumerate() {
        let want = if seq == 0 { &a_prompt } else { &b_prompt };
        let (got, want) = (
            &out[r * n_vocab..(r + 1) * n_vocab],
            &want[i * n_vocab..(i + 1) * n_vocab],
        );
        let d = max_diff(got, want);
        worst = worst.max(d);
        assert!(
            d <= 1e-3,
            "row {r} (sequence {seq}, position {i}): logits differ by {d}"
        );
        assert_eq!(
            rustorch_model::runner::argmax(got),
            rustorch_model::runner::argmax(want),
            "row {r} (sequence {seq}, position {i}): argmax"
        );
    }
    eprintln!("two interleaved prompts: largest difference from alone {worst}");

    // One decode step of both sequences in one call (B's row first) against each alone. Alone,
    // one row goes through the decode mat-vec; two rows through the prompt matmul, which sums a
    // row in another order: f32 rounding, largest difference 1.3e-5 on lavapipe. Tolerance 5e-3
    // leaves room for other GPUs' summation orders and fused multiply-adds, and is still far
    // below what a wrong position or sequence gives (differences of whole units).
    let batch = Batch {
        tokens: &[next_b, next_a],
        seqs: &[1, 0],
        pos: &[b.len() as u32, a.len() as u32],
    };
    m.eval_batch(&batch, &[0, 1], &mut out).unwrap();
    for (what, got, want) in [
        ("B", &out[..n_vocab], &b_step[..]),
        ("A", &out[n_vocab..], &a_step[..]),
    ] {
        let d = max_diff(got, want);
        eprintln!("decode step of {what} beside the other sequence: largest difference {d}");
        assert!(d <= 5e-3, "decode of {what}: logits differ by {d}");
        assert_eq!(
            rustorch_model::runner::argmax(got),
            rustorch_model::runner::argmax(want),
            "decode of {what}: argmax"
        );
    }
}

#[test]
fn two_sequences_shared_check() {
    // The check every backend runs (tests/support/two_sequences.rs): blocks of one sequence laid
    // out as alone are the same rows as alone (no row depends on another's: 1e-3 as above);
    // mixed rows are too; a decode step of two sequences changes the kernels a row goes through
    // (the mat-vec alone, the prompt matmul beside another row): 5e-3 as above.
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    support::two_sequences::check_with(file, gpu_device(), &same_kernels(), 1e-3, 5e-3);
}

/// Checks that every row (`n_vocab` values) of `got` is within `tol` of the same row of `want`,
/// with the same argmax.
fn check_rows(what: &str, got: &[f32], want: &[f32], n_vocab: usize, tol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: logits");
    let mut worst = 0f32;
    for (r, (g, w)) in got.chunks(n_vocab).zip(want.chunks(n_vocab)).enumerate() {
        let d = max_diff(g, w);
        worst = worst.max(d);
        assert!(d <= tol, "{what}, row {r}: logits differ by {d}");
        assert_eq!(
            rustorch_model::runner::argmax(g),
            rustorch_model::runner::argmax(w),
            "{what}, row {r}: argmax"
        );
    }
    eprintln!("{what}: largest difference {worst}");
}

/// The paged KV cache: two sequences on blocks scattered over a pool smaller than side by side
/// (one's in reverse order, the other's between them) give the logits of the same steps run with
/// each sequence on its own contiguous blocks: a prompt step of both (interleaved rows, the
/// prompt kernels), greedy decode steps of both (the prompt matmul over two rows; each sequence
/// crosses into another block), and decode steps of one (the mat-vec, the RoPE and the cache
/// store folded into attention). Only where the keys are in memory changes, not the order
/// anything is summed in: tolerance 1e-3 as above (lavapipe: 0). Short, since lavapipe takes
/// about half a second a prompt row; `wgpu_kernels.rs` runs attention over scattered blocks
/// past 256 keys, where decode splits them.
#[test]
fn scattered_blocks_match_own_blocks() {
    use rustorch_model::{load_cache, KvSize, KV_BLOCK};
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    let dev = gpu_device();
    let (n_ctx, n_blocks) = (64, 6);
    let a: Vec<u32> = (0..28).map(|i| (i * 37 + 11) % 4000 + 5).collect();
    let b: Vec<u32> = (0..12).map(|i| (i * 53 + 7) % 4000 + 5).collect();
    let (both, one) = (6, 2); // decode steps of both sequences, then of A alone
    let mut own = load_seqs(Arc::clone(&file), dev, n_ctx, 2, &Default::default()).unwrap();
    let size = KvSize {
        n_seq: 2,
        seq_ctx: n_ctx,
        n_blocks,
    };
    let mut paged = load_cache(Arc::clone(&file), dev, size, &Default::default()).unwrap();
    assert!(own.kv_spec().side_by_side() && !paged.kv_spec().side_by_side());
    let n_vocab = own.config().n_vocab;
    // A (sequence 1) needs 3 blocks, B (sequence 0) 2.
    let (blocks_a, blocks_b) = ([5, 3, 0], [4, 1]);
    assert_eq!(blocks_a.len(), (a.len() + both + one).div_ceil(KV_BLOCK));
    assert_eq!(blocks_b.len(), (b.len() + both).div_ceil(KV_BLOCK));
    paged.map_blocks(1, 0, &blocks_a).unwrap();
    paged.map_blocks(0, 0, &blocks_b).unwrap();

    // Both prompts in one step, rows interleaved, logits of every row.
    let (mut tokens, mut seqs, mut pos) = (vec![], vec![], vec![]);
    for i in 0..a.len() {
        for (seq, p) in [(1u32, &a), (0, &b)] {
            if let Some(&t) = p.get(i) {
                tokens.push(t);
                seqs.push(seq);
                pos.push(i as u32);
            }
        }
    }
    let rows: Vec<u32> = (0..tokens.len() as u32).collect();
    let batch = Batch {
        tokens: &tokens,
        seqs: &seqs,
        pos: &pos,
    };
    let (mut want, mut got) = (Vec::new(), Vec::new());
    own.eval_batch(&batch, &rows, &mut want).unwrap();
    paged.eval_batch(&batch, &rows, &mut got).unwrap();
    check_rows("scattered blocks, two prompts", &got, &want, n_vocab, 1e-3);

    let at = |logits: &[f32], r: usize| {
        rustorch_model::runner::argmax(&logits[r * n_vocab..(r + 1) * n_vocab])
    };
    let last_b = rows.iter().rposition(|&r| seqs[r as usize] == 0).unwrap();
    let (mut next_a, mut next_b) = (at(&want, rows.len() - 1), at(&want, last_b));
    let (mut pa, mut pb) = (a.len() as u32, b.len() as u32);
    for step in 0..both + one {
        let two = step < both;
        let (tokens, seqs, pos, rows): (&[u32], &[u32], &[u32], &[u32]) = if two {
            (&[next_b, next_a], &[0, 1], &[pb, pa], &[0, 1])
        } else {
            (&[next_a], &[1], &[pa], &[0])
        };
        let batch = Batch { tokens, seqs, pos };
        own.eval_batch(&batch, rows, &mut want).unwrap();
        paged.eval_batch(&batch, rows, &mut got).unwrap();
        let what = format!("scattered blocks, decode step {step} of {}", rows.len());
        check_rows(&what, &got, &want, n_vocab, 1e-3);
        if two {
            (next_b, next_a) = (at(&want, 0), at(&want, 1));
            pb += 1;
        } else {
            next_a = at(&want, 0);
        }
        pa += 1;
    }
}

/// Two sequences whose tables share prefix blocks: the first evaluates a prompt on scattered
/// blocks (a cold prefill); the second maps the first's two full blocks, evaluates only the rest
/// of the same prompt on a block of its own, and gets the cold prefill's logits of those rows;
/// then a decode step of both on the same token gives both rows the same logits. Same kernels
/// over the same rows, keys read from other blocks: tolerance 1e-3 as above (lavapipe: 0).
#[test]
fn shared_prefix_blocks_match_a_cold_prefill() {
    use rustorch_model::{load_cache, KvSize, KV_BLOCK};
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    let dev = gpu_device();
    let tokens: Vec<u32> = (0..40).map(|i| (i * 37 + 11) % 4000 + 5).collect();
    let n = tokens.len();
    let all: Vec<u32> = (0..n as u32).collect();
    let size = KvSize {
        n_seq: 2,
        seq_ctx: 64,
        n_blocks: 6,
    };
    let mut m = load_cache(file, dev, size, &same_kernels()).unwrap();
    let n_vocab = m.config().n_vocab;
    let mut cold = Vec::new();
    let err = m.eval(&tokens, 0, Logits::All, &mut cold).unwrap_err();
    assert!(err.to_string().contains("no KV block"), "{err}");
    let blocks = [4, 1, 3];
    assert_eq!(blocks.len(), n.div_ceil(KV_BLOCK));
    m.map_blocks(0, 0, &blocks).unwrap();
    m.eval(&tokens, 0, Logits::All, &mut cold).unwrap();

    // Sequence 1 shares the two full blocks (32 positions) and has its own third block.
    let shared = 2 * KV_BLOCK;
    m.map_blocks(1, 0, &blocks[..2]).unwrap();
    m.map_blocks(1, 2, &[0]).unwrap();
    let suffix = Batch {
        tokens: &tokens[shared..],
        seqs: &vec![1; n - shared],
        pos: &all[shared..],
    };
    let mut out = Vec::new();
    m.eval_batch(&suffix, &all[..n - shared], &mut out).unwrap();
    check_rows(
        "shared prefix blocks, the suffix",
        &out,
        &cold[shared * n_vocab..],
        n_vocab,
        1e-3,
    );
    let next = rustorch_model::runner::argmax(&cold[(n - 1) * n_vocab..]);
    let step = Batch {
        tokens: &[next, next],
        seqs: &[0, 1],
        pos: &[n as u32, n as u32],
    };
    m.eval_batch(&step, &[0, 1], &mut out).unwrap();
    check_rows(
        "shared prefix blocks, a decode step of both",
        &out[n_vocab..],
        &out[..n_vocab],
        n_vocab,
        1e-3,
    );
}
