//! K-quants against Q8_K: Q4_K and Q5_K (32-weight sub-blocks, 6-bit scales and mins), Q2_K,
//! Q3_K and Q6_K (16-weight sub-blocks).
//!
//! Weights are unpacked to unsigned bytes (`maddubs` wants one unsigned operand), multiplied with
//! the activations into 16-bit pair sums, then weighted by the sub-block scales into 32-bit lanes
//! (`madd`, or `vpdpwssd` with VNNI). All of a super-block stays integer; one float multiply-add
//! per token and super-block applies `d_w · d_a`. Offsets are folded in through Q8_K's `bsums`:
//! Q6_K and Q3_K store `q + 32` and `q + 4`, so `32 Σ sc·bsum` (resp. `4 Σ`) is subtracted;
//! mins are `dmin · Σ m·bsum`.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::{hsums, load, load128, prefetch_ahead, read_u32, splat_f16, splat_f32, Dot, RowKernel};
use crate::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::{GgmlType, QK_K};

const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_D: usize = offset_of!(BlockQ8K, d);
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);
const Q8K_BSUMS: usize = offset_of!(BlockQ8K, bsums);

pub(super) struct Q2K;
pub(super) struct Q3K;
pub(super) struct Q4K;
pub(super) struct Q5K;
pub(super) struct Q6K;

/// The eight 6-bit scales and mins of a Q4_K / Q5_K block as bytes `[sc0..sc8, m0..m8]`
/// (ggml's `utmp` shuffle of `get_scale_min_k4`'s packing).
#[inline(always)]
pub(super) unsafe fn scales_mins_k4(p: *const u8) -> __m128i {
    let [sc_lo, sc_hi, m_lo, m_hi] = super::super::scales_mins_k4_words(p);
    _mm_set_epi32(m_hi as i32, m_lo as i32, sc_hi as i32, sc_lo as i32)
}

/// The i16 at index `j` of each 128-bit half of `v`, in all eight 16-bit lanes of that half.
#[inline(always)]
unsafe fn splat_i16(v: __m256i, j: usize) -> __m256i {
    let idx = (((2 * j + 1) << 8) | (2 * j)) as i16;
    _mm256_shuffle_epi8(v, _mm256_set1_epi16(idx))
}

/// Sixteen 8-bit scales `sc` (one per 16 weights) as the i16 multipliers of vector `v` (weights
/// `32v..32v + 32`): `sc[2v]` in the low eight lanes, `sc[2v + 1]` in the high eight.
#[inline(always)]
unsafe fn scale_pair(sc: __m128i, v: usize) -> __m256i {
    let (lo, hi) = (2 * v as i64, 2 * v as i64 + 1);
    let idx = _mm_set_epi64x(hi * 0x0101_0101_0101_0101, lo * 0x0101_0101_0101_0101);
    _mm256_cvtepi8_epi16(_mm_shuffle_epi8(sc, idx))
}

/// `sumi + sc16 · (u · a)`: 32 unsigned weights `u` times 32 activations at `q8`, pairwise, then
/// weighted by the i16 scales `sc16` into 32-bit lanes.
#[inline(always)]
unsafe fn mul_scaled<D: Dot>(sumi: __m256i, u: __m256i, q8: *const u8, sc16: __m256i) -> __m256i {
    D::dpwssd(sumi, _mm256_maddubs_epi16(u, load(q8)), sc16)
}

/// Per-token integer sums of a block. With one or two tokens the `dpwssd`s of a block would form
/// one dependency chain per token, and their latency (not their throughput) would bound the dot;
/// there the sums alternate between two chains.
struct Sums<const NT: usize>([[__m256i; 2]; NT]);

impl<const NT: usize> Sums<NT> {
    #[inline(always)]
    unsafe fn new(init: [__m256i; NT]) -> Self {
        let mut sums = [[_mm256_setzero_si256(); 2]; NT];
        for (s, i) in sums.iter_mut().zip(init) {
            s[0] = i;
        }
        Sums(sums)
    }

    /// `sum[t] += sc16 · (u · a)` on chain `chain % 2` (only chain 0 with more tokens).
    #[inline(always)]
    unsafe fn add<D: Dot>(
        &mut self,
        t: usize,
        chain: usize,
        u: __m256i,
        q8: *const u8,
        sc16: __m256i,
    ) {
        let c = if NT <= 2 { chain % 2 } else { 0 };
        self.0[t][c] = mul_scaled::<D>(self.0[t][c], u, q8, sc16);
    }

    #[inline(always)]
    unsafe fn total(&self, t: usize) -> __m256i {
        _mm256_add_epi32(self.0[t][0], self.0[t][1])
    }
}

/// Q4_K (`Q5 = false`) and Q5_K (`Q5 = true`, the fifth bits from `qh`), blocks of `BYTES`.
#[inline(always)]
unsafe fn dot_k4<D: Dot, const NT: usize, const BYTES: usize, const Q5: bool>(
    w: *const u8,
    a: [*const u8; NT],
    n_cols: usize,
) -> [f32; NT] {
    const { assert!(offset_of!(BlockQ4K, scales) == offset_of!(BlockQ5K, scales)) };
    const { assert!(offset_of!(BlockQ4K, dmin) == offset_of!(BlockQ5K, dmin)) };
    let qs_at = if Q5 {
        offset_of!(BlockQ5K, qs)
    } else {
        offset_of!(BlockQ4K, qs)
    };
    let m4 = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(1);
    let mut acc = [_mm256_setzero_ps(); NT];
    for b in 0..n_cols / QK_K {
        let x = w.add(b * BYTES);
        prefetch_ahead::<BYTES>(x);
        let sm = scales_mins_k4(x.add(offset_of!(BlockQ4K, scales)));
        let sc16 = _mm256_cvtepu8_epi16(sm);
        let scales = _mm256_permute4x64_epi64(sc16, 0b01_00_01_00); // sc0..8 in both halves
        let mins = _mm256_cvtepu8_epi16(_mm_unpackhi_epi8(sm, sm)); // m0 m0 m1 m1 .. m7 m7
        let mut sumi = Sums::<NT>::new([_mm256_setzero_si256(); NT]);
        let mut qh = if Q5 {
            load(x.add(offset_of!(BlockQ5K, qh)))
        } else {
            _mm256_setzero_si256()
        };
        for j in 0..QK_K / 64 {
            let bits = load(x.add(qs_at + 32 * j));
            let mut lo = _mm256_and_si256(bits, m4);
            let mut hi = _mm256_and_si256(_mm256_srli_epi16(bits, 4), m4);
            if Q5 {
                // Bit 2j of qh[l] is the fifth bit of weight 64j + l, bit 2j + 1 of 64j + 32 + l.
                let h_lo = _mm256_and_si256(qh, one);
                let h_hi = _mm256_and_si256(_mm256_srli_epi16(qh, 1), one);
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(h_lo, 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(h_hi, 4));
                qh = _mm256_srli_epi16(qh, 2);
            }
            let (sc_lo, sc_hi) = (splat_i16(scales, 2 * j), splat_i16(scales, 2 * j + 1));
            for (t, y) in a.iter().enumerate() {
                let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 64 * j);
                sumi.add::<D>(t, 0, lo, q8, sc_lo);
                sumi.add::<D>(t, 1, hi, q8.add(32), sc_hi);
            }
        }
        let d = splat_f16(x.add(offset_of!(BlockQ4K, d)));
        let dmin = splat_f16(x.add(offset_of!(BlockQ4K, dmin)));
        for t in 0..NT {
            let y = a[t].add(b * Q8K_BYTES);
            let dy = splat_f32(y.add(Q8K_D));
            let min_sum = _mm256_madd_epi16(load(y.add(Q8K_BSUMS)), mins);
            acc[t] = _mm256_fmadd_ps(
                _mm256_mul_ps(d, dy),
                _mm256_cvtepi32_ps(sumi.total(t)),
                acc[t],
            );
            acc[t] = _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(min_sum), acc[t]);
        }
    }
    hsums(acc)
}

/// The shared tail of Q2_K / Q3_K / Q6_K per token: `sumi` starts at `-offset · Σ sc·bsum`.
#[inline(always)]
unsafe fn offset_sums<const NT: usize, const SHIFT: i32>(
    a: &[*const u8; NT],
    block: usize,
    sc16: __m256i,
) -> [__m256i; NT] {
    std::array::from_fn(|t| {
        let bsums = load(a[t].add(block * Q8K_BYTES + Q8K_BSUMS));
        let s = _mm256_madd_epi16(bsums, sc16);
        _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32::<SHIFT>(s))
    })
}

impl RowKernel for Q4K {
    const WEIGHT: GgmlType = GgmlType::Q4_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    const REPACK8: bool = true;
    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        _s: [*const f32; NT],
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
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        dot_k4::<D, NT, { size_of::<BlockQ5K>() }, true>(w, a, n_cols)
    }
}

impl RowKernel for Q6K {
    const WEIGHT: GgmlType = GgmlType::Q6_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    const REPACK8: bool = true;
    const FEW_TOKENS: usize = 16;
    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m4 = _mm256_set1_epi8(0x0F);
        let m3 = _mm256_set1_epi8(3);
        let mut acc = [_mm256_setzero_ps(); NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ6K>());
            prefetch_ahead::<{ size_of::<BlockQ6K>() }>(x);
            let sc = load128(x.add(offset_of!(BlockQ6K, scales)));
            // Weights are stored as q + 32: subtract 32 · Σ sc·bsum.
            let mut sumi = Sums::new(offset_sums::<NT, 5>(&a, b, _mm256_cvtepi8_epi16(sc)));
            for h in 0..QK_K / 128 {
                // Weight 128h + 32i + l: low 4 bits in ql[64h + 32(i % 2) + l] (nibble i / 2),
                // high 2 bits in qh[32h + l] (bits 2i, 2i + 1).
                let ql = [
                    load(x.add(offset_of!(BlockQ6K, ql) + 64 * h)),
                    load(x.add(offset_of!(BlockQ6K, ql) + 64 * h + 32)),
                ];
                let mut qh = load(x.add(offset_of!(BlockQ6K, qh) + 32 * h));
                for i in 0..4 {
                    let low = if i < 2 {
                        _mm256_and_si256(ql[i], m4)
                    } else {
                        _mm256_and_si256(_mm256_srli_epi16(ql[i - 2], 4), m4)
                    };
                    let high = _mm256_slli_epi16(_mm256_and_si256(qh, m3), 4);
                    qh = _mm256_srli_epi16(qh, 2);
                    let u = _mm256_or_si256(low, high);
                    let sc16 = scale_pair(sc, 4 * h + i);
                    for (t, y) in a.iter().enumerate() {
                        let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i);
                        sumi.add::<D>(t, i, u, q8, sc16);
                    }
                }
            }
            let d = splat_f16(x.add(offset_of!(BlockQ6K, d)));
            for t in 0..NT {
                let dy = splat_f32(a[t].add(b * Q8K_BYTES + Q8K_D));
                acc[t] = _mm256_fmadd_ps(
                    _mm256_mul_ps(d, dy),
                    _mm256_cvtepi32_ps(sumi.total(t)),
                    acc[t],
                );
            }
        }
        hsums(acc)
    }
}

/// Q3_K's sixteen 6-bit scales (stored `+ 32`) as i8.
#[inline(always)]
unsafe fn scales_q3k(p: *const u8) -> __m128i {
    let (u0, u1, u2) = (read_u32(p), read_u32(p.add(4)), read_u32(p.add(8)));
    let (low4, top2) = (0x0f0f_0f0f, 0x0303_0303);
    let s = [
        (u0 & low4) | ((u2 & top2) << 4),
        (u1 & low4) | (((u2 >> 2) & top2) << 4),
        ((u0 >> 4) & low4) | (((u2 >> 4) & top2) << 4),
        ((u1 >> 4) & low4) | (((u2 >> 6) & top2) << 4),
    ];
    let biased = _mm_set_epi32(s[3] as i32, s[2] as i32, s[1] as i32, s[0] as i32);
    _mm_sub_epi8(biased, _mm_set1_epi8(32))
}

impl RowKernel for Q3K {
    const WEIGHT: GgmlType = GgmlType::Q3_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m3 = _mm256_set1_epi8(3);
        let one = _mm256_set1_epi8(1);
        let mut acc = [_mm256_setzero_ps(); NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ3K>());
            prefetch_ahead::<{ size_of::<BlockQ3K>() }>(x);
            let sc = scales_q3k(x.add(offset_of!(BlockQ3K, scales)));
            // Weights are stored as q + 4 (2 low bits, the high bit meaning +4): subtract 4 Σ sc·bsum.
            let mut sumi = Sums::new(offset_sums::<NT, 2>(&a, b, _mm256_cvtepi8_epi16(sc)));
            // Bit 4h + i of hmask[l] is the high bit of weight 128h + 32i + l.
            let mut hmask = load(x.add(offset_of!(BlockQ3K, hmask)));
            for h in 0..QK_K / 128 {
                // The 2 low bits of weight 128h + 32i + l: bits 2i, 2i + 1 of qs[32h + l].
                let mut qs = load(x.add(offset_of!(BlockQ3K, qs) + 32 * h));
                for i in 0..4 {
                    let low = _mm256_and_si256(qs, m3);
                    let high = _mm256_slli_epi16(_mm256_and_si256(hmask, one), 2);
                    qs = _mm256_srli_epi16(qs, 2);
                    hmask = _mm256_srli_epi16(hmask, 1);
                    let u = _mm256_or_si256(low, high);
                    let sc16 = scale_pair(sc, 4 * h + i);
                    for (t, y) in a.iter().enumerate() {
                        let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i);
                        sumi.add::<D>(t, i, u, q8, sc16);
                    }
                }
            }
            let d = splat_f16(x.add(offset_of!(BlockQ3K, d)));
            for t in 0..NT {
                let dy = splat_f32(a[t].add(b * Q8K_BYTES + Q8K_D));
                acc[t] = _mm256_fmadd_ps(
                    _mm256_mul_ps(d, dy),
                    _mm256_cvtepi32_ps(sumi.total(t)),
                    acc[t],
                );
            }
        }
        hsums(acc)
    }
}

impl RowKernel for Q2K {
    const WEIGHT: GgmlType = GgmlType::Q2_K;
    const ACT: GgmlType = GgmlType::Q8_K;
    #[inline(always)]
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        _s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT] {
        let m3 = _mm256_set1_epi8(3);
        let m4 = _mm_set1_epi8(0x0F);
        let mut acc = [_mm256_setzero_ps(); NT];
        for b in 0..n_cols / QK_K {
            let x = w.add(b * size_of::<BlockQ2K>());
            prefetch_ahead::<{ size_of::<BlockQ2K>() }>(x);
            // Byte j: scale of sub-block j in the low nibble, its min in the high one.
            let packed = load128(x.add(offset_of!(BlockQ2K, scales)));
            let sc = _mm_and_si128(packed, m4);
            let mins = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(packed, 4), m4));
            let mut sumi = Sums::<NT>::new([_mm256_setzero_si256(); NT]);
            for h in 0..QK_K / 128 {
                // Weight 128h + 32i + l: bits 2i, 2i + 1 of qs[32h + l].
                let mut qs = load(x.add(offset_of!(BlockQ2K, qs) + 32 * h));
                for i in 0..4 {
                    let u = _mm256_and_si256(qs, m3);
                    qs = _mm256_srli_epi16(qs, 2);
                    let sc16 = scale_pair(sc, 4 * h + i);
                    for (t, y) in a.iter().enumerate() {
                        let q8 = y.add(b * Q8K_BYTES + Q8K_QS + 128 * h + 32 * i);
                        sumi.add::<D>(t, i, u, q8, sc16);
                    }
                }
            }
            let d = splat_f16(x.add(offset_of!(BlockQ2K, d)));
            let dmin = splat_f16(x.add(offset_of!(BlockQ2K, dmin)));
            for t in 0..NT {
                let y = a[t].add(b * Q8K_BYTES);
                let dy = splat_f32(y.add(Q8K_D));
                let min_sum = _mm256_madd_epi16(load(y.add(Q8K_BSUMS)), mins);
                acc[t] = _mm256_fmadd_ps(
                    _mm256_mul_ps(d, dy),
                    _mm256_cvtepi32_ps(sumi.total(t)),
                    acc[t],
                );
                acc[t] =
                    _mm256_fnmadd_ps(_mm256_mul_ps(dmin, dy), _mm256_cvtepi32_ps(min_sum), acc[t]);
            }
        }
        hsums(acc)
    }
}
