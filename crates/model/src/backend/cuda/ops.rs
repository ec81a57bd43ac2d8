//! Kernel launches: one function per kernel (or fused group) of `kernels.cu`, taking device
//! addresses, shared by the model's forward pass and the kernel tests.

use cudarc::driver::CudaFunction;
use half::f16;
use rayon::prelude::*;
use rustorch_gguf::GgmlType;
use rustorch_quant::dispatch;

use super::gpu::{DevBuf, Gpu};
use crate::backend::AttnShape;
use crate::ModelError;

/// Kernel type codes (ggml's type ids) of the formats the kernels read directly.
pub(crate) fn kernel_type(ty: GgmlType) -> Option<i32> {
    use GgmlType as T;
    matches!(
        ty,
        T::F16 | T::Q4_0 | T::Q4_1 | T::Q5_0 | T::Q5_1 | T::Q8_0 | T::Q4_K | T::Q5_K | T::Q6_K
    )
    .then_some(ty.id() as i32)
}

/// Bytes of a Q6_K block, and of one padded to a multiple of 16 (`T_Q6_KP` in `kernels.cu`).
const Q6K_BYTES: usize = 210;
const Q6K_PADDED: usize = 224;
/// Kernel type code of padded Q6_K.
const T_Q6_KP: i32 = 200;

/// A weight matrix on the GPU: `rows` rows of `cols` weights in format `ty` (a kernel type code).
pub(crate) struct GWeight {
    pub buf: DevBuf,
    pub ty: i32,
    pub rows: usize,
    pub cols: usize,
}

/// Uploads a `rows × cols` matrix of type `ty`. Formats without a kernel of their own (F32, BF16,
/// Q2_K, Q3_K, ...) are dequantized here and kept as f16.
pub(crate) fn upload_matrix(
    gpu: &Gpu,
    name: &str,
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<GWeight, ModelError> {
    if !cols.is_multiple_of(32) {
        return Err(ModelError::Backend(format!(
            "cuda: tensor '{name}' has rows of {cols} values; the cuda backend needs a multiple of 32"
        )));
    }
    if ty == GgmlType::Q6_K {
        // Each 210-byte block padded to 224 bytes (kernel type T_Q6_KP): aligned vector loads.
        let mut padded = vec![0u8; data.len() / Q6K_BYTES * Q6K_PADDED];
        for (dst, src) in padded
            .chunks_exact_mut(Q6K_PADDED)
            .zip(data.chunks_exact(Q6K_BYTES))
        {
            dst[..Q6K_BYTES].copy_from_slice(src);
        }
        return Ok(GWeight {
            buf: gpu.upload(&padded, name)?,
            ty: T_Q6_KP,
            rows,
            cols,
        });
    }
    if let Some(kt) = kernel_type(ty) {
        return Ok(GWeight {
            buf: gpu.upload(data, name)?,
            ty: kt,
            rows,
            cols,
        });
    }
    if !dispatch::is_supported(ty) {
        return Err(ModelError::UnsupportedType {
            name: name.to_string(),
            ty,
            backend: "cuda",
        });
    }
    let row_bytes = data.len() / rows;
    let mut wide = vec![f16::ZERO; rows * cols];
    wide.par_chunks_mut(cols)
        .zip(data.par_chunks(row_bytes))
        .try_for_each(|(dst, src)| {
            let mut tmp = vec![0f32; cols];
            dispatch::dequantize_row(ty, src, &mut tmp)?;
            for (d, s) in dst.iter_mut().zip(&tmp) {
                *d = f16::from_f32(*s);
            }
            Ok(())
        })
        .map_err(|e: rustorch_quant::QuantError| {
            ModelError::Backend(format!("cuda: widening '{name}': {e}"))
        })?;
    Ok(GWeight {
        buf: gpu.upload(&wide, name)?,
        ty: GgmlType::F16.id() as i32,
        rows,
        cols,
    })
}

/// The input of a mat-vec: an activation quantized to q8_1, codes and per-block `(d, d·Σq)`.
#[derive(Clone, Copy)]
pub(crate) struct MvIn {
    pub aq: u64,
    pub ads: u64,
}

/// The cache the q/k/v mat-vec (mode 3) writes k and v into: one layer's, at the sequence and
/// position of the row `io` points at.
#[derive(Clone, Copy)]
pub(crate) struct RopeOut {
    pub io: u64,
    pub kc: u64,
    pub vc: u64,
}

/// Work items (rows) from which a mat-vec takes one warp a row whatever its length.
const MV_MANY_ITEMS: usize = 4096;

/// `outs[i] (+)= ws[i] · x`; `mode` as in `kernels.cu` (0 write, 1 add, 2 SwiGLU of two weights,
/// 3 q/k/v with RoPE, k and v also into the cache, which needs `rope`).
pub(crate) fn matvec(
    gpu: &Gpu,
    ws: &[(&GWeight, u64)],
    input: MvIn,
    mode: i32,
    rope: Option<(&Attn, RopeOut)>,
) -> Result<(), ModelError> {
    let flags = i32::from(gpu.opts.prefetch);
    assert!(!ws.is_empty() && ws.len() <= 3);
    let ncols = ws[0].0.cols;
    assert!(ws.iter().all(|(w, _)| w.cols == ncols));
    let seg = |i: usize| -> (u64, i32, i32, u64) {
        ws.get(i)
            .map(|(w, o)| (w.buf.ptr, w.ty, w.rows as i32, *o))
            .unwrap_or((0, 0, 0, 0))
    };
    let (s0, s1, s2) = (seg(0), seg(1), seg(2));
    let rows = if mode == 2 {
        ws[0].0.rows
    } else {
        ws.iter().map(|(w, _)| w.rows).sum()
    };
    // Warps per row: enough that a lane has at most about two 32-weight chunks of the row. Modes 2
    // and 3 pair adjacent items within a block, so they take at most 2. With many items a warp
    // a row keeps the card busy and splits less: on an H100, Llama-7B decode went from 359 to
    // 406 tok/s (bench/cuda/results-h100-2026-12-07-matvec.md: 4096 x 4096 Q4_K 7.1 -> 6.1 us),
    // while TinyLlama's down projection (2048 rows) lost 4.5% with one.
    let items = if mode == 2 { 2 * rows } else { rows };
    let chunks = ncols / 32;
    let wpr: usize = match chunks {
        _ if items >= MV_MANY_ITEMS => 1,
        0..=64 => 1,
        65..=128 => 2,
        _ if mode >= 2 => 2,
        _ => 4,
    }
    .min(gpu.opts.wpr_max);
    let warps = gpu.opts.mv_warps;
    let grid = items.div_ceil(warps / wpr) as u32;
    let (io, kc, vc, n_ctx, seq_stride, (tables, tlen), hd, n_rot, theta_scale) = match rope {
        Some((a, r)) => (
            r.io,
            r.kc,
            r.vc,
            a.n_ctx as i32,
            a.seq_stride(),
            (a.tables, a.tlen as i32),
            a.hd as i32,
            a.n_rot as i32,
            a.theta_scale(),
        ),
        None => {
            assert!(mode != 3, "the q/k/v mode needs its RoPE outputs");
            (0, 0, 0, 0, 0, (0, 0), 0, 0, 0.0)
        }
    };
    gpu.launch(
        &gpu.k.matvec,
        (grid, 1, 1),
        (32 * warps) as u32,
        &[
            &s0.0,
            &s0.1,
            &s0.2,
            &s0.3,
            &s1.0,
            &s1.1,
            &s1.2,
            &s1.3,
            &s2.0,
            &s2.1,
            &s2.2,
            &s2.3,
            &input.aq,
            &input.ads,
            &(ncols as i32),
            &mode,
            &(wpr as i32),
            &io,
            &kc,
            &vc,
            &n_ctx,
            &seq_stride,
            &tables,
            &tlen,
            &hd,
            &n_rot,
            &theta_scale,
            &flags,
        ],
    )
}

/// Smallest weights (rows and columns) the prompt matmul takes by default, in the formats it
/// measured faster in. Q4_K and Q6_K at Llama-7B's 4096 x 4096 and larger: pp512 13,069 against
/// the f16 copy and cuBLAS's 10,382 on an H200 (the super-block kernel). TinyLlama's weights, 2048
/// columns or 2048 rows, lost (40,419 against 47,565 with every weight on it). Its Q4_0 and Q8_0
/// decoders (2-byte aligned blocks) lost at every width measured (bench/cuda/NOTES.md).
const QGEMM_AUTO_MIN: usize = 4096;

/// Whether prompt matmuls with `w` take [`qgemm`] (tensor cores: sm_80+): the `qgemm` option,
/// by default ([`QGEMM_AUTO_MIN`]) for large Q4_K / Q6_K weights, and for every weight when
/// cuBLAS is missing.
pub(crate) fn qgemm_for(gpu: &Gpu, w: &GWeight) -> bool {
    let auto = w.rows >= QGEMM_AUTO_MIN && w.cols >= QGEMM_AUTO_MIN && k_quant(w);
    gpu.tensor_cores() && gpu.opts.qgemm.unwrap_or(auto || !gpu.has_blas())
}

/// Q4_K or (padded) Q6_K: the formats of the super-block prompt matmul.
fn k_quant(w: &GWeight) -> bool {
    w.ty == GgmlType::Q4_K.id() as i32 || w.ty == T_Q6_KP
}

/// Weight rows a [`qgemm`] block owns (`QG_BN` in `kernels.cu`).
const QG_BN: usize = 128;

/// Dynamic shared memory of a [`qgemm`] block with a token tile of `tm` (`qg_smem` in
/// `kernels.cu`: three stages of activations, two of decoded weights, rows of 40 halves).
pub(crate) fn qgemm_shared(tm: usize) -> usize {
    (3 * tm + 2 * QG_BN) * 40 * 2
}

/// Dynamic shared memory of a super-block [`qgemm`] block for super-blocks kept `stride` bytes
/// apart (`qg4_smem` in `kernels.cu`: three activation stages and two decoded tiles of 128 rows
/// of 40 halves, two raw super-blocks of 128 rows): Q4_K 144, Q6_K 240.
pub(crate) fn qgemm4_shared(stride: usize) -> usize {
    (3 * 128 + 2 * 128) * 40 * 2 + 2 * 128 * stride
}

/// Which prompt-matmul kernel [`qgemm`] runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum QgKernel {
    /// 32-column tiles decoded per step from global memory, a token tile of 64 or 128.
    Tiles(usize),
    /// Q4_K / Q6_K: whole super-blocks staged in shared memory, 128 x 128 blocks.
    SuperBlocks,
}

/// `out[n][rows] (+)= x16[n][cols] · Wᵀ` (`add`: into `out`) straight from the weight's blocks,
/// tensor-core tiles decoded in shared memory (sm_80+), no f16 copy of the weight. `kernel`, or by
/// default: the super-block kernel (`qgemm4_t`) for Q4_K / Q6_K and more than 64 rows where the
/// card has its shared memory and `qgemm_sb` is on; else the 32-column kernel (`qgemm_t`) with a
/// token tile of 128 for more than 64 rows (at the 7B width 128 measured 9% faster than 64 over
/// a pp512), else 64; the `qgemm_tm` option fixes the tile.
pub(crate) fn qgemm(
    gpu: &Gpu,
    w: &GWeight,
    (x16, n): (u64, usize),
    out: u64,
    add: bool,
    kernel: Option<QgKernel>,
) -> Result<(), ModelError> {
    use GgmlType as T;
    let superblocks = k_quant(w) && gpu.superblock_matmul();
    let kernel = kernel.unwrap_or(match gpu.opts.qgemm_tm {
        _ if gpu.opts.qgemm_sb && superblocks && n > 64 => QgKernel::SuperBlocks,
        0 if n > 64 => QgKernel::Tiles(128),
        0 => QgKernel::Tiles(64),
        t => QgKernel::Tiles(t),
    });
    // (kernel, tokens a block, threads, shared bytes)
    let (f, tm, threads, shared) = match kernel {
        QgKernel::SuperBlocks if superblocks => {
            let q6 = w.ty == T_Q6_KP;
            let stride = if q6 { 240 } else { 144 };
            (&gpu.k.qgemm4[usize::from(q6)], 128, 128, qgemm4_shared(stride))
        }
        QgKernel::SuperBlocks => {
            return Err(ModelError::Backend(
                "cuda: the super-block matmul reads only Q4_K and Q6_K, on cards with 110 KiB of shared memory a block".into(),
            ))
        }
        QgKernel::Tiles(tm @ (64 | 128)) => {
            let format = match w.ty {
                t if t == T::F16.id() as i32 => 0,
                t if t == T::Q4_0.id() as i32 => 1,
                t if t == T::Q8_0.id() as i32 => 2,
                t if t == T::Q4_K.id() as i32 => 3,
                T_Q6_KP => 4,
                _ => 5,
            };
            let f = &gpu.k.qgemm[format][usize::from(tm == 128)];
            (f, tm, 256, qgemm_shared(tm))
        }
        QgKernel::Tiles(tm) => {
            return Err(ModelError::Backend(format!("cuda: no {tm}-token matmul tile")))
        }
    };
    // Blocks of 128 weight rows (QG_BN, Q4_BN) and `tm` tokens.
    gpu.launch_shared(
        f,
        (w.rows.div_ceil(QG_BN) as u32, n.div_ceil(tm) as u32, 1),
        (threads, shared as u32),
        &[
            &w.buf.ptr,
            &w.ty,
            &(w.rows as i32),
            &(w.cols as i32),
            &x16,
            &(n as i32),
            &out,
            &i32::from(add),
        ],
    )
}

/// RMSNorm of `n` rows of width `dim` starting at row `row0` of `x`, written to any of f32 / f16 /
/// q8_1 (a null pointer skips an output).
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub(crate) fn rms_norm(
    gpu: &Gpu,
    x: u64,
    row0: usize,
    w: &DevBuf,
    eps: f32,
    (n, dim): (usize, usize),
    (of32, of16): (u64, u64),
    (aq, ads): (u64, u64),
) -> Result<(), ModelError> {
    assert!(dim % 32 == 0 && dim <= RMS_NORM_MAX);
    gpu.launch(
        &gpu.k.rms_norm,
        (n as u32, 1, 1),
        dim.min(1024) as u32,
        &[
            &x,
            &(row0 as i32),
            &w.ptr,
            &eps,
            &(dim as i32),
            &of32,
            &of16,
            &aq,
            &ads,
        ],
    )
}

/// Widest row the RMSNorm kernel takes (`RN_MAX` values a thread, 1024 threads).
pub(crate) const RMS_NORM_MAX: usize = 8 * 1024;

/// Quantizes `n` f32 values (a multiple of 32) at `x` to q8_1.
pub(crate) fn quantize(gpu: &Gpu, x: u64, n: usize, aq: u64, ads: u64) -> Result<(), ModelError> {
    let blocks = n / 32;
    gpu.launch(
        &gpu.k.quantize_q8_1,
        (blocks.div_ceil(8) as u32, 1, 1),
        256,
        &[&x, &(n as i32), &aq, &ads],
    )
}

/// Query heads one decode-attention block takes (`AD_G` in `kernels.cu`): few, so each block's
/// serial work is short (at short contexts the kernel is latency-bound); the blocks of one KV
/// head read the same keys and values, from L2.
const ATTN_HEADS_PER_BLOCK: usize = 1;

/// Attention geometry on the GPU: the model's heads and the cache's positions per sequence.
#[derive(Clone, Copy)]
pub(crate) struct Attn {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub hd: usize,
    pub n_rot: usize,
    pub freq_base: f32,
    pub n_ctx: usize,
    pub n_split: usize,
    /// Scale of the scores.
    pub scale: f32,
    /// RoPE's sine and cosine multiplier.
    pub rope_mscale: f32,
    /// Positions a query sees, itself included (0: all before it).
    pub window: usize,
    /// A paged layer's block tables (i32, `tlen` entries a sequence; `n_ctx` is then the pool's
    /// rows), or 0: each sequence has a plane of `n_ctx` rows of its own (`kv_at` in
    /// `kernels.cu`).
    pub tables: u64,
    pub tlen: usize,
}

impl Attn {
    /// The geometry of `shape` over a cache of `n_ctx` positions per sequence, decode attention
    /// split `n_split` ways.
    pub fn new(shape: &AttnShape, n_ctx: usize, n_split: usize) -> Attn {
        Attn {
            n_head: shape.n_head,
            n_head_kv: shape.n_head_kv,
            hd: shape.head_dim,
            n_rot: shape.n_rot,
            freq_base: shape.rope_freq_base,
            n_ctx,
            n_split,
            scale: shape.scale,
            rope_mscale: shape.rope_mscale,
            window: shape.window,
            tables: 0,
            tlen: 0,
        }
    }
    /// The geometry of a paged layer: `tables` holds each sequence's `tlen` block ids.
    pub fn paged(self, tables: u64, tlen: usize) -> Attn {
        Attn {
            tables,
            tlen,
            ..self
        }
    }
    /// f16 values between two sequences' caches of one layer that is not paged.
    pub fn seq_stride(&self) -> u64 {
        (self.n_head_kv * self.n_ctx * self.hd) as u64
    }
    /// Sequence `seq`'s part of the layer: bytes past the layer's start, and the address of its
    /// block table (0 when the layer is not paged).
    pub fn seq_part(&self, seq: usize) -> (u64, u64) {
        match self.tables {
            0 => (seq as u64 * self.seq_stride() * 2, 0),
            t => (0, t + (seq * self.tlen * 4) as u64),
        }
    }
    /// RoPE's `base^(-2/n_rot)`.
    pub fn theta_scale(&self) -> f32 {
        self.freq_base.powf(-2.0 / self.n_rot as f32)
    }
    pub fn group_blocks(&self) -> usize {
        (self.n_head / self.n_head_kv).div_ceil(ATTN_HEADS_PER_BLOCK)
    }
    /// Splits of the decode attention: about 256 blocks in all.
    pub fn splits_for(n_head: usize, n_head_kv: usize) -> usize {
        (256 / (n_head_kv * (n_head / n_head_kv).div_ceil(ATTN_HEADS_PER_BLOCK))).clamp(1, 64)
    }
    pub fn check(&self) -> Result<(), ModelError> {
        self.kernel().map(|_| ())
    }
    /// The attention kernels' index for this head size.
    pub fn kernel(&self) -> Result<usize, ModelError> {
        match self.hd {
            32 => Ok(0),
            64 => Ok(1),
            96 => Ok(2),
            128 => Ok(3),
            256 => Ok(4),
            hd => Err(ModelError::Backend(format!(
                "cuda: head size {hd} is not supported (the attention kernels take 32, 64, 96, 128 or 256)"
            ))),
        }
    }
}

/// RoPE in place of `n_heads` heads of `n` rows, each at its row's position in `io`: adjacent
/// pairs, or with `neox` pairs `i` and `i + n_rot / 2`; `factors` (f32, may be null) divide each
/// pair's angle.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub(crate) fn rope(
    gpu: &Gpu,
    a: &Attn,
    x: u64,
    n: usize,
    n_heads: usize,
    io: u64,
    neox: bool,
    factors: u64,
) -> Result<(), ModelError> {
    if a.n_rot == 0 {
        return Ok(());
    }
    gpu.launch(
        &gpu.k.rope,
        (n as u32, n_heads as u32, 1),
        (a.n_rot / 2) as u32,
        &[
            &x,
            &(n_heads as i32),
            &(a.hd as i32),
            &a.theta_scale(),
            &io,
            &i32::from(neox),
            &factors,
            &a.rope_mscale,
        ],
    )
}

/// `x[t] += bias` over `len` values in rows of `dim`.
pub(crate) fn add_bias(
    gpu: &Gpu,
    x: u64,
    bias: u64,
    dim: usize,
    len: usize,
) -> Result<(), ModelError> {
    gpu.launch(
        &gpu.k.add_bias,
        elementwise(len),
        256,
        &[&x, &bias, &(dim as i32), &(len as i32)],
    )
}

/// `x *= s` over `len` values.
pub(crate) fn scale(gpu: &Gpu, x: u64, s: f32, len: usize) -> Result<(), ModelError> {
    gpu.launch(
        &gpu.k.scale,
        elementwise(len),
        256,
        &[&x, &s, &(len as i32)],
    )
}

/// Keys and values of `n` rows into one layer's cache (`kc`, `vc`: the layer's first sequence), at
/// each row's sequence and position in `io`.
pub(crate) fn kv_store(
    gpu: &Gpu,
    a: &Attn,
    (k, v): (u64, u64),
    n: usize,
    io: u64,
    (kc, vc): (u64, u64),
) -> Result<(), ModelError> {
    gpu.launch(
        &gpu.k.kv_store,
        (n as u32, a.n_head_kv as u32, 1),
        a.hd as u32,
        &[
            &k,
            &v,
            &(a.n_head_kv as i32),
            &(a.hd as i32),
            &io,
            &kc,
            &vc,
            &(a.n_ctx as i32),
            &a.seq_stride(),
            &a.tables,
            &(a.tlen as i32),
        ],
    )
}

/// Blocks of 256 threads for an elementwise kernel over `len` values (grid-stride loops).
fn elementwise(len: usize) -> (u32, u32, u32) {
    (len.div_ceil(256).clamp(1, 1 << 16) as u32, 1, 1)
}

/// `x += y` over `len` values.
pub(crate) fn add(gpu: &Gpu, x: u64, y: u64, len: usize) -> Result<(), ModelError> {
    gpu.launch(&gpu.k.add, elementwise(len), 256, &[&x, &y, &(len as i32)])
}

/// `out = x` as f16, `len` values.
pub(crate) fn to_f16(gpu: &Gpu, x: u64, out: u64, len: usize) -> Result<(), ModelError> {
    gpu.launch(
        &gpu.k.to_f16,
        elementwise(len),
        256,
        &[&x, &out, &(len as i32)],
    )
}

/// `gate = act(gate) * up` over `len` values with `kernel` (`swiglu`: SiLU, `geglu`: GELU): in
/// place with `keep`, and as f16 into `of16` when not null.
pub(crate) fn gated(
    gpu: &Gpu,
    kernel: &CudaFunction,
    (gate, up): (u64, u64),
    (of16, keep): (u64, bool),
    len: usize,
) -> Result<(), ModelError> {
    gpu.launch(
        kernel,
        elementwise(len),
        256,
        &[&gate, &up, &of16, &(len as i32), &i32::from(keep)],
    )
}

/// RoPE of `n` rows of q and k in place (adjacent pairs, or `neox`; `factors` may be null), then
/// k and v into one layer's cache (`kc`, `vc`: its first sequence) at each row's sequence and
/// position in `io`.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub(crate) fn rope_store(
    gpu: &Gpu,
    a: &Attn,
    (q, k, v): (u64, u64, u64),
    n: usize,
    io: u64,
    (neox, factors): (bool, u64),
    (kc, vc): (u64, u64),
) -> Result<(), ModelError> {
    gpu.launch(
        &gpu.k.rope_store,
        (n as u32, (a.n_head + a.n_head_kv) as u32, 1),
        (a.hd / 2) as u32,
        &[
            &q,
            &k,
            &v,
            &(a.n_head as i32),
            &(a.n_head_kv as i32),
            &(a.hd as i32),
            &(a.n_rot as i32),
            &a.theta_scale(),
            &io,
            &i32::from(neox),
            &factors,
            &a.rope_mscale,
            &kc,
            &vc,
            &(a.n_ctx as i32),
            &a.seq_stride(),
            &a.tables,
            &(a.tlen as i32),
        ],
    )
}

/// Attention of the query row `q` (f32, at the sequence and position of the row `io` points at)
/// over one layer's cache (`kc`, `vc`: the layer's first sequence), split over the cached
/// positions and merged by the last block of each head group into f32 (`of32`) and q8_1
/// (`aq`/`ads`, may be null). `counter` holds one zeroed int per head group.
#[allow(clippy::too_many_arguments)] // the kernel's operands
pub(crate) fn attn_decode(
    gpu: &Gpu,
    a: &Attn,
    q: u64,
    (kc, vc): (u64, u64),
    io: u64,
    (part, counter): (u64, u64),
    of32: u64,
    (aq, ads): (u64, u64),
) -> Result<(), ModelError> {
    let scale = a.scale;
    gpu.launch(
        &gpu.k.attn_decode[a.kernel()?],
        (
            a.n_head_kv as u32,
            a.n_split as u32,
            a.group_blocks() as u32,
        ),
        128,
        &[
            &q,
            &kc,
            &vc,
            &io,
            &(a.n_ctx as i32),
            &a.seq_stride(),
            &a.tables,
            &(a.tlen as i32),
            &(a.n_head as i32),
            &(a.n_head_kv as i32),
            &scale,
            &part,
            &counter,
            &of32,
            &aq,
            &ads,
            &i32::from(gpu.opts.attn_prefetch),
            &(a.window as i32),
        ],
    )
}

/// Whether prompts take the flash-attention kernel (tensor cores, sm_80+) instead of the cuBLAS
/// score-matrix path (the `flash` option off).
pub(crate) fn flash_enabled(gpu: &Gpu) -> bool {
    gpu.cc_major >= 8 && gpu.opts.flash
}

/// Query rows of one prompt-attention block (`FA_BQ` in `kernels.cu`).
const FA_BQ: usize = 64;

/// Causal attention of `n` query rows (f32 `[t][head][head_dim]`) of one sequence at positions
/// `pos0..pos0 + n` over that sequence's part of one layer's cache (`kc`, `vc`, and `tab` its
/// block table in a paged layer, else 0), which holds the positions they see: flash attention on tensor cores, no score matrix. Writes f32
/// `of32[t][head * head_dim + d]`, and the same as f16 to `of16` when not null. Needs sm_80+
/// ([`flash_enabled`]).
pub(crate) fn attn_prompt(
    gpu: &Gpu,
    a: &Attn,
    (n, pos0): (usize, usize),
    q: u64,
    (kc, vc, tab): (u64, u64, u64),
    (of32, of16): (u64, u64),
) -> Result<(), ModelError> {
    assert!(
        gpu.cc_major >= 8,
        "the prompt attention kernel needs sm_80+"
    );
    // The cache holds what the rows see: positions 0..pos0 + n (through the block table `tab`
    // when not 0), or a ring of a window's last.
    debug_assert!(
        n > 0 && (tab != 0 || pos0 + n <= a.n_ctx || a.window > 0 && a.window + n - 1 <= a.n_ctx)
    );
    let scale = a.scale;
    gpu.launch(
        &gpu.k.attn_prompt[a.kernel()?],
        (n.div_ceil(FA_BQ) as u32, a.n_head as u32, 1),
        128,
        &[
            &q,
            &kc,
            &vc,
            &tab,
            &(n as i32),
            &(pos0 as i32),
            &(a.n_ctx as i32),
            &(a.n_head as i32),
            &(a.n_head_kv as i32),
            &scale,
            &of32,
            &of16,
            &(a.window as i32),
        ],
    )
}
