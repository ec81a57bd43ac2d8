//! The fallback: the crate's scalar reference code behind the [`MatKernel`] interface.
//!
//! Quantized weights dot exactly as [`crate::dispatch::vec_dot`] (same `BlockFormat::vec_dot`,
//! bit for bit). Float weights take F32 activations: each product is rounded to f32 and summed in
//! f64, as ggml's scalar `ggml_vec_dot_f32` does.

use std::borrow::Cow;
use std::mem::size_of;

use half::{bf16, f16};

use super::{Isa, MatKernel};
use crate::float::{bf16_to_fp32, fp16_to_fp32};
use crate::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0};
use crate::{dispatch, BlockFormat, GgmlType};

pub(super) fn table() -> &'static [MatKernel] {
    static TABLE: [MatKernel; 13] = [
        quantized::<BlockQ8_0>(),
        quantized::<BlockQ4_0>(),
        quantized::<BlockQ4_1>(),
        quantized::<BlockQ5_0>(),
        quantized::<BlockQ5_1>(),
        quantized::<BlockQ2K>(),
        quantized::<BlockQ3K>(),
        quantized::<BlockQ4K>(),
        quantized::<BlockQ5K>(),
        quantized::<BlockQ6K>(),
        float::<f32>(),
        float::<f16>(),
        float::<bf16>(),
    ];
    &TABLE
}

const fn quantized<B: BlockFormat>() -> MatKernel {
    MatKernel::new(
        B::TYPE,
        B::Dot::TYPE,
        Isa::Scalar,
        quantize_row::<B::Dot>,
        gemm_blocks::<B>,
    )
}

const fn float<W: FloatWeight>() -> MatKernel {
    MatKernel::new(
        W::TYPE,
        GgmlType::F32,
        Isa::Scalar,
        quantize_row::<f32>,
        gemm_float::<W>,
    )
}

/// `quantize_row` of the reference; the caller checked the lengths.
fn quantize_row<A: BlockFormat>(x: &[f32], out: &mut [u8]) {
    dispatch::quantize_row(A::TYPE, x, out).expect("quantize_act lengths were checked");
}

/// `bytes` as blocks: borrowed when aligned, else copied (a row at an odd offset of a buffer).
fn blocks_of<B: BlockFormat>(bytes: &[u8]) -> Cow<'_, [B]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(blocks) => Cow::Borrowed(blocks),
        Err(_) => {
            let mut blocks = vec![B::zeroed(); bytes.len() / size_of::<B>()];
            bytemuck::cast_slice_mut::<B, u8>(&mut blocks).copy_from_slice(bytes);
            Cow::Owned(blocks)
        }
    }
}

fn gemm_blocks<B: BlockFormat>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    let w_row = n_cols / B::BLOCK * size_of::<B>();
    let a_row = n_cols / B::Dot::BLOCK * size_of::<B::Dot>();
    for r in 0..n_rows {
        let wb = blocks_of::<B>(&w[r * w_row..][..w_row]);
        for t in 0..n_tok {
            let ab = blocks_of::<B::Dot>(&act[t * a_row..][..a_row]);
            out[r * n_tok + t] = B::vec_dot(&wb, &ab);
        }
    }
}

/// A float weight element, read from little-endian bytes.
trait FloatWeight {
    const TYPE: GgmlType;
    fn to_f32(bytes: &[u8]) -> f32;
}

impl FloatWeight for f32 {
    const TYPE: GgmlType = GgmlType::F32;
    fn to_f32(bytes: &[u8]) -> f32 {
        f32::from_le_bytes(bytes.try_into().expect("4 bytes"))
    }
}

impl FloatWeight for f16 {
    const TYPE: GgmlType = GgmlType::F16;
    fn to_f32(bytes: &[u8]) -> f32 {
        fp16_to_fp32(f16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])))
    }
}

impl FloatWeight for bf16 {
    const TYPE: GgmlType = GgmlType::BF16;
    fn to_f32(bytes: &[u8]) -> f32 {
        bf16_to_fp32(bf16::from_bits(u16::from_le_bytes([bytes[0], bytes[1]])))
    }
}

fn gemm_float<W: FloatWeight>(
    w: &[u8],
    n_rows: usize,
    act: &[u8],
    n_tok: usize,
    n_cols: usize,
    out: &mut [f32],
) {
    let size = W::TYPE.type_size();
    for r in 0..n_rows {
        let w_row = &w[r * n_cols * size..][..n_cols * size];
        for t in 0..n_tok {
            let a_row = &act[t * n_cols * 4..][..n_cols * 4];
            let mut sum = 0.0f64;
            for (wv, av) in w_row.chunks_exact(size).zip(a_row.chunks_exact(4)) {
                sum += f64::from(W::to_f32(wv) * f32::to_f32(av));
            }
            out[r * n_tok + t] = sum as f32;
        }
    }
}
