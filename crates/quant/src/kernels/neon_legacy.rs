//! 32-weight blocks: Q8_0, Q4_0, Q5_0 (signed weights, Q8_0 activations) and Q4_1, Q5_1
//! (unsigned codes with a min, Q8_1 activations).
//!
//! One block is two vectors of 16 weights. Q4_0 / Q5_0 subtract their offset (8, 16) from the
//! codes before the dot, which keeps them in `i8`; Q4_1 / Q5_1 dot their codes (`0..32`) as they
//! are and add `m_w · s_a` per block, Q8_1's `s` being `d_a · Σ a`. Each block's integer sum is
//! scaled by `d_w · d_a` into a float accumulator per token.

use std::arch::aarch64::*;
use std::mem::{offset_of, size_of};

use super::{
    hsums, load_s8, load_u8, read_f16, read_u32, Dot, RowKernel, Q8_0_BYTES, Q8_0_QS, Q8_1_BYTES,
    Q8_1_QS,
};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::GgmlType;

// All five keep their f16 scale `d` first; those with a min follow it with the f16 `m`, as Q8_1
// follows `d` with `s`.
const _: () = assert!(offset_of!(BlockQ8_0, d) == 0 && offset_of!(BlockQ4_0, d) == 0);
const _: () = assert!(offset_of!(BlockQ5_0, d) == 0);
const _: () = assert!(offset_of!(BlockQ4_1, m) == 2 && offset_of!(BlockQ5_1, m) == 2);

/// A 32-weight block type: where it is, and how its weights unpack.
trait Block {
    const WEIGHT: GgmlType;
    const BYTES: usize;
    /// Q4_1 / Q5_1: weights are `d · code + m`, against Q8_1 activations.
    const MIN: bool;
    /// Weights 0..16 and 16..32 of the block at `x`: the weights themselves for Q8_0 / Q4_0 /
    /// Q5_0, the codes for Q4_1 / Q5_1.
    ///
    /// # Safety
    /// `x` points to a whole block (`BYTES` readable bytes), and the CPU has NEON.
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2];
}

pub(super) struct Q8_0;
pub(super) struct Q4_0;
pub(super) struct Q5_0;
pub(super) struct Q4_1;
pub(super) struct Q5_1;

/// The 32 nibbles of 16 bytes at `p`: the low nibbles (weights 0..16), then the high ones.
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> [uint8x16_t; 2] {
    let bits = load_u8(p);
    [vandq_u8(bits, vdupq_n_u8(0x0F)), vshrq_n_u8::<4>(bits)]
}

/// The fifth bits of a Q5 block's 32 codes, as 0x10 in the byte of each code whose bit is set:
/// bit `j` of the little-endian u32 at `p` belongs to weight `j`.
#[inline(always)]
unsafe fn fifth_bits(p: *const u8) -> [uint8x16_t; 2] {
    // Byte j / 8 of qh in lane j, then test lane j's bit j % 8.
    const SPREAD: [u8; 32] = {
        let mut idx = [0u8; 32];
        let mut j = 0;
        while j < 32 {
            idx[j] = (j / 8) as u8;
            j += 1;
        }
        idx
    };
    let qh = vreinterpretq_u8_u32(vdupq_n_u32(read_u32(p)));
    let bit = vreinterpretq_u8_u64(vdupq_n_u64(0x8040_2010_0804_0201));
    let sixteen = vdupq_n_u8(0x10);
    let lo = vqtbl1q_u8(qh, vld1q_u8(SPREAD.as_ptr()));
    let hi = vqtbl1q_u8(qh, vld1q_u8(SPREAD.as_ptr().add(16)));
    [
        vandq_u8(vtstq_u8(lo, bit), sixteen),
        vandq_u8(vtstq_u8(hi, bit), sixteen),
    ]
}

/// Nibbles plus fifth bits, minus `offset`, as i8.
#[inline(always)]
unsafe fn five_bit(qs: *const u8, qh: *const u8, offset: u8) -> [int8x16_t; 2] {
    let (low, high) = (nibbles(qs), fifth_bits(qh));
    let off = vdupq_n_u8(offset);
    [
        vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(low[0], high[0]), off)),
        vreinterpretq_s8_u8(vsubq_u8(vorrq_u8(low[1], high[1]), off)),
    ]
}

impl Block for Q8_0 {
    const WEIGHT: GgmlType = GgmlType::Q8_0;
    const BYTES: usize = size_of::<BlockQ8_0>();
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2] {
        let qs = x.add(offset_of!(BlockQ8_0, qs));
        [load_s8(qs), load_s8(qs.add(16))]
    }
}

impl Block for Q4_0 {
    const WEIGHT: GgmlType = GgmlType::Q4_0;
    const BYTES: usize = size_of::<BlockQ4_0>();
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2] {
        let q = nibbles(x.add(offset_of!(BlockQ4_0, qs)));
        let eight = vdupq_n_u8(8);
        [
            vreinterpretq_s8_u8(vsubq_u8(q[0], eight)),
            vreinterpretq_s8_u8(vsubq_u8(q[1], eight)),
        ]
    }
}

impl Block for Q5_0 {
    const WEIGHT: GgmlType = GgmlType::Q5_0;
    const BYTES: usize = size_of::<BlockQ5_0>();
    const MIN: bool = false;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2] {
        let qs = x.add(offset_of!(BlockQ5_0, qs));
        five_bit(qs, x.add(offset_of!(BlockQ5_0, qh)), 16)
    }
}

impl Block for Q4_1 {
    const WEIGHT: GgmlType = GgmlType::Q4_1;
    const BYTES: usize = size_of::<BlockQ4_1>();
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2] {
        let q = nibbles(x.add(offset_of!(BlockQ4_1, qs)));
        [vreinterpretq_s8_u8(q[0]), vreinterpretq_s8_u8(q[1])]
    }
}

impl Block for Q5_1 {
    const WEIGHT: GgmlType = GgmlType::Q5_1;
    const BYTES: usize = size_of::<BlockQ5_1>();
    const MIN: bool = true;
    #[inline(always)]
    unsafe fn weights(x: *const u8) -> [int8x16_t; 2] {
        let qs = x.add(offset_of!(BlockQ5_1, qs));
        five_bit(qs, x.add(offset_of!(BlockQ5_1, qh)), 0)
    }
}

/// One block of [`dot_blocks`]: `acc[t] += d_w d_a Σ w·a`, `acc_min[t] += m_w s_a` (with a min).
#[inline(always)]
unsafe fn block<B: Block, D: Dot, const NT: usize>(
    x: *const u8,
    a: &[*const u8; NT],
    b: usize,
    acc: &mut [float32x4_t; NT],
    acc_min: &mut [f32; NT],
) {
    let (a_bytes, a_qs) = if B::MIN {
        (Q8_1_BYTES, Q8_1_QS)
    } else {
        (Q8_0_BYTES, Q8_0_QS)
    };
    let q = B::weights(x);
    let dx = read_f16(x);
    let mx = if B::MIN { read_f16(x.add(2)) } else { 0.0 };
    for t in 0..NT {
        let y = a[t].add(b * a_bytes);
        let sum = D::dot(vdupq_n_s32(0), q[0], load_s8(y.add(a_qs)));
        let sum = D::dot(sum, q[1], load_s8(y.add(a_qs + 16)));
        acc[t] = vfmaq_n_f32(acc[t], vcvtq_f32_s32(sum), dx * read_f16(y));
        if B::MIN {
            acc_min[t] += mx * read_f16(y.add(2));
        }
    }
}

/// `Σ_b (d_w d_a Σ w·a + m_w s_a)`, the second term only for types with a min.
///
/// With one or two tokens, a single accumulator per token would make the latency of its FMA the
/// limit; there blocks alternate between two.
#[inline(always)]
unsafe fn dot_blocks<B: Block, D: Dot, const NT: usize>(
    w: *const u8,
    a: [*const u8; NT],
    n_cols: usize,
) -> [f32; NT] {
    let mut acc = [[vdupq_n_f32(0.0); NT]; 2];
    let mut acc_min = [[0.0f32; NT]; 2];
    let (nb, mut b) = (n_cols / 32, 0);
    if NT <= 2 {
        while b + 2 <= nb {
            let x = w.add(b * B::BYTES);
            block::<B, D, NT>(x, &a, b, &mut acc[0], &mut acc_min[0]);
            let x = w.add((b + 1) * B::BYTES);
            block::<B, D, NT>(x, &a, b + 1, &mut acc[1], &mut acc_min[1]);
            b += 2;
        }
    }
    for b in b..nb {
        let x = w.add(b * B::BYTES);
        block::<B, D, NT>(x, &a, b, &mut acc[0], &mut acc_min[0]);
    }
    let [mut even, odd] = acc;
    let [mut min, min_odd] = acc_min;
    for t in 0..NT {
        even[t] = vaddq_f32(even[t], odd[t]);
        min[t] += min_odd[t];
    }
    hsums(even, min)
}

macro_rules! row_kernel {
    ($block:ty) => {
        impl RowKernel for $block {
            const WEIGHT: GgmlType = <$block as Block>::WEIGHT;
            const ACT: GgmlType = if <$block as Block>::MIN {
                GgmlType::Q8_1
            } else {
                GgmlType::Q8_0
            };
            #[inline(always)]
            unsafe fn dot_row<D: Dot, const NT: usize>(
                w: *const u8,
                a: [*const u8; NT],
                n_cols: usize,
            ) -> [f32; NT] {
                dot_blocks::<Self, D, NT>(w, a, n_cols)
            }
        }
    };
}

row_kernel!(Q8_0);
row_kernel!(Q4_0);
row_kernel!(Q5_0);
row_kernel!(Q4_1);
row_kernel!(Q5_1);
