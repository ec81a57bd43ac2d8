//! ggml's block quantization formats.
//!
//! Each format is a `#[repr(C)]` block struct (size asserted at compile time) implementing
//! [`BlockFormat`]: a plain scalar quantize / dequantize that reproduces ggml's reference quantizers
//! (`quantize_row_*_ref`) bit for bit, and a scalar dot product against the paired 8-bit activation
//! format. The scalar code here is the reference every SIMD and GPU kernel is tested against.
//!
//! Module layout:
//! - `float`: F32, F16, BF16
//! - `legacy`: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1
//! - `kquants`: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K
//! - `dispatch`: byte-slice entry points chosen by [`GgmlType`] at run time
//! - `kernels`: fast CPU matrix kernels (SIMD chosen at run time), tested against the above

pub mod act;
pub mod attn;
pub mod dispatch;
pub mod float;
pub mod kernels;
pub mod kquants;
pub mod legacy;
pub mod vecmath;

pub use dispatch::QuantError;
pub use kquants::{BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K};
pub use rustorch_gguf::{GgmlType, QK_K};

/// A block quantization format: a fixed number of weights packed into a fixed number of bytes.
pub trait BlockFormat: bytemuck::Pod + Send + Sync {
    /// The ggml type id of this format.
    const TYPE: GgmlType;
    /// Weights per block.
    const BLOCK: usize;
    /// The activation format ggml pairs this format's dot product with (`vec_dot_type`).
    type Dot: BlockFormat;

    /// Reference quantizer (`quantize_row_*_ref`): `x.len() == blocks.len() * BLOCK`.
    fn quantize(x: &[f32], blocks: &mut [Self]);
    /// Dequantize (`dequantize_row_*`): `out.len() == blocks.len() * BLOCK`.
    fn dequantize(blocks: &[Self], out: &mut [f32]);
    /// Scalar reference dot product over a row: `w.len() == a.len()` blocks of this format and of
    /// its paired activation format, both covering the same number of weights.
    fn vec_dot(w: &[Self], a: &[Self::Dot]) -> f32;
}
