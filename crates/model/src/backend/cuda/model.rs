//! The Llama forward pass on the GPU.
//!
//! Decode (one token): embedding → per layer [RMSNorm+quantize → q/k/v mat-vec (one launch) →
//! RoPE+KV write → split-K flash-decoding attention → merge+quantize → wo mat-vec += residual →
//! RMSNorm+quantize → gate·up·SiLU mat-vec → quantize → down mat-vec += residual] → head. The
//! mat-vecs read the weights in their GGUF blocks and take int8 dot products (dp4a) with the
//! activation quantized to q8_1. The position and the token are read from the device buffer `io`,
//! so the step is captured once as a CUDA graph and replayed (the `graph` option off: no graph).
//! On sm_90+ the step's kernels go with Programmatic Dependent Launch: each kernel's blocks start
//! while the previous kernel finishes, pull their weight rows (the attention: the cached keys and
//! values) into L2, and only then wait for the previous kernel's results.
//!
//! Prompt (several tokens, cuBLAS present): each weight is dequantized to an f16 scratch matrix and
//! multiplied by cuBLAS on tensor cores (f32 accumulation); attention is one flash-attention kernel
//! per layer (tensor cores, online softmax, no score matrix in memory) on sm_80+, and on older cards
//! (or with the `flash` option off) two batched GEMMs (scores = K·Q, out = V·P) around a causal
//! softmax kernel, whose score matrix limits the batch at long contexts. Without cuBLAS, prompts run
//! token by token through the decode step.
//!
//! Row-major reading of the GEMMs: cuBLAS is column-major, so a row-major `[r][c]` matrix is its
//! `c × r` column-major transpose; `out[n][rows] = x[n][cols] · W[rows][cols]ᵀ` is the column-major
//! `outᵀ = op_T(W) · xᵀ`, which is what [`Gpu::gemm`] gets.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph};
use rustorch_gguf::GgufFile;
use rustorch_quant::dispatch;

use super::gpu::{drv_err, DevBuf, Gpu};
use super::ops::{
    attn_decode, attn_prompt, flash_enabled, matvec, quantize, rms_norm, rope_kv, upload_matrix,
    Attn, GWeight, MvIn, RopeOut, RMS_NORM_MAX,
};
use crate::config::Config;
use crate::arch::llama::{Logits, N_UBATCH};
use crate::runner::Model;
use crate::{Device, ModelError};

struct GLayer {
    attn_norm: DevBuf, // (n_embd) f32
    wq: GWeight,       // (n_embd -> n_embd)
    wk: GWeight,       // (n_embd -> kv_dim)
    wv: GWeight,       // (n_embd -> kv_dim)
    wo: GWeight,       // (n_embd -> n_embd)
    ffn_norm: DevBuf,  // (n_embd) f32
    w_gate: GWeight,   // (n_embd -> n_ff)
    w_up: GWeight,     // (n_embd -> n_ff)
    w_down: GWeight,   // (n_ff -> n_embd)
}

/// Buffers of the prompt path (cuBLAS), `ub` tokens at a time.
struct PromptBufs {
    x16: DevBuf,            // (ub, max(n_embd, n_ff)) f16 GEMM input
    wtmp: DevBuf,           // (largest weight) f16 dequantized weight
    scores: Option<Scores>, // the cuBLAS attention's buffers (none with flash attention)
    logits: Option<DevBuf>, // (ub, n_vocab) f32, made on the first Logits::All prompt
}

/// Buffers of the prompt attention without flash attention.
struct Scores {
    s: DevBuf,   // (n_head, ub, n_ctx) f32 attention scores
    p: DevBuf,   // (n_head, ub, n_ctx) f16 probabilities
    o16: DevBuf, // (n_head, ub, head_dim) f16 attention output, head-major
}

pub(crate) struct CudaModel {
    gpu: Gpu,
    config: Config,
    n_ctx: usize,
    /// Tokens per prompt batch.
    ub: usize,
    attn: Attn,
    token_embd: GWeight, // (n_vocab, n_embd)
    output_norm: DevBuf, // (n_embd) f32
    output: Option<GWeight>,
    layers: Vec<GLayer>,
    io: DevBuf,      // (1 + ub) i32: position of the first token, then the tokens
    x: DevBuf,       // (ub, n_embd) f32 residual stream
    q: DevBuf,       // (ub, n_embd) f32
    k: DevBuf,       // (ub, kv_dim) f32
    v: DevBuf,       // (ub, kv_dim) f32
    qh: DevBuf,      // (n_head, ub, head_dim) f16 rotated queries
    gate: DevBuf,    // (ub, n_ff) f32
    up: DevBuf,      // (ub, n_ff) f32
    aq: DevBuf,      // (max(n_embd, n_ff)) i8 q8_1 codes of the next mat-vec's input
    ads: DevBuf,     // (max(n_embd, n_ff) / 32) (d, d·Σq) of those blocks
    part: DevBuf,    // (n_head, n_split, head_dim + 2) f32 attention partials
    counter: DevBuf, // (n_head_kv, head groups) i32 split arrivals, zero between steps
    logits: DevBuf,  // (n_vocab) f32
    best: DevBuf,    // (1) i32 argmax
    kc: DevBuf,      // (n_layer, n_head_kv, n_ctx, head_dim) f16
    vc: DevBuf,      // (n_layer, n_head_kv, n_ctx, head_dim) f16
    prompt: Option<PromptBufs>,
    graph: Option<CudaGraph>,
    use_graph: bool,
}

/// Which logits a prompt batch leaves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Head {
    None,
    Last,
    All,
}

impl CudaModel {
    pub fn load(
        gpu: Gpu,
        file: &Arc<GgufFile>,
        config: Config,
        n_ctx: usize,
    ) -> Result<CudaModel, ModelError> {
        let c = &config;
        let (e, kvd, ff, hd) = (c.n_embd, c.kv_dim(), c.n_ff, c.head_dim);
        let attn = Attn {
            n_head: c.n_head,
            n_head_kv: c.n_head_kv,
            hd,
            n_rot: c.n_rot,
            freq_base: c.rope_freq_base,
            n_ctx,
            n_split: Attn::splits_for(c.n_head, c.n_head_kv),
        };
        attn.check()?;
        if !e.is_multiple_of(32) || e > RMS_NORM_MAX || !ff.is_multiple_of(32) {
            return Err(ModelError::Backend(format!(
                "cuda: embedding width {e} / feed-forward width {ff} not supported (multiples of 32, width at most {RMS_NORM_MAX})"
            )));
        }
        if n_ctx == 0 || n_ctx > i32::MAX as usize / 2 {
            return Err(ModelError::InvalidConfig(format!(
                "context of {n_ctx} tokens"
            )));
        }
        let matrix = |name: &str, cols: usize, rows: usize| -> Result<GWeight, ModelError> {
            let t = file
                .tensor(name)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
            if t.dims != [cols as u64, rows as u64] {
                return Err(ModelError::TensorShape {
                    name: name.to_string(),
                    expected: format!("[{cols}, {rows}]"),
                    actual: format!("{:?}", t.dims),
                });
            }
            upload_matrix(&gpu, name, t.ty, file.tensor_data(t), rows, cols)
        };
        let vector = |name: &str, len: usize| -> Result<DevBuf, ModelError> {
            let t = file
                .tensor(name)
                .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
            if t.dims != [len as u64] {
                return Err(ModelError::TensorShape {
                    name: name.to_string(),
                    expected: format!("[{len}]"),
                    actual: format!("{:?}", t.dims),
                });
            }
            let mut v = vec![0f32; len];
            dispatch::dequantize_row(t.ty, file.tensor_data(t), &mut v).map_err(|_| {
                ModelError::UnsupportedType {
                    name: name.to_string(),
                    ty: t.ty,
                    backend: "cuda",
                }
            })?;
            gpu.upload(&v, name)
        };
        let mut layers = Vec::with_capacity(c.n_layer);
        for i in 0..c.n_layer {
            let n = |t: &str| format!("blk.{i}.{t}.weight");
            layers.push(GLayer {
                attn_norm: vector(&n("attn_norm"), e)?,
                wq: matrix(&n("attn_q"), e, e)?,
                wk: matrix(&n("attn_k"), e, kvd)?,
                wv: matrix(&n("attn_v"), e, kvd)?,
                wo: matrix(&n("attn_output"), e, e)?,
                ffn_norm: vector(&n("ffn_norm"), e)?,
                w_gate: matrix(&n("ffn_gate"), e, ff)?,
                w_up: matrix(&n("ffn_up"), e, ff)?,
                w_down: matrix(&n("ffn_down"), ff, e)?,
            });
        }
        let token_embd = matrix("token_embd.weight", e, c.n_vocab)?;
        let output_norm = vector("output_norm.weight", e)?;
        let output = match file.tensor("output.weight") {
            Some(_) => Some(matrix("output.weight", e, c.n_vocab)?),
            None => None,
        };

        // Prompt batches: N_UBATCH with flash attention, else as large as N_UBATCH while the score
        // matrices stay under 1 GiB.
        let flash = flash_enabled(&gpu);
        let ub = if gpu.has_blas() && flash {
            N_UBATCH
        } else if gpu.has_blas() {
            ((1usize << 30) / (c.n_head * n_ctx * 6)).clamp(1, N_UBATCH)
        } else {
            1
        };
        let f32s = |n: usize, what: &str| gpu.alloc(n * 4, what);
        let f16s = |n: usize, what: &str| gpu.alloc(n * 2, what);
        let wide = e.max(ff);
        let cache = c.n_layer * c.n_head_kv * n_ctx * hd;
        let prompt = if gpu.has_blas() && ub > 1 {
            let mut largest = layers
                .iter()
                .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
                .map(|w| w.rows * w.cols)
                .max()
                .unwrap_or(0);
            largest = largest.max(c.n_vocab * e);
            Some(PromptBufs {
                x16: f16s(ub * wide, "the f16 GEMM input")?,
                wtmp: f16s(largest, "the dequantized weight scratch")?,
                scores: if flash {
                    None
                } else {
                    Some(Scores {
                        s: f32s(c.n_head * ub * n_ctx, "attention scores")?,
                        p: f16s(c.n_head * ub * n_ctx, "attention probabilities")?,
                        o16: f16s(ub * e, "attention output")?,
                    })
                },
                logits: None,
            })
        } else {
            None
        };
        let model = CudaModel {
            io: gpu.alloc((1 + ub) * 4, "token ids")?,
            x: f32s(ub * e, "activations")?,
            q: f32s(ub * e, "activations")?,
            k: f32s(ub * kvd, "activations")?,
            v: f32s(ub * kvd, "activations")?,
            qh: f16s(ub * e, "activations")?,
            gate: f32s(ub * ff, "activations")?,
            up: f32s(ub * ff, "activations")?,
            aq: gpu.alloc(wide, "activations")?,
            ads: f32s(wide / 32 * 2, "activations")?,
            part: f32s(c.n_head * attn.n_split * (hd + 2), "attention partials")?,
            counter: gpu.upload(
                &vec![0i32; c.n_head_kv * attn.group_blocks()],
                "attention counters",
            )?,
            logits: f32s(c.n_vocab, "logits")?,
            best: gpu.alloc(4, "argmax")?,
            kc: f16s(cache, &format!("the KV cache ({n_ctx} tokens)"))?,
            vc: f16s(cache, &format!("the KV cache ({n_ctx} tokens)"))?,
            prompt,
            graph: None,
            use_graph: gpu.opts.graph,
            ub,
            attn,
            token_embd,
            output_norm,
            output,
            layers,
            n_ctx,
            config,
            gpu,
        };
        model.gpu.sync()?;
        Ok(model)
    }

    fn head(&self) -> &GWeight {
        self.output.as_ref().unwrap_or(&self.token_embd)
    }

    /// Byte offset of layer `il` in the KV cache.
    fn kv_offset(&self, il: usize) -> usize {
        il * self.attn.n_head_kv * self.n_ctx * self.attn.hd * 2
    }

    fn embed(&self, n: usize) -> Result<(), ModelError> {
        let w = &self.token_embd;
        self.gpu.launch(
            &self.gpu.k.embed,
            (n as u32, 1, 1),
            256,
            &[
                &w.buf.ptr,
                &w.ty,
                &(w.cols as i32),
                &self.io.ptr,
                &self.x.ptr,
            ],
        )
    }

    /// Queues one decode step (token and position in `io`); logits end in `self.logits`. On sm_90+
    /// its kernels go with Programmatic Dependent Launch (see [`Gpu::pdl`]).
    fn record_decode(&self) -> Result<(), ModelError> {
        let pdl = self.gpu.cc_major >= 9 && self.gpu.opts.pdl;
        self.gpu.pdl.store(pdl, Ordering::Relaxed);
        let r = self.record_decode_kernels();
        self.gpu.pdl.store(false, Ordering::Relaxed);
        r
    }

    fn record_decode_kernels(&self) -> Result<(), ModelError> {
        let (g, c, a) = (&self.gpu, &self.config, &self.attn);
        let (aq, ads) = (self.aq.ptr, self.ads.ptr);
        let q8 = MvIn { aq, ads };
        let null = 0u64;
        self.embed(1)?;
        for (il, l) in self.layers.iter().enumerate() {
            let (kc, vc) = (
                self.kc.at(self.kv_offset(il)),
                self.vc.at(self.kv_offset(il)),
            );
            let norm_q8 = |w: &DevBuf| -> Result<MvIn, ModelError> {
                rms_norm(
                    g,
                    self.x.ptr,
                    0,
                    w,
                    c.rms_eps,
                    (1, c.n_embd),
                    (null, null),
                    (aq, ads),
                )?;
                Ok(q8)
            };
            let rope = RopeOut {
                io: self.io.ptr,
                qh: self.qh.ptr,
                kc,
                vc,
            };
            matvec(
                g,
                &[(&l.wq, null), (&l.wk, null), (&l.wv, null)],
                norm_q8(&l.attn_norm)?,
                3,
                Some((a, rope)),
            )?;
            attn_decode(
                g,
                a,
                self.qh.ptr,
                (kc, vc),
                self.io.ptr,
                (self.part.ptr, self.counter.ptr),
                null,
                (aq, ads),
            )?;
            matvec(g, &[(&l.wo, self.x.ptr)], q8, 1, None)?;
            matvec(
                g,
                &[(&l.w_gate, self.gate.ptr), (&l.w_up, null)],
                norm_q8(&l.ffn_norm)?,
                2,
                None,
            )?;
            quantize(g, self.gate.ptr, c.n_ff, aq, ads)?;
            matvec(g, &[(&l.w_down, self.x.ptr)], q8, 1, None)?;
        }
        rms_norm(
            g,
            self.x.ptr,
            0,
            &self.output_norm,
            c.rms_eps,
            (1, c.n_embd),
            (null, null),
            (aq, ads),
        )?;
        matvec(g, &[(self.head(), self.logits.ptr)], q8, 0, None)
    }

    /// Runs one token at `pos`; its logits end in `self.logits`.
    fn decode(&mut self, token: u32, pos: usize) -> Result<(), ModelError> {
        self.gpu.write(&self.io, 0, &[pos as i32, token as i32])?;
        if !self.use_graph {
            return self.record_decode();
        }
        if self.graph.is_none() {
            let stream = self.gpu.stream.clone();
            stream
                .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                .map_err(|e| drv_err("starting the graph capture", e))?;
            let recorded = self.record_decode();
            let graph = stream.end_capture(
                sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
            );
            recorded?;
            self.graph = graph.map_err(|e| drv_err("capturing the decode graph", e))?;
        }
        match &self.graph {
            Some(graph) => graph
                .launch()
                .map_err(|e| drv_err("launching the decode graph", e)),
            None => self.record_decode(),
        }
    }

    /// `out[n][rows] (+)= x16[n][cols] · Wᵀ` through the f16 scratch copy of `w`.
    fn linear(
        &self,
        pb: &PromptBufs,
        w: &GWeight,
        x16: u64,
        n: usize,
        out: u64,
        beta: f32,
    ) -> Result<(), ModelError> {
        let total = w.rows * w.cols;
        self.gpu.launch(
            &self.gpu.k.dequant_f16,
            (total.div_ceil(256).min(1 << 16) as u32, 1, 1),
            256,
            &[
                &w.buf.ptr,
                &w.ty,
                &(w.rows as i32),
                &(w.cols as i32),
                &pb.wtmp.ptr,
            ],
        )?;
        self.gpu.gemm(
            true,
            (w.rows, n, w.cols),
            (pb.wtmp.ptr, w.cols, 0),
            (x16, w.cols, 0),
            beta,
            (out, w.rows, 0, false),
            1,
        )
    }

    /// Runs `n` tokens (already in `io`, position `pos0`) through the prompt path.
    fn record_prompt(&mut self, n: usize, pos0: usize, head: Head) -> Result<(), ModelError> {
        if head == Head::All && self.prompt.as_ref().is_some_and(|p| p.logits.is_none()) {
            let buf = self.gpu.alloc(
                self.ub * self.config.n_vocab * 4,
                "the logits of a prompt batch",
            )?;
            if let Some(p) = self.prompt.as_mut() {
                p.logits = Some(buf);
            }
        }
        let pb = self.prompt.as_ref().expect("prompt path needs its buffers");
        let (g, c, a) = (&self.gpu, &self.config, &self.attn);
        let (e, ff, hd) = (c.n_embd, c.n_ff, a.hd);
        let group = a.n_head / a.n_head_kv;
        let n_kv = pos0 + n;
        let null = 0u64;
        self.embed(n)?;
        for (il, l) in self.layers.iter().enumerate() {
            let (kc, vc) = (
                self.kc.at(self.kv_offset(il)),
                self.vc.at(self.kv_offset(il)),
            );
            rms_norm(
                g,
                self.x.ptr,
                0,
                &l.attn_norm,
                c.rms_eps,
                (n, e),
                (null, pb.x16.ptr),
                (null, null),
            )?;
            self.linear(pb, &l.wq, pb.x16.ptr, n, self.q.ptr, 0.0)?;
            self.linear(pb, &l.wk, pb.x16.ptr, n, self.k.ptr, 0.0)?;
            self.linear(pb, &l.wv, pb.x16.ptr, n, self.v.ptr, 0.0)?;
            rope_kv(
                g,
                a,
                n,
                (self.q.ptr, self.k.ptr, self.v.ptr),
                self.io.ptr,
                self.qh.ptr,
                (kc, vc),
            )?;
            // Attention output as f16 rows [t][head · hd] into x16, the wo GEMM's input.
            match &pb.scores {
                None => attn_prompt(g, a, (n, pos0), self.qh.ptr, (kc, vc), pb.x16.ptr)?,
                Some(sc) => {
                    // scores[kvh][g·n][n_kv] = Q[kvh][g·n][hd] · K[kvh][n_kv][hd]ᵀ
                    g.gemm(
                        true,
                        (n_kv, group * n, hd),
                        (kc, hd, a.n_ctx * hd),
                        (self.qh.ptr, hd, group * n * hd),
                        0.0,
                        (sc.s.ptr, n_kv, group * n * n_kv, false),
                        a.n_head_kv,
                    )?;
                    g.launch(
                        &g.k.softmax_causal,
                        ((a.n_head * n) as u32, 1, 1),
                        256,
                        &[
                            &sc.s.ptr,
                            &sc.p.ptr,
                            &(n as i32),
                            &(n_kv as i32),
                            &(pos0 as i32),
                            &(1.0 / (hd as f32).sqrt()),
                        ],
                    )?;
                    // out[kvh][g·n][hd] = P[kvh][g·n][n_kv] · V[kvh][n_kv][hd]
                    g.gemm(
                        false,
                        (hd, group * n, n_kv),
                        (vc, hd, a.n_ctx * hd),
                        (sc.p.ptr, n_kv, group * n * n_kv),
                        0.0,
                        (sc.o16.ptr, hd, group * n * hd, true),
                        a.n_head_kv,
                    )?;
                    let total = n * e;
                    g.launch(
                        &g.k.heads_to_rows,
                        (total.div_ceil(256) as u32, 1, 1),
                        256,
                        &[
                            &sc.o16.ptr,
                            &pb.x16.ptr,
                            &(n as i32),
                            &(a.n_head as i32),
                            &(hd as i32),
                        ],
                    )?;
                }
            }
            self.linear(pb, &l.wo, pb.x16.ptr, n, self.x.ptr, 1.0)?;
            rms_norm(
                g,
                self.x.ptr,
                0,
                &l.ffn_norm,
                c.rms_eps,
                (n, e),
                (null, pb.x16.ptr),
                (null, null),
            )?;
            self.linear(pb, &l.w_gate, pb.x16.ptr, n, self.gate.ptr, 0.0)?;
            self.linear(pb, &l.w_up, pb.x16.ptr, n, self.up.ptr, 0.0)?;
            g.launch(
                &g.k.swiglu_f16,
                ((n * ff).div_ceil(256).min(1 << 16) as u32, 1, 1),
                256,
                &[
                    &self.gate.ptr,
                    &self.up.ptr,
                    &pb.x16.ptr,
                    &((n * ff) as i32),
                ],
            )?;
            self.linear(pb, &l.w_down, pb.x16.ptr, n, self.x.ptr, 1.0)?;
        }
        match head {
            Head::None => Ok(()),
            Head::Last => {
                rms_norm(
                    g,
                    self.x.ptr,
                    n - 1,
                    &self.output_norm,
                    c.rms_eps,
                    (1, e),
                    (null, null),
                    (self.aq.ptr, self.ads.ptr),
                )?;
                let q8 = MvIn {
                    aq: self.aq.ptr,
                    ads: self.ads.ptr,
                };
                matvec(g, &[(self.head(), self.logits.ptr)], q8, 0, None)
            }
            Head::All => {
                rms_norm(
                    g,
                    self.x.ptr,
                    0,
                    &self.output_norm,
                    c.rms_eps,
                    (n, e),
                    (null, pb.x16.ptr),
                    (null, null),
                )?;
                let logits = pb.logits.as_ref().expect("allocated above");
                self.linear(pb, self.head(), pb.x16.ptr, n, logits.ptr, 0.0)
            }
        }
    }

    fn check(&self, tokens: &[u32], pos0: usize) -> Result<(), ModelError> {
        let end = pos0 + tokens.len();
        if end > self.n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: end,
                n_ctx: self.n_ctx,
            });
        }
        crate::check_tokens(tokens, self.config.n_vocab)
    }
}

impl Model for CudaModel {
    fn config(&self) -> &Config {
        &self.config
    }

    fn device(&self) -> Device {
        Device::Cuda
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn eval(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.check(tokens, pos0)?;
        let n_vocab = self.config.n_vocab;
        let rows = match logits {
            Logits::All => tokens.len(),
            Logits::Last => 1,
        };
        out.resize(rows * n_vocab, 0.0);
        if tokens.is_empty() {
            return Ok(());
        }
        if tokens.len() == 1 || self.prompt.is_none() {
            for (i, &t) in tokens.iter().enumerate() {
                self.decode(t, pos0 + i)?;
                if logits == Logits::All {
                    self.gpu
                        .read(&self.logits, 0, &mut out[i * n_vocab..(i + 1) * n_vocab])?;
                }
            }
            if logits == Logits::Last {
                self.gpu.read(&self.logits, 0, &mut out[..n_vocab])?;
            }
            return Ok(());
        }
        let ub = self.ub;
        for (ci, chunk) in tokens.chunks(ub).enumerate() {
            let start = ci * ub;
            let last = start + chunk.len() == tokens.len();
            let head = match logits {
                Logits::All => Head::All,
                Logits::Last if last => Head::Last,
                Logits::Last => Head::None,
            };
            let mut io = Vec::with_capacity(1 + chunk.len());
            io.push((pos0 + start) as i32);
            io.extend(chunk.iter().map(|&t| t as i32));
            self.gpu.write(&self.io, 0, &io)?;
            self.record_prompt(chunk.len(), pos0 + start, head)?;
            match head {
                Head::None => {}
                Head::Last => self.gpu.read(&self.logits, 0, &mut out[..n_vocab])?,
                Head::All => {
                    let buf = self
                        .prompt
                        .as_ref()
                        .and_then(|p| p.logits.as_ref())
                        .expect("allocated by record_prompt");
                    self.gpu.read(
                        buf,
                        0,
                        &mut out[start * n_vocab..(start + chunk.len()) * n_vocab],
                    )?;
                }
            }
        }
        Ok(())
    }

    fn eval_argmax(&mut self, token: u32, pos: usize) -> Result<u32, ModelError> {
        self.check(&[token], pos)?;
        self.decode(token, pos)?;
        let n_vocab = self.config.n_vocab as i32;
        self.gpu.launch(
            &self.gpu.k.argmax,
            (1, 1, 1),
            1024,
            &[&self.logits.ptr, &n_vocab, &self.best.ptr],
        )?;
        let mut best = [0i32];
        self.gpu.read(&self.best, 0, &mut best)?;
        Ok(best[0] as u32)
    }
}

// The model is used from one thread at a time (`&mut self`); the context is bound to the calling
// thread before every driver call (`Gpu::launch` and friends go through cudarc, which binds it).
// SAFETY: the raw device pointers and the graph handle are plain addresses owned by this value.
unsafe impl Send for CudaModel {}

impl Drop for CudaModel {
    fn drop(&mut self) {
        let _ = self.gpu.sync();
    }
}
