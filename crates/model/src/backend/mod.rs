//! The backend boundary: the dozen operations a decoder needs, over buffers the backend owns.
//!
//! The architectures ([`crate::arch`]) are straight-line calls of these operations, so a new backend
//! is "implement this trait": weights are uploaded once in their GGUF formats, the activations and
//! the KV cache live in backend memory, and only token ids and the logits that are asked for cross
//! to the host.
//!
//! A forward call is a [`Batch`] of rows, each a token of some sequence at some position. The
//! matmuls see all rows at once; RoPE, the cache store and attention use each row's own position
//! and its own sequence's cache. The batch is handed to the backend once per step
//! ([`Backend::begin_step`]), so a GPU backend writes it to a small device buffer that its kernels
//! read: the launches of a decode step are then the same every step and can be captured once.
//!
//! Fusions are compound operations ([`Backend::norm_matmuls`], [`Backend::qkv_rope_store`],
//! [`Backend::matmul_add`], [`Backend::ffn_swiglu`]) whose default bodies call the primitives; a
//! backend with a fused kernel overrides them. An architecture calls the compound operation where
//! its layer has that shape and the primitives where it differs.

pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
#[cfg(feature = "wgpu")]
pub mod wgpu;

use std::ops::Range;
use std::sync::Arc;

use rustorch_gguf::{GgufFile, TensorInfo};

pub use crate::config::RopeStyle;
use crate::ModelError;

/// Where a model runs. Every variant exists in every build; asking for one that was not compiled in
/// (or has no device) is an error that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    Metal,
    Vulkan,
    /// Any GPU: CUDA, then Metal or Vulkan, whichever is built and present ([`Device::resolve`]).
    Gpu,
}

impl Device {
    pub const NAMES: &'static [&'static str] = &["cpu", "cuda", "metal", "vulkan", "gpu"];

    pub fn parse(s: &str) -> Option<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda),
            "metal" => Some(Device::Metal),
            "vulkan" => Some(Device::Vulkan),
            "gpu" => Some(Device::Gpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Metal => "metal",
            Device::Vulkan => "vulkan",
            Device::Gpu => "gpu",
        }
    }

    /// The backends this build was compiled with.
    pub fn compiled() -> Vec<Device> {
        let mut v = vec![Device::Cpu];
        if cfg!(feature = "cuda") {
            v.push(Device::Cuda);
        }
        if cfg!(feature = "wgpu") {
            v.push(if cfg!(target_os = "macos") {
                Device::Metal
            } else {
                Device::Vulkan
            });
        }
        v
    }

    /// Whether this build can run on the device at all (whether a device is present is found out
    /// when the backend starts).
    pub fn check_available(self) -> Result<(), ModelError> {
        if self == Device::Gpu || Device::compiled().contains(&self) {
            return Ok(());
        }
        let names: Vec<&str> = Device::compiled().iter().map(|d| d.name()).collect();
        let why = match self {
            Device::Cuda => "build with --features cuda",
            Device::Metal if !cfg!(target_os = "macos") => "Metal needs macOS",
            Device::Vulkan if cfg!(target_os = "macos") => "on macOS use --backend metal",
            _ => "build with --features wgpu",
        };
        Err(ModelError::Backend(format!(
            "the {} backend is not available in this build ({why}; backends compiled in: {})",
            self.name(),
            names.join(", ")
        )))
    }
}

/// Rows of a matrix in a file, for [`Backend::upload`] and [`Backend::upload_rows`].
pub(crate) struct MatrixRows<'a> {
    #[cfg_attr(not(any(feature = "cuda", feature = "wgpu")), allow(dead_code))]
    pub info: &'a TensorInfo,
    /// Values in a row.
    pub cols: usize,
    /// Rows taken.
    pub rows: usize,
    /// Their bytes in the tensor's data.
    pub bytes: Range<usize>,
}

/// Rows `rows` (all when `None`) of matrix `name`: an error when it is missing, not a matrix, the
/// rows are empty or past its end, or its type has no whole rows (`backend` names who asks).
pub(crate) fn matrix_rows<'a>(
    file: &'a GgufFile,
    name: &str,
    rows: Option<Range<usize>>,
    backend: &'static str,
) -> Result<MatrixRows<'a>, ModelError> {
    let info = file
        .tensor(name)
        .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
    let [cols, all] = info.dims[..] else {
        return Err(ModelError::TensorShape {
            name: name.to_string(),
            expected: "a matrix".into(),
            actual: format!("{:?}", info.dims),
        });
    };
    let rows = rows.unwrap_or(0..all as usize);
    if rows.start >= rows.end || rows.end > all as usize {
        return Err(ModelError::TensorShape {
            name: name.to_string(),
            expected: format!("at least {} rows", rows.end),
            actual: format!("{:?}", info.dims),
        });
    }
    let rb = info
        .ty
        .row_bytes(cols)
        .ok_or_else(|| ModelError::UnsupportedType {
            name: name.to_string(),
            ty: info.ty,
            backend,
        })? as usize;
    Ok(MatrixRows {
        info,
        cols: cols as usize,
        rows: rows.len(),
        bytes: rows.start * rb..rows.end * rb,
    })
}

/// Rows a forward call takes at most; longer prompts are split.
pub const N_UBATCH: usize = 512;

/// Shape facts of a layer's attention and RoPE.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions of each head (RoPE), from the start of the head.
    pub n_rot: usize,
    pub rope_freq_base: f32,
    /// Which dimensions RoPE pairs.
    pub rope: RopeStyle,
    /// Multiplies RoPE's sine and cosine (Phi-3 LongRoPE's `attn_factor`; usually 1).
    pub rope_mscale: f32,
    /// Scale of the scores `q · k` (usually `1 / sqrt(head_dim)`).
    pub scale: f32,
    /// Positions a query sees, itself included (sliding-window attention); 0: all before it.
    pub window: usize,
}

impl AttnShape {
    /// A Llama layer's attention: adjacent-pair RoPE, scores scaled by `1 / sqrt(head_dim)`, no
    /// window.
    pub fn llama(
        n_head: usize,
        n_head_kv: usize,
        head_dim: usize,
        n_rot: usize,
        rope_freq_base: f32,
    ) -> AttnShape {
        AttnShape {
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rope: RopeStyle::Adjacent,
            rope_mscale: 1.0,
            scale: 1.0 / (head_dim as f32).sqrt(),
            window: 0,
        }
    }

    /// The first cache position a query at `pos` sees.
    pub fn first_seen(&self, pos: usize) -> usize {
        if self.window == 0 {
            0
        } else {
            (pos + 1).saturating_sub(self.window)
        }
    }
}

/// Positions a layer's cache keeps of each sequence: the whole context `n_ctx`, or for a layer
/// attending through a sliding window of `window` positions, the window and a step's rows
/// (`max_rows`), so that no key a step's queries see is overwritten by that step. Position `p`
/// lives in slot `p % capacity`.
pub fn kv_capacity(n_ctx: usize, window: usize, max_rows: usize) -> usize {
    if window == 0 {
        n_ctx
    } else {
        n_ctx.min(window + max_rows - 1)
    }
}

/// Positions of one block of the paged KV cache.
pub const KV_BLOCK: usize = 16;

/// The shape of a KV cache: a pool of blocks for the layers that attend to the whole context (a
/// sequence's positions live in the blocks its block table lists: position `p` in block
/// `table[p / KV_BLOCK]`, so memory goes where the tokens are and sequences may share blocks),
/// and a ring per sequence for each sliding-window layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvSpec {
    /// Per layer: 0 for a paged layer, or the positions of its ring per sequence
    /// ([`kv_capacity`]).
    pub ring: Vec<usize>,
    /// Sequences (block tables, rings).
    pub n_seq: usize,
    /// Positions one sequence may reach.
    pub seq_ctx: usize,
    /// Blocks of [`KV_BLOCK`] positions in the pool.
    pub n_blocks: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl KvSpec {
    /// `n_layer` paged layers holding `n_seq` sequences of `seq_ctx` positions side by side.
    pub fn side_by_side_of(
        n_layer: usize,
        n_seq: usize,
        seq_ctx: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> KvSpec {
        KvSpec {
            ring: vec![0; n_layer],
            n_seq,
            seq_ctx,
            n_blocks: n_seq * seq_ctx.div_ceil(KV_BLOCK),
            n_head_kv,
            head_dim,
        }
    }

    /// Entries of a sequence's block table.
    pub fn table_len(&self) -> usize {
        self.seq_ctx.div_ceil(KV_BLOCK)
    }

    /// Whether the pool holds every sequence's whole context side by side: then sequence `s`'s
    /// table starts as blocks `s * table_len()..`, and callers that never map blocks (a
    /// single-user run) need not.
    pub fn side_by_side(&self) -> bool {
        self.n_blocks >= self.n_seq * self.table_len()
    }

    /// Block `i` of sequence `seq` in the side-by-side layout.
    pub fn own_block(&self, seq: usize, i: usize) -> u32 {
        (seq * self.table_len() + i) as u32
    }

    /// Checks that `blocks` may be mapped at entries `first..` of a sequence's table.
    pub fn check_map(&self, seq: usize, first: usize, blocks: &[u32]) -> Result<(), ModelError> {
        if seq >= self.n_seq || first + blocks.len() > self.table_len() {
            return Err(ModelError::BadBatch(format!(
                "block table entries {first}..{} of sequence {seq}: the cache has {} sequences of {} blocks",
                first + blocks.len(),
                self.n_seq,
                self.table_len()
            )));
        }
        if let Some(b) = blocks.iter().find(|&&b| b as usize >= self.n_blocks) {
            return Err(ModelError::BadBatch(format!(
                "KV block {b} is outside the pool of {} blocks",
                self.n_blocks
            )));
        }
        Ok(())
    }
}

/// The cache slots of positions `lo..hi` (at most `cap` of them) in a layer cache of `cap`
/// positions: up to two runs `(first slot, length)` that hold them in position order.
pub fn ring_runs(lo: usize, hi: usize, cap: usize) -> [(usize, usize); 2] {
    debug_assert!(lo <= hi && hi - lo <= cap);
    let start = lo % cap;
    let first = (hi - lo).min(cap - start);
    [(start, first), (0, hi - lo - first)]
}

/// The rows of one forward call: row `t` is token `tokens[t]` of sequence `seqs[t]` at position
/// `pos[t]`. Rows of one sequence are in increasing position order; a sequence's cache must hold
/// its positions before its first row here (rows of one sequence see each other causally).
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub seqs: &'a [u32],
    pub pos: &'a [u32],
}

impl Batch<'_> {
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The batch's runs of rows of one sequence at consecutive positions, in row order (one run
    /// for a single-sequence prompt; one per row for a decode step of several sequences).
    pub fn spans(&self, out: &mut Vec<Span>) {
        out.clear();
        for t in 0..self.len() {
            let (seq, pos) = (self.seqs[t] as usize, self.pos[t] as usize);
            match out.last_mut() {
                Some(s) if s.seq == seq && s.pos0 + s.len == pos => s.len += 1,
                _ => out.push(Span {
                    row0: t,
                    len: 1,
                    seq,
                    pos0: pos,
                }),
            }
        }
    }
}

/// Rows `row0..row0 + len` of a batch: one sequence at positions `pos0..pos0 + len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub row0: usize,
    pub len: usize,
    pub seq: usize,
    pub pos0: usize,
}

/// What [`Backend::begin_step`] asks of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Run the forward pass, then call [`Backend::end_step`].
    Record,
    /// The backend has already run this step (a replayed CUDA graph): skip the forward pass.
    Done,
}

/// The operations of a decoder forward pass. Shapes are row-major `[n_rows, width]`; every
/// operation reports failure as an error.
pub trait Backend {
    /// An activation buffer of f32 values in backend memory.
    type Buf;
    /// A weight tensor uploaded to the backend, kept in its GGUF format.
    type Weight;
    /// The KV cache of all layers and sequences, in backend memory.
    type Kv;

    fn device(&self) -> Device;

    /// Uploads tensor `name` of `file` (or, on the CPU, maps it in place).
    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<Self::Weight, ModelError>;
    /// Uploads rows `rows` of matrix `name` as a matrix of their own (a fused tensor's parts:
    /// Phi-3's q/k/v and gate/up).
    fn upload_rows(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        rows: Range<usize>,
    ) -> Result<Self::Weight, ModelError>;
    /// An activation buffer of `len` f32 values.
    fn alloc(&mut self, len: usize) -> Result<Self::Buf, ModelError>;
    /// A KV cache of the shape `spec` (f16 keys and values; f32 on wgpu). Where the pool holds
    /// every sequence side by side ([`KvSpec::side_by_side`]), each sequence's table starts mapped
    /// to its own blocks; otherwise no position is mapped until [`Backend::map_blocks`].
    fn alloc_kv(&mut self, spec: &KvSpec) -> Result<Self::Kv, ModelError>;
    /// Points entries `first..first + blocks.len()` of sequence `seq`'s block table at pool
    /// blocks `blocks` (checked with [`KvSpec::check_map`]).
    fn map_blocks(
        &mut self,
        kv: &mut Self::Kv,
        seq: usize,
        first: usize,
        blocks: &[u32],
    ) -> Result<(), ModelError>;
    /// Rows one forward call may have at most.
    fn max_rows(&self) -> usize {
        N_UBATCH
    }

    /// Starts a step: the batch's tokens, sequences and positions become the operations' rows
    /// until the next step. `head` lists the rows that will go through the output head (the
    /// forward pass is the same for the same row count and head rows, which a backend may use to
    /// replay a recorded step).
    fn begin_step(&mut self, batch: &Batch, head: &[u32]) -> Result<Step, ModelError>;
    /// Ends a step begun with [`Step::Record`] (`ok`: whether the forward pass succeeded).
    fn end_step(&mut self, ok: bool) -> Result<(), ModelError> {
        let _ = ok;
        Ok(())
    }

    /// `out[t] = table[token of row t]` for the step's `n` rows, from the (quantized) table.
    fn embed(
        &mut self,
        table: &Self::Weight,
        n: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// `out[t] = x[t] / rms(x[t]) * weight`, rows of width `dim`.
    fn rms_norm(
        &mut self,
        x: &Self::Buf,
        weight: &Self::Weight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// `out[t] = W · x[t]` for `n` rows; `W` is `[out_dim, in_dim]` (ggml: ne0 = in_dim).
    fn matmul(
        &mut self,
        w: &Self::Weight,
        x: &Self::Buf,
        n: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// Several matmuls of the same input (q/k/v, gate/up): `outs[i] = ws[i] · x`. Backends may
    /// fuse them into one pass; the default runs them one by one.
    fn matmuls(
        &mut self,
        ws: &[&Self::Weight],
        x: &Self::Buf,
        n: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<(), ModelError> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, n, out)?;
        }
        Ok(())
    }
    /// Rotates `n_heads` heads of each of `n` rows in place, each row at its own position, with
    /// `shape`'s pairing and base; `factors` (`n_rot / 2` values, Llama 3's `rope_freqs`) divide
    /// each pair's angle.
    fn rope(
        &mut self,
        x: &mut Self::Buf,
        n: usize,
        n_heads: usize,
        shape: &AttnShape,
        factors: Option<&Self::Weight>,
    ) -> Result<(), ModelError>;
    /// Writes the keys and values of `n` rows into layer `layer` of each row's sequence, at the
    /// row's position.
    fn kv_store(
        &mut self,
        kv: &mut Self::Kv,
        layer: usize,
        k: &Self::Buf,
        v: &Self::Buf,
        n: usize,
    ) -> Result<(), ModelError>;
    /// Causal grouped-query attention of `n` query rows, each over its own sequence's cache up to
    /// and including its position (from [`AttnShape::first_seen`]), scores scaled by
    /// `shape.scale`.
    fn attention(
        &mut self,
        q: &Self::Buf,
        kv: &Self::Kv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// `gate = silu(gate) * up`, elementwise over `len` values.
    fn swiglu(
        &mut self,
        gate: &mut Self::Buf,
        up: &Self::Buf,
        len: usize,
    ) -> Result<(), ModelError>;
    /// `gate = gelu(gate) * up` over `len` values (GELU's tanh form, as ggml computes it).
    fn geglu(&mut self, gate: &mut Self::Buf, up: &Self::Buf, len: usize)
        -> Result<(), ModelError>;
    /// `x += y` over `len` values.
    fn add(&mut self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<(), ModelError>;
    /// `x[t] += bias` for `n` rows of width `dim`.
    fn add_bias(
        &mut self,
        x: &mut Self::Buf,
        bias: &Self::Weight,
        n: usize,
        dim: usize,
    ) -> Result<(), ModelError>;
    /// `x *= s` over `len` values.
    fn scale(&mut self, x: &mut Self::Buf, s: f32, len: usize) -> Result<(), ModelError>;
    /// Copies `len` values of `x` from offset `src` to offset `dst` (ranges may not overlap).
    fn copy_within(
        &mut self,
        x: &mut Self::Buf,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), ModelError>;
    /// Copies `out.len()` values starting at `offset` to the host.
    fn read(&mut self, x: &Self::Buf, offset: usize, out: &mut [f32]) -> Result<(), ModelError>;
    /// Index of the largest of `len` values at `offset` (the first on ties).
    fn argmax(&mut self, x: &Self::Buf, offset: usize, len: usize) -> Result<u32, ModelError> {
        let mut v = vec![0.0; len];
        self.read(x, offset, &mut v)?;
        Ok(crate::runner::argmax(&v))
    }

    // Compound operations: the default bodies are the primitives; backends override them with
    // fused kernels. An override produces the values the default body produces, except in the
    // scratch operands (`tmp`, `up`); a backend may hold a result (the normed rows `xb`, a
    // product) only in a form of its own, such as the copy the next matmul reads, until it is
    // read: the read then gets the values, or an error if that copy is gone, never stale ones.

    /// Norm → matmul: `xb = rms_norm(x) * norm`, then `outs[i] = ws[i] · xb`.
    #[allow(clippy::too_many_arguments)] // the two operations' operands
    fn norm_matmuls(
        &mut self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut Self::Buf,
        ws: &[&Self::Weight],
        outs: &mut [&mut Self::Buf],
    ) -> Result<(), ModelError> {
        self.rms_norm(x, norm, eps, n, dim, xb)?;
        self.matmuls(ws, xb, n, outs)
    }

    /// The attention block's input: norm → q/k/v projections, RoPE of q and k at each row's
    /// position (with `factors`), k and v into the cache. `xb` receives the normed rows; q, k and
    /// v the rotated queries and keys and the values.
    #[allow(clippy::too_many_arguments)] // the fused operations' operands
    fn qkv_rope_store(
        &mut self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut Self::Buf,
        wqkv: [&Self::Weight; 3],
        [q, k, v]: [&mut Self::Buf; 3],
        kv: &mut Self::Kv,
        layer: usize,
        shape: &AttnShape,
        factors: Option<&Self::Weight>,
    ) -> Result<(), ModelError> {
        self.norm_matmuls(
            x,
            norm,
            eps,
            (n, dim),
            xb,
            &wqkv,
            &mut [&mut *q, &mut *k, &mut *v],
        )?;
        self.rope(q, n, shape.n_head, shape, factors)?;
        self.rope(k, n, shape.n_head_kv, shape, factors)?;
        self.kv_store(kv, layer, k, v, n)
    }

    /// Matmul + residual add: `x += W · a` over `n` rows of width `dim`; `tmp` is scratch of the
    /// default body (`W · a`).
    fn matmul_add(
        &mut self,
        w: &Self::Weight,
        a: &Self::Buf,
        (n, dim): (usize, usize),
        x: &mut Self::Buf,
        tmp: &mut Self::Buf,
    ) -> Result<(), ModelError> {
        self.matmul(w, a, n, tmp)?;
        self.add(x, tmp, n * dim)
    }

    /// The feed-forward input: norm → gate/up projections → `gate = silu(gate) * up` over `n`
    /// rows of `n_ff`. `xb` receives the normed rows.
    #[allow(clippy::too_many_arguments)] // the fused operations' operands
    fn ffn_swiglu(
        &mut self,
        x: &Self::Buf,
        norm: &Self::Weight,
        eps: f32,
        (n, dim, n_ff): (usize, usize, usize),
        xb: &mut Self::Buf,
        [w_gate, w_up]: [&Self::Weight; 2],
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
    ) -> Result<(), ModelError> {
        self.norm_matmuls(
            x,
            norm,
            eps,
            (n, dim),
            xb,
            &[w_gate, w_up],
            &mut [&mut *gate, &mut *up],
        )?;
        self.swiglu(gate, up, n * n_ff)
    }
}
