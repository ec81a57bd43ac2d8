//! F32, F16 and BF16 as one-element "blocks", and ggml's scalar float conversions.
//!
//! The conversions are ggml's own (`ggml-impl.h`), written on bits rather than through
//! `half::f16::from_f32`: for finite values and infinities both round to nearest, ties to even, but
//! ggml turns every NaN into the one quiet NaN `0x7E00` (keeping the sign) where `half` keeps the
//! payload, and llama-quantize's bytes are what we must reproduce. `half::f16` / `half::bf16` are
//! still the storage types, so blocks stay `Pod` and print as numbers.

use half::{bf16, f16};

use crate::{BlockFormat, GgmlType};

/// fp32 → fp16 as ggml does it (`ggml_compute_fp32_to_fp16`, after Maratyszcza's FP16 library).
///
/// Rounding to 10 mantissa bits is left to the FPU: adding a power of two chosen from the input's
/// exponent pushes the bits to be dropped out of the f32 mantissa, so the hardware's
/// round-to-nearest-even does the work; overflow becomes infinity, NaN becomes `±0x7E00`.
pub fn fp32_to_fp16(f: f32) -> f16 {
    let scale_to_inf = f32::from_bits(0x7780_0000); // 0x1.0p+112
    let scale_to_zero = f32::from_bits(0x0880_0000); // 0x1.0p-110
    let mut base = (f.abs() * scale_to_inf) * scale_to_zero;

    let w = f.to_bits();
    let shl1_w = w.wrapping_add(w);
    let sign = w & 0x8000_0000;
    let bias = (shl1_w & 0xFF00_0000).max(0x7100_0000);

    base += f32::from_bits((bias >> 1) + 0x0780_0000);
    let bits = base.to_bits();
    let exp_bits = (bits >> 13) & 0x0000_7C00;
    let mantissa_bits = bits & 0x0000_0FFF;
    let nonsign = exp_bits + mantissa_bits;
    let h = (sign >> 16)
        | if shl1_w > 0xFF00_0000 {
            0x7E00
        } else {
            nonsign
        };
    f16::from_bits(h as u16)
}

/// fp16 → fp32 as ggml does it (`ggml_compute_fp16_to_fp32`). Exact for every non-NaN input; a
/// signalling NaN comes out quiet because the normal path multiplies it.
pub fn fp16_to_fp32(h: f16) -> f32 {
    let w = u32::from(h.to_bits()) << 16;
    let sign = w & 0x8000_0000;
    let two_w = w.wrapping_add(w);

    let exp_offset = 0xE0u32 << 23;
    let exp_scale = f32::from_bits(0x0780_0000); // 0x1.0p-112
    let normalized_value = f32::from_bits((two_w >> 4) + exp_offset) * exp_scale;

    // Subnormal halves: place the mantissa under a fixed exponent and subtract that exponent's 1.0.
    let magic_mask = 126u32 << 23;
    let magic_bias = 0.5f32;
    let denormalized_value = f32::from_bits((two_w >> 17) | magic_mask) - magic_bias;

    let denormalized_cutoff = 1u32 << 27;
    let result = sign
        | if two_w < denormalized_cutoff {
            denormalized_value.to_bits()
        } else {
            normalized_value.to_bits()
        };
    f32::from_bits(result)
}

/// fp32 → bf16 as ggml's reference does it (`ggml_compute_fp32_to_bf16`): round to nearest even by
/// integer addition; NaNs are truncated and forced quiet. Subnormals are kept (the AVX512-BF16 path
/// of `ggml_fp32_to_bf16_row` would flush them; llama-quantize uses the reference).
pub fn fp32_to_bf16(f: f32) -> bf16 {
    let u = f.to_bits();
    if u & 0x7FFF_FFFF > 0x7F80_0000 {
        return bf16::from_bits(((u >> 16) | 64) as u16);
    }
    // No overflow: only NaN patterns lie within 0x8000 of u32::MAX. The largest finite magnitude
    // carries into the exponent and becomes infinity, as in ggml.
    bf16::from_bits(((u + 0x7FFF + ((u >> 16) & 1)) >> 16) as u16)
}

/// bf16 → fp32: bf16 is the top half of an f32.
pub fn bf16_to_fp32(h: bf16) -> f32 {
    f32::from_bits(u32::from(h.to_bits()) << 16)
}

/// `ggml_vec_dot_{f32,f16,bf16}` without SIMD: each product is rounded to f32, the sum is kept in
/// f64 (`ggml_float`) and rounded to f32 once at the end.
fn dot_f64_sum(products: impl Iterator<Item = f32>) -> f32 {
    let mut sumf = 0.0f64;
    for p in products {
        sumf += f64::from(p);
    }
    sumf as f32
}

impl BlockFormat for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    const BLOCK: usize = 1;
    type Dot = f32;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        blocks.copy_from_slice(x);
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        out.copy_from_slice(blocks);
    }

    fn vec_dot(w: &[Self], a: &[f32]) -> f32 {
        assert_eq!(w.len(), a.len());
        dot_f64_sum(w.iter().zip(a).map(|(&x, &y)| x * y))
    }
}

impl BlockFormat for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    const BLOCK: usize = 1;
    type Dot = f16;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(x.len(), blocks.len());
        for (b, &v) in blocks.iter_mut().zip(x) {
            *b = fp32_to_fp16(v);
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(blocks.len(), out.len());
        for (o, &b) in out.iter_mut().zip(blocks) {
            *o = fp16_to_fp32(b);
        }
    }

    fn vec_dot(w: &[Self], a: &[f16]) -> f32 {
        assert_eq!(w.len(), a.len());
        dot_f64_sum(
            w.iter()
                .zip(a)
                .map(|(&x, &y)| fp16_to_fp32(x) * fp16_to_fp32(y)),
        )
    }
}

impl BlockFormat for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    const BLOCK: usize = 1;
    type Dot = bf16;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        assert_eq!(x.len(), blocks.len());
        for (b, &v) in blocks.iter_mut().zip(x) {
            *b = fp32_to_bf16(v);
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        assert_eq!(blocks.len(), out.len());
        for (o, &b) in out.iter_mut().zip(blocks) {
            *o = bf16_to_fp32(b);
        }
    }

    fn vec_dot(w: &[Self], a: &[bf16]) -> f32 {
        assert_eq!(w.len(), a.len());
        dot_f64_sum(
            w.iter()
                .zip(a)
                .map(|(&x, &y)| bf16_to_fp32(x) * bf16_to_fp32(y)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(f: f32) -> u16 {
        fp32_to_fp16(f).to_bits()
    }

    fn b(f: f32) -> u16 {
        fp32_to_bf16(f).to_bits()
    }

    #[test]
    fn fp16_rounds_to_nearest_even() {
        // 1 + 2^-11 lies halfway between 1.0 and the next half; ties go to the even mantissa.
        assert_eq!(h(1.0 + f32::powi(2.0, -11)), 0x3C00);
        assert_eq!(h(1.0 + 3.0 * f32::powi(2.0, -11)), 0x3C02);
        // Just above the tie rounds up.
        assert_eq!(
            h(f32::from_bits((1.0f32 + f32::powi(2.0, -11)).to_bits() + 1)),
            0x3C01
        );
        // Subnormal halves: 2^-25 is half the smallest subnormal, a tie that goes to zero.
        assert_eq!(h(f32::powi(2.0, -25)), 0x0000);
        assert_eq!(h(3.0 * f32::powi(2.0, -25)), 0x0002);
        assert_eq!(h(f32::powi(2.0, -24)), 0x0001);
        assert_eq!(h(-0.0), 0x8000);
    }

    #[test]
    fn fp16_overflow_infinity_and_nan() {
        assert_eq!(h(65504.0), 0x7BFF);
        assert_eq!(h(65519.99), 0x7BFF);
        assert_eq!(h(65520.0), 0x7C00); // the tie above max rounds to even, which is infinity
        assert_eq!(h(1e10), 0x7C00);
        assert_eq!(h(f32::INFINITY), 0x7C00);
        assert_eq!(h(f32::NEG_INFINITY), 0xFC00);
        // Every NaN collapses to ggml's canonical quiet NaN, keeping only the sign.
        assert_eq!(h(f32::from_bits(0x7FC0_0000)), 0x7E00);
        assert_eq!(h(f32::from_bits(0x7F80_0001)), 0x7E00);
        assert_eq!(h(f32::from_bits(0xFFFF_FFFF)), 0xFE00);
    }

    #[test]
    fn fp16_to_fp32_is_exact_and_matches_half() {
        for bits in 0..=u16::MAX {
            let x = f16::from_bits(bits);
            let ours = fp16_to_fp32(x);
            if x.is_nan() {
                assert!(ours.is_nan());
                assert_eq!(ours.to_bits() >> 31, u32::from(bits >> 15));
            } else {
                assert_eq!(ours.to_bits(), x.to_f32().to_bits(), "{bits:#06x}");
                // Round trip is the identity for every non-NaN half.
                assert_eq!(fp32_to_fp16(ours).to_bits(), bits);
            }
        }
    }

    #[test]
    fn fp32_to_fp16_matches_half_off_nan() {
        // half's software conversion is also round-to-nearest-even; only NaN payloads differ.
        let mut s = 0x1234_5678u32;
        for _ in 0..200_000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let f = f32::from_bits(s);
            if !f.is_nan() {
                assert_eq!(h(f), f16::from_f32(f).to_bits(), "{s:#010x}");
            }
        }
    }

    #[test]
    fn bf16_rounding_infinity_and_nan() {
        assert_eq!(b(1.0), 0x3F80);
        // Ties to even on the dropped 16 bits.
        assert_eq!(b(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(b(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(b(f32::from_bits(0x3F80_8001)), 0x3F81);
        // The largest finite f32 rounds up into infinity.
        assert_eq!(b(f32::MAX), 0x7F80);
        assert_eq!(b(f32::INFINITY), 0x7F80);
        assert_eq!(b(f32::NEG_INFINITY), 0xFF80);
        // NaN: truncated, quiet bit forced, payload's top bits and sign kept.
        assert_eq!(b(f32::from_bits(0x7F80_0001)), 0x7FC0);
        assert_eq!(b(f32::from_bits(0xFFA5_0000)), 0xFFE5);
        // Subnormals survive.
        assert_eq!(b(f32::from_bits(0x0001_8000)), 0x0002);
        assert_eq!(bf16_to_fp32(bf16::from_bits(0x0002)).to_bits(), 0x0002_0000);
    }

    #[test]
    fn float_dots_accumulate_in_f64() {
        // In f32, 1e8 + 1 - 1e8 loses the 1; the f64 accumulator keeps it.
        let w = [1e8f32, 1.0, -1e8];
        let a = [1.0f32, 1.0, 1.0];
        assert_eq!(f32::vec_dot(&w, &a), 1.0);
    }
}
