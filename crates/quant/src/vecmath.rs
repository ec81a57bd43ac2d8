//! Elementwise math of the non-matmul ops, vectorized: `exp` for softmax and SiLU.
//!
//! One algorithm, written twice: [`exp`] in scalar code (the reference, and the fallback on CPUs
//! without AVX2) and an AVX2 + FMA version that performs the same operations in the same order, so
//! the two give the same bits (checked by `tests/vecmath.rs` on random inputs).
//!
//! The algorithm is the classic Cody-Waite one (as in Cephes' `expf`): `x = n ln 2 + r` with
//! `n = round(x / ln 2)` and `|r| <= ln 2 / 2`, `ln 2` split in two parts so `r` is exact; `e^r` as
//! `1 + r + r² P(r)` with Cephes' degree-5 minimax polynomial; then the scale `2^n` built from its
//! exponent bits. Within 2 ulp of the true value over the normal range. Below `MIN_X` the result is
//! flushed to 0 (within 1.2e-38 of the true value), above `MAX_X` it is infinity; NaN gives NaN.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// `ln 2` in two parts: the first has few enough bits that `n · LN2_HI` is exact.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const P0: f32 = 1.987_569_1e-4;
const P1: f32 = 1.398_2e-3;
const P2: f32 = 8.333_452e-3;
const P3: f32 = 4.166_579_6e-2;
const P4: f32 = 1.666_666_5e-1;
const P5: f32 = 0.5; // Cephes: 5.0000001201e-1, which rounds to 0.5 in f32
/// `ln(f32::MAX)`: above it `e^x` overflows.
const MAX_X: f32 = 88.722_84;
/// Below this, `2^(n - 1)` would be subnormal; the result is flushed to 0.
const MIN_X: f32 = -86.6;

/// `e^x` (see the module docs for the accuracy).
#[inline]
pub fn exp(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x > MAX_X {
        return f32::INFINITY;
    }
    if x < MIN_X {
        return 0.0;
    }
    let n = (x * LOG2E).round_ties_even();
    let r = (-n).mul_add(LN2_HI, x);
    let r = (-n).mul_add(LN2_LO, r);
    let z = r * r;
    let p = P0
        .mul_add(r, P1)
        .mul_add(r, P2)
        .mul_add(r, P3)
        .mul_add(r, P4)
        .mul_add(r, P5);
    let y = p.mul_add(z, r) + 1.0;
    // 2^n as 2^(n - 1) · 2, so that n = 128 (x just under MAX_X) stays finite.
    let scale = f32::from_bits(((n as i32 + 126) as u32) << 23);
    y * scale * 2.0
}

/// `g[i] = silu(g[i]) · u[i]` with `silu(x) = x / (1 + e^-x)`. Panics if the lengths differ.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "silu_mul: lengths differ");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `avx2`).
        unsafe { silu_mul_avx2(g, u) };
        return;
    }
    silu_mul_scalar(g, u);
}

/// [`silu_mul`] in scalar code.
pub fn silu_mul_scalar(g: &mut [f32], u: &[f32]) {
    for (g, &u) in g.iter_mut().zip(u) {
        *g = *g / (1.0 + exp(-*g)) * u;
    }
}

/// `p[i] = e^(p[i] - max)`; returns the sum of the new values (in f64, as a softmax's divisor).
pub fn exp_sub_sum(p: &mut [f32], max: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked by `avx2`).
        return unsafe { exp_sub_sum_avx2(p, max) };
    }
    exp_sub_sum_scalar(p, max)
}

/// [`exp_sub_sum`] in scalar code.
pub fn exp_sub_sum_scalar(p: &mut [f32], max: f32) -> f64 {
    let mut sum = 0f64;
    for p in p.iter_mut() {
        *p = exp(*p - max);
        sum += f64::from(*p);
    }
    sum
}

/// Writes `src`, `nr` rows of `n` values, transposed: `dst[t * ld + r] = src[r * n + t]`.
///
/// # Safety
/// `src` holds `nr * n` values; `dst` is valid for writes at every `t * ld + r` (`t < n`,
/// `r < nr`), none of them overlapping `src`, and nothing else writes those elements meanwhile.
pub unsafe fn transpose_into(src: &[f32], nr: usize, n: usize, dst: *mut f32, ld: usize) {
    assert!(src.len() >= nr * n, "transpose_into: source too short");
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        // SAFETY: the CPU has AVX2 (checked by `avx2`); the rest is the caller's contract.
        unsafe { transpose_into_avx2(src, nr, n, dst, ld) };
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { transpose_block_scalar(src, n, 0..nr, 0..n, dst, ld) };
}

/// `dst[t * ld + r] = src[r * n + t]` for `r` in `rows`, `t` in `cols`, one value at a time.
///
/// # Safety
/// As [`transpose_into`], for the given rows and columns.
unsafe fn transpose_block_scalar(
    src: &[f32],
    n: usize,
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    dst: *mut f32,
    ld: usize,
) {
    for t in cols {
        for r in rows.clone() {
            // SAFETY: the caller's contract.
            unsafe { dst.add(t * ld + r).write(src[r * n + t]) };
        }
    }
}

/// [`transpose_into`] in 8 x 8 blocks of registers (an 8-row, 8-column block: eight loads, the
/// 8 x 8 transpose in 24 shuffles, eight stores), the edges one value at a time.
///
/// # Safety
/// The CPU has AVX2; as [`transpose_into`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn transpose_into_avx2(src: &[f32], nr: usize, n: usize, dst: *mut f32, ld: usize) {
    let (r8, t8) = (nr / 8 * 8, n / 8 * 8);
    let s = src.as_ptr();
    // Tokens outer: each block's eight stores continue the eight output rows the previous block
    // wrote (rows `ld` floats apart often alias one L1 set, so a row-outer order, which touches
    // every token's line per block of rows, missed on every store).
    for t in (0..t8).step_by(8) {
        for r in (0..r8).step_by(8) {
            let row = |i: usize| _mm256_loadu_ps(s.add((r + i) * n + t));
            let (a0, a1, a2, a3) = (row(0), row(1), row(2), row(3));
            let (a4, a5, a6, a7) = (row(4), row(5), row(6), row(7));
            let (b0, b1) = (_mm256_unpacklo_ps(a0, a1), _mm256_unpackhi_ps(a0, a1));
            let (b2, b3) = (_mm256_unpacklo_ps(a2, a3), _mm256_unpackhi_ps(a2, a3));
            let (b4, b5) = (_mm256_unpacklo_ps(a4, a5), _mm256_unpackhi_ps(a4, a5));
            let (b6, b7) = (_mm256_unpacklo_ps(a6, a7), _mm256_unpackhi_ps(a6, a7));
            let c0 = _mm256_shuffle_ps::<0x44>(b0, b2);
            let c1 = _mm256_shuffle_ps::<0xEE>(b0, b2);
            let c2 = _mm256_shuffle_ps::<0x44>(b1, b3);
            let c3 = _mm256_shuffle_ps::<0xEE>(b1, b3);
            let c4 = _mm256_shuffle_ps::<0x44>(b4, b6);
            let c5 = _mm256_shuffle_ps::<0xEE>(b4, b6);
            let c6 = _mm256_shuffle_ps::<0x44>(b5, b7);
            let c7 = _mm256_shuffle_ps::<0xEE>(b5, b7);
            let out = |i: usize, v: __m256| _mm256_storeu_ps(dst.add((t + i) * ld + r), v);
            out(0, _mm256_permute2f128_ps::<0x20>(c0, c4));
            out(1, _mm256_permute2f128_ps::<0x20>(c1, c5));
            out(2, _mm256_permute2f128_ps::<0x20>(c2, c6));
            out(3, _mm256_permute2f128_ps::<0x20>(c3, c7));
            out(4, _mm256_permute2f128_ps::<0x31>(c0, c4));
            out(5, _mm256_permute2f128_ps::<0x31>(c1, c5));
            out(6, _mm256_permute2f128_ps::<0x31>(c2, c6));
            out(7, _mm256_permute2f128_ps::<0x31>(c3, c7));
        }
    }
    transpose_block_scalar(src, n, 0..r8, t8..n, dst, ld);
    transpose_block_scalar(src, n, r8..nr, 0..n, dst, ld);
}

/// Whether the AVX2 versions may run: the CPU has AVX2 + FMA, and `RUSTORCH_ISA` does not cap the
/// choice at `scalar` (false off x86).
pub(crate) fn avx2() -> bool {
    use crate::kernels::Isa;
    matches!(Isa::detected(), Isa::Avx2 | Isa::Avx512Vnni)
}

/// [`exp`] of eight lanes, the same operations in the same order.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp8(x: __m256) -> __m256 {
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let z = _mm256_mul_ps(r, r);
    let mut p = _mm256_set1_ps(P0);
    for c in [P1, P2, P3, P4, P5] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0));
    let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(126),
    ));
    let e = _mm256_mul_ps(
        _mm256_mul_ps(y, _mm256_castsi256_ps(bits)),
        _mm256_set1_ps(2.0),
    );
    let e = _mm256_blendv_ps(
        e,
        _mm256_setzero_ps(),
        _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(MIN_X)),
    );
    let e = _mm256_blendv_ps(
        e,
        _mm256_set1_ps(f32::INFINITY),
        _mm256_cmp_ps::<_CMP_GT_OQ>(x, _mm256_set1_ps(MAX_X)),
    );
    _mm256_blendv_ps(e, x, _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x))
}

/// # Safety
/// The CPU has AVX2 and FMA; `u` is as long as `g`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(g: &mut [f32], u: &[f32]) {
    let n8 = g.len() / 8 * 8;
    let one = _mm256_set1_ps(1.0);
    for i in (0..n8).step_by(8) {
        let x = _mm256_loadu_ps(g.as_ptr().add(i));
        let e = exp8(_mm256_xor_ps(x, _mm256_set1_ps(-0.0)));
        let y = _mm256_mul_ps(
            _mm256_div_ps(x, _mm256_add_ps(one, e)),
            _mm256_loadu_ps(u.as_ptr().add(i)),
        );
        _mm256_storeu_ps(g.as_mut_ptr().add(i), y);
    }
    silu_mul_scalar(&mut g[n8..], &u[n8..]);
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(p: &mut [f32], max: f32) -> f64 {
    let n8 = p.len() / 8 * 8;
    let m = _mm256_set1_ps(max);
    let (mut lo, mut hi) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    for i in (0..n8).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.as_ptr().add(i)), m));
        _mm256_storeu_ps(p.as_mut_ptr().add(i), e);
        lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(e)));
    }
    let mut lanes = [0f64; 4];
    _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(lo, hi));
    lanes.iter().sum::<f64>() + exp_sub_sum_scalar(&mut p[n8..], max)
}
