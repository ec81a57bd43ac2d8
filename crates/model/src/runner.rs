//! A loaded model on a chosen backend, behind one object-safe trait so callers (the engine, the
//! CLI, the server later) pick the backend at run time without being generic over it.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::backend::{Backend, Device};
use crate::config::{Arch, Config};
use crate::cpu::CpuBackend;
use crate::debug::Debug;
use crate::llama::{Head, LlamaModel, Logits, RunState, N_UBATCH};
use crate::options::BackendOptions;
use crate::ModelError;

/// A model ready to evaluate tokens: weights uploaded, run state and KV cache allocated.
pub trait Model: Send {
    fn config(&self) -> &Config;
    fn device(&self) -> Device;
    /// Positions the KV cache holds.
    fn n_ctx(&self) -> usize;
    /// Evaluates `tokens` at positions `pos0..pos0 + tokens.len()` (any length; split into batches
    /// internally). With `Logits::All`, `out` receives `tokens.len() * n_vocab` logits; with
    /// `Logits::Last`, the last token's `n_vocab`.
    fn eval(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError>;

    /// Evaluates one token at `pos` and returns the id of its largest logit (the first on ties):
    /// greedy decoding. Backends that find it on the device override this, so only the id crosses
    /// to the host.
    fn eval_argmax(&mut self, token: u32, pos: usize) -> Result<u32, ModelError> {
        let mut out = Vec::new();
        self.eval(&[token], pos, Logits::Last, &mut out)?;
        Ok(argmax(&out))
    }
}

/// Index of the largest value, the first on ties (0 for an empty slice).
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// A model on backend `B`, with its run state and KV cache; every backend's `load` builds one.
pub(crate) struct Runner<B: Backend> {
    pub(crate) backend: B,
    pub(crate) model: LlamaModel<B>,
    pub(crate) state: RunState<B>,
    pub(crate) kv: B::Kv,
    pub(crate) n_ctx: usize,
    pub(crate) dbg: Debug,
}

impl<B: Backend + Send> Model for Runner<B>
where
    B::Buf: Send,
    B::Weight: Send,
    B::Kv: Send,
{
    fn config(&self) -> &Config {
        &self.model.config
    }

    fn device(&self) -> Device {
        self.backend.device()
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn eval(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        crate::check_tokens(tokens, self.model.config.n_vocab)?;
        let end = pos0 + tokens.len();
        if end > self.n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: end,
                n_ctx: self.n_ctx,
            });
        }
        let n_vocab = self.model.config.n_vocab;
        let rows = match logits {
            Logits::All => tokens.len(),
            Logits::Last => 1,
        };
        out.resize(rows * n_vocab, 0.0);
        for (i, chunk) in tokens.chunks(N_UBATCH).enumerate() {
            let start = i * N_UBATCH;
            let last_chunk = start + chunk.len() == tokens.len();
            if logits == Logits::Last && !last_chunk {
                // Intermediate batches only fill the cache: no output head.
                self.model.forward(
                    &mut self.backend,
                    &mut self.state,
                    &mut self.kv,
                    chunk,
                    pos0 + start,
                    Head::None,
                    &mut self.dbg,
                )?;
                continue;
            }
            let head = match logits {
                Logits::All => Head::All,
                Logits::Last => Head::Last,
            };
            self.model.forward(
                &mut self.backend,
                &mut self.state,
                &mut self.kv,
                chunk,
                pos0 + start,
                head,
                &mut self.dbg,
            )?;
            match logits {
                Logits::All => {
                    let dst = &mut out[start * n_vocab..(start + chunk.len()) * n_vocab];
                    for (r, row) in dst.chunks_mut(n_vocab).enumerate() {
                        self.model
                            .read_logits(&mut self.backend, &self.state, r, row)?;
                    }
                }
                Logits::Last => self.model.read_logits(
                    &mut self.backend,
                    &self.state,
                    0,
                    &mut out[..n_vocab],
                )?,
            }
        }
        Ok(())
    }
}

/// Loads the model in `file` onto `device` with a KV cache of `n_ctx` positions (0: the trained
/// context length), with the backends' default options.
pub fn load(
    file: Arc<GgufFile>,
    device: Device,
    n_ctx: usize,
) -> Result<Box<dyn Model>, ModelError> {
    load_with(file, device, n_ctx, &BackendOptions::default())
}

/// [`load`] with the backends' options.
pub fn load_with(
    file: Arc<GgufFile>,
    device: Device,
    n_ctx: usize,
    opts: &BackendOptions,
) -> Result<Box<dyn Model>, ModelError> {
    device.check_available()?;
    let config = Config::from_gguf(&file)?;
    let n_ctx = if n_ctx == 0 {
        config.n_ctx_train
    } else {
        n_ctx
    };
    if n_ctx == 0 {
        return Err(ModelError::InvalidConfig(
            "the context length is 0 (give one with -c)".into(),
        ));
    }
    match (device, config.arch) {
        (Device::Cpu, Arch::Llama) => {
            crate::host_memory::check(
                crate::cpu::kv_bytes(config.n_layer, n_ctx, config.kv_dim()),
                || format!("the KV cache for a context of {n_ctx} tokens"),
            )?;
            let mut backend = CpuBackend::with_options(rayon::current_num_threads(), &opts.cpu);
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
        #[cfg(feature = "cuda")]
        (Device::Cuda, Arch::Llama) => crate::cuda::load(file, config, n_ctx, &opts.cuda),
        #[cfg(feature = "wgpu")]
        (Device::Metal | Device::Vulkan, Arch::Llama) => {
            crate::wgpu::load(file, config, n_ctx, &opts.wgpu)
        }
        (Device::Gpu, _) => load_with(file, pick_gpu()?, n_ctx, opts),
        // Reached only in builds without some backend.
        #[allow(unreachable_patterns)]
        (other, _) => Err(ModelError::Backend(format!(
            "the {} backend is not available in this build",
            other.name()
        ))),
    }
}

/// `--backend gpu`: CUDA where it is built and a driver is present, then Metal or Vulkan.
fn pick_gpu() -> Result<Device, ModelError> {
    #[cfg(feature = "cuda")]
    if crate::cuda::present() {
        return Ok(Device::Cuda);
    }
    #[cfg(feature = "wgpu")]
    if crate::wgpu::present() {
        return Ok(if cfg!(target_os = "macos") {
            Device::Metal
        } else {
            Device::Vulkan
        });
    }
    let built: Vec<&str> = Device::compiled().iter().map(|d| d.name()).collect();
    Err(ModelError::Backend(format!(
        "--backend gpu found no usable GPU (backends compiled in: {})",
        built.join(", ")
    )))
}
