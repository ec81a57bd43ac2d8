//! The CPU backend: weights are views into the memory-mapped file, activations are `Vec<f32>`,
//! the KV cache is f16 (as llama.cpp's default), and every op is split over the backend's thread pool (`threads`).
//!
//! Matmuls quantize the activations once per call to the 8-bit format ggml pairs with the weight
//! type, then take integer-domain dot products per (weight row, token), as ggml does; that keeps our
//! logits close to llama.cpp's, not only to the real-valued product.

use std::cell::RefCell;
use std::sync::Arc;

pub mod threads;

use half::f16;
use half::slice::HalfFloatSliceExt;
use rustorch_gguf::{GgmlType, GgufFile};
use rustorch_quant::act::quantize_act_ggml_x86;
use rustorch_quant::attn;
use rustorch_quant::dispatch;
use rustorch_quant::kernels::{mat_kernel, MatKernel};
use rustorch_quant::vecmath;

use std::ops::Range;

use crate::backend::{
    matrix_rows, ring_runs, AttnShape, Backend, Batch, Device, KvSpec, RopeStyle, Span, Step,
    KV_BLOCK,
};
use crate::options::CpuOptions;
use crate::ModelError;
use threads::{for_each_chunk, Pool};

/// A weight on the CPU: rows of a tensor in the mapped file, or a matrix copied at load time into
/// memory of its own ([`WeightBytes`]), in the kernel's packed layout when it has one
/// ([`MatKernel::pack`]), or a small f32 vector (norms).
pub enum CpuWeight {
    Mapped {
        file: Arc<GgufFile>,
        index: usize,
        /// Byte offset of the first row in the tensor's data (a part of a fused tensor).
        offset: usize,
        ty: GgmlType,
        rows: usize,
        cols: usize,
    },
    Owned {
        data: WeightBytes,
        kernel: &'static MatKernel,
        /// Whether `data` is in the kernel's packed layout (else the file's).
        packed: bool,
        rows: usize,
        cols: usize,
    },
    F32(Vec<f32>),
}

/// Weight bytes the backend owns: an anonymous mapping, asked for transparent huge pages where
/// the OS has them (decode streams every weight once per token; huge pages spare the TLB misses
/// of 4 KiB ones). Measured against reading the file's page-cache pages on a 2-core AMD EPYC VM,
/// the copy made no difference to decode speed; it keeps the weights out of the page cache's
/// reclaim and gives one place for the packed layouts and the plain ones.
pub struct WeightBytes {
    map: memmap2::MmapMut,
    len: usize,
}

impl WeightBytes {
    /// `len` zero bytes.
    fn zeroed(len: usize) -> std::io::Result<Self> {
        // A zero-length mapping is refused; one byte stands in.
        let map = memmap2::MmapMut::map_anon(len.max(1))?;
        #[cfg(target_os = "linux")]
        if len >= 1 << 21 {
            // Only a hint: without huge pages the bytes are the same.
            let _ = map.advise(memmap2::Advice::HugePage);
        }
        Ok(WeightBytes { map, len })
    }
}

impl std::ops::Deref for WeightBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[..self.len]
    }
}

impl std::ops::DerefMut for WeightBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.map[..self.len]
    }
}

impl CpuWeight {
    fn bytes(&self) -> &[u8] {
        match self {
            CpuWeight::Mapped {
                file,
                index,
                offset,
                ty,
                rows,
                cols,
            } => {
                let len = rows * ty.row_bytes(*cols as u64).expect("validated at upload") as usize;
                &file.tensor_data(&file.tensors()[*index])[*offset..offset + len]
            }
            CpuWeight::Owned { data, .. } => data,
            CpuWeight::F32(v) => bytemuck::cast_slice(v),
        }
    }

    /// A matrix's type, rows and columns.
    fn matrix(&self) -> Option<(GgmlType, usize, usize)> {
        match self {
            CpuWeight::Mapped { ty, rows, cols, .. } => Some((*ty, *rows, *cols)),
            CpuWeight::Owned {
                kernel, rows, cols, ..
            } => Some((kernel.weight_type(), *rows, *cols)),
            CpuWeight::F32(_) => None,
        }
    }

    /// Whether the bytes are in the kernel's packed layout.
    fn is_packed(&self) -> bool {
        matches!(self, CpuWeight::Owned { packed: true, .. })
    }

    fn as_f32(&self) -> &[f32] {
        match self {
            CpuWeight::F32(v) => v,
            _ => unreachable!("vector weights are uploaded as F32"),
        }
    }
}

/// KV cache, f16 as llama.cpp's default. Per layer and KV head, keys are transposed,
/// `[head_dim, slots]`, and values `[slots, head_dim]`: both are then the right-hand operand of
/// attention's matmuls as they lie ([`rustorch_quant::attn`]: `scores = Q · Kᵀ`, `out = P · V`,
/// each an outer product that widens a row of the cache once for many query rows). A
/// paged layer's slots are the pool's (position `p` of a sequence in slot
/// `table[p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK`: consecutive blocks are contiguous); a
/// sliding-window layer keeps a ring of `cap` slots per sequence (position `p` in slot `p % cap`).
pub struct CpuKv {
    k: Vec<Vec<f16>>, // (layer) -> paged (n_head_kv, head_dim, pool); ring (n_seq, n_head_kv, head_dim, cap)
    v: Vec<Vec<f16>>, // (layer) -> paged (n_head_kv, pool, head_dim); ring (n_seq, n_head_kv, cap, head_dim)
    spec: KvSpec,
    /// Each sequence's block table (`u32::MAX`: not mapped).
    tables: Vec<Vec<u32>>,
    kv_dim: usize,
    head_dim: usize,
}

impl CpuKv {
    /// Where sequence `seq`'s part of layer `layer` starts (values into `k` and `v`), and the
    /// slots of each KV head's plane.
    fn plane(&self, layer: usize, seq: usize) -> (usize, usize) {
        match self.spec.ring[layer] {
            0 => (0, self.spec.n_blocks * KV_BLOCK),
            cap => (seq * self.kv_dim * cap, cap),
        }
    }

    /// The slot of position `pos` of sequence `seq` in layer `layer`'s plane.
    fn slot(&self, layer: usize, seq: usize, pos: usize) -> Result<usize, ModelError> {
        match self.spec.ring[layer] {
            0 => match self.tables[seq].get(pos / KV_BLOCK) {
                Some(&b) if b != u32::MAX => Ok(b as usize * KV_BLOCK + pos % KV_BLOCK),
                _ => Err(ModelError::BadBatch(format!(
                    "sequence {seq} has no KV block mapped for position {pos}"
                ))),
            },
            cap => Ok(pos % cap),
        }
    }

    /// Calls `f(slot, len)` for runs of contiguous slots that hold positions `lo..hi` of
    /// sequence `seq` in layer `layer`, in position order (mapped blocks: checked by the runner).
    fn runs(
        &self,
        layer: usize,
        seq: usize,
        lo: usize,
        hi: usize,
        mut f: impl FnMut(usize, usize),
    ) {
        match self.spec.ring[layer] {
            0 => {
                let table = &self.tables[seq];
                let mut p = lo;
                while p < hi {
                    let start = table[p / KV_BLOCK] as usize * KV_BLOCK + p % KV_BLOCK;
                    let mut len = (KV_BLOCK - p % KV_BLOCK).min(hi - p);
                    // Consecutive blocks are one run.
                    while p + len < hi
                        && table[(p + len) / KV_BLOCK] as usize * KV_BLOCK == start + len
                    {
                        len += KV_BLOCK.min(hi - p - len);
                    }
                    f(start, len);
                    p += len;
                }
            }
            cap => {
                for (slot, len) in ring_runs(lo, hi, cap) {
                    if len > 0 {
                        f(slot, len);
                    }
                }
            }
        }
    }
}

/// A matmul output that pool tasks write disjoint parts of (each task its own weight rows).
#[derive(Clone, Copy)]
struct OutRows(*mut f32);

// SAFETY: tasks write disjoint elements (see `Backend::matmuls`), and the output outlives them.
unsafe impl Send for OutRows {}
unsafe impl Sync for OutRows {}

impl OutRows {
    /// # Safety
    /// `i..i + x.len()` is in bounds of the output and no other task writes it.
    unsafe fn copy_from(self, i: usize, x: &[f32]) {
        unsafe { std::ptr::copy_nonoverlapping(x.as_ptr(), self.0.add(i), x.len()) }
    }

    /// Rows `r0..r0 + nr` of every token of an output of `rows` values a token, from a tile
    /// `[nr, n]`.
    ///
    /// # Safety
    /// The output holds `n * rows` values, `r0 + nr <= rows`, and no other task writes those
    /// rows.
    unsafe fn transpose_from(self, r0: usize, rows: usize, tile: &[f32], nr: usize, n: usize) {
        unsafe { rustorch_quant::vecmath::transpose_into(tile, nr, n, self.0.add(r0), rows) }
    }
}

/// Rows of a matmul up to which its weights are streamed as in decode (long runs per thread)
/// rather than tiled for cache reuse as in prompts.
const SMALL_BATCH: usize = 16;

/// The most weight rows of a prompt matmul's tile.
const PROMPT_ROWS: usize = 128;

/// Weights that may share one input in [`Backend::matmuls`] (q/k/v, gate/up).
const MAX_GROUP: usize = 4;

/// One weight of a grouped matmul.
#[derive(Clone, Copy)]
struct Job {
    kernel: &'static MatKernel,
    rows: usize,
    cols: usize,
    /// Bytes of one weight row.
    w_row: usize,
    /// Bytes of one quantized activation row.
    act_bytes: usize,
    /// First row of this weight's output in the joint result.
    first: usize,
}

pub struct CpuBackend {
    pool: Pool,
    /// The step's rows: tokens, sequences, positions, and its runs of one sequence.
    tokens: Vec<u32>,
    seqs: Vec<u32>,
    pos: Vec<u32>,
    spans: Vec<Span>,
    /// Activations quantized for the current matmul, per activation format: `[n, row_bytes]`.
    acts: [(Option<GgmlType>, Vec<u8>); 3],
    /// Which of `acts` already hold this call's input.
    acts_fresh: [bool; 3],
    /// Matmul result in weight-row-major order `[out_dim, n]`, transposed into the output.
    tmp: Vec<f32>,
    /// Attention output by head, `[n_head, head_dim, n]`, transposed into the output.
    att: Vec<f32>,
    /// Whether weights with a packed kernel layout are rewritten into it at upload
    /// (`RUSTORCH_CPU_PACK=0` keeps every weight in the mapped file, for A/B measurements).
    pack_weights: bool,
    /// This step's RoPE tables: per setting, `(sin, cos)` of each row's position, `n_rot / 2`
    /// pairs a row.
    /// `None`: free for reuse.
    rope_tables: Vec<RopeTable>,
}

/// A RoPE table of this step (`None`: free for reuse) and its `(sin, cos)` pairs.
type RopeTable = (Option<RopeKey>, Vec<(f32, f32)>);

/// What a RoPE table depends on besides the step's positions.
#[derive(Clone, Copy, PartialEq, Eq)]
struct RopeKey {
    n_rot: usize,
    freq_base: u32,
    mscale: u32,
    /// The frequency factors' address and length (a weight of the model), or none.
    factors: (usize, usize),
}

/// Per-thread attention scratch, grown to the largest call once.
#[derive(Default)]
struct AttnScratch {
    q: Vec<f32>, // (n_q, head_dim) the query rows of one KV head's task, rounded to f16
    /// (n_q, n_kv) scores, then in place the softmax probabilities (zero outside each query's
    /// positions)
    p: Vec<f32>,
}

thread_local! {
    static ATTN: RefCell<AttnScratch> = RefCell::new(AttnScratch::default());
}

impl CpuBackend {
    /// A backend computing on `n_threads` threads, with the default options.
    pub fn new(n_threads: usize) -> CpuBackend {
        CpuBackend::with_options(n_threads, &CpuOptions::default())
    }

    pub fn with_options(n_threads: usize, opts: &CpuOptions) -> CpuBackend {
        CpuBackend {
            pool: Pool::new(n_threads),
            tokens: Vec::new(),
            seqs: Vec::new(),
            pos: Vec::new(),
            spans: Vec::new(),
            acts: Default::default(),
            acts_fresh: [false; 3],
            tmp: Vec::new(),
            att: Vec::new(),
            pack_weights: opts.pack,
            rope_tables: Vec::new(),
        }
    }
}

impl CpuBackend {
    /// Attention of one span's query rows (one sequence, consecutive positions) over its cache.
    fn attend(
        &mut self,
        q: &[f32],
        kv: &CpuKv,
        layer: usize,
        span: &Span,
        shape: &AttnShape,
        out: &mut [f32],
    ) {
        let (hd, n_head) = (shape.head_dim, shape.n_head);
        let (base, cap) = kv.plane(layer, span.seq);
        let (n, pos0) = (span.len, span.pos0);
        let q = &q[span.row0 * n_head * hd..];
        let out = &mut out[span.row0 * n_head * hd..];
        let group = shape.n_head / shape.n_head_kv;
        let scale = shape.scale;
        let (keys, vals) = (&kv.k[layer][base..], &kv.v[layer][base..]);
        // One task per (KV head, tile of tokens): the queries of every head sharing that KV head,
        // for the tile's tokens, go through scores = Q·Kᵀ, a causal softmax, and out = P·V, so
        // each KV head's cache is read (and widened from f16) once per tile, by kernels that read
        // it in place. q and p are rounded to f16 first, as llama.cpp's f16 KV matmuls round
        // their f32 operand.
        let tile = (256 / group).clamp(1, n);
        let n_tiles = n.div_ceil(tile);
        let chunk = hd * group * tile; // (group, tile, head_dim) per task
        grow(&mut self.att, shape.n_head_kv * n_tiles * chunk);
        for_each_chunk(
            &self.pool,
            &mut self.att[..shape.n_head_kv * n_tiles * chunk],
            chunk,
            |c, dst| {
                let (kvh, t0) = (c / n_tiles, (c % n_tiles) * tile);
                let tn = tile.min(n - t0);
                let n_q = group * tn; // query rows: head-major, then token
                                      // The cache positions the tile's tokens see: from the first token's first (0, or
                                      // its sliding window's start) to the last token.
                let lo = shape.first_seen(pos0 + t0);
                let n_kv = pos0 + t0 + tn - lo;
                let (kt, v) = (&keys[kvh * hd * cap..], &vals[kvh * cap * hd..]);
                ATTN.with(|s| {
                    let s = &mut *s.borrow_mut();
                    // Sized for the whole cache at once up to 4096 positions, then in powers of
                    // two, so decoding never grows them token by token (`n_q` is at most `group`
                    // when decoding) and a huge context costs memory only as it fills.
                    let room = n_kv
                        .next_power_of_two()
                        .max(4096)
                        .min(kv.spec.seq_ctx)
                        .max(n_kv);
                    grow(&mut s.q, n_q.max(group) * hd);
                    grow(&mut s.p, room * n_q.max(group));
                    for g in 0..group {
                        let h = kvh * group + g;
                        for t in 0..tn {
                            let src =
                                &q[((t0 + t) * n_head + h) * hd..((t0 + t) * n_head + h + 1) * hd];
                            let row = g * tn + t;
                            s.q[row * hd..(row + 1) * hd].copy_from_slice(src);
                            round_to_f16(&mut s.q[row * hd..(row + 1) * hd]);
                        }
                    }
                    // scores: positions lo.. in order, from the runs of slots that hold them.
                    let p = &mut s.p[..n_q * n_kv];
                    let mut j = 0;
                    kv.runs(layer, span.seq, lo, lo + n_kv, |slot, len| {
                        attn::gemm_f16(
                            n_q,
                            len,
                            hd,
                            &s.q,
                            hd,
                            &kt[slot..],
                            cap,
                            &mut p[j..],
                            n_kv,
                            false,
                        );
                        j += len;
                    });
                    for (row, p) in p.chunks_mut(n_kv).enumerate() {
                        // Causal: positions first..=pos0+t, as indices from `lo`.
                        let at = pos0 + t0 + row % tn;
                        let (first, seen) = (shape.first_seen(at) - lo, at + 1 - lo);
                        let max = scale_max(&mut p[first..seen], scale);
                        let sum = vecmath::exp_sub_sum(&mut p[first..seen], max);
                        let inv = (1.0 / sum) as f32;
                        for p in p[first..seen].iter_mut() {
                            *p *= inv;
                        }
                        round_to_f16(&mut p[first..seen]);
                        p[..first].fill(0.0);
                        p[seen..].fill(0.0);
                    }
                    let dst = &mut dst[..n_q * hd];
                    let mut j = 0;
                    kv.runs(layer, span.seq, lo, lo + n_kv, |slot, len| {
                        attn::gemm_f16(
                            n_q,
                            hd,
                            len,
                            &p[j..],
                            n_kv,
                            &v[slot * hd..],
                            hd,
                            dst,
                            hd,
                            j > 0,
                        );
                        j += len;
                    });
                });
            },
        );
        let att = &self.att[..shape.n_head_kv * n_tiles * chunk];
        for_each_chunk(
            &self.pool,
            &mut out[..n * n_head * hd],
            n_head * hd,
            |t, row| {
                let (t0, tt) = ((t / tile) * tile, t % tile);
                let tn = tile.min(n - t0);
                for (h, o) in row.chunks_mut(hd).enumerate() {
                    let (kvh, g) = (h / group, h % group);
                    let at = (kvh * n_tiles + t0 / tile) * chunk + (g * tn + tt) * hd;
                    o.copy_from_slice(&att[at..at + hd]);
                }
            },
        );
    }
}

impl CpuBackend {
    /// Uploads matrix or vector `name`, or rows `part` of a matrix.
    fn upload_part(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        part: Option<Range<usize>>,
    ) -> Result<CpuWeight, ModelError> {
        let index = file
            .tensors()
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let info = &file.tensors()[index];
        let unsupported = || ModelError::UnsupportedType {
            name: name.to_string(),
            ty: info.ty,
            backend: "cpu",
        };
        if info.dims.len() == 1 && part.is_none() {
            let n = info.dims[0] as usize;
            let mut v = vec![0f32; n];
            let data = file.tensor_data(info);
            match info.ty {
                GgmlType::F32 => {
                    for (x, b) in v.iter_mut().zip(data.chunks_exact(4)) {
                        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
                ty if dispatch::is_supported(ty) => {
                    dispatch::dequantize_row(ty, data, &mut v).map_err(|_| unsupported())?
                }
                _ => return Err(unsupported()),
            }
            return Ok(CpuWeight::F32(v));
        }
        // A matrix of a type without a kernel is refused before its rows are checked.
        let kernel = mat_kernel(info.ty);
        if info.dims.len() == 2 && kernel.is_none() {
            return Err(unsupported());
        }
        let m = matrix_rows(file, name, part, "cpu")?;
        let kernel = kernel.ok_or_else(unsupported)?;
        let (rows, cols, offset) = (m.rows, m.cols, m.bytes.start);
        if self.pack_weights {
            // Copied once into memory of its own, rewritten into the kernel's layout if it has
            // one; the file's pages are let go after.
            let src = &file.tensor_data(info)[m.bytes];
            let mut data = WeightBytes::zeroed(src.len()).map_err(|e| {
                ModelError::Backend(format!(
                    "out of memory for {name} ({} MiB): {e}",
                    src.len() >> 20
                ))
            })?;
            let packed = kernel.has_packed_layout();
            let row = src.len() / rows.max(1);
            // 64 rows per task: the split stays on row boundaries.
            for_each_chunk(&self.pool, &mut data, 64 * row.max(1), |c, dst| {
                let src = &src[c * 64 * row..][..dst.len()];
                if packed {
                    kernel.pack(src, dst.len() / row, cols, dst);
                } else {
                    dst.copy_from_slice(src);
                }
            });
            file.release(info);
            return Ok(CpuWeight::Owned {
                data,
                kernel,
                packed,
                rows,
                cols,
            });
        }
        Ok(CpuWeight::Mapped {
            file: Arc::clone(file),
            index,
            offset,
            ty: info.ty,
            rows,
            cols,
        })
    }
}

/// GELU's tanh form as ggml's CPU backend computes it: `x` rounded to f16, the value looked up in
/// a table of f16 results (so rounded to f16 too); 0 below -10 and `x` above 10.
fn gelu_ggml(x: f32) -> f32 {
    if x <= -10.0 {
        0.0
    } else if x >= 10.0 {
        x
    } else {
        let x = f16::from_f32(x).to_f32();
        const SQRT_2_OVER_PI: f32 = 0.797_884_6;
        let y = 0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)).tanh());
        f16::from_f32(y).to_f32()
    }
}

/// `x[i] *= s`; returns the largest (NaN ignored, as `f32::max`; -inf for none), in sixteen
/// lanes so that it vectorizes (one running maximum was 5% of a TinyLlama pp512).
fn scale_max(x: &mut [f32], s: f32) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    let mut chunks = x.chunks_exact_mut(16);
    for c in &mut chunks {
        for (m, v) in lanes.iter_mut().zip(c.iter_mut()) {
            *v *= s;
            *m = m.max(*v);
        }
    }
    for (m, v) in lanes.iter_mut().zip(chunks.into_remainder()) {
        *v *= s;
        *m = m.max(*v);
    }
    lanes.into_iter().fold(f32::NEG_INFINITY, f32::max)
}

/// Rounds each value to the nearest f16 (ties to even, as `f16::from_f32`), in f32, through
/// `half`'s vectorized slice conversions.
fn round_to_f16(x: &mut [f32]) {
    let mut h = [f16::ZERO; 64];
    for c in x.chunks_mut(64) {
        let h = &mut h[..c.len()];
        h.convert_from_f32_slice(c);
        h.convert_to_f32_slice(c);
    }
}

fn grow<T: Clone + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Bytes of a CPU KV cache of shape `spec`: keys and values in f16 for the pool's positions in
/// every paged layer and each sequence's ring in every sliding-window layer.
pub(crate) fn kv_bytes(spec: &KvSpec) -> u64 {
    let positions: u64 = (spec.ring.iter())
        .map(|&r| match r {
            0 => spec.n_blocks as u64 * KV_BLOCK as u64,
            cap => cap as u64 * spec.n_seq as u64,
        })
        .sum();
    4 * positions * (spec.n_head_kv * spec.head_dim) as u64
}

impl Backend for CpuBackend {
    type Buf = Vec<f32>;
    type Weight = CpuWeight;
    type Kv = CpuKv;

    fn device(&self) -> Device {
        Device::Cpu
    }

    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<CpuWeight, ModelError> {
        self.upload_part(file, name, None)
    }

    fn upload_rows(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        rows: Range<usize>,
    ) -> Result<CpuWeight, ModelError> {
        self.upload_part(file, name, Some(rows))
    }

    fn alloc(&mut self, len: usize) -> Result<Vec<f32>, ModelError> {
        Ok(vec![0.0; len])
    }

    fn alloc_kv(&mut self, spec: &KvSpec) -> Result<CpuKv, ModelError> {
        let kv_dim = spec.n_head_kv * spec.head_dim;
        // Zeroed pages straight from the allocator (the OS maps them untouched): memory is used
        // as the context fills, not up front. A context too large is an error, not an abort.
        let zeros = |ring: usize| -> Result<Vec<f16>, ModelError> {
            let too_big = || ModelError::Memory {
                what: format!("the KV cache for {} sequences", spec.n_seq),
                needed: kv_bytes(spec),
                available: None,
            };
            let slots = match ring {
                0 => spec.n_blocks.checked_mul(KV_BLOCK),
                cap => cap.checked_mul(spec.n_seq),
            };
            let len = slots
                .and_then(|l| l.checked_mul(kv_dim))
                .ok_or_else(too_big)?;
            bytemuck::allocation::try_zeroed_slice_box::<f16>(len)
                .map(Vec::from)
                .map_err(|_| too_big())
        };
        let unmapped = vec![u32::MAX; spec.table_len()];
        let mut tables = vec![unmapped; spec.n_seq];
        if spec.side_by_side() {
            for (s, t) in tables.iter_mut().enumerate() {
                for (i, b) in t.iter_mut().enumerate() {
                    *b = spec.own_block(s, i);
                }
            }
        }
        Ok(CpuKv {
            k: spec
                .ring
                .iter()
                .map(|&r| zeros(r))
                .collect::<Result<_, _>>()?,
            v: spec
                .ring
                .iter()
                .map(|&r| zeros(r))
                .collect::<Result<_, _>>()?,
            spec: spec.clone(),
            tables,
            kv_dim,
            head_dim: spec.head_dim,
        })
    }

    fn map_blocks(
        &mut self,
        kv: &mut CpuKv,
        seq: usize,
        first: usize,
        blocks: &[u32],
    ) -> Result<(), ModelError> {
        kv.spec.check_map(seq, first, blocks)?;
        kv.tables[seq][first..first + blocks.len()].copy_from_slice(blocks);
        Ok(())
    }

    fn begin_step(&mut self, batch: &Batch, _head: &[u32]) -> Result<Step, ModelError> {
        self.tokens.clear();
        self.tokens.extend_from_slice(batch.tokens);
        self.seqs.clear();
        self.seqs.extend_from_slice(batch.seqs);
        self.pos.clear();
        self.pos.extend_from_slice(batch.pos);
        batch.spans(&mut self.spans);
        for (key, _) in &mut self.rope_tables {
            *key = None;
        }
        Ok(Step::Record)
    }

    fn embed(&mut self, table: &CpuWeight, n: usize, out: &mut Vec<f32>) -> Result<(), ModelError> {
        let tokens = &self.tokens[..n];
        let Some((ty, rows, cols)) = table.matrix() else {
            return Err(ModelError::Backend(
                "embedding table must be a matrix".into(),
            ));
        };
        let row_bytes = ty.row_bytes(cols as u64).expect("validated at upload") as usize;
        let data = table.bytes();
        let mut unpacked = Vec::new();
        crate::check_tokens(tokens, rows)?;
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            let mut src = &data[tok * row_bytes..(tok + 1) * row_bytes];
            if let CpuWeight::Owned {
                kernel,
                packed: true,
                ..
            } = table
            {
                unpacked.resize(row_bytes, 0);
                kernel.unpack(src, 1, cols, &mut unpacked);
                src = &unpacked;
            }
            dispatch::dequantize_row(ty, src, &mut out[t * cols..(t + 1) * cols])
                .map_err(|e| ModelError::Backend(e.to_string()))?;
        }
        Ok(())
    }

    fn rms_norm(
        &mut self,
        x: &Vec<f32>,
        weight: &CpuWeight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let w = weight.as_f32();
        for_each_chunk(&self.pool, &mut out[..n * dim], dim, |t, o| {
            let x = &x[t * dim..(t + 1) * dim];
            // ggml sums the squares in double precision.
            let sum: f64 = x.iter().map(|&v| (v * v) as f64).sum();
            let mean = (sum / dim as f64) as f32;
            let scale = 1.0 / (mean + eps).sqrt();
            for ((o, &x), &w) in o.iter_mut().zip(x).zip(w) {
                *o = x * scale * w;
            }
        });
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &CpuWeight,
        x: &Vec<f32>,
        n: usize,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.matmuls(&[w], x, n, &mut [out])
    }

    fn matmuls(
        &mut self,
        ws: &[&CpuWeight],
        x: &Vec<f32>,
        n: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<(), ModelError> {
        assert_eq!(ws.len(), outs.len());
        assert!(
            ws.len() <= MAX_GROUP,
            "at most {MAX_GROUP} matmuls share an input"
        );
        // Per weight: kernel, rows, cols, bytes per weight row, first row in the joint output.
        let mut jobs: [Option<Job>; MAX_GROUP] = [None; MAX_GROUP];
        let mut total_rows = 0;
        for (slot, w) in jobs.iter_mut().zip(ws) {
            let Some((ty, rows, cols)) = w.matrix() else {
                return Err(ModelError::Backend("matmul needs a matrix weight".into()));
            };
            let kernel = mat_kernel(ty)
                .ok_or_else(|| ModelError::Backend(format!("no matmul kernel for {ty}")))?;
            let act_bytes = kernel.act_type().row_bytes(cols as u64).ok_or_else(|| {
                ModelError::Backend(format!(
                    "row length {cols} is not a multiple of {}'s block",
                    kernel.act_type()
                ))
            })? as usize;
            *slot = Some(Job {
                kernel,
                rows,
                cols,
                w_row: ty.row_bytes(cols as u64).expect("validated at upload") as usize,
                act_bytes,
                first: total_rows,
            });
            total_rows += rows;
        }
        let jobs = &jobs[..ws.len()];

        // Activations are quantized once per activation format, then every weight row meets every
        // token.
        for job in jobs.iter().flatten() {
            let at = job.kernel.act_type();
            let slot = match self.acts.iter().position(|(t, _)| *t == Some(at)) {
                Some(i) => i,
                None => {
                    let i = self
                        .acts
                        .iter()
                        .position(|(t, _)| t.is_none())
                        .expect("at most 3 activation formats");
                    self.acts[i].0 = Some(at);
                    i
                }
            };
            if self.acts_fresh[slot] {
                continue;
            }
            let buf = &mut self.acts[slot].1;
            grow(buf, n * job.act_bytes);
            let (ab, cols) = (job.act_bytes, job.cols);
            for_each_chunk(&self.pool, &mut buf[..n * ab], ab, |t, a| {
                {
                    let x = &x[t * cols..(t + 1) * cols];
                    // ggml's x86 rounding for Q8_0/Q8_1 activations (see `rustorch_quant::act`).
                    if !quantize_act_ggml_x86(job.kernel.act_type(), x, a) {
                        job.kernel.quantize_act(x, a)
                    }
                }
            });
            self.acts_fresh[slot] = true;
        }
        self.acts_fresh = [false; 3];
        let acts = &self.acts;
        let act_of = |job: &Job| -> &[u8] {
            let at = Some(job.kernel.act_type());
            let buf = &acts
                .iter()
                .find(|(t, _)| *t == at)
                .expect("quantized above")
                .1;
            &buf[..n * job.act_bytes]
        };

        // Threads take tiles of rows of the joint output `[total_rows, n]`; a tile that spans two
        // weights is computed in two pieces. A tile's weights stay in cache across all tokens.
        // Decode streams the weights once: two long runs of rows per thread keep the hardware
        // prefetchers busy and the threads finishing together (measured best here: 4 tiles for 2
        // threads beat 8 or 16, and beat long tiles followed by short ones taken on demand).
        // A few rows (decode steps of several sequences) are bound by the same stream of
        // weights: the decode tiling, whose rows the kernels of the common decode formats
        // (packed Q4_0 and Q4_K, Q6_K) read once per eight tokens. Prompts: tiles whose
        // weights stay in cache across tokens.
        let rows_per_task = if n <= SMALL_BATCH {
            total_rows
                .div_ceil(2 * self.pool.n_threads())
                .div_ceil(8)
                .max(1)
                * 8
        } else {
            // As long as four tiles a thread allow, up to 128 rows: a kernel's work per call
            // (converting the activations' Q8_0 scales and sums, repacking) is then spread over
            // more rows. Measured on TinyLlama Q4_0 pp128, 2 threads: 298 tok/s with 16 rows,
            // 308 with 64, 327 with 128.
            (total_rows / (4 * self.pool.n_threads())).clamp(16, PROMPT_ROWS) / 16 * 16
        };
        // Each task writes its tile, `[rows, n]` in `tmp`, into the outputs' `[n, rows]` itself,
        // while the tile is still in cache (a pass over the whole of `tmp` afterwards read it back
        // from memory: 5-16% of a TinyLlama pp512).
        let mut dests: [Option<OutRows>; MAX_GROUP] = [None; MAX_GROUP];
        for ((d, job), out) in dests.iter_mut().zip(jobs).zip(outs.iter_mut()) {
            let job = job.as_ref().expect("one job per weight");
            assert!(out.len() >= n * job.rows, "matmul output too short");
            *d = Some(OutRows(out.as_mut_ptr()));
        }
        let dests = &dests;
        grow(&mut self.tmp, total_rows * n);
        let tmp = &mut self.tmp[..total_rows * n];
        for_each_chunk(&self.pool, tmp, rows_per_task * n, |c, dst| {
            let (mut g, end) = (c * rows_per_task, c * rows_per_task + dst.len() / n);
            let mut dst = dst;
            while g < end {
                let (i, job) = jobs
                    .iter()
                    .enumerate()
                    .find_map(|(i, j)| {
                        j.as_ref()
                            .filter(|j| g >= j.first && g < j.first + j.rows)
                            .map(|j| (i, j))
                    })
                    .expect("row in range");
                let r0 = g - job.first;
                let nr = (job.rows - r0).min(end - g);
                let (now, rest) = dst.split_at_mut(nr * n);
                let w = &ws[i].bytes()[r0 * job.w_row..(r0 + nr) * job.w_row];
                if ws[i].is_packed() {
                    job.kernel.gemm_packed(w, nr, act_of(job), n, job.cols, now);
                } else {
                    job.kernel.gemm(w, nr, act_of(job), n, job.cols, now);
                }
                let out = dests[i].expect("one destination per weight");
                // SAFETY (both): `out` holds `n * job.rows` values (asserted above), and only
                // this task writes rows `r0..r0 + nr` of this job's output.
                if n == 1 {
                    // One token's outputs are the rows in order.
                    unsafe { out.copy_from(r0, now) };
                } else {
                    unsafe { out.transpose_from(r0, job.rows, now, nr, n) };
                }
                dst = rest;
                g += nr;
            }
        });
        Ok(())
    }

    fn rope(
        &mut self,
        x: &mut Vec<f32>,
        n: usize,
        n_heads: usize,
        shape: &AttnShape,
        factors: Option<&CpuWeight>,
    ) -> Result<(), ModelError> {
        let hd = shape.head_dim;
        let half = shape.n_rot / 2;
        if n > self.pos.len() {
            return Err(ModelError::BadBatch(format!(
                "RoPE of {n} rows in a step of {}",
                self.pos.len()
            )));
        }
        let factors = factors.map(|f| f.as_f32());
        if factors.is_some_and(|f| f.len() < half) {
            return Err(ModelError::Backend(format!(
                "RoPE frequency factors: {} values for {half} pairs",
                factors.map_or(0, |f| f.len())
            )));
        }
        // ggml: theta_i = pos * base^(-2i/n_rot), built by repeated multiplication in f32, then
        // divided by the pair's frequency factor. One (sin, cos) table per position and RoPE
        // setting, made at the step's first call and shared by every layer's queries and keys
        // (sin_cos per layer was 5% of a TinyLlama prompt).
        let key = RopeKey {
            n_rot: shape.n_rot,
            freq_base: shape.rope_freq_base.to_bits(),
            mscale: shape.rope_mscale.to_bits(),
            factors: factors.map_or((0, 0), |f| (f.as_ptr() as usize, f.len())),
        };
        let all = self.pos.len();
        let at = match self.rope_tables.iter().position(|(k, _)| *k == Some(key)) {
            Some(i) => i,
            None => {
                // A table of an earlier step's, reused (decode allocates nothing per token).
                let i = match self.rope_tables.iter().position(|(k, _)| k.is_none()) {
                    Some(i) => i,
                    None => {
                        self.rope_tables.push((None, Vec::new()));
                        self.rope_tables.len() - 1
                    }
                };
                let theta_scale = shape.rope_freq_base.powf(-2.0 / shape.n_rot as f32);
                let (slot, table) = &mut self.rope_tables[i];
                *slot = Some(key);
                table.clear();
                table.resize(all * half, (0.0, 0.0));
                let pos = &self.pos;
                if half > 0 {
                    for_each_chunk(&self.pool, table, half, |t, cs| {
                        let mut theta = pos[t] as f32;
                        for (i, c) in cs.iter_mut().enumerate() {
                            let th = factors.map_or(theta, |f| theta / f[i]);
                            let (sin, cos) = th.sin_cos();
                            *c = (sin * shape.rope_mscale, cos * shape.rope_mscale);
                            theta *= theta_scale;
                        }
                    });
                }
                i
            }
        };
        let table = &self.rope_tables[at].1;
        for_each_chunk(
            &self.pool,
            &mut x[..n * n_heads * hd],
            n_heads * hd,
            |t, row| {
                let cs = &table[t * half..(t + 1) * half];
                for head in row.chunks_mut(hd) {
                    for (i, &(sin, cos)) in cs.iter().enumerate() {
                        let (a, b) = match shape.rope {
                            RopeStyle::Adjacent => (2 * i, 2 * i + 1),
                            RopeStyle::Neox => (i, i + half),
                        };
                        let (x0, x1) = (head[a], head[b]);
                        head[a] = x0 * cos - x1 * sin;
                        head[b] = x0 * sin + x1 * cos;
                    }
                }
            },
        );
        Ok(())
    }

    fn kv_store(
        &mut self,
        kv: &mut CpuKv,
        layer: usize,
        k: &Vec<f32>,
        v: &Vec<f32>,
        n: usize,
    ) -> Result<(), ModelError> {
        let (kv_dim, head_dim) = (kv.kv_dim, kv.head_dim);
        for t in 0..n {
            let seq = self.seqs[t] as usize;
            let slot = kv.slot(layer, seq, self.pos[t] as usize)?;
            let (base, cap) = kv.plane(layer, seq);
            let (keys, vals) = (&mut kv.k[layer][base..], &mut kv.v[layer][base..]);
            for (kvh, (kr, vr)) in k[t * kv_dim..(t + 1) * kv_dim]
                .chunks(head_dim)
                .zip(v[t * kv_dim..(t + 1) * kv_dim].chunks(head_dim))
                .enumerate()
            {
                for (d, &x) in kr.iter().enumerate() {
                    keys[(kvh * head_dim + d) * cap + slot] = f16::from_f32(x);
                }
                let vdst =
                    &mut vals[(kvh * cap + slot) * head_dim..(kvh * cap + slot + 1) * head_dim];
                vdst.convert_from_f32_slice(vr);
            }
        }
        Ok(())
    }

    fn attention(
        &mut self,
        q: &Vec<f32>,
        kv: &CpuKv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let spans = std::mem::take(&mut self.spans);
        for span in spans.iter().take_while(|s| s.row0 < n) {
            self.attend(q, kv, layer, span, shape, out);
        }
        self.spans = spans;
        Ok(())
    }

    fn swiglu(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<(), ModelError> {
        for_each_chunk(&self.pool, &mut gate[..len], 4096, |c, g| {
            let u = &up[c * 4096..c * 4096 + g.len()];
            vecmath::silu_mul(g, u);
        });
        Ok(())
    }

    fn geglu(&mut self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<(), ModelError> {
        for_each_chunk(&self.pool, &mut gate[..len], 4096, |c, g| {
            let u = &up[c * 4096..c * 4096 + g.len()];
            for (g, &u) in g.iter_mut().zip(u) {
                *g = gelu_ggml(*g) * u;
            }
        });
        Ok(())
    }

    fn add_bias(
        &mut self,
        x: &mut Vec<f32>,
        bias: &CpuWeight,
        n: usize,
        dim: usize,
    ) -> Result<(), ModelError> {
        let b = bias.as_f32();
        if b.len() != dim {
            return Err(ModelError::Backend(format!(
                "a bias of {} values for rows of {dim}",
                b.len()
            )));
        }
        for row in x[..n * dim].chunks_exact_mut(dim) {
            for (x, &b) in row.iter_mut().zip(b) {
                *x += b;
            }
        }
        Ok(())
    }

    fn scale(&mut self, x: &mut Vec<f32>, s: f32, len: usize) -> Result<(), ModelError> {
        for x in &mut x[..len] {
            *x *= s;
        }
        Ok(())
    }

    fn add(&mut self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<(), ModelError> {
        for (x, &y) in x[..len].iter_mut().zip(&y[..len]) {
            *x += y;
        }
        Ok(())
    }

    fn copy_within(
        &mut self,
        x: &mut Vec<f32>,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), ModelError> {
        x.copy_within(src..src + len, dst);
        Ok(())
    }

    fn read(&mut self, x: &Vec<f32>, offset: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let src = x
            .get(offset..offset + out.len())
            .ok_or_else(|| ModelError::Backend("read past the end of a buffer".into()))?;
        out.copy_from_slice(src);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An embedding table rewritten into a packed layout gives the rows of the file's layout.
    #[test]
    fn embed_reads_packed_tables() {
        let Some(kernel) = mat_kernel(GgmlType::Q4_0).filter(|k| k.has_packed_layout()) else {
            return; // no packed layout on this CPU
        };
        let (rows, cols) = (11, 576);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
            .collect();
        let row_bytes = GgmlType::Q4_0.row_bytes(cols as u64).unwrap() as usize;
        let mut plain = vec![0u8; rows * row_bytes];
        for (x, w) in values.chunks(cols).zip(plain.chunks_mut(row_bytes)) {
            dispatch::quantize_row(GgmlType::Q4_0, x, w).unwrap();
        }
        let mut data = WeightBytes::zeroed(plain.len()).unwrap();
        kernel.pack(&plain, rows, cols, &mut data);
        assert_ne!(&data[..], &plain[..]);
        let table = CpuWeight::Owned {
            data,
            kernel,
            packed: true,
            rows,
            cols,
        };
        let tokens = [3u32, 0, 10, 3];
        let mut out = vec![0f32; tokens.len() * cols];
        let mut b = CpuBackend::new(1);
        let batch = Batch {
            tokens: &tokens,
            seqs: &[0; 4],
            pos: &[0, 1, 2, 3],
        };
        b.begin_step(&batch, &[]).unwrap();
        b.embed(&table, tokens.len(), &mut out).unwrap();
        for (t, &tok) in tokens.iter().enumerate() {
            let mut want = vec![0f32; cols];
            let src = &plain[tok as usize * row_bytes..][..row_bytes];
            dispatch::dequantize_row(GgmlType::Q4_0, src, &mut want).unwrap();
            assert_eq!(&out[t * cols..(t + 1) * cols], &want[..], "token {tok}");
        }
    }
}
