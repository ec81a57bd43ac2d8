//! The portable GPU backend: WGSL compute shaders run through wgpu, on Metal (macOS) and Vulkan
//! (everywhere else).
//!
//! - Weights are uploaded once in their GGUF block formats (only padded to whole 32-bit words,
//!   [`shaders::repack`]) and decoded inside the matmul and embedding kernels.
//! - Activations, the attention partials and the KV cache (f32, `(n_head_kv, n_ctx, head_dim)`
//!   per layer) live in GPU buffers allocated once.
//! - Every op of a forward pass is recorded ([`context::Context`]) and submitted every 32 ops (a
//!   step's first batches after 4, 8 and 16), so the GPU runs while the host records and encodes
//!   the rest;
//!   each op's parameters sit in one uniform buffer at dynamic offsets, bind groups are cached
//!   across steps.
//! - Matmuls dot decoded weights with f32 activations (the CPU backend quantizes activations to
//!   8 bits first, so logits differ slightly; `dot4I8Packed` kernels are a later step). The prompt
//!   takes eight tokens per workgroup (`matmul.wgsl`); decode a mat-vec with a workgroup per row
//!   whose loads are coalesced four weights an invocation (`matvec.wgsl`), Q4_K and Q6_K sixteen
//!   weights an invocation with the block's scales loaded once (`formats/*_blk.wgsl`; Q6_K's makes
//!   its floats without integer-to-float conversions). Where every
//!   weight of a dispatch is Q4_K or Q6_K, several rows share a workgroup (64 invocations a row
//!   for gate/up, 32 for q/k/v, the attention output and the head, 64 for ffn_down, four rows a
//!   workgroup; the `mv` option, [`MvShapes`]).
//! - Fewer dispatches per layer (`backend/fused.rs`): q/k/v (of any formats, in decode) and gate/up
//!   share one, the RMSNorm before a decode mat-vec and the SwiGLU and residual adds after a matmul
//!   fold into it, RoPE of q and k and the cache store are one, and in decode that one folds into
//!   the attention (`attention.wgsl`'s FUSED: each workgroup rotates its query head and its KV
//!   head's new key itself and takes the new key and value from workgroup memory; the first head
//!   of each group stores them into the cache; split-K too; prompts keep the separate `rope_kv`
//!   dispatch). The q and k buffers are then left unrotated: nothing reads them after the
//!   attention.
//! - Workgroup sums use subgroup operations where the adapter has them, workgroup memory where not.
//! - A missing adapter, a lost device, a validation or out-of-memory error, or a GPU that does not
//!   answer within the time limit is an error naming the problem, never a hang.

mod backend;
mod context;
pub mod shaders;

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::config::Config;
use crate::debug::Debug;
use crate::arch::llama::LlamaModel;
use crate::runner::{Model, Runner};
use crate::ModelError;

pub use backend::{WgpuBackend, WgpuBuf, WgpuKv, WgpuWeight};
pub use context::{MvShapes, Options};

/// Whether a hardware GPU adapter of this platform's API (Metal or Vulkan) is present.
pub fn present() -> bool {
    context::present()
}

/// Loads a Llama-family model onto the first (or the `adapter` option's) GPU adapter.
pub fn load(
    file: Arc<GgufFile>,
    config: Config,
    n_ctx: usize,
    opts: &Options,
) -> Result<Box<dyn Model>, ModelError> {
    let mut backend = WgpuBackend::new(opts.clone())?;
    // Which GPU and driver ran: worth one line, since wgpu may pick any adapter present.
    eprintln!(
        "wgpu: {}, subgroups {}",
        backend.adapter(),
        if backend.subgroups() { "on" } else { "off" }
    );
    let model = LlamaModel::load(&mut backend, &file, config)?;
    let state = model.new_state(&mut backend)?;
    let kv = model.new_kv(&mut backend, n_ctx)?;
    Ok(Box::new(Runner {
        backend,
        model,
        state,
        kv,
        n_ctx,
        dbg: Debug::from_env(),
    }))
}
