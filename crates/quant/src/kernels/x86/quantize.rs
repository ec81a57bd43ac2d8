//! Activation quantizers (AVX2) that write exactly the bytes of the reference `_ref` quantizers
//! in `legacy.rs` / `kquants/q8k.rs`, for every input without NaN.
//!
//! Every float operation the reference does per element is a single IEEE operation here too
//! (`x * id`, `x * iscale`, the `1.5 * 2^23` add of `nearest_int`), so lanes round exactly like
//! the scalar code. Only the maximum search is reordered, and a maximum does not depend on order.
//! Per-block scalars (`d`, its f16) are computed by the same scalar code as the reference.

use std::arch::x86_64::*;
use std::ptr::copy_nonoverlapping;

use crate::float::fp32_to_fp16;
use crate::kquants::BlockQ8K;
use crate::legacy::{BlockQ8_0, BlockQ8_1};
use crate::QK_K;

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();
const Q8K_BYTES: usize = size_of::<BlockQ8K>();

/// Largest lane; NaN lanes of `v` are skipped (`max_ps` returns its second operand on NaN).
#[inline(always)]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_movehdup_ps(m));
    _mm_cvtss_f32(m)
}

#[inline(always)]
unsafe fn abs(v: __m256) -> __m256 {
    _mm256_andnot_ps(_mm256_set1_ps(-0.0), v)
}

/// `(v.round() as i8) as i32` per lane: `f32::round` (halves away from zero, C's `roundf`) and
/// Rust's saturating cast, NaN to 0. `v - trunc(v)` is exact, so comparing it with 0.5 decides
/// the rounding without the error of adding 0.5.
#[inline(always)]
unsafe fn round_away_i8(v: __m256) -> __m256i {
    let sign = _mm256_set1_ps(-0.0);
    let v = _mm256_andnot_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), v);
    let v = _mm256_min_ps(
        _mm256_max_ps(v, _mm256_set1_ps(-128.0)),
        _mm256_set1_ps(127.0),
    );
    let t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5), _CMP_GE_OQ);
    let one = _mm256_or_ps(_mm256_set1_ps(1.0), _mm256_and_ps(v, sign));
    _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, one)))
}

/// Four vectors of 32-bit codes in `[-128, 127]` as 32 bytes, in order.
#[inline(always)]
unsafe fn pack_i8(c: [__m256i; 4]) -> __m256i {
    let lo = _mm256_packs_epi32(c[0], c[1]);
    let hi = _mm256_packs_epi32(c[2], c[3]);
    // The packs work within 128-bit lanes; put the 4-byte groups back in order.
    let bytes = _mm256_packs_epi16(lo, hi);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// The low byte of each 32-bit lane of four vectors (Rust's `as i8`), 32 bytes in order.
#[inline(always)]
unsafe fn pack_low_bytes(c: [__m256i; 4]) -> __m256i {
    let low = _mm256_set1_epi32(0xFF);
    let lo = _mm256_packus_epi32(_mm256_and_si256(c[0], low), _mm256_and_si256(c[1], low));
    let hi = _mm256_packus_epi32(_mm256_and_si256(c[2], low), _mm256_and_si256(c[3], low));
    let bytes = _mm256_packus_epi16(lo, hi);
    _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7))
}

/// One 32-value block of `quantize_row_q8_0_ref` / `q8_1_ref`: `(d, codes)`, codes as i32 lanes.
#[inline(always)]
unsafe fn q8_block(x: *const f32) -> (f32, [__m256i; 4]) {
    // No closures here (`array::map`, `from_fn`): they are not always inlined, and a vector
    // passed to a function without this one's target features goes through memory.
    let v = [
        _mm256_loadu_ps(x),
        _mm256_loadu_ps(x.add(8)),
        _mm256_loadu_ps(x.add(16)),
        _mm256_loadu_ps(x.add(24)),
    ];
    let m = _mm256_max_ps(
        _mm256_max_ps(abs(v[0]), abs(v[1])),
        _mm256_max_ps(abs(v[2]), abs(v[3])),
    );
    let d = hmax(m) / 127.0;
    let id = _mm256_set1_ps(if d != 0.0 { 1.0 / d } else { 0.0 });
    let codes = [
        round_away_i8(_mm256_mul_ps(v[0], id)),
        round_away_i8(_mm256_mul_ps(v[1], id)),
        round_away_i8(_mm256_mul_ps(v[2], id)),
        round_away_i8(_mm256_mul_ps(v[3], id)),
    ];
    (d, codes)
}

/// `quantize_row_q8_0_ref`.
///
/// # Safety
/// AVX2 is available; `out` holds `x.len() / 32` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, codes) = q8_block(x.as_ptr());
        y[..2].copy_from_slice(&fp32_to_fp16(d).to_bits().to_le_bytes());
        _mm256_storeu_si256(y[2..].as_mut_ptr().cast(), pack_i8(codes));
    }
}

/// `quantize_row_q8_1_ref`: Q8_0's codes, plus `s = d * Σ codes`.
///
/// # Safety
/// AVX2 is available; `out` holds `x.len() / 32` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_1(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, codes) = q8_block(x.as_ptr());
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(codes[0], codes[1]),
            _mm256_add_epi32(codes[2], codes[3]),
        );
        let sum = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let sum = _mm_add_epi32(sum, _mm_unpackhi_epi64(sum, sum));
        let sum = _mm_cvtsi128_si32(_mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01)));
        y[..2].copy_from_slice(&fp32_to_fp16(d).to_bits().to_le_bytes());
        y[2..4].copy_from_slice(&fp32_to_fp16(sum as f32 * d).to_bits().to_le_bytes());
        _mm256_storeu_si256(y[4..].as_mut_ptr().cast(), pack_i8(codes));
    }
}

/// `quantize_row_q8_K_ref`.
///
/// # Safety
/// AVX2 is available; `out` holds `x.len() / 256` blocks.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_k(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        let x = x.as_ptr();
        let mut m = _mm256_setzero_ps();
        for i in 0..QK_K / 8 {
            m = _mm256_max_ps(abs(_mm256_loadu_ps(x.add(8 * i))), m);
        }
        let amax = hmax(m);
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        // The reference keeps the first element of largest magnitude, with its sign.
        let amax_v = _mm256_set1_ps(amax);
        let mut first = 0;
        for i in 0..QK_K / 8 {
            let eq = _mm256_cmp_ps(abs(_mm256_loadu_ps(x.add(8 * i))), amax_v, _CMP_EQ_OQ);
            let mask = _mm256_movemask_ps(eq);
            if mask != 0 {
                first = 8 * i + mask.trailing_zeros() as usize;
                break;
            }
        }
        let iscale = -127.0 / *x.add(first);
        let iscale_v = _mm256_set1_ps(iscale);

        let q = y[4..].as_mut_ptr();
        let ones = _mm256_set1_epi8(1);
        let mut sums = [_mm256_setzero_si256(); 8];
        for (j, sum) in sums.iter_mut().enumerate() {
            // ggml's `nearest_int`: the low mantissa bits of `v + 1.5 * 2^23`, then `min(127)`.
            let mut codes = [_mm256_setzero_si256(); 4];
            for (i, c) in codes.iter_mut().enumerate() {
                let v = _mm256_mul_ps(iscale_v, _mm256_loadu_ps(x.add(32 * j + 8 * i)));
                let bits = _mm256_castps_si256(_mm256_add_ps(v, _mm256_set1_ps(12_582_912.0)));
                let n = _mm256_sub_epi32(
                    _mm256_and_si256(bits, _mm256_set1_epi32(0x007f_ffff)),
                    _mm256_set1_epi32(0x0040_0000),
                );
                *c = _mm256_min_epi32(n, _mm256_set1_epi32(127));
            }
            // Finite codes lie in [-127, 127], but an overflowing `iscale` (subnormal input) makes
            // them wrap through `as i8` in the reference, so truncate rather than saturate.
            let bytes = pack_low_bytes(codes);
            _mm256_storeu_si256(q.add(32 * j).cast(), bytes);
            // Four-byte sums: lanes 0..4 cover bsums[2j], lanes 4..8 bsums[2j + 1].
            *sum = _mm256_madd_epi16(_mm256_maddubs_epi16(ones, bytes), _mm256_set1_epi16(1));
        }
        // Two rounds of pairwise adds leave, per 128-bit half, one sum of 16 codes per vector.
        let h = [
            _mm256_hadd_epi32(sums[0], sums[1]),
            _mm256_hadd_epi32(sums[2], sums[3]),
            _mm256_hadd_epi32(sums[4], sums[5]),
            _mm256_hadd_epi32(sums[6], sums[7]),
        ];
        let lo = _mm256_hadd_epi32(h[0], h[1]); // bsums 0, 2, 4, 6 | 1, 3, 5, 7
        let hi = _mm256_hadd_epi32(h[2], h[3]); // bsums 8, 10, 12, 14 | 9, 11, 13, 15
        let packed = _mm256_packs_epi32(lo, hi); // evens | odds, as i16 (|bsum| <= 2032)
        let (evens, odds) = (
            _mm256_castsi256_si128(packed),
            _mm256_extracti128_si256(packed, 1),
        );
        let bsums = y[4 + QK_K..].as_mut_ptr();
        _mm_storeu_si128(bsums.cast(), _mm_unpacklo_epi16(evens, odds));
        _mm_storeu_si128(bsums.add(16).cast(), _mm_unpackhi_epi16(evens, odds));
        y[..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
    }
}

/// F32 activations are the values themselves.
///
/// # Safety
/// `out` holds `x.len()` f32 values.
pub(super) unsafe fn f32_copy(x: &[f32], out: &mut [u8]) {
    debug_assert_eq!(out.len(), 4 * x.len());
    copy_nonoverlapping(x.as_ptr().cast::<u8>(), out.as_mut_ptr(), out.len());
}
