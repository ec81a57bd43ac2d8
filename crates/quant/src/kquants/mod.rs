//! K-quants: 256-weight super-blocks with quantized per-sub-block scales (Q2_K ... Q6_K), and the
//! 8-bit activation format Q8_K they are all dotted against.
//!
//! Quantizers reproduce what `llama-quantize` writes without an importance matrix: ggml's
//! `quantize_q*_K(src, dst, nrow, n_per_row, NULL)`, which for every K-quant is
//! `quantize_row_q*_K_ref` over the whole tensor (llama.cpp 0c1e570, `ggml-quants.c`). Output is
//! byte-identical to ggml's. To keep it so, the arithmetic follows ggml's step by step: f32 where
//! C uses `float`, the same association order, no fused multiply-add (ggml-base is built without
//! FMA and Rust never contracts), the same `<` vs `<=` in every search. Names are ggml's (`d`,
//! `dmin`, `scales`, `qs`, `qh`, `hmask`, `L`) so the two can be read side by side.
//!
//! The dot products reproduce ggml's scalar `ggml_vec_dot_q*_K_q8_K_generic`, including the order
//! in which partial float sums are added, so they too match ggml's generic CPU path bit for bit.

mod q2k;
mod q3k;
mod q4k;
mod q5k;
mod q6k;
mod q8k;

pub use q2k::BlockQ2K;
pub use q3k::BlockQ3K;
pub use q4k::BlockQ4K;
pub use q5k::BlockQ5K;
pub use q6k::BlockQ6K;
pub use q8k::BlockQ8K;

use half::f16;

// ggml's own fp32 -> fp16 (canonical NaN), shared with the float formats.
use crate::float::fp32_to_fp16;

/// Bytes of the packed 6-bit scales and mins of Q4_K / Q5_K (and Q3_K's 6-bit scales).
pub const K_SCALE_SIZE: usize = 12;

/// Below this a group counts as all zero (`GROUP_MAX_EPS`).
const GROUP_MAX_EPS: f32 = 1e-15;

/// ggml's `nearest_int`: adding 1.5 * 2^23 leaves the rounded integer in the low mantissa bits.
/// Rounds half to even for |fval| < 2^22, which is every magnitude the quantizers produce from
/// finite input. Unlike ggml we do not assert the range: for NaN or huge values the result is the
/// same garbage ggml computes with assertions off, and never a panic.
#[inline]
pub(crate) fn nearest_int(fval: f32) -> i32 {
    let val = fval + 12_582_912.0;
    (val.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// Scale for symmetric quants in `[-nmax, nmax - 1]`, searched around `-nmax / max` to minimise the
/// x²-weighted error. This is ggml's `make_qx_quants` for `rmse_type == 1` and `qw == NULL`, the
/// only way the reference quantizers (Q6_K) call it. `L[i]` gets the quant plus `nmax`.
fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let quant = |iscale: f32, xi: f32| nearest_int(iscale * xi).clamp(-nmax, nmax - 1);

    let mut iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let l = quant(iscale, xi);
        *li = (l + nmax) as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in (-9..=9).filter(|&is| is != 0) {
        iscale = -(nmax as f32 + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for &xi in x {
            let l = quant(iscale, xi);
            let w = xi * xi;
            sumlx += w * xi * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (li, &xi) in l_out.iter_mut().zip(x) {
                *li = (nmax + quant(iscale, xi)) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_q3_quants` with `do_rmse = true` (how Q3_K calls it): start from `-nmax / max`,
/// then move single quants while that lowers the x²-weighted error, at most 5 passes.
/// `L[i]` gets the quant plus `nmax`.
fn make_q3_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    let mut max = 0.0f32;
    let mut amax = 0.0f32;
    for &xi in x {
        let ax = xi.abs();
        if ax > amax {
            amax = ax;
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(nmax as f32) / max;
    let mut sumlx = 0.0f32;
    let mut suml2 = 0.0f32;
    for (li, &xi) in l_out.iter_mut().zip(x) {
        let l = nearest_int(iscale * xi).clamp(-nmax, nmax - 1);
        *li = l as i8;
        let w = xi * xi;
        sumlx += w * xi * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _itry in 0..5 {
        let mut n_changed = 0;
        for (li, &xi) in l_out.iter_mut().zip(x) {
            let w = xi * xi;
            let old = *li as f32;
            let mut slx = sumlx - w * xi * old;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * old * old;
                let new_l = nearest_int(xi * sl2 / slx).clamp(-nmax, nmax - 1);
                if new_l != *li as i32 {
                    slx += w * xi * new_l as f32;
                    sl2 += w * new_l as f32 * new_l as f32;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        *li = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    for li in l_out.iter_mut() {
        *li += nmax as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Search parameters of [`make_qkx2_quants`]: candidate inverse scales are
/// `(rmin + rdelta * is + nmax) / (max - min)` for `is in 0..=nstep`.
struct Qkx2Search {
    rmin: f32,
    rdelta: f32,
    nstep: i32,
    /// Weigh |error| (true) or error² (false).
    use_mad: bool,
}

/// ggml's `make_qkx2_quants`: asymmetric quants `x ≈ scale * L - the_min` with `L` in
/// `[0, nmax]` and `min <= 0`, searched for the least weighted error. Returns
/// `(scale, the_min)`; `laux` is scratch of `x.len()` bytes.
fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    weights: &[f32],
    l_out: &mut [u8],
    laux: &mut [u8],
    search: &Qkx2Search,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = weights[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let w = weights[i];
        sum_w += w;
        sum_x += w * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let err = |diff: f32| {
        if search.use_mad {
            diff.abs()
        } else {
            diff * diff
        }
    };

    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0.0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += weights[i] * err(diff);
    }
    if search.nstep < 1 {
        return (scale, -min);
    }
    for is in 0..=search.nstep {
        iscale = (search.rmin + search.rdelta * is as f32 + nmax as f32) / (max - min);
        let mut sum_l = 0.0f32;
        let mut sum_l2 = 0.0f32;
        let mut sum_xl = 0.0f32;
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let w = weights[i];
            let l = l as f32;
            sum_l += w * l;
            sum_l2 += w * l * l;
            sum_xl += w * l * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0.0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += weights[i] * err(diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// Packs the eight 6-bit scales and mins of Q4_K / Q5_K into 12 bytes: bytes 0..4 hold scales
/// 0..4 and the top 2 bits of scales 4..8, bytes 4..8 the same for mins, bytes 8..12 the low
/// nibbles of scale and min 4..8. Inputs are at most 63.
fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; K_SCALE_SIZE] {
    let mut scales = [0u8; K_SCALE_SIZE];
    for j in 0..8 {
        if j < 4 {
            scales[j] = ls[j];
            scales[j + 4] = lm[j];
        } else {
            scales[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            scales[j - 4] |= (ls[j] >> 4) << 6;
            scales[j] |= (lm[j] >> 4) << 6;
        }
    }
    scales
}

/// ggml's `get_scale_min_k4`: the 6-bit scale and min of sub-block `j` of a Q4_K / Q5_K block.
#[inline]
fn get_scale_min_k4(j: usize, q: &[u8; K_SCALE_SIZE]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Quantize and pack the 8 sub-block (scale, min) pairs of a Q4_K / Q5_K block the way
/// `quantize_row_q{4,5}_K_ref` do: each relative to the largest, as 6 bits. Returns the packed
/// scales and the f16 `d` and `dmin`.
fn quantize_scale_min_k4(scales: &[f32; 8], mins: &[f32; 8]) -> ([u8; K_SCALE_SIZE], f16, f16) {
    // Scales and mins are >= 0 by construction, so the maxima start at 0.
    let mut max_scale = 0.0f32;
    let mut max_min = 0.0f32;
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // ggml stores nearest_int into a uint8_t before clamping: truncate first, like C.
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let d = fp32_to_fp16(max_scale / 63.0);
    let dmin = fp32_to_fp16(max_min / 63.0);
    (pack_scale_min_k4(&ls, &lm), d, dmin)
}

/// The x-dependent weights `quantize_row_q{4,5}_K_ref` give `make_qkx2_quants` for one
/// 32-weight sub-block: its RMS plus each |x|.
fn rms_abs_weights(x: &[f32]) -> [f32; 32] {
    let mut sum_x2 = 0.0f32;
    for &xi in x {
        sum_x2 += xi * xi;
    }
    let av_x = (sum_x2 / 32.0).sqrt();
    let mut weights = [0.0f32; 32];
    for (w, &xi) in weights.iter_mut().zip(x) {
        *w = av_x + xi.abs();
    }
    weights
}

/// Integer part of ggml's generic K-quant dot products: `Σ scale[k/16] * q8[k] * a[k]`
/// accumulated in 8 lanes by `k % 8`, as `ggml_vec_dot_q*_K_q8_K_generic` do. The lanes matter:
/// each is converted to f32 on its own, and those roundings are part of ggml's result.
#[inline]
fn dot_lanes(a: &[i8; crate::QK_K], q8: &[i8; crate::QK_K], scale16: &[i32; 16]) -> [i32; 8] {
    let mut aux32 = [0i32; 8];
    for (k, (&ak, &qk)) in a.iter().zip(q8).enumerate() {
        aux32[k % 8] += scale16[k / 16] * (ak as i32 * qk as i32);
    }
    aux32
}

/// Add a block's lanes into ggml's running 8-lane float sums: `sums[l] += d * aux32[l]`.
#[inline]
fn accumulate_lanes(sums: &mut [f32; 8], d: f32, aux32: &[i32; 8]) {
    for (s, &a) in sums.iter_mut().zip(aux32) {
        *s += d * a as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_int_rounds_half_to_even() {
        assert_eq!(nearest_int(0.5), 0);
        assert_eq!(nearest_int(1.5), 2);
        assert_eq!(nearest_int(2.5), 2);
        assert_eq!(nearest_int(-0.5), 0);
        assert_eq!(nearest_int(-1.5), -2);
        assert_eq!(nearest_int(-2.4999), -2);
        assert_eq!(nearest_int(4194303.0), 4194303);
        assert_eq!(nearest_int(-4194303.0), -4194303);
    }

    #[test]
    fn scale_min_k4_roundtrip() {
        let ls = [1, 63, 17, 32, 48, 5, 62, 33];
        let lm = [0, 22, 63, 41, 7, 59, 16, 31];
        let packed = pack_scale_min_k4(&ls, &lm);
        for j in 0..8 {
            assert_eq!(get_scale_min_k4(j, &packed), (ls[j], lm[j]));
        }
    }
}
