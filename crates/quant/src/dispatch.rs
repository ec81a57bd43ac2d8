//! Run-time entry points over raw bytes, chosen by [`GgmlType`].
//!
//! Used where the type is only known from a file (the model's matmuls, the quantize command, GPU
//! tests). Each supported type maps to one [`Kernels`] row built from its [`BlockFormat`] impl, so
//! adding a format is one line in [`kernels`]. Lengths are checked and reported as errors; byte
//! slices that are not aligned for their block type (a tensor at an odd offset in a buffer) are
//! copied to an aligned temporary instead of being rejected.

use std::borrow::Cow;
use std::mem::size_of;

use half::{bf16, f16};
use thiserror::Error;

use crate::kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
use crate::legacy::{BlockQ4_0, BlockQ4_1, BlockQ5_0, BlockQ5_1, BlockQ8_0, BlockQ8_1};
use crate::{BlockFormat, GgmlType};

/// What went wrong in a byte-level quantization call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantError {
    #[error("ggml type {0} is not supported by the quant crate")]
    Unsupported(GgmlType),
    #[error("{ty}: {what} has length {len}, not a multiple of {multiple}")]
    NotWholeBlocks {
        ty: GgmlType,
        what: &'static str,
        len: usize,
        multiple: usize,
    },
    #[error("{ty}: {what} has length {actual}, expected {expected}")]
    LengthMismatch {
        ty: GgmlType,
        what: &'static str,
        expected: usize,
        actual: usize,
    },
}

/// One format's entry points, monomorphised from its [`BlockFormat`] impl.
#[derive(Clone, Copy)]
struct Kernels {
    dot_type: GgmlType,
    quantize: fn(&[f32], &mut [u8]) -> Result<(), QuantError>,
    dequantize: fn(&[u8], &mut [f32]) -> Result<(), QuantError>,
    vec_dot: fn(&[u8], &[u8]) -> Result<f32, QuantError>,
}

impl Kernels {
    const fn of<B: BlockFormat>() -> Self {
        Kernels {
            dot_type: B::Dot::TYPE,
            quantize: quantize_as::<B>,
            dequantize: dequantize_as::<B>,
            vec_dot: vec_dot_as::<B>,
        }
    }
}

/// The table: every type this crate can quantize, dequantize and dot.
fn kernels(ty: GgmlType) -> Option<Kernels> {
    use GgmlType as T;
    Some(match ty {
        T::F32 => Kernels::of::<f32>(),
        T::F16 => Kernels::of::<f16>(),
        T::BF16 => Kernels::of::<bf16>(),
        T::Q4_0 => Kernels::of::<BlockQ4_0>(),
        T::Q4_1 => Kernels::of::<BlockQ4_1>(),
        T::Q5_0 => Kernels::of::<BlockQ5_0>(),
        T::Q5_1 => Kernels::of::<BlockQ5_1>(),
        T::Q8_0 => Kernels::of::<BlockQ8_0>(),
        T::Q8_1 => Kernels::of::<BlockQ8_1>(),
        T::Q2_K => Kernels::of::<BlockQ2K>(),
        T::Q3_K => Kernels::of::<BlockQ3K>(),
        T::Q4_K => Kernels::of::<BlockQ4K>(),
        T::Q5_K => Kernels::of::<BlockQ5K>(),
        T::Q6_K => Kernels::of::<BlockQ6K>(),
        T::Q8_K => Kernels::of::<BlockQ8K>(),
        _ => return None,
    })
}

fn kernels_or_err(ty: GgmlType) -> Result<Kernels, QuantError> {
    kernels(ty).ok_or(QuantError::Unsupported(ty))
}

/// Whether [`quantize_row`], [`dequantize_row`] and [`vec_dot`] accept `ty`.
pub fn is_supported(ty: GgmlType) -> bool {
    kernels(ty).is_some()
}

/// The activation type ggml pairs with weights of type `ty` in a dot product (`vec_dot_type`).
/// The activation formats Q8_1 and Q8_K, which have no dot of their own in ggml, pair with
/// themselves here.
pub fn vec_dot_type(ty: GgmlType) -> Option<GgmlType> {
    kernels(ty).map(|k| k.dot_type)
}

/// Quantizes `src` (a whole number of blocks) into `dst`, which must be exactly the row's size.
pub fn quantize_row(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    (kernels_or_err(ty)?.quantize)(src, dst)
}

/// Dequantizes whole blocks from `src` into `dst`, which must hold exactly their weights.
pub fn dequantize_row(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    (kernels_or_err(ty)?.dequantize)(src, dst)
}

/// Dot product of weights `w` of type `ty` with activations `act` of type `vec_dot_type(ty)`,
/// both covering the same number of weights.
pub fn vec_dot(ty: GgmlType, w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    (kernels_or_err(ty)?.vec_dot)(w, act)
}

fn whole_blocks<B: BlockFormat>(
    what: &'static str,
    len: usize,
    multiple: usize,
) -> Result<usize, QuantError> {
    let n = len / multiple;
    if n * multiple == len {
        Ok(n)
    } else {
        Err(QuantError::NotWholeBlocks {
            ty: B::TYPE,
            what,
            len,
            multiple,
        })
    }
}

fn expect_len<B: BlockFormat>(
    what: &'static str,
    expected: usize,
    actual: usize,
) -> Result<(), QuantError> {
    if expected == actual {
        Ok(())
    } else {
        Err(QuantError::LengthMismatch {
            ty: B::TYPE,
            what,
            expected,
            actual,
        })
    }
}

/// `bytes` as blocks: borrowed when aligned, else copied. The length is checked by the caller, so
/// a failed cast can only mean misalignment.
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

fn quantize_as<B: BlockFormat>(src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    let n_blocks = whole_blocks::<B>("source (f32 values)", src.len(), B::BLOCK)?;
    expect_len::<B>("destination (bytes)", n_blocks * size_of::<B>(), dst.len())?;
    match bytemuck::try_cast_slice_mut::<u8, B>(dst) {
        Ok(blocks) => B::quantize(src, blocks),
        Err(_) => {
            let mut blocks = vec![B::zeroed(); n_blocks];
            B::quantize(src, &mut blocks);
            dst.copy_from_slice(bytemuck::cast_slice(&blocks));
        }
    }
    Ok(())
}

fn dequantize_as<B: BlockFormat>(src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    let n_blocks = whole_blocks::<B>("source (bytes)", src.len(), size_of::<B>())?;
    expect_len::<B>("destination (f32 values)", n_blocks * B::BLOCK, dst.len())?;
    B::dequantize(&blocks_of::<B>(src), dst);
    Ok(())
}

fn vec_dot_as<B: BlockFormat>(w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    let n_blocks = whole_blocks::<B>("weights (bytes)", w.len(), size_of::<B>())?;
    let n_weights = n_blocks * B::BLOCK;
    let n_act_blocks = whole_blocks::<B>("weight count", n_weights, B::Dot::BLOCK)?;
    expect_len::<B>(
        "activations (bytes)",
        n_act_blocks * size_of::<B::Dot>(),
        act.len(),
    )?;
    Ok(B::vec_dot(&blocks_of::<B>(w), &blocks_of::<B::Dot>(act)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_sizes_agree_with_the_type_table() {
        fn check<B: BlockFormat>() {
            assert_eq!(size_of::<B>(), B::TYPE.type_size(), "{}", B::TYPE);
            assert_eq!(B::BLOCK, B::TYPE.block_size(), "{}", B::TYPE);
        }
        check::<f32>();
        check::<f16>();
        check::<bf16>();
        check::<BlockQ4_0>();
        check::<BlockQ4_1>();
        check::<BlockQ5_0>();
        check::<BlockQ5_1>();
        check::<BlockQ8_0>();
        check::<BlockQ8_1>();
        check::<BlockQ2K>();
        check::<BlockQ3K>();
        check::<BlockQ4K>();
        check::<BlockQ5K>();
        check::<BlockQ6K>();
        check::<BlockQ8K>();
        for &ty in GgmlType::ALL {
            if let Some(k) = kernels(ty) {
                assert!(
                    is_supported(k.dot_type),
                    "{ty} pairs with unsupported {}",
                    k.dot_type
                );
            }
        }
    }

    #[test]
    fn vec_dot_types_are_ggmls() {
        use GgmlType as T;
        for (ty, dot) in [
            (T::F32, T::F32),
            (T::F16, T::F16),
            (T::BF16, T::BF16),
            (T::Q4_0, T::Q8_0),
            (T::Q4_1, T::Q8_1),
            (T::Q5_0, T::Q8_0),
            (T::Q5_1, T::Q8_1),
            (T::Q8_0, T::Q8_0),
            (T::Q2_K, T::Q8_K),
            (T::Q3_K, T::Q8_K),
            (T::Q4_K, T::Q8_K),
            (T::Q5_K, T::Q8_K),
            (T::Q6_K, T::Q8_K),
        ] {
            assert_eq!(vec_dot_type(ty), Some(dot), "{ty}");
        }
        assert_eq!(vec_dot_type(T::IQ2_XXS), None);

        let supported: Vec<GgmlType> = GgmlType::ALL
            .iter()
            .copied()
            .filter(|&t| is_supported(t))
            .collect();
        assert_eq!(
            supported,
            [
                T::F32,
                T::F16,
                T::Q4_0,
                T::Q4_1,
                T::Q5_0,
                T::Q5_1,
                T::Q8_0,
                T::Q8_1,
                T::Q2_K,
                T::Q3_K,
                T::Q4_K,
                T::Q5_K,
                T::Q6_K,
                T::Q8_K,
                T::BF16
            ]
        );
    }

    #[test]
    fn bad_lengths_and_types_are_errors() {
        let src = [0.5f32; 64];
        let mut dst = vec![0u8; 2 * 18];
        assert_eq!(quantize_row(GgmlType::Q4_0, &src, &mut dst), Ok(()));
        assert!(matches!(
            quantize_row(GgmlType::Q4_0, &src[..40], &mut dst),
            Err(QuantError::NotWholeBlocks {
                len: 40,
                multiple: 32,
                ..
            })
        ));
        assert!(matches!(
            quantize_row(GgmlType::Q4_0, &src, &mut dst[..35]),
            Err(QuantError::LengthMismatch {
                expected: 36,
                actual: 35,
                ..
            })
        ));
        let mut out = [0f32; 64];
        assert!(dequantize_row(GgmlType::Q4_0, &dst[..17], &mut out).is_err());
        assert!(dequantize_row(GgmlType::Q4_0, &dst, &mut out[..63]).is_err());
        assert_eq!(
            dequantize_row(GgmlType::IQ4_NL, &dst, &mut out),
            Err(QuantError::Unsupported(GgmlType::IQ4_NL))
        );
        let act = vec![0u8; 2 * 34];
        assert!(vec_dot(GgmlType::Q4_0, &dst, &act).is_ok());
        assert!(vec_dot(GgmlType::Q4_0, &dst, &act[..34]).is_err());
        assert!(vec_dot(GgmlType::Q4_0, &dst[..18], &act).is_err());
        // Empty rows are fine.
        assert_eq!(vec_dot(GgmlType::Q8_0, &[], &[]), Ok(0.0));
    }

    #[test]
    fn misaligned_bytes_take_the_copying_path() {
        let src: Vec<f32> = (0..64).map(|i| (i as f32 - 20.0) * 0.37).collect();
        let mut aligned = [0u8; 2 * 36 + 1];
        let mut shifted = [0u8; 2 * 36 + 1];
        // Q8_1 blocks need 2-byte alignment: start one view on an even address, one on an odd.
        let a = aligned.as_ptr() as usize % 2;
        let s = 1 - shifted.as_ptr() as usize % 2;
        quantize_row(GgmlType::Q8_1, &src, &mut aligned[a..a + 72]).unwrap();
        quantize_row(GgmlType::Q8_1, &src, &mut shifted[s..s + 72]).unwrap();
        assert_eq!(aligned[a..a + 72], shifted[s..s + 72]);

        let (mut out_a, mut out_s) = ([0f32; 64], [0f32; 64]);
        dequantize_row(GgmlType::Q8_1, &aligned[a..a + 72], &mut out_a).unwrap();
        dequantize_row(GgmlType::Q8_1, &shifted[s..s + 72], &mut out_s).unwrap();
        assert_eq!(out_a, out_s);
        let dot_a = vec_dot(GgmlType::Q8_1, &aligned[a..a + 72], &aligned[a..a + 72]).unwrap();
        let dot_s = vec_dot(GgmlType::Q8_1, &shifted[s..s + 72], &shifted[s..s + 72]).unwrap();
        assert_eq!(dot_a.to_bits(), dot_s.to_bits());
    }
}
