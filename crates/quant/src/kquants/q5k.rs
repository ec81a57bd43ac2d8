//! Q5_K: x ≈ d * sc * q - dmin * m, with 8 sub-blocks of 32 weights, 5-bit quants (low 4 bits in
//! `qs` as in Q4_K, the 5th in `qh`) and 6-bit sub-block scales and mins. 5.5 bits per weight.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q4k::{get_nibble, quantize_sub_blocks, requantize_sub_blocks, scales_and_min_sum};
use super::{accumulate_lanes, dot_lanes, get_scale_min_k4, BlockQ8K, Qkx2Search, K_SCALE_SIZE};
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q5_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ5K {
    /// Super-block scale of the quantized scales.
    pub d: f16,
    /// Super-block scale of the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and mins, packed as in Q4_K.
    pub scales: [u8; K_SCALE_SIZE],
    /// 5th bit of quant `k` is bit `k / 32` of `qh[k % 32]`.
    pub qh: [u8; QK_K / 8],
    /// Low 4 bits of the quants, laid out as Q4_K's `qs`.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);

impl BlockQ5K {
    /// Quant `k` in [0, 31].
    #[inline]
    fn quant(&self, k: usize) -> u8 {
        let high = (self.qh[k % 32] >> (k / 32)) & 1;
        get_nibble(&self.qs, k) | (high << 4)
    }
}

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q5_K_ref` (what `quantize_q5_K` runs without an importance matrix).
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q5_K quantize: length mismatch"
        );
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: false,
        };
        let mut l = [0u8; QK_K];
        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            (y.scales, y.d, y.dmin) = quantize_sub_blocks(x, 31, &search, &mut l);
            requantize_sub_blocks(x, 31, &y.scales, y.d, y.dmin, &mut l);

            y.qh = [0; QK_K / 8];
            for (k, lk) in l.iter_mut().enumerate() {
                if *lk > 15 {
                    *lk -= 16;
                    y.qh[k % 32] |= 1 << (k / 32);
                }
            }
            for (j, q) in (0..QK_K).step_by(64).zip(y.qs.chunks_exact_mut(32)) {
                for (k, qk) in q.iter_mut().enumerate() {
                    *qk = l[j + k] | (l[j + k + 32] << 4);
                }
            }
        }
    }

    /// `dequantize_row_q5_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q5_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = x.d.to_f32();
            let min = x.dmin.to_f32();
            for (j, ys) in y.chunks_exact_mut(32).enumerate() {
                let (sc, m) = get_scale_min_k4(j, &x.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                for (ii, yk) in ys.iter_mut().enumerate() {
                    *yk = d1 * x.quant(32 * j + ii) as f32 - m1;
                }
            }
        }
    }

    /// `ggml_vec_dot_q5_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q5_K vec_dot: block count mismatch");
        let mut sums = [0.0f32; 8];
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let q: [i8; QK_K] = std::array::from_fn(|k| x.quant(k) as i8);
            let (scale16, sumi) = scales_and_min_sum(&x.scales, y);
            let aux32 = dot_lanes(&q, &y.qs, &scale16);
            accumulate_lanes(&mut sums, x.d.to_f32() * y.d, &aux32);
            let dmin = x.dmin.to_f32() * y.d;
            sumf -= dmin * sumi as f32;
        }
        sums.iter().fold(sumf, |sumf, &s| sumf + s)
    }
}
