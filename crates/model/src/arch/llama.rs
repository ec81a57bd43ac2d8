//! The Llama forward pass (Llama 2/3, TinyLlama, SmolLM2): RMSNorm, GQA attention with RoPE in
//! GGUF's adjacent-pair layout, SwiGLU FFN, tied or separate output head.
//!
//! Read top to bottom like llama2.c's `forward`: [`Weights`] live as long as the model, [`RunState`]
//! is sized once for the largest batch and reused, and the KV cache is owned by the backend. Every
//! backend runs this pass; the layer is written with the backend's compound operations (norm →
//! q/k/v + RoPE + cache store, matmul + residual add, norm → gate/up + SwiGLU), which fast backends
//! override with fused kernels.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::backend::{AttnShape, Backend, N_UBATCH};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

struct Layer<W> {
    attn_norm: W, // (n_embd)
    wq: W,        // (n_embd -> n_embd)
    wk: W,        // (n_embd -> kv_dim)
    wv: W,        // (n_embd -> kv_dim)
    wo: W,        // (n_embd -> n_embd)
    ffn_norm: W,  // (n_embd)
    w_gate: W,    // (n_embd -> n_ff)
    w_up: W,      // (n_embd -> n_ff)
    w_down: W,    // (n_ff -> n_embd)
}

/// Weights uploaded to the backend, by GGUF tensor name.
pub struct Weights<W> {
    token_embd: W,  // (n_vocab, n_embd)
    output_norm: W, // (n_embd)
    /// `output.weight`, or `None` when the head is tied to `token_embd`.
    output: Option<W>,
    layers: Vec<Layer<W>>,
}

/// Activation buffers, sized once for `N_UBATCH` tokens.
pub struct RunState<B: Backend> {
    x: B::Buf,      // (n, n_embd) residual stream
    xb: B::Buf,     // (n, n_embd) normed input of a sub-block
    q: B::Buf,      // (n, n_embd)
    k: B::Buf,      // (n, kv_dim)
    v: B::Buf,      // (n, kv_dim)
    att: B::Buf,    // (n, n_embd) attention output before wo
    proj: B::Buf,   // (n, n_embd) output of wo / w_down
    gate: B::Buf,   // (n, n_ff)
    up: B::Buf,     // (n, n_ff)
    logits: B::Buf, // (n, n_vocab)
}

pub struct LlamaModel<B: Backend> {
    pub config: Config,
    weights: Weights<B::Weight>,
}

fn check_shape(file: &GgufFile, name: &str, want: &[usize]) -> Result<(), ModelError> {
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

impl<B: Backend> LlamaModel<B> {
    /// Checks every tensor's presence and shape, then uploads the weights.
    pub fn load(backend: &mut B, file: &Arc<GgufFile>, config: Config) -> Result<Self, ModelError> {
        let c = &config;
        let (e, kv, ff) = (c.n_embd, c.kv_dim(), c.n_ff);
        check_shape(file, "token_embd.weight", &[e, c.n_vocab])?;
        check_shape(file, "output_norm.weight", &[e])?;
        let has_output = file.tensor("output.weight").is_some();
        if has_output {
            check_shape(file, "output.weight", &[e, c.n_vocab])?;
        }
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let shapes: [(&str, &[usize]); 9] = [
                ("attn_norm", &[e]),
                ("attn_q", &[e, e]),
                ("attn_k", &[e, kv]),
                ("attn_v", &[e, kv]),
                ("attn_output", &[e, e]),
                ("ffn_norm", &[e]),
                ("ffn_gate", &[e, ff]),
                ("ffn_up", &[e, ff]),
                ("ffn_down", &[ff, e]),
            ];
            for (t, s) in shapes {
                check_shape(file, &name(t), s)?;
            }
            let mut up = |t: &str| backend.upload(file, &name(t));
            layers.push(Layer {
                attn_norm: up("attn_norm")?,
                wq: up("attn_q")?,
                wk: up("attn_k")?,
                wv: up("attn_v")?,
                wo: up("attn_output")?,
                ffn_norm: up("ffn_norm")?,
                w_gate: up("ffn_gate")?,
                w_up: up("ffn_up")?,
                w_down: up("ffn_down")?,
            });
        }
        let weights = Weights {
            token_embd: backend.upload(file, "token_embd.weight")?,
            output_norm: backend.upload(file, "output_norm.weight")?,
            output: if has_output {
                Some(backend.upload(file, "output.weight")?)
            } else {
                None
            },
            layers,
        };
        Ok(LlamaModel { config, weights })
    }

    pub fn new_state(&self, backend: &mut B) -> Result<RunState<B>, ModelError> {
        let c = &self.config;
        let n = N_UBATCH;
        Ok(RunState {
            x: backend.alloc(n * c.n_embd)?,
            xb: backend.alloc(n * c.n_embd)?,
            q: backend.alloc(n * c.n_embd)?,
            k: backend.alloc(n * c.kv_dim())?,
            v: backend.alloc(n * c.kv_dim())?,
            att: backend.alloc(n * c.n_embd)?,
            proj: backend.alloc(n * c.n_embd)?,
            gate: backend.alloc(n * c.n_ff)?,
            up: backend.alloc(n * c.n_ff)?,
            logits: backend.alloc(n * c.n_vocab)?,
        })
    }

    /// A KV cache of `n_seq` sequences of `n_ctx` positions.
    pub fn new_kv(&self, backend: &mut B, n_seq: usize, n_ctx: usize) -> Result<B::Kv, ModelError> {
        backend.alloc_kv(
            self.config.n_layer,
            n_seq,
            n_ctx,
            self.config.n_head_kv,
            self.config.head_dim,
        )
    }

    fn attn_shape(&self) -> AttnShape {
        let c = &self.config;
        AttnShape {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            head_dim: c.head_dim,
            n_rot: c.n_rot,
            rope_freq_base: c.rope_freq_base,
        }
    }

    /// Runs the `n` rows of the step begun with [`Backend::begin_step`] (at most
    /// [`N_UBATCH`]), writing their keys and values into `kv`, and puts the rows listed in `head`
    /// (ascending) through the output head: their logits are rows `0..head.len()` of the state's
    /// logits (read them with [`Self::read_logits`]).
    pub fn forward(
        &self,
        b: &mut B,
        s: &mut RunState<B>,
        kv: &mut B::Kv,
        n: usize,
        head: &[u32],
        dbg: &mut Debug,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let w = &self.weights;
        if n == 0 || n > N_UBATCH {
            return Err(ModelError::Backend(format!(
                "a forward call takes 1..={N_UBATCH} rows, not {n}"
            )));
        }
        let (e, kvd, ff, eps) = (c.n_embd, c.kv_dim(), c.n_ff, c.rms_eps);
        let shape = self.attn_shape();

        b.embed(&w.token_embd, n, &mut s.x)?;
        dbg.show(b, "inp_embd", &s.x, n, e)?;
        for (il, l) in w.layers.iter().enumerate() {
            dbg.layer(il);
            // attention
            b.qkv_rope_store(
                &s.x,
                &l.attn_norm,
                eps,
                (n, e),
                &mut s.xb,
                [&l.wq, &l.wk, &l.wv],
                [&mut s.q, &mut s.k, &mut s.v],
                kv,
                il,
                &shape,
            )?;
            dbg.show(b, "attn_norm", &s.xb, n, e)?;
            dbg.show(b, "q", &s.q, n, e)?;
            dbg.show(b, "k", &s.k, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.attention(&s.q, kv, il, n, &shape, &mut s.att)?;
            dbg.show(b, "kqv_out", &s.att, n, e)?;
            b.matmul_add(&l.wo, &s.att, (n, e), &mut s.x, &mut s.proj)?;
            dbg.show(b, "ffn_inp", &s.x, n, e)?;
            // feed-forward
            b.ffn_swiglu(
                &s.x,
                &l.ffn_norm,
                eps,
                (n, e, ff),
                &mut s.xb,
                [&l.w_gate, &l.w_up],
                &mut s.gate,
                &mut s.up,
            )?;
            dbg.show(b, "ffn_norm", &s.xb, n, e)?;
            dbg.show(b, "ffn_swiglu", &s.gate, n, ff)?;
            b.matmul_add(&l.w_down, &s.gate, (n, e), &mut s.x, &mut s.proj)?;
            dbg.show(b, "l_out", &s.x, n, e)?;
        }
        dbg.layer_end();
        if head.is_empty() {
            return Ok(());
        }
        // The head's rows move to the front of `x` (row r to row i <= r, in order, so no row is
        // overwritten before it moves).
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
        let output = w.output.as_ref().unwrap_or(&w.token_embd);
        b.norm_matmuls(
            &s.x,
            &w.output_norm,
            eps,
            (k, e),
            &mut s.xb,
            &[output],
            &mut [&mut s.logits],
        )?;
        dbg.show(b, "result_norm", &s.xb, k, e)?;
        dbg.show(b, "result_output", &s.logits, k, c.n_vocab)?;
        Ok(())
    }

    /// Copies the logits of head row `row` of the last forward call into `out` (`n_vocab` values).
    pub fn read_logits(
        &self,
        b: &mut B,
        s: &RunState<B>,
        row: usize,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        b.read(&s.logits, row * self.config.n_vocab, out)
    }

    /// The id of the largest logit of head row `row` of the last forward call.
    pub fn argmax_logits(&self, b: &mut B, s: &RunState<B>, row: usize) -> Result<u32, ModelError> {
        let n_vocab = self.config.n_vocab;
        b.argmax(&s.logits, row * n_vocab, n_vocab)
    }
}
