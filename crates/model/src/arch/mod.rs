//! Architectures: one file each, the forward pass as straight-line calls of [`crate::Backend`]
//! operations that every backend executes. What they share lives here: the run state, the output
//! head, tensor-shape checks.

pub mod gemma3;
pub mod llama;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::backend::{kv_capacity, Backend, KvSpec, N_UBATCH};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

/// One architecture's weights on backend `B` and its forward pass.
pub trait Architecture<B: Backend>: Sized {
    /// Checks every tensor's presence and shape, then uploads the weights.
    fn load(backend: &mut B, file: &Arc<GgufFile>, config: Config) -> Result<Self, ModelError>;

    fn config(&self) -> &Config;

    /// Runs the `n` rows of the step begun with [`Backend::begin_step`] (at most
    /// [`N_UBATCH`]), writing their keys and values into `kv`, and puts the rows listed in `head`
    /// (ascending) through the output head: their logits are rows `0..head.len()` of the state's
    /// logits.
    fn forward(
        &self,
        b: &mut B,
        s: &mut RunState<B>,
        kv: &mut B::Kv,
        n: usize,
        head: &[u32],
        dbg: &mut Debug,
    ) -> Result<(), ModelError>;
}

/// Activation buffers, sized once for `N_UBATCH` rows (the logits for as many rows as a step has
/// asked for so far).
pub struct RunState<B: Backend> {
    pub x: B::Buf,    // (n, n_embd) residual stream
    pub xb: B::Buf,   // (n, n_embd) normed input of a sub-block
    pub q: B::Buf,    // (n, q_dim)
    pub k: B::Buf,    // (n, kv_dim)
    pub v: B::Buf,    // (n, kv_dim)
    pub att: B::Buf,  // (n, q_dim) attention output before the projection
    pub proj: B::Buf, // (n, n_embd) output of a projection back to the residual stream
    pub gate: B::Buf, // (n, n_ff)
    pub up: B::Buf,   // (n, n_ff)
    pub qn: B::Buf,   // (n, q_dim) queries after a per-head norm
    pub kn: B::Buf,   // (n, kv_dim) keys after a per-head norm
    pub logits: B::Buf,
    /// Rows of logits `logits` holds.
    logit_rows: usize,
    n_vocab: usize,
}

impl<B: Backend> RunState<B> {
    pub fn new(b: &mut B, c: &Config) -> Result<RunState<B>, ModelError> {
        let n = N_UBATCH;
        // The logits of up to 64 MiB of rows to begin with (Gemma's vocabulary is 262,144 wide).
        let logit_rows = ((16 << 20) / c.n_vocab).clamp(1, n);
        Ok(RunState {
            x: b.alloc(n * c.n_embd)?,
            xb: b.alloc(n * c.n_embd)?,
            q: b.alloc(n * c.q_dim())?,
            k: b.alloc(n * c.kv_dim())?,
            v: b.alloc(n * c.kv_dim())?,
            att: b.alloc(n * c.q_dim())?,
            proj: b.alloc(n * c.n_embd)?,
            gate: b.alloc(n * c.n_ff)?,
            up: b.alloc(n * c.n_ff)?,
            qn: b.alloc(n * c.q_dim())?,
            kn: b.alloc(n * c.kv_dim())?,
            logits: b.alloc(logit_rows * c.n_vocab)?,
            logit_rows,
            n_vocab: c.n_vocab,
        })
    }

    /// Grows the logits to `rows` rows (once, for the largest step that asks).
    pub fn ensure_logits(&mut self, b: &mut B, rows: usize) -> Result<(), ModelError> {
        if rows > self.logit_rows {
            self.logits = b.alloc(rows * self.n_vocab)?;
            self.logit_rows = rows;
        }
        Ok(())
    }

    /// Copies the logits of head row `row` of the last forward call into `out` (`n_vocab` values).
    pub fn read_logits(&self, b: &mut B, row: usize, out: &mut [f32]) -> Result<(), ModelError> {
        b.read(&self.logits, row * self.n_vocab, out)
    }

    /// The id of the largest logit of head row `row` of the last forward call.
    pub fn argmax_logits(&self, b: &mut B, row: usize) -> Result<u32, ModelError> {
        b.argmax(&self.logits, row * self.n_vocab, self.n_vocab)
    }
}

/// The KV cache of the model of `c` for `n_seq` sequences of up to `seq_ctx` positions, with a
/// pool of `n_blocks` blocks, on a backend whose steps take at most `max_rows` rows: a
/// sliding-window layer keeps a ring of its window and a step's rows per sequence
/// ([`kv_capacity`]) where that is less than the context, every other layer is paged.
pub fn kv_spec(
    c: &Config,
    n_seq: usize,
    seq_ctx: usize,
    n_blocks: usize,
    max_rows: usize,
) -> KvSpec {
    let ring = (0..c.n_layer)
        .map(
            |il| match kv_capacity(seq_ctx, c.layer_window(il), max_rows) {
                cap if cap < seq_ctx => cap,
                _ => 0,
            },
        )
        .collect();
    KvSpec {
        ring,
        n_seq,
        seq_ctx,
        n_blocks,
        n_head_kv: c.n_head_kv,
        head_dim: c.head_dim,
    }
}

/// Checks that tensor `name` exists with dimensions `want` (ggml order: row length first).
pub fn check_shape(file: &GgufFile, name: &str, want: &[usize]) -> Result<(), ModelError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let ok =
        info.dims.len() == want.len() && info.dims.iter().zip(want).all(|(&a, &b)| a == b as u64);
    if ok {
        Ok(())
    } else {
        Err(ModelError::TensorShape {
            name: name.to_string(),
            expected: format!("{want:?}"),
            actual: format!("{:?}", info.dims),
        })
    }
}

/// Checks that tensor `name` has dimensions `shape`, then uploads it.
pub fn tensor<B: Backend>(
    b: &mut B,
    file: &Arc<GgufFile>,
    name: &str,
    shape: &[usize],
) -> Result<B::Weight, ModelError> {
    check_shape(file, name, shape)?;
    b.upload(file, name)
}

/// The output head: final norm and the projection to the vocabulary (`output.weight`, or the
/// token embedding when the file ties them).
pub struct Head<W> {
    pub token_embd: W,
    pub output_norm: W,
    pub output: Option<W>,
}

impl<W> Head<W> {
    /// Checks and uploads `token_embd`, `output_norm` and the optional `output`.
    pub fn load<B: Backend<Weight = W>>(
        b: &mut B,
        file: &Arc<GgufFile>,
        c: &Config,
    ) -> Result<Head<W>, ModelError> {
        check_shape(file, "token_embd.weight", &[c.n_embd, c.n_vocab])?;
        check_shape(file, "output_norm.weight", &[c.n_embd])?;
        let output = match file.tensor("output.weight") {
            Some(_) => {
                check_shape(file, "output.weight", &[c.n_embd, c.n_vocab])?;
                Some(b.upload(file, "output.weight")?)
            }
            None => None,
        };
        Ok(Head {
            token_embd: b.upload(file, "token_embd.weight")?,
            output_norm: b.upload(file, "output_norm.weight")?,
            output,
        })
    }

    /// Puts the rows listed in `head` (ascending rows of the `n` in `x`) through the final norm
    /// and the output projection: their logits become rows `0..head.len()` of `s.logits`. The
    /// rows move to the front of `x` first (row r to row i <= r, in order, so none is overwritten
    /// before it moves).
    pub fn forward<B: Backend<Weight = W>>(
        &self,
        b: &mut B,
        s: &mut RunState<B>,
        c: &Config,
        n: usize,
        head: &[u32],
        dbg: &mut Debug,
    ) -> Result<(), ModelError> {
        if head.is_empty() {
            return Ok(());
        }
        let e = c.n_embd;
        for (i, &r) in head.iter().enumerate() {
            let r = r as usize;
            if r >= n || (i > 0 && r <= head[i - 1] as usize) {
                return Err(ModelError::Backend(format!(
                    "head rows must be ascending rows of the batch of {n}"
                )));
            }
            if r != i {
                b.copy_within(&mut s.x, r * e, i * e, e)?;
            }
        }
        let k = head.len();
        s.ensure_logits(b, k)?;
        let output = self.output.as_ref().unwrap_or(&self.token_embd);
        b.norm_matmuls(
            &s.x,
            &self.output_norm,
            c.rms_eps,
            (k, e),
            &mut s.xb,
            &[output],
            &mut [&mut s.logits],
        )?;
        dbg.show(b, "result_norm", &s.xb, k, e)?;
        dbg.show(b, "result_output", &s.logits, k, c.n_vocab)?;
        Ok(())
    }
}
