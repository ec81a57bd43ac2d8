//! [`Backend`] on wgpu: each op records one or two dispatches (see [`super::context`]); the
//! compound operations are overridden with the fused dispatches of `fused.rs`.

use std::sync::Arc;

use rustorch_gguf::{GgmlType, GgufFile};
use rustorch_quant::dispatch;

use super::context::{Bind, Context, Options};
use super::shaders::{self, MvShape, MATMUL_NT};
use crate::backend::{
    AttnShape, Backend, Batch, Device, KvSpec, RopeStyle, Step, KV_BLOCK, N_UBATCH,
};
use crate::ModelError;

mod fused;
use fused::{Fold, PendingRope, RopeOp};

/// f32 activations in a GPU buffer.
pub struct WgpuBuf {
    buf: wgpu::Buffer,
    id: u64,
    /// Capacity in f32 values.
    len: usize,
    /// Values the last op wrote from offset 0: what a read fetches at once.
    written: usize,
}

impl WgpuBuf {
    fn bind(&self) -> Bind<'_> {
        Bind {
            buf: &self.buf,
            id: self.id,
        }
    }
}

/// A weight on the GPU: a matrix in its block format, or an f32 vector (norms).
pub struct WgpuWeight {
    /// The rows in buffers of at most [`Context::weight_binding`] bytes: one part (all rows)
    /// where they fit, else parts of consecutive whole rows, each multiplied and looked up in by
    /// dispatches of its own.
    parts: Vec<Part>,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Pipelines of a matrix: decode matmul, prompt matmul, embedding, tiled prompt matmul (the
    /// decode mat-vec's are found by formats, [`WgpuBackend::matvec_pipe`]).
    pipes: Option<[usize; 4]>,
}

/// Rows `row0..row0 + rows` of a weight, in a buffer of their own.
struct Part {
    buf: wgpu::Buffer,
    id: u64,
    row0: usize,
    rows: usize,
}

impl Part {
    fn bind(&self) -> Bind<'_> {
        Bind {
            buf: &self.buf,
            id: self.id,
        }
    }
}

impl WgpuWeight {
    /// The buffer of a weight in one part (a vector, or a matrix that fits one binding).
    fn bind(&self) -> Bind<'_> {
        self.parts[0].bind()
    }

    fn chunked(&self) -> bool {
        self.parts.len() > 1
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }

    /// Buffers the weight's rows are split over (1 unless it is larger than one binding).
    pub fn parts(&self) -> usize {
        self.parts.len()
    }
}

/// The KV cache, f32, laid out as `kv_slot.wgsl` reads it. A paged layer (`spec.ring[layer]` 0)
/// is one pool of blocks shared by every sequence: position `p` of sequence `s` is in slot
/// `table[s][p / KV_BLOCK] * KV_BLOCK + p % KV_BLOCK`. A sliding-window layer keeps a ring of
/// `cap = spec.ring[layer]` slots per sequence: position `p` in slot `p % cap`.
pub struct WgpuKv {
    /// Per layer, the keys: paged `(n_head_kv, n_blocks * KV_BLOCK, head_dim)`, ring
    /// `(n_seq, n_head_kv, cap, head_dim)`.
    k: Vec<WgpuBuf>,
    /// Per layer, the values, laid out as the keys.
    v: Vec<WgpuBuf>,
    /// The block tables the kernels read, `(n_seq, table_len)` u32 (`u32::MAX`: not mapped).
    table: WgpuBuf,
    /// The host's copy of `table`, as [`Backend::map_blocks`] last set it.
    tables: Vec<u32>,
    spec: KvSpec,
    kv_dim: usize,
    head_dim: usize,
}

impl WgpuKv {
    /// `kv_slot.wgsl`'s words for layer `layer`: `kv_ring`, `kv_slots` (the pool's slots, or the
    /// ring's), `table_len`.
    fn slot_words(&self, layer: usize) -> [u32; 3] {
        let slots = match self.spec.ring[layer] {
            0 => self.spec.n_blocks * KV_BLOCK,
            cap => cap,
        };
        [
            self.spec.ring[layer] as u32,
            slots as u32,
            self.spec.table_len() as u32,
        ]
    }
}

/// Largest number of key splits of one decode attention.
const MAX_SPLIT: usize = 32;
/// Keys from which decode attention is split (below, the split's combining pass costs more).
const SPLIT_FROM: usize = 256;
/// Query rows up to which attention is split (a decode step of several sequences); more rows
/// fill the GPU with a workgroup per (head, row).
const SPLIT_ROWS: usize = 8;

/// The step's rows as the host keeps them; the kernels read the same values from
/// [`WgpuBackend::rows`].
#[derive(Default)]
struct StepRows {
    tokens: Vec<u32>,
    seqs: Vec<u32>,
    pos: Vec<u32>,
    /// Whether no two rows are of one sequence (one row, or a decode step of several sequences):
    /// then no row's attention reads another row's new key.
    distinct: bool,
}

pub struct WgpuBackend {
    cx: Context,
    /// Bound where a matmul has fewer than three weights or outputs: one read-only, three written.
    dummy: [WgpuBuf; 4],
    /// Whether an RMSNorm folds into the decode mat-vec after it (that kernel then binds ten
    /// storage buffers, which the adapter must allow).
    fold_norm: bool,
    /// Whether a decode attention may take in the RoPE and cache store before it (that kernel
    /// then binds ten storage buffers).
    fold_rope: bool,
    /// Attention partials of split-K decode: `(SPLIT_ROWS, n_head, MAX_SPLIT, head_dim + 2)`.
    part: Option<WgpuBuf>,
    /// The step's rows on the GPU, `(token, sequence, position, 0)` each, written once per step by
    /// [`Backend::begin_step`] and read by embed, RoPE, the cache store and attention.
    rows: WgpuBuf,
    step: StepRows,
    /// The RoPE and cache store of the last [`Backend::qkv_rope_store`], which a decode attention
    /// over that cache takes into its own dispatch while it is the last op recorded.
    rope_kv: Option<PendingRope>,
    /// Where the GPU argmax puts its index.
    argmax_out: WgpuBuf,
    /// The decode mat-vec's 8-bit activations (`quantize_q8.wgsl`), grown to the widest input.
    q8x: Option<WgpuBuf>,
    /// The last read: buffer id, first value, values.
    cache: Option<(u64, usize, Vec<f32>)>,
}

fn bind_of(b: &(wgpu::Buffer, u64)) -> Bind<'_> {
    Bind { buf: &b.0, id: b.1 }
}

/// Workgroups for `n` items of `per` each, folded into y past 32768 (the kernels' convention).
fn fold(n: usize, per: usize) -> [u32; 3] {
    let g = n.div_ceil(per).max(1);
    [g.min(32768) as u32, g.div_ceil(32768) as u32, 1]
}

fn fail(msg: String) -> ModelError {
    ModelError::Backend(msg)
}

/// The RoPE parameter words of the kernels that rotate (`rope.wgsl`): `n_rot`, `theta_scale`,
/// `neox`, `mscale`, `has_factors`.
fn rope_params(s: &AttnShape, has_factors: bool) -> [u32; 5] {
    let theta_scale = s.rope_freq_base.powf(-2.0 / s.n_rot as f32);
    [
        s.n_rot as u32,
        theta_scale.to_bits(),
        (s.rope == RopeStyle::Neox) as u32,
        s.rope_mscale.to_bits(),
        has_factors as u32,
    ]
}

impl WgpuBackend {
    pub fn new(opts: Options) -> Result<WgpuBackend, ModelError> {
        let mut cx = Context::new(&opts)?;
        let mut buf = |label: &str, len: usize| -> Result<WgpuBuf, ModelError> {
            let buf = cx.buffer(label, len as u64 * 4, wgpu::BufferUsages::empty())?;
            Ok(WgpuBuf {
                buf,
                id: cx.next_id(),
                len,
                written: 0,
            })
        };
        let dummy = [
            buf("unused binding", 1)?,
            buf("unused binding", 1)?,
            buf("unused binding", 1)?,
            buf("unused binding", 1)?,
        ];
        let rows = buf("step rows", 4 * N_UBATCH)?;
        let argmax_out = buf("argmax", 1)?;
        let fold_norm = cx.matvec && cx.limits.max_storage_buffers_per_shader_stage >= 10;
        let fold_rope = cx.limits.max_storage_buffers_per_shader_stage >= 10;
        Ok(WgpuBackend {
            fold_norm,
            fold_rope,
            cx,
            dummy,
            part: None,
            rows,
            step: StepRows::default(),
            rope_kv: None,
            argmax_out,
            q8x: None,
            cache: None,
        })
    }

    /// The adapter's name, type and driver.
    pub fn adapter(&self) -> &str {
        &self.cx.adapter
    }

    /// Ops recorded and not yet submitted (tests check that fusions happen).
    pub fn pending_ops(&self) -> usize {
        self.cx.pending()
    }

    /// Whether the kernels use subgroup operations.
    pub fn subgroups(&self) -> bool {
        self.cx.subgroups
    }

    /// The cooperative matrices the tiled prompt matmul uses, if any (see [`Options::coop`]).
    pub fn coop(&self) -> Option<shaders::Coop> {
        self.cx.coop
    }

    /// Whether the KV cache holds f16 values (else f32).
    pub fn kv_f16(&self) -> bool {
        self.cx.kv_f16
    }

    /// Whether a decode attention takes in the RoPE and cache store of the `qkv_rope_store`
    /// before it (adapters that let a kernel bind ten storage buffers).
    pub fn rope_folds(&self) -> bool {
        self.fold_rope
    }

    fn buf(&mut self, label: &str, len: usize) -> Result<WgpuBuf, ModelError> {
        let buf = self
            .cx
            .buffer(label, len as u64 * 4, wgpu::BufferUsages::empty())?;
        Ok(WgpuBuf {
            buf,
            id: self.cx.next_id(),
            len,
            written: len,
        })
    }

    /// A KV cache buffer of `len` values: f16 where the cache is (`Context::kv_f16`), else f32.
    fn kv_buf(&mut self, label: &str, len: usize) -> Result<WgpuBuf, ModelError> {
        let bytes = if self.cx.kv_f16 { len * 2 } else { len * 4 };
        let buf = self.cx.buffer(
            label,
            bytes.div_ceil(4) as u64 * 4,
            wgpu::BufferUsages::empty(),
        )?;
        Ok(WgpuBuf {
            buf,
            id: self.cx.next_id(),
            len,
            written: len,
        })
    }

    /// Uploads a `[rows, cols]` matrix of type `ty` from its GGUF bytes.
    pub fn upload_matrix(
        &mut self,
        name: &str,
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: &[u8],
    ) -> Result<WgpuWeight, ModelError> {
        let unsupported = || ModelError::UnsupportedType {
            name: name.to_string(),
            ty,
            backend: "wgpu",
        };
        let block = if matches!(ty, GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K) {
            256
        } else {
            32
        };
        if !shaders::FORMATS.contains(&ty) {
            return Err(unsupported());
        }
        if !cols.is_multiple_of(block) {
            return Err(ModelError::Backend(format!(
                "{name}: rows of {cols} are not whole {ty} blocks of {block}"
            )));
        }
        let row_bytes = ty.row_bytes(cols as u64).ok_or_else(unsupported)? as usize;
        if data.len() != rows * row_bytes {
            return Err(ModelError::Backend(format!(
                "{name}: {} bytes for {rows} rows of {cols} {ty} values ({} expected)",
                data.len(),
                rows * row_bytes
            )));
        }
        let parts = self.upload_parts(name, ty, (rows, cols), data)?;
        let sg = self.cx.subgroups;
        let k1 = format!("matmul/{ty}/nt=1/sg={sg}");
        let k8 = format!("matmul/{ty}/nt={MATMUL_NT}/sg={sg}");
        let access = [false, false, false, false, true, true, true, true];
        let p1 = self.cx.pipe(&k1, &access, || {
            shaders::compose(shaders::MATMUL, Some(ty), sg, 1)
        })?;
        let p8 = self.cx.pipe(&k8, &access, || {
            shaders::compose(shaders::MATMUL, Some(ty), sg, MATMUL_NT)
        })?;
        let pe = self
            .cx
            .pipe(&format!("embed/{ty}"), &[false, false, true], || {
                shaders::compose(shaders::EMBED, Some(ty), false, 1)
            })?;
        // The tiled matmul: by cooperative matrices where the `coop` option has them, else by
        // each invocation's sums (same bindings, grid and modes).
        let (f16, pf) = (self.cx.f16, self.cx.tile_prefetch);
        let pt = match self.cx.coop {
            Some(coop) => self.cx.pipe(
                &format!("matmul_coop/{ty}/{coop:?}/prefetch={pf}"),
                &access,
                || shaders::matmul_coop(ty, coop, pf),
            )?,
            None => self.cx.pipe(
                &format!("matmul_tile/{ty}/f16={f16}/prefetch={pf}"),
                &access,
                || shaders::matmul_tile(ty, f16, pf),
            )?,
        };
        if self.cx.matvec {
            // Built now rather than at the first token (mixed formats are built when first met).
            let blocks = shaders::has_block_dot(ty);
            let shape = self.cx.matvec_shapes.pick(1, rows, cols, blocks);
            self.matvec_pipe([ty; 3], false, shape)?;
            if self.fold_norm {
                self.matvec_pipe([ty; 3], true, shape)?;
            }
        }
        Ok(WgpuWeight {
            parts,
            ty,
            rows,
            cols,
            pipes: Some([p1, p8, pe, pt]),
        })
    }

    /// The `rows` rows of `cols` values of type `ty` (GGUF bytes `data`, whole rows checked by
    /// the caller) in buffers of at most [`Context::weight_binding`] bytes: one if they fit, else
    /// as few parts of as many rows as that allows, of as near equal sizes as whole rows give.
    /// An error if one row alone is larger.
    fn upload_parts(
        &mut self,
        name: &str,
        ty: GgmlType,
        (rows, cols): (usize, usize),
        data: &[u8],
    ) -> Result<Vec<Part>, ModelError> {
        let row_bytes = data.len() / rows.max(1);
        // A row as the kernels read it: [`shaders::repack`] pads some formats' blocks.
        let packed_row = shaders::packed_row_bytes(ty, row_bytes).ok_or_else(|| {
            ModelError::UnsupportedType {
                name: name.to_string(),
                ty,
                backend: "wgpu",
            }
        })?;
        // A buffer holds its rows, repack's spare word, rounded up to 16 bytes.
        let limit = self.cx.weight_binding / 16 * 16;
        let most = (limit.saturating_sub(4) / packed_row.max(1) as u64) as usize;
        if most == 0 {
            return Err(fail(format!(
                "{name}: one row of {cols} {ty} values takes {packed_row} bytes, more than one buffer may hold on this GPU ({limit} bytes)"
            )));
        }
        let n_parts = rows.div_ceil(most).max(1);
        let per = rows.div_ceil(n_parts).max(1);
        let mut parts = Vec::with_capacity(n_parts);
        let mut row0 = 0;
        loop {
            let part_rows = per.min(rows - row0);
            let bytes = &data[row0 * row_bytes..(row0 + part_rows) * row_bytes];
            let words = shaders::repack(ty, bytes)
                .ok_or_else(|| fail(format!("{name}: rows are not whole {ty} blocks")))?;
            let label = if n_parts == 1 {
                name.to_string()
            } else {
                format!("{name} rows {row0}..{}", row0 + part_rows)
            };
            let buf =
                self.cx
                    .buffer(&label, words.len() as u64 * 4, wgpu::BufferUsages::empty())?;
            self.cx.write(&buf, 0, bytemuck::cast_slice(&words));
            parts.push(Part {
                buf,
                id: self.cx.next_id(),
                row0,
                rows: part_rows,
            });
            row0 += part_rows;
            if row0 >= rows {
                return Ok(parts);
            }
        }
    }

    /// The decode mat-vec over 8-bit activations of weights of formats `fmts` (each with
    /// [`shaders::has_q8_dot`]).
    pub(super) fn matvec_q8_pipe(
        &mut self,
        fmts: [GgmlType; 3],
        shape: MvShape,
    ) -> Result<usize, ModelError> {
        // w0, w1, w2, x (8-bit), out0, out1, out2, res
        let access = [false, false, false, false, true, true, true, true];
        let key = format!("matvec_q8/{},{},{}/{shape}", fmts[0], fmts[1], fmts[2]);
        self.cx
            .pipe(&key, &access, || shaders::matvec_q8(fmts, shape))
    }

    /// `cols` values of `x` (or, with `norm`, the RMSNorm of the norm's input, which is then also
    /// written to `x`) as 8-bit blocks of 32 and their scales, for [`Self::matvec_q8_pipe`]'s
    /// kernels: the buffer's handle.
    pub(super) fn quantize_q8(
        &mut self,
        x: &WgpuBuf,
        cols: usize,
        norm: Option<(&WgpuBuf, &WgpuWeight, f32)>,
    ) -> Result<(wgpu::Buffer, u64), ModelError> {
        let words = cols / 4 + cols / 32;
        if self.q8x.as_ref().is_none_or(|b| b.len < words) {
            self.q8x = Some(self.buf("q8 activations", words)?);
        }
        let q = self.q8x.as_ref().map(|b| (b.buf.clone(), b.id));
        let q = q.ok_or_else(|| fail("no 8-bit activation buffer".into()))?;
        let pipe = self.simple(
            "quantize_q8",
            shaders::QUANTIZE_Q8,
            &[false, false, true, true],
        )?;
        let owned = |b: Bind| (b.buf.clone(), b.id);
        let (input, nw, xn, flag, eps) = match norm {
            Some((nx, nw, eps)) => (owned(nx.bind()), owned(nw.bind()), owned(x.bind()), 1, eps),
            None => (
                owned(x.bind()),
                owned(self.dummy[0].bind()),
                owned(self.dummy[1].bind()),
                0,
                0.0,
            ),
        };
        let binds = [bind_of(&input), bind_of(&nw), bind_of(&xn), bind_of(&q)];
        self.record(
            pipe,
            &binds,
            &[cols as u32, flag, eps.to_bits(), 0],
            [1, 1, 1],
        )?;
        Ok(q)
    }

    /// The decode mat-vec over weights of formats `fmts`, with the RMSNorm folded in if `norm`.
    pub(super) fn matvec_pipe(
        &mut self,
        fmts: [GgmlType; 3],
        norm: bool,
        shape: MvShape,
    ) -> Result<usize, ModelError> {
        // w0, w1, w2, x, out0, out1, out2, res (+ the norm's weight and output)
        let access = [
            false, false, false, false, true, true, true, true, false, true,
        ];
        let key = format!(
            "matvec/{},{},{}/norm={norm}/{shape}",
            fmts[0], fmts[1], fmts[2],
        );
        self.cx
            .pipe(&key, &access[..if norm { 10 } else { 8 }], || {
                shaders::matvec_with(fmts, norm, shape)
            })
    }

    /// Uploads an f32 vector.
    pub fn upload_vector(&mut self, name: &str, v: &[f32]) -> Result<WgpuWeight, ModelError> {
        let buf = self
            .cx
            .buffer(name, v.len() as u64 * 4, wgpu::BufferUsages::empty())?;
        self.cx.write(&buf, 0, bytemuck::cast_slice(v));
        Ok(WgpuWeight {
            parts: vec![Part {
                buf,
                id: self.cx.next_id(),
                row0: 0,
                rows: 1,
            }],
            ty: GgmlType::F32,
            rows: 1,
            cols: v.len(),
            pipes: None,
        })
    }

    /// Copies host values into a buffer (tests, and anything that starts from the host).
    pub fn write(&mut self, x: &mut WgpuBuf, offset: usize, v: &[f32]) -> Result<(), ModelError> {
        if offset + v.len() > x.len {
            return Err(ModelError::Backend("write past the end of a buffer".into()));
        }
        // Queue writes land before the next submission: submit what is recorded first so the
        // write is ordered after it.
        self.cx.flush()?;
        self.cx
            .write(&x.buf, offset as u64 * 4, bytemuck::cast_slice(v));
        self.cache = None;
        Ok(())
    }

    /// The pipeline of a kernel that takes no weight format.
    fn simple(&mut self, key: &str, src: &str, writes: &[bool]) -> Result<usize, ModelError> {
        let sg = self.cx.subgroups;
        let kv16 = self.cx.kv_f16;
        self.cx
            .pipe(&format!("{key}/sg={sg}/kv16={kv16}"), writes, || {
                shaders::plain(src, sg, kv16)
            })
    }

    fn record(
        &mut self,
        pipe: usize,
        bufs: &[Bind],
        params: &[u32],
        size: [u32; 3],
    ) -> Result<u64, ModelError> {
        self.cache = None;
        self.cx.dispatch(pipe, bufs, params, size)
    }

    /// Whether every `(needed, capacity)` pair fits; an error naming `op` if not. The kernels run
    /// without per-access bounds checks, so each op checks its extents here.
    fn fits(op: &str, extents: &[(usize, usize)]) -> Result<(), ModelError> {
        match extents.iter().find(|(need, have)| need > have) {
            None => Ok(()),
            Some((need, have)) => Err(fail(format!(
                "{op}: needs {need} values of a buffer of {have}"
            ))),
        }
    }

    /// Checks that the step has `n` rows and that each of them is in `kv` (its sequence and its
    /// position), as the kernels index the cache by them unchecked.
    fn check_rows(&self, op: &str, kv: &WgpuKv, n: usize) -> Result<(), ModelError> {
        if n == 0 || n > self.step.pos.len() {
            return Err(fail(format!(
                "{op} of {n} rows in a step of {}",
                self.step.pos.len()
            )));
        }
        let (n_seq, n_ctx) = (kv.spec.n_seq, kv.spec.seq_ctx);
        let mut rows = self.step.seqs[..n].iter().zip(&self.step.pos[..n]);
        if let Some((s, p)) = rows.find(|&(&s, &p)| s as usize >= n_seq || p as usize >= n_ctx) {
            return Err(fail(format!(
                "{op}: sequence {s} at position {p} is outside the cache of {n_seq} sequences of {n_ctx}"
            )));
        }
        Ok(())
    }

    /// Checks that `shape` is the shape of the cache `kv` and one the attention kernel takes.
    fn check_shape(op: &str, kv: &WgpuKv, shape: &AttnShape) -> Result<(), ModelError> {
        let hd = shape.head_dim;
        if hd != kv.head_dim || shape.n_head_kv * hd != kv.kv_dim {
            return Err(fail(format!(
                "{op}: {} KV heads of {hd} for a cache of {} values of heads of {}",
                shape.n_head_kv, kv.kv_dim, kv.head_dim
            )));
        }
        if hd > 256
            || !hd.is_multiple_of(16)
            || shape.n_head_kv == 0
            || !shape.n_head.is_multiple_of(shape.n_head_kv)
        {
            return Err(fail(format!(
                "{op}: head_dim {hd} is over 256 or not a multiple of 16, or uneven GQA groups ({} heads, {} KV heads)",
                shape.n_head, shape.n_head_kv
            )));
        }
        Ok(())
    }

    /// Checks RoPE's dims and its frequency factors (a vector of `n_rot / 2` at least), which the
    /// kernels index unchecked.
    fn check_rope(
        op: &str,
        shape: &AttnShape,
        factors: Option<&WgpuWeight>,
    ) -> Result<(), ModelError> {
        let (hd, n_rot) = (shape.head_dim, shape.n_rot);
        if n_rot > hd || !n_rot.is_multiple_of(2) || !hd.is_multiple_of(2) {
            return Err(fail(format!(
                "{op}: RoPE of {n_rot} dims of heads of {hd} (an even number, up to head_dim)"
            )));
        }
        match factors {
            Some(f) if f.pipes.is_some() || f.cols < n_rot / 2 => Err(fail(format!(
                "{op}: RoPE frequency factors: {} values for {} pairs",
                f.rows * f.cols,
                n_rot / 2
            ))),
            _ => Ok(()),
        }
    }

    /// Records the RoPE of `r` (queries, and keys if any), storing keys and values into the cache
    /// when `r.store` names them; returns the op's serial number.
    fn record_rope(&mut self, r: &RopeOp) -> Result<u64, ModelError> {
        let pipe = self.simple(
            "rope_kv",
            shaders::ROPE_KV,
            &[true, true, false, true, true, false, false, false],
        )?;
        let s = &r.shape;
        let [n_rot, theta_scale, neox, mscale, has_factors] = rope_params(s, r.factors.is_some());
        let [kv_ring, kv_slots, table_len] = r.store.map_or([0; 3], |(_, kv, l)| kv.slot_words(l));
        let params = [
            r.n as u32,
            r.n_head as u32,
            r.n_head_kv as u32,
            s.head_dim as u32,
            n_rot,
            theta_scale,
            r.store.is_some() as u32,
            neox,
            mscale,
            has_factors,
            kv_ring,
            kv_slots,
            table_len,
        ];
        let k = r.k.map_or(self.dummy[1].bind(), |k| k.bind());
        let (v, kc, vc, table) = match r.store {
            Some((v, kv, layer)) => (
                v.bind(),
                kv.k[layer].bind(),
                kv.v[layer].bind(),
                kv.table.bind(),
            ),
            None => (
                self.dummy[0].bind(),
                self.dummy[2].bind(),
                self.dummy[3].bind(),
                self.dummy[0].bind(),
            ),
        };
        let rows = r.n * (r.n_head + r.n_head_kv);
        let size = [
            (s.head_dim / 2).div_ceil(64) as u32,
            rows.min(32768) as u32,
            rows.div_ceil(32768) as u32,
        ];
        let f = r.factors.map_or(self.dummy[0].bind(), |f| f.bind());
        let binds = [r.q.bind(), k, v, kc, vc, self.rows.bind(), f, table];
        self.cache = None;
        self.cx.dispatch(pipe, &binds, &params, size)
    }
}

impl Backend for WgpuBackend {
    type Buf = WgpuBuf;
    type Weight = WgpuWeight;
    type Kv = WgpuKv;

    fn device(&self) -> Device {
        self.cx.kind
    }

    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<WgpuWeight, ModelError> {
        let info = file
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let data = file.tensor_data(info);
        match info.dims.len() {
            1 => {
                let mut v = vec![0f32; info.dims[0] as usize];
                if info.ty == GgmlType::F32 {
                    for (x, b) in v.iter_mut().zip(data.chunks_exact(4)) {
                        *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                } else {
                    dispatch::dequantize_row(info.ty, data, &mut v).map_err(|_| {
                        ModelError::UnsupportedType {
                            name: name.to_string(),
                            ty: info.ty,
                            backend: "wgpu",
                        }
                    })?;
                }
                self.upload_vector(name, &v)
            }
            2 => self.upload_matrix(
                name,
                info.ty,
                info.dims[1] as usize,
                info.dims[0] as usize,
                data,
            ),
            _ => Err(ModelError::TensorShape {
                name: name.to_string(),
                expected: "a matrix".into(),
                actual: format!("{:?}", info.dims),
            }),
        }
    }

    fn upload_rows(
        &mut self,
        file: &Arc<GgufFile>,
        name: &str,
        rows: std::ops::Range<usize>,
    ) -> Result<WgpuWeight, ModelError> {
        let m = crate::backend::matrix_rows(file, name, Some(rows), "wgpu")?;
        let data = &file.tensor_data(m.info)[m.bytes];
        self.upload_matrix(name, m.info.ty, m.rows, m.cols, data)
    }

    fn alloc(&mut self, len: usize) -> Result<WgpuBuf, ModelError> {
        self.buf("activations", len)
    }

    fn alloc_kv(&mut self, spec: &KvSpec) -> Result<WgpuKv, ModelError> {
        let (n_seq, n_ctx) = (spec.n_seq, spec.seq_ctx);
        let kv_dim = spec.n_head_kv * spec.head_dim;
        let too_big = |why: String| {
            fail(format!(
                "cannot allocate the KV cache for {n_seq} sequences of {n_ctx} tokens ({why}): use a smaller -c"
            ))
        };
        // The kernels clamp their table and pool indices to the last entry and block: there must
        // be one.
        if n_seq == 0 || n_ctx == 0 || (spec.ring.contains(&0) && spec.n_blocks == 0) {
            return Err(fail(format!(
                "a KV cache of {n_seq} sequences of {n_ctx} positions and {} blocks holds nothing",
                spec.n_blocks
            )));
        }
        // The attention kernel binds nine storage buffers (ten with the RoPE folded in).
        let most = self.cx.limits.max_storage_buffers_per_shader_stage;
        if most < 9 {
            return Err(fail(format!(
                "the attention kernel binds 9 storage buffers, and this GPU lets a kernel bind {most}"
            )));
        }
        // Each layer's keys (and values) are one binding: a pool or rings larger than the GPU
        // lets one buffer bind are refused here, with their size, before anything is allocated.
        let max = self.cx.max_buffer();
        // Values of `bytes` bytes each: u32 table entries, f16 or f32 cache values.
        let kv_bytes = if self.cx.kv_f16 { 2 } else { 4 };
        let words = |slots: Option<usize>, per: usize, bytes: u64| {
            slots
                .and_then(|s| s.checked_mul(per))
                .filter(|&w| w as u64 * bytes <= max)
        };
        let table_len = spec.table_len();
        let n_table = words(n_seq.checked_mul(table_len), 1, 4).ok_or_else(|| {
            too_big(format!(
                "block tables of {n_seq} x {table_len} entries exceed the {} MiB one buffer may bind on this GPU",
                max >> 20
            ))
        })?;
        let mut lens = Vec::with_capacity(spec.ring.len());
        for &ring in &spec.ring {
            let (slots, what) = match ring {
                0 => (spec.n_blocks.checked_mul(KV_BLOCK), "a pool of"),
                cap => (cap.checked_mul(n_seq), "rings of"),
            };
            let len = words(slots, kv_dim, kv_bytes).ok_or_else(|| {
                too_big(format!(
                    "a layer's keys, {what} {} slots of {kv_dim} values, exceed the {} MiB one buffer may bind on this GPU",
                    slots.map_or("too many".into(), |s| s.to_string()),
                    max >> 20
                ))
            })?;
            lens.push(len);
        }
        let mut k = Vec::with_capacity(lens.len());
        let mut v = Vec::with_capacity(lens.len());
        for len in lens {
            let mut one = |label| self.kv_buf(label, len).map_err(|e| too_big(e.to_string()));
            k.push(one("kv cache keys")?);
            v.push(one("kv cache values")?);
        }
        let mut tables = vec![u32::MAX; n_table];
        if spec.side_by_side() {
            for (i, b) in tables.iter_mut().enumerate() {
                *b = spec.own_block(i / table_len, i % table_len);
            }
        }
        let table = self.buf("kv block tables", n_table)?;
        self.cx.write(&table.buf, 0, bytemuck::cast_slice(&tables));
        Ok(WgpuKv {
            k,
            v,
            table,
            tables,
            spec: spec.clone(),
            kv_dim,
            head_dim: spec.head_dim,
        })
    }

    fn map_blocks(
        &mut self,
        kv: &mut WgpuKv,
        seq: usize,
        first: usize,
        blocks: &[u32],
    ) -> Result<(), ModelError> {
        kv.spec.check_map(seq, first, blocks)?;
        let at = seq * kv.spec.table_len() + first;
        let entries = &mut kv.tables[at..at + blocks.len()];
        if entries == blocks {
            return Ok(());
        }
        // Queue writes land before the next submission: what is recorded goes first, so that it
        // still reads the entries it was recorded with.
        self.cx.flush()?;
        entries.copy_from_slice(blocks);
        self.cx
            .write(&kv.table.buf, at as u64 * 4, bytemuck::cast_slice(blocks));
        Ok(())
    }

    fn begin_step(&mut self, batch: &Batch, _head: &[u32]) -> Result<Step, ModelError> {
        let n = batch.len();
        if batch.seqs.len() != n || batch.pos.len() != n {
            return Err(ModelError::BadBatch(format!(
                "{n} tokens but {} sequence ids and {} positions",
                batch.seqs.len(),
                batch.pos.len()
            )));
        }
        if n > self.rows.len / 4 {
            return Err(fail(format!(
                "a step of {n} rows (the wgpu backend takes {} at most)",
                self.rows.len / 4
            )));
        }
        // The rows buffer is written by the queue, which runs before the next submission: what
        // the previous step left recorded goes first, so that it still reads its own rows.
        self.cx.flush()?;
        self.rope_kv = None;
        let s = &mut self.step;
        s.tokens.clear();
        s.tokens.extend_from_slice(batch.tokens);
        s.seqs.clear();
        s.seqs.extend_from_slice(batch.seqs);
        s.pos.clear();
        s.pos.extend_from_slice(batch.pos);
        let mut seen = s.seqs.clone();
        seen.sort_unstable();
        seen.dedup();
        s.distinct = seen.len() == n;
        let words: Vec<u32> = (0..n)
            .flat_map(|t| [batch.tokens[t], batch.seqs[t], batch.pos[t], 0])
            .collect();
        if !words.is_empty() {
            self.cx
                .write(&self.rows.buf, 0, bytemuck::cast_slice(&words));
        }
        Ok(Step::Record)
    }

    fn end_step(&mut self, ok: bool) -> Result<(), ModelError> {
        if !ok {
            // What a failed forward pass left recorded is not run.
            self.cx.discard();
            self.rope_kv = None;
        }
        Ok(())
    }

    fn embed(&mut self, table: &WgpuWeight, n: usize, out: &mut WgpuBuf) -> Result<(), ModelError> {
        let Some([_, _, pipe, _]) = table.pipes else {
            return Err(fail("embedding table must be a matrix".into()));
        };
        let tokens = self.step.tokens.get(..n).ok_or_else(|| {
            fail(format!(
                "embed of {n} rows in a step of {}",
                self.step.tokens.len()
            ))
        })?;
        crate::check_tokens(tokens, table.rows)?;
        Self::fits("embed", &[(n * table.cols, out.len)])?;
        let size = [(table.cols / 32).div_ceil(64) as u32, n as u32, 1];
        let rows = (self.rows.buf.clone(), self.rows.id);
        // A table in parts: a dispatch per part, each writing the rows whose token it holds.
        for part in &table.parts {
            let params = [
                table.rows as u32,
                table.cols as u32,
                n as u32,
                part.row0 as u32,
                part.rows as u32,
            ];
            self.record(
                pipe,
                &[part.bind(), bind_of(&rows), out.bind()],
                &params,
                size,
            )?;
        }
        out.written = n * table.cols;
        Ok(())
    }

    fn rms_norm(
        &mut self,
        x: &WgpuBuf,
        weight: &WgpuWeight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        if !dim.is_multiple_of(4) {
            return Err(fail(format!(
                "rms_norm: width {dim} is not a multiple of 4"
            )));
        }
        Self::fits(
            "rms_norm",
            &[(n * dim, x.len), (n * dim, out.len), (dim, weight.cols)],
        )?;
        let p = self.simple("rms_norm", shaders::RMS_NORM, &[false, false, true])?;
        self.record(
            p,
            &[x.bind(), weight.bind(), out.bind()],
            &[dim as u32, eps.to_bits()],
            [n as u32, 1, 1],
        )?;
        out.written = n * dim;
        Ok(())
    }

    fn matmul(
        &mut self,
        w: &WgpuWeight,
        x: &WgpuBuf,
        n: usize,
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        self.matmul_group(&[w], x, n, &mut [out], Fold::NONE)
    }

    fn matmuls(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        self.matmul_runs(ws, x, n, outs, None)
    }

    fn rope(
        &mut self,
        x: &mut WgpuBuf,
        n: usize,
        n_heads: usize,
        shape: &AttnShape,
        factors: Option<&WgpuWeight>,
    ) -> Result<(), ModelError> {
        Self::check_rope("rope", shape, factors)?;
        Self::fits(
            "rope",
            &[
                (n * n_heads * shape.head_dim, x.len),
                (shape.n_rot, shape.head_dim),
                (n, self.step.pos.len()),
            ],
        )?;
        self.record_rope(&RopeOp {
            q: &*x,
            k: None,
            n,
            n_head: n_heads,
            n_head_kv: 0,
            shape: *shape,
            factors,
            store: None,
        })?;
        Ok(())
    }

    fn kv_store(
        &mut self,
        kv: &mut WgpuKv,
        layer: usize,
        k: &WgpuBuf,
        v: &WgpuBuf,
        n: usize,
    ) -> Result<(), ModelError> {
        self.check_rows("kv_store", kv, n)?;
        Self::fits(
            "kv_store",
            &[
                (n * kv.kv_dim, k.len),
                (n * kv.kv_dim, v.len),
                (layer + 1, kv.k.len()),
            ],
        )?;
        let p = self.simple(
            "kv_store",
            shaders::KV_STORE,
            &[false, false, true, true, false, false],
        )?;
        let [kv_ring, kv_slots, table_len] = kv.slot_words(layer);
        let params = [
            n as u32,
            kv.kv_dim as u32,
            kv.head_dim as u32,
            kv.spec.n_head_kv as u32,
            kv_ring,
            kv_slots,
            table_len,
        ];
        let size = [kv.kv_dim.div_ceil(64) as u32, n as u32, 1];
        let rows = (self.rows.buf.clone(), self.rows.id);
        self.record(
            p,
            &[
                k.bind(),
                v.bind(),
                kv.k[layer].bind(),
                kv.v[layer].bind(),
                bind_of(&rows),
                kv.table.bind(),
            ],
            &params,
            size,
        )?;
        Ok(())
    }

    fn attention(
        &mut self,
        q: &WgpuBuf,
        kv: &WgpuKv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        self.attend(q, kv, layer, n, shape, out)
    }

    fn geglu(&mut self, gate: &mut WgpuBuf, up: &WgpuBuf, len: usize) -> Result<(), ModelError> {
        Self::fits("geglu", &[(len, gate.len), (len, up.len)])?;
        let p = self.simple("geglu", shaders::GEGLU, &[true, false])?;
        self.record(p, &[gate.bind(), up.bind()], &[len as u32], fold(len, 256))?;
        Ok(())
    }

    fn add_bias(
        &mut self,
        x: &mut WgpuBuf,
        bias: &WgpuWeight,
        n: usize,
        dim: usize,
    ) -> Result<(), ModelError> {
        if bias.pipes.is_some() || bias.cols != dim || dim == 0 {
            return Err(fail(format!(
                "add_bias: a bias of {} values for rows of {dim}",
                bias.rows * bias.cols
            )));
        }
        Self::fits("add_bias", &[(n * dim, x.len)])?;
        let p = self.simple("add_bias", shaders::ADD_BIAS, &[true, false])?;
        self.record(
            p,
            &[x.bind(), bias.bind()],
            &[(n * dim) as u32, dim as u32],
            fold(n * dim, 256),
        )?;
        Ok(())
    }

    fn scale(&mut self, x: &mut WgpuBuf, s: f32, len: usize) -> Result<(), ModelError> {
        Self::fits("scale", &[(len, x.len)])?;
        let p = self.simple("scale", shaders::SCALE, &[true])?;
        self.record(p, &[x.bind()], &[len as u32, s.to_bits()], fold(len, 256))?;
        Ok(())
    }

    fn swiglu(&mut self, gate: &mut WgpuBuf, up: &WgpuBuf, len: usize) -> Result<(), ModelError> {
        Self::fits("swiglu", &[(len, gate.len), (len, up.len)])?;
        let p = self.simple("swiglu", shaders::SWIGLU, &[true, false])?;
        self.record(p, &[gate.bind(), up.bind()], &[len as u32], fold(len, 256))?;
        Ok(())
    }

    fn add(&mut self, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) -> Result<(), ModelError> {
        Self::fits("add", &[(len, x.len), (len, y.len)])?;
        let p = self.simple("add", shaders::ADD, &[true, false])?;
        self.record(p, &[x.bind(), y.bind()], &[len as u32], fold(len, 256))?;
        Ok(())
    }

    fn copy_within(
        &mut self,
        x: &mut WgpuBuf,
        src: usize,
        dst: usize,
        len: usize,
    ) -> Result<(), ModelError> {
        Self::fits("copy_within", &[(src + len, x.len), (dst + len, x.len)])?;
        let p = self.simple("copy", shaders::COPY, &[true])?;
        self.record(
            p,
            &[x.bind()],
            &[len as u32, src as u32, dst as u32],
            fold(len, 256),
        )?;
        x.written = x.written.max(dst + len);
        Ok(())
    }

    fn read(&mut self, x: &WgpuBuf, offset: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let end = offset + out.len();
        if end > x.len {
            return Err(fail("read past the end of a buffer".into()));
        }
        if let Some((id, first, data)) = &self.cache {
            if *id == x.id && offset >= *first && end <= first + data.len() {
                out.copy_from_slice(&data[offset - first..end - first]);
                return Ok(());
            }
        }
        // Fetch what the last op wrote from here on, so that reading logits row by row costs
        // one transfer.
        let last = end.max(x.written.min(x.len));
        let bytes = self
            .cx
            .read(&x.buf, offset as u64 * 4, (last - offset) as u64 * 4)?;
        let data: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes[..(last - offset) * 4]);
        out.copy_from_slice(&data[..out.len()]);
        self.cache = Some((x.id, offset, data));
        Ok(())
    }

    /// On the GPU: only the index crosses to the host.
    fn argmax(&mut self, x: &WgpuBuf, offset: usize, len: usize) -> Result<u32, ModelError> {
        if len == 0 || offset + len > x.len {
            return Err(fail(format!(
                "argmax of {len} values from {offset} of a buffer of {}",
                x.len
            )));
        }
        let p = self.simple("argmax", shaders::ARGMAX, &[false, true])?;
        let out = (self.argmax_out.buf.clone(), self.argmax_out.id);
        self.record(
            p,
            &[x.bind(), bind_of(&out)],
            &[len as u32, offset as u32],
            [1, 1, 1],
        )?;
        let bytes = self.cx.read(&out.0, 0, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    fn norm_matmuls(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut WgpuBuf,
        ws: &[&WgpuWeight],
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        self.fused_norm_matmuls(x, norm, eps, (n, dim), xb, ws, outs)
    }

    fn qkv_rope_store(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut WgpuBuf,
        wqkv: [&WgpuWeight; 3],
        qkv: [&mut WgpuBuf; 3],
        kv: &mut WgpuKv,
        layer: usize,
        shape: &AttnShape,
        factors: Option<&WgpuWeight>,
    ) -> Result<(), ModelError> {
        self.fused_qkv_rope_store(
            x,
            norm,
            eps,
            (n, dim),
            xb,
            wqkv,
            qkv,
            kv,
            layer,
            (shape, factors),
        )
    }

    fn matmul_add(
        &mut self,
        w: &WgpuWeight,
        a: &WgpuBuf,
        (n, dim): (usize, usize),
        x: &mut WgpuBuf,
        tmp: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        self.fused_matmul_add(w, a, (n, dim), x, tmp)
    }

    fn ffn_swiglu(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim, n_ff): (usize, usize, usize),
        xb: &mut WgpuBuf,
        w: [&WgpuWeight; 2],
        gate: &mut WgpuBuf,
        up: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        self.fused_ffn_swiglu(x, norm, eps, (n, dim, n_ff), xb, w, gate, up)
    }
}
