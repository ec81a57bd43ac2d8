//! The CUDA backend: NVIDIA GPUs through cudarc, with the driver, NVRTC and cuBLAS loaded at run
//! time, so a binary built without a CUDA SDK runs wherever a driver is installed.
//!
//! - `kernels.cu`: every kernel, CUDA C compiled by NVRTC when the model loads; the PTX is cached
//!   under `~/.cache/rustorch/cuda/`, keyed by a hash of the source and the GPU architecture.
//! - [`gpu`]: the context, the stream, device buffers and kernel launches.
//! - [`ops`]: one launch function per kernel (or fused group), on device addresses.
//! - [`backend`]: [`CudaBackend`], the [`crate::Backend`] operations; the compound operations are
//!   overridden with the fused kernels (RMSNorm into the next mat-vec's q8_1 input, q/k/v + RoPE +
//!   cache store in one mat-vec, gate + up + SiLU in one mat-vec, the residual add in the
//!   projections' epilogue). A one-row step is one CUDA graph replayed per step; several rows go
//!   through cuBLAS GEMMs on dequantized f16 weights.
//! - `testing` (feature `cuda-testing`): single kernels on host data, for the tests against the
//!   scalar references.

mod backend;
mod gpu;
mod ops;
#[cfg(feature = "cuda-testing")]
pub mod testing;

use crate::ModelError;

pub use backend::{CudaBackend, CudaBuf, CudaKv, CudaWeight};
pub use gpu::Gpu;

/// Whether a CUDA driver with at least one GPU is present (for `--backend gpu`).
pub fn present() -> bool {
    if driver_missing().is_some() {
        return false;
    }
    // The driver library was found above, so cudarc's lazy loader does not panic.
    let init = cudarc::driver::result::init().is_ok();
    init && cudarc::driver::CudaContext::device_count().is_ok_and(|n| n > 0)
}

/// Why the CUDA backend cannot start, if a library it needs is missing. Probed before any cudarc
/// call, since cudarc panics when its library is absent.
fn driver_missing() -> Option<ModelError> {
    // SAFETY: only tries to open the library with dlopen.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Some(ModelError::Backend(
            "the cuda backend needs the NVIDIA driver (libcuda.so), which was not found".into(),
        ));
    }
    // SAFETY: as above.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Some(ModelError::Backend(
            "the cuda backend needs NVRTC (libnvrtc.so from the CUDA toolkit), which was not found \
             (add its directory to LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    None
}
