//! Q8_K: the activation format every K-quant is dotted against. Never stored in model files.

use bytemuck::{Pod, Zeroable};

use super::nearest_int;
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q8_K`: 256 int8 quants with an f32 scale, and the sum of each 16 quants (`bsums`) so
/// that K-quant dot products can apply their per-sub-block mins without touching the quants.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ8K {
    /// Delta: weight = d * q.
    pub d: f32,
    pub qs: [i8; QK_K],
    /// `bsums[j]` = sum of `qs[16 * j..16 * j + 16]`.
    pub bsums: [i16; QK_K / 16],
}
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);

impl BlockFormat for BlockQ8K {
    const TYPE: GgmlType = GgmlType::Q8_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q8_K_ref`. One deviation, in bytes ggml leaves undefined: for an all-zero
    /// block ggml writes `d` and `qs` but leaves `bsums` as it found them; we zero them.
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q8_K quantize: length mismatch"
        );
        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            let mut max = 0.0f32;
            let mut amax = 0.0f32;
            for &xj in x {
                let ax = xj.abs();
                if ax > amax {
                    amax = ax;
                    max = xj;
                }
            }
            if amax == 0.0 {
                *y = Self::zeroed();
                continue;
            }
            // -127 rather than -128 keeps every quant in [-127, 127] (ggml needs this for IQ2_XXS).
            let iscale = -127.0 / max;
            for (q, &xj) in y.qs.iter_mut().zip(x) {
                *q = nearest_int(iscale * xj).min(127) as i8;
            }
            for (bsum, qs) in y.bsums.iter_mut().zip(y.qs.chunks_exact(16)) {
                *bsum = qs.iter().map(|&q| q as i32).sum::<i32>() as i16;
            }
            y.d = 1.0 / iscale;
        }
    }

    /// `dequantize_row_q8_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q8_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            for (yj, &q) in y.iter_mut().zip(&x.qs) {
                *yj = x.d * q as f32;
            }
        }
    }

    /// ggml has no Q8_K x Q8_K dot; this one is the plain per-block `d_w * d_a * Σ q_w * q_a`.
    fn vec_dot(w: &[Self], a: &[Self]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q8_K vec_dot: block count mismatch");
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let isum: i32 =
                x.qs.iter()
                    .zip(&y.qs)
                    .map(|(&p, &q)| p as i32 * q as i32)
                    .sum();
            sumf += x.d * y.d * isum as f32;
        }
        sumf
    }
}
