//! ggml tensor type ids as stored in GGUF tensor infos, with their block geometry.
//!
//! The ids, block sizes and byte sizes are those of ggml (`ggml.h`, `ggml-common.h`). Every type a
//! GGUF file may legally carry is listed so that `inspect` can describe any file; which of them the
//! engine can compute with is the business of the `quant` crate.

/// Number of weights in one K-quant super-block.
pub const QK_K: usize = 256;

macro_rules! ggml_types {
    ($( $variant:ident = $id:literal, $name:literal, $block:expr, $bytes:expr; )*) => {
        /// A ggml tensor type (`enum ggml_type`).
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum GgmlType {
            $( $variant = $id, )*
        }

        impl GgmlType {
            /// Every type, in id order.
            pub const ALL: &'static [GgmlType] = &[$( GgmlType::$variant, )*];

            /// The type with ggml id `id`, or `None` for ids ggml does not define (or removed).
            pub fn from_id(id: u32) -> Option<GgmlType> {
                match id {
                    $( $id => Some(GgmlType::$variant), )*
                    _ => None,
                }
            }

            /// ggml's id of this type.
            pub fn id(self) -> u32 {
                self as u32
            }

            /// ggml's name of this type, as printed by llama.cpp (`q4_K`, `f16`, ...).
            pub fn name(self) -> &'static str {
                match self {
                    $( GgmlType::$variant => $name, )*
                }
            }

            /// Number of elements in one block.
            pub fn block_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $block, )*
                }
            }

            /// Number of bytes in one block.
            pub fn type_size(self) -> usize {
                match self {
                    $( GgmlType::$variant => $bytes, )*
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, "f32", 1, 4;
    F16 = 1, "f16", 1, 2;
    Q4_0 = 2, "q4_0", 32, 2 + 16;
    Q4_1 = 3, "q4_1", 32, 2 * 2 + 16;
    Q5_0 = 6, "q5_0", 32, 2 + 4 + 16;
    Q5_1 = 7, "q5_1", 32, 2 * 2 + 4 + 16;
    Q8_0 = 8, "q8_0", 32, 2 + 32;
    Q8_1 = 9, "q8_1", 32, 2 * 2 + 32;
    Q2_K = 10, "q2_K", QK_K, 2 * 2 + QK_K / 16 + QK_K / 4;
    Q3_K = 11, "q3_K", QK_K, 2 + QK_K / 4 + QK_K / 8 + 12;
    Q4_K = 12, "q4_K", QK_K, 2 * 2 + 12 + QK_K / 2;
    Q5_K = 13, "q5_K", QK_K, 2 * 2 + 12 + QK_K / 2 + QK_K / 8;
    Q6_K = 14, "q6_K", QK_K, 2 + QK_K / 16 + 3 * QK_K / 4;
    Q8_K = 15, "q8_K", QK_K, 4 + QK_K + QK_K / 16 * 2;
    IQ2_XXS = 16, "iq2_xxs", QK_K, 2 + QK_K / 8 * 2;
    IQ2_XS = 17, "iq2_xs", QK_K, 2 + QK_K / 8 * 2 + QK_K / 32;
    IQ3_XXS = 18, "iq3_xxs", QK_K, 2 + 3 * (QK_K / 8);
    IQ1_S = 19, "iq1_s", QK_K, 2 + QK_K / 8 + QK_K / 16;
    IQ4_NL = 20, "iq4_nl", 32, 2 + 16;
    IQ3_S = 21, "iq3_s", QK_K, 2 + 13 * (QK_K / 32) + QK_K / 64;
    IQ2_S = 22, "iq2_s", QK_K, 2 + QK_K / 4 + QK_K / 16;
    IQ4_XS = 23, "iq4_xs", QK_K, 2 + 2 + QK_K / 64 + QK_K / 2;
    I8 = 24, "i8", 1, 1;
    I16 = 25, "i16", 1, 2;
    I32 = 26, "i32", 1, 4;
    I64 = 27, "i64", 1, 8;
    F64 = 28, "f64", 1, 8;
    IQ1_M = 29, "iq1_m", QK_K, QK_K / 8 + QK_K / 16 + QK_K / 32;
    BF16 = 30, "bf16", 1, 2;
    TQ1_0 = 34, "tq1_0", QK_K, 2 + QK_K / 64 + (QK_K - 4 * QK_K / 64) / 5;
    TQ2_0 = 35, "tq2_0", QK_K, 2 + QK_K / 4;
    MXFP4 = 39, "mxfp4", 32, 1 + 16;
    NVFP4 = 40, "nvfp4", 64, 4 + 32;
    Q1_0 = 41, "q1_0", 128, 2 + 16;
    Q2_0 = 42, "q2_0", 64, 2 + 16;
}

impl GgmlType {
    /// Bytes needed for a row of `n` elements, or `None` if `n` is not a whole number of blocks
    /// or the size overflows.
    pub fn row_bytes(self, n: u64) -> Option<u64> {
        let bs = self.block_size() as u64;
        if !n.is_multiple_of(bs) {
            return None;
        }
        (n / bs).checked_mul(self.type_size() as u64)
    }

    /// Whether this is a block-quantized type (as opposed to a plain float/int element type).
    pub fn is_quantized(self) -> bool {
        !matches!(
            self,
            GgmlType::F32
                | GgmlType::F16
                | GgmlType::BF16
                | GgmlType::F64
                | GgmlType::I8
                | GgmlType::I16
                | GgmlType::I32
                | GgmlType::I64
        )
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_ggml() {
        assert_eq!(GgmlType::Q4_0.type_size(), 18);
        assert_eq!(GgmlType::Q4_1.type_size(), 20);
        assert_eq!(GgmlType::Q5_0.type_size(), 22);
        assert_eq!(GgmlType::Q5_1.type_size(), 24);
        assert_eq!(GgmlType::Q8_0.type_size(), 34);
        assert_eq!(GgmlType::Q8_1.type_size(), 36);
        assert_eq!(GgmlType::Q2_K.type_size(), 84);
        assert_eq!(GgmlType::Q3_K.type_size(), 110);
        assert_eq!(GgmlType::Q4_K.type_size(), 144);
        assert_eq!(GgmlType::Q5_K.type_size(), 176);
        assert_eq!(GgmlType::Q6_K.type_size(), 210);
        assert_eq!(GgmlType::Q8_K.type_size(), 292);
        for &t in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
        }
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_id(31), None);
    }
}
