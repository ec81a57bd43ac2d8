//! aarch64 kernels: NEON, with `sdot` where the CPU has the dot-product extension.

use super::MatKernel;

pub(super) fn is_available() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

pub(super) fn table() -> &'static [MatKernel] {
    &[]
}
