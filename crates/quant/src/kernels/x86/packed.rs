//! Q4_0 and Q4_K in their load-time layouts ([`crate::kernels::packed`]) against Q8_0 / Q8_K
//! activations whose codes are transposed the same way, once per `gemm` call.
//!
//! Per group of eight blocks and token: eight `dpbusd`s leave the eight blocks' integer sums in
//! the eight lanes, `OFFSET · Σ a` (the activations' precomputed block sums) is taken off, and one
//! multiply-add scales them by `d_w · d_a`. The row-layout kernel (`legacy::dot_offset`) spends
//! about as much again on unpacking nibbles and reducing each block's lanes; here the unpacking is
//! a mask and a shift per 64 codes and the reduction happens once per row.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::kquants::scales_mins_k4;
use super::legacy::{self, nibbles};
use super::repack::{self, transpose8, unroll8, Rows8};
use super::{
    f16x8_inserted, hsums, load, load128, repack_k4, splat_f16, splat_f32, Dot, RowKernel, Views,
};
use crate::kernels::packed::{GROUP, Q4_0_GROUP_BYTES};
use crate::kquants::{BlockQ4K, BlockQ8K};
use crate::legacy::{BlockQ4_0, BlockQ8_0};
use crate::{GgmlType, QK_K};

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
/// Bytes of one group of eight activation blocks once transposed: their codes only.
const ACT_GROUP_BYTES: usize = GROUP * 32;

/// Bytes of one activation row of `n_cols` values in the transposed layout: the groups' codes,
/// then the last `nb % 8` blocks unchanged.
fn transposed_row_bytes(n_cols: usize) -> usize {
    let nb = n_cols / 32;
    nb / GROUP * ACT_GROUP_BYTES + nb % GROUP * Q8_0_BYTES
}

/// Rewrites `n_tok` Q8_0 activation rows (`a_row` bytes apart) into `out`: for each group of
/// eight blocks, vector `c` holds in lane `j` bytes `4c..4c + 4` of block `j`'s codes.
///
/// # Safety
/// AVX2 is available; `act` holds `n_tok` rows of `n_cols` Q8_0 values.
#[inline(always)]
unsafe fn transpose_acts(act: &[u8], a_row: usize, n_tok: usize, n_cols: usize, out: &mut Vec<u8>) {
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
    const FEW_TOKENS: usize = 16;

    #[inline(always)]
    unsafe fn pack_acts(
        act: &[u8],
        a_row: usize,
        n_tok: usize,
        n_cols: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        transpose_acts(act, a_row, n_tok, n_cols, out);
        transposed_row_bytes(n_cols)
    }

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
            super::prefetch_ahead::<192>(x);
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

    // `codes[k][r]` and `codes[4 + k][r]` are filled from one load: indices read clearer here.
    #[allow(clippy::needless_range_loop)]
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

    #[inline(always)]
    unsafe fn tile16<const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    ) {
        repack::tile16::<legacy::Q4_0, NT>(p, nb, v, t, n_tok, out)
    }
}

const Q4K_BYTES: usize = size_of::<BlockQ4K>();
const Q4K_QS: usize = offset_of!(BlockQ4K, qs);
const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);
const _: () = assert!(Q4K_QS == 16 && offset_of!(BlockQ4K, dmin) == 2);

std::thread_local! {
    /// Eight rows of a packed Q4_K tile put back in the GGUF layout for the prompt kernel.
    static Q4K_ROWS_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Q4_K rows packed per super-block ([`crate::kernels::packed::pack_q4_k`]) against Q8_K
/// activations whose codes are transposed per super-block (lane `l` of vector `c`: codes
/// `4c..4c + 4` of sub-block `l`); `d` and `bsums` stay where Q8_K has them.
///
/// Per super-block and token, eight `dpbusd`s give the eight sub-blocks' integer sums in the
/// eight lanes and one `vpmulld` weights them by the eight scales; the min term is the `madd` of
/// the mins with the activation's `bsums`. Then:
/// - up to three tokens ([`dot_lanes_k4`]; decode): two multiply-adds per token apply `d_w d_a`
///   and `dmin_w d_a` to the lanes, which are added up once per row;
/// - four to eight tokens, starting at a multiple of eight ([`dot_packed_k4`]): the tokens' lane
///   sums side by side (`S`, lane `t`: token `t`), the min terms as four `madd`s of the row's mins
///   with a table of the tokens' sub-block `bsums` (`M`, lane `t` again; see [`TOKEN_TABLE`]),
///   and one multiply-add each for all the tokens' `d_w d_a S` and `dmin_w d_a M`. Per token and
///   super-block that leaves the eight `dpbusd`s and one `vpmulld` (against about fourteen
///   operations on the multiply ports with lanes per sub-block), and the row's unpacking is
///   shared by every token. `S` and `M` are exact integers, so this rounds once per super-block
///   where the lanes round once per sub-block: the results differ from one-token calls in the
///   last bits, both within float rounding of the reference.
///
/// The row-layout kernel (`kquants::dot_k4`) needs a shuffle per 32 weights to splat the scales,
/// and `maddubs` plus `dpwssd` for each 32 products.
pub(super) struct PackedQ4K;

/// Floats per token and super-block of the table [`PackedQ4K`]'s `pack_acts` writes after the
/// activation rows (once per `gemm` call): per chunk of eight tokens and super-block, the eight
/// tokens' `d` (f32), then four vectors whose lane `t` holds token `t`'s sub-block sums `B_2k`,
/// `B_2k+1` as an i16 pair (`B_l = bsums_2l + bsums_2l+1`, at most 32 · 127 in magnitude).
/// Tokens past the last are zero.
const TOKEN_TABLE: usize = 5;
/// Floats of one chunk's entry for one super-block.
const TABLE_ENTRY: usize = 8 * TOKEN_TABLE;

impl RowKernel for PackedQ4K {
    const WEIGHT: GgmlType = GgmlType::Q4_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    const PACKED: bool = true;
    const REPACK8: bool = true;
    const FEW_TOKENS: usize = 16;
    const TOKEN_TABLE: usize = TOKEN_TABLE;

    #[inline(always)]
    unsafe fn pack_acts(
        act: &[u8],
        a_row: usize,
        n_tok: usize,
        n_cols: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let nb = n_cols / QK_K;
        out.clear();
        out.extend_from_slice(&act[..n_tok * a_row]);
        for block in out.chunks_exact_mut(Q8K_BYTES) {
            let qs = block.as_mut_ptr().add(Q8K_QS);
            let rows: [__m256i; 8] = std::array::from_fn(|l| load(qs.add(32 * l)));
            for (c, v) in transpose8(rows).into_iter().enumerate() {
                _mm256_storeu_si256(qs.add(32 * c).cast(), v);
            }
        }
        let chunks = n_tok.div_ceil(8);
        out.resize(n_tok * a_row + 4 * chunks * nb * TABLE_ENTRY, 0);
        let table = out.as_mut_ptr().add(n_tok * a_row).cast::<u32>();
        for t in 0..n_tok {
            let (c, lane) = (t / 8, t % 8);
            for b in 0..nb {
                let y = act.as_ptr().add(t * a_row + b * Q8K_BYTES);
                let entry = table.add((c * nb + b) * TABLE_ENTRY + lane);
                entry.write_unaligned(y.add(Q8K_D).cast::<u32>().read_unaligned());
                let bsum = |i: usize| y.add(Q8K_BSUMS + 2 * i).cast::<i16>().read_unaligned();
                for k in 0..4 {
                    let pair = |l: usize| bsum(2 * l).wrapping_add(bsum(2 * l + 1)) as u16 as u32;
                    let v = pair(2 * k) | (pair(2 * k + 1) << 16);
                    entry.add(8 * (1 + k)).write_unaligned(v);
                }
            }
        }
        a_row
    }

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_packed_k4::<D, 1, NT>([w], a, s, n_cols)[0]
    }

    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        dot_packed_k4::<D, R, NT>(w, a, s, n_cols)
    }
}

/// One packed Q4_K super-block, unpacked.
struct UnpackedK4 {
    /// Vector `c`, lane `l`: codes `4c..4c + 4` of sub-block `l`.
    q: [__m256i; 8],
    /// Lane `l`: the scale of sub-block `l`.
    sc: __m256i,
    /// i32 lane `k`: the mins of sub-blocks `2k`, `2k + 1` as an i16 pair.
    min_pairs: __m128i,
    /// i32 lane `l`: the min of sub-block `l`, twice (for a `madd` with `bsums`).
    mins: __m256i,
    /// `d` and `dmin` in every lane.
    d: __m256,
    dmin: __m256,
}

/// # Safety
/// AVX2 and F16C are available; `x` points to a packed super-block.
#[inline(always)]
unsafe fn unpack_k4(x: *const u8) -> UnpackedK4 {
    let m4 = _mm256_set1_epi8(0x0F);
    let sm = scales_mins_k4(x.add(offset_of!(BlockQ4K, scales)));
    let mut q = [_mm256_setzero_si256(); 8];
    for m in 0..4 {
        let v = load(x.add(Q4K_QS + 32 * m));
        q[2 * m] = _mm256_and_si256(v, m4);
        q[2 * m + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
    }
    UnpackedK4 {
        q,
        sc: _mm256_cvtepu8_epi32(sm),
        min_pairs: _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm)),
        mins: _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)), // m0 m0 m1 m1 .. m7 m7
        d: splat_f16(x),
        dmin: splat_f16(x.add(2)),
    }
}

/// The scaled sub-block sums `sc_l Σ q·a` of one token's super-block at `y` (lane `l`).
///
/// # Safety
/// As [`dot_packed_k4`]; `y` points to a transposed Q8_K block.
#[inline(always)]
unsafe fn scaled_sums<D: Dot>(u: &UnpackedK4, y: *const u8) -> __m256i {
    let at = |c: usize| load(y.add(Q8K_QS + 32 * c));
    let mut even = D::dpbusd(_mm256_setzero_si256(), u.q[0], at(0));
    let mut odd = D::dpbusd(_mm256_setzero_si256(), u.q[1], at(1));
    for c in (2..8).step_by(2) {
        even = D::dpbusd(even, u.q[c], at(c));
        odd = D::dpbusd(odd, u.q[c + 1], at(c + 1));
    }
    // Per sub-block: |Σ q·a| <= 32 · 15 · 127, times a 6-bit scale; all eight fit an i32.
    _mm256_mullo_epi32(_mm256_add_epi32(even, odd), u.sc)
}

/// Lane `t` of the result: the sum of the eight lanes of `v[t]` (zero past `NT`).
#[inline(always)]
unsafe fn lane_sums<const NT: usize>(v: [__m256i; NT]) -> __m256i {
    let mut x = [_mm256_setzero_si256(); 8];
    x[..NT].copy_from_slice(&v);
    // Per 128-bit half: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] of a = x[2i], b = x[2i + 1].
    let p: [__m256i; 4] = [
        pair_sums(x[0], x[1]),
        pair_sums(x[2], x[3]),
        pair_sums(x[4], x[5]),
        pair_sums(x[6], x[7]),
    ];
    // Per half: that half's sums of x[4j], .., x[4j + 3].
    let lo = _mm256_add_epi32(
        _mm256_unpacklo_epi64(p[0], p[1]),
        _mm256_unpackhi_epi64(p[0], p[1]),
    );
    let hi = _mm256_add_epi32(
        _mm256_unpacklo_epi64(p[2], p[3]),
        _mm256_unpackhi_epi64(p[2], p[3]),
    );
    _mm256_add_epi32(
        _mm256_permute2x128_si256::<0x20>(lo, hi),
        _mm256_permute2x128_si256::<0x31>(lo, hi),
    )
}

/// Per 128-bit half: `[a0 + a2, b0 + b2, a1 + a3, b1 + b3]`.
#[inline(always)]
unsafe fn pair_sums(a: __m256i, b: __m256i) -> __m256i {
    _mm256_add_epi32(_mm256_unpacklo_epi32(a, b), _mm256_unpackhi_epi32(a, b))
}

/// [`dot_packed_k4`] with up to three tokens: float sums per sub-block lane, added up at the
/// end.
///
/// # Safety
/// As [`dot_packed_k4`].
#[inline(always)]
unsafe fn dot_lanes_k4<D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    a: [*const u8; NT],
    n_cols: usize,
) -> [[f32; NT]; R] {
    let mut acc = [[_mm256_setzero_ps(); NT]; R];
    for b in 0..n_cols / QK_K {
        unroll8!(R, |r| {
            super::prefetch_ahead::<192>(w[r].add(b * Q4K_BYTES));
            let u = unpack_k4(w[r].add(b * Q4K_BYTES));
            unroll8!(NT, |t| {
                let y = a[t].add(b * Q8K_BYTES);
                let sums = scaled_sums::<D>(&u, y);
                let min_sums = _mm256_madd_epi16(load(y.add(Q8K_BSUMS)), u.mins);
                let dy = splat_f32(y.add(Q8K_D));
                let acc_rt =
                    _mm256_fmadd_ps(_mm256_mul_ps(u.d, dy), _mm256_cvtepi32_ps(sums), acc[r][t]);
                acc[r][t] = _mm256_fnmadd_ps(
                    _mm256_mul_ps(u.dmin, dy),
                    _mm256_cvtepi32_ps(min_sums),
                    acc_rt,
                );
            });
        });
    }
    let mut out = [[0.0; NT]; R];
    for (o, acc) in out.iter_mut().zip(acc) {
        *o = hsums(acc);
    }
    out
}

/// `R` packed Q4_K rows against `NT` transposed Q8_K rows (see [`PackedQ4K`]), super-blocks of
/// the rows interleaved (several streams, as [`dot_packed`]).
///
/// # Safety
/// As [`RowKernel::dot_row`], for each of the `R` packed rows and transposed activation rows;
/// with `NT >= 4` (at most 8), `s[0]` points to the [`TOKEN_TABLE`] chunk of the tokens, the
/// first of which is its first.
#[inline(always)]
unsafe fn dot_packed_k4<D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    a: [*const u8; NT],
    s: [*const f32; NT],
    n_cols: usize,
) -> [[f32; NT]; R] {
    if NT < 4 {
        return dot_lanes_k4::<D, R, NT>(w, a, n_cols);
    }
    let mut out = [[0.0; NT]; R];
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..n_cols / QK_K {
        let entry = s[0].add(b * TABLE_ENTRY);
        let dy = _mm256_loadu_ps(entry);
        let bsum_pairs: [__m256i; 4] = std::array::from_fn(|k| load(entry.add(8 + 8 * k).cast()));
        unroll8!(R, |r| {
            super::prefetch_ahead::<192>(w[r].add(b * Q4K_BYTES));
            let u = unpack_k4(w[r].add(b * Q4K_BYTES));
            let mp = u.min_pairs;
            let min_pairs = [
                _mm256_broadcastd_epi32(mp),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32::<0x55>(mp)),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32::<0xAA>(mp)),
                _mm256_broadcastd_epi32(_mm_shuffle_epi32::<0xFF>(mp)),
            ];
            // Lane `t`: Σ_l m_l B_l of token `t`.
            let mut min_sums = _mm256_madd_epi16(bsum_pairs[0], min_pairs[0]);
            for k in 1..4 {
                min_sums = D::dpwssd(min_sums, bsum_pairs[k], min_pairs[k]);
            }
            let mut sums = [_mm256_setzero_si256(); NT];
            unroll8!(NT, |t| {
                sums[t] = scaled_sums::<D>(&u, a[t].add(b * Q8K_BYTES));
            });
            let sums = _mm256_cvtepi32_ps(lane_sums(sums));
            let acc_r = _mm256_fmadd_ps(_mm256_mul_ps(u.d, dy), sums, acc[r]);
            acc[r] = _mm256_fnmadd_ps(
                _mm256_mul_ps(u.dmin, dy),
                _mm256_cvtepi32_ps(min_sums),
                acc_r,
            );
        });
    }
    for (o, acc) in out.iter_mut().zip(acc) {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        o.copy_from_slice(&lanes[..NT]);
    }
    out
}

/// Packed Q4_K rows for the eight-row prompt kernel: put back in the GGUF layout (eight rows at a
/// time, into a per-thread buffer), then repacked as [`repack_k4::Q4KRows`] repacks them.
pub(super) struct PackedQ4KRows;

impl Rows8 for PackedQ4KRows {
    const BLOCK: usize = QK_K;
    const PACKED: usize = <repack_k4::Q4KRows as Rows8>::PACKED;

    #[inline(always)]
    unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
        let row = nb * Q4K_BYTES;
        let mut buf = Q4K_ROWS_BUF.take();
        buf.clear();
        buf.resize(8 * row, 0);
        for r in 0..8 {
            for b in 0..nb {
                unpack_q4k_block(
                    w.add(r * w_row + b * Q4K_BYTES),
                    buf.as_mut_ptr().add(r * row + b * Q4K_BYTES),
                );
            }
        }
        <repack_k4::Q4KRows as Rows8>::repack8(buf.as_ptr(), row, nb, out);
        Q4K_ROWS_BUF.set(buf);
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
        <repack_k4::Q4KRows as Rows8>::tile8::<D, NT>(p, nb, v, t, n_tok, out)
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
        <repack_k4::Q4KRows as Rows8>::tile16::<NT>(p, nb, v, t, n_tok, out)
    }
}

/// One packed Q4_K super-block at `x` back in the GGUF layout at `dst`.
///
/// # Safety
/// AVX2 is available; `x` and `dst` point to a super-block's bytes.
#[inline(always)]
unsafe fn unpack_q4k_block(x: *const u8, dst: *mut u8) {
    let m4 = _mm256_set1_epi8(0x0F);
    std::ptr::copy_nonoverlapping(x, dst, Q4K_QS);
    // Chunk vector `c`, lane `l`: codes `4c..4c + 4` of sub-block `l`.
    let mut chunks = [_mm256_setzero_si256(); 8];
    for m in 0..4 {
        let v = load(x.add(Q4K_QS + 32 * m));
        chunks[2 * m] = _mm256_and_si256(v, m4);
        chunks[2 * m + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(v), m4);
    }
    // Vector `s`: the 32 codes of sub-block `s` in order.
    let subs = transpose8(chunks);
    for j in 0..4 {
        let bytes = _mm256_or_si256(subs[2 * j], _mm256_slli_epi16::<4>(subs[2 * j + 1]));
        _mm256_storeu_si256(dst.add(Q4K_QS + 32 * j).cast(), bytes);
    }
}
