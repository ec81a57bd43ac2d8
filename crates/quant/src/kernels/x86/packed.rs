//! Q4_0 in its load-time layout ([`crate::kernels::packed`]) against Q8_0 activations whose
//! blocks are transposed the same way, once per `gemm` call.
//!
//! Per group of eight blocks and token: eight `dpbusd`s leave the eight blocks' integer sums in
//! the eight lanes, `OFFSET · Σ a` (the activations' precomputed block sums) is taken off, and one
//! multiply-add scales them by `d_w · d_a`. The row-layout kernel (`legacy::dot_offset`) spends
//! about as much again on unpacking nibbles and reducing each block's lanes; here the unpacking is
//! a mask and a shift per 64 codes and the reduction happens once per row.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::legacy::{self, nibbles};
use super::repack::{self, transpose8, unroll8, Rows8};
use super::{f16x8_inserted, hsums, load, load128, splat_f16, Dot, RowKernel, Views};
use crate::kernels::packed::{GROUP, Q4_0_GROUP_BYTES};
use crate::legacy::{BlockQ4_0, BlockQ8_0};
use crate::GgmlType;

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
/// Bytes of one group of eight activation blocks once transposed: their codes only.
const ACT_GROUP_BYTES: usize = GROUP * 32;

/// Bytes of one activation row of `n_cols` values in the transposed layout: the groups' codes,
/// then the last `nb % 8` blocks unchanged.
pub(super) fn transposed_row_bytes(n_cols: usize) -> usize {
    let nb = n_cols / 32;
    nb / GROUP * ACT_GROUP_BYTES + nb % GROUP * Q8_0_BYTES
}

/// Rewrites `n_tok` Q8_0 activation rows (`a_row` bytes apart) into `out`: for each group of
/// eight blocks, vector `c` holds in lane `j` bytes `4c..4c + 4` of block `j`'s codes.
///
/// # Safety
/// AVX2 is available; `act` holds `n_tok` rows of `n_cols` Q8_0 values.
#[inline(always)]
pub(super) unsafe fn transpose_acts(
    act: &[u8],
    a_row: usize,
    n_tok: usize,
    n_cols: usize,
    out: &mut Vec<u8>,
) {
    let nb = n_cols / 32;
    let ng = nb / GROUP;
    let t_row = transposed_row_bytes(n_cols);
    out.clear();
    out.resize(n_tok * t_row, 0);
    for t in 0..n_tok {
        let src = act.as_ptr().add(t * a_row);
        let dst = out.as_mut_ptr().add(t * t_row);
        for g in 0..ng {
            let blocks: [__m256i; 8] =
                std::array::from_fn(|j| load(src.add((GROUP * g + j) * Q8_0_BYTES + Q8_0_QS)));
            for (c, v) in transpose8(blocks).into_iter().enumerate() {
                _mm256_storeu_si256(dst.add(g * ACT_GROUP_BYTES + 32 * c).cast(), v);
            }
        }
        let tail = nb % GROUP * Q8_0_BYTES;
        std::ptr::copy_nonoverlapping(
            src.add(ng * GROUP * Q8_0_BYTES),
            dst.add(ng * ACT_GROUP_BYTES),
            tail,
        );
    }
}

/// Q4_0 rows packed eight blocks to a group, against transposed Q8_0 activations.
pub(super) struct PackedQ4_0;

impl RowKernel for PackedQ4_0 {
    const WEIGHT: GgmlType = GgmlType::Q4_0;
    const ACT: GgmlType = GgmlType::Q8_0;
    const ACT_SCALES: bool = true;
    const PACKED: bool = true;
    const REPACK8: bool = true;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_packed::<D, 1, NT>([w], a, s, n_cols)[0]
    }

    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        dot_packed::<D, R, NT>(w, a, s, n_cols)
    }
}

/// `R` packed rows against `NT` transposed activation rows, the rows' groups interleaved: with
/// one token, rows far apart in memory are several streams, which two cores read much faster
/// than one stream each (see `DECODE_STREAMS`).
///
/// # Safety
/// As [`RowKernel::dot_row`], for each of the `R` packed rows and transposed activation rows.
#[inline(always)]
unsafe fn dot_packed<D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    a: [*const u8; NT],
    s: [*const f32; NT],
    n_cols: usize,
) -> [[f32; NT]; R] {
    let nb = n_cols / 32;
    let ng = nb / GROUP;
    let mask = _mm256_set1_epi8(0x0F);
    let offset = _mm256_set1_ps(8.0);
    let mut acc = [[_mm256_setzero_ps(); NT]; R];
    for g in 0..ng {
        for r in 0..R {
            let x = w[r].add(g * Q4_0_GROUP_BYTES);
            let dw = _mm256_cvtph_ps(load128(x));
            let mut q = [_mm256_setzero_si256(); 8];
            for k in 0..4 {
                let y = load(x.add(16 + 32 * k));
                q[k] = _mm256_and_si256(y, mask);
                q[4 + k] = _mm256_and_si256(_mm256_srli_epi16::<4>(y), mask);
            }
            unroll8!(NT, |t| {
                let y = a[t].add(g * ACT_GROUP_BYTES);
                let at = |c: usize| load(y.add(32 * c));
                let mut even = D::dpbusd(_mm256_setzero_si256(), q[0], at(0));
                let mut odd = D::dpbusd(_mm256_setzero_si256(), q[1], at(1));
                for k in (2..8).step_by(2) {
                    even = D::dpbusd(even, q[k], at(k));
                    odd = D::dpbusd(odd, q[k + 1], at(k + 1));
                }
                let sum = _mm256_cvtepi32_ps(_mm256_add_epi32(even, odd));
                // Σ (code - 8) a = Σ code·a - 8 Σ a; both integers, exact in f32.
                let sum = _mm256_fnmadd_ps(offset, _mm256_loadu_ps(s[t].add(nb + GROUP * g)), sum);
                let scale = _mm256_mul_ps(dw, _mm256_loadu_ps(s[t].add(GROUP * g)));
                acc[r][t] = _mm256_fmadd_ps(scale, sum, acc[r][t]);
            });
        }
    }
    // The last blocks, in the GGUF layout on both sides.
    for b in ng * GROUP..nb {
        for r in 0..R {
            let x = w[r].add(ng * Q4_0_GROUP_BYTES + (b - ng * GROUP) * Q4_0_BYTES);
            let q = nibbles(x.add(offset_of!(BlockQ4_0, qs)));
            let dw = splat_f16(x);
            for t in 0..NT {
                let y = a[t].add(ng * ACT_GROUP_BYTES + (b - ng * GROUP) * Q8_0_BYTES + Q8_0_QS);
                let sum = _mm256_cvtepi32_ps(D::dpbusd(_mm256_setzero_si256(), q, load(y)));
                // The block's Σ a in lane 0 only: it is subtracted once.
                let sum = _mm256_sub_ps(
                    sum,
                    _mm256_set_ps(0., 0., 0., 0., 0., 0., 0., 8.0 * *s[t].add(nb + b)),
                );
                let scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*s[t].add(b)));
                acc[r][t] = _mm256_fmadd_ps(scale, sum, acc[r][t]);
            }
        }
    }
    let mut out = [[0.0; NT]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsums(acc);
    }
    out
}

/// Packed Q4_0 rows for the eight-row prompt kernel ([`repack::gemm_rows8`]): the same scratch
/// layout as the GGUF-layout rows get (`repack::repack8`), made from the packed groups. Eight
/// rows' code vectors `k` of a group, transposed, are block by block the rows' codes `4k..4k + 4`
/// (the packed layout already holds each block's codes in one lane), so this costs one
/// transposition per code vector where the GGUF layout needs an unpacking per block as well.
pub(super) struct PackedQ4_0Rows;

impl Rows8 for PackedQ4_0Rows {
    const BLOCK: usize = 32;
    const PACKED: usize = repack::PACKED;

    #[inline(always)]
    unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
        let mask = _mm256_set1_epi8(0x0F);
        let ng = nb / GROUP;
        for g in 0..ng {
            let x = w.add(g * Q4_0_GROUP_BYTES);
            // codes[k][r]: row r's code vector k of this group (lane j: block j).
            let mut codes = [[_mm256_setzero_si256(); 8]; 8];
            for r in 0..8 {
                for k in 0..4 {
                    let y = load(x.add(r * w_row + 16 + 32 * k));
                    codes[k][r] = _mm256_and_si256(y, mask);
                    codes[4 + k][r] = _mm256_and_si256(_mm256_srli_epi16::<4>(y), mask);
                }
            }
            for (k, rows) in codes.into_iter().enumerate() {
                for (j, v) in transpose8(rows).into_iter().enumerate() {
                    let dst = out.add((GROUP * g + j) * repack::PACKED + 32 + 32 * k);
                    _mm256_storeu_si256(dst.cast(), v);
                }
            }
            for j in 0..GROUP {
                let dst = out.add((GROUP * g + j) * repack::PACKED);
                _mm256_storeu_ps(dst.cast(), f16x8_inserted(x.add(2 * j), w_row));
            }
        }
        // The last blocks are in the GGUF layout.
        repack::repack8::<legacy::Q4_0>(
            w.add(ng * Q4_0_GROUP_BYTES),
            w_row,
            nb % GROUP,
            out.add(ng * GROUP * repack::PACKED),
        );
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
        repack::tile8::<legacy::Q4_0, D, NT>(p, nb, v, t, n_tok, out)
    }
}
