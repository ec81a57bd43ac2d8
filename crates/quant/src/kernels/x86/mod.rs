//! x86-64 kernels: AVX2 + FMA + F16C, and the same source compiled again with AVX-512 VNNI.
//!
//! Every kernel is written once, generic over [`Dot`] (how 8-bit and 16-bit products are summed
//! into 32-bit lanes) and inlined into two `#[target_feature]` entry points, [`gemm_avx2`] and
//! [`gemm_vnni`]. The VNNI build turns `maddubs + madd + add` into one `vpdpbusd` and `madd + add`
//! into one `vpdpwssd`, and gets AVX-512VL's 32 vector registers; vectors stay 256 bits wide but
//! in the prompt kernels' `tile16`.
//!
//! A type's kernel ([`RowKernel::dot_row`]) dots one weight row with `NT` activation rows, so each
//! weight block is loaded and unpacked once per `NT` tokens: 4 with AVX2, 8 with AVX-512's
//! registers, fewer for the last tokens. [`gemm_tiled`] walks the tile: activation rows in groups
//! that stay in L2, every weight row against each group. With one token this is the decode
//! mat-vec, each weight row streamed once. Q4_0, Q5_0, Q8_0 (VNNI only), Q4_K and Q6_K with four
//! tokens or more first take the rows in groups of eight, repacked into a per-thread scratch
//! buffer so that one `dpbusd` lane is one row ([`repack`], [`repack_k4`], [`repack_k6`]); with
//! AVX-512 two such groups share a 512-bit vector ([`repack::Rows8::tile16`]).
//!
//! Q4_0 and Q4_K also have load-time layouts ([`crate::kernels::packed`], read by [`packed`]): the
//! backend rewrites those weights once, and their kernels put blocks (Q4_0) or sub-blocks (Q4_K)
//! in the lanes of a dot product. With one token, every kernel takes a task's rows as
//! [`DECODE_STREAMS`] interleaved streams. The packed kernels and Q6_K (the formats of a Q4_K_M
//! model) do so up to 16 tokens ([`RowKernel::FEW_TOKENS`], the decode of a few sequences): each
//! row meets eight tokens per pass, where repacking it would cost more than it saves.

mod float;
mod kquants;
mod legacy;
mod packed;
mod quantize;
mod repack;
mod repack_k4;
mod repack_k6;

use std::arch::x86_64::*;

use super::{Isa, MatKernel};
use crate::GgmlType;

pub(super) fn is_available(isa: Isa) -> bool {
    let avx2 = is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c");
    match isa {
        Isa::Avx2 => avx2,
        Isa::Avx512Vnni => {
            avx2 && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx512vnni")
        }
        _ => false,
    }
}

pub(super) fn table(isa: Isa) -> &'static [MatKernel] {
    static AVX2: [MatKernel; 13] = kernels(Isa::Avx2);
    static VNNI: [MatKernel; 13] = kernels(Isa::Avx512Vnni);
    match isa {
        Isa::Avx2 => &AVX2,
        Isa::Avx512Vnni => &VNNI,
        _ => &[],
    }
}

const fn kernels(isa: Isa) -> [MatKernel; 13] {
    [
        kernel::<legacy::Q8_0>(isa),
        kernel::<legacy::Q4_0>(isa).with_packed(
            super::packed::pack_q4_0,
            super::packed::unpack_q4_0,
            gemm_fn::<packed::PackedQ4_0>(isa),
        ),
        kernel::<legacy::Q4_1>(isa),
        kernel::<legacy::Q5_0>(isa),
        kernel::<legacy::Q5_1>(isa),
        kernel::<kquants::Q2K>(isa),
        kernel::<kquants::Q3K>(isa),
        kernel::<kquants::Q4K>(isa).with_packed(
            super::packed::pack_q4_k,
            super::packed::unpack_q4_k,
            gemm_fn::<packed::PackedQ4K>(isa),
        ),
        kernel::<kquants::Q5K>(isa),
        kernel::<kquants::Q6K>(isa),
        kernel::<float::F32>(isa),
        kernel::<float::F16>(isa),
        kernel::<float::Bf16>(isa),
    ]
}

const fn gemm_fn<K: RowKernel>(isa: Isa) -> super::GemmFn {
    match isa {
        Isa::Avx512Vnni => gemm_vnni::<K>,
        _ => gemm_avx2::<K>,
    }
}

const fn kernel<K: RowKernel>(isa: Isa) -> MatKernel {
    let gemm = gemm_fn::<K>(isa);
    let quantize: super::QuantizeFn = match K::ACT {
        GgmlType::Q8_0 => quantize::q8_0,
        GgmlType::Q8_1 => quantize::q8_1,
        GgmlType::Q8_K => quantize::q8_k,
        _ => quantize::f32_copy,
    };
    MatKernel::new(K::WEIGHT, K::ACT, isa, quantize, gemm)
}

/// Sums of products into 32-bit lanes, per ISA.
trait Dot {
    /// Whether to dot eight activation rows per weight row pass rather than four (with the
    /// 32 registers of AVX-512 the accumulators of eight still fit).
    const WIDE: bool;
    /// Whether the eight-row prompt kernels may take two groups of eight rows side by side in
    /// 512-bit vectors ([`repack::Rows8::tile16`]; needs AVX-512 F, BW and VNNI).
    const ZMM: bool = false;
    /// Whether [`Self::dpbusd`] sums any `u8 × i8` products exactly (no saturating step).
    const EXACT_U8: bool;
    /// `acc` plus, in each 32-bit lane, the sum of its four `u8 × i8` byte products. The AVX2
    /// version goes through `maddubs`, whose 16-bit pair sums saturate: callers keep
    /// `u <= 128` and `s` in `[-127, 127]`, or `u <= 63`.
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i;
    /// `acc` plus, in each 32-bit lane, the sum of its two `i16 × i16` products.
    unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i;
    /// Byte `j` is 0xFF where bit `j` of the little-endian u32 at `p` is set, else 0.
    unsafe fn bit_bytes(p: *const u8) -> __m256i;
    /// The f16s at the start of eight consecutive `stride`-byte blocks from `p`, as f32.
    ///
    /// # Safety
    /// `p` points to eight blocks of `stride >= 2` bytes (with VNNI and `stride` in 16..=18,
    /// the first 128 bytes of them are read).
    #[inline(always)]
    unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
        f16x8_inserted(p, stride)
    }
}

/// AVX2: `maddubs` to 16-bit pair sums, `madd` with ones to 32-bit, then add.
struct Avx2;

impl Dot for Avx2 {
    const WIDE: bool = false;
    const EXACT_U8: bool = false;
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, s);
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
    #[inline(always)]
    unsafe fn dpwssd(acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(a, b))
    }
    #[inline(always)]
    unsafe fn bit_bytes(p: *const u8) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(read_u32(p) as i32),
            _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            ),
        );
        // Set every bit but the one each byte stands for; the byte is all ones iff that bit was set.
        let others = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe);
        _mm256_cmpeq_epi8(_mm256_or_si256(spread, others), _mm256_set1_epi8(-1))
    }
}

/// AVX-512 VNNI on 256-bit vectors: one instruction each, no saturation.
struct Vnni;

impl Dot for Vnni {
    const WIDE: bool = true;
    const ZMM: bool = true;
    const EXACT_U8: bool = true;
    #[inline(always)]
    unsafe fn dpbusd(acc: __m256i, u: __m256i, s: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, s)
    }
    // `inline(always)` cannot go with `target_feature`; callers have these features, so LLVM
    // inlines it anyway.
    #[inline]
    #[target_feature(enable = "avx512f,avx512vl,avx512vnni")]
    unsafe fn dpwssd(mut acc: __m256i, a: __m256i, b: __m256i) -> __m256i {
        // Not `_mm256_dpwssd_epi32`: for a generic x86-64 target LLVM splits it back into
        // `vpmaddwd + vpaddd` (5-10% of the K-quants' prompt throughput on Zen 4).
        std::arch::asm!(
            "vpdpwssd {acc:y}, {a:y}, {b:y}",
            acc = inout(zmm_reg) acc,
            a = in(zmm_reg) a,
            b = in(zmm_reg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
    /// AVX-512BW: the bits are a byte mask already.
    #[inline]
    #[target_feature(enable = "avx512bw,avx512vl")]
    unsafe fn bit_bytes(p: *const u8) -> __m256i {
        _mm256_movm_epi8(read_u32(p))
    }
    /// Blocks of 16 to 18 bytes: the eight f16s lie in the group's first 128 bytes, which two
    /// 64-byte loads and one word permute pick them from (a gather is much slower on Zen 4).
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,f16c")]
    unsafe fn f16x8(p: *const u8, stride: usize) -> __m256 {
        if !(16..=18).contains(&stride) {
            return f16x8_inserted(p, stride);
        }
        let s = (stride / 2) as i16;
        let idx = _mm512_set_epi16(
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0,
            0, //
            7 * s,
            6 * s,
            5 * s,
            4 * s,
            3 * s,
            2 * s,
            s,
            0,
        );
        let (lo, hi) = (
            _mm512_loadu_si512(p.cast()),
            _mm512_loadu_si512(p.add(64).cast()),
        );
        let words = _mm512_permutex2var_epi16(lo, idx, hi);
        _mm256_cvtph_ps(_mm512_castsi512_si128(words))
    }
}

/// One weight type's kernel.
trait RowKernel {
    const WEIGHT: GgmlType;
    /// The activation format: Q8_0, Q8_1, Q8_K or F32.
    const ACT: GgmlType;

    /// Whether the kernel wants the f16 header of each 32-value activation block (`d`, and
    /// `s` for Q8_1) as f32, converted once per `gemm` call rather than once per weight row.
    const ACT_SCALES: bool = false;

    /// Whether the kernel reads weights in their load-time layout ([`crate::kernels::packed`])
    /// and Q8_0 activations transposed to match ([`packed::transpose_acts`], once per `gemm`
    /// call). Its eight-row prompt kernel ([`Self::REPACK8`]) reads the activations as they are.
    const PACKED: bool = false;

    /// With [`Self::PACKED`]: writes the `n_tok` activation rows (`a_row` bytes each) in the
    /// layout [`Self::dot_row`] reads into `out`, and returns its row length.
    ///
    /// # Safety
    /// The CPU has AVX2; `act` holds `n_tok` rows of `n_cols` values of [`Self::ACT`].
    #[inline(always)]
    unsafe fn pack_acts(
        _act: &[u8],
        _a_row: usize,
        _n_tok: usize,
        _n_cols: usize,
        _out: &mut Vec<u8>,
    ) -> usize {
        unreachable!("only packed kernels transpose their activations")
    }

    /// Dots the weight row at `w` with the `NT` activation rows at `a`, all `n_cols` values long.
    /// With [`Self::ACT_SCALES`], `s[t]` holds row `t`'s block headers as f32 (see
    /// [`convert_act_scales`]).
    ///
    /// # Safety
    /// The CPU has the features of `D` (and AVX2, FMA, F16C); `w` points to a whole weight row
    /// and each `a[t]` to a whole activation row of `n_cols` values, which is whole blocks;
    /// with `ACT_SCALES`, each `s[t]` points to `2 * n_cols / 32` floats.
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [f32; NT];

    /// Whether [`repack::gemm_rows8`] (Q4_0, Q5_0, Q8_0, Q4_K, Q6_K) takes rows in groups of eight when there are
    /// [`REPACK_MIN_TOKENS`] tokens or more.
    const REPACK8: bool = false;

    /// Tokens up to which `gemm` dots each weight row with up to eight of them in one pass
    /// ([`few_tokens`]): each row is read and unpacked once per eight tokens, as in decode,
    /// rather than repacked eight rows at a time ([`Self::REPACK8`]; with 4 to 16 tokens the
    /// repacking costs more than it saves) or met by tiles of four or eight tokens.
    const FEW_TOKENS: usize = 1;

    /// With [`Self::PACKED`]: floats per token and weight block of a table of the activations
    /// that [`Self::pack_acts`] writes after their rows, eight tokens to a chunk (0: none).
    /// `dot_rows` then gets in `s[0]` the chunk of its first token, and the driver takes every
    /// row not repacked through [`few_tokens`], whose chunks of tokens start at multiples of
    /// eight.
    const TOKEN_TABLE: usize = 0;

    /// Weight rows per pass the kernel is best at: 2 lets a kernel share each activation load
    /// between two rows (the float kernels, whose activations are four bytes a value).
    const ROWS: usize = 1;

    /// [`Self::dot_row`] for `R` weight rows at once.
    ///
    /// # Safety
    /// As [`Self::dot_row`], for each of the `R` rows.
    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        s: [*const f32; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        let mut out = [[0.0; NT]; R];
        for (o, w) in out.iter_mut().zip(w) {
            *o = Self::dot_row::<D, NT>(w, a, s, n_cols);
        }
        out
    }
}

std::thread_local! {
    /// [`RowKernel::ACT_SCALES`] of the current `gemm` call; kept to avoid allocating per call.
    static ACT_SCALE_BUF: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
    /// [`RowKernel::PACKED`] activations of the current `gemm` call.
    static ACT_T_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The f32 header data of every 32-value block of `n_tok` activation rows, `2 * n_cols / 32`
/// floats a row: for Q8_1, `[d, s]` per block; for Q8_0, the `d` of every block, then the sum of
/// every block's 32 codes (an integer, exact in f32), so that kernels can fold a weight offset
/// into one multiply-add per group of blocks.
///
/// # Safety
/// AVX2 and F16C are available; `act` holds `n_tok` rows of `a_row` bytes of Q8_0 or Q8_1 blocks.
#[inline(always)]
unsafe fn convert_act_scales(
    act: &[u8],
    a_row: usize,
    n_cols: usize,
    has_s: bool,
    out: &mut Vec<f32>,
) {
    let nb = n_cols / 32;
    let block = a_row / nb.max(1);
    out.clear();
    out.reserve(2 * nb * (act.len() / a_row.max(1)));
    for row in act.chunks_exact(a_row.max(1)) {
        if has_s {
            for b in row.chunks_exact(block.max(1)) {
                let ds = _mm_cvtph_ps(_mm_cvtsi32_si128(read_u32(b.as_ptr()) as i32));
                out.push(_mm_cvtss_f32(ds));
                out.push(_mm_cvtss_f32(_mm_movehdup_ps(ds)));
            }
            continue;
        }
        let at = out.len();
        out.resize(at + 2 * nb, 0.0);
        q8_0_scales_sums(row.as_ptr(), nb, out.as_mut_ptr().add(at));
    }
}

/// For `nb` Q8_0 blocks at `row`: `d` of each block to `out[..nb]`, the sum of its codes to
/// `out[nb..2 * nb]`.
///
/// # Safety
/// AVX2 and F16C are available; `row` holds `nb` Q8_0 blocks and `out` `2 * nb` floats.
#[inline(always)]
unsafe fn q8_0_scales_sums(row: *const u8, nb: usize, out: *mut f32) {
    const B: usize = 34;
    let mut b = 0;
    while b + 8 <= nb {
        let p = row.add(b * B);
        let d = f16x8_inserted(p, B);
        _mm256_storeu_ps(out.add(b), d);
        let mut v = [_mm256_setzero_si256(); 8];
        for (i, v) in v.iter_mut().enumerate() {
            *v = code_sums(p.add(i * B + 2));
        }
        let h01 = _mm256_hadd_epi32(v[0], v[1]);
        let h23 = _mm256_hadd_epi32(v[2], v[3]);
        let h45 = _mm256_hadd_epi32(v[4], v[5]);
        let h67 = _mm256_hadd_epi32(v[6], v[7]);
        let lo = _mm256_hadd_epi32(h01, h23);
        let hi = _mm256_hadd_epi32(h45, h67);
        let sums = _mm256_add_epi32(
            _mm256_permute2x128_si256(lo, hi, 0x20),
            _mm256_permute2x128_si256(lo, hi, 0x31),
        );
        _mm256_storeu_ps(out.add(nb + b), _mm256_cvtepi32_ps(sums));
        b += 8;
    }
    for b in b..nb {
        let p = row.add(b * B);
        let ds = _mm_cvtph_ps(_mm_cvtsi32_si128(read_u32(p) as i32));
        *out.add(b) = _mm_cvtss_f32(ds);
        let s = code_sums(p.add(2));
        let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01));
        *out.add(nb + b) = _mm_cvtsi128_si32(s) as f32;
    }
}

/// In each 32-bit lane, the sum of its four i8s of the 32 at `p`.
#[inline(always)]
unsafe fn code_sums(p: *const u8) -> __m256i {
    let pairs = _mm256_maddubs_epi16(_mm256_set1_epi8(1), load(p));
    _mm256_madd_epi16(pairs, _mm256_set1_epi16(1))
}

/// The f16s at the start of eight consecutive `stride`-byte blocks from `p`, as f32, word by
/// word (faster than a gather on Zen 4 with AVX2 only).
///
/// # Safety
/// F16C is available; `p` points to eight blocks of `stride >= 2` bytes.
#[inline(always)]
unsafe fn f16x8_inserted(p: *const u8, stride: usize) -> __m256 {
    let h = |i: usize| p.add(i * stride).cast::<i16>().read_unaligned();
    _mm256_cvtph_ps(_mm_setr_epi16(
        h(0),
        h(1),
        h(2),
        h(3),
        h(4),
        h(5),
        h(6),
        h(7),
    ))
}

/// Rows a decode mat-vec takes in turn, each from its own part of the tile: the hardware
/// prefetchers then follow several streams per core (one stream a thread reads far less than
/// several). Measured on AMD EPYC Zen 5 (2 cores, `rustorch bench -p 0 -n 64`, paired rounds
/// alternating builds), with the kernels' own prefetch ([`prefetch_ahead`]): two streams beat
/// four by 5-12% at one thread and 4-11% at two (TinyLlama Q4_K_M, Q4_0, Q8_0, Llama-7B
/// Q4_K_M), in both of the machine's memory phases (two-thread read loop ~80 and ~50 GB/s);
/// one stream and eight were slower than four. Four had won on Zen 4 before the prefetch.
const DECODE_STREAMS: usize = 2;

/// How far ahead of the block it reads a kernel of a sub-byte format prefetches
/// ([`prefetch_ahead`]).
const PREFETCH_BYTES: usize = 4096;

/// Prefetches the weight bytes [`PREFETCH_BYTES`] ahead of `x .. x + BYTES`, the part of a row a
/// kernel's block loop reads in one step (called once per step, so every line of the row is
/// asked for once the step is at most 64 bytes, or a line per 64 bytes of a longer step).
///
/// Kernels that unpack sub-byte codes in the GGUF layout (Q4_0..Q5_1, Q2_K..Q6_K) spend many
/// instructions per weight byte, so their loads reach memory too slowly for the hardware
/// prefetchers alone: measured on AMD EPYC Zen 5 with one token (`kernel_bench`, cold
/// weights), 6-11 GB/s a thread without, 21-31 with. The packed Q4_K kernels gained too (30 to
/// 36 GB/s), packed Q4_0 neither gained nor lost; Q8_0 and the float kernels read faster
/// without it and do not call it. A prefetch past the end of the weights is harmless (it never
/// faults).
#[inline(always)]
unsafe fn prefetch_ahead<const BYTES: usize>(x: *const u8) {
    // A `while` loop: `(0..BYTES).step_by(64)` compiled to much slower code here.
    let mut line = 0;
    while line < BYTES {
        _mm_prefetch::<_MM_HINT_T0>(x.wrapping_add(PREFETCH_BYTES + line).cast());
        line += 64;
    }
}

/// Tokens from which repacking eight weight rows pays for itself ([`RowKernel::REPACK8`]).
const REPACK_MIN_TOKENS: usize = 4;

/// Rows a few-token pass takes at a time when the tokens are more than eight
/// ([`RowKernel::FEW_TOKENS`]): every chunk of eight tokens meets them while they are in L2.
const FEW_SUB_ROWS: usize = 64;

/// Activation rows are walked in groups of about this many bytes, so that a group stays in L2
/// while every weight row of the tile passes over it.
const ACT_GROUP_BYTES: usize = 192 * 1024;

/// The gemm driver shared by every type and ISA.
///
/// # Safety
/// `w`, `act` and `out` have the lengths the shape implies (checked by `MatKernel::gemm`), and the
/// CPU has the features of `D`.
#[inline(always)]
unsafe fn gemm_tiled<K: RowKernel, D: Dot>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    let w_row = w.len() / n_rows.max(1);
    let a_row = act.len() / n_tok.max(1);
    let group = (ACT_GROUP_BYTES / a_row.max(1) / 4 * 4).max(4);
    let mut scales = ACT_SCALE_BUF.take();
    if K::ACT_SCALES {
        convert_act_scales(act, a_row, n_cols, K::ACT == GgmlType::Q8_1, &mut scales);
    }
    let s_row = if K::ACT_SCALES { 2 * (n_cols / 32) } else { 0 };
    let mut v = Views {
        act: act.as_ptr(),
        a_row,
        scales: scales.as_ptr(),
        s_row,
        n_cols,
    };
    let (mut w, mut out, mut n_rows) = (w.as_ptr(), out.as_mut_ptr(), n_rows);
    let few = n_tok <= K::FEW_TOKENS.max(1);
    if K::REPACK8 && n_tok >= REPACK_MIN_TOKENS && !few {
        let done = match K::WEIGHT {
            GgmlType::Q4_0 if K::PACKED => {
                repack::gemm_rows8::<packed::PackedQ4_0Rows, D>(w, w_row, n_rows, &v, n_tok, out)
            }
            GgmlType::Q4_K if K::PACKED => {
                repack::gemm_rows8::<packed::PackedQ4KRows, D>(w, w_row, n_rows, &v, n_tok, out)
            }
            GgmlType::Q4_K => {
                repack::gemm_rows8::<repack_k4::Q4KRows, D>(w, w_row, n_rows, &v, n_tok, out)
            }
            GgmlType::Q6_K => {
                repack::gemm_rows8::<repack_k6::Q6KRows, D>(w, w_row, n_rows, &v, n_tok, out)
            }
            GgmlType::Q4_0 => legacy_rows8::<legacy::Q4_0, D>(w, w_row, n_rows, &v, n_tok, out),
            GgmlType::Q5_0 => legacy_rows8::<legacy::Q5_0, D>(w, w_row, n_rows, &v, n_tok, out),
            // Q8_0's codes reach 255 once made unsigned: only VNNI's `dpbusd` sums them without
            // saturating.
            GgmlType::Q8_0 if D::EXACT_U8 => {
                legacy_rows8::<legacy::Q8_0, D>(w, w_row, n_rows, &v, n_tok, out)
            }
            _ => 0,
        };
        (w, out, n_rows) = (w.add(done * w_row), out.add(done * n_tok), n_rows - done);
    }
    let mut transposed = ACT_T_BUF.take();
    if K::PACKED && n_rows > 0 {
        v.a_row = K::pack_acts(act, a_row, n_tok, n_cols, &mut transposed);
        v.act = transposed.as_ptr();
        if K::TOKEN_TABLE > 0 {
            v.scales = transposed.as_ptr().add(n_tok * v.a_row).cast();
            v.s_row = K::TOKEN_TABLE * (n_cols / K::WEIGHT.block_size());
        }
    }
    if few || K::TOKEN_TABLE > 0 {
        // Tokens in chunks of eight (the [`RowKernel::TOKEN_TABLE`]'s); with several chunks,
        // every chunk over a sub-tile of rows while it is in L2.
        let sub = if n_tok <= 8 { n_rows } else { FEW_SUB_ROWS };
        for r0 in (0..n_rows).step_by(sub.max(1)) {
            let nr = sub.min(n_rows - r0);
            let (w, out) = (w.add(r0 * w_row), out.add(r0 * n_tok));
            for t0 in (0..n_tok).step_by(8) {
                few_tokens::<K, D>(w, w_row, nr, &v, t0..n_tok.min(t0 + 8), n_tok, out);
            }
        }
    } else {
        for t0 in (0..n_tok).step_by(group) {
            let t1 = n_tok.min(t0 + group);
            let mut r = 0;
            // Pairs only pay with several tokens; one token is a memory-bound stream per row.
            if K::ROWS == 2 && t1 - t0 > 1 {
                while r + 2 <= n_rows {
                    let ws = [w.add(r * w_row), w.add((r + 1) * w_row)];
                    let os = [out.add(r * n_tok), out.add((r + 1) * n_tok)];
                    row_pass::<K, D, 2>(ws, os, &v, t0, t1);
                    r += 2;
                }
            }
            for r in r..n_rows {
                row_pass::<K, D, 1>([w.add(r * w_row)], [out.add(r * n_tok)], &v, t0, t1);
            }
        }
    }
    ACT_SCALE_BUF.set(scales);
    ACT_T_BUF.set(transposed);
}

/// Tokens `tokens` of `v` (1 to 8 of them) against each weight row in one pass, the rows taken
/// as interleaved streams as in decode ([`DECODE_STREAMS`]): as many as the accumulators of
/// `streams × tokens` leave registers for when a kernel interleaves them (the packed ones; each
/// row's unpacked codes take eight more). A kernel with [`RowKernel::FEW_TOKENS`] does the same
/// arithmetic for every token count, so each (row, token) sum is, to the bit, what a one-token
/// call gives; packed Q4_K with four tokens or more is the exception (see
/// [`packed::PackedQ4K`]).
///
/// # Safety
/// As `gemm_tiled`: `w` holds `n_rows` rows of `w_row` bytes, `out` `n_rows * n_tok` floats, `v`
/// describes `n_tok >= tokens.end` activation rows; the CPU has the features of `D`.
#[inline(always)]
unsafe fn few_tokens<K: RowKernel, D: Dot>(
    w: *const u8,
    w_row: usize,
    n_rows: usize,
    v: &Views,
    tokens: std::ops::Range<usize>,
    n_tok: usize,
    out: *mut f32,
) {
    let t0 = tokens.start;
    macro_rules! streams {
        ($s:expr, $nt:literal) => {
            streams::<K, D, { $s }, $nt>(w, w_row, n_rows, v, t0, n_tok, out)
        };
    }
    // Measured on Zen 4 with kernel_bench (packed Q4_K, Q4_0 and Q6_K; four tokens take the
    // packed Q4_K kernel whose accumulators are one vector per row).
    match tokens.len() {
        1 => streams!(DECODE_STREAMS, 1),
        2 => streams!(2, 2),
        3 => streams!(1, 3),
        4 => streams!(2, 4),
        5 => streams!(1, 5),
        6 => streams!(1, 6),
        7 => streams!(1, 7),
        8 => streams!(1, 8),
        nt => unreachable!("few_tokens: {nt} tokens"),
    }
}

/// Rows `r`, `r + part`, ... (`S` streams) against tokens `t0..t0 + NT` of `v`, then the rows
/// left over one at a time.
///
/// # Safety
/// As [`few_tokens`] with `tokens == t0..t0 + NT`.
#[inline(always)]
unsafe fn streams<K: RowKernel, D: Dot, const S: usize, const NT: usize>(
    w: *const u8,
    w_row: usize,
    n_rows: usize,
    v: &Views,
    t0: usize,
    n_tok: usize,
    out: *mut f32,
) {
    let part = n_rows / S;
    for r in 0..part {
        let ws: [*const u8; S] = std::array::from_fn(|i| w.add((r + i * part) * w_row));
        let os: [*mut f32; S] = std::array::from_fn(|i| out.add((r + i * part) * n_tok));
        tile::<K, D, S, NT>(ws, v, t0, os);
    }
    for r in S * part..n_rows {
        tile::<K, D, 1, NT>([w.add(r * w_row)], v, t0, [out.add(r * n_tok)]);
    }
}

/// [`repack::gemm_rows8`] for a legacy type.
///
/// # Safety
/// As [`repack::gemm_rows8`].
#[inline(always)]
unsafe fn legacy_rows8<B: legacy::Block, D: Dot>(
    w: *const u8,
    w_row: usize,
    n_rows: usize,
    v: &Views,
    n_tok: usize,
    out: *mut f32,
) -> usize {
    repack::gemm_rows8::<repack::LegacyRows<B>, D>(w, w_row, n_rows, v, n_tok, out)
}

/// Where the activation rows and their converted scales are.
struct Views {
    act: *const u8,
    a_row: usize,
    scales: *const f32,
    s_row: usize,
    n_cols: usize,
}

/// `out[t0..t1]` of `R` weight rows.
///
/// # Safety
/// As [`RowKernel::dot_row`], for weight rows `w`, activation rows `t0..t1` of `v`; each of `o`
/// has `t1` values.
#[inline(always)]
unsafe fn row_pass<K: RowKernel, D: Dot, const R: usize>(
    w: [*const u8; R],
    o: [*mut f32; R],
    v: &Views,
    t0: usize,
    t1: usize,
) {
    let mut t = t0;
    if D::WIDE {
        while t + 8 <= t1 {
            tile::<K, D, R, 8>(w, v, t, o);
            t += 8;
        }
    }
    while t + 4 <= t1 {
        tile::<K, D, R, 4>(w, v, t, o);
        t += 4;
    }
    match t1 - t {
        3 => tile::<K, D, R, 3>(w, v, t, o),
        2 => tile::<K, D, R, 2>(w, v, t, o),
        1 => tile::<K, D, R, 1>(w, v, t, o),
        _ => {}
    }
}

/// `out[t..t + NT]` of `R` weight rows.
///
/// # Safety
/// As [`RowKernel::dot_row`], for activation rows `t..t + NT` of `v`; each of `o` has `t + NT`
/// values.
#[inline(always)]
unsafe fn tile<K: RowKernel, D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    v: &Views,
    t: usize,
    o: [*mut f32; R],
) {
    let mut rows = [std::ptr::null(); NT];
    let mut scales = [std::ptr::null(); NT];
    for i in 0..NT {
        rows[i] = v.act.add((t + i) * v.a_row);
        scales[i] = v.scales.add((t + i) * v.s_row);
    }
    let dots = K::dot_rows::<D, R, NT>(w, rows, scales, v.n_cols);
    for (o, d) in o.iter().zip(&dots) {
        o.add(t).copy_from_nonoverlapping(d.as_ptr(), NT);
    }
}

/// `gemm` for AVX2 + FMA + F16C.
///
/// # Safety
/// As [`gemm_tiled`]; the CPU has AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemm_avx2<K: RowKernel>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    gemm_tiled::<K, Avx2>(w, n_rows, act, n_tok, n_cols, out)
}

/// `gemm` for AVX-512 VNNI (plus what the AVX2 build needs).
///
/// # Safety
/// As [`gemm_tiled`]; the CPU has AVX2, FMA, F16C, AVX-512 F, BW, VL and VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn gemm_vnni<K: RowKernel>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    gemm_tiled::<K, Vnni>(w, n_rows, act, n_tok, n_cols, out)
}

// ---- helpers shared by the type kernels ------------------------------------------------------

/// 32 bytes from `p`, unaligned.
#[inline(always)]
unsafe fn load(p: *const u8) -> __m256i {
    _mm256_loadu_si256(p.cast())
}

/// 16 bytes from `p`, unaligned.
#[inline(always)]
unsafe fn load128(p: *const u8) -> __m128i {
    _mm_loadu_si128(p.cast())
}

/// The little-endian f16 at `p`, as f32 in every lane.
#[inline(always)]
unsafe fn splat_f16(p: *const u8) -> __m256 {
    _mm256_cvtph_ps(_mm_set1_epi16(p.cast::<i16>().read_unaligned()))
}

/// The little-endian f32 at `p` in every lane.
#[inline(always)]
unsafe fn splat_f32(p: *const u8) -> __m256 {
    _mm256_set1_ps(p.cast::<f32>().read_unaligned())
}

/// The little-endian u32 at `p`.
#[inline(always)]
unsafe fn read_u32(p: *const u8) -> u32 {
    u32::from_le(p.cast::<u32>().read_unaligned())
}

/// Sum of the eight lanes.
#[inline(always)]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Lane sums of each accumulator.
#[inline(always)]
unsafe fn hsums<const NT: usize>(acc: [__m256; NT]) -> [f32; NT] {
    let mut out = [0.0; NT];
    for (o, a) in out.iter_mut().zip(acc) {
        *o = hsum(a);
    }
    out
}
