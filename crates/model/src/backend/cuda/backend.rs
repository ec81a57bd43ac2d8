//! The CUDA backend: the [`Backend`] operations as kernel launches and cuBLAS GEMMs.
//!
//! One row (decode): the model's compound operations become the fused kernels: RMSNorm writes the
//! next mat-vec's input already quantized to q8_1; q/k/v are one mat-vec launch that also rotates q
//! and k and stores k and v into the cache; gate·up·SiLU is one mat-vec; the projections add into
//! the residual stream in their epilogue; the split-K attention merges straight into q8_1 for the
//! output projection. The mat-vecs read the weights in their GGUF blocks and take int8 dot
//! products (dp4a). The step's rows (token, position, sequence) live in the device buffer `io`,
//! written once per step by [`Backend::begin_step`], so the launches of a decode step are the same
//! every step: the first is captured as a CUDA graph and later steps replay it (the `graph`
//! option off: no graph). On sm_90+ the step's kernels go with Programmatic Dependent Launch: each
//! kernel's blocks start while the previous kernel finishes, pull their weight rows (the
//! attention: the cached keys and values) into L2, and only then wait for the previous results.
//!
//! Several rows (prompts, several sequences): each weight is dequantized to an f16 scratch matrix
//! and multiplied by cuBLAS on tensor cores (f32 accumulation); attention runs per span of one
//! sequence: one flash-attention kernel (tensor cores, online softmax) on sm_80+, on older cards
//! (or with the `flash` option off) two batched GEMMs (scores = K·Q, out = V·P) around a causal
//! softmax for a single-span batch; a lone row of a span takes the decode attention. Without
//! cuBLAS, matmuls run row by row through the mat-vec.
//!
//! The quantized (q8_1) or f16 copy that an operation leaves in the scratch for the next matmul is
//! recorded with the buffer's identity and version ([`Act`]); a matmul whose input has such a copy
//! skips quantizing it. Writing a buffer bumps its version (only [`CudaBuf::w`] hands out a
//! writable address), so a stale copy is never used. Primitive operations write their f32
//! outputs; in a prompt the fused overrides write the normed rows, the attention output and the
//! SwiGLU product only as the f16 copy the next GEMM reads (unless `RUSTORCH_DEBUG` shows them),
//! and mark the buffer's f32 values as not kept: a later f32 read converts them from the copy
//! while the scratch still holds it, and is an error after (never stale values).
//!
//! Row-major reading of the GEMMs: cuBLAS is column-major, so a row-major `[r][c]` matrix is its
//! `c × r` column-major transpose; `out[n][rows] = x[n][cols] · W[rows][cols]ᵀ` is the column-major
//! `outᵀ = op_T(W) · xᵀ`, which is what [`Gpu::gemm`] gets.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use cudarc::driver::{sys, CudaGraph};
use rustorch_gguf::GgufFile;
use rustorch_quant::dispatch;

use super::gpu::{drv_err, DevBuf, Gpu};
use super::ops::{
    self, attn_decode, attn_prompt, flash_enabled, matvec, quantize, rms_norm, upload_matrix, Attn,
    GWeight, MvIn, RopeOut, RMS_NORM_MAX,
};
use crate::backend::{
    matrix_rows, AttnShape, Backend, Batch, Device, KvSpec, RopeStyle, Span, Step, KV_BLOCK,
    N_UBATCH,
};
use crate::options::CudaOptions;
use crate::ModelError;

/// An f32 activation buffer on the GPU. Its version counts the writes through [`CudaBuf::w`].
pub struct CudaBuf {
    buf: DevBuf,
    id: u64,
    ver: u64,
    len: usize,
    /// The f32 values were not written, only the f16 copy recorded in [`Act`].
    f16_only: Cell<bool>,
}

impl CudaBuf {
    /// The address, to write: the buffer's scratch copies are stale from here on.
    fn w(&mut self) -> u64 {
        self.ver += 1;
        self.f16_only.set(false);
        self.buf.ptr
    }
    fn key(&self) -> (u64, u64) {
        (self.id, self.ver)
    }
}

/// A weight on the GPU: a matrix in its GGUF format, or a vector (norm weights) in f32.
pub struct CudaWeight(Weight);

enum Weight {
    Matrix(GWeight),
    Vector(DevBuf),
}

impl CudaWeight {
    fn matrix(&self) -> Result<&GWeight, ModelError> {
        match &self.0 {
            Weight::Matrix(m) => Ok(m),
            Weight::Vector(_) => Err(ModelError::Backend(
                "cuda: a vector weight used as a matrix".into(),
            )),
        }
    }
    fn vector(&self) -> Result<&DevBuf, ModelError> {
        match &self.0 {
            Weight::Vector(v) => Ok(v),
            Weight::Matrix(_) => Err(ModelError::Backend(
                "cuda: a matrix weight used as a vector".into(),
            )),
        }
    }
}

/// The KV cache: f16 `[layer][seq][kv_head][cap][head_dim]` for keys and for values, where
/// layer `l` holds `cap = ctx[l]` positions, position `p` in slot `p % cap`.
pub struct CudaKv {
    kc: DevBuf,
    vc: DevBuf,
    spec: KvSpec,
    /// Rows of one KV head's plane in each layer (`kv_at` in `kernels.cu`): the pool's positions
    /// in a paged layer (one plane for all sequences), a ring's in a sliding-window layer (a
    /// plane per sequence).
    ctx: Vec<usize>,
    /// Where each layer starts, in bytes.
    start: Vec<usize>,
    /// Each sequence's block table (`spec.table_len()` entries; -1: not mapped), and the copy
    /// on the GPU that the kernels read.
    tables: Vec<i32>,
    dev_tables: DevBuf,
    n_head_kv: usize,
    hd: usize,
}

impl CudaKv {
    /// The addresses of layer `il`'s keys and values (its first sequence).
    fn layer(&self, il: usize) -> (u64, u64) {
        (self.kc.at(self.start[il]), self.vc.at(self.start[il]))
    }

    /// The block tables' address and entries a sequence, for layer `il` if it is paged.
    fn paging(&self, il: usize) -> Option<(u64, usize)> {
        (self.spec.ring[il] == 0).then(|| (self.dev_tables.ptr, self.spec.table_len()))
    }

    /// The plane row of sequence `seq`'s position 0 when its positions `0..n_kv` lie in
    /// consecutive blocks of the pool (a side-by-side sequence's own blocks).
    fn contiguous(&self, seq: usize, n_kv: usize) -> Option<usize> {
        let tlen = self.spec.table_len();
        let table = &self.tables[seq * tlen..(seq + 1) * tlen];
        let first = *table.first()?;
        let consecutive = (table[..n_kv.div_ceil(KV_BLOCK)].iter().enumerate())
            .all(|(i, &b)| b == first + i as i32);
        (first >= 0 && consecutive).then_some(first as usize * KV_BLOCK)
    }
}

/// What the scratch holds for the next matmul: a copy of buffer `key` (id, version).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Act {
    /// q8_1 codes of one row of `len` values in `aq`/`ads`.
    Q8 { key: (u64, u64), len: usize },
    /// f16 rows, `len` values in all, in `x16`.
    F16 { key: (u64, u64), len: usize },
}

/// Scratch buffers, grown to their largest use and kept (a recorded graph holds their addresses).
#[derive(Clone, Copy)]
enum S {
    /// q8_1 codes of one row.
    Aq,
    /// (d, d·Σq) of its blocks.
    Ads,
    /// f16 rows, the GEMMs' input.
    X16,
    /// The dequantized f16 weight of a GEMM.
    Wtmp,
    /// Decode attention partials.
    Part,
    /// Decode attention arrivals, zero between launches.
    Counter,
    /// The cuBLAS prompt attention's scores, probabilities and output.
    Scores,
    /// Its f16 head-major queries.
    Qh,
}
const N_SCRATCH: usize = 8;

/// Decode graphs, by the number of head rows (0 or 1) of a one-row step.
type Graphs = HashMap<usize, CudaGraph>;

pub struct CudaBackend {
    gpu: Gpu,
    next_id: u64,
    /// The step's rows as (token, position, sequence), `3 * N_UBATCH` i32.
    io: DevBuf,
    host_io: Vec<i32>,
    n_rows: usize,
    spans: Vec<Span>,
    act: Option<Act>,
    scratch: [Option<DevBuf>; N_SCRATCH],
    best: DevBuf, // argmax result
    /// Values of the largest matrix uploaded (the f16 weight scratch's size).
    largest: usize,
    graphs: Graphs,
    /// One-row step shapes run once without a graph (every scratch buffer is then allocated and
    /// the counters zeroed, none of which a capture may do), by head rows.
    warm: [bool; 2],
    /// The head rows of the step being captured.
    capturing: Option<usize>,
    use_graph: bool,
    /// `RUSTORCH_DEBUG` is on: every f32 output is written (the debug printer reads them).
    debug: bool,
}

impl CudaBackend {
    pub fn new(opts: &CudaOptions) -> Result<CudaBackend, ModelError> {
        let gpu = Gpu::with_options(opts.clone())?;
        let io = gpu.alloc(3 * N_UBATCH * 4, "the step's rows")?;
        let best = gpu.alloc(4, "argmax")?;
        Ok(CudaBackend {
            io,
            best,
            host_io: Vec::with_capacity(3 * N_UBATCH),
            n_rows: 0,
            spans: Vec::new(),
            act: None,
            scratch: Default::default(),
            largest: 0,
            graphs: HashMap::new(),
            warm: [false; 2],
            capturing: None,
            // The graph replays the step without the host seeing its intermediates.
            use_graph: gpu.opts.graph && !crate::debug::Debug::from_env().enabled(),
            debug: crate::debug::Debug::from_env().enabled(),
            next_id: 0,
            gpu,
        })
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// The address of row `t` in `io`.
    fn io_row(&self, t: usize) -> u64 {
        self.io.at(t * 12)
    }

    /// The address of scratch buffer `which`, grown to at least `bytes`.
    fn scratch(&mut self, which: S, bytes: usize) -> Result<u64, ModelError> {
        let slot = &mut self.scratch[which as usize];
        if slot.as_ref().is_none_or(|b| b.bytes() < bytes) {
            *slot = Some(self.gpu.alloc(bytes.max(4), "scratch")?);
            // Recorded graphs hold the old address; the next one-row steps warm up again, so no
            // capture allocates.
            self.graphs.clear();
            self.warm = [false; 2];
            if let S::Counter = which {
                let zeros = vec![0i32; bytes.max(4) / 4];
                self.gpu
                    .write(slot.as_ref().expect("allocated"), 0, &zeros)?;
            }
        }
        Ok(slot.as_ref().expect("allocated").ptr)
    }

    /// The address of `b`'s f32 values, converted from its f16 copy when only that was written.
    fn f32_of(&mut self, b: &CudaBuf) -> Result<u64, ModelError> {
        if b.f16_only.get() {
            match self.act {
                Some(Act::F16 { key, len }) if key == b.key() => {
                    let x16 = self.scratch(S::X16, len * 2)?;
                    let f16 = rustorch_gguf::GgmlType::F16.id() as i32;
                    self.gpu.launch(
                        &self.gpu.k.dequant_f32,
                        (len.div_ceil(256).min(1 << 16) as u32, 1, 1),
                        256,
                        &[&x16, &f16, &1i32, &(len as i32), &b.buf.ptr],
                    )?;
                    b.f16_only.set(false);
                }
                _ => {
                    return Err(ModelError::Backend(
                        "cuda: an activation's f32 values were read after its f16 copy was \
                         overwritten"
                            .into(),
                    ))
                }
            }
        }
        Ok(b.buf.ptr)
    }

    /// The address of `b`, to read and write in place.
    fn rw(&mut self, b: &mut CudaBuf) -> Result<u64, ModelError> {
        self.f32_of(b)?;
        Ok(b.w())
    }

    /// The q8_1 codes of `x` (one row of `len`), quantizing it unless the scratch has them.
    fn q8_of(&mut self, x: &CudaBuf, len: usize) -> Result<MvIn, ModelError> {
        let aq = self.scratch(S::Aq, len)?;
        let ads = self.scratch(S::Ads, len / 32 * 8)?;
        let want = Act::Q8 { key: x.key(), len };
        if self.act != Some(want) {
            let xp = self.f32_of(x)?;
            quantize(&self.gpu, xp, len, aq, ads)?;
            self.act = Some(want);
        }
        Ok(MvIn { aq, ads })
    }

    /// The f16 copy of `x` (`len` values), converting it unless the scratch has it.
    fn f16_of(&mut self, x: &CudaBuf, len: usize) -> Result<u64, ModelError> {
        let x16 = self.scratch(S::X16, len * 2)?;
        let want = Act::F16 { key: x.key(), len };
        if self.act != Some(want) {
            let xp = self.f32_of(x)?;
            ops::to_f16(&self.gpu, xp, x16, len)?;
            self.act = Some(want);
        }
        Ok(x16)
    }

    /// The attention geometry of layer `layer`.
    fn attn(&self, shape: &AttnShape, kv: &CudaKv, layer: usize) -> Attn {
        let a = Attn::new(
            shape,
            kv.ctx[layer],
            Attn::splits_for(shape.n_head, shape.n_head_kv),
        );
        match kv.paging(layer) {
            Some((tables, tlen)) => a.paged(tables, tlen),
            None => a,
        }
    }

    /// `out[n][rows] (+)= x16[n][cols] · Wᵀ` through an f16 scratch copy of `w` and cuBLAS.
    fn linear(
        &mut self,
        w: &GWeight,
        x16: u64,
        n: usize,
        out: u64,
        add: bool,
    ) -> Result<(), ModelError> {
        let beta = if add { 1.0 } else { 0.0 };
        let total = w.rows * w.cols;
        let wtmp = self.scratch(S::Wtmp, self.largest.max(total) * 2)?;
        self.gpu.launch(
            &self.gpu.k.dequant_f16,
            (total.div_ceil(256).min(1 << 16) as u32, 1, 1),
            256,
            &[&w.buf.ptr, &w.ty, &(w.rows as i32), &(w.cols as i32), &wtmp],
        )?;
        self.gpu.gemm(
            true,
            (w.rows, n, w.cols),
            (wtmp, w.cols, 0),
            (x16, w.cols, 0),
            beta,
            (out, w.rows, 0, false),
            1,
        )
    }

    /// `outs[i] (+)= ws[i] · x` over `n` rows (`add`: into the outputs): mat-vec for one row,
    /// cuBLAS for several, row-by-row mat-vecs without cuBLAS.
    fn project(
        &mut self,
        ws: &[&GWeight],
        x: &CudaBuf,
        n: usize,
        outs: &[u64],
        add: bool,
    ) -> Result<(), ModelError> {
        let cols = ws[0].cols;
        if ws.iter().any(|w| w.cols != cols) || x.len < n * cols {
            return Err(ModelError::Backend("cuda: matmul shapes disagree".into()));
        }
        let mode = i32::from(add);
        if n == 1 {
            let input = self.q8_of(x, cols)?;
            let pairs: Vec<(&GWeight, u64)> =
                ws.iter().copied().zip(outs.iter().copied()).collect();
            for group in pairs.chunks(3) {
                matvec(&self.gpu, group, input, mode, None)?;
            }
            return Ok(());
        }
        if self.gpu.has_blas() || ws.iter().all(|w| ops::qgemm_for(&self.gpu, w)) {
            let x16 = self.f16_of(x, n * cols)?;
            for (w, &out) in ws.iter().zip(outs) {
                if ops::qgemm_for(&self.gpu, w) {
                    ops::qgemm(&self.gpu, w, (x16, n), out, add, None)?;
                } else {
                    self.linear(w, x16, n, out, add)?;
                }
            }
            return Ok(());
        }
        let xp = self.f32_of(x)?;
        let aq = self.scratch(S::Aq, cols)?;
        let ads = self.scratch(S::Ads, cols / 32 * 8)?;
        for t in 0..n {
            quantize(&self.gpu, xp + (t * cols * 4) as u64, cols, aq, ads)?;
            for (w, &out) in ws.iter().zip(outs) {
                let o = out + (t * w.rows * 4) as u64;
                matvec(&self.gpu, &[(w, o)], MvIn { aq, ads }, mode, None)?;
            }
        }
        self.act = None;
        Ok(())
    }

    /// RMSNorm of `n` rows into `out`, also leaving the next matmul's input in the scratch (q8_1
    /// for one row, f16 for several). Without `keep`, several rows go only to the f16 copy.
    fn norm(
        &mut self,
        x: &CudaBuf,
        w: &CudaWeight,
        eps: f32,
        (n, dim): (usize, usize),
        out: &mut CudaBuf,
        keep: bool,
    ) -> Result<(), ModelError> {
        if !dim.is_multiple_of(32) || dim > RMS_NORM_MAX {
            return Err(ModelError::Backend(format!(
                "cuda: rows of {dim} values cannot be normed (multiples of 32 up to {RMS_NORM_MAX})"
            )));
        }
        let w = w.vector()?;
        let null = 0u64;
        let xp = self.f32_of(x)?;
        if n == 1 {
            let aq = self.scratch(S::Aq, dim)?;
            let ads = self.scratch(S::Ads, dim / 32 * 8)?;
            rms_norm(
                &self.gpu,
                xp,
                0,
                w,
                eps,
                (1, dim),
                (out.w(), null),
                (aq, ads),
            )?;
            self.act = Some(Act::Q8 {
                key: out.key(),
                len: dim,
            });
        } else if self.gpu.has_blas() {
            let x16 = self.scratch(S::X16, n * dim * 2)?;
            let o = out.w();
            let of32 = if keep { o } else { null };
            rms_norm(
                &self.gpu,
                xp,
                0,
                w,
                eps,
                (n, dim),
                (of32, x16),
                (null, null),
            )?;
            out.f16_only.set(!keep);
            self.act = Some(Act::F16 {
                key: out.key(),
                len: n * dim,
            });
        } else {
            rms_norm(
                &self.gpu,
                xp,
                0,
                w,
                eps,
                (n, dim),
                (out.w(), null),
                (null, null),
            )?;
        }
        Ok(())
    }
}

/// The activation of a gated feed-forward.
#[derive(Clone, Copy)]
enum Gate {
    Silu,
    Gelu,
}

impl CudaBackend {
    /// `gate = act(gate) * up` over `len` values, also as the f16 copy the next GEMM reads when
    /// cuBLAS is there; without `keep` (and with that copy) the f32 values are not written and the
    /// buffer is marked so.
    fn gated(
        &mut self,
        act: Gate,
        gate: &mut CudaBuf,
        up: &CudaBuf,
        len: usize,
        keep: bool,
    ) -> Result<(), ModelError> {
        let x16 = if self.gpu.has_blas() {
            self.scratch(S::X16, len * 2)?
        } else {
            0
        };
        let keep = keep || x16 == 0;
        let up = self.f32_of(up)?;
        let g = self.rw(gate)?;
        let kernel = match act {
            Gate::Silu => &self.gpu.k.swiglu,
            Gate::Gelu => &self.gpu.k.geglu,
        };
        ops::gated(&self.gpu, kernel, (g, up), (x16, keep), len)?;
        gate.f16_only.set(!keep);
        self.act = (x16 != 0).then_some(Act::F16 {
            key: gate.key(),
            len,
        });
        Ok(())
    }
}

impl Backend for CudaBackend {
    type Buf = CudaBuf;
    type Weight = CudaWeight;
    type Kv = CudaKv;

    fn device(&self) -> Device {
        Device::Cuda
    }

    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<CudaWeight, ModelError> {
        let t = file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        match t.dims[..] {
            [len] => {
                let mut v = vec![0f32; len as usize];
                dispatch::dequantize_row(t.ty, file.tensor_data(t), &mut v).map_err(|_| {
                    ModelError::UnsupportedType {
                        name: name.to_string(),
                        ty: t.ty,
                        backend: "cuda",
                    }
                })?;
                Ok(CudaWeight(Weight::Vector(self.gpu.upload(&v, name)?)))
            }
            [cols, rows] => {
                let (cols, rows) = (cols as usize, rows as usize);
                self.largest = self.largest.max(rows * cols);
                Ok(CudaWeight(Weight::Matrix(upload_matrix(
                    &self.gpu,
                    name,
                    t.ty,
                    file.tensor_data(t),
                    rows,
                    cols,
                )?)))
            }
            _ => Err(ModelError::Backend(format!(
                "cuda: tensor '{name}' has {} dimensions",
                t.dims.len()
            ))),
        }
    }

    fn upload_rows(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        rows: Range<usize>,
    ) -> Result<CudaWeight, ModelError> {
        let m = matrix_rows(file, name, Some(rows), "cuda")?;
        let data = &file.tensor_data(m.info)[m.bytes];
        self.largest = self.largest.max(m.rows * m.cols);
        Ok(CudaWeight(Weight::Matrix(upload_matrix(
            &self.gpu, name, m.info.ty, data, m.rows, m.cols,
        )?)))
    }

    fn alloc(&mut self, len: usize) -> Result<CudaBuf, ModelError> {
        // A buffer allocated now may replace one a recorded graph writes (the logits grow to
        // the largest step): record again.
        self.graphs.clear();
        self.warm = [false; 2];
        self.next_id += 1;
        Ok(CudaBuf {
            buf: self.gpu.alloc(len * 4, "activations")?,
            id: self.next_id,
            ver: 0,
            len,
            f16_only: Cell::new(false),
        })
    }

    fn alloc_kv(&mut self, spec: &KvSpec) -> Result<CudaKv, ModelError> {
        let overflow = || ModelError::Backend("cuda: KV cache size overflows".into());
        let (n_seq, n_head_kv, head_dim) = (spec.n_seq, spec.n_head_kv, spec.head_dim);
        // Bytes of one position of one sequence (f16 keys or values of every KV head).
        let row = n_head_kv
            .checked_mul(head_dim)
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(overflow)?;
        let pool = spec.n_blocks.checked_mul(KV_BLOCK).ok_or_else(overflow)?;
        if pool > i32::MAX as usize {
            return Err(overflow());
        }
        // A paged layer's pool, shared; a sliding-window layer's ring per sequence.
        let ctx: Vec<usize> = (spec.ring.iter())
            .map(|&r| if r == 0 { pool } else { r })
            .collect();
        let mut start = Vec::with_capacity(ctx.len());
        let mut bytes = 0usize;
        for (&c, &ring) in ctx.iter().zip(&spec.ring) {
            start.push(bytes);
            let planes = if ring == 0 { 1 } else { n_seq };
            bytes = c
                .checked_mul(row)
                .and_then(|b| b.checked_mul(planes))
                .and_then(|b| b.checked_add(bytes))
                .filter(|&b| b <= isize::MAX as usize)
                .ok_or_else(overflow)?;
        }
        let tlen = spec.table_len();
        let tables: Vec<i32> = (0..n_seq)
            .flat_map(|s| (0..tlen).map(move |i| (s, i)))
            .map(|(s, i)| match spec.side_by_side() {
                true => spec.own_block(s, i) as i32,
                false => -1,
            })
            .collect();
        let dev_tables = self.gpu.upload(&tables, "the KV block tables")?;
        let what = format!("the KV cache ({n_seq} sequences)");
        let (kc, vc) = (self.gpu.alloc(bytes, &what)?, self.gpu.alloc(bytes, &what)?);
        // Zeroed: attention may read a slot it masks out (a tile's keys before a window), and a
        // masked probability of 0 times a NaN left in fresh memory would still be NaN.
        self.gpu.zero(&kc)?;
        self.gpu.zero(&vc)?;
        Ok(CudaKv {
            kc,
            vc,
            spec: spec.clone(),
            ctx,
            start,
            tables,
            dev_tables,
            n_head_kv,
            hd: head_dim,
        })
    }

    fn map_blocks(
        &mut self,
        kv: &mut CudaKv,
        seq: usize,
        first: usize,
        blocks: &[u32],
    ) -> Result<(), ModelError> {
        kv.spec.check_map(seq, first, blocks)?;
        let at = seq * kv.spec.table_len() + first;
        let entries = &mut kv.tables[at..at + blocks.len()];
        for (e, &b) in entries.iter_mut().zip(blocks) {
            *e = b as i32;
        }
        // On the stream, ahead of the next step's kernels (a replayed graph's included).
        self.gpu.write(&kv.dev_tables, at * 4, entries)
    }

    fn begin_step(&mut self, batch: &Batch, head: &[u32]) -> Result<Step, ModelError> {
        let n = batch.len();
        if n == 0 || n > N_UBATCH {
            return Err(ModelError::Backend(format!(
                "cuda: a step takes 1..={N_UBATCH} rows, not {n}"
            )));
        }
        self.host_io.clear();
        for t in 0..n {
            self.host_io.extend([
                batch.tokens[t] as i32,
                batch.pos[t] as i32,
                batch.seqs[t] as i32,
            ]);
        }
        self.gpu.write(&self.io, 0, &self.host_io)?;
        self.n_rows = n;
        batch.spans(&mut self.spans);
        self.act = None;
        let decode = n == 1 && head.len() <= 1;
        // One-row steps go with Programmatic Dependent Launch (sm_90+).
        let pdl = decode && self.gpu.cc_major >= 9 && self.gpu.opts.pdl;
        if decode && self.use_graph {
            let key = head.len();
            if let Some(graph) = self.graphs.get(&key) {
                graph
                    .launch()
                    .map_err(|e| drv_err("launching the decode graph", e))?;
                return Ok(Step::Done);
            }
            if self.warm[key] {
                self.gpu
                    .stream
                    .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)
                    .map_err(|e| drv_err("starting the graph capture", e))?;
                self.capturing = Some(key);
            }
            self.warm[key] = true;
        }
        self.gpu.pdl.store(pdl, Ordering::Relaxed);
        Ok(Step::Record)
    }

    fn end_step(&mut self, ok: bool) -> Result<(), ModelError> {
        self.gpu.pdl.store(false, Ordering::Relaxed);
        let Some(key) = self.capturing.take() else {
            return Ok(());
        };
        let graph = self.gpu.stream.end_capture(
            sys::CUgraphInstantiate_flags::CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH,
        );
        let graph = graph.map_err(|e| drv_err("capturing the decode graph", e))?;
        if !ok {
            return Ok(());
        }
        let graph = graph
            .ok_or_else(|| ModelError::Backend("cuda: the decode step captured no work".into()))?;
        graph
            .launch()
            .map_err(|e| drv_err("launching the decode graph", e))?;
        self.graphs.insert(key, graph);
        Ok(())
    }

    fn embed(&mut self, table: &CudaWeight, n: usize, out: &mut CudaBuf) -> Result<(), ModelError> {
        let w = table.matrix()?;
        self.gpu.launch(
            &self.gpu.k.embed,
            (n as u32, 1, 1),
            256,
            &[&w.buf.ptr, &w.ty, &(w.cols as i32), &self.io.ptr, &out.w()],
        )
    }

    fn rms_norm(
        &mut self,
        x: &CudaBuf,
        weight: &CudaWeight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut CudaBuf,
    ) -> Result<(), ModelError> {
        self.norm(x, weight, eps, (n, dim), out, true)
    }

    fn matmul(
        &mut self,
        w: &CudaWeight,
        x: &CudaBuf,
        n: usize,
        out: &mut CudaBuf,
    ) -> Result<(), ModelError> {
        let o = out.w();
        self.project(&[w.matrix()?], x, n, &[o], false)
    }

    fn matmuls(
        &mut self,
        ws: &[&CudaWeight],
        x: &CudaBuf,
        n: usize,
        outs: &mut [&mut CudaBuf],
    ) -> Result<(), ModelError> {
        let ws: Vec<&GWeight> = ws.iter().map(|w| w.matrix()).collect::<Result<_, _>>()?;
        let outs: Vec<u64> = outs.iter_mut().map(|o| o.w()).collect();
        self.project(&ws, x, n, &outs, false)
    }

    fn rope(
        &mut self,
        x: &mut CudaBuf,
        n: usize,
        n_heads: usize,
        shape: &AttnShape,
        factors: Option<&CudaWeight>,
    ) -> Result<(), ModelError> {
        let a = Attn::new(shape, 0, 1);
        let ff = match factors {
            Some(f) => f.vector()?.ptr,
            None => 0,
        };
        let neox = shape.rope == RopeStyle::Neox;
        ops::rope(&self.gpu, &a, x.w(), n, n_heads, self.io.ptr, neox, ff)
    }

    fn kv_store(
        &mut self,
        kv: &mut CudaKv,
        layer: usize,
        k: &CudaBuf,
        v: &CudaBuf,
        n: usize,
    ) -> Result<(), ModelError> {
        let a = Attn {
            n_head: kv.n_head_kv,
            n_head_kv: kv.n_head_kv,
            hd: kv.hd,
            n_rot: 0,
            freq_base: 0.0,
            n_ctx: kv.ctx[layer],
            n_split: 1,
            scale: 1.0,
            rope_mscale: 1.0,
            window: 0,
            tables: 0,
            tlen: 0,
        };
        let a = match kv.paging(layer) {
            Some((tables, tlen)) => a.paged(tables, tlen),
            None => a,
        };
        let (kp, vp) = (self.f32_of(k)?, self.f32_of(v)?);
        ops::kv_store(&self.gpu, &a, (kp, vp), n, self.io.ptr, kv.layer(layer))
    }

    fn attention(
        &mut self,
        q: &CudaBuf,
        kv: &CudaKv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut CudaBuf,
    ) -> Result<(), ModelError> {
        let a = self.attn(shape, kv, layer);
        a.check()?;

        let (kc, vc) = kv.layer(layer);
        let e = a.n_head * a.hd;
        let qp = self.f32_of(q)?;
        let op = out.w();
        let row = |t: usize| (t * e * 4) as u64;
        let flash = flash_enabled(&self.gpu) && self.gpu.has_blas();
        let spans: Vec<Span> = self.spans.iter().copied().filter(|s| s.row0 < n).collect();
        // Every span through flash attention: the f16 copy alone serves the projection.
        let f16_only = !self.debug && flash && spans.iter().all(|s| s.len > 1);
        if n == 1 {
            // One row: split-K decode attention, merged into f32 and the q8_1 of the projection.
            let part = self.scratch(S::Part, a.n_head * a.n_split * (a.hd + 2) * 4)?;
            let counter = self.scratch(S::Counter, a.n_head_kv * a.group_blocks() * 4)?;
            let aq = self.scratch(S::Aq, e)?;
            let ads = self.scratch(S::Ads, e / 32 * 8)?;
            attn_decode(
                &self.gpu,
                &a,
                qp,
                (kc, vc),
                self.io_row(0),
                (part, counter),
                op,
                (aq, ads),
            )?;
            self.act = Some(Act::Q8 {
                key: out.key(),
                len: e,
            });
            return Ok(());
        }
        let x16 = if self.gpu.has_blas() {
            self.scratch(S::X16, n * e * 2)?
        } else {
            0
        };
        let mut f16_rows = x16 != 0;
        // The cuBLAS path reads a sequence's keys as one matrix a head: a plane of its own, or
        // consecutive blocks of the pool.
        let matrix = |s: &Span| match a.tables {
            0 => Some(a.seq_part(s.seq).0),
            _ => kv
                .contiguous(s.seq, s.pos0 + s.len)
                .map(|row| (row * a.hd * 2) as u64),
        };
        let scores = match spans.as_slice() {
            [s] if !flash && shape.window == 0 && s.len > 1 && self.gpu.has_blas() => {
                matrix(s).map(|at| (*s, at))
            }
            _ => None,
        };
        if let Some((s, at)) = scores {
            self.scores_attention(&a, q, (kc + at, vc + at), s, op, x16)?;
        } else {
            for s in &spans {
                let (at, tab) = a.seq_part(s.seq);
                let (k, v) = (kc + at, vc + at);
                if s.len > 1 && flash {
                    let o16 = if x16 != 0 {
                        x16 + (s.row0 * e * 2) as u64
                    } else {
                        0
                    };
                    let o32 = if f16_only { 0 } else { op + row(s.row0) };
                    attn_prompt(
                        &self.gpu,
                        &a,
                        (s.len, s.pos0),
                        qp + row(s.row0),
                        (k, v, tab),
                        (o32, o16),
                    )?;
                    continue;
                }
                f16_rows = false;
                let part = self.scratch(S::Part, a.n_head * a.n_split * (a.hd + 2) * 4)?;
                let counter = self.scratch(S::Counter, a.n_head_kv * a.group_blocks() * 4)?;
                for t in s.row0..s.row0 + s.len {
                    attn_decode(
                        &self.gpu,
                        &a,
                        qp + row(t),
                        (kc, vc),
                        self.io_row(t),
                        (part, counter),
                        op + row(t),
                        (0, 0),
                    )?;
                }
            }
        }
        out.f16_only.set(f16_only);
        self.act = f16_rows.then_some(Act::F16 {
            key: out.key(),
            len: n * e,
        });
        Ok(())
    }

    fn swiglu(&mut self, gate: &mut CudaBuf, up: &CudaBuf, len: usize) -> Result<(), ModelError> {
        self.gated(Gate::Silu, gate, up, len, true)
    }

    fn geglu(&mut self, gate: &mut CudaBuf, up: &CudaBuf, len: usize) -> Result<(), ModelError> {
        self.gated(Gate::Gelu, gate, up, len, true)
    }

    fn add_bias(
        &mut self,
        x: &mut CudaBuf,
        bias: &CudaWeight,
        n: usize,
        dim: usize,
    ) -> Result<(), ModelError> {
        let b = bias.vector()?;
        if b.bytes() != dim * 4 {
            return Err(ModelError::Backend(format!(
                "cuda: a bias of {} values for rows of {dim}",
                b.bytes() / 4
            )));
        }
        let xp = self.rw(x)?;
        ops::add_bias(&self.gpu, xp, b.ptr, dim, n * dim)
    }

    fn scale(&mut self, x: &mut CudaBuf, s: f32, len: usize) -> Result<(), ModelError> {
        let xp = self.rw(x)?;
        ops::scale(&self.gpu, xp, s, len)
    }

    fn add(&mut self, x: &mut CudaBuf, y: &CudaBuf, len: usize) -> Result<(), ModelError> {
        let yp = self.f32_of(y)?;
        let xp = self.rw(x)?;
        ops::add(&self.gpu, xp, yp, len)
    }

    fn copy_within(
        &mut self,
        x: &mut CudaBuf,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), ModelError> {
        if src.max(dst) + len > x.len || src.abs_diff(dst) < len {
            return Err(ModelError::Backend(
                "cuda: copy_within out of range or overlapping".into(),
            ));
        }
        let p = self.rw(x)?;
        self.gpu
            .copy(p + (dst * 4) as u64, p + (src * 4) as u64, len * 4)
    }

    fn read(&mut self, x: &CudaBuf, offset: usize, out: &mut [f32]) -> Result<(), ModelError> {
        if offset + out.len() > x.len {
            return Err(ModelError::Backend("read past the end of a buffer".into()));
        }
        self.f32_of(x)?;
        self.gpu.read(&x.buf, offset * 4, out)
    }

    fn argmax(&mut self, x: &CudaBuf, offset: usize, len: usize) -> Result<u32, ModelError> {
        if offset + len > x.len {
            return Err(ModelError::Backend(
                "argmax past the end of a buffer".into(),
            ));
        }
        let p = self.f32_of(x)? + (offset * 4) as u64;
        self.gpu.launch(
            &self.gpu.k.argmax,
            (1, 1, 1),
            1024,
            &[&p, &(len as i32), &self.best.ptr],
        )?;
        let mut best = [0i32];
        self.gpu.read(&self.best, 0, &mut best)?;
        Ok(best[0] as u32)
    }

    // Fused overrides of the compound operations.

    fn norm_matmuls(
        &mut self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut CudaBuf,
        ws: &[&CudaWeight],
        outs: &mut [&mut CudaBuf],
    ) -> Result<(), ModelError> {
        // The normed rows go to the matmuls' input copy; to `xb` itself only for one row or
        // for the debug printer.
        self.norm(x, norm, eps, (n, dim), xb, self.debug)?;
        self.matmuls(ws, xb, n, outs)
    }

    fn qkv_rope_store(
        &mut self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut CudaBuf,
        wqkv: [&CudaWeight; 3],
        [q, k, v]: [&mut CudaBuf; 3],
        kv: &mut CudaKv,
        layer: usize,
        shape: &AttnShape,
        factors: Option<&CudaWeight>,
    ) -> Result<(), ModelError> {
        let ff = match factors {
            Some(f) => f.vector()?.ptr,
            None => 0,
        };
        let neox = shape.rope == RopeStyle::Neox;
        let a = self.attn(shape, kv, layer);
        if n > 1 {
            // Several rows: the GEMMs, then one kernel rotates q and k and stores k and v.
            self.norm(x, norm, eps, (n, dim), xb, self.debug)?;
            self.matmuls(&wqkv, xb, n, &mut [&mut *q, &mut *k, &mut *v])?;
            let (qp, kp, vp) = (q.w(), k.w(), self.f32_of(v)?);
            return ops::rope_store(
                &self.gpu,
                &a,
                (qp, kp, vp),
                n,
                self.io.ptr,
                (neox, ff),
                kv.layer(layer),
            );
        }
        if neox || factors.is_some() || shape.rope_mscale != 1.0 {
            // The fused mat-vec rotates adjacent pairs of rows without frequency factors.
            self.norm(x, norm, eps, (1, dim), xb, true)?;
            self.matmuls(&wqkv, xb, 1, &mut [&mut *q, &mut *k, &mut *v])?;
            let (qp, kp, vp) = (q.w(), k.w(), self.f32_of(v)?);
            return ops::rope_store(
                &self.gpu,
                &a,
                (qp, kp, vp),
                1,
                self.io.ptr,
                (neox, ff),
                kv.layer(layer),
            );
        }
        // One row: RMSNorm into q8_1, then one mat-vec for q, k and v that rotates q and k and
        // stores k and v into the cache.
        self.norm(x, norm, eps, (1, dim), xb, true)?;
        let input = self.q8_of(xb, dim)?;
        let (kc, vc) = kv.layer(layer);
        let rope = RopeOut {
            io: self.io_row(0),
            kc,
            vc,
        };
        let [wq, wk, wv] = wqkv;
        matvec(
            &self.gpu,
            &[
                (wq.matrix()?, q.w()),
                (wk.matrix()?, k.w()),
                (wv.matrix()?, v.w()),
            ],
            input,
            3,
            Some((&a, rope)),
        )
    }

    fn matmul_add(
        &mut self,
        w: &CudaWeight,
        a: &CudaBuf,
        (n, _dim): (usize, usize),
        x: &mut CudaBuf,
        _tmp: &mut CudaBuf,
    ) -> Result<(), ModelError> {
        let o = x.w();
        self.project(&[w.matrix()?], a, n, &[o], true)
    }

    fn ffn_swiglu(
        &mut self,
        x: &CudaBuf,
        norm: &CudaWeight,
        eps: f32,
        (n, dim, n_ff): (usize, usize, usize),
        xb: &mut CudaBuf,
        [w_gate, w_up]: [&CudaWeight; 2],
        gate: &mut CudaBuf,
        up: &mut CudaBuf,
    ) -> Result<(), ModelError> {
        if n > 1 {
            self.norm(x, norm, eps, (n, dim), xb, self.debug)?;
            self.matmuls(&[w_gate, w_up], xb, n, &mut [&mut *gate, &mut *up])?;
            // The product only as the f16 input of the down projection's GEMM.
            return self.gated(Gate::Silu, gate, up, n * n_ff, self.debug);
        }
        // One row: the gate and up rows meet in one mat-vec that applies SiLU·mul.
        self.norm(x, norm, eps, (1, dim), xb, true)?;
        let input = self.q8_of(xb, dim)?;
        matvec(
            &self.gpu,
            &[(w_gate.matrix()?, gate.w()), (w_up.matrix()?, 0)],
            input,
            2,
            None,
        )
    }
}

impl CudaBackend {
    /// Prompt attention of one span through cuBLAS (no flash attention): scores = K·Q, a causal
    /// softmax, out = V·P, then the heads back to rows (f16 in `x16`, f32 in `out`).
    fn scores_attention(
        &mut self,
        a: &Attn,
        q: &CudaBuf,
        (kc, vc): (u64, u64),
        s: Span,
        out: u64,
        x16: u64,
    ) -> Result<(), ModelError> {
        let (n, pos0) = (s.len, s.pos0);
        let (hd, e) = (a.hd, a.n_head * a.hd);
        let group = a.n_head / a.n_head_kv;
        let n_kv = pos0 + n;
        let sc = a.n_head * n * n_kv;
        let base = self.scratch(S::Scores, sc * 6 + n * e * 2)?;
        let (sp, pp, o16) = (base, base + (sc * 4) as u64, base + (sc * 6) as u64);
        let qh = self.scratch(S::Qh, n * e * 2)?;
        let qp = self.f32_of(q)?;
        let g = &self.gpu;
        g.launch(
            &g.k.rows_to_heads,
            ((n * e).div_ceil(256).min(1 << 16) as u32, 1, 1),
            256,
            &[&qp, &qh, &(n as i32), &(a.n_head as i32), &(hd as i32)],
        )?;
        // scores[kvh][g·n][n_kv] = Q[kvh][g·n][hd] · K[kvh][n_kv][hd]ᵀ
        g.gemm(
            true,
            (n_kv, group * n, hd),
            (kc, hd, a.n_ctx * hd),
            (qh, hd, group * n * hd),
            0.0,
            (sp, n_kv, group * n * n_kv, false),
            a.n_head_kv,
        )?;
        g.launch(
            &g.k.softmax_causal,
            ((a.n_head * n) as u32, 1, 1),
            256,
            &[
                &sp,
                &pp,
                &(n as i32),
                &(n_kv as i32),
                &(pos0 as i32),
                &a.scale,
            ],
        )?;
        // out[kvh][g·n][hd] = P[kvh][g·n][n_kv] · V[kvh][n_kv][hd]
        g.gemm(
            false,
            (hd, group * n, n_kv),
            (vc, hd, a.n_ctx * hd),
            (pp, n_kv, group * n * n_kv),
            0.0,
            (o16, hd, group * n * hd, true),
            a.n_head_kv,
        )?;
        g.launch(
            &g.k.heads_to_rows,
            ((n * e).div_ceil(256) as u32, 1, 1),
            256,
            &[&o16, &x16, &(n as i32), &(a.n_head as i32), &(hd as i32)],
        )?;
        let f16 = rustorch_gguf::GgmlType::F16.id() as i32;
        g.launch(
            &g.k.dequant_f32,
            ((n * e).div_ceil(256).min(1 << 16) as u32, 1, 1),
            256,
            &[&x16, &f16, &(n as i32), &(e as i32), &out],
        )
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        let _ = self.gpu.sync();
    }
}

// The backend is used from one thread at a time (`&mut self`); the context is bound to the calling
// thread before every driver call (`Gpu::launch` and friends go through cudarc, which binds it).
// SAFETY: the raw device pointers and the graph handles are plain addresses owned by this value.
unsafe impl Send for CudaBackend {}
// SAFETY: as above, for the buffers, weights and cache, which are device addresses.
unsafe impl Send for CudaBuf {}
// SAFETY: as above.
unsafe impl Send for CudaWeight {}
// SAFETY: as above.
unsafe impl Send for CudaKv {}
