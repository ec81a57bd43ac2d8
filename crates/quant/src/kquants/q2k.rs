//! Q2_K: x ≈ d * sc * q - dmin * m, with 16 sub-blocks of 16 weights, 2-bit quants and 4-bit
//! sub-block scales `sc` and mins `m`. 2.625 bits per weight.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{fp32_to_fp16, make_qkx2_quants, nearest_int, BlockQ8K, Qkx2Search};
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q2_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ2K {
    /// Low nibble: scale of sub-block j; high nibble: its min.
    pub scales: [u8; QK_K / 16],
    /// Quant `k` of each 128-weight half `h` sits at `qs[32 * h + k % 32]`, bits `2 * (k / 32)`.
    pub qs: [u8; QK_K / 4],
    /// Super-block scale of the quantized scales.
    pub d: f16,
    /// Super-block scale of the quantized mins.
    pub dmin: f16,
}
const _: () = assert!(std::mem::size_of::<BlockQ2K>() == 84);

/// Packs four 2-bit quants 32 apart into each byte, per 128 weights (Q2_K and Q3_K's `qs`).
pub(super) fn pack_2bit(l: &[u8; QK_K], qs: &mut [u8; QK_K / 4]) {
    for j in (0..QK_K).step_by(128) {
        for k in 0..32 {
            qs[j / 4 + k] =
                l[j + k] | (l[j + k + 32] << 2) | (l[j + k + 64] << 4) | (l[j + k + 96] << 6);
        }
    }
}

/// The 2-bit field of quant `k` in a `qs` packed by [`pack_2bit`].
#[inline]
pub(super) fn get_2bit(qs: &[u8; QK_K / 4], k: usize) -> u8 {
    (qs[k / 128 * 32 + k % 32] >> (2 * (k % 128 / 32))) & 3
}

impl BlockFormat for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q2_K_ref` (what `quantize_q2_K` runs without an importance matrix).
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q2_K quantize: length mismatch"
        );
        const Q4SCALE: f32 = 15.0;
        let search = Qkx2Search {
            rmin: -0.5,
            rdelta: 0.1,
            nstep: 15,
            use_mad: true,
        };
        let mut l = [0u8; QK_K];
        let mut laux = [0u8; 16];
        let mut scales = [0.0f32; QK_K / 16];
        let mut mins = [0.0f32; QK_K / 16];

        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            // Scales and mins are >= 0 (the min is subtracted), so the maxima start at 0.
            let mut max_scale = 0.0f32;
            let mut max_min = 0.0f32;
            for j in 0..QK_K / 16 {
                let xs = &x[16 * j..16 * j + 16];
                let mut weights = [0.0f32; 16];
                for (w, &xi) in weights.iter_mut().zip(xs) {
                    *w = xi.abs();
                }
                let lj = &mut l[16 * j..16 * j + 16];
                (scales[j], mins[j]) = make_qkx2_quants(3, xs, &weights, lj, &mut laux, &search);
                if scales[j] > max_scale {
                    max_scale = scales[j];
                }
                if mins[j] > max_min {
                    max_min = mins[j];
                }
            }

            // ggml stores the int from nearest_int straight into the uint8_t: truncate, like C.
            if max_scale > 0.0 {
                let iscale = Q4SCALE / max_scale;
                for (s, &scale) in y.scales.iter_mut().zip(&scales) {
                    *s = nearest_int(iscale * scale) as u8;
                }
                y.d = fp32_to_fp16(max_scale / Q4SCALE);
            } else {
                y.scales = [0; QK_K / 16];
                y.d = fp32_to_fp16(0.0);
            }
            if max_min > 0.0 {
                let iscale = Q4SCALE / max_min;
                for (s, &min) in y.scales.iter_mut().zip(&mins) {
                    *s |= (nearest_int(iscale * min) << 4) as u8;
                }
                y.dmin = fp32_to_fp16(max_min / Q4SCALE);
            } else {
                y.dmin = fp32_to_fp16(0.0);
            }

            // Requantize against the scales as rounded to 4 bits and f16. A sub-block whose scale
            // rounded to 0 keeps the quants make_qkx2_quants chose (they dequantize to -m anyway).
            let d_all = y.d.to_f32();
            let dmin_all = y.dmin.to_f32();
            for j in 0..QK_K / 16 {
                let d = d_all * (y.scales[j] & 0xF) as f32;
                if d == 0.0 {
                    continue;
                }
                let dm = dmin_all * (y.scales[j] >> 4) as f32;
                for ii in 0..16 {
                    let q = nearest_int((x[16 * j + ii] + dm) / d);
                    l[16 * j + ii] = q.clamp(0, 3) as u8;
                }
            }

            pack_2bit(&l, &mut y.qs);
        }
    }

    /// `dequantize_row_q2_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q2_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = x.d.to_f32();
            let min = x.dmin.to_f32();
            for (k, yk) in y.iter_mut().enumerate() {
                let sc = x.scales[k / 16];
                let dl = d * (sc & 0xF) as f32;
                let ml = min * (sc >> 4) as f32;
                *yk = dl * get_2bit(&x.qs, k) as f32 - ml;
            }
        }
    }

    /// `ggml_vec_dot_q2_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q2_K vec_dot: block count mismatch");
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            // The mins multiply whole 16-quant sums of the activations: use the precomputed bsums.
            let mut summs = 0i32;
            for (&bsum, &sc) in y.bsums.iter().zip(&x.scales) {
                summs += bsum as i32 * (sc >> 4) as i32;
            }
            let dall = y.d * x.d.to_f32();
            let dmin = y.d * x.dmin.to_f32();

            let mut isum = 0i32;
            for (j, q8) in y.qs.chunks_exact(16).enumerate() {
                let mut isuml = 0i32;
                for (ii, &q) in q8.iter().enumerate() {
                    isuml += q as i32 * get_2bit(&x.qs, 16 * j + ii) as i32;
                }
                isum += (x.scales[j] & 0xF) as i32 * isuml;
            }
            sumf += dall * isum as f32 - dmin * summs as f32;
        }
        sumf
    }
}
