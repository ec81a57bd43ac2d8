//! Activation quantization as ggml's x86 CPU backend does it (`quantize_row_q8_0` / `q8_1` in
//! `ggml-cpu/arch/x86/quants.c`), for the engine's matmuls.
//!
//! ggml's reference quantizers (`quantize_row_q8_0_ref`, reproduced bit for bit in
//! [`crate::legacy`]) scale by `1 / d` and round halves away from zero; the SIMD ones that
//! llama.cpp actually runs on x86 for activations scale by `127 / amax` and round halves to even.
//! The two differ in the last bit of some codes, and a 135M model turns that into logit differences
//! of a few tenths. Quantizing activations this way makes our logits at a position with no
//! attention history identical to llama.cpp's (checked end to end against its reference).
//! Weight files are unaffected: `quantize` uses the reference quantizers.

use half::f16;

use crate::legacy::{BlockQ8_0, BlockQ8_1, QK8_0};
use crate::GgmlType;

fn block(x: &[f32], qs: &mut [i8; QK8_0]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // Round half to even by the 1.5 * 2^23 trick (exact for |x| < 2^22; here |x| <= 127):
        // `round_ties_even` is a libm call on baseline x86-64, and this vectorizes.
        let r = ((v * id + 12_582_912.0) - 12_582_912.0) as i32;
        sum += r;
        *q = r as i8;
    }
    (d, sum)
}

/// [`block`] on AVX2: the same operations (the max of `|x|`, then `x · id` rounded by the same
/// two additions, no fused multiply-add), so the same bits. `None` where a value is not finite or
/// `id` overflows (a subnormal `amax`), for [`block`] to handle those edges as Rust's casts do.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn block_avx2(x: &[f32; QK8_0], qs: &mut [i8; QK8_0]) -> Option<(f32, i32)> {
    use std::arch::x86_64::*;
    let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(x.as_ptr().add(8 * i)));
    let abs = _mm256_set1_ps(f32::from_bits(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    let mut nan = _mm256_setzero_ps();
    for &v in &v {
        m = _mm256_max_ps(_mm256_and_ps(v, abs), m);
        nan = _mm256_or_ps(nan, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v));
    }
    let mut lanes = [0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), m);
    let amax = lanes.iter().fold(0f32, |m, &v| m.max(v));
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    if _mm256_movemask_ps(nan) != 0 || !amax.is_finite() || !id.is_finite() {
        return None;
    }
    let (idv, magic) = (_mm256_set1_ps(id), _mm256_set1_ps(12_582_912.0));
    let r: [__m256i; 4] = std::array::from_fn(|i| {
        let y = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(v[i], idv), magic), magic);
        _mm256_cvttps_epi32(y)
    });
    // Codes are within ±127: the saturating packs are the truncating casts.
    let w01 = _mm256_packs_epi32(r[0], r[1]);
    let w23 = _mm256_packs_epi32(r[2], r[3]);
    let b = _mm256_packs_epi16(w01, w23);
    // The packs interleave 128-bit lanes: dwords 0 4 1 5 2 6 3 7 back in order.
    let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    _mm256_storeu_si256(qs.as_mut_ptr().cast(), b);
    let s = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    let mut sums = [0i32; 8];
    _mm256_storeu_si256(sums.as_mut_ptr().cast(), s);
    Some((amax / 127.0, sums.iter().sum()))
}

/// [`block`], on AVX2 where the CPU has it.
#[inline]
fn block_fast(x: &[f32], qs: &mut [i8; QK8_0], avx2: bool) -> (f32, i32) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        let x: &[f32; QK8_0] = x.try_into().expect("a block of 32");
        // SAFETY: the caller checked the CPU has AVX2.
        if let Some(r) = unsafe { block_avx2(x, qs) } {
            return r;
        }
    }
    let _ = avx2;
    block(x, qs)
}

/// Quantizes one activation row into Q8_0 or Q8_1 blocks the way ggml's x86 backend does.
/// Returns `false` (writing nothing) for other formats, where the reference quantizer is what ggml
/// runs. For Q8_0 / Q8_1, `x.len()` must be a multiple of 32 and `out` exactly the row's bytes.
pub fn quantize_act_ggml_x86(ty: GgmlType, x: &[f32], out: &mut [u8]) -> bool {
    if !matches!(ty, GgmlType::Q8_0 | GgmlType::Q8_1) {
        return false;
    }
    assert!(
        x.len().is_multiple_of(QK8_0),
        "row length {} is not a multiple of {QK8_0}",
        x.len()
    );
    match ty {
        GgmlType::Q8_0 => {
            let blocks: &mut [BlockQ8_0] = bytemuck::cast_slice_mut(out);
            assert_eq!(blocks.len() * QK8_0, x.len());
            let avx2 = crate::vecmath::avx2();
            for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK8_0)) {
                let (d, _) = block_fast(x, &mut b.qs, avx2);
                b.d = f16::from_f32(d);
            }
            true
        }
        GgmlType::Q8_1 => {
            let blocks: &mut [BlockQ8_1] = bytemuck::cast_slice_mut(out);
            assert_eq!(blocks.len() * QK8_0, x.len());
            let avx2 = crate::vecmath::avx2();
            for (b, x) in blocks.iter_mut().zip(x.chunks_exact(QK8_0)) {
                let (d, sum) = block_fast(x, &mut b.qs, avx2);
                b.d = f16::from_f32(d);
                b.s = f16::from_f32(d * sum as f32);
            }
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch;

    /// Float weights pair with F32 activations of any length: not ours to quantize, no panic.
    #[test]
    fn other_formats_are_declined_at_any_length() {
        let x = [0.5f32; 20];
        for ty in [GgmlType::F32, GgmlType::F16, GgmlType::Q8_K] {
            assert!(!quantize_act_ggml_x86(ty, &x, &mut []));
        }
    }

    #[test]
    fn halves_round_to_even_and_scale_is_127_over_amax() {
        // amax 127 makes id exactly 1: codes are the inputs rounded half to even.
        let mut x = [0f32; 32];
        x[0] = 127.0;
        x[1] = 2.5;
        x[2] = -3.5;
        x[3] = 0.5;
        let mut out = vec![0u8; 34];
        assert!(quantize_act_ggml_x86(GgmlType::Q8_0, &x, &mut out));
        let b: &[BlockQ8_0] = bytemuck::cast_slice(&out);
        assert_eq!(&b[0].qs[..4], &[127, 2, -4, 0]);
        assert_eq!(b[0].d.to_f32(), 1.0);
    }

    /// The AVX2 block against the scalar one, bit for bit, on random scales and the edges (zeros,
    /// halves, subnormal maxima, infinities, NaN).
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn avx2_blocks_match_the_scalar_ones() {
        if !crate::vecmath::avx2() {
            eprintln!("skipped: this CPU has no AVX2");
            return;
        }
        let mut state = 0x9e37_79b9u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let mut checked = 0;
        for case in 0..20_000 {
            let scale = [1e-3f32, 0.5, 8.0, 300.0, 1e30][case % 5];
            let mut x = [0f32; QK8_0];
            for v in x.iter_mut() {
                *v = (next() as f32 / u32::MAX as f32 - 0.5) * scale;
            }
            match case % 11 {
                0 => x.fill(0.0),
                1 => x[case % 32] = f32::NAN,
                2 => x[case % 32] = f32::INFINITY,
                3 => {
                    x.fill(0.0);
                    x[3] = 1e-40;
                }
                4 => {
                    for (i, v) in x.iter_mut().enumerate() {
                        *v = (i as f32 - 16.0) * 0.5;
                    }
                    x[0] = 127.0;
                }
                _ => {}
            }
            let (mut a, mut b) = ([0i8; QK8_0], [0i8; QK8_0]);
            let want = block(&x, &mut a);
            let got = block_fast(&x, &mut b, true);
            assert_eq!(a, b, "codes of {x:?}");
            assert_eq!(want.0.to_bits(), got.0.to_bits(), "scale of {x:?}");
            assert_eq!(want.1, got.1, "sum of {x:?}");
            checked += 1;
        }
        assert_eq!(checked, 20_000);
    }

    #[test]
    fn close_to_the_reference_quantizer() {
        let mut state = 0x1234_5678u32;
        let x: Vec<f32> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.5) * 8.0
            })
            .collect();
        for ty in [GgmlType::Q8_0, GgmlType::Q8_1] {
            let bytes = ty.row_bytes(x.len() as u64).unwrap() as usize;
            let (mut ours, mut reference) = (vec![0u8; bytes], vec![0u8; bytes]);
            assert!(quantize_act_ggml_x86(ty, &x, &mut ours));
            dispatch::quantize_row(ty, &x, &mut reference).unwrap();
            let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            dispatch::dequantize_row(ty, &ours, &mut a).unwrap();
            dispatch::dequantize_row(ty, &reference, &mut b).unwrap();
            // Same scale; codes differ by at most one step where rounding differs.
            for (blk, (a, b)) in a.chunks(32).zip(b.chunks(32)).enumerate() {
                let amax = x[blk * 32..(blk + 1) * 32]
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()));
                for (a, b) in a.iter().zip(b) {
                    assert!((a - b).abs() <= amax / 127.0 * 1.01, "{ty}: {a} vs {b}");
                }
            }
            assert!(!quantize_act_ggml_x86(
                GgmlType::Q8_K,
                &x[..256],
                &mut vec![0u8; 292]
            ));
        }
    }
}
