//! The Llama forward pass (Llama 2/3, TinyLlama, SmolLM2, Mistral): RMSNorm, GQA attention with
//! RoPE in GGUF's adjacent-pair layout (with Llama 3.1's per-pair frequency factors,
//! `rope_freqs.weight`, when the file has them), SwiGLU FFN, tied or separate output head.
//!
//! Read top to bottom like llama2.c's `forward`: [`Weights`] live as long as the model, [`RunState`]
//! is sized once for the largest batch and reused, and the KV cache is owned by the backend. Every
//! backend runs this pass; the layer is written with the backend's compound operations (norm →
//! q/k/v + RoPE + cache store, matmul + residual add, norm → gate/up + SwiGLU), which fast backends
//! override with fused kernels.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use super::{check_shape, Architecture, Head, RunState};
use crate::backend::{AttnShape, Backend, N_UBATCH};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

struct Layer<W> {
    attn_norm: W, // (n_embd)
    wq: W,        // (n_embd -> q_dim)
    wk: W,        // (n_embd -> kv_dim)
    wv: W,        // (n_embd -> kv_dim)
    wo: W,        // (q_dim -> n_embd)
    ffn_norm: W,  // (n_embd)
    w_gate: W,    // (n_embd -> n_ff)
    w_up: W,      // (n_embd -> n_ff)
    w_down: W,    // (n_ff -> n_embd)
}

pub struct LlamaModel<B: Backend> {
    pub config: Config,
    head: Head<B::Weight>,
    /// `rope_freqs.weight` (n_rot / 2): divides each pair's RoPE angle.
    rope_freqs: Option<B::Weight>,
    layers: Vec<Layer<B::Weight>>,
}

impl<B: Backend> Architecture<B> for LlamaModel<B> {
    fn load(backend: &mut B, file: &Arc<GgufFile>, config: Config) -> Result<Self, ModelError> {
        let c = &config;
        let (e, qd, kv, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let head = Head::load(backend, file, c)?;
        let rope_freqs = match file.tensor("rope_freqs.weight") {
            Some(_) => {
                check_shape(file, "rope_freqs.weight", &[c.n_rot / 2])?;
                Some(backend.upload(file, "rope_freqs.weight")?)
            }
            None => None,
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}.weight");
            let shapes: [(&str, &[usize]); 9] = [
                ("attn_norm", &[e]),
                ("attn_q", &[e, qd]),
                ("attn_k", &[e, kv]),
                ("attn_v", &[e, kv]),
                ("attn_output", &[qd, e]),
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
        Ok(LlamaModel {
            config,
            head,
            rope_freqs,
            layers,
        })
    }

    fn config(&self) -> &Config {
        &self.config
    }

    fn forward(
        &self,
        b: &mut B,
        s: &mut RunState<B>,
        kv: &mut B::Kv,
        n: usize,
        head: &[u32],
        dbg: &mut Debug,
    ) -> Result<(), ModelError> {
        let c = &self.config;
        if n == 0 || n > N_UBATCH {
            return Err(ModelError::Backend(format!(
                "a forward call takes 1..={N_UBATCH} rows, not {n}"
            )));
        }
        let (e, kvd, ff, eps) = (c.n_embd, c.kv_dim(), c.n_ff, c.rms_eps);
        let shape = attn_shape(c);

        b.embed(&self.head.token_embd, n, &mut s.x)?;
        dbg.show(b, "inp_embd", &s.x, n, e)?;
        for (il, l) in self.layers.iter().enumerate() {
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
                self.rope_freqs.as_ref(),
            )?;
            dbg.show(b, "attn_norm", &s.xb, n, e)?;
            dbg.show(b, "q", &s.q, n, c.q_dim())?;
            dbg.show(b, "k", &s.k, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.attention(&s.q, kv, il, n, &shape, &mut s.att)?;
            dbg.show(b, "kqv_out", &s.att, n, c.q_dim())?;
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
        self.head.forward(b, s, c, n, head, dbg)
    }
}

fn attn_shape(c: &Config) -> AttnShape {
    AttnShape::llama(c.n_head, c.n_head_kv, c.head_dim, c.n_rot, c.rope_freq_base)
}
