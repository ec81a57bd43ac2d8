//! Q4_K: x ≈ d * sc * q - dmin * m, with 8 sub-blocks of 32 weights, 4-bit quants and 6-bit
//! sub-block scales and mins. 4.5 bits per weight.

use bytemuck::{Pod, Zeroable};
use half::f16;

use super::{
    accumulate_lanes, dot_lanes, get_scale_min_k4, make_qkx2_quants, nearest_int,
    quantize_scale_min_k4, rms_abs_weights, BlockQ8K, Qkx2Search, K_SCALE_SIZE,
};
use crate::{BlockFormat, GgmlType, QK_K};

/// `block_q4_K`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
pub struct BlockQ4K {
    /// Super-block scale of the quantized scales.
    pub d: f16,
    /// Super-block scale of the quantized mins.
    pub dmin: f16,
    /// Eight 6-bit scales and mins, packed as `get_scale_min_k4` reads them.
    pub scales: [u8; K_SCALE_SIZE],
    /// Quant `k`: per 64 weights, the first 32 in the low nibbles of 32 bytes, the next 32 in
    /// the high nibbles.
    pub qs: [u8; QK_K / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);

/// The low 4 bits of quant `k` in Q4_K / Q5_K's `qs`.
#[inline]
pub(super) fn get_nibble(qs: &[u8; QK_K / 2], k: usize) -> u8 {
    (qs[k / 64 * 32 + k % 32] >> (4 * (k % 64 / 32))) & 0xF
}

/// Shared by Q4_K and Q5_K: the first pass of `quantize_row_q{4,5}_K_ref`. Finds each 32-weight
/// sub-block's scale and min (quants into `l`), then quantizes those to 6 bits.
/// Returns the packed scales, `d` and `dmin`.
pub(super) fn quantize_sub_blocks(
    x: &[f32],
    nmax: i32,
    search: &Qkx2Search,
    l: &mut [u8; QK_K],
) -> ([u8; K_SCALE_SIZE], f16, f16) {
    let mut laux = [0u8; 32];
    let mut scales = [0.0f32; QK_K / 32];
    let mut mins = [0.0f32; QK_K / 32];
    for j in 0..QK_K / 32 {
        let range = 32 * j..32 * j + 32;
        let xs = &x[range.clone()];
        let weights = rms_abs_weights(xs);
        (scales[j], mins[j]) =
            make_qkx2_quants(nmax, xs, &weights, &mut l[range], &mut laux, search);
    }
    quantize_scale_min_k4(&scales, &mins)
}

/// Shared by Q4_K and Q5_K: requantize every sub-block against its 6-bit, f16-rounded scale and
/// min. A sub-block whose scale rounded to 0 keeps the quants of the first pass.
pub(super) fn requantize_sub_blocks(
    x: &[f32],
    nmax: i32,
    scales: &[u8; K_SCALE_SIZE],
    d: f16,
    dmin: f16,
    l: &mut [u8; QK_K],
) {
    for j in 0..QK_K / 32 {
        let (sc, m) = get_scale_min_k4(j, scales);
        let d = d.to_f32() * sc as f32;
        if d == 0.0 {
            continue;
        }
        let dm = dmin.to_f32() * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / d).clamp(0, nmax) as u8;
        }
    }
}

/// Per-16-quant scales and the min term of a Q4_K / Q5_K block against Q8_K, as ggml's generic
/// dot computes them: `(scale16, Σ bsums[j] * min[j / 2])`.
pub(super) fn scales_and_min_sum(scales: &[u8; K_SCALE_SIZE], y: &BlockQ8K) -> ([i32; 16], i32) {
    let mut scale16 = [0i32; 16];
    let mut sumi = 0i32;
    for (j, (s, &bsum)) in scale16.iter_mut().zip(&y.bsums).enumerate() {
        let (sc, m) = get_scale_min_k4(j / 2, scales);
        *s = sc as i32;
        sumi += bsum as i32 * m as i32;
    }
    (scale16, sumi)
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4_K;
    const BLOCK: usize = QK_K;
    type Dot = BlockQ8K;

    /// `quantize_row_q4_K_ref` (what `quantize_q4_K` runs without an importance matrix).
    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(
            x.len(),
            blocks.len() * QK_K,
            "Q4_K quantize: length mismatch"
        );
        let search = Qkx2Search {
            rmin: -1.0,
            rdelta: 0.1,
            nstep: 20,
            use_mad: false,
        };
        let mut l = [0u8; QK_K];
        for (x, y) in x.chunks_exact(QK_K).zip(blocks.iter_mut()) {
            (y.scales, y.d, y.dmin) = quantize_sub_blocks(x, 15, &search, &mut l);
            requantize_sub_blocks(x, 15, &y.scales, y.d, y.dmin, &mut l);
            for (j, q) in (0..QK_K).step_by(64).zip(y.qs.chunks_exact_mut(32)) {
                for (k, qk) in q.iter_mut().enumerate() {
                    *qk = l[j + k] | (l[j + k + 32] << 4);
                }
            }
        }
    }

    /// `dequantize_row_q4_K`.
    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(
            out.len(),
            blocks.len() * QK_K,
            "Q4_K dequantize: length mismatch"
        );
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
            let d = x.d.to_f32();
            let min = x.dmin.to_f32();
            for (j, ys) in y.chunks_exact_mut(32).enumerate() {
                let (sc, m) = get_scale_min_k4(j, &x.scales);
                let d1 = d * sc as f32;
                let m1 = min * m as f32;
                for (ii, yk) in ys.iter_mut().enumerate() {
                    *yk = d1 * get_nibble(&x.qs, 32 * j + ii) as f32 - m1;
                }
            }
        }
    }

    /// `ggml_vec_dot_q4_K_q8_K_generic`.
    fn vec_dot(w: &[Self], a: &[BlockQ8K]) -> f32 {
        assert_eq!(w.len(), a.len(), "Q4_K vec_dot: block count mismatch");
        let mut sums = [0.0f32; 8];
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let q: [i8; QK_K] = std::array::from_fn(|k| get_nibble(&x.qs, k) as i8);
            let (scale16, sumi) = scales_and_min_sum(&x.scales, y);
            let aux32 = dot_lanes(&q, &y.qs, &scale16);
            accumulate_lanes(&mut sums, x.d.to_f32() * y.d, &aux32);
            let dmin = x.dmin.to_f32() * y.d;
            sumf -= dmin * sumi as f32;
        }
        sums.iter().fold(sumf, |sumf, &s| sumf + s)
    }
}
