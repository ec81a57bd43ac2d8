//! Single kernels run on host data, for the tests that hold each kernel against the scalar
//! reference of `rustorch_quant` or the CPU backend. Each call uploads its inputs, runs, and
//! reads the result back; none of this is on the inference path.

use rustorch_gguf::GgmlType;

use super::gpu::DevBuf;
use super::gpu::Gpu;
use super::ops::{self as model, upload_matrix, Attn, MvIn, RopeOut};
use crate::backend::AttnShape;
use crate::ModelError;

/// Dequantizes `rows × cols` weights of type `ty` on the GPU (the path of embeddings and prompt
/// GEMM weights). Only formats the kernels read directly are accepted.
pub fn dequantize(
    gpu: &Gpu,
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
) -> Result<Vec<f32>, ModelError> {
    model::kernel_type(ty)
        .ok_or_else(|| ModelError::Backend(format!("no cuda kernel reads {ty} directly")))?;
    // As the model uploads it (Q6_K padded to aligned blocks).
    let w = upload_matrix(gpu, "weights", ty, data, rows, cols)?;
    let kt = w.ty;
    let w = w.buf;
    let out = gpu.alloc(rows * cols * 4, "output")?;
    gpu.launch(
        &gpu.k.dequant_f32,
        ((rows * cols).div_ceil(256).min(1 << 16) as u32, 1, 1),
        256,
        &[&w.ptr, &kt, &(rows as i32), &(cols as i32), &out.ptr],
    )?;
    let mut v = vec![0f32; rows * cols];
    gpu.read(&out, 0, &mut v)?;
    Ok(v)
}

pub use super::ops::QgKernel;

/// `out (+)= x · Wᵀ` for `n` rows `x` (`n × cols`, rounded to f16 on the GPU) through the prompt
/// matmul that reads the weight's blocks into tensor-core tiles, with `kernel`; `init`: the
/// output's values before (`add` mode), else it is overwritten. Needs sm_80+.
pub fn gemm(
    gpu: &Gpu,
    (ty, data, rows, cols): (GgmlType, &[u8], usize, usize),
    x: &[f32],
    n: usize,
    init: Option<&[f32]>,
    kernel: QgKernel,
) -> Result<Vec<f32>, ModelError> {
    if !gpu.tensor_cores() {
        return Err(ModelError::Backend(
            "cuda: the tensor-core matmul needs sm_80+".into(),
        ));
    }
    let w = upload_matrix(gpu, "weights", ty, data, rows, cols)?;
    let xb = gpu.upload(x, "input")?;
    let x16 = gpu.alloc(n * cols * 2, "f16 input")?;
    model::to_f16(gpu, xb.ptr, x16.ptr, n * cols)?;
    let out = match init {
        Some(v) => gpu.upload(v, "output")?,
        None => gpu.upload(&vec![f32::NAN; n * rows], "output")?,
    };
    model::qgemm(gpu, &w, (x16.ptr, n), out.ptr, init.is_some(), Some(kernel))?;
    let mut v = vec![0f32; n * rows];
    gpu.read(&out, 0, &mut v)?;
    Ok(v)
}

/// Quantizes `x` (a multiple of 32 values) to the kernels' q8_1 layout: codes and `(d, d·Σq)`
/// per block.
pub fn quantize_q8_1(gpu: &Gpu, x: &[f32]) -> Result<(Vec<i8>, Vec<[f32; 2]>), ModelError> {
    let n = x.len();
    let xb = gpu.upload(x, "input")?;
    let aq = gpu.alloc(n, "codes")?;
    let ads = gpu.alloc(n / 32 * 8, "scales")?;
    model::quantize(gpu, xb.ptr, n, aq.ptr, ads.ptr)?;
    let mut q = vec![0i8; n];
    let mut ds = vec![[0f32; 2]; n / 32];
    gpu.read(&aq, 0, &mut q)?;
    gpu.read(&ads, 0, &mut ds)?;
    Ok((q, ds))
}

/// `W · x` through the decode mat-vec (activation quantized to q8_1 on the GPU first). Formats
/// without a kernel go through the upload's f16 widening, as a model's weights do.
pub fn matvec(
    gpu: &Gpu,
    ty: GgmlType,
    data: &[u8],
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Result<Vec<f32>, ModelError> {
    let w = upload_matrix(gpu, "weights", ty, data, rows, cols)?;
    let xb = gpu.upload(x, "input")?;
    let aq = gpu.alloc(cols, "codes")?;
    let ads = gpu.alloc(cols / 32 * 8, "scales")?;
    let out = gpu.alloc(rows * 4, "output")?;
    model::quantize(gpu, xb.ptr, cols, aq.ptr, ads.ptr)?;
    let q8 = MvIn {
        aq: aq.ptr,
        ads: ads.ptr,
    };
    model::matvec(gpu, &[(&w, out.ptr)], q8, 0, None)?;
    let mut v = vec![0f32; rows];
    gpu.read(&out, 0, &mut v)?;
    Ok(v)
}

/// `silu(G · x) * (U · x)`: the fused gate/up mat-vec.
pub fn matvec_swiglu(
    gpu: &Gpu,
    (ty_g, gate): (GgmlType, &[u8]),
    (ty_u, up): (GgmlType, &[u8]),
    rows: usize,
    cols: usize,
    x: &[f32],
) -> Result<Vec<f32>, ModelError> {
    let g = upload_matrix(gpu, "gate", ty_g, gate, rows, cols)?;
    let u = upload_matrix(gpu, "up", ty_u, up, rows, cols)?;
    let xb = gpu.upload(x, "input")?;
    let aq = gpu.alloc(cols, "codes")?;
    let ads = gpu.alloc(cols / 32 * 8, "scales")?;
    let out = gpu.alloc(rows * 4, "output")?;
    model::quantize(gpu, xb.ptr, cols, aq.ptr, ads.ptr)?;
    let q8 = MvIn {
        aq: aq.ptr,
        ads: ads.ptr,
    };
    model::matvec(gpu, &[(&g, out.ptr), (&u, 0)], q8, 2, None)?;
    let mut v = vec![0f32; rows];
    gpu.read(&out, 0, &mut v)?;
    Ok(v)
}

/// RMSNorm of `n` rows of width `dim`: the f32 output and the q8_1 codes/scales it also writes.
#[allow(clippy::type_complexity)] // three outputs of one kernel
pub fn rms_norm(
    gpu: &Gpu,
    x: &[f32],
    w: &[f32],
    eps: f32,
    n: usize,
    dim: usize,
) -> Result<(Vec<f32>, Vec<i8>, Vec<[f32; 2]>), ModelError> {
    let xb = gpu.upload(x, "input")?;
    let wb = gpu.upload(w, "weight")?;
    let out = gpu.alloc(n * dim * 4, "output")?;
    let aq = gpu.alloc(n * dim, "codes")?;
    let ads = gpu.alloc(n * dim / 32 * 8, "scales")?;
    model::rms_norm(
        gpu,
        xb.ptr,
        0,
        &wb,
        eps,
        (n, dim),
        (out.ptr, 0),
        (aq.ptr, ads.ptr),
    )?;
    let mut v = vec![0f32; n * dim];
    let mut q = vec![0i8; n * dim];
    let mut ds = vec![[0f32; 2]; n * dim / 32];
    gpu.read(&out, 0, &mut v)?;
    gpu.read(&aq, 0, &mut q)?;
    gpu.read(&ads, 0, &mut ds)?;
    Ok((v, q, ds))
}

/// The step rows of one sequence at positions `pos0..pos0 + n`: (token 0, position, sequence 0).
fn rows(gpu: &Gpu, pos0: usize, n: usize) -> Result<DevBuf, ModelError> {
    let io: Vec<i32> = (pos0..pos0 + n).flat_map(|p| [0, p as i32, 0]).collect();
    gpu.upload(&io, "rows")
}

/// The attention tests' cache of one sequence of `n_ctx` positions: a plane of its own, or with
/// `paged` a pool of blocks (one more than it needs) that its block table takes in reverse order,
/// so no position is where the plane of its own would keep it. Returns the geometry and the
/// table's buffer.
fn test_cache(
    gpu: &Gpu,
    shape: &AttnShape,
    n_ctx: usize,
    n_split: usize,
    paged: bool,
) -> Result<(Attn, Option<DevBuf>), ModelError> {
    use crate::backend::KV_BLOCK;
    if !paged {
        return Ok((Attn::new(shape, n_ctx, n_split), None));
    }
    let tlen = n_ctx.div_ceil(KV_BLOCK);
    let n_blocks = tlen + 1;
    let table: Vec<i32> = (0..tlen).map(|i| (n_blocks - 1 - i) as i32).collect();
    let tab = gpu.upload(&table, "block table")?;
    let a = Attn::new(shape, n_blocks * KV_BLOCK, n_split).paged(tab.ptr, tlen);
    Ok((a, Some(tab)))
}

/// Decode attention of the last of `n` tokens: q (`n × n_head × head_dim`), k and v (`n × kv_dim`)
/// before RoPE; all `n` go through RoPE into an f16 cache of `n_ctx` positions, then the last
/// token's query attends over positions `0..n` with `n_split` splits; `paged` as in
/// [`test_cache`]. Returns its output (`n_head × head_dim`).
#[allow(clippy::too_many_arguments)] // the op's operands
pub fn attention_decode(
    gpu: &Gpu,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    n: usize,
    shape: &AttnShape,
    (n_ctx, paged): (usize, bool),
    n_split: usize,
) -> Result<Vec<f32>, ModelError> {
    let (a, _table) = test_cache(gpu, shape, n_ctx, n_split, paged)?;
    a.check()?;
    let e = a.n_head * a.hd;
    let (qb, kb, vb) = (
        gpu.upload(q, "q")?,
        gpu.upload(k, "k")?,
        gpu.upload(v, "v")?,
    );
    let kc = gpu.alloc(a.n_head_kv * a.n_ctx * a.hd * 2, "k cache")?;
    let vc = gpu.alloc(a.n_head_kv * a.n_ctx * a.hd * 2, "v cache")?;
    let io = rows(gpu, 0, n)?;
    let part = gpu.alloc(a.n_head * n_split * (a.hd + 2) * 4, "partials")?;
    let counter = gpu.upload(&vec![0i32; a.n_head_kv * a.group_blocks()], "counters")?;
    let out = gpu.alloc(e * 4, "output")?;
    let aq = gpu.alloc(e, "codes")?;
    let ads = gpu.alloc(e / 32 * 8, "scales")?;
    // All n tokens through RoPE and into the cache (position 0 onwards).
    model::rope(gpu, &a, qb.ptr, n, a.n_head, io.ptr, false, 0)?;
    model::rope(gpu, &a, kb.ptr, n, a.n_head_kv, io.ptr, false, 0)?;
    model::kv_store(gpu, &a, (kb.ptr, vb.ptr), n, io.ptr, (kc.ptr, vc.ptr))?;
    // Then the last token's query, as a decode step runs it.
    model::attn_decode(
        gpu,
        &a,
        qb.at((n - 1) * e * 4),
        (kc.ptr, vc.ptr),
        io.at((n - 1) * 12),
        (part.ptr, counter.ptr),
        out.ptr,
        (aq.ptr, ads.ptr),
    )?;
    let mut o = vec![0f32; e];
    gpu.read(&out, 0, &mut o)?;
    Ok(o)
}

/// q, k and v of one token at `pos` (q and k rotated, f32) and the cache after (widened from
/// f16), two ways: the fused q/k/v mat-vec (RoPE and cache write in its epilogue) and the plain
/// mat-vecs followed by the RoPE and cache-store kernels. Weights `[wq, wk, wv]` of type `ty`,
/// input `x` normalized with `w` (by the RMSNorm kernel, into q8_1). Each way gives
/// `(q, k, v, k cache, v cache)`.
#[allow(clippy::type_complexity)] // two tuples of outputs
#[allow(clippy::too_many_arguments)] // the op's operands
pub fn qkv_rope(
    gpu: &Gpu,
    ty: GgmlType,
    ws: [&[u8]; 3],
    x: &[f32],
    w: &[f32],
    eps: f32,
    shape: &AttnShape,
    pos: usize,
) -> Result<[[Vec<f32>; 5]; 2], ModelError> {
    let n_ctx = pos + 3;
    let a = Attn::new(shape, n_ctx, 1);
    let (e, kvd, cols) = (a.n_head * a.hd, a.n_head_kv * a.hd, x.len());
    let wq = upload_matrix(gpu, "wq", ty, ws[0], e, cols)?;
    let wk = upload_matrix(gpu, "wk", ty, ws[1], kvd, cols)?;
    let wv = upload_matrix(gpu, "wv", ty, ws[2], kvd, cols)?;
    let (xb, wb) = (gpu.upload(x, "input")?, gpu.upload(w, "norm")?);
    let io = rows(gpu, pos, 1)?;
    let aq = gpu.alloc(cols, "codes")?;
    let ads = gpu.alloc(cols / 32 * 8, "scales")?;
    model::rms_norm(
        gpu,
        xb.ptr,
        0,
        &wb,
        eps,
        (1, cols),
        (0, 0),
        (aq.ptr, ads.ptr),
    )?;
    let norm = MvIn {
        aq: aq.ptr,
        ads: ads.ptr,
    };
    let cache = a.n_head_kv * n_ctx * a.hd;
    let mut res = Vec::new();
    for fused in [true, false] {
        let kc = gpu.upload(&vec![0u16; cache], "k cache")?;
        let vc = gpu.upload(&vec![0u16; cache], "v cache")?;
        let q = gpu.alloc(e * 4, "q")?;
        let k = gpu.alloc(kvd * 4, "k")?;
        let v = gpu.alloc(kvd * 4, "v")?;
        let outs = [(&wq, q.ptr), (&wk, k.ptr), (&wv, v.ptr)];
        if fused {
            let rope = RopeOut {
                io: io.ptr,
                kc: kc.ptr,
                vc: vc.ptr,
            };
            model::matvec(gpu, &outs, norm, 3, Some((&a, rope)))?;
        } else {
            model::matvec(gpu, &outs, norm, 0, None)?;
            model::rope(gpu, &a, q.ptr, 1, a.n_head, io.ptr, false, 0)?;
            model::rope(gpu, &a, k.ptr, 1, a.n_head_kv, io.ptr, false, 0)?;
            model::kv_store(gpu, &a, (k.ptr, v.ptr), 1, io.ptr, (kc.ptr, vc.ptr))?;
        }
        let f32s = |buf: &DevBuf, len: usize| -> Result<Vec<f32>, ModelError> {
            let mut h = vec![0f32; len];
            gpu.read(buf, 0, &mut h)?;
            Ok(h)
        };
        let widen = |buf: &DevBuf, len: usize| -> Result<Vec<f32>, ModelError> {
            let mut h = vec![0u16; len];
            gpu.read(buf, 0, &mut h)?;
            Ok(h.iter()
                .map(|&b| half::f16::from_bits(b).to_f32())
                .collect())
        };
        res.push([
            f32s(&q, e)?,
            f32s(&k, kvd)?,
            f32s(&v, kvd)?,
            widen(&kc, cache)?,
            widen(&vc, cache)?,
        ]);
    }
    let b = res.pop().expect("two");
    let a = res.pop().expect("two");
    Ok([a, b])
}

/// Prompt attention (the flash-attention kernel, sm_80+) of `n` new tokens after `n_past` earlier
/// ones: q (`(n_past + n) × n_head × head_dim`), k and v (`(n_past + n) × kv_dim`) before RoPE. All
/// tokens go through RoPE and into an f16 cache of `n_ctx` positions; the new tokens' queries
/// attend causally over positions `0..n_past + n`, as a prompt batch runs them; `paged` as in
/// [`test_cache`]. Returns the output
/// of the new tokens (`n × n_head × head_dim`, f32) and its f16 copy, or `None` on a card without
/// the kernel (before sm_80).
#[allow(clippy::too_many_arguments)] // the op's operands
#[allow(clippy::type_complexity)] // two outputs
pub fn attention_prompt(
    gpu: &Gpu,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    (n_past, n): (usize, usize),
    shape: &AttnShape,
    (n_ctx, paged): (usize, bool),
) -> Result<Option<(Vec<f32>, Vec<f32>)>, ModelError> {
    if gpu.cc_major < 8 {
        return Ok(None);
    }
    let (a, table) = test_cache(gpu, shape, n_ctx, 1, paged)?;
    a.check()?;
    let e = a.n_head * a.hd;
    let total = n_past + n;
    let (qb, kb, vb) = (
        gpu.upload(q, "q")?,
        gpu.upload(k, "k")?,
        gpu.upload(v, "v")?,
    );
    // Positions past the prompt hold NaN bits: the kernel must never let them into a result.
    let cache = vec![0x7e00u16; a.n_head_kv * a.n_ctx * a.hd];
    let kc = gpu.upload(&cache, "k cache")?;
    let vc = gpu.upload(&cache, "v cache")?;
    let io = rows(gpu, 0, total)?;
    let out = gpu.alloc(n * e * 4, "output")?;
    let out16 = gpu.alloc(n * e * 2, "f16 output")?;
    model::rope(gpu, &a, qb.ptr, total, a.n_head, io.ptr, false, 0)?;
    model::rope(gpu, &a, kb.ptr, total, a.n_head_kv, io.ptr, false, 0)?;
    model::kv_store(gpu, &a, (kb.ptr, vb.ptr), total, io.ptr, (kc.ptr, vc.ptr))?;
    model::attn_prompt(
        gpu,
        &a,
        (n, n_past),
        qb.at(n_past * e * 4),
        (kc.ptr, vc.ptr, table.as_ref().map_or(0, |t| t.ptr)),
        (out.ptr, out16.ptr),
    )?;
    let mut o = vec![0f32; n * e];
    gpu.read(&out, 0, &mut o)?;
    let mut h = vec![0u16; n * e];
    gpu.read(&out16, 0, &mut h)?;
    let h = h
        .iter()
        .map(|&b| half::f16::from_bits(b).to_f32())
        .collect();
    Ok(Some((o, h)))
}
