//! K-quants against Q8_K: Q4_K and Q5_K (32-weight sub-blocks, 6-bit scales and mins), Q2_K,
//! Q3_K and Q6_K (16-weight sub-blocks).
//!
//! Weights are unpacked to `i8`, dotted with the activations 16 at a time into 32-bit lanes, and
//! those weighted by the sub-block scales; all of a super-block stays integer, and one float
//! multiply-add per token and super-block applies `d_w · d_a`. Q3_K and Q6_K subtract their
//! offsets (4, 32) from the weights. Mins (Q2_K, Q4_K, Q5_K) multiply whole sub-block sums of the
//! activations: `dmin · d_a · Σ m · bsum`, from Q8_K's `bsums`.

use std::arch::aarch64::*;
use std::mem::{offset_of, size_of};

use super::{hsums, load_s8, load_u8, read_f16, read_f32, read_u32, Dot, RowKernel};
use super::{Q8K_BYTES, Q8K_QS};
use crate::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::{GgmlType, QK_K};

pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

/// `Σ_j bsums[j] · mins[j]` for the sixteen 16-value activation sums of the Q8_K block at `y`.
#[inline(always)]
unsafe fn bsums_dot(y: *const u8, mins: [int16x8_t; 2]) -> i32 {
    let bsums = y.add(offset_of!(BlockQ8K, bsums));
    let b0 = vreinterpretq_s16_u8(load_u8(bsums));
    let b1 = vreinterpretq_s16_u8(load_u8(bsums.add(16)));
    let prod = vmull_s16(vget_low_s16(b0), vget_low_s16(mins[0]));
    let prod = vmlal_high_s16(prod, b0, mins[0]);
    let prod = vmlal_s16(prod, vget_low_s16(b1), vget_low_s16(mins[1]));
    let prod = vmlal_high_s16(prod, b1, mins[1]);
    vaddvq_s32(prod)
}

/// Per-token integer sums of a super-block. With one or two tokens, one chain of multiply-adds
/// per token would make their latency (not their throughput) the limit of the dot; there the
/// sums alternate between two chains.
struct Sums<const NT: usize>([[int32x4_t; 2]; NT]);

impl<const NT: usize> Sums<NT> {
    #[inline(always)]
    unsafe fn new() -> Self {
        Sums([[vdupq_n_s32(0); 2]; NT])
    }

    /// `sum[t] += sc · s` on chain `chain % 2` (only chain 0 with more tokens).
    #[inline(always)]
    unsafe fn add(&mut self, t: usize, chain: usize, s: int32x4_t, sc: i32) {
        let c = if NT <= 2 { chain % 2 } else { 0 };
        self.0[t][c] = vmlaq_n_s32(self.0[t][c], s, sc);
    }

    /// `sum[t] += sc · Σ q·a`, for sixteen weights `q` and the sixteen activations at `q8`.
    #[inline(always)]
    unsafe fn add_dot<D: Dot>(
        &mut self,
        t: usize,
        chain: usize,
        q: int8x16_t,
        q8: *const u8,
        sc: i32,
    ) {
        self.add(t, chain, D::dot(vdupq_n_s32(0), q, load_s8(q8)), sc);
    }

    /// Token `t`'s sum, as f32 lanes.
    #[inline(always)]
    unsafe fn total(&self, t: usize) -> float32x4_t {
        vcvtq_f32_s32(vaddq_s32(self.0[t][0], self.0[t][1]))
    }
}

// ---- Q4_K, Q5_K ------------------------------------------------------------------------------

/// The eight 6-bit scales and mins of a Q4_K / Q5_K block as `[sc0..sc8, m0..m8]` (ggml's
/// `utmp` shuffle of `get_scale_min_k4`'s packing).
#[inline(always)]
unsafe fn scales_mins_k4(p: *const u8) -> [u8; 16] {
    let words = super::super::scales_mins_k4_words(p);
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Q4_K (`Q5 = false`) and Q5_K (`Q5 = true`, the fifth bits from `qh`), blocks of `BYTES`.
#[inline(always)]
unsafe fn dot_k4<D: Dot, const NT: usize, const BYTES: usize, const Q5: bool>(
    w: *const u8,
    a: [*const u8; NT],
    n_cols: usize,
) -> [f32; NT] {
    const { assert!(offset_of!(BlockQ4K, scales) == offset_of!(BlockQ5K, scales)) };
    const { assert!(offset_of!(BlockQ4K, d) == offset_of!(BlockQ5K, d)) };
    const { assert!(offset_of!(BlockQ4K, dmin) == offset_of!(BlockQ5K, dmin)) };
    let qs_at = if Q5 {
        offset_of!(BlockQ5K, qs)
    } else {
        offset_of!(BlockQ4K, qs)
    };
    let m4 = vdupq_n_u8(0x0F);
    let one = vdupq_n_u8(1);
    let two = vdupq_n_u8(2);
    let mut acc = [vdupq_n_f32(0.0); NT];
    let mut acc_min = [0.0f32; NT];
    for b in 0..n_cols / QK_K {
        let x = w.add(b * BYTES);
        let sm = scales_mins_k4(x.add(offset_of!(BlockQ4K, scales)));
        // Each min covers 32 weights, two bsums: repeat each.
        let m8 = vld1_u8(sm.as_ptr().add(8));
        let mins = [
            vreinterpretq_s16_u16(vmovl_u8(vzip1_u8(m8, m8))),
            vreinterpretq_s16_u16(vmovl_u8(vzip2_u8(m8, m8))),
        ];
        // Bit 2j of qh[l] is the fifth bit of weight 64j + l, bit 2j + 1 that of 64j + 32 + l.
        let mut qh = if Q5 {
            let p = x.add(offset_of!(BlockQ5K, qh));
            [load_u8(p), load_u8(p.add(16))]
        } else {
            [vdupq_n_u8(0); 2]
        };
        let mut sumi = Sums::<NT>::new();
        for j in 0..QK_K / 64 {
            // Weight 64j + l is the low nibble of qs[32j + l], 64j + 32 + l the high one.
            let bits = [
                load_u8(x.add(qs_at + 32 * j)),
                load_u8(x.add(qs_at + 32 * j + 16)),
            ];
            let mut lo = [vandq_u8(bits[0], m4), vandq_u8(bits[1], m4)];
            let mut hi = [vshrq_n_u8::<4>(bits[0]), vshrq_n_u8::<4>(bits[1])];
            if Q5 {
                for k in 0..2 {
                    lo[k] = vorrq_u8(lo[k], vshlq_n_u8::<4>(vandq_u8(qh[k], one)));
                    hi[k] = vorrq_u8(hi[k], vshlq_n_u8::<3>(vandq_u8(qh[k], two)));
                    qh[k] = vshrq_n_u8::<2>(qh[k]);
                }
            }
            let lo = [vreinterpretq_s8_u8(lo[0]), vreinterpretq_s8_u8(lo[1])];
            let hi = [vreinterpretq_s8_u8(hi[0]), vreinterpretq_s8_u8(hi[1])];
            let (sc_lo, sc_hi) = (i32::from(sm[2 * j]), i32::from(sm[2 * j + 1]));
            for (t, y) in a.iter().enumerate() {
                let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 64 * j);
                let s_lo = D::dot(vdupq_n_s32(0), lo[0], load_s8(q8));
                let s_lo = D::dot(s_lo, lo[1], load_s8(q8.add(16)));
                let s_hi = D::dot(vdupq_n_s32(0), hi[0], load_s8(q8.add(32)));
                let s_hi = D::dot(s_hi, hi[1], load_s8(q8.add(48)));
                sumi.add(t, 0, s_lo, sc_lo);
                sumi.add(t, 1, s_hi, sc_hi);
            }
        }
        let d = read_f16(x.add(offset_of!(BlockQ4K, d)));
        let dmin = read_f16(x.add(offset_of!(BlockQ4K, dmin)));
        for t in 0..NT {
            let y = a[t].add(b * Q8K_BYTES);
            let dy = read_f32(y.add(offset_of!(BlockQ8K, d)));
            acc[t] = vfmaq_n_f32(acc[t], sumi.total(t), d * dy);
            acc_min[t] -= dmin * dy * bsums_dot(y, mins) as f32;
        }
    }
    hsums(acc, acc_min)
}

impl RowKernel for Q4K {
    const WEIGHT: GgmlType = GgmlType::Q4_K;
    const ACT: GgmlType = GgmlType::Q8_K;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_k4::<D, NT, { size_of::<BlockQ4K>() }, false>(w, a, n_cols)
    }
}

impl RowKernel for Q5K {
    const WEIGHT: GgmlType = GgmlType::Q5_K;
    const ACT: GgmlType = GgmlType::Q8_K;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_k4::<D, NT, { size_of::<BlockQ5K>() }, true>(w, a, n_cols)
    }
}

// ---- Q6_K ------------------------------------------------------------------------------------

impl RowKernel for Q6K {
    const WEIGHT: GgmlType = GgmlType::Q6_K;
    const ACT: GgmlType = GgmlType::Q8_K;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m4 = vdupq_n_u8(0x0F);
        let m3 = vdupq_n_u8(3);
        let bias = vdupq_n_s8(32);
        let mut acc = [vdupq_n_f32(0.0); NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ6K>());
            let scales = x.add(offset_of!(BlockQ6K, scales)).cast::<i8>();
            let mut sumi = Sums::<NT>::new();
            for h in 0..QK_K / 128 {
                let ql = x.add(offset_of!(BlockQ6K, ql) + 64 * h);
                let qh = x.add(offset_of!(BlockQ6K, qh) + 32 * h);
                // Weight 128h + 32i + l: low 4 bits in ql[64h + 32(i % 2) + l] (nibble i / 2),
                // high 2 bits in qh[32h + l] (bits 2i, 2i + 1). Sixteen of them share a scale.
                for i in 0..4 {
                    for k in 0..2 {
                        let low = load_u8(ql.add(32 * (i % 2) + 16 * k));
                        let low = if i < 2 {
                            vandq_u8(low, m4)
                        } else {
                            vshrq_n_u8::<4>(low)
                        };
                        let shift = vdupq_n_s8(-2 * i as i8);
                        let high = vandq_u8(vshlq_u8(load_u8(qh.add(16 * k)), shift), m3);
                        let u = vorrq_u8(low, vshlq_n_u8::<4>(high));
                        let q = vsubq_s8(vreinterpretq_s8_u8(u), bias);
                        let sc = i32::from(*scales.add(8 * h + 2 * i + k));
                        for (t, y) in a.iter().enumerate() {
                            let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i + 16 * k);
                            sumi.add_dot::<D>(t, k, q, q8, sc);
                        }
                    }
                }
            }
            let d = read_f16(x.add(offset_of!(BlockQ6K, d)));
            for t in 0..NT {
                let dy = read_f32(a[t].add(b * Q8K_BYTES + offset_of!(BlockQ8K, d)));
                acc[t] = vfmaq_n_f32(acc[t], sumi.total(t), d * dy);
            }
        }
        hsums(acc, [0.0; NT])
    }
}

// ---- Q3_K ------------------------------------------------------------------------------------

/// Q3_K's sixteen 6-bit scales, their offset of 32 subtracted: low 4 bits in the nibbles of
/// bytes 0..8, top 2 bits in bytes 8..12.
#[inline(always)]
unsafe fn scales_q3k(p: *const u8) -> [i8; 16] {
    let (u0, u1, u2) = (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8)));
    let (low4, top2) = (0x0f0f_0f0f, 0x0303_0303);
    let words = [
        (u0 & low4) | ((u2 & top2) << 4),
        (u1 & low4) | (((u2 >> 2) & top2) << 4),
        ((u0 >> 4) & low4) | (((u2 >> 4) & top2) << 4),
        ((u1 >> 4) & low4) | (((u2 >> 6) & top2) << 4),
    ];
    let mut out = [0i8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        for (o, byte) in o.iter_mut().zip(w.to_le_bytes()) {
            *o = byte as i8 - 32;
        }
    }
    out
}

impl RowKernel for Q3K {
    const WEIGHT: GgmlType = GgmlType::Q3_K;
    const ACT: GgmlType = GgmlType::Q8_K;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m3 = vdupq_n_u8(3);
        let four = vdupq_n_u8(4);
        let mut acc = [vdupq_n_f32(0.0); NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ3K>());
            let sc = scales_q3k(x.add(offset_of!(BlockQ3K, scales)));
            let hmask = x.add(offset_of!(BlockQ3K, hmask));
            let hmask = [load_u8(hmask), load_u8(hmask.add(16))];
            let mut sumi = Sums::<NT>::new();
            for h in 0..QK_K / 128 {
                let qs = x.add(offset_of!(BlockQ3K, qs) + 32 * h);
                let qs = [load_u8(qs), load_u8(qs.add(16))];
                // Weight 128h + 32i + l: 2 low bits at bits 2i, 2i + 1 of qs[32h + l]; 4 is
                // subtracted unless bit 4h + i of hmask[l] is set. Sixteen share a scale.
                for i in 0..4 {
                    for k in 0..2 {
                        let low = vandq_u8(vshlq_u8(qs[k], vdupq_n_s8(-2 * i as i8)), m3);
                        let high = vtstq_u8(hmask[k], vdupq_n_u8(1 << (4 * h + i)));
                        let q = vsubq_u8(low, vbicq_u8(four, high));
                        let q = vreinterpretq_s8_u8(q);
                        let sc = i32::from(sc[8 * h + 2 * i + k]);
                        for (t, y) in a.iter().enumerate() {
                            let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i + 16 * k);
                            sumi.add_dot::<D>(t, k, q, q8, sc);
                        }
                    }
                }
            }
            let d = read_f16(x.add(offset_of!(BlockQ3K, d)));
            for t in 0..NT {
                let dy = read_f32(a[t].add(b * Q8K_BYTES + offset_of!(BlockQ8K, d)));
                acc[t] = vfmaq_n_f32(acc[t], sumi.total(t), d * dy);
            }
        }
        hsums(acc, [0.0; NT])
    }
}

// ---- Q2_K ------------------------------------------------------------------------------------

impl RowKernel for Q2K {
    const WEIGHT: GgmlType = GgmlType::Q2_K;
    const ACT: GgmlType = GgmlType::Q8_K;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m3 = vdupq_n_u8(3);
        let mut acc = [vdupq_n_f32(0.0); NT];
        let mut acc_min = [0.0f32; NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ2K>());
            // Byte j: scale of sub-block j in the low nibble, its min in the high one.
            let scales = x.add(offset_of!(BlockQ2K, scales));
            let m = vshrq_n_u8::<4>(load_u8(scales));
            let mins = [
                vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(m))),
                vreinterpretq_s16_u16(vmovl_high_u8(m)),
            ];
            let mut sumi = Sums::<NT>::new();
            for h in 0..QK_K / 128 {
                let qs = x.add(offset_of!(BlockQ2K, qs) + 32 * h);
                let qs = [load_u8(qs), load_u8(qs.add(16))];
                // Weight 128h + 32i + l: bits 2i, 2i + 1 of qs[32h + l].
                for i in 0..4 {
                    for (k, &qs) in qs.iter().enumerate() {
                        let q = vandq_u8(vshlq_u8(qs, vdupq_n_s8(-2 * i as i8)), m3);
                        let q = vreinterpretq_s8_u8(q);
                        let sc = i32::from(*scales.add(8 * h + 2 * i + k) & 0x0F);
                        for (t, y) in a.iter().enumerate() {
                            let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i + 16 * k);
                            sumi.add_dot::<D>(t, k, q, q8, sc);
                        }
                    }
                }
            }
            let d = read_f16(x.add(offset_of!(BlockQ2K, d)));
            let dmin = read_f16(x.add(offset_of!(BlockQ2K, dmin)));
            for t in 0..NT {
                let y = a[t].add(b * Q8K_BYTES);
                let dy = read_f32(y.add(offset_of!(BlockQ8K, d)));
                acc[t] = vfmaq_n_f32(acc[t], sumi.total(t), d * dy);
                acc_min[t] -= dmin * dy * bsums_dot(y, mins) as f32;
            }
        }
        hsums(acc, acc_min)
    }
}
