//! Gemma 3: the embedding scaled by `sqrt(n_embd)`; per-head RMSNorm of queries and keys before
//! NEOX-style RoPE; queries scaled before attention (`1 / sqrt(head_dim)`, the 27B's
//! `1 / sqrt(n_embd / n_head)`); RMSNorms after attention and after the feed-forward, before each
//! residual add; a GELU-gated feed-forward; five of every six layers attend through a sliding
//! window (`sliding_window`) with RoPE base 10,000, the sixth to the whole context with
//! `rope.freq_base`. The output head is tied to the embedding.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use super::{tensor, Architecture, Head, RunState};
use crate::backend::{AttnShape, Backend, RopeStyle};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

struct Layer<W> {
    attn_norm: W,      // (n_embd)
    wqkv: [W; 3],      // (n_embd -> q_dim, kv_dim, kv_dim)
    q_norm: W,         // (head_dim)
    k_norm: W,         // (head_dim)
    wo: W,             // (q_dim -> n_embd)
    post_attn_norm: W, // (n_embd)
    ffn_norm: W,       // (n_embd)
    gate_up: [W; 2],   // (n_embd -> n_ff) x 2
    w_down: W,         // (n_ff -> n_embd)
    post_ffw_norm: W,  // (n_embd)
}

pub struct Gemma3Model<B: Backend> {
    config: Config,
    head: Head<B::Weight>,
    layers: Vec<Layer<B::Weight>>,
}

impl<B: Backend> Gemma3Model<B> {
    /// Layer `il`'s attention: a sliding window and base 10,000 on five of every six layers.
    fn shape(&self, il: usize) -> AttnShape {
        let c = &self.config;
        let swa = c.is_swa_layer(il);
        AttnShape {
            rope: RopeStyle::Neox,
            // The queries are scaled before attention, as llama.cpp does.
            scale: 1.0,
            window: c.layer_window(il),
            ..AttnShape::llama(
                c.n_head,
                c.n_head_kv,
                c.head_dim,
                c.n_rot,
                if swa {
                    c.rope_freq_base_swa
                } else {
                    c.rope_freq_base
                },
            )
        }
    }
}

impl<B: Backend> Architecture<B> for Gemma3Model<B> {
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
                post_attn_norm: t("post_attention_norm.weight", &[e])?,
                ffn_norm: t("ffn_norm.weight", &[e])?,
                gate_up: [
                    t("ffn_gate.weight", &[e, ff])?,
                    t("ffn_up.weight", &[e, ff])?,
                ],
                w_down: t("ffn_down.weight", &[ff, e])?,
                post_ffw_norm: t("post_ffw_norm.weight", &[e])?,
            });
        }
        Ok(Gemma3Model {
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
        b.embed(&self.head.token_embd, n, &mut s.x)?;
        b.scale(&mut s.x, (e as f32).sqrt(), n * e)?;
        dbg.show(b, "inp_scaled", &s.x, n, e)?;
        for (il, l) in self.layers.iter().enumerate() {
            dbg.layer(il);
            let shape = self.shape(il);
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
            b.rms_norm(&s.q, &l.q_norm, eps, n * c.n_head, hd, &mut s.qn)?;
            b.rms_norm(&s.k, &l.k_norm, eps, n * c.n_head_kv, hd, &mut s.kn)?;
            b.rope(&mut s.qn, n, c.n_head, &shape, None)?;
            b.rope(&mut s.kn, n, c.n_head_kv, &shape, None)?;
            b.scale(&mut s.qn, c.attn_scale, n * qd)?;
            dbg.show(b, "q", &s.qn, n, qd)?;
            dbg.show(b, "k", &s.kn, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.kv_store(kv, il, &s.kn, &s.v, n)?;
            b.attention(&s.qn, kv, il, n, &shape, &mut s.att)?;
            dbg.show(b, "kqv_out", &s.att, n, qd)?;
            b.matmul(&l.wo, &s.att, n, &mut s.proj)?;
            b.rms_norm(&s.proj, &l.post_attn_norm, eps, n, e, &mut s.xb)?;
            dbg.show(b, "attn_post_norm", &s.xb, n, e)?;
            b.add(&mut s.x, &s.xb, n * e)?;
            dbg.show(b, "sa_out", &s.x, n, e)?;
            let [wg, wu] = &l.gate_up;
            b.norm_matmuls(
                &s.x,
                &l.ffn_norm,
                eps,
                (n, e),
                &mut s.xb,
                &[wg, wu],
                &mut [&mut s.gate, &mut s.up],
            )?;
            b.geglu(&mut s.gate, &s.up, n * ff)?;
            dbg.show(b, "ffn_geglu", &s.gate, n, ff)?;
            b.matmul(&l.w_down, &s.gate, n, &mut s.proj)?;
            b.rms_norm(&s.proj, &l.post_ffw_norm, eps, n, e, &mut s.xb)?;
            dbg.show(b, "ffn_post_norm", &s.xb, n, e)?;
            b.add(&mut s.x, &s.xb, n * e)?;
            dbg.show(b, "l_out", &s.x, n, e)?;
        }
        dbg.layer_end();
        self.head.forward(b, s, c, n, head, dbg)
    }
}
