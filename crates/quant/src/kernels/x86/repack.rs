//! Q4_0, Q5_0 and Q8_0 with many tokens: eight weight rows at a time, repacked so that each 32-bit
//! lane of a `dpbusd` belongs to one row.
//!
//! Q4_1 and Q5_1 are not repacked, by choice: their row kernel sums in the order of ggml's x86
//! `vec_dot_q4_1_q8_1`, so the SmolLM2 Q4_1 reference model's matmuls give llama.cpp's values to
//! the bit. A repacked Q4_1 (tried: 1.8x the prompt speed) is as accurate but rounds in another
//! order, and that model is sensitive enough to flip a 0.33-logit near-tie in a reference greedy
//! output. They are ahead of llama.cpp without it.
//!
//! The unpacked codes of a block of eight rows are transposed in 4-byte chunks: vector `k` holds
//! codes `4k..4k + 4` of row `r` in lane `r`. Dotted with the activation's bytes `4k..4k + 4`
//! broadcast to every lane, eight `dpbusd`s leave the eight rows' integer block sums side by side,
//! so that converting and scaling them (by the rows' eight `d_w` times the token's `d_a`) is one
//! vector operation for eight rows instead of one per row. The repacked rows (in a buffer kept per
//! thread) then meet every token of the call. The weights in memory are untouched; only the
//! scratch copy is reordered.

use std::arch::x86_64::*;
use std::mem::{offset_of, size_of};

use std::marker::PhantomData;

use super::legacy::Block;
use super::{load, Dot, Views};
use crate::legacy::BlockQ8_0;

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);

/// `$body` for `$i` in `0..$n` (`$n` at most 8), written out: LLVM does not unroll these token
/// loops by itself, and then keeps their accumulators in memory.
macro_rules! unroll8 {
    ($n:expr, |$i:ident| $body:block) => {
        unroll8!(@ $n, $i, $body, 0, 1, 2, 3, 4, 5, 6, 7)
    };
    (@ $n:expr, $i:ident, $body:block, $($k:literal),*) => {
        $(
            if $k < $n {
                let $i: usize = $k;
                $body
            }
        )*
    };
}
pub(super) use unroll8;

std::thread_local! {
    /// The repacked block rows of the current `gemm` call; kept to avoid allocating per call.
    static PACK_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Lane `r` of vector `k` of the result: lane `k` of `c[r]`.
#[inline(always)]
pub(super) unsafe fn transpose8(c: [__m256i; 8]) -> [__m256i; 8] {
    let t: [__m256i; 8] = [
        _mm256_unpacklo_epi32(c[0], c[1]),
        _mm256_unpackhi_epi32(c[0], c[1]),
        _mm256_unpacklo_epi32(c[2], c[3]),
        _mm256_unpackhi_epi32(c[2], c[3]),
        _mm256_unpacklo_epi32(c[4], c[5]),
        _mm256_unpackhi_epi32(c[4], c[5]),
        _mm256_unpacklo_epi32(c[6], c[7]),
        _mm256_unpackhi_epi32(c[6], c[7]),
    ];
    let u: [__m256i; 8] = [
        _mm256_unpacklo_epi64(t[0], t[2]),
        _mm256_unpackhi_epi64(t[0], t[2]),
        _mm256_unpacklo_epi64(t[1], t[3]),
        _mm256_unpackhi_epi64(t[1], t[3]),
        _mm256_unpacklo_epi64(t[4], t[6]),
        _mm256_unpackhi_epi64(t[4], t[6]),
        _mm256_unpacklo_epi64(t[5], t[7]),
        _mm256_unpackhi_epi64(t[5], t[7]),
    ];
    let mut out = [_mm256_setzero_si256(); 8];
    for k in 0..4 {
        out[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
        out[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
    }
    out
}

/// Bytes of one repacked block of eight legacy rows: the rows' `d_w` as f32, then eight vectors of
/// codes.
pub(super) const PACKED: usize = 32 + 8 * 32;

/// Repacks eight rows of `nb` blocks of `B` (`w_row` bytes apart from `w`) into `out`. Q8_0's
/// signed weights are stored as `w + 128`, an unsigned code with offset 128.
///
/// # Safety
/// AVX2 and F16C are available; `w` points to eight rows of `nb` blocks and `out` to
/// `nb * PACKED` writable bytes.
#[inline(always)]
pub(super) unsafe fn repack8<B: Block>(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
    for b in 0..nb {
        let x = w.add(b * B::BYTES);
        let dst = out.add(b * PACKED);
        _mm256_storeu_ps(dst.cast(), super::f16x8_inserted(x, w_row));
        let mut c = [_mm256_setzero_si256(); 8];
        for (r, c) in c.iter_mut().enumerate() {
            // The unpacking does not depend on the dot-product ISA.
            let q = B::weights::<super::Avx2>(x.add(r * w_row));
            *c = if B::SIGNED {
                _mm256_xor_si256(q, _mm256_set1_epi8(-128))
            } else {
                q
            };
        }
        for (k, v) in transpose8(c).into_iter().enumerate() {
            _mm256_storeu_si256(dst.add(32 + 32 * k).cast(), v);
        }
    }
}

/// `out[r * n_tok + t]` for the eight repacked rows at `p` and tokens `t..t + NT` of `v`.
///
/// Per block and token: eight `dpbusd`s give the eight rows' `Σ code·a`, less `OFFSET Σ a` (an
/// integer from the activations' precomputed sums, so the difference is exact), scaled by
/// `d_w d_a`.
///
/// # Safety
/// As [`gemm_rows8`]; `p` holds `nb` repacked blocks; tokens `t..t + NT` exist.
#[inline(always)]
pub(super) unsafe fn tile8<B: Block, D: Dot, const NT: usize>(
    p: *const u8,
    nb: usize,
    v: &Views,
    t: usize,
    n_tok: usize,
    out: *mut f32,
) {
    let offset = if B::SIGNED { 128.0 } else { B::OFFSET };
    let a: [*const u8; NT] = std::array::from_fn(|i| v.act.add((t + i) * v.a_row + Q8_0_QS));
    let s: [*const f32; NT] = std::array::from_fn(|i| v.scales.add((t + i) * v.s_row));
    let mut acc = [_mm256_setzero_ps(); NT];
    for b in 0..nb {
        let pb = p.add(b * PACKED);
        let dw = _mm256_loadu_ps(pb.cast());
        let mut q = [_mm256_setzero_si256(); 8];
        for (k, q) in q.iter_mut().enumerate() {
            *q = load(pb.add(32 + 32 * k));
        }
        unroll8!(NT, |i| {
            let y = a[i].add(b * Q8_0_BYTES);
            let chunk = |k: usize| _mm256_set1_epi32(y.add(4 * k).cast::<i32>().read_unaligned());
            let mut even = D::dpbusd(_mm256_setzero_si256(), q[0], chunk(0));
            let mut odd = D::dpbusd(_mm256_setzero_si256(), q[1], chunk(1));
            for k in (2..8).step_by(2) {
                even = D::dpbusd(even, q[k], chunk(k));
                odd = D::dpbusd(odd, q[k + 1], chunk(k + 1));
            }
            let sum = _mm256_cvtepi32_ps(_mm256_add_epi32(even, odd));
            // Σ (code - offset) a = Σ code·a - offset Σ a; both integers, exact in f32.
            let sum_a = _mm256_broadcast_ss(&*s[i].add(v.n_cols / 32 + b));
            let sum = _mm256_fnmadd_ps(_mm256_set1_ps(offset), sum_a, sum);
            let scale = _mm256_mul_ps(dw, _mm256_broadcast_ss(&*s[i].add(b)));
            acc[i] = _mm256_fmadd_ps(scale, sum, acc[i]);
        });
    }
    for (i, acc) in acc.iter().enumerate() {
        let mut lanes = [0f32; 8];
        _mm256_storeu_ps(lanes.as_mut_ptr(), *acc);
        for (r, &x) in lanes.iter().enumerate() {
            *out.add(r * n_tok + t + i) = x;
        }
    }
}

/// [`tile8`] on two interleaved groups ([`Rows8::tile16`]).
///
/// # Safety
/// As [`Rows8::tile16`].
#[inline(always)]
pub(super) unsafe fn tile16<B: Block, const NT: usize>(
    p: *const u8,
    nb: usize,
    v: &Views,
    t: usize,
    n_tok: usize,
    out: *mut f32,
) {
    let offset = if B::SIGNED { 128.0 } else { B::OFFSET };
    let a: [*const u8; NT] = std::array::from_fn(|i| v.act.add((t + i) * v.a_row + Q8_0_QS));
    let s: [*const f32; NT] = std::array::from_fn(|i| v.scales.add((t + i) * v.s_row));
    let mut acc = [_mm512_setzero_ps(); NT];
    for b in 0..nb {
        let pb = p.add(b * 2 * PACKED);
        let dw = _mm512_loadu_ps(pb.cast());
        let mut q = [_mm512_setzero_si512(); 8];
        for (k, q) in q.iter_mut().enumerate() {
            *q = load512(pb.add(64 + 64 * k));
        }
        unroll8!(NT, |i| {
            let y = a[i].add(b * Q8_0_BYTES);
            let chunk = |k: usize| _mm512_set1_epi32(y.add(4 * k).cast::<i32>().read_unaligned());
            let mut even = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[0], chunk(0));
            let mut odd = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q[1], chunk(1));
            for k in (2..8).step_by(2) {
                even = _mm512_dpbusd_epi32(even, q[k], chunk(k));
                odd = _mm512_dpbusd_epi32(odd, q[k + 1], chunk(k + 1));
            }
            let sum = _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd));
            let sum_a = _mm512_set1_ps(*s[i].add(v.n_cols / 32 + b));
            let sum = _mm512_fnmadd_ps(_mm512_set1_ps(offset), sum_a, sum);
            let scale = _mm512_mul_ps(dw, _mm512_set1_ps(*s[i].add(b)));
            acc[i] = _mm512_fmadd_ps(scale, sum, acc[i]);
        });
    }
    store16(&acc, t, n_tok, out);
}

/// A weight format whose rows the prompt kernels take eight at a time: repacked into a per-thread
/// scratch so one dot-product lane serves one row, then dotted with every token.
pub(super) trait Rows8 {
    /// Weights per repacked block.
    const BLOCK: usize;
    /// Bytes of one repacked block of eight rows.
    const PACKED: usize;
    /// Repacks eight rows of `nb` blocks (`w_row` bytes apart from `w`) into `out`.
    ///
    /// # Safety
    /// AVX2 and F16C are available; `w` points to eight rows of `nb` blocks and `out` to
    /// `nb * PACKED` writable bytes.
    unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8);
    /// Eight repacked rows (`p`, `nb` blocks) against tokens `t..t + NT` of `v`, into `out`.
    ///
    /// # Safety
    /// As [`gemm_rows8`]; `p` holds `nb` repacked blocks; tokens `t..t + NT` exist.
    unsafe fn tile8<D: Dot, const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    );
    /// [`Self::tile8`] on sixteen rows: two repacked groups of eight interleaved 32 bytes at a
    /// time ([`interleave`]), so that every 256-bit vector of `tile8` is the low half of a 512-bit
    /// one here and the second group the high half. Each lane does `tile8`'s operations in
    /// `tile8`'s order, so both give the same bits.
    ///
    /// # Safety
    /// As [`Self::tile8`] for `p` holding `nb` interleaved pairs of repacked blocks, and the CPU
    /// has AVX-512 F, BW, VL and VNNI.
    unsafe fn tile16<const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    );
}

/// Two repacked groups of `len` bytes each (`a`, `b`; `len` a multiple of 32) into `out`
/// (`2 * len` bytes): 32 bytes of `a`, then the same 32 of `b`, and so on.
///
/// # Safety
/// The pointers are valid for those lengths.
#[inline(always)]
unsafe fn interleave(a: *const u8, b: *const u8, len: usize, out: *mut u8) {
    for c in 0..len / 32 {
        let dst = out.add(64 * c);
        _mm256_storeu_si256(dst.cast(), load(a.add(32 * c)));
        _mm256_storeu_si256(dst.add(32).cast(), load(b.add(32 * c)));
    }
}

/// 64 bytes from `p`, unaligned.
#[inline(always)]
pub(super) unsafe fn load512(p: *const u8) -> __m512i {
    _mm512_loadu_si512(p.cast())
}

/// [`Dot::dpwssd`] on 512-bit vectors (inline assembly for the same reason as the 256-bit one).
// `inline(always)` cannot go with `target_feature`; the callers have these features, so LLVM
// inlines it anyway.
#[inline]
#[target_feature(enable = "avx512f,avx512vnni")]
pub(super) unsafe fn dpwssd512(mut acc: __m512i, a: __m512i, b: __m512i) -> __m512i {
    std::arch::asm!(
        "vpdpwssd {acc}, {a}, {b}",
        acc = inout(zmm_reg) acc,
        a = in(zmm_reg) a,
        b = in(zmm_reg) b,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// Writes the sixteen lanes of `acc[i]` (rows `r`) to `out[r * n_tok + t + i]`.
#[inline(always)]
pub(super) unsafe fn store16<const NT: usize>(
    acc: &[__m512; NT],
    t: usize,
    n_tok: usize,
    out: *mut f32,
) {
    for (i, acc) in acc.iter().enumerate() {
        let mut lanes = [0f32; 16];
        _mm512_storeu_ps(lanes.as_mut_ptr(), *acc);
        for (r, &x) in lanes.iter().enumerate() {
            *out.add(r * n_tok + t + i) = x;
        }
    }
}

/// Rows of `R` in groups of eight against all `n_tok` tokens of `v`; returns how many rows (a
/// multiple of eight) it wrote to `out`.
///
/// # Safety
/// As `gemm_tiled`: `w` holds `n_rows` rows of `w_row` bytes, `out` `n_rows * n_tok` floats, `v`
/// describes `n_tok` activation rows; the CPU has the features of `D`.
#[inline(always)]
pub(super) unsafe fn gemm_rows8<R: Rows8, D: Dot>(
    w: *const u8,
    w_row: usize,
    n_rows: usize,
    v: &Views,
    n_tok: usize,
    out: *mut f32,
) -> usize {
    let nb = v.n_cols / R::BLOCK;
    let groups = n_rows / 8;
    if groups == 0 {
        return 0;
    }
    let mut buf = PACK_BUF.take();
    buf.clear();
    let mut g = 0;
    if D::ZMM && groups >= 2 {
        // Two groups at a time in 512-bit vectors: repacked one after the other, interleaved.
        let len = nb * R::PACKED;
        buf.resize(4 * len, 0);
        let (pair, wide) = (buf.as_mut_ptr(), buf.as_mut_ptr().add(2 * len));
        while g + 2 <= groups {
            let (w, out) = (w.add(8 * g * w_row), out.add(8 * g * n_tok));
            R::repack8(w, w_row, nb, pair);
            R::repack8(w.add(8 * w_row), w_row, nb, pair.add(len));
            interleave(pair, pair.add(len), len, wide);
            let mut t = 0;
            while t + 8 <= n_tok {
                R::tile16::<8>(wide, nb, v, t, n_tok, out);
                t += 8;
            }
            while t + 4 <= n_tok {
                R::tile16::<4>(wide, nb, v, t, n_tok, out);
                t += 4;
            }
            while t < n_tok {
                R::tile16::<1>(wide, nb, v, t, n_tok, out);
                t += 1;
            }
            g += 2;
        }
    }
    buf.resize(nb * R::PACKED, 0);
    for g in g..groups {
        let (w, out) = (w.add(8 * g * w_row), out.add(8 * g * n_tok));
        R::repack8(w, w_row, nb, buf.as_mut_ptr());
        let p = buf.as_ptr();
        let mut t = 0;
        if D::WIDE {
            while t + 8 <= n_tok {
                R::tile8::<D, 8>(p, nb, v, t, n_tok, out);
                t += 8;
            }
        }
        while t + 4 <= n_tok {
            R::tile8::<D, 4>(p, nb, v, t, n_tok, out);
            t += 4;
        }
        while t < n_tok {
            R::tile8::<D, 1>(p, nb, v, t, n_tok, out);
            t += 1;
        }
    }
    PACK_BUF.set(buf);
    8 * groups
}

/// Rows of a Q8_0-paired legacy type (Q4_0, Q5_0, Q8_0) for the eight-row prompt kernel.
pub(super) struct LegacyRows<B>(PhantomData<B>);

impl<B: Block> Rows8 for LegacyRows<B> {
    const BLOCK: usize = 32;
    const PACKED: usize = PACKED;
    #[inline(always)]
    unsafe fn repack8(w: *const u8, w_row: usize, nb: usize, out: *mut u8) {
        repack8::<B>(w, w_row, nb, out)
    }
    #[inline(always)]
    unsafe fn tile8<D: Dot, const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    ) {
        tile8::<B, D, NT>(p, nb, v, t, n_tok, out)
    }
    #[inline(always)]
    unsafe fn tile16<const NT: usize>(
        p: *const u8,
        nb: usize,
        v: &Views,
        t: usize,
        n_tok: usize,
        out: *mut f32,
    ) {
        tile16::<B, NT>(p, nb, v, t, n_tok, out)
    }
}
