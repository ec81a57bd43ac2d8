//! Q4_K with many tokens: eight weight rows at a time, repacked as [`super::repack`] does for
//! Q4_0 (one row per 32-bit lane of a `dpbusd`).
//!
//! Per super-block of eight rows the scratch copy holds the rows' `d` and `dmin` as f32, each
//! sub-block's eight 6-bit scales as i32 lanes and its eight mins as i16 pairs, then the codes
//! of each sub-block transposed in 4-byte chunks. Per token and sub-block, eight `dpbusd`s give
//! the eight rows' integer sums, one `vpmulld` weights them by the rows' scales, and one `madd`
//! of the mins with the token's two 16-value activation sums (`bsums`) gives the min term; the
//! float work is once per super-block for eight rows.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::kquants::scales_mins_k4;
use super::repack::{dpwssd512, load512, store16, transpose8, unroll8};
use super::{f16x8_inserted, load, Dot, Views};
use crate::kquants::{BlockQ4K, BlockQ8K};
use crate::QK_K;

const Q4K_BYTES: usize = size_of::<BlockQ4K>();
const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);

// Offsets in one repacked super-block of eight rows.
const P_D: usize = 0;
const P_DMIN: usize = 32;
/// Eight vectors (one per sub-block): the rows' scales as i32.
const P_SC: usize = 64;
/// Eight vectors: the rows' mins, each as two equal i16 in its 32-bit lane.
const P_M: usize = P_SC + 8 * 32;
/// 8 sub-blocks x 8 chunk vectors: lane `r` of vector `8s + k` is codes `4k..4k + 4` of
/// sub-block `s` of row `r`.
const P_QS: usize = P_M + 8 * 32;
const PACKED: usize = P_QS + 64 * 32;

/// Repacks eight rows of `nb` Q4_K super-blocks (`w_row` bytes apart from `w`) into `out`.
///
/// # Safety
/// AVX2 and F16C are available; `w` points to eight rows of `nb` super-blocks and `out` to
/// `nb * PACKED` writable bytes.
#[inline(always)]
unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    for b in 0..nb {
        let x = w.add(b * Q4K_BYTES);
        let dst = out.add(b * PACKED);
        let d = f16x8_inserted(x.add(offset_of!(BlockQ4K, d)), w_row);
        let dmin = f16x8_inserted(x.add(offset_of!(BlockQ4K, dmin)), w_row);
        _mm256_storeu_ps(dst.add(P_D).cast(), d);
        _mm256_storeu_ps(dst.add(P_DMIN).cast(), dmin);
        for r in 0..8 {
            let mut sm = [0u8; 16];
            let packed = scales_mins_k4(x.add(r * w_row + offset_of!(BlockQ4K, scales)));
            _mm_storeu_si128(sm.as_mut_ptr().cast(), packed);
            for s in 0..8 {
                let sc = dst.add(P_SC + 32 * s + 4 * r).cast::<i32>();
                sc.write_unaligned(i32::from(sm[s]));
                let m = i32::from(sm[8 + s]);
                dst.add(P_M + 32 * s + 4 * r)
                    .cast::<i32>()
                    .write_unaligned(m | (m << 16));
            }
        }
        for g in 0..QK_K / 64 {
            let mut lo = [_mm256_setzero_si256(); 8];
            let mut hi = [_mm256_setzero_si256(); 8];
            for r in 0..8 {
                let bits = load(x.add(r * w_row + offset_of!(BlockQ4K, qs) + 32 * g));
                lo[r] = _mm256_and_si256(bits, m4);
                hi[r] = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            }
            for (s, c) in [(2 * g, lo), (2 * g + 1, hi)] {
                for (k, v) in transpose8(c).into_iter().enumerate() {
                    _mm256_storeu_si256(dst.add(P_QS + 32 * (8 * s + k)).cast(), v);
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
        let mut msum = [_mm256_setzero_si256(); NT];
        for s in 0..QK_K / 32 {
            let mut q = [_mm256_setzero_si256(); 8];
            for (k, q) in q.iter_mut().enumerate() {
                *q = load(pb.add(P_QS + 32 * (8 * s + k)));
            }
            let sc = load(pb.add(P_SC + 32 * s));
            let m = load(pb.add(P_M + 32 * s));
            unroll8!(NT, |i| {
                let y = a[i].add(b * Q8K_BYTES);
                let qs = y.add(Q8K_QS + 32 * s);
                let chunk =
                    |k: usize| _mm256_set1_epi32(qs.add(4 * k).cast::<i32>().read_unaligned());
                let mut even = D::dpbusd(_mm256_setzero_si256(), q[0], chunk(0));
                let mut odd = D::dpbusd(_mm256_setzero_si256(), q[1], chunk(1));
                for k in (2..8).step_by(2) {
                    even = D::dpbusd(even, q[k], chunk(k));
                    odd = D::dpbusd(odd, q[k + 1], chunk(k + 1));
                }
                let sum = _mm256_add_epi32(even, odd);
                isum[i] = _mm256_add_epi32(isum[i], _mm256_mullo_epi32(sum, sc));
                // The sub-block's two 16-value sums, as an i16 pair in every lane.
                let bs = y.add(Q8K_BSUMS + 4 * s).cast::<i32>().read_unaligned();
                msum[i] = D::dpwssd(msum[i], m, _mm256_set1_epi32(bs));
            });
        }
        let d = _mm256_loadu_ps(pb.add(P_D).cast());
        let dmin = _mm256_loadu_ps(pb.add(P_DMIN).cast());
        for i in 0..NT {
            let dy = _mm256_broadcast_ss(&*a[i].add(b * Q8K_BYTES + Q8K_D).cast::<f32>());
            let mins = _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(msum[i]));
            let sum = _mm256_fmsub_ps(d, _mm256_cvtepi32_ps(isum[i]), mins);
            acc[i] = _mm256_fmadd_ps(dy, sum, acc[i]);
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
        let mut msum = [_mm512_setzero_si512(); NT];
        for s in 0..QK_K / 32 {
            let mut q = [_mm512_setzero_si512(); 8];
            for (k, q) in q.iter_mut().enumerate() {
                *q = load512(pb.add(2 * (P_QS + 32 * (8 * s + k))));
            }
            let sc = load512(pb.add(2 * (P_SC + 32 * s)));
            let m = load512(pb.add(2 * (P_M + 32 * s)));
            unroll8!(NT, |i| {
                let y = a[i].add(b * Q8K_BYTES);
                let qs = y.add(Q8K_QS + 32 * s);
                let chunk =
                    |k: usize| _mm512_set1_epi32(qs.add(4 * k).cast::<i32>().read_unaligned());
                let mut even = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], chunk(0));
                let mut odd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[1], chunk(1));
                for k in (2..8).step_by(2) {
                    even = _mm512_dpbusd_epi32(even, q[k], chunk(k));
                    odd = _mm512_dpbusd_epi32(odd, q[k + 1], chunk(k + 1));
                }
                let sum = _mm512_add_epi32(even, odd);
                isum[i] = _mm512_add_epi32(isum[i], _mm512_mullo_epi32(sum, sc));
                let bs = y.add(Q8K_BSUMS + 4 * s).cast::<i32>().read_unaligned();
                msum[i] = dpwssd512(msum[i], m, _mm512_set1_epi32(bs));
            });
        }
        let d = _mm512_loadu_ps(pb.add(2 * P_D).cast());
        let dmin = _mm512_loadu_ps(pb.add(2 * P_DMIN).cast());
        for i in 0..NT {
            let dy = _mm512_set1_ps(*a[i].add(b * Q8K_BYTES + Q8K_D).cast::<f32>());
            let mins = _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(msum[i]));
            let sum = _mm512_fmsub_ps(d, _mm512_cvtepi32_ps(isum[i]), mins);
            acc[i] = _mm512_fmadd_ps(dy, sum, acc[i]);
        }
    }
    store16(&acc, t, n_tok, out);
}

/// Q4_K rows for the eight-row prompt kernel.
pub(super) struct Q4KRows;

impl super::repack::Rows8 for Q4KRows {
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
