//! F32, F16 and BF16 weights against F32 activations: convert eight weights to f32, then one FMA
//! per four weights and token. Each token keeps four accumulators, so that four FMA chains are in
//! flight even with one token.

use std::arch::aarch64::*;

use super::{load_f16x8, load_f32, load_u8, read_f16, read_f32, Dot, RowKernel};
use crate::float::bf16_to_fp32;
use crate::GgmlType;

/// A float weight element.
trait Float {
    const WEIGHT: GgmlType;
    const SIZE: usize;
    /// Eight weights from `p`, as f32.
    ///
    /// # Safety
    /// `8 · SIZE` bytes from `p` are readable (any alignment), and the CPU has NEON.
    unsafe fn load8(p: *const u8) -> [float32x4_t; 2];
    /// One weight from `p`, as f32.
    ///
    /// # Safety
    /// `SIZE` bytes from `p` are readable (any alignment).
    unsafe fn load1(p: *const u8) -> f32;
}

pub(super) struct F32;
pub(super) struct F16;
pub(super) struct Bf16;

impl Float for F32 {
    const WEIGHT: GgmlType = GgmlType::F32;
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [float32x4_t; 2] {
        [load_f32(p), load_f32(p.add(16))]
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        read_f32(p)
    }
}

impl Float for F16 {
    const WEIGHT: GgmlType = GgmlType::F16;
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [float32x4_t; 2] {
        load_f16x8(p)
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        read_f16(p)
    }
}

impl Float for Bf16 {
    const WEIGHT: GgmlType = GgmlType::BF16;
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> [float32x4_t; 2] {
        // bf16 is the top half of an f32.
        let h = vreinterpretq_u16_u8(load_u8(p));
        [
            vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h))),
            vreinterpretq_f32_u32(vshll_high_n_u16::<16>(h)),
        ]
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        bf16_to_fp32(half::bf16::from_bits(u16::from_le(
            p.cast::<u16>().read_unaligned(),
        )))
    }
}

impl<W: Float> RowKernel for W {
    const WEIGHT: GgmlType = W::WEIGHT;
    const ACT: GgmlType = GgmlType::F32;

    /// Sixteen weights a step; the last `n_cols % 16` one at a time.
    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let mut acc = [[vdupq_n_f32(0.0); 4]; NT];
        let mut i = 0;
        while i + 16 <= n_cols {
            let w0 = W::load8(w.add(i * W::SIZE));
            let w1 = W::load8(w.add((i + 8) * W::SIZE));
            let wv = [w0[0], w0[1], w1[0], w1[1]];
            for t in 0..NT {
                let y = a[t].add(4 * i);
                for k in 0..4 {
                    acc[t][k] = vfmaq_f32(acc[t][k], wv[k], load_f32(y.add(16 * k)));
                }
            }
            i += 16;
        }
        let mut out = [0.0; NT];
        for t in 0..NT {
            let [a0, a1, a2, a3] = acc[t];
            out[t] = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
            for k in i..n_cols {
                out[t] += W::load1(w.add(k * W::SIZE)) * read_f32(a[t].add(4 * k));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::fp16_to_fp32;

    /// `fcvtl` / `fcvtl2` against the portable conversion, on every f16 but NaN, in every lane.
    #[test]
    fn f16_load8_matches_fp16_to_fp32() {
        let values: Vec<u16> = (0..=u16::MAX)
            .filter(|&b| !half::f16::from_bits(b).is_nan())
            .collect();
        for chunk in values.chunks(8) {
            let mut bytes: Vec<u8> = chunk.iter().flat_map(|b| b.to_le_bytes()).collect();
            bytes.resize(16, 0);
            let mut got = [0f32; 8];
            // SAFETY: 16 readable bytes and 8 writable f32; NEON is part of every aarch64 target.
            unsafe {
                let [lo, hi] = F16::load8(bytes.as_ptr());
                vst1q_f32(got.as_mut_ptr(), lo);
                vst1q_f32(got.as_mut_ptr().add(4), hi);
            }
            for (&b, g) in chunk.iter().zip(got) {
                let want = fp16_to_fp32(half::f16::from_bits(b));
                assert_eq!(g.to_bits(), want.to_bits(), "{b:#06x}");
            }
        }
    }
}
