//! Q8_0, Q4_0, Q5_0 (signed weights, Q8_0 activations) and Q4_1, Q5_1 (unsigned weights with a
//! min, Q8_1 activations).
//!
//! One 32-weight block is one vector. Signed weights use the sign trick (`|w| · (a · sign w)`)
//! to fit `u8 × i8` products; unsigned ones go straight in. Each block's integer sum is scaled by
//! `d_w · d_a` into a float accumulator per token; Q4_1 / Q5_1 add `m_w · s_a` per block.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::{hsum, hsums, load, load128, read_u32, splat_f16, Dot, RowKernel};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use crate::GgmlType;

/// A 32-weight legacy block: where it is, and how its weights unpack into 32 bytes in order.
trait Block {
    const WEIGHT: GgmlType;
    const BYTES: usize;
    /// The 32 weights: `i8` for the Q8_0-paired formats, `u8` (0..=31) for the Q8_1 ones.
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i;
}

/// 32 nibbles from 16 bytes: the low nibbles (weights 0..16), then the high ones (16..32).
#[inline(always)]
unsafe fn nibbles(p: *const u8) -> __m256i {
    let b = load128(p);
    let both = _mm256_set_m128i(_mm_srli_epi16(b, 4), b);
    _mm256_and_si256(both, _mm256_set1_epi8(0x0F))
}

pub(super) struct Q8_0;
pub(super) struct Q4_0;
pub(super) struct Q5_0;
pub(super) struct Q4_1;
pub(super) struct Q5_1;

impl Block for Q8_0 {
    const WEIGHT: GgmlType = GgmlType::Q8_0;
    const BYTES: usize = size_of::<BlockQ8_0>();
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        load(x.add(offset_of!(BlockQ8_0, qs)))
    }
}

impl Block for Q4_0 {
    const WEIGHT: GgmlType = GgmlType::Q4_0;
    const BYTES: usize = size_of::<BlockQ4_0>();
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        _mm256_sub_epi8(
            nibbles(x.add(offset_of!(BlockQ4_0, qs))),
            _mm256_set1_epi8(8),
        )
    }
}

impl Block for Q5_0 {
    const WEIGHT: GgmlType = GgmlType::Q5_0;
    const BYTES: usize = size_of::<BlockQ5_0>();
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        // (nibble | bit << 4) - 16: the nibble itself where the bit is set, else nibble | 0xF0.
        let high = _mm256_andnot_si256(
            D::bit_bytes(x.add(offset_of!(BlockQ5_0, qh))),
            _mm256_set1_epi8(0xF0u8 as i8),
        );
        _mm256_or_si256(nibbles(x.add(offset_of!(BlockQ5_0, qs))), high)
    }
}

impl Block for Q4_1 {
    const WEIGHT: GgmlType = GgmlType::Q4_1;
    const BYTES: usize = size_of::<BlockQ4_1>();
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        nibbles(x.add(offset_of!(BlockQ4_1, qs)))
    }
}

impl Block for Q5_1 {
    const WEIGHT: GgmlType = GgmlType::Q5_1;
    const BYTES: usize = size_of::<BlockQ5_1>();
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        let high = _mm256_and_si256(
            D::bit_bytes(x.add(offset_of!(BlockQ5_1, qh))),
            _mm256_set1_epi8(0x10),
        );
        _mm256_or_si256(nibbles(x.add(offset_of!(BlockQ5_1, qs))), high)
    }
}

// All five keep their f16 scale `d` first; the Q8_1-paired ones follow it with the f16 min `m`,
// as Q8_1 follows `d` with `s`.
const _: () = assert!(offset_of!(BlockQ8_0, d) == 0 && offset_of!(BlockQ4_0, d) == 0);
const _: () = assert!(offset_of!(BlockQ5_0, d) == 0);
const _: () = assert!(offset_of!(BlockQ4_1, m) == 2 && offset_of!(BlockQ5_1, m) == 2);
const _: () = assert!(offset_of!(BlockQ8_1, d) == 0 && offset_of!(BlockQ8_1, s) == 2);

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();

/// Signed weights against Q8_0, one block: `acc[t] += d_w d_a Σ w·a`.
#[inline(always)]
unsafe fn block_signed<B: Block, D: Dot, const NT: usize>(
    x: *const u8,
    a: &[*const u8; NT],
    s: &[*const f32; NT],
    b: usize,
    acc: &mut [__m256; NT],
) {
    let q = B::weights::<D>(x);
    let abs_q = _mm256_sign_epi8(q, q);
    let dx = splat_f16(x);
    for t in 0..NT {
        let y = a[t].add(b * Q8_0_BYTES);
        let signed_a = _mm256_sign_epi8(load(y.add(offset_of!(BlockQ8_0, qs))), q);
        let sum = D::dpbusd(_mm256_setzero_si256(), abs_q, signed_a);
        let d = _mm256_mul_ps(dx, _mm256_broadcast_ss(&*s[t].add(2 * b)));
        acc[t] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sum), acc[t]);
    }
}

/// Unsigned weights with a min against Q8_1, one block: `acc[t] += d_w d_a Σ q·a`, and
/// `acc_min[t]` (lane 1) `+= m_w s_a`.
#[inline(always)]
unsafe fn block_min<B: Block, D: Dot, const NT: usize>(
    x: *const u8,
    a: &[*const u8; NT],
    s: &[*const f32; NT],
    b: usize,
    acc: &mut [__m256; NT],
    acc_min: &mut [__m128; NT],
) {
    let q = B::weights::<D>(x);
    let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(read_u32(x) as i32)); // [d_w, m_w, 0, 0]
    for t in 0..NT {
        let y = a[t].add(b * Q8_1_BYTES);
        let ds = _mm_castpd_ps(_mm_load_sd(s[t].add(2 * b).cast())); // [d_a, s_a, 0, 0]
        let prod = _mm_mul_ps(dm, ds);
        let sum = D::dpbusd(
            _mm256_setzero_si256(),
            q,
            load(y.add(offset_of!(BlockQ8_1, qs))),
        );
        acc[t] = _mm256_fmadd_ps(_mm256_broadcastss_ps(prod), _mm256_cvtepi32_ps(sum), acc[t]);
        acc_min[t] = _mm_add_ps(acc_min[t], prod);
    }
}

/// With one or two tokens, a single accumulator per token would make the 4-cycle latency of
/// its FMA the limit; alternate blocks between two.
const fn two_chains(nt: usize) -> bool {
    nt <= 2
}

/// Signed weights against Q8_0: `Σ_b d_w d_a Σ w·a`.
#[inline(always)]
unsafe fn dot_signed<B: Block, D: Dot, const NT: usize>(
    w: *const u8,
    a: [*const u8; NT],
    s: [*const f32; NT],
    n_cols: usize,
) -> [f32; NT] {
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    let (nb, mut b) = (n_cols / 32, 0);
    if two_chains(NT) {
        while b + 2 <= nb {
            block_signed::<B, D, NT>(w.add(b * B::BYTES), &a, &s, b, &mut acc[0]);
            block_signed::<B, D, NT>(w.add((b + 1) * B::BYTES), &a, &s, b + 1, &mut acc[1]);
            b += 2;
        }
    }
    for b in b..nb {
        block_signed::<B, D, NT>(w.add(b * B::BYTES), &a, &s, b, &mut acc[0]);
    }
    let [mut even, odd] = acc;
    for (e, o) in even.iter_mut().zip(odd) {
        *e = _mm256_add_ps(*e, o);
    }
    hsums(even)
}

/// Unsigned weights with a min against Q8_1: `Σ_b (d_w d_a Σ q·a + m_w s_a)`.
#[inline(always)]
unsafe fn dot_min<B: Block, D: Dot, const NT: usize>(
    w: *const u8,
    a: [*const u8; NT],
    s: [*const f32; NT],
    n_cols: usize,
) -> [f32; NT] {
    let mut acc = [[_mm256_setzero_ps(); NT]; 2];
    // Lane 1 sums m_w · s_a (lane 0 collects unused d_w · d_a).
    let mut acc_min = [_mm_setzero_ps(); NT];
    let (nb, mut b) = (n_cols / 32, 0);
    if two_chains(NT) {
        while b + 2 <= nb {
            let x = w.add(b * B::BYTES);
            block_min::<B, D, NT>(x, &a, &s, b, &mut acc[0], &mut acc_min);
            let x = w.add((b + 1) * B::BYTES);
            block_min::<B, D, NT>(x, &a, &s, b + 1, &mut acc[1], &mut acc_min);
            b += 2;
        }
    }
    for b in b..nb {
        block_min::<B, D, NT>(w.add(b * B::BYTES), &a, &s, b, &mut acc[0], &mut acc_min);
    }
    let mut out = [0.0; NT];
    for t in 0..NT {
        out[t] =
            hsum(_mm256_add_ps(acc[0][t], acc[1][t])) + _mm_cvtss_f32(_mm_movehdup_ps(acc_min[t]));
    }
    out
}

macro_rules! row_kernel {
    ($block:ty, $act:ident, $dot:ident) => {
        impl RowKernel for $block {
            const WEIGHT: GgmlType = <$block as Block>::WEIGHT;
            const ACT: GgmlType = GgmlType::$act;
            const ACT_SCALES: bool = true;
            #[inline(always)]
            unsafe fn dot_row<D: Dot, const NT: usize>(
                w: *const u8,
                a: [*const u8; NT],
                s: [*const f32; NT],
                n_cols: usize,
            ) -> [f32; NT] {
                $dot::<Self, D, NT>(w, a, s, n_cols)
            }
        }
    };
}

row_kernel!(Q8_0, Q8_0, dot_signed);
row_kernel!(Q4_0, Q8_0, dot_signed);
row_kernel!(Q5_0, Q8_0, dot_signed);
row_kernel!(Q4_1, Q8_1, dot_min);
row_kernel!(Q5_1, Q8_1, dot_min);
