//! The compound operations as fused dispatches, and the matmul dispatch they are made of.
//!
//! - Matmuls of one input share a dispatch (q/k/v, gate/up): up to three weights of one width, of
//!   one format for the prompt matmul, of any in the decode mat-vec. A weight larger than one
//!   binding (in parts, see [`WgpuWeight`]) takes a dispatch per part, alone, each writing its
//!   rows' columns of the output; the norm and the residual add fold into each, SwiGLU does not
//!   (gate/up in parts run apart, then the `swiglu` op).
//! - [`Backend::norm_matmuls`]: in decode the RMSNorm folds into the mat-vec (`matvec.wgsl`'s
//!   norm variant, which also writes the normed row to `xb`).
//! - [`Backend::matmul_add`]: the residual add folds into the matmul (mode 1: `res += out`; the
//!   product still goes to the scratch buffer).
//! - [`Backend::ffn_swiglu`]: gate/up in one dispatch with SwiGLU folded in (mode 2), and in decode
//!   the RMSNorm before them too: one dispatch.
//! - [`Backend::qkv_rope_store`]: the norm and q/k/v as above, then the RoPE of queries and keys
//!   and the store of keys and values into the cache in one `rope_kv` dispatch.
//!
//! One fold spans two operations and so stays a fold into the dispatch recorded just before:
//! a decode attention (each row of a different sequence) over the cache that the last
//! `qkv_rope_store` wrote takes that `rope_kv` dispatch into its own (`attention.wgsl`'s FUSED),
//! while it is still the last op recorded and not submitted. The trait keeps attention apart from
//! `qkv_rope_store` (the model shows q, k and v between them), so no compound operation holds
//! both. When the fold happens the q and k buffers are left unrotated: nothing reads them after
//! the attention, and anything that reads them before it (a `read`, as `RUSTORCH_DEBUG` does)
//! submits the `rope_kv` dispatch first, so that the fold does not happen.

use super::{
    bind_of, shaders, Bind, WgpuBackend, WgpuBuf, WgpuKv, WgpuWeight, MATMUL_NT, MAX_SPLIT,
    SPLIT_FROM, SPLIT_ROWS,
};
use crate::backend::{AttnShape, Backend};
use crate::ModelError;

/// What a matmul dispatch does besides `out_k = W_k · x`.
#[derive(Clone, Copy)]
pub(super) struct Fold<'a> {
    /// The kernels' mode: 0 plain; 1 `res += out_0` (one weight); 2 `out_0 = silu(W_0 x) * out_1`
    /// (two weights of as many rows).
    mode: u32,
    res: Option<&'a WgpuBuf>,
    /// The RMSNorm folded into the decode mat-vec: its input, weight and epsilon. The matmul's `x`
    /// is then the norm's output, which the kernel writes.
    norm: Option<(&'a WgpuBuf, &'a WgpuWeight, f32)>,
}

impl Fold<'_> {
    pub(super) const NONE: Fold<'static> = Fold {
        mode: 0,
        res: None,
        norm: None,
    };
}

/// A RoPE dispatch: queries, keys if any, and the cache store of keys and values if any.
pub(super) struct RopeOp<'a> {
    pub(super) q: &'a WgpuBuf,
    pub(super) k: Option<&'a WgpuBuf>,
    pub(super) n: usize,
    pub(super) n_head: usize,
    pub(super) n_head_kv: usize,
    pub(super) shape: AttnShape,
    /// RoPE's frequency factors, if any.
    pub(super) factors: Option<&'a WgpuWeight>,
    /// The values, and the cache and layer they and the keys are stored into.
    pub(super) store: Option<(&'a WgpuBuf, &'a WgpuKv, usize)>,
}

/// The `rope_kv` dispatch of the last `qkv_rope_store`, which a decode attention can take in.
pub(super) struct PendingRope {
    serial: u64,
    q: u64,
    /// The keys (unrotated while the dispatch is not run) and values.
    k: (wgpu::Buffer, u64),
    v: (wgpu::Buffer, u64),
    /// The layer's key and value caches.
    kc: u64,
    vc: u64,
    n: usize,
    /// The RoPE's shape (the taken-in RoPE rotates as it says) and frequency factors.
    shape: AttnShape,
    factors: Option<(wgpu::Buffer, u64)>,
}

/// Whether q and k laid out as `a` are laid out as `b`.
fn same_heads(a: &AttnShape, b: &AttnShape) -> bool {
    a.n_head == b.n_head && a.n_head_kv == b.n_head_kv && a.head_dim == b.head_dim
}

/// Workgroups of a matmul over `rows` rows, `rpw` a workgroup, and `tiles` token tiles; rows
/// past 32768 workgroups fold into z (the kernels' convention).
fn matmul_grid(rows: usize, tiles: usize, rpw: usize) -> [u32; 3] {
    let g = rows.div_ceil(rpw).max(1);
    [g.min(32768) as u32, tiles as u32, g.div_ceil(32768) as u32]
}

impl WgpuBackend {
    /// Runs of up to three weights of one width share a dispatch: of one format for the prompt
    /// matmul, of any for the decode mat-vec (which has a decoder per weight); a weight in parts
    /// is a run of its own. `norm` folds into the first run (the later ones read its output).
    pub(super) fn matmul_runs(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
        norm: Option<(&WgpuBuf, &WgpuWeight, f32)>,
    ) -> Result<(), ModelError> {
        if ws.len() != outs.len() {
            return Err(ModelError::Backend(format!(
                "matmuls of {} weights into {} outputs",
                ws.len(),
                outs.len()
            )));
        }
        let mixed = n == 1 && self.cx.matvec;
        let mut i = 0;
        let mut fold = Fold { norm, ..Fold::NONE };
        while i < ws.len() {
            let mut j = i + 1;
            while j < ws.len()
                && j - i < 3
                && (mixed || ws[j].ty == ws[i].ty)
                && ws[j].cols == ws[i].cols
                && !ws[i].chunked()
                && !ws[j].chunked()
            {
                j += 1;
            }
            self.matmul_group(&ws[i..j], x, n, &mut outs[i..j], fold)?;
            fold = Fold::NONE;
            i = j;
        }
        Ok(())
    }

    /// One dispatch of up to three weights of the same width over the same input (of the same
    /// format too, except in the decode mat-vec), doing what `fold` adds; or, for one weight in
    /// parts (not in SwiGLU's mode), that dispatch once per part.
    pub(super) fn matmul_group(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
        fold: Fold,
    ) -> Result<(), ModelError> {
        let w0 = ws[0];
        let Some([p1, p8, _, pt]) = w0.pipes else {
            return Err(ModelError::Backend("matmul needs a matrix weight".into()));
        };
        let input = fold.norm.map_or(x.len, |(nx, _, _)| nx.len.min(x.len));
        for (w, out) in ws.iter().zip(outs.iter()) {
            if n * w.cols > input || n * w.rows > out.len || w.cols != w0.cols {
                return Err(ModelError::Backend(format!(
                    "matmul of [{}, {}] over {n} rows: buffer too small",
                    w.rows, w.cols
                )));
            }
        }
        let matvec = n == 1 && self.cx.matvec;
        // Q4_K / Q6_K weights over 8-bit activations, quantised (and normed) in a dispatch of
        // their own before the mat-vec.
        let q8 = matvec
            && self.cx.q8
            && w0.cols.is_multiple_of(256)
            && ws.iter().all(|w| shaders::has_q8_dot(w.ty));
        let fold_ok = match fold.mode {
            0 => fold.res.is_none(),
            1 => {
                ws.len() == 1
                    && fold
                        .res
                        .is_some_and(|r| n * w0.rows <= r.len && r.id != x.id && r.id != outs[0].id)
            }
            _ => ws.len() == 2 && ws[1].rows == w0.rows && fold.res.is_none(),
        } && fold.norm.is_none_or(|(nx, nw, _)| {
            matvec
                && w0.cols.is_multiple_of(4)
                && nw.cols >= w0.cols
                && nx.id != x.id
                && outs.iter().all(|o| o.id != nx.id)
        });
        if !fold_ok {
            return Err(ModelError::Backend(format!(
                "matmul: mode {} of {} weights, or its norm, does not fit its buffers",
                fold.mode,
                ws.len()
            )));
        }
        let (pipe, nt, rpw) = if matvec {
            let ty = |i: usize| ws.get(i).map_or(w0.ty, |w| w.ty);
            let total: usize = ws.iter().map(|w| w.rows).sum();
            let blocks = ws.iter().all(|w| shaders::has_block_dot(w.ty));
            let shape = self.cx.matvec_shapes.pick(ws.len(), total, w0.cols, blocks);
            let pipe = if q8 {
                self.matvec_q8_pipe([ty(0), ty(1), ty(2)], shape)?
            } else {
                self.matvec_pipe([ty(0), ty(1), ty(2)], fold.norm.is_some(), shape)?
            };
            (pipe, 1, shape.rpw as usize)
        } else {
            if ws.iter().any(|w| w.ty != w0.ty) {
                return Err(ModelError::Backend("matmul group of mixed formats".into()));
            }
            if n == 1 {
                (p1, 1, 1)
            } else if self.cx.tile_min > 0 && n >= self.cx.tile_min {
                // 64 tokens a workgroup, and 64 rows (SwiGLU: 32 gate rows and their up rows).
                (pt, 64, if fold.mode == 2 { 32 } else { 64 })
            } else {
                (p8, MATMUL_NT as usize, 1)
            }
        };
        // A weight in parts is alone in its dispatch, and the same dispatch runs once per part,
        // each writing its rows' columns of the outputs (and of `res`); the norm folds into each
        // (each writes the same normed row).
        if w0.chunked() && (ws.len() > 1 || fold.mode == 2) {
            return Err(ModelError::Backend(format!(
                "matmul: a weight of {} rows in {} parts shares a dispatch (mode {})",
                w0.rows,
                w0.parts.len(),
                fold.mode
            )));
        }
        let xq = if q8 {
            Some(self.quantize_q8(x, w0.cols, fold.norm)?)
        } else {
            None
        };
        for part in &w0.parts {
            let rows = |i: usize| match i {
                0 => part.rows,
                _ => ws.get(i).map_or(0, |w| w.rows),
            };
            // The rows the grid runs over: SwiGLU's workgroups take a gate row and its up row.
            let groups = if fold.mode == 2 {
                rows(0)
            } else {
                rows(0) + rows(1) + rows(2)
            };
            let tiles = n.div_ceil(nt);
            let size = matmul_grid(groups, tiles, rpw);
            let params = [
                w0.cols as u32,
                n as u32,
                fold.mode,
                groups as u32,
                rows(0) as u32,
                rows(1) as u32,
                rows(2) as u32,
                rpw as u32,
                fold.norm.map_or(0, |(_, _, eps)| eps.to_bits()),
                w0.rows as u32,
                part.row0 as u32,
            ];
            let wb = |i: usize| ws.get(i).map_or(self.dummy[0].bind(), |w| w.bind());
            let ob = |i: usize| outs.get(i).map_or(self.dummy[i].bind(), |o| o.bind());
            let mut binds: Vec<Bind> = vec![
                part.bind(),
                wb(1),
                wb(2),
                x.bind(),
                ob(0),
                ob(1),
                ob(2),
                fold.res.map_or(self.dummy[3].bind(), |r| r.bind()),
            ];
            if let Some(q) = &xq {
                binds[3] = bind_of(q);
            } else if let Some((nx, nw, _)) = fold.norm {
                // The kernel reads the norm's input and writes its output (this call's `x`).
                binds[3] = nx.bind();
                binds.push(nw.bind());
                binds.push(x.bind());
            }
            // The bindings borrow self's dummies: owned handles, so that recording can borrow
            // self.
            let owned: Vec<(wgpu::Buffer, u64)> =
                binds.iter().map(|b| (b.buf.clone(), b.id)).collect();
            let binds: Vec<Bind> = owned.iter().map(bind_of).collect();
            self.cache = None;
            self.cx.dispatch(pipe, &binds, &params, size)?;
        }
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            out.written = n * w.rows;
        }
        Ok(())
    }

    /// Whether the RMSNorm of `x` into `xb` can fold into the decode mat-vec of `ws` over `xb`.
    fn norm_folds(
        &self,
        x: &WgpuBuf,
        (n, dim): (usize, usize),
        xb: &WgpuBuf,
        ws: &[&WgpuWeight],
        outs: &[&mut WgpuBuf],
    ) -> bool {
        n == 1
            && self.fold_norm
            && dim.is_multiple_of(4)
            && x.id != xb.id
            && ws.first().is_some_and(|w| w.cols == dim)
            && outs.iter().all(|o| o.id != x.id && o.id != xb.id)
    }

    /// [`Backend::norm_matmuls`]: in decode one mat-vec dispatch that also normalises its input.
    #[allow(clippy::too_many_arguments)] // the trait's operands
    pub(super) fn fused_norm_matmuls(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut WgpuBuf,
        ws: &[&WgpuWeight],
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        if !self.norm_folds(x, (n, dim), xb, ws, outs) {
            self.rms_norm(x, norm, eps, n, dim, xb)?;
            return self.matmuls(ws, xb, n, outs);
        }
        Self::fits("rms_norm", &[(dim, x.len), (dim, xb.len), (dim, norm.cols)])?;
        self.matmul_runs(ws, xb, n, outs, Some((x, norm, eps)))?;
        xb.written = dim;
        Ok(())
    }

    /// [`Backend::qkv_rope_store`]: norm and q/k/v as [`Self::fused_norm_matmuls`], then the RoPE
    /// of queries and keys and the cache store in one dispatch (which a decode attention may take
    /// in, see the module docs).
    #[allow(clippy::too_many_arguments)] // the trait's operands
    pub(super) fn fused_qkv_rope_store(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim): (usize, usize),
        xb: &mut WgpuBuf,
        wqkv: [&WgpuWeight; 3],
        [q, k, v]: [&mut WgpuBuf; 3],
        kv: &mut WgpuKv,
        layer: usize,
        (shape, factors): (&AttnShape, Option<&WgpuWeight>),
    ) -> Result<(), ModelError> {
        Self::check_shape("qkv_rope_store", kv, shape)?;
        Self::check_rope("qkv_rope_store", shape, factors)?;
        self.check_rows("qkv_rope_store", kv, n)?;
        let (hd, kvd) = (shape.head_dim, kv.kv_dim);
        Self::fits(
            "qkv_rope_store",
            &[
                (n * shape.n_head * hd, q.len),
                (n * kvd, k.len),
                (n * kvd, v.len),
                (layer + 1, kv.k.len()),
            ],
        )?;
        self.fused_norm_matmuls(
            x,
            norm,
            eps,
            (n, dim),
            xb,
            &wqkv,
            &mut [&mut *q, &mut *k, &mut *v],
        )?;
        let serial = self.record_rope(&RopeOp {
            q: &*q,
            k: Some(&*k),
            n,
            n_head: shape.n_head,
            n_head_kv: shape.n_head_kv,
            shape: *shape,
            factors,
            store: Some((&*v, &*kv, layer)),
        })?;
        self.rope_kv = (self.step.distinct && self.fold_rope).then(|| PendingRope {
            serial,
            q: q.id,
            k: (k.buf.clone(), k.id),
            v: (v.buf.clone(), v.id),
            kc: kv.k[layer].id,
            vc: kv.v[layer].id,
            n,
            shape: *shape,
            factors: factors.map(|f| {
                let b = f.bind();
                (b.buf.clone(), b.id)
            }),
        });
        Ok(())
    }

    /// [`Backend::matmul_add`]: the residual add folded into the matmul.
    pub(super) fn fused_matmul_add(
        &mut self,
        w: &WgpuWeight,
        a: &WgpuBuf,
        (n, dim): (usize, usize),
        x: &mut WgpuBuf,
        tmp: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        if w.rows != dim || x.id == a.id || x.id == tmp.id {
            self.matmul(w, a, n, tmp)?;
            return self.add(x, tmp, n * dim);
        }
        let fold = Fold {
            mode: 1,
            res: Some(x),
            norm: None,
        };
        self.matmul_group(&[w], a, n, &mut [tmp], fold)
    }

    /// [`Backend::ffn_swiglu`]: gate/up and SwiGLU in one dispatch (where gate and up can share
    /// one), in decode with the RMSNorm folded in too.
    #[allow(clippy::too_many_arguments)] // the trait's operands
    pub(super) fn fused_ffn_swiglu(
        &mut self,
        x: &WgpuBuf,
        norm: &WgpuWeight,
        eps: f32,
        (n, dim, n_ff): (usize, usize, usize),
        xb: &mut WgpuBuf,
        [w_gate, w_up]: [&WgpuWeight; 2],
        gate: &mut WgpuBuf,
        up: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        let shared = w_gate.rows == n_ff
            && w_up.rows == n_ff
            && w_gate.cols == w_up.cols
            && !w_gate.chunked()
            && !w_up.chunked()
            && ((n == 1 && self.cx.matvec) || w_gate.ty == w_up.ty);
        if !shared {
            self.fused_norm_matmuls(
                x,
                norm,
                eps,
                (n, dim),
                xb,
                &[w_gate, w_up],
                &mut [&mut *gate, &mut *up],
            )?;
            return self.swiglu(gate, up, n * n_ff);
        }
        let ws = [w_gate, w_up];
        let folds = self.norm_folds(x, (n, dim), xb, &ws, &[&mut *gate, &mut *up]);
        let norm_fold = if folds {
            Self::fits("rms_norm", &[(dim, x.len), (dim, xb.len), (dim, norm.cols)])?;
            Some((x, norm, eps))
        } else {
            self.rms_norm(x, norm, eps, n, dim, xb)?;
            None
        };
        let fold = Fold {
            mode: 2,
            res: None,
            norm: norm_fold,
        };
        self.matmul_group(&ws, xb, n, &mut [gate, up], fold)?;
        xb.written = n * dim;
        Ok(())
    }

    /// Attention, split over the keys for a few query rows past [`SPLIT_FROM`] keys (the keys each
    /// row sees: its window's), and with the last `qkv_rope_store`'s RoPE and cache store taken
    /// in where it can be (module docs).
    pub(super) fn attend(
        &mut self,
        q: &WgpuBuf,
        kv: &WgpuKv,
        layer: usize,
        n: usize,
        shape: &AttnShape,
        out: &mut WgpuBuf,
    ) -> Result<(), ModelError> {
        Self::check_shape("attention", kv, shape)?;
        self.check_rows("attention", kv, n)?;
        let hd = shape.head_dim;
        Self::fits(
            "attention",
            &[
                (n * shape.n_head * hd, q.len),
                (n * shape.n_head * hd, out.len),
                (layer + 1, kv.k.len()),
            ],
        )?;
        let part_len = SPLIT_ROWS * shape.n_head * MAX_SPLIT * (hd + 2);
        if self.part.as_ref().is_none_or(|p| p.len < part_len) {
            self.part = Some(self.buf("attention partials", part_len)?);
        }
        // A few rows past a few tiles of keys: split the keys so that every head's few workgroups
        // become many; a prompt already has a workgroup per (head, row). Up to SPLIT_FROM keys,
        // one workgroup per (head, row) walks them all and no combining pass is needed. Rows with
        // fewer keys than the longest find their last splits empty.
        let n_kv = self.step.pos[..n]
            .iter()
            .map(|&p| p as usize + 1 - shape.first_seen(p as usize))
            .max()
            .unwrap_or(1);
        let n_split = if n <= SPLIT_ROWS && n_kv > SPLIT_FROM {
            n_kv.div_ceil(64).min(MAX_SPLIT)
        } else {
            1
        };
        let split_len = n_kv.div_ceil(n_split).div_ceil(64) * 64;
        let (kc, vc) = (&kv.k[layer], &kv.v[layer]);
        let rope = self.rope_kv.take().filter(|r| {
            r.n == n && r.q == q.id && r.kc == kc.id && r.vc == vc.id && same_heads(&r.shape, shape)
        });
        let rope = rope.filter(|r| self.cx.pop_if_last(r.serial));
        let fused = rope.is_some();
        // A prompt of enough rows: by tiles of query rows where the head fits the adapter's
        // workgroup memory.
        let tile = shaders::attention_tile_shape(hd).filter(|&(bytes, _, _)| {
            !fused
                && n_split == 1
                && self.cx.attn_tile_min > 0
                && n >= self.cx.attn_tile_min
                && bytes <= self.cx.limits.max_compute_workgroup_storage_size as usize
        });
        let sg = self.cx.subgroups;
        let writes = [
            false, fused, fused, true, true, false, false, false, false, false,
        ];
        let kv16 = self.cx.kv_f16;
        let pa = match tile {
            Some(_) => self.cx.pipe(
                &format!("attention_tile/hd={hd}/kv16={kv16}"),
                &writes[..9],
                || shaders::attention_tile(hd, kv16).expect("a head size the tiles take"),
            )?,
            None => self.cx.pipe(
                &format!("attention/fused={fused}/sg={sg}/kv16={kv16}"),
                &writes[..if fused { 10 } else { 9 }],
                || shaders::attention_module(fused, sg, kv16),
            )?,
        };
        // The RoPE words are read only when the RoPE is taken in.
        let rope_shape = rope.as_ref().map_or(*shape, |r| r.shape);
        let dummy = || (self.dummy[0].buf.clone(), self.dummy[0].id);
        let factors = rope.as_ref().and_then(|r| r.factors.clone());
        let [n_rot, theta_scale, neox, mscale, has_factors] =
            super::rope_params(&rope_shape, factors.is_some());
        let [kv_ring, kv_slots, table_len] = kv.slot_words(layer);
        let params = [
            shape.n_head as u32,
            shape.n_head_kv as u32,
            hd as u32,
            n_split as u32,
            split_len as u32,
            shape.scale.to_bits(),
            shape.window as u32,
            n_rot,
            theta_scale,
            neox,
            mscale,
            has_factors,
            kv_ring,
            kv_slots,
            table_len,
            n as u32, // the tiled kernel's
        ];
        let part = self.part.take().expect("allocated above");
        let (kn, vn) = match rope {
            Some(r) => (r.k, r.v),
            None => (dummy(), (self.dummy[1].buf.clone(), self.dummy[1].id)),
        };
        let factors = factors.unwrap_or_else(dummy);
        let rows = (self.rows.buf.clone(), self.rows.id);
        let mut binds = vec![
            q.bind(),
            kc.bind(),
            vc.bind(),
            out.bind(),
            part.bind(),
            bind_of(&kn),
            bind_of(&vn),
            bind_of(&rows),
            kv.table.bind(),
        ];
        if fused {
            binds.push(bind_of(&factors));
        }
        self.cache = None;
        let grid = match tile {
            Some((_, tq, _)) => [shape.n_head as u32, n.div_ceil(tq) as u32, 1],
            None => [shape.n_head as u32, n as u32, n_split as u32],
        };
        let done = self.cx.dispatch(pa, &binds, &params, grid);
        let done = done.and_then(|_| {
            if n_split == 1 {
                return Ok(());
            }
            let pc = self.simple("attn_combine", shaders::ATTN_COMBINE, &[false, true])?;
            self.cx.dispatch(
                pc,
                &[part.bind(), out.bind()],
                &[shape.n_head as u32, hd as u32, n_split as u32],
                [shape.n_head as u32, n as u32, 1],
            )?;
            Ok(())
        });
        self.part = Some(part);
        done?;
        out.written = n * shape.n_head * hd;
        Ok(())
    }
}
