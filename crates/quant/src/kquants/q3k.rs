//! Q3_K: x ≈ d * (sc - 32) * q, with 16 sub-blocks of 16 weights, 3-bit quants in [-4, 3]
//! (2 low bits in `qs`, the high bit in `hmask`) and 6-bit sub-block scales. 3.4375 bits per
//! weight.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::q2k::{get_2bit, pack_2bit};
use super::{accumulate_lanes, dot_lanes, fp32_to_fp16, make_q3_quants, nearest_int, BlockQ8K};
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q3_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ3K {
    /// High bit of quant `k` is bit `k / 32` of `hmask[k % 32]`; set means q >= 0.
    pub hmask: [u8; QK_K / 8],
    /// Low 2 bits of the quants (+4), laid out as in Q2_K.
    pub qs: [u8; QK_K / 4],
    /// Sixteen 6-bit scales (+32): low nibbles in bytes 0..8 (j < 8 low half, else high half),
    /// top 2 bits of scale j in byte `8 + j % 4`, bits `2 * (j / 4)`.
    pub scales: [u8; 12],
    /// Super-block scale.
    pub d: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ3K>() == 110);

impl BlockQ3K {
    /// The 6-bit scale of sub-block `j`, minus its offset of 32.
    #[inline]
    fn scale(&self, j: usize) -> i32 {
        let low = if j < 8 {
            self.scales[j] & 0xF
        } else {
            self.scales[j - 8] >> 4
        };
        let high = (self.scales[8 + j % 4] >> (2 * (j / 4))) & 3;
        (low | (high << 4)) as i32 - 32
    }

    /// Quant `k` in [-4, 3].
    #[inline]
    fn quant(&self, k: usize) -> i8 {
        let high = self.hmask[k % 32] & (1 << (k / 32)) != 0;
        get_2bit(&self.qs, k) as i8 - if high { 0 } else { 4 }
    }
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q3_K_ref` (what `quantize_q3_K` runs without an importance matrix).
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q3_K quantize: length mismatch"
        );
        let mut l = [0i8; QK_K];
        let mut scales = [0.0f32; QK_K / 16];

        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            // Scales are signed here: keep the one of largest magnitude, with its sign.
            let mut max_scale = 0.0f32;
            let mut amax = 0.0f32;
            let sub_blocks = x.chunks_exact(16).zip(l.chunks_exact_mut(16));
            for (scale, (xs, ls)) in scales.iter_mut().zip(sub_blocks) {
                *scale = make_q3_quants(4, xs, ls);
                if scale.abs() > amax {
                    amax = scale.abs();
                    max_scale = *scale;
                }
            }

            y.scales = [0; 12];
            if max_scale != 0.0 {
                let iscale = -32.0 / max_scale;
                for (j, &scale) in scales.iter().enumerate() {
                    // ggml keeps this in an int8_t: truncate before clamping, like C.
                    let mut ls = (nearest_int(iscale * scale) as i8).clamp(-32, 31) + 32;
                    if j < 8 {
                        y.scales[j] = (ls & 0xF) as u8;
                    } else {
                        y.scales[j - 8] |= ((ls & 0xF) << 4) as u8;
                    }
                    ls >>= 4;
                    y.scales[j % 4 + 8] |= (ls << (2 * (j / 4))) as u8;
                }
                y.d = fp32_to_fp16(1.0 / iscale);
            } else {
                y.d = fp32_to_fp16(0.0);
            }

            // Requantize against the 6-bit, f16-rounded scales; a zero scale keeps the first guess.
            let d_all = y.d.to_f32();
            for j in 0..QK_K / 16 {
                let d = d_all * y.scale(j) as f32;
                if d == 0.0 {
                    continue;
                }
                for ii in 0..16 {
                    let q = nearest_int(x[16 * j + ii] / d).clamp(-4, 3);
                    l[16 * j + ii] = (q + 4) as i8;
                }
            }

            // The high bit of the 1st 32 quants goes to bit 0 of hmask[0..32], the next 32 to
            // bit 1, and so on.
            y.hmask = [0; QK_K / 8];
            let mut low = [0u8; QK_K];
            for (k, (&lk, lo)) in l.iter().zip(low.iter_mut()).enumerate() {
                if lk > 3 {
                    y.hmask[k % 32] |= 1 << (k / 32);
                    *lo = (lk - 4) as u8;
                } else {
                    *lo = lk as u8;
                }
            }
            pack_2bit(&low, &mut y.qs);
        }
    }

    /// `dequantize_row_q3_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q3_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d_all = x.d.to_f32();
            for (k, yk) in y.iter_mut().enumerate() {
                let dl = d_all * x.scale(k / 16) as f32;
                *yk = dl * x.quant(k) as f32;
            }
        }
    }

    /// `ggml_vec_dot_q3_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q3_K vec_dot: block count mismatch");
        let mut sums = [0.0f32; 8];
        for (x, y) in w.iter().zip(a) {
            let q: [i8; QK_K] = std::array::from_fn(|k| x.quant(k));
            let scale16: [i32; 16] = std::array::from_fn(|j| x.scale(j));
            let aux32 = dot_lanes(&q, &y.qs, &scale16);
            let d = x.d.to_f32() * y.d;
            accumulate_lanes(&mut sums, d, &aux32);
        }
        sums.iter().fold(0.0, |sumf, &s| sumf + s)
    }
}
