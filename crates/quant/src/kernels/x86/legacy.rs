//! Q8_0, Q4_0, Q5_0 (signed weights, Q8_0 activations) and Q4_1, Q5_1 (unsigned weights with a
//! min, Q8_1 activations).
//!
//! One 32-weight block is one vector. Q8_0 weights use the sign trick (`|w| · (a · sign w)`)
//! to fit `u8 × i8` products; the 4- and 5-bit codes go in unsigned, Q4_0 / Q5_0's offset
//! (`code - 8`, `code - 16`) folded in through the activation blocks' precomputed code sums.
//! Each block's integer sum is scaled by `d_w · d_a` into a float accumulator per token;
//! Q4_1 / Q5_1 add `m_w · s_a` per block.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use super::{hsum, hsums, load, prefetch_ahead, read_u32, splat_f16, Dot, RowKernel};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use crate::GgmlType;

/// A 32-weight legacy block: where it is, and how its weights unpack into 32 bytes in order.
pub(super) trait Block {
    const WEIGHT: GgmlType;
    const BYTES: usize;
    /// Q4_0 / Q5_0: `weights` are unsigned codes, the weights themselves are `code - OFFSET`.
    const OFFSET: f32 = 0.0;
    /// Q8_0: `weights` are signed bytes.
    const SIGNED: bool = false;
    /// The 32 weights: `i8` for Q8_0, `u8` codes (0..=31) for the others.
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i;
}

/// 32 nibbles from 16 bytes: the low nibbles (weights 0..16), then the high ones (16..32).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn nibbles(p: *const u8) -> __m256i {
    // The 16 bytes in both halves, the upper half shifted right by 4.
    // Through `asm!`: otherwise LLVM merges these loads with the group's scale loads into a few
    // wide ones and rebuilds each block with cross-lane shuffles, which is far slower.
    let both: __m256i;
    // SAFETY: `p` points to 16 readable bytes (the caller's contract); AVX2 is enabled.
    unsafe {
        std::arch::asm!(
            "vbroadcasti128 {v}, xmmword ptr [{p}]",
            v = out(ymm_reg) both,
            p = in(reg) p,
            options(pure, readonly, nostack, preserves_flags)
        );
    }
    let shifted = _mm256_srlv_epi64(both, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F))
}

pub(super) struct Q8_0;
pub(super) struct Q4_0;
pub(super) struct Q5_0;
pub(super) struct Q4_1;
pub(super) struct Q5_1;

impl Block for Q8_0 {
    const WEIGHT: GgmlType = GgmlType::Q8_0;
    const BYTES: usize = size_of::<BlockQ8_0>();
    const SIGNED: bool = true;
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        load(x.add(offset_of!(BlockQ8_0, qs)))
    }
}

impl Block for Q4_0 {
    const WEIGHT: GgmlType = GgmlType::Q4_0;
    const BYTES: usize = size_of::<BlockQ4_0>();
    const OFFSET: f32 = 8.0;
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        nibbles(x.add(offset_of!(BlockQ4_0, qs)))
    }
}

impl Block for Q5_0 {
    const WEIGHT: GgmlType = GgmlType::Q5_0;
    const BYTES: usize = size_of::<BlockQ5_0>();
    const OFFSET: f32 = 16.0;
    #[inline(always)]
    unsafe fn weights<D: Dot>(x: *const u8) -> __m256i {
        let high = _mm256_and_si256(
            D::bit_bytes(x.add(offset_of!(BlockQ5_0, qh))),
            _mm256_set1_epi8(0x10),
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
        let d = _mm256_mul_ps(dx, _mm256_broadcast_ss(&*s[t].add(b)));
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

/// Lane `i`: the sum of the lanes of `v[i]`.
#[inline(always)]
unsafe fn block_sums8(v: [__m256i; 8]) -> __m256i {
    let lo = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    let hi = _mm256_hadd_epi32(_mm256_hadd_epi32(v[4], v[5]), _mm256_hadd_epi32(v[6], v[7]));
    _mm256_add_epi32(
        _mm256_permute2x128_si256(lo, hi, 0x20),
        _mm256_permute2x128_si256(lo, hi, 0x31),
    )
}

/// Offset weights (`code - OFFSET`, codes in `0..32`) against Q8_0:
/// `Σ_b d_w d_a (Σ code·a - OFFSET Σ a)`.
///
/// Blocks go in groups of eight: their eight `d_w` are gathered and multiplied with the eight
/// `d_a` at once, and `OFFSET Σ a` (from the sums [`super::convert_act_scales`] precomputed)
/// is one multiply-add per group and token. What is left per block and token is one `dpbusd`;
/// with one or two tokens the eight sums are reduced into one vector and scaled together, with
/// more each is converted and scaled on its own (the tokens' chains keep the FMAs busy).
#[inline(always)]
unsafe fn dot_offset<B: Block, D: Dot, const NT: usize>(
    w: *const u8,
    a: [*const u8; NT],
    s: [*const f32; NT],
    n_cols: usize,
) -> [f32; NT] {
    let nb = n_cols / 32;
    let mut acc = [_mm256_setzero_ps(); NT];
    let mut acc_off = [_mm256_setzero_ps(); NT];
    let mut b = 0;
    while b + 8 <= nb {
        let x = w.add(b * B::BYTES);
        // Eight blocks of 18 or 22 bytes: three lines.
        prefetch_ahead::<192>(x);
        let dw = D::f16x8(x, B::BYTES);
        let mut scale = [_mm256_setzero_ps(); NT];
        for t in 0..NT {
            let sc = _mm256_mul_ps(dw, _mm256_loadu_ps(s[t].add(b)));
            acc_off[t] = _mm256_fmadd_ps(sc, _mm256_loadu_ps(s[t].add(nb + b)), acc_off[t]);
            scale[t] = sc;
        }
        let mut q = [_mm256_setzero_si256(); 8];
        for (i, q) in q.iter_mut().enumerate() {
            *q = B::weights::<D>(x.add(i * B::BYTES));
        }
        if NT <= 2 {
            // Few tokens: reduce the eight blocks' sums into one vector, then scale it at once.
            for t in 0..NT {
                let y = a[t].add(b * Q8_0_BYTES + offset_of!(BlockQ8_0, qs));
                let mut v = [_mm256_setzero_si256(); 8];
                for (i, v) in v.iter_mut().enumerate() {
                    *v = D::dpbusd(_mm256_setzero_si256(), q[i], load(y.add(i * Q8_0_BYTES)));
                }
                let sums = _mm256_cvtepi32_ps(block_sums8(v));
                acc[t] = _mm256_fmadd_ps(scale[t], sums, acc[t]);
            }
        } else {
            // Enough tokens for independent chains: scale each block's sum by its own factor.
            for (i, &q) in q.iter().enumerate() {
                let at = (b + i) * Q8_0_BYTES + offset_of!(BlockQ8_0, qs);
                for t in 0..NT {
                    let sum = D::dpbusd(_mm256_setzero_si256(), q, load(a[t].add(at)));
                    let sc = _mm256_permutevar8x32_ps(scale[t], _mm256_set1_epi32(i as i32));
                    acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sum), acc[t]);
                }
            }
        }
        b += 8;
    }
    let mut tail = [0f32; NT];
    for b in b..nb {
        let x = w.add(b * B::BYTES);
        let q = B::weights::<D>(x);
        let dw = splat_f16(x);
        for t in 0..NT {
            let y = a[t].add(b * Q8_0_BYTES + offset_of!(BlockQ8_0, qs));
            let sum = D::dpbusd(_mm256_setzero_si256(), q, load(y));
            let sc = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*s[t].add(b)));
            acc[t] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(sum), acc[t]);
            tail[t] += _mm256_cvtss_f32(sc) * *s[t].add(nb + b);
        }
    }
    let mut out = [0.0; NT];
    for t in 0..NT {
        out[t] = hsum(acc[t]) - B::OFFSET * (hsum(acc_off[t]) + tail[t]);
    }
    out
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
            // Two blocks of 20 or 24 bytes: at most a line a step.
            prefetch_ahead::<64>(x);
            block_min::<B, D, NT>(x, &a, &s, b, &mut acc[0], &mut acc_min);
            let x = w.add((b + 1) * B::BYTES);
            block_min::<B, D, NT>(x, &a, &s, b + 1, &mut acc[1], &mut acc_min);
            b += 2;
        }
    }
    for b in b..nb {
        prefetch_ahead::<64>(w.add(b * B::BYTES));
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
    ($block:ty, $act:ident, $dot:ident, $repack:expr) => {
        impl RowKernel for $block {
            const WEIGHT: GgmlType = <$block as Block>::WEIGHT;
            const ACT: GgmlType = GgmlType::$act;
            const ACT_SCALES: bool = true;
            const REPACK8: bool = $repack;
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

row_kernel!(Q8_0, Q8_0, dot_signed, true);
row_kernel!(Q4_0, Q8_0, dot_offset, true);
row_kernel!(Q5_0, Q8_0, dot_offset, true);
// Not repacked: see `repack`'s module docs.
row_kernel!(Q4_1, Q8_1, dot_min, false);
row_kernel!(Q5_1, Q8_1, dot_min, false);
