//! Q6_K: x ≈ d * sc * q, with 16 sub-blocks of 16 weights, 6-bit quants in [-32, 31] (low 4 bits
//! in `ql`, high 2 in `qh`) and signed 8-bit sub-block scales. 6.5625 bits per weight.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{
    accumulate_lanes, dot_lanes, fp32_to_fp16, make_qx_quants, nearest_int, BlockQ8K, GROUP_MAX_EPS,
};
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q6_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ6K {
    /// Low 4 bits: per 128 weights h, quant `32 * i + l` is in `ql[64 * h + 32 * (i % 2) + l]`,
    /// low nibble for i < 2, high nibble otherwise.
    pub ql: [u8; QK_K / 2],
    /// High 2 bits: per 128 weights h, quant `32 * i + l` in `qh[32 * h + l]`, bits `2 * i`.
    pub qh: [u8; QK_K / 4],
    /// Signed 8-bit scale of each 16-weight sub-block.
    pub scales: [i8; QK_K / 16],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);

impl BlockQ6K {
    /// Quant `k` in [-32, 31].
    #[inline]
    fn quant(&self, k: usize) -> i8 {
        let (h, i, l) = (k / 128, k % 128 / 32, k % 32);
        let low = (self.ql[64 * h + 32 * (i % 2) + l] >> (4 * (i / 2))) & 0xF;
        let high = (self.qh[32 * h + l] >> (2 * i)) & 3;
        (low | (high << 4)) as i8 - 32
    }
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q6_K_ref` (what `quantize_q6_K` runs without an importance matrix).
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q6_K quantize: length mismatch"
        );
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];

        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            // Scales are signed: keep the one of largest magnitude, with its sign.
            let mut max_scale = 0.0f32;
            let mut max_abs_scale = 0.0f32;
            let sub_blocks = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
            for (scale_ib, (xs, ls)) in scales.iter_mut().zip(sub_blocks) {
                let scale = make_qx_quants(32, xs, ls);
                *scale_ib = scale;
                let abs_scale = scale.abs();
                if abs_scale > max_abs_scale {
                    max_abs_scale = abs_scale;
                    max_scale = scale;
                }
            }

            if max_abs_scale < GROUP_MAX_EPS {
                *y = Self::zeroed();
                continue;
            }

            let iscale = -128.0 / max_scale;
            y.d = fp32_to_fp16(1.0 / iscale);
            for (s, &scale) in y.scales.iter_mut().zip(&scales) {
                // ggml stores MIN(127, int) into an int8_t: truncate, like C.
                *s = nearest_int(iscale * scale).min(127) as i8;
            }

            // Requantize against the 8-bit, f16-rounded scales; a zero scale keeps the first guess.
            let d_all = y.d.to_f32();
            for j in 0..QK_K / 16 {
                let d = d_all * y.scales[j] as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / d).clamp(-32, 31);
                    l[16 * j + ii] = (q + 32) as i8;
                }
            }

            for h in 0..QK_K / 128 {
                let (l, ql, qh) = (&l[128 * h..], &mut y.ql[64 * h..], &mut y.qh[32 * h..]);
                for k in 0..32 {
                    let [q1, q2, q3, q4] = [0, 32, 64, 96].map(|o| l[k + o] as u8);
                    ql[k] = (q1 & 0xF) | ((q3 & 0xF) << 4);
                    ql[k + 32] = (q2 & 0xF) | ((q4 & 0xF) << 4);
                    qh[k] = (q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) | ((q4 >> 4) << 6);
                }
            }
        }
    }

    /// `dequantize_row_q6_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q6_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = x.d.to_f32();
            for (k, yk) in y.iter_mut().enumerate() {
                *yk = d * x.scales[k / 16] as f32 * x.quant(k) as f32;
            }
        }
    }

    /// `ggml_vec_dot_q6_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q6_K vec_dot: block count mismatch");
        let mut sums = [0.0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let q: [i8; QK_K] = std::array::from_fn(|k| x.quant(k));
            let scale16: [i32; 16] = std::array::from_fn(|j| x.scales[j] as i32);
            let aux32 = dot_lanes(&q, &y.qs, &scale16);
            accumulate_lanes(&mut sums, x.d.to_f32() * y.d, &aux32);
        }
        sums.iter().fold(0.0, |sumf, &s| sumf + s)
    }
}
