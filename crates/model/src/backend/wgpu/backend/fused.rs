//! Fusions: matmuls of one input that share a dispatch, and ops folded into the dispatch
//! recorded just before them (residual add and SwiGLU into the matmul, the keys' RoPE and the
//! cache store into the queries' RoPE, and that dispatch of one token into the decode attention
//! after it). A fold happens only while that dispatch is the last one
//! recorded and not yet submitted, and it writes everything the separate ops would have written.

use super::shaders;
use super::{bind_of, Bind, WgpuBackend, WgpuBuf, WgpuWeight, MATMUL_NT};
use crate::backend::AttnShape;
use crate::ModelError;

/// The last matmul dispatch, kept so that a following residual add or SwiGLU can be folded into
/// it (the kernel's modes 1 and 2) when nothing was recorded in between.
pub(super) struct LastMatmul {
    pub(super) serial: u64,
    pub(super) pipe: usize,
    /// The bindings as dispatched (mode 0): w0, w1, w2, x, out0, out1, out2, res, and for the
    /// mat-vec with the RMSNorm folded in, the norm's weight and output.
    pub(super) bufs: Vec<(wgpu::Buffer, u64)>,
    pub(super) params: [u32; 9],
    /// Weights in the dispatch (1 or 2), their rows and the tokens.
    pub(super) k: usize,
    pub(super) rows: [usize; 2],
    pub(super) n: usize,
    /// Token tiles of the grid, and rows per workgroup (the decode mat-vec's several, else 1).
    pub(super) tiles: usize,
    pub(super) rpw: usize,
}

impl LastMatmul {
    /// The buffer id of output `i`.
    pub(super) fn out(&self, i: usize) -> u64 {
        self.bufs[4 + i].1
    }

    /// Whether the dispatch reads buffer `id` (an input, or the norm's input or weight).
    pub(super) fn reads(&self, id: u64) -> bool {
        [0, 1, 2, 3, 8]
            .iter()
            .any(|&i| self.bufs.get(i).is_some_and(|b| b.1 == id))
    }
}

/// The last RMSNorm of one row, kept so that a decode mat-vec of its output can take it in.
pub(super) struct LastNorm {
    pub(super) serial: u64,
    pub(super) x: (wgpu::Buffer, u64),
    pub(super) weight: (wgpu::Buffer, u64),
    pub(super) out: (wgpu::Buffer, u64),
    pub(super) eps: f32,
    pub(super) dim: usize,
}

/// The last RoPE dispatch, kept so that the keys' RoPE and their store into the cache can join
/// the queries' one.
pub(super) struct LastRope {
    pub(super) serial: u64,
    pub(super) q: (wgpu::Buffer, u64),
    /// The keys, once joined.
    pub(super) k: Option<(wgpu::Buffer, u64)>,
    pub(super) n: usize,
    pub(super) n_head: usize,
    pub(super) n_head_kv: usize,
    pub(super) pos0: usize,
    pub(super) shape: AttnShape,
}

/// The last RoPE of queries and keys with the keys and values stored into a layer's cache, kept
/// so that a decode attention over that cache can take it in (`attention.wgsl`'s FUSED).
pub(super) struct LastRopeKv {
    pub(super) serial: u64,
    pub(super) rope: LastRope,
    /// The values, and the ids of the layer's key and value caches.
    pub(super) v: (wgpu::Buffer, u64),
    pub(super) kc: u64,
    pub(super) vc: u64,
}

/// Workgroups of a matmul over `rows` rows, `rpw` a workgroup, and `tiles` token tiles; rows
/// past 32768 workgroups fold into z (the kernels' convention).
fn matmul_grid(rows: usize, tiles: usize, rpw: usize) -> [u32; 3] {
    let g = rows.div_ceil(rpw).max(1);
    [g.min(32768) as u32, tiles as u32, g.div_ceil(32768) as u32]
}

impl WgpuBackend {
    /// One dispatch of up to three weights of the same width over the same input (of the same
    /// format too, except in the decode mat-vec).
    pub(super) fn matmul_group(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        let w0 = ws[0];
        let Some([p1, p8, _]) = w0.pipes else {
            return Err(ModelError::Backend("matmul needs a matrix weight".into()));
        };
        for (w, out) in ws.iter().zip(outs.iter()) {
            if n * w.cols > x.len || n * w.rows > out.len || w.cols != w0.cols {
                return Err(ModelError::Backend(format!(
                    "matmul of [{}, {}] over {n} rows: buffer too small",
                    w.rows, w.cols
                )));
            }
        }
        let matvec = n == 1 && self.cx.matvec;
        // The RMSNorm that just wrote x, taken into the mat-vec.
        // (Not where an output is the norm's input or weight, which every workgroup reads.)
        let norm = self.last_norm.take().filter(|nm| {
            matvec
                && nm.out.1 == x.id
                && nm.dim == w0.cols
                && outs.iter().all(|o| o.id != nm.x.1 && o.id != nm.weight.1)
                && self.cx.pop_if_last(nm.serial)
        });
        let (pipe, nt, rpw) = if matvec {
            let ty = |i: usize| ws.get(i).map_or(w0.ty, |w| w.ty);
            let total: usize = ws.iter().map(|w| w.rows).sum();
            let blocks = ws.iter().all(|w| shaders::has_block_dot(w.ty));
            let shape = self.cx.matvec_shapes.pick(ws.len(), total, w0.cols, blocks);
            let pipe = self.matvec_pipe([ty(0), ty(1), ty(2)], norm.is_some(), shape)?;
            (pipe, 1, shape.rpw as usize)
        } else if n == 1 {
            if ws.iter().any(|w| w.ty != w0.ty) {
                return Err(ModelError::Backend("matmul group of mixed formats".into()));
            }
            (p1, 1, 1)
        } else {
            if ws.iter().any(|w| w.ty != w0.ty) {
                return Err(ModelError::Backend("matmul group of mixed formats".into()));
            }
            (p8, MATMUL_NT as usize, 1)
        };
        let total: usize = ws.iter().map(|w| w.rows).sum();
        let rows = |i: usize| ws.get(i).map_or(0, |w| w.rows) as u32;
        let tiles = n.div_ceil(nt);
        let size = matmul_grid(total, tiles, rpw);
        let params = [
            w0.cols as u32,
            n as u32,
            0,
            total as u32,
            rows(0),
            rows(1),
            rows(2),
            rpw as u32,
            norm.as_ref().map_or(0, |nm| nm.eps.to_bits()),
        ];
        let own = |b: Bind| (b.buf.clone(), b.id);
        let wb = |i: usize| own(ws.get(i).map_or(self.dummy[0].bind(), |w| w.bind()));
        let ob = |i: usize| own(outs.get(i).map_or(self.dummy[i].bind(), |o| o.bind()));
        let mut bufs = vec![
            wb(0),
            wb(1),
            wb(2),
            own(x.bind()),
            ob(0),
            ob(1),
            ob(2),
            own(self.dummy[3].bind()),
        ];
        if let Some(nm) = &norm {
            // x is the norm's input; its output (the `x` of this call) is written by the kernel.
            bufs[3] = nm.x.clone();
            bufs.push(nm.weight.clone());
            bufs.push(nm.out.clone());
        }
        self.cache = None;
        self.last_rope = None;
        let binds: Vec<Bind> = bufs.iter().map(bind_of).collect();
        let serial = self.cx.dispatch(pipe, &binds, &params, size);
        self.last_mm = (ws.len() <= 2).then(|| LastMatmul {
            serial,
            pipe,
            bufs,
            params,
            k: ws.len(),
            rows: [rows(0) as usize, rows(1) as usize],
            n,
            tiles,
            rpw,
        });
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            out.written = n * w.rows;
        }
        Ok(())
    }

    /// Records the last matmul again in `mode` (1: residual add into `res`, 2: SwiGLU) in place of
    /// its plain form; false if that matmul is no longer the last op recorded.
    pub(super) fn refuse_last_matmul(&mut self, mode: u32, res: Option<Bind>) -> bool {
        let Some(m) = self.last_mm.take() else {
            return false;
        };
        if !self.cx.pop_if_last(m.serial) {
            return false;
        }
        let groups = if mode == 2 {
            m.rows[0]
        } else {
            m.rows[0] + m.rows[1]
        };
        let size = matmul_grid(groups, m.tiles, m.rpw);
        let mut params = m.params;
        params[2] = mode;
        params[3] = groups as u32;
        params[6] = 0;
        let mut binds: Vec<Bind> = m.bufs.iter().map(bind_of).collect();
        binds[2] = self.dummy[0].bind();
        binds[6] = self.dummy[2].bind();
        binds[7] = res.unwrap_or(self.dummy[3].bind());
        self.cx.dispatch(m.pipe, &binds, &params, size);
        true
    }

    /// Records the RoPE of `r` (queries, and keys if joined), storing keys and values into the
    /// cache when `store` names them; returns the op's serial number.
    pub(super) fn record_rope(
        &mut self,
        r: &LastRope,
        store: Option<(&WgpuBuf, &WgpuBuf, &WgpuBuf, usize)>,
    ) -> u64 {
        let sg = self.cx.subgroups;
        let pipe = match self.cx.pipe(
            &format!("rope_kv/sg={sg}"),
            &[true, true, false, true, true],
            || shaders::compose(shaders::ROPE_KV, None, sg, 1),
        ) {
            Ok(p) => p,
            Err(e) => {
                self.cx.deferred.get_or_insert(e);
                return 0;
            }
        };
        let s = &r.shape;
        let theta_scale = s.rope_freq_base.powf(-2.0 / s.n_rot as f32);
        let n_ctx = store.map_or(0, |st| st.3);
        let params = [
            r.n as u32,
            r.n_head as u32,
            r.n_head_kv as u32,
            s.head_dim as u32,
            s.n_rot as u32,
            r.pos0 as u32,
            theta_scale.to_bits(),
            n_ctx as u32,
            store.is_some() as u32,
        ];
        let k = r.k.as_ref().map_or(self.dummy[1].bind(), bind_of);
        let (v, kc, vc) = match store {
            Some((v, kc, vc, _)) => (v.bind(), kc.bind(), vc.bind()),
            None => (
                self.dummy[0].bind(),
                self.dummy[2].bind(),
                self.dummy[3].bind(),
            ),
        };
        let rows = r.n * (r.n_head + r.n_head_kv);
        let size = [
            (s.head_dim / 2).div_ceil(64) as u32,
            rows.min(32768) as u32,
            rows.div_ceil(32768) as u32,
        ];
        self.cache = None;
        self.last_mm = None;
        self.last_norm = None;
        self.cx
            .dispatch(pipe, &[bind_of(&r.q), k, v, kc, vc], &params, size)
    }
}
