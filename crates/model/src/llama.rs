//! The Llama forward pass (Llama 2/3, TinyLlama, SmolLM2): RMSNorm, GQA attention with RoPE in
//! GGUF's adjacent-pair layout, SwiGLU FFN, tied or separate output head.
//!
//! Read top to bottom like llama2.c's `forward`: [`Weights`] live as long as the model, [`RunState`]
//! is sized once for the largest batch and reused, and the KV cache is owned by the backend.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::backend::{AttnShape, Backend};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

/// Tokens processed per forward call at most; longer prompts are split.
pub const N_UBATCH: usize = 512;

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

/// Which positions of a batch need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, teacher forcing).
    All,
}

/// Which rows of a batch go through the output head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// None: a prompt batch that only fills the cache.
    None,
    /// The last row.
    Last,
    /// Every row.
    All,
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

    pub fn new_kv(&self, backend: &mut B, n_ctx: usize) -> Result<B::Kv, ModelError> {
        backend.alloc_kv(
            self.config.n_layer,
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

    /// Runs `tokens` (at most [`N_UBATCH`]) at positions `pos0..`, writing keys and values into
    /// `kv`, and leaves the requested logits in the state (read them with [`Self::read_logits`]).
    #[allow(clippy::too_many_arguments)] // the model, its state, the cache and the batch
    pub fn forward(
        &self,
        b: &mut B,
        s: &mut RunState<B>,
        kv: &mut B::Kv,
        tokens: &[u32],
        pos0: usize,
        head: Head,
        dbg: &mut Debug,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        let w = &self.weights;
        let n = tokens.len();
        assert!(
            n > 0 && n <= N_UBATCH,
            "forward takes 1..={N_UBATCH} tokens"
        );
        let (e, kvd, ff) = (c.n_embd, c.kv_dim(), c.n_ff);
        let shape = self.attn_shape();

        b.embed(&w.token_embd, tokens, &mut s.x)?;
        dbg.show(b, "inp_embd", &s.x, n, e)?;
        for (il, l) in w.layers.iter().enumerate() {
            dbg.layer(il);
            // attention
            b.rms_norm(&s.x, &l.attn_norm, c.rms_eps, n, e, &mut s.xb);
            dbg.show(b, "attn_norm", &s.xb, n, e)?;
            b.matmuls(
                &[&l.wq, &l.wk, &l.wv],
                &s.xb,
                n,
                &mut [&mut s.q, &mut s.k, &mut s.v],
            )?;
            b.rope(&mut s.q, n, c.n_head, &shape, pos0);
            b.rope(&mut s.k, n, c.n_head_kv, &shape, pos0);
            dbg.show(b, "q", &s.q, n, e)?;
            dbg.show(b, "k", &s.k, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.kv_store(kv, il, &s.k, &s.v, n, pos0);
            b.attention(&s.q, kv, il, n, pos0, &shape, &mut s.att);
            dbg.show(b, "kqv_out", &s.att, n, e)?;
            b.matmul(&l.wo, &s.att, n, &mut s.proj)?;
            dbg.show(b, "attn_out", &s.proj, n, e)?;
            b.add(&mut s.x, &s.proj, n * e);
            dbg.show(b, "ffn_inp", &s.x, n, e)?;
            // feed-forward
            b.rms_norm(&s.x, &l.ffn_norm, c.rms_eps, n, e, &mut s.xb);
            dbg.show(b, "ffn_norm", &s.xb, n, e)?;
            b.matmuls(
                &[&l.w_gate, &l.w_up],
                &s.xb,
                n,
                &mut [&mut s.gate, &mut s.up],
            )?;
            b.swiglu(&mut s.gate, &s.up, n * ff);
            dbg.show(b, "ffn_swiglu", &s.gate, n, ff)?;
            b.matmul(&l.w_down, &s.gate, n, &mut s.proj)?;
            dbg.show(b, "ffn_out", &s.proj, n, e)?;
            b.add(&mut s.x, &s.proj, n * e);
            dbg.show(b, "l_out", &s.x, n, e)?;
        }
        dbg.layer_end();
        let output = w.output.as_ref().unwrap_or(&w.token_embd);
        match head {
            Head::None => {}
            Head::All => {
                b.rms_norm(&s.x, &w.output_norm, c.rms_eps, n, e, &mut s.xb);
                dbg.show(b, "result_norm", &s.xb, n, e)?;
                b.matmul(output, &s.xb, n, &mut s.logits)?;
                dbg.show(b, "result_output", &s.logits, n, c.n_vocab)?;
            }
            Head::Last => {
                // Only the last row goes through the head: move it to row 0 of `x` first.
                if n > 1 {
                    b.copy_within(&mut s.x, (n - 1) * e, 0, e);
                }
                b.rms_norm(&s.x, &w.output_norm, c.rms_eps, 1, e, &mut s.xb);
                dbg.show(b, "result_norm", &s.xb, 1, e)?;
                b.matmul(output, &s.xb, 1, &mut s.logits)?;
                dbg.show(b, "result_output", &s.logits, 1, c.n_vocab)?;
            }
        }
        Ok(())
    }

    /// Copies logits of row `row` of the last forward call into `out` (`n_vocab` values).
    pub fn read_logits(
        &self,
        b: &mut B,
        s: &RunState<B>,
        row: usize,
        out: &mut [f32],
    ) -> Result<(), ModelError> {
        b.read(&s.logits, row * self.config.n_vocab, out)
    }
}
