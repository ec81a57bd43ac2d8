//! Qwen3 (dense): Llama's layer without biases, with an RMSNorm of each query and key head
//! (`attn_q_norm`, `attn_k_norm`, one weight of `head_dim` shared by the heads) after the
//! projections and before NEOX-style RoPE; the head size comes from `key_length`.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use super::{tensor, Architecture, Head, RunState};
use crate::backend::{AttnShape, Backend, RopeStyle};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

struct Layer<W> {
    attn_norm: W,    // (n_embd)
    wqkv: [W; 3],    // (n_embd -> q_dim, kv_dim, kv_dim)
    q_norm: W,       // (head_dim)
    k_norm: W,       // (head_dim)
    wo: W,           // (q_dim -> n_embd)
    ffn_norm: W,     // (n_embd)
    gate_up: [W; 2], // (n_embd -> n_ff) x 2
    w_down: W,       // (n_ff -> n_embd)
}

pub struct Qwen3Model<B: Backend> {
    config: Config,
    head: Head<B::Weight>,
    layers: Vec<Layer<B::Weight>>,
}

impl<B: Backend> Architecture<B> for Qwen3Model<B> {
    fn load(b: &mut B, file: &Arc<GgufFile>, config: Config) -> Result<Self, ModelError> {
        let c = &config;
        let (e, qd, kv, ff, hd) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff, c.head_dim);
        let head = Head::load(b, file, c)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let mut t =
                |name: &str, shape: &[usize]| tensor(b, file, &format!("blk.{i}.{name}"), shape);
            layers.push(Layer {
                attn_norm: t("attn_norm.weight", &[e])?,
                wqkv: [
                    t("attn_q.weight", &[e, qd])?,
                    t("attn_k.weight", &[e, kv])?,
                    t("attn_v.weight", &[e, kv])?,
                ],
                q_norm: t("attn_q_norm.weight", &[hd])?,
                k_norm: t("attn_k_norm.weight", &[hd])?,
                wo: t("attn_output.weight", &[qd, e])?,
                ffn_norm: t("ffn_norm.weight", &[e])?,
                gate_up: [
                    t("ffn_gate.weight", &[e, ff])?,
                    t("ffn_up.weight", &[e, ff])?,
                ],
                w_down: t("ffn_down.weight", &[ff, e])?,
            });
        }
        Ok(Qwen3Model {
            config,
            head,
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
        let (e, qd, kvd, ff, eps) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff, c.rms_eps);
        let hd = c.head_dim;
        let shape = AttnShape {
            rope: RopeStyle::Neox,
            scale: c.attn_scale,
            ..AttnShape::llama(c.n_head, c.n_head_kv, hd, c.n_rot, c.rope_freq_base)
        };
        b.embed(&self.head.token_embd, n, &mut s.x)?;
        dbg.show(b, "inp_embd", &s.x, n, e)?;
        for (il, l) in self.layers.iter().enumerate() {
            dbg.layer(il);
            let [wq, wk, wv] = &l.wqkv;
            b.norm_matmuls(
                &s.x,
                &l.attn_norm,
                eps,
                (n, e),
                &mut s.xb,
                &[wq, wk, wv],
                &mut [&mut s.q, &mut s.k, &mut s.v],
            )?;
            // Each head normed on its own: rows of head_dim.
            b.rms_norm(&s.q, &l.q_norm, eps, n * c.n_head, hd, &mut s.qn)?;
            b.rms_norm(&s.k, &l.k_norm, eps, n * c.n_head_kv, hd, &mut s.kn)?;
            b.rope(&mut s.qn, n, c.n_head, &shape, None)?;
            b.rope(&mut s.kn, n, c.n_head_kv, &shape, None)?;
            dbg.show(b, "q", &s.qn, n, qd)?;
            dbg.show(b, "k", &s.kn, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.kv_store(kv, il, &s.kn, &s.v, n)?;
            b.attention(&s.qn, kv, il, n, &shape, &mut s.att)?;
            dbg.show(b, "kqv_out", &s.att, n, qd)?;
            b.matmul_add(&l.wo, &s.att, (n, e), &mut s.x, &mut s.proj)?;
            dbg.show(b, "ffn_inp", &s.x, n, e)?;
            let [wg, wu] = &l.gate_up;
            b.ffn_swiglu(
                &s.x,
                &l.ffn_norm,
                eps,
                (n, e, ff),
                &mut s.xb,
                [wg, wu],
                &mut s.gate,
                &mut s.up,
            )?;
            dbg.show(b, "ffn_swiglu", &s.gate, n, ff)?;
            b.matmul_add(&l.w_down, &s.gate, (n, e), &mut s.x, &mut s.proj)?;
            dbg.show(b, "l_out", &s.x, n, e)?;
        }
        dbg.layer_end();
        self.head.forward(b, s, c, n, head, dbg)
    }
}
