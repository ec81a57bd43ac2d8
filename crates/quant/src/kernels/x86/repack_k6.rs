//! Q6_K with many tokens: eight weight rows at a time, repacked as [`super::repack_k4`] does for
//! Q4_K (one row per 32-bit lane of a `dpbusd`).
//!
//! Per super-block of eight rows the scratch copy holds the rows' `d` as f32, each 16-weight
//! sub-block's eight scales as i32 lanes, the scales again as i16 pairs (sub-blocks `2g`, `2g + 1`)
//! for the offset term, then the 6-bit codes (`q + 32`) transposed in 4-byte chunks. Per token and
//! 32 weights: eight `dpbusd`s, two `vpmulld`s by the scales, and one `madd` of the scale pairs
//! with the token's `bsums` for `32 Σ sc·bsum`, which is subtracted once per super-block.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::repack::{dpwssd512, load512, store16, transpose8, unroll8};
use super::{f16x8_inserted, load, Dot, Views};
use crate::kquants::{BlockQ6K, BlockQ8K};
use crate::QK_K;

const Q6K_BYTES: usize = size_of::<BlockQ6K>();
const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);

// Offsets in one repacked super-block of eight rows.
const P_D: usize = 0;
/// Sixteen vectors (one per 16-weight sub-block): the rows' scales as i32.
const P_SC: usize = 32;
/// Eight vectors: lane `r` of vector `g` is the scales of sub-blocks `2g`, `2g + 1` of row `r`
/// as two i16.
const P_SC2: usize = P_SC + 16 * 32;
/// 8 groups of 32 weights x 8 chunk vectors: lane `r` of vector `8g + k` is codes
/// `32g + 4k..32g + 4k + 4` of row `r`.
const P_QS: usize = P_SC2 + 8 * 32;
const PACKED: usize = P_QS + 64 * 32;

/// Repacks eight rows of `nb` Q6_K super-blocks (`w_row` bytes apart from `w`) into `out`.
///
/// # Safety
/// AVX2 and F16C are available; `w` points to eight rows of `nb` super-blocks and `out` to
/// `nb * PACKED` writable bytes.
#[inline(always)]
unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    let m3 = _mm256_set1_epi8(3);
    for b in 0..nb {
        let x = w.add(b * Q6K_BYTES);
        let dst = out.add(b * PACKED);
        let d = f16x8_inserted(x.add(offset_of!(BlockQ6K, d)), w_row);
        _mm256_storeu_ps(dst.add(P_D).cast(), d);
        for r in 0..8 {
            let sc = x.add(r * w_row + offset_of!(BlockQ6K, scales)).cast::<i8>();
            for j in 0..QK_K / 16 {
                let s = i32::from(*sc.add(j));
                dst.add(P_SC + 32 * j + 4 * r)
                    .cast::<i32>()
                    .write_unaligned(s);
                let at = dst.add(P_SC2 + 32 * (j / 2) + 4 * r + 2 * (j % 2));
                at.cast::<i16>().write_unaligned(s as i16);
            }
        }
        for h in 0..QK_K / 128 {
            // Weight 128h + 32i + l: low 4 bits in ql[64h + 32(i % 2) + l] (nibble i / 2),
            // high 2 bits in qh[32h + l] (bits 2i, 2i + 1).
            let mut u = [[_mm256_setzero_si256(); 8]; 4];
            for r in 0..8 {
                let xr = x.add(r * w_row);
                let ql = [
                    load(xr.add(offset_of!(BlockQ6K, ql) + 64 * h)),
                    load(xr.add(offset_of!(BlockQ6K, ql) + 64 * h + 32)),
                ];
                let mut qh = load(xr.add(offset_of!(BlockQ6K, qh) + 32 * h));
                for (i, u) in u.iter_mut().enumerate() {
                    let low = if i < 2 {
                        _mm256_and_si256(ql[i], m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql[i - 2], 4), m4)
                    };
                    let high = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                    qh = _mm256_srli_epi16(qh, 2);
                    u[r] = _mm256_or_si256(low, high);
                }
            }
            for (i, u) in u.into_iter().enumerate() {
                let g = 4 * h + i;
                for (k, v) in transpose8(u).into_iter().enumerate() {
                    _mm256_storeu_si256(dst.add(P_QS + 32 * (8 * g + k)).cast(), v);
                }
            }
        }
    }
}

/// `out[r * n_tok + t]` for the eight repacked rows at `p` and tokens `t..t + NT` of `v`.
///
/// # Safety
/// As [`gemm_rows8`]; `p` holds `nb` repacked super-blocks; tokens `t..t + NT` exist.
#[inline(always)]
unsafe fn tile8<D: Dot, const NT: usize>(
    p: *const u8,
    nb: usize,
    v: &Views,
    t: usize,
    n_tok: usize,
    out: *mut f32,
) {
    let a: [*const u8; NT] = std::array::from_fn(|i| v.act.add((t + i) * v.a_row));
    let mut acc = [_mm256_setzero_ps(); NT];
    for b in 0..nb {
        let pb = p.add(b * PACKED);
        let mut isum = [_mm256_setzero_si256(); NT];
        let mut osum = [_mm256_setzero_si256(); NT];
        for g in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 8];
            for (k, q) in q.iter_mut().enumerate() {
                *q = load(pb.add(P_QS + 32 * (8 * g + k)));
            }
            let sc_lo = load(pb.add(P_SC + 32 * (2 * g)));
            let sc_hi = load(pb.add(P_SC + 32 * (2 * g + 1)));
            let sc2 = load(pb.add(P_SC2 + 32 * g));
            unroll8!(NT, |i| {
                let y = a[i].add(b * Q8K_BYTES);
                let qs = y.add(Q8K_QS + 32 * g);
                let chunk =
                    |k: usize| _mm256_set1_epi32(qs.add(4 * k).cast::<i32>().read_unaligned());
                let mut lo = D::dpbusd(_mm256_setzero_si256(), q[0], chunk(0));
                let mut hi = D::dpbusd(_mm256_setzero_si256(), q[4], chunk(4));
                for k in 1..4 {
                    lo = D::dpbusd(lo, q[k], chunk(k));
                    hi = D::dpbusd(hi, q[k + 4], chunk(k + 4));
                }
                let scaled =
                    _mm256_add_epi32(_mm256_mullo_epi32(lo, sc_lo), _mm256_mullo_epi32(hi, sc_hi));
                isum[i] = _mm256_add_epi32(isum[i], scaled);
                // The two sub-blocks' 16-value sums, as an i16 pair in every lane.
                let bs = y.add(Q8K_BSUMS + 4 * g).cast::<i32>().read_unaligned();
                osum[i] = D::dpwssd(osum[i], sc2, _mm256_set1_epi32(bs));
            });
        }
        let d = _mm256_loadu_ps(pb.add(P_D).cast());
        for i in 0..NT {
            let dy = _mm256_broadcast_ss(&*a[i].add(b * Q8K_BYTES + Q8K_D).cast::<f32>());
            // Codes are q + 32: subtract 32 Σ sc·bsum.
            let sum = _mm256_sub_epi32(isum[i], _mm256_slli_epi32::<5>(osum[i]));
            acc[i] = _mm256_fmadd_ps(_mm256_mul_ps(d, dy), _mm256_cvtepi32_ps(sum), acc[i]);
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
        for (r, &x) in lanes.iter().enumerate() {
            *out.add(r * n_tok + t + i) = x;
        }
    }
}

/// [`tile8`] on two interleaved groups ([`super::repack::Rows8::tile16`]): every offset of the
/// repacked layout doubled, the second group in the high halves.
///
/// # Safety
/// As [`super::repack::Rows8::tile16`].
#[inline(always)]
unsafe fn tile16<const NT: usize>(
    p: *const u8,
    nb: usize,
    v: &Views,
    t: usize,
    n_tok: usize,
    out: *mut f32,
) {
    let a: [*const u8; NT] = std::array::from_fn(|i| v.act.add((t + i) * v.a_row));
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let pb = p.add(b * 2 * PACKED);
        let mut isum = [_mm512_setzero_si512(); NT];
        let mut osum = [_mm512_setzero_si512(); NT];
        for g in 0..QK_K / 32 {
            let mut q = [_mm512_setzero_si512(); 8];
            for (k, q) in q.iter_mut().enumerate() {
                *q = load512(pb.add(2 * (P_QS + 32 * (8 * g + k))));
            }
            let sc_lo = load512(pb.add(2 * (P_SC + 32 * (2 * g))));
            let sc_hi = load512(pb.add(2 * (P_SC + 32 * (2 * g + 1))));
            let sc2 = load512(pb.add(2 * (P_SC2 + 32 * g)));
            unroll8!(NT, |i| {
                let y = a[i].add(b * Q8K_BYTES);
                let qs = y.add(Q8K_QS + 32 * g);
                let chunk =
                    |k: usize| _mm512_set1_epi32(qs.add(4 * k).cast::<i32>().read_unaligned());
                let mut lo = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], chunk(0));
                let mut hi = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[4], chunk(4));
                for k in 1..4 {
                    lo = _mm512_dpbusd_epi32(lo, q[k], chunk(k));
                    hi = _mm512_dpbusd_epi32(hi, q[k + 4], chunk(k + 4));
                }
                let scaled =
                    _mm512_add_epi32(_mm512_mullo_epi32(lo, sc_lo), _mm512_mullo_epi32(hi, sc_hi));
                isum[i] = _mm512_add_epi32(isum[i], scaled);
                let bs = y.add(Q8K_BSUMS + 4 * g).cast::<i32>().read_unaligned();
                osum[i] = dpwssd512(osum[i], sc2, _mm512_set1_epi32(bs));
            });
        }
        let d = _mm512_loadu_ps(pb.add(2 * P_D).cast());
        for i in 0..NT {
            let dy = _mm512_set1_ps(*a[i].add(b * Q8K_BYTES + Q8K_D).cast::<f32>());
            let sum = _mm512_sub_epi32(isum[i], _mm512_slli_epi32::<5>(osum[i]));
            acc[i] = _mm512_fmadd_ps(_mm512_mul_ps(d, dy), _mm512_cvtepi32_ps(sum), acc[i]);
        }
    }
    store16(&acc, t, n_tok, out);
}

/// Q6_K rows for the eight-row prompt kernel.
pub(super) struct Q6KRows;

impl super::repack::Rows8 for Q6KRows {
    const BLOCK: usize = QK_K;
    const PACKED: usize = PACKED;
    #[inline(always)]
    unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
        repack8(w, w_row, nb, out)
    }
    #[inline(always)]
    unsafe fn tile8<D: Dot, const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    ) {
        tile8::<D, NT>(p, nb, v, t, n_tok, out)
    }
    #[inline(always)]
    unsafe fn tile16<const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    ) {
        tile16::<NT>(p, nb, v, t, n_tok, out)
    }
}
