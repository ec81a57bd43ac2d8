//! Q4_0 and Q4_K in their load-time layouts ([`crate::kernels::packed`]) against Q8_0 / Q8_K
//! activations whose codes are transposed the same way, once per `gemm` call.
//!
//! A packed 32-byte vector is two q registers, lanes (blocks or sub-blocks) 0..4 and 4..8. Both
//! [`Dot`]s sum bytes `4k..4k + 4` into 32-bit lane `k`, so per group of eight blocks (Q4_0) or
//! per super-block (Q4_K) and token, sixteen dots leave the eight integer sums in the lanes of
//! two registers, and two multiply-adds scale them. The row layout (`legacy`, `kquants`) scales
//! each block, or each sub-block, on its own. The unpacking is a mask and a shift per 32 codes,
//! shared by every token of a pass, and the lanes are added up once per row.
//!
//! Every token's sum is the same sequence of operations whatever the number of tokens or rows in
//! a pass, so a call with many tokens gives, to the bit, what one-token calls give.

use std::arch::aarch64::*;
use std::mem::{offset_of, size_of};

use super::{load_f16x8, load_f32, load_s8, load_u8, read_f16, read_f32, Dot, RowKernel};
use super::{Q8K_BYTES, Q8K_QS, Q8_0_BYTES, Q8_0_QS};
use crate::kernels::packed::{GROUP, Q4_0_GROUP_BYTES};
use crate::kquants::{BlockQ4K, BlockQ8K};
use crate::legacy::BlockQ4_0;
use crate::{GgmlType, QK_K};

/// Word `c` of each of eight 32-byte rows at `src` (`stride` bytes apart), as vector `c` at
/// `dst + 32c` (lane `j`: row `j`'s word): an 8 × 8 transposition of 32-bit words, as four 4 × 4
/// ones.
///
/// # Safety
/// The CPU has NEON; eight rows of 32 bytes from `src` are readable, 256 bytes from `dst` are
/// writable.
#[inline(always)]
unsafe fn transpose8(src: *const u8, stride: usize, dst: *mut u8) {
    let row = |j: usize, h: usize| vreinterpretq_u32_u8(load_u8(src.add(j * stride + 16 * h)));
    // Rows 4i..4i + 4, words 4h..4h + 4, to vectors 4h..4h + 4, lanes 4i..4i + 4.
    for i in 0..2 {
        for h in 0..2 {
            let [a, b, c, d] = [0, 1, 2, 3].map(|k| row(4 * i + k, h));
            let (ab0, ab1) = (vtrn1q_u32(a, b), vtrn2q_u32(a, b)); // a0 b0 a2 b2, a1 b1 a3 b3
            let (cd0, cd1) = (vtrn1q_u32(c, d), vtrn2q_u32(c, d)); // c0 d0 c2 d2, c1 d1 c3 d3
            let (ab0, ab1) = (vreinterpretq_u64_u32(ab0), vreinterpretq_u64_u32(ab1));
            let (cd0, cd1) = (vreinterpretq_u64_u32(cd0), vreinterpretq_u64_u32(cd1));
            let words = [
                vtrn1q_u64(ab0, cd0),
                vtrn1q_u64(ab1, cd1),
                vtrn2q_u64(ab0, cd0),
                vtrn2q_u64(ab1, cd1),
            ];
            for (k, v) in words.into_iter().enumerate() {
                vst1q_u8(dst.add(32 * (4 * h + k) + 16 * i), vreinterpretq_u8_u64(v));
            }
        }
    }
}

// ---- Q4_0 ------------------------------------------------------------------------------------

const Q4_0_BYTES: usize = size_of::<BlockQ4_0>();
/// Bytes of one group of eight activation blocks once transposed: the codes (eight vectors, lane
/// `j` of vector `c`: codes `4c..4c + 4` of block `j`), then the blocks' `d` and `8 Σ a` as f32.
const ACT_GROUP: usize = GROUP * 32 + 2 * GROUP * 4;
/// Where a transposed group's `d` and `8 Σ a` are.
const ACT_D: usize = GROUP * 32;
const ACT_OFFSETS: usize = ACT_D + GROUP * 4;

/// Q4_0 rows packed eight blocks to a group, against Q8_0 activations transposed per group.
pub(super) struct PackedQ4_0;

impl RowKernel for PackedQ4_0 {
    const WEIGHT: GgmlType = GgmlType::Q4_0;
    const ACT: GgmlType = GgmlType::Q8_0;
    const PACKED: bool = true;

    /// Per token: each group of eight blocks as [`ACT_GROUP`] describes, then the last `nb % 8`
    /// blocks as they are.
    #[inline(always)]
    unsafe fn pack_acts(
        act: &[u8],
        a_row: usize,
        n_tok: usize,
        n_cols: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        let nb = n_cols / 32;
        let ng = nb / GROUP;
        let t_row = ng * ACT_GROUP + nb % GROUP * Q8_0_BYTES;
        out.clear();
        out.resize(n_tok * t_row, 0);
        for t in 0..n_tok {
            let src = act.as_ptr().add(t * a_row);
            let dst = out.as_mut_ptr().add(t * t_row);
            for g in 0..ng {
                let (x, y) = (src.add(g * GROUP * Q8_0_BYTES), dst.add(g * ACT_GROUP));
                transpose8(x.add(Q8_0_QS), Q8_0_BYTES, y);
                for j in 0..GROUP {
                    let b = x.add(j * Q8_0_BYTES);
                    // 32 codes in [-128, 127]: each half's sum fits the i16 of `saddlv`.
                    let q = b.add(Q8_0_QS);
                    let sum = i32::from(vaddlvq_s8(load_s8(q)))
                        + i32::from(vaddlvq_s8(load_s8(q.add(16))));
                    let d = y.add(ACT_D + 4 * j).cast::<f32>();
                    d.write_unaligned(read_f16(b));
                    let offset = y.add(ACT_OFFSETS + 4 * j).cast::<f32>();
                    offset.write_unaligned((8 * sum) as f32);
                }
            }
            std::ptr::copy_nonoverlapping(
                src.add(ng * GROUP * Q8_0_BYTES),
                dst.add(ng * ACT_GROUP),
                nb % GROUP * Q8_0_BYTES,
            );
        }
        t_row
    }

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_packed_q4_0::<D, 1, NT>([w], a, n_cols)[0]
    }

    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        dot_packed_q4_0::<D, R, NT>(w, a, n_cols)
    }
}

/// The integer sums of the eight lanes of one half of a packed group or super-block: `q[c]` (the
/// half's codes for activation vector `c`) against the eight activation vectors of the half at
/// `y` (32 bytes apart), in two chains.
#[inline(always)]
unsafe fn lane_sums<D: Dot>(q: &[int8x16_t; 8], y: *const u8) -> int32x4_t {
    let at = |c: usize| load_s8(y.add(32 * c));
    let mut even = D::dot(vdupq_n_s32(0), q[0], at(0));
    let mut odd = D::dot(vdupq_n_s32(0), q[1], at(1));
    for c in (2..8).step_by(2) {
        even = D::dot(even, q[c], at(c));
        odd = D::dot(odd, q[c + 1], at(c + 1));
    }
    vaddq_s32(even, odd)
}

/// The codes of the packed 32-byte vectors at `x` (four of them, 32 bytes apart), unpacked per
/// half: `q[h][2m]` the low nibbles of vector `m`'s half `h`, `q[h][2m + 1]` the high ones
/// (`ORDER = 2`, Q4_K), or `q[h][m]` and `q[h][4 + m]` (`ORDER = 4`, Q4_0).
#[inline(always)]
unsafe fn unpack_codes<const ORDER: usize>(x: *const u8) -> [[int8x16_t; 8]; 2] {
    let mask = vdupq_n_u8(0x0F);
    let mut q = [[vdupq_n_s8(0); 8]; 2];
    for (h, q) in q.iter_mut().enumerate() {
        for m in 0..4 {
            let v = load_u8(x.add(32 * m + 16 * h));
            let (lo, hi) = if ORDER == 2 {
                (2 * m, 2 * m + 1)
            } else {
                (m, 4 + m)
            };
            q[lo] = vreinterpretq_s8_u8(vandq_u8(v, mask));
            q[hi] = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
        }
    }
    q
}

/// `R` packed Q4_0 rows against `NT` transposed activation rows, the rows' groups interleaved:
/// with one token, rows far apart in memory are several streams ([`super::DECODE_STREAMS`]).
///
/// Per group and token: `Σ (code - 8) a = Σ code·a - 8 Σ a`, both integers exact in f32, scaled
/// by `d_w d_a` in each block's lane.
///
/// # Safety
/// As [`RowKernel::dot_row`], for each of the `R` packed rows and transposed activation rows.
#[inline(always)]
unsafe fn dot_packed_q4_0<D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    a: [*const u8; NT],
    n_cols: usize,
) -> [[f32; NT]; R] {
    let nb = n_cols / 32;
    let ng = nb / GROUP;
    let mut acc = [[vdupq_n_f32(0.0); NT]; R];
    for g in 0..ng {
        for r in 0..R {
            let x = w[r].add(g * Q4_0_GROUP_BYTES);
            let dw = load_f16x8(x);
            let q = unpack_codes::<4>(x.add(2 * GROUP));
            for t in 0..NT {
                let y = a[t].add(g * ACT_GROUP);
                for h in 0..2 {
                    let sum = vcvtq_f32_s32(lane_sums::<D>(&q[h], y.add(16 * h)));
                    let sum = vsubq_f32(sum, load_f32(y.add(ACT_OFFSETS + 16 * h)));
                    let scale = vmulq_f32(dw[h], load_f32(y.add(ACT_D + 16 * h)));
                    acc[r][t] = vfmaq_f32(acc[r][t], scale, sum);
                }
            }
        }
    }
    // The last blocks, in the GGUF layout on both sides.
    let (mask, eight) = (vdupq_n_u8(0x0F), vdupq_n_s8(8));
    for b in 0..nb % GROUP {
        for r in 0..R {
            let x = w[r].add(ng * Q4_0_GROUP_BYTES + b * Q4_0_BYTES);
            let bits = load_u8(x.add(offset_of!(BlockQ4_0, qs)));
            let q = [vandq_u8(bits, mask), vshrq_n_u8::<4>(bits)]
                .map(|q| vsubq_s8(vreinterpretq_s8_u8(q), eight));
            let dw = read_f16(x);
            for t in 0..NT {
                let y = a[t].add(ng * ACT_GROUP + b * Q8_0_BYTES);
                let sum = D::dot(vdupq_n_s32(0), q[0], load_s8(y.add(Q8_0_QS)));
                let sum = D::dot(sum, q[1], load_s8(y.add(Q8_0_QS + 16)));
                acc[r][t] = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(sum), dw * read_f16(y));
            }
        }
    }
    acc.map(|acc| acc.map(|acc| vaddvq_f32(acc)))
}

// ---- Q4_K ------------------------------------------------------------------------------------

const Q4K_BYTES: usize = size_of::<BlockQ4K>();
const Q4K_QS: usize = offset_of!(BlockQ4K, qs);
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);
const _: () = assert!(Q4K_QS == 16 && offset_of!(BlockQ4K, dmin) == 2);

/// Q4_K rows packed per super-block ([`crate::kernels::packed::pack_q4_k`]) against Q8_K
/// activations rewritten per block: the codes transposed (lane `l` of vector `c`: codes
/// `4c..4c + 4` of sub-block `l`), `d` where it was, and the first eight `bsums` replaced by the
/// sub-blocks' sums `B_l = bsums_2l + bsums_2l+1` (at most 32 · 128 in magnitude).
///
/// Per super-block and token, sixteen dots give the sub-blocks' integer sums (lanes 0..4 and
/// 4..8), two integer multiplies weight them by their scales and fold the halves into one
/// register, and one multiply-add applies `d_w d_a`; the min term is `dmin_w d_a` times a
/// widening multiply of the row's mins with the `B_l`.
pub(super) struct PackedQ4K;

impl RowKernel for PackedQ4K {
    const WEIGHT: GgmlType = GgmlType::Q4_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    const PACKED: bool = true;

    #[inline(always)]
    unsafe fn pack_acts(
        act: &[u8],
        a_row: usize,
        n_tok: usize,
        _n_cols: usize,
        out: &mut Vec<u8>,
    ) -> usize {
        out.clear();
        out.extend_from_slice(&act[..n_tok * a_row]);
        for (src, dst) in act
            .chunks_exact(Q8K_BYTES)
            .zip(out.chunks_exact_mut(Q8K_BYTES))
        {
            transpose8(src.as_ptr().add(Q8K_QS), 32, dst.as_mut_ptr().add(Q8K_QS));
            let bsum =
                |i: usize| i16::from_le_bytes([src[Q8K_BSUMS + 2 * i], src[Q8K_BSUMS + 2 * i + 1]]);
            for l in 0..8 {
                let b = bsum(2 * l).wrapping_add(bsum(2 * l + 1));
                dst[Q8K_BSUMS + 2 * l..][..2].copy_from_slice(&b.to_le_bytes());
            }
        }
        a_row
    }

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_packed_k4::<D, 1, NT>([w], a, n_cols)[0]
    }

    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        dot_packed_k4::<D, R, NT>(w, a, n_cols)
    }
}

/// `R` packed Q4_K rows against `NT` rewritten Q8_K rows (see [`PackedQ4K`]), the rows'
/// super-blocks interleaved (several streams, as [`dot_packed_q4_0`]).
///
/// # Safety
/// As [`RowKernel::dot_row`], for each of the `R` packed rows and rewritten activation rows.
#[inline(always)]
unsafe fn dot_packed_k4<D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    a: [*const u8; NT],
    n_cols: usize,
) -> [[f32; NT]; R] {
    let mut acc = [[vdupq_n_f32(0.0); NT]; R];
    for b in 0..n_cols / QK_K {
        for r in 0..R {
            let x = w[r].add(b * Q4K_BYTES);
            // Bytes [sc0..sc8, m0..m8].
            let sm = super::super::scales_mins_k4_words(x.add(offset_of!(BlockQ4K, scales)));
            let sm = vreinterpretq_u8_u32(vld1q_u32(sm.as_ptr()));
            let sc = vmovl_u8(vget_low_u8(sm));
            let sc =
                [vmovl_u16(vget_low_u16(sc)), vmovl_high_u16(sc)].map(|v| vreinterpretq_s32_u32(v));
            let mins = vreinterpretq_s16_u16(vmovl_high_u8(sm));
            let (d, dmin) = (read_f16(x), read_f16(x.add(2)));
            let q = unpack_codes::<2>(x.add(Q4K_QS));
            for t in 0..NT {
                let y = a[t].add(b * Q8K_BYTES);
                let dy = read_f32(y.add(Q8K_D));
                // Per sub-block: |Σ q·a| <= 32 · 15 · 128, times a 6-bit scale; the two halves'
                // sum fits an i32 lane.
                let lo = lane_sums::<D>(&q[0], y.add(Q8K_QS));
                let hi = lane_sums::<D>(&q[1], y.add(Q8K_QS + 16));
                let sums = vmlaq_s32(vmulq_s32(lo, sc[0]), hi, sc[1]);
                let bl = vreinterpretq_s16_u8(load_u8(y.add(Q8K_BSUMS)));
                let min_sums =
                    vmlal_high_s16(vmull_s16(vget_low_s16(bl), vget_low_s16(mins)), bl, mins);
                let acc_rt = vfmaq_n_f32(acc[r][t], vcvtq_f32_s32(sums), d * dy);
                acc[r][t] = vfmsq_n_f32(acc_rt, vcvtq_f32_s32(min_sums), dmin * dy);
            }
        }
    }
    acc.map(|acc| acc.map(|acc| vaddvq_f32(acc)))
}
