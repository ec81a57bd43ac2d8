//! Fusions: matmuls of one input that share a dispatch, and ops folded into the dispatch
//! recorded just before them (residual add and SwiGLU into the matmul, the keys' RoPE and the
//! cache store into the queries' RoPE). A fold happens only while that dispatch is the last one
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
    pub(super) weights: [(wgpu::Buffer, u64); 2],
    pub(super) x: (wgpu::Buffer, u64),
    pub(super) outs: [(wgpu::Buffer, u64); 2],
    /// Weights in the dispatch (1 or 2), their rows, the width and the tokens.
    pub(super) k: usize,
    pub(super) rows: [usize; 2],
    pub(super) cols: usize,
    pub(super) n: usize,
    pub(super) size: [u32; 3],
    /// Rows per workgroup of the pipeline (the decode mat-vec's several, else 1).
    pub(super) rpw: usize,
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

/// Workgroups of a matmul over `rows` rows, `rpw` a workgroup, and `tiles` token tiles; rows
/// past 32768 workgroups fold into z (the kernels' convention).
fn matmul_grid(rows: usize, tiles: usize, rpw: usize) -> [u32; 3] {
    let g = rows.div_ceil(rpw).max(1);
    [g.min(32768) as u32, tiles as u32, g.div_ceil(32768) as u32]
}

impl WgpuBackend {
    /// One dispatch of up to three weights of the same format and width over the same input.
    pub(super) fn matmul_group(
        &mut self,
        ws: &[&WgpuWeight],
        x: &WgpuBuf,
        n: usize,
        outs: &mut [&mut WgpuBuf],
    ) -> Result<(), ModelError> {
        let w0 = ws[0];
        let Some([p1, p8, _, pv]) = w0.pipes else {
            return Err(ModelError::Backend("matmul needs a matrix weight".into()));
        };
        for (w, out) in ws.iter().zip(outs.iter()) {
            if n * w.cols > x.len || n * w.rows > out.len {
                return Err(ModelError::Backend(format!(
                    "matmul of [{}, {}] over {n} rows: buffer too small",
                    w.rows, w.cols
                )));
            }
        }
        let (pipe, nt, rpw) = if n == 1 && pv != usize::MAX {
            (pv, 1, self.cx.rows_per_group)
        } else if n == 1 {
            (p1, 1, 1)
        } else {
            (p8, MATMUL_NT as usize, 1)
        };
        let total: usize = ws.iter().map(|w| w.rows).sum();
        let rows = |i: usize| ws.get(i).map_or(0, |w| w.rows) as u32;
        let size = matmul_grid(total, n.div_ceil(nt), rpw);
        let params = [
            w0.cols as u32,
            n as u32,
            0,
            total as u32,
            rows(0),
            rows(1),
            rows(2),
            rpw as u32,
        ];
        let wb = |i: usize| ws.get(i).map_or(self.dummy[0].bind(), |w| w.bind());
        let ob = |i: usize| outs.get(i).map_or(self.dummy[i].bind(), |o| o.bind());
        let bufs = [
            wb(0),
            wb(1),
            wb(2),
            x.bind(),
            ob(0),
            ob(1),
            ob(2),
            self.dummy[3].bind(),
        ];
        self.cache = None;
        self.last_rope = None;
        let serial = self.cx.dispatch(pipe, &bufs, &params, size);
        self.last_mm = (ws.len() <= 2).then(|| LastMatmul {
            serial,
            pipe,
            weights: [
                (w0.buf.clone(), w0.id),
                ws.get(1)
                    .map_or((self.dummy[0].buf.clone(), self.dummy[0].id), |w| {
                        (w.buf.clone(), w.id)
                    }),
            ],
            x: (x.buf.clone(), x.id),
            outs: [
                (outs[0].buf.clone(), outs[0].id),
                outs.get(1)
                    .map_or((self.dummy[1].buf.clone(), self.dummy[1].id), |o| {
                        (o.buf.clone(), o.id)
                    }),
            ],
            k: ws.len(),
            rows: [rows(0) as usize, rows(1) as usize],
            cols: w0.cols,
            n,
            size,
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
        let b = |(buf, id): &(wgpu::Buffer, u64)| (buf.clone(), *id);
        let (w0, w1, x, o0, o1) = (
            b(&m.weights[0]),
            b(&m.weights[1]),
            b(&m.x),
            b(&m.outs[0]),
            b(&m.outs[1]),
        );
        let groups = if mode == 2 {
            m.rows[0]
        } else {
            m.rows[0] + m.rows[1]
        };
        let size = matmul_grid(groups, m.size[1] as usize, m.rpw);
        let params = [
            m.cols as u32,
            m.n as u32,
            mode,
            groups as u32,
            m.rows[0] as u32,
            m.rows[1] as u32,
            0,
            m.rpw as u32,
        ];
        let bufs = [
            bind_of(&w0),
            bind_of(&w1),
            self.dummy[0].bind(),
            bind_of(&x),
            bind_of(&o0),
            bind_of(&o1),
            self.dummy[2].bind(),
            res.unwrap_or(self.dummy[3].bind()),
        ];
        self.cx.dispatch(m.pipe, &bufs, &params, size);
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
        self.cx
            .dispatch(pipe, &[bind_of(&r.q), k, v, kc, vc], &params, size)
    }
}
