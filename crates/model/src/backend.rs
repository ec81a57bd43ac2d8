//! The backend boundary: the dozen operations a decoder needs, over buffers the backend owns.
//!
//! The model code ([`crate::llama`]) is straight-line calls of these operations, so a new backend
//! (CUDA, wgpu) is "implement this trait": weights are uploaded once in their GGUF formats, the
//! activations and the KV cache live in backend memory, and only token ids and the logits that are
//! asked for cross to the host.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::ModelError;

/// Where a model runs. Every variant exists in every build; asking for one that was not compiled in
/// (or has no device) is an error that says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
    Metal,
    Vulkan,
    /// Any GPU: CUDA, then Metal or Vulkan, whichever is built and present ([`Device::resolve`]).
    Gpu,
}

impl Device {
    pub const NAMES: &'static [&'static str] = &["cpu", "cuda", "metal", "vulkan", "gpu"];

    pub fn parse(s: &str) -> Option<Device> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Some(Device::Cpu),
            "cuda" => Some(Device::Cuda),
            "metal" => Some(Device::Metal),
            "vulkan" => Some(Device::Vulkan),
            "gpu" => Some(Device::Gpu),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
            Device::Metal => "metal",
            Device::Vulkan => "vulkan",
            Device::Gpu => "gpu",
        }
    }

    /// The backends this build was compiled with.
    pub fn compiled() -> Vec<Device> {
        let mut v = vec![Device::Cpu];
        if cfg!(feature = "cuda") {
            v.push(Device::Cuda);
        }
        if cfg!(feature = "wgpu") {
            v.push(if cfg!(target_os = "macos") {
                Device::Metal
            } else {
                Device::Vulkan
            });
        }
        v
    }

    /// Whether this build can run on the device at all (whether a device is present is found out
    /// when the backend starts).
    pub fn check_available(self) -> Result<(), ModelError> {
        if self == Device::Gpu || Device::compiled().contains(&self) {
            return Ok(());
        }
        let names: Vec<&str> = Device::compiled().iter().map(|d| d.name()).collect();
        let why = match self {
            Device::Cuda => "build with --features cuda",
            Device::Metal if !cfg!(target_os = "macos") => "Metal needs macOS",
            Device::Vulkan if cfg!(target_os = "macos") => "on macOS use --backend metal",
            _ => "build with --features wgpu",
        };
        Err(ModelError::Backend(format!(
            "the {} backend is not available in this build ({why}; backends compiled in: {})",
            self.name(),
            names.join(", ")
        )))
    }
}

/// Shape facts of the attention op, fixed per model.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// Rotated dimensions of each head (RoPE), from the start of the head.
    pub n_rot: usize,
    pub rope_freq_base: f32,
}

/// The operations of a decoder forward pass. Shapes are row-major `[n_tokens, width]`.
pub trait Backend {
    /// An activation buffer of f32 values in backend memory.
    type Buf;
    /// A weight tensor uploaded to the backend, kept in its GGUF format.
    type Weight;
    /// The KV cache of all layers, in backend memory.
    type Kv;

    fn device(&self) -> Device;

    /// Uploads tensor `name` of `file` (or, on the CPU, maps it in place).
    fn upload(&mut self, file: &Arc<GgufFile>, name: &str) -> Result<Self::Weight, ModelError>;
    /// An activation buffer of `len` f32 values.
    fn alloc(&mut self, len: usize) -> Result<Self::Buf, ModelError>;
    /// A KV cache for `n_layer` layers of `n_ctx` positions of `n_head_kv` heads of `head_dim`.
    fn alloc_kv(
        &mut self,
        n_layer: usize,
        n_ctx: usize,
        n_head_kv: usize,
        head_dim: usize,
    ) -> Result<Self::Kv, ModelError>;

    /// `out[t] = table[tokens[t]]`, rows read from the (quantized) embedding table.
    fn embed(
        &mut self,
        table: &Self::Weight,
        tokens: &[u32],
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// `out[t] = x[t] / rms(x[t]) * weight`, rows of width `dim`.
    fn rms_norm(
        &mut self,
        x: &Self::Buf,
        weight: &Self::Weight,
        eps: f32,
        n: usize,
        dim: usize,
        out: &mut Self::Buf,
    );
    /// `out[t] = W · x[t]` for `n` rows; `W` is `[out_dim, in_dim]` (ggml: ne0 = in_dim).
    fn matmul(
        &mut self,
        w: &Self::Weight,
        x: &Self::Buf,
        n: usize,
        out: &mut Self::Buf,
    ) -> Result<(), ModelError>;
    /// Several matmuls of the same input (q/k/v, gate/up): `outs[i] = ws[i] · x`. Backends may
    /// fuse them into one pass; the default runs them one by one.
    fn matmuls(
        &mut self,
        ws: &[&Self::Weight],
        x: &Self::Buf,
        n: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<(), ModelError> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(w, x, n, out)?;
        }
        Ok(())
    }
    /// Rotates `n_heads` heads of each of `n` rows in place; row `t` is at position `pos0 + t`.
    fn rope(&mut self, x: &mut Self::Buf, n: usize, n_heads: usize, shape: &AttnShape, pos0: usize);
    /// Writes keys and values of `n` tokens at positions `pos0..pos0+n` of layer `layer`.
    fn kv_store(
        &mut self,
        kv: &mut Self::Kv,
        layer: usize,
        k: &Self::Buf,
        v: &Self::Buf,
        n: usize,
        pos0: usize,
    );
    /// Causal grouped-query attention of `n` queries at `pos0..pos0+n` over the cache.
    #[allow(clippy::too_many_arguments)] // one op's operands, as the other ops take them
    fn attention(
        &mut self,
        q: &Self::Buf,
        kv: &Self::Kv,
        layer: usize,
        n: usize,
        pos0: usize,
        shape: &AttnShape,
        out: &mut Self::Buf,
    );
    /// `gate = silu(gate) * up`, elementwise over `len` values.
    fn swiglu(&mut self, gate: &mut Self::Buf, up: &Self::Buf, len: usize);
    /// `x += y` over `len` values.
    fn add(&mut self, x: &mut Self::Buf, y: &Self::Buf, len: usize);
    /// Copies `len` values of `x` from offset `src` to offset `dst` (ranges may not overlap).
    fn copy_within(&mut self, x: &mut Self::Buf, src: usize, dst: usize, len: usize);
    /// Copies `out.len()` values starting at `offset` to the host.
    fn read(&mut self, x: &Self::Buf, offset: usize, out: &mut [f32]) -> Result<(), ModelError>;
}
