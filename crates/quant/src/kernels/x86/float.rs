//! F32, F16 and BF16 weights against F32 activations: convert eight weights to f32, then one FMA
//! per token and row. Two weight rows go together, so that each activation load feeds two FMAs.

use std::arch::x86_64::*;

use super::{hsum, load128, Dot, RowKernel};
use crate::float::{bf16_to_fp32, fp16_to_fp32};
use crate::GgmlType;

/// A float weight element.
trait Float {
    const WEIGHT: GgmlType;
    const SIZE: usize;
    /// Eight weights from `p`, as f32.
    unsafe fn load8(p: *const u8) -> __m256;
    /// One weight from `p`, as f32.
    unsafe fn load1(p: *const u8) -> f32;
}

pub(super) struct F32;
pub(super) struct F16;
pub(super) struct Bf16;

impl Float for F32 {
    const WEIGHT: GgmlType = GgmlType::F32;
    const SIZE: usize = 4;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_loadu_ps(p.cast())
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        p.cast::<f32>().read_unaligned()
    }
}

impl Float for F16 {
    const WEIGHT: GgmlType = GgmlType::F16;
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        _mm256_cvtph_ps(load128(p))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        fp16_to_fp32(half::f16::from_bits(p.cast::<u16>().read_unaligned()))
    }
}

impl Float for Bf16 {
    const WEIGHT: GgmlType = GgmlType::BF16;
    const SIZE: usize = 2;
    #[inline(always)]
    unsafe fn load8(p: *const u8) -> __m256 {
        // bf16 is the top half of an f32.
        let wide = _mm256_cvtepu16_epi32(load128(p));
        _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16))
    }
    #[inline(always)]
    unsafe fn load1(p: *const u8) -> f32 {
        bf16_to_fp32(half::bf16::from_bits(p.cast::<u16>().read_unaligned()))
    }
}

impl<W: Float> RowKernel for W {
    const WEIGHT: GgmlType = W::WEIGHT;
    const ACT: GgmlType = GgmlType::F32;
    const ROWS: usize = 2;

    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        Self::dot_rows::<D, 1, NT>([w], a, _s, n_cols)[0]
    }

    /// Each step loads 16 weights of each row and 16 activations of each token, then does
    /// `2 R NT` FMAs. With few accumulators (`R · NT <= 4`) each gets two, alternating halves,
    /// so that enough FMA chains are in flight.
    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        let two = R * NT <= 4;
        let a = a.map(|p| p.cast::<f32>());
        let mut acc = [[[_mm256_setzero_ps(); 2]; NT]; R];
        let mut i = 0;
        while i + 16 <= n_cols {
            let mut w0 = [_mm256_setzero_ps(); R];
            let mut w1 = [_mm256_setzero_ps(); R];
            for r in 0..R {
                w0[r] = W::load8(w[r].add(i * W::SIZE));
                w1[r] = W::load8(w[r].add((i + 8) * W::SIZE));
            }
            for t in 0..NT {
                let a0 = _mm256_loadu_ps(a[t].add(i));
                let a1 = _mm256_loadu_ps(a[t].add(i + 8));
                for r in 0..R {
                    let acc = &mut acc[r][t];
                    acc[0] = _mm256_fmadd_ps(w0[r], a0, acc[0]);
                    let k = usize::from(two);
                    acc[k] = _mm256_fmadd_ps(w1[r], a1, acc[k]);
                }
            }
            i += 16;
        }
        let mut out = [[0.0; NT]; R];
        for r in 0..R {
            for t in 0..NT {
                out[r][t] = hsum(_mm256_add_ps(acc[r][t][0], acc[r][t][1]));
                for k in i..n_cols {
                    out[r][t] += W::load1(w[r].add(k * W::SIZE)) * a[t].add(k).read_unaligned();
                }
            }
        }
        out
    }
}
