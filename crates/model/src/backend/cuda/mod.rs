//! The CUDA backend: NVIDIA GPUs through cudarc, with the driver, NVRTC and cuBLAS loaded at run
//! time, so a binary built without a CUDA SDK runs wherever a driver is installed.
//!
//! - `kernels.cu`: every kernel, CUDA C compiled by NVRTC when the model loads; the PTX is cached
//!   under `~/.cache/rustorch/cuda/`, keyed by a hash of the source and the GPU architecture.
//! - [`gpu`]: the context, the stream, device buffers and kernel launches.
//! - [`ops`]: one launch function per kernel (or fused group), on device addresses.
//! - [`model`]: the forward pass on the GPU and the [`crate::Model`] impl. Decode (one token) is one
//!   CUDA graph replayed per step; prompts go through cuBLAS GEMMs on dequantized f16 weights.
//! - `testing` (feature `cuda-testing`): single kernels on host data, for the tests against the
//!   scalar references.
//!
//! The backend has its own forward pass instead of implementing [`crate::Backend`]: its decode step
//! fuses what the trait keeps apart (RMSNorm into the next mat-vec's activation quantization, gate +
//! up + SiLU in one mat-vec, RoPE + KV-cache write, the residual add into the projections) and reads
//! the position and token from device memory so the whole step can be captured once as a graph.

mod gpu;
mod model;
mod ops;
#[cfg(feature = "cuda-testing")]
pub mod testing;

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::config::Config;
use crate::runner::Model;
use crate::ModelError;

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

/// Loads the model in `file` onto the first GPU with a KV cache of `n_ctx` positions.
pub fn load(
    file: Arc<GgufFile>,
    config: Config,
    n_ctx: usize,
    opts: &crate::options::CudaOptions,
) -> Result<Box<dyn Model>, ModelError> {
    let gpu = Gpu::with_options(opts.clone())?;
    Ok(Box::new(model::CudaModel::load(gpu, &file, config, n_ctx)?))
}
