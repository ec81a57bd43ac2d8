//! x86-64 kernels: AVX2 + FMA + F16C, and the same code with AVX-512 VNNI dot products.

use super::{Isa, MatKernel};

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

pub(super) fn table(_isa: Isa) -> &'static [MatKernel] {
    &[]
}
