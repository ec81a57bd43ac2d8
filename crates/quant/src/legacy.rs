//! The "legacy" 32-weight block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
//!
//! Layouts are `ggml-common.h`'s. Quantizers are `quantize_row_*_ref` from `ggml-quants.c`, which is
//! what llama-quantize runs for these types when no importance matrix is given (`quantize_q4_0` and
//! friends fall back to the reference when `quant_weights` is NULL; `quantize_q8_0` always does).
//! Dot products are `ggml_vec_dot_*_generic` from `ggml-cpu/quants.c`, keeping their order of
//! floating-point operations so a result can be compared bit for bit.
//!
//! Packing shared by the 4- and 5-bit formats: weight `j` of the first half of a block is the low
//! nibble of `qs[j]`, weight `j + 16` the high nibble. Q5 formats keep each weight's fifth bit in
//! the little-endian `u32` `qh`, bit `j` for weight `j`.

use bytemuck::{Pod, Zeroable};
use half::f16;

use crate::float::{fp16_to_fp32, fp32_to_fp16};
use crate::{BlockFormat, GgmlType};

pub const QK4_0: usize = 32;
pub const QK4_1: usize = 32;
pub const QK5_0: usize = 32;
pub const QK5_1: usize = 32;
pub const QK8_0: usize = 32;
pub const QK8_1: usize = 32;

/// 4-bit weights `(q - 8) * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; QK4_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);

/// 4-bit weights `q * d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; QK4_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);

/// 5-bit weights `(q - 16) * d`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_0 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);

/// 5-bit weights `q * d + m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; QK5_1 / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);

/// 8-bit weights `q * d`; also the activation format paired with Q4_0, Q5_0 and Q8_0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; QK8_0],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);

/// 8-bit activations `q * d` with `s = d * sum(q)`, so the Q4_1/Q5_1 dot can add `m * s` once per
/// block instead of `m` times each activation.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Pod, Zeroable)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; QK8_1],
}
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// The element of largest magnitude, sign included. ggml scans with a strict `<`, so the first of
/// equal magnitudes wins, and a block of zeros gives `+0.0`.
fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0.0f32, 0.0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

/// `MAX(amax, fabsf(v))` over the block, with C's `a > b ? a : b`.
fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(
        0.0f32,
        |amax, &v| if amax > v.abs() { amax } else { v.abs() },
    )
}

/// Block minimum and maximum, starting from `FLT_MAX` / `-FLT_MAX` as ggml does.
fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

/// `d ? 1.0f/d : 0.0f`: an all-equal block gets scale 0 instead of a division by zero.
fn inv_or_zero(d: f32) -> f32 {
    if d != 0.0 {
        1.0 / d
    } else {
        0.0
    }
}

/// The fifth bits of weights `j` and `j + 16`, already shifted to bit 4.
fn q5_high_bits(qh: u32, j: usize) -> (u8, u8) {
    let xh_0 = ((qh >> j) << 4) & 0x10;
    let xh_1 = (qh >> (j + 12)) & 0x10;
    (xh_0 as u8, xh_1 as u8)
}

/// Splits 5-bit codes `xi0` (weight `j`) and `xi1` (weight `j + 16`) into the nibble byte and
/// their two bits of `qh`.
fn q5_pack(qs: &mut u8, qh: &mut u32, j: usize, xi0: u8, xi1: u8) {
    *qs = (xi0 & 0x0F) | ((xi1 & 0x0F) << 4);
    *qh |= u32::from((xi0 & 0x10) >> 4) << j;
    *qh |= u32::from((xi1 & 0x10) >> 4) << (j + QK5_0 / 2);
}

fn check_lengths<B: BlockFormat>(n_blocks: usize, n_weights: usize) {
    assert_eq!(
        n_blocks * B::BLOCK,
        n_weights,
        "{}: {n_blocks} blocks do not hold {n_weights} weights",
        B::TYPE
    );
}

// For every finite input the float → integer conversions below stay in range (the scale maps the
// block onto the code range, with at most an ulp of overshoot that `min` or truncation absorbs), so
// Rust's saturating `as` and C's conversion agree. Non-finite inputs are undefined behaviour in C.

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const BLOCK: usize = QK4_0;
    type Dot = BlockQ8_0;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK4_0)) {
            // Dividing by -8 maps the extreme element to code 0 exactly, leaving 15 codes on the
            // other side: the signed max buys a level over a symmetric scale.
            let d = signed_absmax(x) / -8.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            for j in 0..QK4_0 / 2 {
                let x0 = x[j] * id;
                let x1 = x[j + QK4_0 / 2] * id;
                let xi0 = ((x0 + 8.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 8.5) as i8).min(15) as u8;
                y.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK4_0)) {
            let d = fp16_to_fp32(x.d);
            for j in 0..QK4_0 / 2 {
                let x0 = i32::from(x.qs[j] & 0x0F) - 8;
                let x1 = i32::from(x.qs[j] >> 4) - 8;
                y[j] = x0 as f32 * d;
                y[j + QK4_0 / 2] = x1 as f32 * d;
            }
        }
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK4_0 / 2 {
                let v0 = i32::from(x.qs[j] & 0x0F) - 8;
                let v1 = i32::from(x.qs[j] >> 4) - 8;
                sumi0 += v0 * i32::from(y.qs[j]);
                sumi1 += v1 * i32::from(y.qs[j + QK4_0 / 2]);
            }
            let sumi = sumi0 + sumi1;
            sumf += sumi as f32 * fp16_to_fp32(x.d) * fp16_to_fp32(y.d);
        }
        sumf
    }
}

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const BLOCK: usize = QK4_1;
    type Dot = BlockQ8_1;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK4_1)) {
            let (min, max) = min_max(x);
            let d = (max - min) / 15.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            y.m = fp32_to_fp16(min);
            for j in 0..QK4_1 / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[j + QK4_1 / 2] - min) * id;
                let xi0 = ((x0 + 0.5) as i8).min(15) as u8;
                let xi1 = ((x1 + 0.5) as i8).min(15) as u8;
                y.qs[j] = xi0 | (xi1 << 4);
            }
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK4_1)) {
            let d = fp16_to_fp32(x.d);
            let m = fp16_to_fp32(x.m);
            for j in 0..QK4_1 / 2 {
                let x0 = i32::from(x.qs[j] & 0x0F);
                let x1 = i32::from(x.qs[j] >> 4);
                y[j] = x0 as f32 * d + m;
                y[j + QK4_1 / 2] = x1 as f32 * d + m;
            }
        }
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK4_1 / 2 {
                let v0 = i32::from(x.qs[j] & 0x0F);
                let v1 = i32::from(x.qs[j] >> 4);
                sumi0 += v0 * i32::from(y.qs[j]);
                sumi1 += v1 * i32::from(y.qs[j + QK4_1 / 2]);
            }
            let sumi = sumi0 + sumi1;
            sumf += (fp16_to_fp32(x.d) * fp16_to_fp32(y.d)) * sumi as f32
                + fp16_to_fp32(x.m) * fp16_to_fp32(y.s);
        }
        sumf
    }
}

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const BLOCK: usize = QK5_0;
    type Dot = BlockQ8_0;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK5_0)) {
            let d = signed_absmax(x) / -16.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            let mut qh = 0u32;
            for j in 0..QK5_0 / 2 {
                let x0 = x[j] * id;
                let x1 = x[j + QK5_0 / 2] * id;
                let xi0 = ((x0 + 16.5) as i8).min(31) as u8;
                let xi1 = ((x1 + 16.5) as i8).min(31) as u8;
                q5_pack(&mut y.qs[j], &mut qh, j, xi0, xi1);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK5_0)) {
            let d = fp16_to_fp32(x.d);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..QK5_0 / 2 {
                let (xh_0, xh_1) = q5_high_bits(qh, j);
                let x0 = i32::from((x.qs[j] & 0x0F) | xh_0) - 16;
                let x1 = i32::from((x.qs[j] >> 4) | xh_1) - 16;
                y[j] = x0 as f32 * d;
                y[j + QK5_0 / 2] = x1 as f32 * d;
            }
        }
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK5_0 / 2 {
                let (xh_0, xh_1) = q5_high_bits(qh, j);
                let x0 = i32::from((x.qs[j] & 0x0F) | xh_0) - 16;
                let x1 = i32::from((x.qs[j] >> 4) | xh_1) - 16;
                sumi0 += x0 * i32::from(y.qs[j]);
                sumi1 += x1 * i32::from(y.qs[j + QK5_0 / 2]);
            }
            let sumi = sumi0 + sumi1;
            sumf += (fp16_to_fp32(x.d) * fp16_to_fp32(y.d)) * sumi as f32;
        }
        sumf
    }
}

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const BLOCK: usize = QK5_1;
    type Dot = BlockQ8_1;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK5_1)) {
            let (min, max) = min_max(x);
            let d = (max - min) / 31.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            y.m = fp32_to_fp16(min);
            let mut qh = 0u32;
            for j in 0..QK5_1 / 2 {
                let x0 = (x[j] - min) * id;
                let x1 = (x[j + QK5_1 / 2] - min) * id;
                // Unlike Q4_1 there is no clamp to 31: `(max - min) * id` rounds to at most 31.
                let xi0 = (x0 + 0.5) as u8;
                let xi1 = (x1 + 0.5) as u8;
                q5_pack(&mut y.qs[j], &mut qh, j, xi0, xi1);
            }
            y.qh = qh.to_le_bytes();
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        for (x, y) in blocks.iter().zip(out.chunks_exact_mut(QK5_1)) {
            let d = fp16_to_fp32(x.d);
            let m = fp16_to_fp32(x.m);
            let qh = u32::from_le_bytes(x.qh);
            for j in 0..QK5_1 / 2 {
                let (xh_0, xh_1) = q5_high_bits(qh, j);
                let x0 = i32::from((x.qs[j] & 0x0F) | xh_0);
                let x1 = i32::from((x.qs[j] >> 4) | xh_1);
                y[j] = x0 as f32 * d + m;
                y[j + QK5_1 / 2] = x1 as f32 * d + m;
            }
        }
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        assert_eq!(w.len(), a.len());
        let mut sumf = 0.0f32;
        for (x, y) in w.iter().zip(a) {
            let qh = u32::from_le_bytes(x.qh);
            let (mut sumi0, mut sumi1) = (0i32, 0i32);
            for j in 0..QK5_1 / 2 {
                let (xh_0, xh_1) = q5_high_bits(qh, j);
                let x0 = i32::from((x.qs[j] & 0x0F) | xh_0);
                let x1 = i32::from((x.qs[j] >> 4) | xh_1);
                sumi0 += x0 * i32::from(y.qs[j]);
                sumi1 += x1 * i32::from(y.qs[j + QK5_1 / 2]);
            }
            let sumi = sumi0 + sumi1;
            sumf += (fp16_to_fp32(x.d) * fp16_to_fp32(y.d)) * sumi as f32
                + fp16_to_fp32(x.m) * fp16_to_fp32(y.s);
        }
        sumf
    }
}

/// `qs * d` for each 8-bit block given as `(d, qs)`: Q8_0 and Q8_1 store the same codes.
fn q8_dequantize<'a>(blocks: impl Iterator<Item = (f16, &'a [i8; QK8_0])>, out: &mut [f32]) {
    for ((d, qs), y) in blocks.zip(out.chunks_exact_mut(QK8_0)) {
        let d = fp16_to_fp32(d);
        for (o, &q) in y.iter_mut().zip(qs) {
            *o = f32::from(q) * d;
        }
    }
}

/// Dot of two rows of 8-bit blocks, `(d, qs)` each, in ggml's order: `sumi * (d_x * d_y)` per block.
fn q8_dot<'a>(
    pairs: impl Iterator<Item = ((f16, &'a [i8; QK8_0]), (f16, &'a [i8; QK8_0]))>,
) -> f32 {
    let mut sumf = 0.0f32;
    for ((dx, qx), (dy, qy)) in pairs {
        let sumi: i32 = qx
            .iter()
            .zip(qy)
            .map(|(&p, &q)| i32::from(p) * i32::from(q))
            .sum();
        sumf += sumi as f32 * (fp16_to_fp32(dx) * fp16_to_fp32(dy));
    }
    sumf
}

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const BLOCK: usize = QK8_0;
    type Dot = BlockQ8_0;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK8_0)) {
            let d = abs_max(x) / 127.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            for (q, &v) in y.qs.iter_mut().zip(x) {
                // `roundf`: halves away from zero, which is also what `f32::round` does.
                *q = (v * id).round() as i8;
            }
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        q8_dequantize(blocks.iter().map(|x| (x.d, &x.qs)), out);
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_0]) -> f32 {
        assert_eq!(w.len(), a.len());
        q8_dot(w.iter().zip(a).map(|(x, y)| ((x.d, &x.qs), (y.d, &y.qs))))
    }
}

/// Q8_1 is an activation format in ggml: it has a reference quantizer but neither `to_float` nor
/// `vec_dot`. The two here complete the trait and follow Q8_0's (`s` is redundant for them).
impl BlockFormat for BlockQ8_1 {
    const TYPE: GgmlType = GgmlType::Q8_1;
    const BLOCK: usize = QK8_1;
    type Dot = BlockQ8_1;

    fn quantize(x: &[f32], blocks: &mut [Self]) {
        check_lengths::<Self>(blocks.len(), x.len());
        for (y, x) in blocks.iter_mut().zip(x.chunks_exact(QK8_1)) {
            let d = abs_max(x) / 127.0;
            let id = inv_or_zero(d);
            y.d = fp32_to_fp16(d);
            let mut sum = 0i32;
            for j in 0..QK8_1 / 2 {
                let v0 = x[j] * id;
                let v1 = x[j + QK8_1 / 2] * id;
                y.qs[j] = v0.round() as i8;
                y.qs[j + QK8_1 / 2] = v1.round() as i8;
                sum += i32::from(y.qs[j]) + i32::from(y.qs[j + QK8_1 / 2]);
            }
            // The sum of the rounded codes times the unrounded f32 scale, not the sum of the inputs.
            y.s = fp32_to_fp16(sum as f32 * d);
        }
    }

    fn dequantize(blocks: &[Self], out: &mut [f32]) {
        check_lengths::<Self>(blocks.len(), out.len());
        q8_dequantize(blocks.iter().map(|x| (x.d, &x.qs)), out);
    }

    fn vec_dot(w: &[Self], a: &[BlockQ8_1]) -> f32 {
        assert_eq!(w.len(), a.len());
        q8_dot(w.iter().zip(a).map(|(x, y)| ((x.d, &x.qs), (y.d, &y.qs))))
    }
}
