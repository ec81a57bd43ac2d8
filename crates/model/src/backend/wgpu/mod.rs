//! The portable GPU backend: WGSL compute shaders run through wgpu, on Metal (macOS) and Vulkan
//! (everywhere else).
//!
//! - Weights are uploaded once in their GGUF block formats (only padded to whole 32-bit words,
//!   [`shaders::repack`]) and decoded inside the matmul and embedding kernels. A matrix larger
//!   than the adapter lets one storage buffer bind (lavapipe's 128 MiB; a large vocabulary's
//!   embedding and output head) is uploaded as parts of whole rows, a buffer each: its matmul
//!   runs once per part, each dispatch writing its rows' columns of the output (the kernels take
//!   an output offset and row stride), and the embedding once per part, each writing the rows
//!   whose token that part holds. A weight that fits stays one buffer and one dispatch.
//! - Activations, the attention partials and the KV cache live in GPU buffers allocated once. The
//!   cache (f32, [`WgpuKv`]) is paged: per layer one pool of blocks of 16 positions that every
//!   sequence takes blocks from, and a block table per sequence (a small storage buffer that
//!   [`Backend::map_blocks`](crate::backend::Backend::map_blocks) writes) through which the cache
//!   store, `rope_kv` and attention find a position's slot (`kv_slot.wgsl`); so sequences may
//!   share prefix blocks. A sliding-window layer keeps a ring per sequence instead.
//! - A step's rows (token, sequence and position of each) are written once per step into a small
//!   storage buffer ([`Backend::begin_step`](crate::backend::Backend::begin_step)), which the
//!   embedding, RoPE, cache store and attention kernels read: each row rotates at its own
//!   position and reads and writes its own sequence's cache, and a decode step records the same
//!   dispatches with the same parameters every time.
//! - Matmuls dot decoded weights with f32 activations (the CPU backend quantizes activations to
//!   8 bits first, so logits differ slightly; `dot4I8Packed` kernels are a later step). The prompt
//!   takes eight tokens per workgroup (`matmul.wgsl`); decode a mat-vec with a workgroup per row
//!   whose loads are coalesced four weights an invocation (`matvec.wgsl`), Q4_K and Q6_K sixteen
//!   weights an invocation with the block's scales loaded once (`formats/*_blk.wgsl`; Q6_K's makes
//!   its floats without integer-to-float conversions). Where every
//!   weight of a dispatch is Q4_K or Q6_K, several rows share a workgroup (64 invocations a row
//!   for gate/up, 32 for q/k/v, the attention output and the head, 64 for ffn_down, four rows a
//!   workgroup; the `mv` option, [`MvShapes`]).
//! - Fewer dispatches per layer (`backend/fused.rs`): the compound operations of the
//!   [`Backend`](crate::backend::Backend) trait are overridden with fused dispatches. q/k/v (of
//!   any formats, in decode) and gate/up share one; in decode the RMSNorm before a mat-vec folds
//!   into it (`norm_matmuls`, `qkv_rope_store`, `ffn_swiglu`, the output head); the SwiGLU
//!   (`ffn_swiglu`) and the residual adds (`matmul_add`) fold into the matmul before them; the
//!   RoPE of q and k and the cache store are one dispatch (`qkv_rope_store`). One fold spans two
//!   operations and so still takes back the dispatch recorded just before it: in decode (each
//!   row of a different sequence) the attention takes in `qkv_rope_store`'s RoPE and cache store
//!   (`attention.wgsl`'s FUSED: each workgroup rotates its query head and its KV head's new key
//!   itself and takes the new key and value from workgroup memory; the first head of each group
//!   stores them into the cache; split-K too; prompts keep the separate `rope_kv` dispatch; the
//!   kernel then binds ten storage buffers, which the adapter must allow). The
//!   q and k buffers are then left unrotated: nothing reads them after the attention, and a read
//!   before it (`RUSTORCH_DEBUG`) submits the RoPE dispatch first, so that no fold happens.
//! - Every architecture's operations have a kernel: RoPE of adjacent or NEOX pairs, with
//!   frequency factors and LongRoPE's scaled sine and cosine (`rope.wgsl`, which `rope_kv.wgsl` and
//!   the fused attention share); attention through a sliding window, with any score scale, over
//!   heads up to 256 wide; GeGLU with ggml's f16 roundings; bias rows; scaling.
//! - Workgroup sums use subgroup operations where the adapter has them, workgroup memory where not.
//! - A missing adapter, a lost device, a validation or out-of-memory error, or a GPU that does not
//!   answer within the time limit is an error naming the problem, never a hang.

mod backend;
mod context;
pub mod shaders;

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::config::Config;
use crate::runner::Model;
use crate::ModelError;

pub use backend::{WgpuBackend, WgpuBuf, WgpuKv, WgpuWeight};
pub use context::{CoopMode, MvShapes, Options};

/// Whether a hardware GPU adapter of this platform's API (Metal or Vulkan) is present.
pub fn present() -> bool {
    context::present()
}

/// Loads a model (any of [`crate::arch`]'s architectures) onto the first (or the `adapter`
/// option's) GPU adapter, with a KV cache of `size`.
pub fn load(
    file: Arc<GgufFile>,
    config: Config,
    size: crate::runner::KvSize,
    opts: &Options,
) -> Result<Box<dyn Model>, ModelError> {
    let backend = WgpuBackend::new(opts.clone())?;
    // Which GPU and driver ran: worth one line, since wgpu may pick any adapter present.
    eprintln!(
        "wgpu: {}, subgroups {}, KV cache {}{}",
        backend.adapter(),
        if backend.subgroups() { "on" } else { "off" },
        if backend.kv_f16() { "f16" } else { "f32" },
        match backend.coop() {
            Some(c) if c.emulated => format!(", prompt tiles by emulated {0}x{0} matrices", c.size),
            Some(c) => format!(", prompt tiles by {0}x{0} cooperative matrices", c.size),
            None => String::new(),
        }
    );
    crate::runner::boxed(backend, &file, config, size)
}
