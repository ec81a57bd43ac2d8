//! [`Backend`] on wgpu: each op records one or two dispatches (see [`super::context`]).

use std::sync::Arc;

use rustorch_gguf::{GgmlType, GgufFile};
use rustorch_quant::dispatch;

use super::context::{Bind, Context, Options, TOKEN_CAP};
use super::shaders::{self, MvShape, MATMUL_NT};
use crate::backend::{AttnShape, Backend, Device};
use crate::ModelError;

mod fused;
use fused::{LastMatmul, LastNorm, LastRope, LastRopeKv};

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
    buf: wgpu::Buffer,
    id: u64,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    /// Pipelines of a matrix: decode matmul, prompt matmul, embedding (the decode mat-vec's are
    /// found by formats, [`WgpuBackend::matvec_pipe`]).
    pipes: Option<[usize; 3]>,
}

impl WgpuWeight {
    fn bind(&self) -> Bind<'_> {
        Bind {
            buf: &self.buf,
            id: self.id,
        }
    }

    pub fn ty(&self) -> GgmlType {
        self.ty
    }
}

/// The KV cache: per layer, keys and values as `(n_head_kv, n_ctx, head_dim)` f32.
pub struct WgpuKv {
    k: Vec<WgpuBuf>,
    v: Vec<WgpuBuf>,
    n_ctx: usize,
    kv_dim: usize,
    head_dim: usize,
}

/// Largest number of key splits of one decode attention.
const MAX_SPLIT: usize = 32;
/// Keys from which decode attention is split (below, the split's combining pass costs more).
const SPLIT_FROM: usize = 256;

pub struct WgpuBackend {
    cx: Context,
    last_rope: Option<LastRope>,
    /// The last RoPE with its cache store, for the decode attention to take in.
    last_rope_kv: Option<LastRopeKv>,
    /// Bound where a matmul has fewer than three weights or outputs: one read-only, three written.
    dummy: [WgpuBuf; 4],
    last_mm: Option<LastMatmul>,
    last_norm: Option<LastNorm>,
    /// Whether an RMSNorm folds into the decode mat-vec after it (that kernel then binds ten
    /// storage buffers, which the adapter must allow).
    fold_norm: bool,
    /// Attention partials of split-K decode: `(n_head, MAX_SPLIT, head_dim + 2)`.
    part: Option<WgpuBuf>,
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

impl WgpuBackend {
    pub fn new(opts: Options) -> Result<WgpuBackend, ModelError> {
        let mut cx = Context::new(&opts)?;
        let mut dummy = || -> Result<WgpuBuf, ModelError> {
            let buf = cx.buffer("unused binding", 4, wgpu::BufferUsages::empty())?;
            Ok(WgpuBuf {
                buf,
                id: cx.next_id(),
                len: 1,
                written: 0,
            })
        };
        let dummy = [dummy()?, dummy()?, dummy()?, dummy()?];
        let fold_norm = cx.matvec && cx.limits.max_storage_buffers_per_shader_stage >= 10;
        Ok(WgpuBackend {
            fold_norm,
            last_norm: None,
            cx,
            dummy,
            last_mm: None,
            last_rope: None,
            last_rope_kv: None,
            part: None,
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
        let words = shaders::repack(ty, data).ok_or_else(unsupported)?;
        let buf = self
            .cx
            .buffer(name, words.len() as u64 * 4, wgpu::BufferUsages::empty())?;
        self.cx.write(&buf, 0, bytemuck::cast_slice(&words));
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
            buf,
            id: self.cx.next_id(),
            ty,
            rows,
            cols,
            pipes: Some([p1, p8, pe]),
        })
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
            buf,
            id: self.cx.next_id(),
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

    fn simple(&mut self, key: &str, src: &str, writes: &[bool]) -> usize {
        let sg = self.cx.subgroups;
        match self.cx.pipe(&format!("{key}/sg={sg}"), writes, || {
            shaders::compose(src, None, sg, 1)
        }) {
            Ok(p) => p,
            Err(e) => {
                self.cx.deferred.get_or_insert(e);
                usize::MAX
            }
        }
    }

    fn record(&mut self, pipe: usize, bufs: &[Bind], params: &[u32], size: [u32; 3]) -> u64 {
        self.cache = None;
        self.last_mm = None;
        self.last_rope = None;
        self.last_norm = None;
        if pipe == usize::MAX {
            return 0;
        }
        self.cx.dispatch(pipe, bufs, params, size)
    }

    /// Whether every `(needed, capacity)` pair fits; records a deferred error naming `op` if not.
    /// The kernels run without per-access bounds checks, so each op checks its extents here.
    fn fits(&mut self, op: &str, extents: &[(usize, usize)]) -> bool {
        match extents.iter().find(|(need, have)| need > have) {
            None => true,
            Some((need, have)) => {
                self.fail(format!("{op}: needs {need} values of a buffer of {have}"));
                false
            }
        }
    }

    fn fail(&mut self, msg: String) {
        self.cx.deferred.get_or_insert(ModelError::Backend(msg));
    }

    /// Index of the largest of the first `n` values of `x` (first on ties), computed on the GPU.
    pub fn argmax(&mut self, x: &WgpuBuf, n: usize) -> Result<u32, ModelError> {
        if n == 0 || n > x.len {
            return Err(ModelError::Backend(format!(
                "argmax of {n} values of a buffer of {}",
                x.len
            )));
        }
        let mut out = self.buf("argmax", 1)?;
        let p = self.simple("argmax", shaders::ARGMAX, &[false, true]);
        self.record(p, &[x.bind(), out.bind()], &[n as u32], [1, 1, 1]);
        out.written = 1;
        let bytes = self.cx.read(&out.buf, 0, 4)?;
        Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
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

    fn alloc(&mut self, len: usize) -> Result<WgpuBuf, ModelError> {
        self.buf("activations", len)
    }

    fn alloc_kv(
        &mut self,
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Result<WgpuKv, ModelError> {
        let kv_dim = n_head_kv * head_dim;
        let len = n_ctx
            .checked_mul(kv_dim)
            .ok_or_else(|| ModelError::Backend("KV cache size overflows".into()))?;
        let mut k = Vec::with_capacity(n_layer);
        let mut v = Vec::with_capacity(n_layer);
        for _ in 0..n_layer {
            let mut one = || {
                self.buf("kv cache", len).map_err(|e| {
                    ModelError::Backend(format!(
                        "cannot allocate the KV cache for a context of {n_ctx} tokens ({e}): use a smaller -c"
                    ))
                })
            };
            k.push(one()?);
            v.push(one()?);
        }
        Ok(WgpuKv {
            k,
            v,
            n_ctx,
            kv_dim,
            head_dim,
        })
    }

    fn embed(
        &mut self,
        table: &WgpuWeight,
        tokens: &[u32],
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        let Some([_, _, pipe]) = table.pipes else {
            return Err(ModelError::Backend(
                "embedding table must be a matrix".into(),
            ));
        };
        crate::check_tokens(tokens, table.rows)?;
        if tokens.len() * table.cols > out.len {
            return Err(ModelError::Backend("embed: output buffer too small".into()));
        }
        if self.cx.token_host.len() + tokens.len() > TOKEN_CAP {
            self.cx.flush()?;
        }
        let tok0 = self.cx.token_host.len();
        self.cx.token_host.extend_from_slice(tokens);
        let tokens_bind = Bind {
            buf: &self.cx.tokens.clone(),
            id: self.cx.tokens_id,
        };
        let params = [
            table.rows as u32,
            table.cols as u32,
            tokens.len() as u32,
            tok0 as u32,
        ];
        let size = [
            (table.cols / 32).div_ceil(64) as u32,
            tokens.len() as u32,
            1,
        ];
        self.cache = None;
        self.cx.dispatch(
            pipe,
            &[table.bind(), tokens_bind, out.bind()],
            &params,
            size,
        );
        out.written = tokens.len() * table.cols;
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
    ) {
        if !dim.is_multiple_of(4) {
            self.fail(format!("rms_norm: width {dim} is not a multiple of 4"));
            return;
        }
        if !self.fits(
            "rms_norm",
            &[(n * dim, x.len), (n * dim, out.len), (dim, weight.cols)],
        ) {
            return;
        }
        let p = self.simple("rms_norm", shaders::RMS_NORM, &[false, false, true]);
        let serial = self.record(
            p,
            &[x.bind(), weight.bind(), out.bind()],
            &[dim as u32, eps.to_bits()],
            [n as u32, 1, 1],
        );
        out.written = n * dim;
        // A decode mat-vec of `out` right after may take this norm in.
        if n == 1 && self.fold_norm && x.id != out.id {
            self.last_norm = Some(LastNorm {
                serial,
                x: (x.buf.clone(), x.id),
                weight: (weight.buf.clone(), weight.id),
                out: (out.buf.clone(), out.id),
                eps,
                dim,
            });
        }
    }

    fn matmul(
        &mut self,
        w: &WgpuWeight,
        x: &WgpuBuf,
        n: usize,
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        self.matmul_group(&[w], x, n, &mut [out])
    }

    fn matmuls(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        // Runs of up to three weights of one width share a dispatch: of one format for the prompt
        // matmul, of any for the decode mat-vec (which has a decoder per weight).
        let mixed = n == 1 && self.cx.matvec;
        let mut i = 0;
        while i < ws.len() {
            let mut j = i + 1;
            while j < ws.len()
                && j - i < 3
                && (mixed || ws[j].ty == ws[i].ty)
                && ws[j].cols == ws[i].cols
            {
                j += 1;
            }
            self.matmul_group(&ws[i..j], x, n, &mut outs[i..j])?;
            i = j;
        }
        Ok(())
    }

    fn rope(&mut self, x: &mut WgpuBuf, n: usize, n_heads: usize, shape: &AttnShape, pos0: usize) {
        if !self.fits(
            "rope",
            &[
                (n * n_heads * shape.head_dim, x.len),
                (shape.n_rot, shape.head_dim),
            ],
        ) {
            return;
        }
        // The keys' RoPE joins the queries' one just recorded (same tokens and positions).
        let join = self.last_rope.take().filter(|r| {
            r.k.is_none()
                && r.q.1 != x.id
                && r.n == n
                && r.pos0 == pos0
                && r.shape.head_dim == shape.head_dim
                && r.shape.n_rot == shape.n_rot
                && r.shape.rope_freq_base == shape.rope_freq_base
        });
        let mut rope = match join {
            Some(r) if self.cx.pop_if_last(r.serial) => LastRope {
                k: Some((x.buf.clone(), x.id)),
                n_head_kv: n_heads,
                ..r
            },
            _ => LastRope {
                serial: 0,
                q: (x.buf.clone(), x.id),
                k: None,
                n,
                n_head: n_heads,
                n_head_kv: 0,
                pos0,
                shape: *shape,
            },
        };
        rope.serial = self.record_rope(&rope, None);
        self.last_rope = Some(rope);
    }

    fn kv_store(
        &mut self,
        kv: &mut WgpuKv,
        layer: usize,
        k: &WgpuBuf,
        v: &WgpuBuf,
        n: usize,
        pos0: usize,
    ) {
        if pos0 + n > kv.n_ctx {
            self.fail(format!("kv_store past the context of {}", kv.n_ctx));
            return;
        }
        if !self.fits(
            "kv_store",
            &[(n * kv.kv_dim, k.len), (n * kv.kv_dim, v.len)],
        ) {
            return;
        }
        // Joins the RoPE of these keys just recorded.
        if let Some(r) = self.last_rope.take() {
            if r.k.as_ref().is_some_and(|rk| rk.1 == k.id)
                && r.n == n
                && r.pos0 == pos0
                && self.cx.pop_if_last(r.serial)
            {
                let serial = self.record_rope(&r, Some((v, &kv.k[layer], &kv.v[layer], kv.n_ctx)));
                self.last_rope_kv = Some(LastRopeKv {
                    serial,
                    rope: r,
                    v: (v.buf.clone(), v.id),
                    kc: kv.k[layer].id,
                    vc: kv.v[layer].id,
                });
                return;
            }
        }
        let p = self.simple("kv_store", shaders::KV_STORE, &[false, false, true, true]);
        let params = [
            n as u32,
            kv.kv_dim as u32,
            kv.head_dim as u32,
            kv.n_ctx as u32,
            pos0 as u32,
        ];
        let size = [kv.kv_dim.div_ceil(64) as u32, n as u32, 1];
        self.record(
            p,
            &[k.bind(), v.bind(), kv.k[layer].bind(), kv.v[layer].bind()],
            &params,
            size,
        );
    }

    fn attention(
        &mut self,
        q: &WgpuBuf,
        kv: &WgpuKv,
        layer: usize,
        n: usize,
        pos0: usize,
        shape: &AttnShape,
        out: &mut WgpuBuf,
    ) {
        let hd = shape.head_dim;
        if hd > 256 || !hd.is_multiple_of(16) || !shape.n_head.is_multiple_of(shape.n_head_kv) {
            self.fail(format!(
                "attention: head_dim {hd} is over 256 or not a multiple of 16, or uneven GQA groups"
            ));
            return;
        }
        if self.part.is_none() {
            match self.buf("attention partials", shape.n_head * MAX_SPLIT * (hd + 2)) {
                Ok(b) => self.part = Some(b),
                Err(e) => {
                    self.cx.deferred.get_or_insert(e);
                    return;
                }
            }
        }
        // Decode past a few tiles of keys: split them so that every head's few workgroups become
        // many; the prompt already has a workgroup per (head, token). Up to SPLIT_FROM keys, one
        // workgroup per head walks them all and no combining pass is needed.
        let n_kv = pos0 + n;
        let n_split = if n == 1 && n_kv > SPLIT_FROM {
            n_kv.div_ceil(64).min(MAX_SPLIT)
        } else {
            1
        };
        let split_len = n_kv.div_ceil(n_split).div_ceil(64) * 64;
        // One decode token whose RoPE and cache store were just recorded (one dispatch, see
        // `kv_store`): that dispatch is taken back and done by this one (attention.wgsl's FUSED).
        let rope = self.last_rope_kv.take().filter(|r| {
            let rp = &r.rope;
            n == 1
                && rp.n == 1
                && rp.q.1 == q.id
                && rp.pos0 == pos0
                && rp.n_head == shape.n_head
                && rp.n_head_kv == shape.n_head_kv
                && rp.shape.head_dim == hd
                && rp.shape.n_rot == shape.n_rot
                && rp.shape.rope_freq_base == shape.rope_freq_base
                && r.kc == kv.k[layer].id
                && r.vc == kv.v[layer].id
        });
        let rope = rope.filter(|r| self.cx.pop_if_last(r.serial));
        let fused = rope.is_some();
        let sg = self.cx.subgroups;
        let writes = [false, fused, fused, true, true, false, false];
        let pa = match self
            .cx
            .pipe(&format!("attention/fused={fused}/sg={sg}"), &writes, || {
                shaders::compose(&shaders::attention(fused), None, sg, 1)
            }) {
            Ok(p) => p,
            Err(e) => {
                self.cx.deferred.get_or_insert(e);
                usize::MAX
            }
        };
        let scale = 1.0 / (hd as f32).sqrt();
        let theta_scale = shape.rope_freq_base.powf(-2.0 / shape.n_rot as f32);
        let params = [
            shape.n_head as u32,
            shape.n_head_kv as u32,
            hd as u32,
            kv.n_ctx as u32,
            pos0 as u32,
            n_split as u32,
            split_len as u32,
            scale.to_bits(),
            shape.n_rot as u32,
            theta_scale.to_bits(),
        ];
        let part = self.part.take().expect("allocated above");
        let (kn, vn) = match &rope {
            Some(r) => (
                bind_of(r.rope.k.as_ref().expect("a joined RoPE has keys")),
                bind_of(&r.v),
            ),
            None => (self.dummy[0].bind(), self.dummy[1].bind()),
        };
        let (kn, vn) = ((kn.buf.clone(), kn.id), (vn.buf.clone(), vn.id));
        self.record(
            pa,
            &[
                q.bind(),
                kv.k[layer].bind(),
                kv.v[layer].bind(),
                out.bind(),
                part.bind(),
                bind_of(&kn),
                bind_of(&vn),
            ],
            &params,
            [shape.n_head as u32, n as u32, n_split as u32],
        );
        if n_split > 1 {
            let pc = self.simple("attn_combine", shaders::ATTN_COMBINE, &[false, true]);
            self.record(
                pc,
                &[part.bind(), out.bind()],
                &[shape.n_head as u32, hd as u32, n_split as u32],
                [shape.n_head as u32, n as u32, 1],
            );
        }
        self.part = Some(part);
        out.written = n * shape.n_head * hd;
    }

    fn swiglu(&mut self, gate: &mut WgpuBuf, up: &WgpuBuf, len: usize) {
        if !self.fits("swiglu", &[(len, gate.len), (len, up.len)]) {
            return;
        }
        // Folded into the gate/up matmul just recorded, when it is one dispatch of both.
        if let Some(m) = &self.last_mm {
            if m.k == 2
                && m.out(0) == gate.id
                && m.out(1) == up.id
                && m.rows[0] == m.rows[1]
                && len == m.n * m.rows[0]
                && self.refuse_last_matmul(2, None)
            {
                return;
            }
        }
        let p = self.simple("swiglu", shaders::SWIGLU, &[true, false]);
        self.record(p, &[gate.bind(), up.bind()], &[len as u32], fold(len, 256));
    }

    fn add(&mut self, x: &mut WgpuBuf, y: &WgpuBuf, len: usize) {
        if !self.fits("add", &[(len, x.len), (len, y.len)]) {
            return;
        }
        // Folded into the matmul that just wrote `y` (the residual adds after wo and w_down).
        if let Some(m) = &self.last_mm {
            if m.k == 1 && m.out(0) == y.id && len == m.n * m.rows[0] && !m.reads(x.id) {
                let res = Bind {
                    buf: &x.buf.clone(),
                    id: x.id,
                };
                if self.refuse_last_matmul(1, Some(res)) {
                    return;
                }
            }
        }
        let p = self.simple("add", shaders::ADD, &[true, false]);
        self.record(p, &[x.bind(), y.bind()], &[len as u32], fold(len, 256));
    }

    fn copy_within(&mut self, x: &mut WgpuBuf, src: usize, dst: usize, len: usize) {
        if !self.fits("copy_within", &[(src + len, x.len), (dst + len, x.len)]) {
            return;
        }
        let p = self.simple("copy", shaders::COPY, &[true]);
        self.record(
            p,
            &[x.bind()],
            &[len as u32, src as u32, dst as u32],
            fold(len, 256),
        );
        x.written = x.written.max(dst + len);
    }

    fn read(&mut self, x: &WgpuBuf, offset: usize, out: &mut [f32]) -> Result<(), ModelError> {
        let end = offset + out.len();
        if end > x.len {
            return Err(ModelError::Backend("read past the end of a buffer".into()));
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
}
