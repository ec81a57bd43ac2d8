//! aarch64 kernels for every weight type on NEON, with `sdot` where the CPU has the dot-product
//! extension (FEAT_DotProd): Q8_0, Q4_0, Q5_0, Q4_1, Q5_1 ([`legacy`]), Q2_K..Q6_K ([`kquants`]),
//! F32, F16, BF16 ([`float`]), and Q4_0 and Q4_K in their load-time layouts ([`packed`]).
//!
//! The structure follows `x86/`: one generic kernel per type, dotting a weight row with up to four
//! activation rows, inlined into `#[target_feature]` entry points for each [`Dot`]. Quantized
//! weights are unpacked to `i8` (signed weights with their offset subtracted, or the unsigned
//! codes of types with a min, which fit `0..=63`), so both operands of a product are `i8`. `sdot`
//! is written as inline assembly because `vdotq_s32` is not stable yet. With one token, every
//! kernel takes a tile's rows as [`DECODE_STREAMS`] interleaved streams, as on x86.
//!
//! Activation quantizers are exact, like the x86 ones: `fcvtas` is C's `roundf` with a saturating
//! conversion, the narrowing moves saturate (Q8_0, Q8_1) or truncate (Q8_K) as Rust's `as i8` does.

#[path = "neon_float.rs"]
mod float;
#[path = "neon_kquants.rs"]
mod kquants;
#[path = "neon_legacy.rs"]
mod legacy;
#[path = "neon_packed.rs"]
mod packed;

use std::arch::aarch64::*;
use std::arch::asm;
use std::mem::{offset_of, size_of};

use super::{Isa, MatKernel};
use crate::float::fp32_to_fp16;
use crate::kquants::BlockQ8K;
use crate::legacy::{BlockQ8_0, BlockQ8_1};
use crate::{GgmlType, QK_K};

pub(super) fn is_available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub(super) fn table() -> &'static [MatKernel] {
    static SDOT: [MatKernel; 13] = kernels(true);
    static NO_SDOT: [MatKernel; 13] = kernels(false);
    if std::arch::is_aarch64_feature_detected!("dotprod") {
        &SDOT
    } else {
        &NO_SDOT
    }
}

const fn kernels(sdot: bool) -> [MatKernel; 13] {
    [
        kernel::<legacy::Q8_0>(sdot),
        kernel::<legacy::Q4_0>(sdot).with_packed(
            super::packed::pack_q4_0,
            super::packed::unpack_q4_0,
            gemm_fn::<packed::PackedQ4_0>(sdot),
        ),
        kernel::<legacy::Q4_1>(sdot),
        kernel::<legacy::Q5_0>(sdot),
        kernel::<legacy::Q5_1>(sdot),
        kernel::<kquants::Q2K>(sdot),
        kernel::<kquants::Q3K>(sdot),
        kernel::<kquants::Q4K>(sdot).with_packed(
            super::packed::pack_q4_k,
            super::packed::unpack_q4_k,
            gemm_fn::<packed::PackedQ4K>(sdot),
        ),
        kernel::<kquants::Q5K>(sdot),
        kernel::<kquants::Q6K>(sdot),
        kernel::<float::F32>(sdot),
        kernel::<float::F16>(sdot),
        kernel::<float::Bf16>(sdot),
    ]
}

const fn gemm_fn<K: RowKernel>(sdot: bool) -> super::GemmFn {
    if sdot {
        gemm_sdot::<K>
    } else {
        gemm_neon::<K>
    }
}

const fn kernel<K: RowKernel>(sdot: bool) -> MatKernel {
    let gemm = gemm_fn::<K>(sdot);
    let quantize: super::QuantizeFn = match K::ACT {
        GgmlType::Q8_0 => quantize_q8_0,
        GgmlType::Q8_1 => quantize_q8_1,
        GgmlType::Q8_K => quantize_q8_k,
        _ => f32_copy,
    };
    MatKernel::new(K::WEIGHT, K::ACT, Isa::Neon, quantize, gemm)
}

/// `i8 × i8` products summed four at a time into 32-bit lanes.
trait Dot {
    /// `acc` plus, in 32-bit lane `k`, the sum of the products of bytes `4k..4k + 4` of `a` and
    /// `b`: `sdot`'s lanes, which the packed kernels rely on (a lane is a block there). Products
    /// of -128 by -128 may overflow the plain NEON version's 16-bit pair sums.
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t;
}

/// `sdot` (FEAT_DotProd).
struct SDot;

impl Dot for SDot {
    #[inline(always)]
    unsafe fn dot(mut acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        asm!(
            ".arch_extension dotprod",
            "sdot {acc:v}.4s, {a:v}.16b, {b:v}.16b",
            acc = inout(vreg) acc,
            a = in(vreg) a,
            b = in(vreg) b,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}

/// Plain NEON: widening multiplies, then pairwise adds (`addp` of the two halves' products puts
/// the pair sums of bytes `0..8` in lanes 0..4 and of `8..16` in lanes 4..8, and `sadalp` adds
/// lanes `2k`, `2k + 1` into lane `k`: bytes `4k..4k + 4`, as `sdot`).
struct Mull;

impl Dot for Mull {
    #[inline(always)]
    unsafe fn dot(acc: int32x4_t, a: int8x16_t, b: int8x16_t) -> int32x4_t {
        let lo = vmull_s8(vget_low_s8(a), vget_low_s8(b));
        let hi = vmull_high_s8(a, b);
        vpadalq_s16(acc, vpaddq_s16(lo, hi))
    }
}

/// One weight type's kernel.
trait RowKernel {
    const WEIGHT: GgmlType;
    const ACT: GgmlType;

    /// Whether the kernel reads weights in their load-time layout ([`crate::kernels::packed`])
    /// and activations rewritten to match by [`Self::pack_acts`], once per `gemm` call.
    const PACKED: bool = false;

    /// With [`Self::PACKED`]: writes the `n_tok` activation rows (`a_row` bytes apart) in the
    /// layout [`Self::dot_rows`] reads into `out`, and returns its row length.
    ///
    /// # Safety
    /// The CPU has NEON; `act` holds `n_tok` rows of `n_cols` values of [`Self::ACT`].
    unsafe fn pack_acts(
        _act: &[u8],
        _a_row: usize,
        _n_tok: usize,
        _n_cols: usize,
        _out: &mut Vec<u8>,
    ) -> usize {
        unreachable!("only packed kernels rewrite their activations")
    }

    /// Dots the weight row at `w` with the `NT` activation rows at `a`, all `n_cols` values long.
    ///
    /// # Safety
    /// The CPU has NEON (and dot-product if `D` is [`SDot`]); `w` points to a whole weight row and
    /// each `a[t]` to a whole activation row of `n_cols` values, which is whole blocks (in the
    /// layouts of [`Self::PACKED`] where it is set).
    unsafe fn dot_row<D: Dot, const NT: usize>(
        w: *const u8,
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [f32; NT];

    /// [`Self::dot_row`] for `R` weight rows; one after the other unless a kernel interleaves
    /// them (the packed ones, block group by block group).
    ///
    /// # Safety
    /// As [`Self::dot_row`], for each of the `R` rows.
    #[inline(always)]
    unsafe fn dot_rows<D: Dot, const R: usize, const NT: usize>(
        w: [*const u8; R],
        a: [*const u8; NT],
        n_cols: usize,
    ) -> [[f32; NT]; R] {
        let mut out = [[0.0; NT]; R];
        for (o, w) in out.iter_mut().zip(w) {
            *o = Self::dot_row::<D, NT>(w, a, n_cols);
        }
        out
    }
}

/// Rows a decode mat-vec takes in turn, each from its own part of the tile, so that the hardware
/// prefetchers follow several streams per core: the figure measured best on x86 (Zen 4,
/// `x86::DECODE_STREAMS`). Its effect on ARM cores is unmeasured.
const DECODE_STREAMS: usize = 4;

/// Activation rows are walked in groups of about this many bytes, so that a group stays in L2
/// while every weight row of the tile passes over it (as on x86).
const ACT_GROUP_BYTES: usize = 192 * 1024;

std::thread_local! {
    /// [`RowKernel::PACKED`] activations of the current `gemm` call; kept to avoid allocating
    /// per call.
    static ACT_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The gemm driver: with one token, the rows as [`DECODE_STREAMS`] streams; with more, every
/// weight row against tiles of up to four activation rows, in groups that stay in L2.
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
    let mut v = Views {
        act: act.as_ptr(),
        a_row: act.len() / n_tok.max(1),
        n_cols,
        n_tok,
    };
    let mut packed = ACT_BUF.take();
    if K::PACKED {
        v.a_row = K::pack_acts(act, v.a_row, n_tok, n_cols, &mut packed);
        v.act = packed.as_ptr();
    }
    let (w, out) = (w.as_ptr(), out.as_mut_ptr());
    if n_tok == 1 {
        streams::<K, D, DECODE_STREAMS>(w, w_row, n_rows, &v, out);
    } else {
        let group = (ACT_GROUP_BYTES / v.a_row.max(1) / 4 * 4).max(4);
        for t0 in (0..n_tok).step_by(group) {
            let t1 = n_tok.min(t0 + group);
            for r in 0..n_rows {
                let (wr, o) = ([w.add(r * w_row)], [out.add(r * n_tok)]);
                let mut t = t0;
                while t + 4 <= t1 {
                    tile::<K, D, 1, 4>(wr, &v, t, o);
                    t += 4;
                }
                match t1 - t {
                    3 => tile::<K, D, 1, 3>(wr, &v, t, o),
                    2 => tile::<K, D, 1, 2>(wr, &v, t, o),
                    1 => tile::<K, D, 1, 1>(wr, &v, t, o),
                    _ => {}
                }
            }
        }
    }
    ACT_BUF.set(packed);
}

/// Where the activation rows are (after [`RowKernel::pack_acts`] for packed kernels).
struct Views {
    act: *const u8,
    a_row: usize,
    n_cols: usize,
    n_tok: usize,
}

/// One token against rows `r`, `r + part`, ... (`S` streams, `part = n_rows / S`) for each `r`
/// in `0..part`, then the rows left over one at a time.
///
/// # Safety
/// As [`gemm_tiled`] with one token: `w` holds `n_rows` rows of `w_row` bytes, `out` `n_rows`
/// floats.
#[inline(always)]
unsafe fn streams<K: RowKernel, D: Dot, const S: usize>(
    w: *const u8,
    w_row: usize,
    n_rows: usize,
    v: &Views,
    out: *mut f32,
) {
    let part = n_rows / S;
    for r in 0..part {
        let ws: [*const u8; S] = std::array::from_fn(|i| w.add((r + i * part) * w_row));
        let os: [*mut f32; S] = std::array::from_fn(|i| out.add(r + i * part));
        tile::<K, D, S, 1>(ws, v, 0, os);
    }
    for r in S * part..n_rows {
        tile::<K, D, 1, 1>([w.add(r * w_row)], v, 0, [out.add(r)]);
    }
}

/// Tokens `t..t + NT` of `R` weight rows, written to `o[i][t..t + NT]` (row `i`'s outputs, `n_tok`
/// apart).
///
/// # Safety
/// As [`RowKernel::dot_rows`], for activation rows `t..t + NT <= v.n_tok` of `v`.
#[inline(always)]
unsafe fn tile<K: RowKernel, D: Dot, const R: usize, const NT: usize>(
    w: [*const u8; R],
    v: &Views,
    t: usize,
    o: [*mut f32; R],
) {
    debug_assert!(t + NT <= v.n_tok);
    let a: [*const u8; NT] = std::array::from_fn(|i| v.act.add((t + i) * v.a_row));
    let dots = K::dot_rows::<D, R, NT>(w, a, v.n_cols);
    for (o, d) in o.iter().zip(&dots) {
        o.add(t).copy_from_nonoverlapping(d.as_ptr(), NT);
    }
}

/// `gemm` with `sdot`.
///
/// # Safety
/// As [`gemm_tiled`]; the CPU has NEON and the dot-product extension.
#[target_feature(enable = "neon,dotprod")]
unsafe fn gemm_sdot<K: RowKernel>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    gemm_tiled::<K, SDot>(w, n_rows, act, n_tok, n_cols, out)
}

/// `gemm` on plain NEON.
///
/// # Safety
/// As [`gemm_tiled`]; the CPU has NEON.
#[target_feature(enable = "neon")]
unsafe fn gemm_neon<K: RowKernel>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    gemm_tiled::<K, Mull>(w, n_rows, act, n_tok, n_cols, out)
}

// ---- helpers ---------------------------------------------------------------------------------
// Each reads from `p` as many bytes as its result holds, which the caller makes sure are readable;
// `p` needs no alignment.

#[inline(always)]
unsafe fn load_s8(p: *const u8) -> int8x16_t {
    vld1q_s8(p.cast())
}

#[inline(always)]
unsafe fn load_u8(p: *const u8) -> uint8x16_t {
    vld1q_u8(p)
}

/// Four little-endian f32.
#[inline(always)]
unsafe fn load_f32(p: *const u8) -> float32x4_t {
    vreinterpretq_f32_u8(load_u8(p))
}

/// Eight little-endian f16, as f32: `fcvtl` / `fcvtl2` (base AdvSIMD, exact for every f16) through
/// `asm!`, as `vcvt_f32_f16` takes the f16 vector types, which are not stable yet.
#[inline(always)]
unsafe fn load_f16x8(p: *const u8) -> [float32x4_t; 2] {
    let h = load_u8(p);
    let (lo, hi): (float32x4_t, float32x4_t);
    asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = out(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    [lo, hi]
}

/// The little-endian f16 at `p`, as f32: `fcvt`, two instructions where the portable
/// [`crate::float::fp16_to_fp32`] takes a dozen, once per block and token. Both are exact for every
/// f16 but NaN (`fcvt` ignores FPCR.FZ16; FPCR.AHP, the alternative half format, is never set).
#[inline(always)]
unsafe fn read_f16(p: *const u8) -> f32 {
    let bits = u32::from(u16::from_le(p.cast::<u16>().read_unaligned()));
    let f: f32;
    asm!(
        "fmov {f:s}, {bits:w}",
        "fcvt {f:s}, {f:h}",
        bits = in(reg) bits,
        f = out(vreg) f,
        options(pure, nomem, nostack, preserves_flags)
    );
    f
}

#[inline(always)]
unsafe fn read_f32(p: *const u8) -> f32 {
    f32::from_bits(u32::from_le(p.cast::<u32>().read_unaligned()))
}

#[inline(always)]
unsafe fn read_u32(p: *const u8) -> u32 {
    u32::from_le(p.cast::<u32>().read_unaligned())
}

/// Lane sums of each accumulator, plus `extra`.
#[inline(always)]
unsafe fn hsums<const NT: usize>(acc: [float32x4_t; NT], extra: [f32; NT]) -> [f32; NT] {
    let mut out = extra;
    for (o, a) in out.iter_mut().zip(acc) {
        *o += vaddvq_f32(a);
    }
    out
}

const Q8_0_BYTES: usize = size_of::<BlockQ8_0>();
const Q8_0_QS: usize = offset_of!(BlockQ8_0, qs);
const Q8_1_BYTES: usize = size_of::<BlockQ8_1>();
const Q8_1_QS: usize = offset_of!(BlockQ8_1, qs);
const Q8K_BYTES: usize = size_of::<BlockQ8K>();
const Q8K_QS: usize = offset_of!(BlockQ8K, qs);

// ---- activation quantizers -------------------------------------------------------------------

/// One 32-value block of `quantize_row_q8_0_ref` / `q8_1_ref`: the scale `d` and the codes.
#[inline(always)]
unsafe fn q8_block(p: *const f32) -> (f32, [i8; 32]) {
    let mut v = [vdupq_n_f32(0.0); 8];
    let mut m = vdupq_n_f32(0.0);
    for (i, vi) in v.iter_mut().enumerate() {
        *vi = vld1q_f32(p.add(4 * i));
        m = vmaxnmq_f32(m, vabsq_f32(*vi));
    }
    let d = vmaxnmvq_f32(m) / 127.0;
    let id = if d != 0.0 { 1.0 / d } else { 0.0 };
    let mut codes = [0i8; 32];
    for i in 0..4 {
        // `fcvtas`: round half away from zero (C's roundf), saturating, NaN to 0; then
        // saturating narrows, as Rust's `f32 as i8`.
        let c0 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * i], id));
        let c1 = vcvtaq_s32_f32(vmulq_n_f32(v[2 * i + 1], id));
        let c16 = vcombine_s16(vqmovn_s32(c0), vqmovn_s32(c1));
        vst1_s8(codes.as_mut_ptr().add(8 * i), vqmovn_s16(c16));
    }
    (d, codes)
}

/// `quantize_row_q8_0_ref`.
///
/// # Safety
/// NEON is available; `out` holds `x.len() / 32` blocks.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_0(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_0_BYTES)) {
        let (d, codes) = q8_block(x.as_ptr());
        y[..2].copy_from_slice(&fp32_to_fp16(d).to_bits().to_le_bytes());
        y[Q8_0_QS..].copy_from_slice(bytemuck::cast_slice(&codes));
    }
}

/// `quantize_row_q8_1_ref`: Q8_0's codes, plus `s = d · Σ codes` (the rounded codes times the
/// f32 scale, as the reference computes it).
///
/// # Safety
/// NEON is available; `out` holds `x.len() / 32` blocks.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_1(x: &[f32], out: &mut [u8]) {
    const _: () = assert!(offset_of!(BlockQ8_1, d) == 0 && offset_of!(BlockQ8_1, s) == 2);
    for (x, y) in x.chunks_exact(32).zip(out.chunks_exact_mut(Q8_1_BYTES)) {
        let (d, codes) = q8_block(x.as_ptr());
        // 32 codes in [-128, 127]: the sum fits the i16 of `saddlv`.
        let q = codes.as_ptr();
        let sum = i32::from(vaddlvq_s8(vld1q_s8(q))) + i32::from(vaddlvq_s8(vld1q_s8(q.add(16))));
        y[..2].copy_from_slice(&fp32_to_fp16(d).to_bits().to_le_bytes());
        y[2..4].copy_from_slice(&fp32_to_fp16(sum as f32 * d).to_bits().to_le_bytes());
        y[Q8_1_QS..].copy_from_slice(bytemuck::cast_slice(&codes));
    }
}

/// F32 activations for float weights: the values themselves, little-endian.
fn f32_copy(x: &[f32], out: &mut [u8]) {
    for (o, v) in out.chunks_exact_mut(4).zip(x) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

/// ggml's `nearest_int(v).min(127)`: the low mantissa bits of `v + 1.5 * 2^23`.
#[inline(always)]
unsafe fn nearest_int_min127(v: float32x4_t) -> int32x4_t {
    let bits = vreinterpretq_s32_f32(vaddq_f32(v, vdupq_n_f32(12_582_912.0)));
    let n = vsubq_s32(
        vandq_s32(bits, vdupq_n_s32(0x007f_ffff)),
        vdupq_n_s32(0x0040_0000),
    );
    vminq_s32(n, vdupq_n_s32(127))
}

/// `quantize_row_q8_K_ref`.
///
/// # Safety
/// NEON is available; `out` holds `x.len() / 256` blocks.
#[target_feature(enable = "neon")]
unsafe fn quantize_q8_k(x: &[f32], out: &mut [u8]) {
    for (x, y) in x.chunks_exact(QK_K).zip(out.chunks_exact_mut(Q8K_BYTES)) {
        let p = x.as_ptr();
        let mut m = vdupq_n_f32(0.0);
        for i in 0..QK_K / 4 {
            m = vmaxnmq_f32(m, vabsq_f32(vld1q_f32(p.add(4 * i))));
        }
        let amax = vmaxnmvq_f32(m);
        if amax == 0.0 {
            y.fill(0);
            continue;
        }
        // The reference keeps the first element of largest magnitude, with its sign.
        let max = *x
            .iter()
            .find(|v| v.abs() == amax)
            .expect("the maximum is an element");
        let iscale = -127.0 / max;
        let mut codes = [0i8; QK_K];
        for i in 0..QK_K / 8 {
            // Truncating narrows, as Rust's `i32 as i8`.
            let c0 = nearest_int_min127(vmulq_n_f32(vld1q_f32(p.add(8 * i)), iscale));
            let c1 = nearest_int_min127(vmulq_n_f32(vld1q_f32(p.add(8 * i + 4)), iscale));
            let c16 = vcombine_s16(vmovn_s32(c0), vmovn_s32(c1));
            vst1_s8(codes.as_mut_ptr().add(8 * i), vmovn_s16(c16));
        }
        let mut bsums = [0i16; QK_K / 16];
        for (s, q) in bsums.iter_mut().zip(codes.chunks_exact(16)) {
            *s = vaddlvq_s8(vld1q_s8(q.as_ptr()));
        }
        y[offset_of!(BlockQ8K, d)..][..4].copy_from_slice(&(1.0 / iscale).to_le_bytes());
        y[Q8K_QS..][..QK_K].copy_from_slice(bytemuck::cast_slice(&codes));
        let bsums_at = offset_of!(BlockQ8K, bsums);
        for (o, s) in y[bsums_at..].chunks_exact_mut(2).zip(bsums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::float::fp16_to_fp32;

    /// Both [`Dot`]s put the products of bytes `4k..4k + 4` in lane `k` (the packed kernels' lanes
    /// are blocks), on pseudo-random bytes (one operand in `[-127, 127]`, as activations are).
    /// `scripts/test-neon.sh` sets `RUSTORCH_NEON_DOTPROD` to 1 or 0 by the CPU it emulates, and
    /// then the CPU must (not) have `sdot`, so that both kernel tables are known to be tested.
    #[test]
    fn dots_sum_byte_quads_into_lanes() {
        let dotprod = std::arch::is_aarch64_feature_detected!("dotprod");
        if let Some(expected) = std::env::var_os("RUSTORCH_NEON_DOTPROD") {
            assert_eq!(dotprod, expected == "1", "dotprod detected: {dotprod}");
        }
        if !dotprod {
            eprintln!("this CPU has no dotprod: only the plain NEON dot is checked");
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut byte = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8 as i8
        };
        for _ in 0..2000 {
            let a: [i8; 16] = std::array::from_fn(|_| byte());
            let b: [i8; 16] = std::array::from_fn(|_| byte().max(-127));
            let acc = [7, -3, 100_000, -100_000];
            let want: [i32; 4] = std::array::from_fn(|k| {
                let products = (4 * k..4 * k + 4).map(|i| i32::from(a[i]) * i32::from(b[i]));
                acc[k] + products.sum::<i32>()
            });
            let run = |dot: unsafe fn(int32x4_t, int8x16_t, int8x16_t) -> int32x4_t| {
                let mut out = [0i32; 4];
                // SAFETY: 16-byte arrays; NEON is part of every aarch64 target, and `SDot` is
                // only run where the CPU has dotprod.
                unsafe {
                    let sum = dot(
                        vld1q_s32(acc.as_ptr()),
                        vld1q_s8(a.as_ptr()),
                        vld1q_s8(b.as_ptr()),
                    );
                    vst1q_s32(out.as_mut_ptr(), sum);
                }
                out
            };
            assert_eq!(run(Mull::dot), want, "plain NEON, {a:?} · {b:?}");
            if dotprod {
                assert_eq!(run(SDot::dot), want, "sdot, {a:?} · {b:?}");
            }
        }
    }

    /// `fcvt` against the portable conversion the reference uses, on every f16 but NaN.
    #[test]
    fn read_f16_matches_fp16_to_fp32() {
        for bits in 0..=u16::MAX {
            let h = half::f16::from_bits(bits);
            if h.is_nan() {
                continue;
            }
            // SAFETY: two readable bytes; NEON (and so `fcvt`) is part of every aarch64 target.
            let got = unsafe { read_f16(bits.to_le_bytes().as_ptr()) };
            assert_eq!(got.to_bits(), fp16_to_fp32(h).to_bits(), "{bits:#06x}");
        }
    }
}
