//! Phi-3: Llama's layer with q, k and v in one tensor (`attn_qkv`, rows q then k then v) and gate
//! and up in one (`ffn_up`, rows gate then up), uploaded as their parts so the layer runs as
//! Llama's does; NEOX-style RoPE, with LongRoPE's factors and attention factor when the file has
//! them (the long factors when the context exceeds `rope.scaling.original_context_length`).

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use super::{check_shape, tensor, Architecture, Head, RunState};
use crate::backend::{AttnShape, Backend, RopeStyle};
use crate::config::Config;
use crate::debug::Debug;
use crate::ModelError;

struct Layer<W> {
    attn_norm: W,    // (n_embd)
    wqkv: [W; 3],    // parts of attn_qkv: (n_embd -> q_dim, kv_dim, kv_dim)
    wo: W,           // (q_dim -> n_embd)
    ffn_norm: W,     // (n_embd)
    gate_up: [W; 2], // parts of ffn_up: (n_embd -> n_ff) x 2
    w_down: W,       // (n_ff -> n_embd)
}

pub struct Phi3Model<B: Backend> {
    config: Config,
    head: Head<B::Weight>,
    /// LongRoPE's per-pair divisors for this context (`rope_factors_long` or `_short`).
    rope_factors: Option<B::Weight>,
    layers: Vec<Layer<B::Weight>>,
}

impl<B: Backend> Architecture<B> for Phi3Model<B> {
    fn load(b: &mut B, file: &Arc<GgufFile>, config: Config) -> Result<Self, ModelError> {
        let c = &config;
        let (e, qd, kv, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        // LongRoPE: the long factors for contexts past the original one, else the short; the
        // context compared is a sequence's padded to 256 positions, as llama.cpp pads it.
        let long = c.rope_orig_ctx > 0 && c.n_ctx.next_multiple_of(256) > c.rope_orig_ctx;
        let pick = if long {
            "rope_factors_long.weight"
        } else {
            "rope_factors_short.weight"
        };
        let rope_factors = match file.tensor(pick) {
            Some(_) => Some(tensor(b, file, pick, &[c.n_rot / 2])?),
            None => None,
        };
        let head = Head::load(b, file, c)?;
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let name = |t: &str| format!("blk.{i}.{t}");
            let qkv = name("attn_qkv.weight");
            check_shape(file, &qkv, &[e, qd + 2 * kv])?;
            let up = name("ffn_up.weight");
            check_shape(file, &up, &[e, 2 * ff])?;
            layers.push(Layer {
                attn_norm: tensor(b, file, &name("attn_norm.weight"), &[e])?,
                wqkv: [
                    b.upload_rows(file, &qkv, 0..qd)?,
                    b.upload_rows(file, &qkv, qd..qd + kv)?,
                    b.upload_rows(file, &qkv, qd + kv..qd + 2 * kv)?,
                ],
                wo: tensor(b, file, &name("attn_output.weight"), &[qd, e])?,
                ffn_norm: tensor(b, file, &name("ffn_norm.weight"), &[e])?,
                gate_up: [
                    b.upload_rows(file, &up, 0..ff)?,
                    b.upload_rows(file, &up, ff..2 * ff)?,
                ],
                w_down: tensor(b, file, &name("ffn_down.weight"), &[ff, e])?,
            });
        }
        Ok(Phi3Model {
            config,
            head,
            rope_factors,
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
        let shape = AttnShape {
            rope: RopeStyle::Neox,
            rope_mscale: c.rope_attn_factor,
            scale: c.attn_scale,
            ..AttnShape::llama(c.n_head, c.n_head_kv, c.head_dim, c.n_rot, c.rope_freq_base)
        };
        b.embed(&self.head.token_embd, n, &mut s.x)?;
        dbg.show(b, "inp_embd", &s.x, n, e)?;
        for (il, l) in self.layers.iter().enumerate() {
            dbg.layer(il);
            let [wq, wk, wv] = &l.wqkv;
            b.qkv_rope_store(
                &s.x,
                &l.attn_norm,
                eps,
                (n, e),
                &mut s.xb,
                [wq, wk, wv],
                [&mut s.q, &mut s.k, &mut s.v],
                kv,
                il,
                &shape,
                self.rope_factors.as_ref(),
            )?;
            dbg.show(b, "q", &s.q, n, qd)?;
            dbg.show(b, "k", &s.k, n, kvd)?;
            dbg.show(b, "v", &s.v, n, kvd)?;
            b.attention(&s.q, kv, il, n, &shape, &mut s.att)?;
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
