//! A loaded model on a chosen backend, behind one object-safe trait so callers (the engine, the
//! CLI, the server later) pick the backend at run time without being generic over it.

use std::sync::Arc;

use rustorch_gguf::GgufFile;

use crate::arch::gemma3::Gemma3Model;
use crate::arch::llama::LlamaModel;
use crate::arch::phi3::Phi3Model;
use crate::arch::qwen2::Qwen2Model;
use crate::arch::qwen3::Qwen3Model;
use crate::arch::{self, Architecture, RunState};
use crate::backend::cpu::CpuBackend;
use crate::backend::{Backend, Batch, Device, KvSpec, Step, KV_BLOCK};
use crate::config::{Arch, Config};
use crate::debug::Debug;
use crate::options::BackendOptions;
use crate::ModelError;

/// Which rows of a single-sequence evaluation need logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's (perplexity, teacher forcing).
    All,
}

/// A model ready to evaluate tokens: weights uploaded, run state and KV cache allocated.
pub trait Model: Send {
    fn config(&self) -> &Config;
    fn device(&self) -> Device;
    /// Positions one sequence may reach.
    fn n_ctx(&self) -> usize;
    /// Sequences the KV cache holds.
    fn n_seq(&self) -> usize;
    /// The KV cache's shape: its pool of blocks and its sequences.
    fn kv_spec(&self) -> &KvSpec;
    /// Points entries `first..first + blocks.len()` of sequence `seq`'s block table at pool
    /// blocks `blocks` ([`Backend::map_blocks`]). A cache loaded side by side
    /// ([`KvSpec::side_by_side`]) starts with each sequence on its own blocks.
    fn map_blocks(&mut self, seq: usize, first: usize, blocks: &[u32]) -> Result<(), ModelError>;

    /// Evaluates the rows of `batch` (any number; split into steps internally) and puts the
    /// logits of the rows listed in `logits` (ascending) into `out`, `n_vocab` values each, in
    /// that order.
    fn eval_batch(
        &mut self,
        batch: &Batch,
        logits: &[u32],
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError>;

    /// Evaluates `tokens` of sequence 0 at positions `pos0..pos0 + tokens.len()`. With
    /// `Logits::All`, `out` receives `tokens.len() * n_vocab` logits; with `Logits::Last`, the
    /// last token's `n_vocab`.
    fn eval(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let n = tokens.len();
        let pos: Vec<u32> = (pos0..pos0 + n).map(|p| p as u32).collect();
        let seqs = vec![0u32; n];
        let rows: Vec<u32> = match logits {
            Logits::All => (0..n as u32).collect(),
            Logits::Last => vec![n.saturating_sub(1) as u32],
        };
        let batch = Batch {
            tokens,
            seqs: &seqs,
            pos: &pos,
        };
        self.eval_batch(&batch, &rows, out)
    }

    /// Evaluates one token of sequence 0 at `pos` and returns the id of its largest logit (the
    /// first on ties): greedy decoding, with only the id crossing to the host.
    fn eval_argmax(&mut self, token: u32, pos: usize) -> Result<u32, ModelError>;
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

/// A model of architecture `A` on backend `B`, with its run state and KV cache; every backend
/// runs through it.
pub(crate) struct Runner<B: Backend, A: Architecture<B>> {
    pub(crate) backend: B,
    pub(crate) model: A,
    pub(crate) state: RunState<B>,
    pub(crate) kv: B::Kv,
    spec: KvSpec,
    /// The block tables as mapped (the backend's copy is what it reads): to refuse a step whose
    /// rows have positions without a block.
    tables: Vec<Vec<u32>>,
    pub(crate) n_ctx: usize,
    pub(crate) n_seq: usize,
    pub(crate) dbg: Debug,
    /// What the sliding-window layers' ring caches hold (none when every layer holds the whole
    /// context).
    ring: Option<Ring>,
    /// Reused row lists (sequences, positions, logit rows, a step's head rows): evaluating
    /// allocates nothing per token once warm.
    scratch: [Vec<u32>; 4],
}

impl<B: Backend, A: Architecture<B>> Runner<B, A> {
    /// Loads the model onto `backend` with a KV cache of `size`.
    pub(crate) fn new(
        mut backend: B,
        file: &Arc<GgufFile>,
        config: Config,
        size: KvSize,
    ) -> Result<Runner<B, A>, ModelError> {
        let model = A::load(&mut backend, file, config)?;
        let state = RunState::new(&mut backend, model.config())?;
        let spec = size.spec(model.config(), backend.max_rows());
        let kv = backend.alloc_kv(&spec)?;
        let ring = Ring::new(model.config(), &spec);
        let tables = (0..spec.n_seq)
            .map(|s| {
                (0..spec.table_len())
                    .map(|i| match spec.side_by_side() {
                        true => spec.own_block(s, i),
                        false => u32::MAX,
                    })
                    .collect()
            })
            .collect();
        Ok(Runner {
            backend,
            model,
            state,
            kv,
            n_ctx: spec.seq_ctx,
            n_seq: spec.n_seq,
            spec,
            tables,
            dbg: Debug::from_env(),
            ring,
            scratch: Default::default(),
        })
    }

    /// Checks a batch: not empty, tokens in the vocabulary, sequences and positions in the cache.
    fn check(&self, batch: &Batch, logits: &[u32]) -> Result<(), ModelError> {
        crate::check_tokens(batch.tokens, self.model.config().n_vocab)?;
        let n = batch.len();
        if batch.seqs.len() != n || batch.pos.len() != n {
            return Err(ModelError::BadBatch(format!(
                "{n} tokens but {} sequence ids and {} positions",
                batch.seqs.len(),
                batch.pos.len()
            )));
        }
        if let Some(&seq) = batch.seqs.iter().find(|&&s| s as usize >= self.n_seq) {
            return Err(ModelError::BadBatch(format!(
                "sequence {seq} is outside the cache of {} sequences",
                self.n_seq
            )));
        }
        if let Some(&p) = batch.pos.iter().max() {
            if p as usize >= self.n_ctx {
                return Err(ModelError::ContextFull {
                    n_tokens: p as usize + 1,
                    n_ctx: self.n_ctx,
                });
            }
        }
        if self.spec.ring.contains(&0) {
            // Every position a row sees has a block: its own, and where a run of one sequence
            // starts, all before it.
            for t in 0..n {
                let (seq, pos) = (batch.seqs[t] as usize, batch.pos[t] as usize);
                let starts = t == 0 || batch.seqs[t - 1] != batch.seqs[t];
                let first = if starts { 0 } else { pos / KV_BLOCK };
                if let Some(i) = (first..=pos / KV_BLOCK).find(|&i| self.tables[seq][i] == u32::MAX)
                {
                    return Err(ModelError::BadBatch(format!(
                        "sequence {seq} at position {pos}: no KV block is mapped for its positions {}..{}",
                        i * KV_BLOCK,
                        (i + 1) * KV_BLOCK
                    )));
                }
            }
        }
        if logits.windows(2).any(|w| w[0] >= w[1])
            || logits.last().is_some_and(|&r| r as usize >= n)
        {
            return Err(ModelError::BadBatch(format!(
                "logit rows must be ascending rows of the batch of {n}"
            )));
        }
        Ok(())
    }

    /// One step of at most `max_rows` rows.
    fn step(&mut self, batch: &Batch, head: &[u32]) -> Result<(), ModelError> {
        if let Some(ring) = &self.ring {
            ring.check(batch)?;
        }
        let b = &mut self.backend;
        let r = match b.begin_step(batch, head) {
            Ok(Step::Done) => Ok(()),
            Ok(Step::Record) => {
                let r = self.model.forward(
                    b,
                    &mut self.state,
                    &mut self.kv,
                    batch.len(),
                    head,
                    &mut self.dbg,
                );
                let end = b.end_step(r.is_ok());
                r.and(end)
            }
            Err(e) => Err(e),
        };
        if let Some(ring) = &mut self.ring {
            ring.update(batch, r.is_ok());
        }
        r
    }
}

/// The positions the ring caches of the sliding-window layers hold, per sequence: a step whose
/// queries would see a position its ring no longer holds (a sequence resumed at a position far
/// behind where it had got to, or one never evaluated) is refused, not run on other positions'
/// keys.
struct Ring {
    window: usize,
    cap: usize,
    /// (sequence, slot) -> the position slot holds (`u32::MAX`: none).
    held: Vec<u32>,
}

impl Ring {
    /// The rings of `c`'s sliding-window layers in a cache of shape `spec`, if it has any.
    fn new(c: &Config, spec: &KvSpec) -> Option<Ring> {
        let cap = spec.ring.iter().copied().max().filter(|&cap| cap > 0)?;
        let window = (0..c.n_layer).map(|il| c.layer_window(il)).max()?;
        Some(Ring {
            window,
            cap,
            held: vec![u32::MAX; spec.n_seq * cap],
        })
    }

    /// Checks that every position a row of `batch` sees is either a row of the batch or held by
    /// its sequence's ring, and that the batch's rows do not overwrite one another's.
    fn check(&self, batch: &Batch) -> Result<(), ModelError> {
        let n = batch.len();
        for t0 in 0..n {
            let seq = batch.seqs[t0];
            if batch.seqs[..t0].contains(&seq) {
                continue; // not the sequence's first row
            }
            let rows = (t0..n)
                .filter(|&t| batch.seqs[t] == seq)
                .map(|t| batch.pos[t] as usize);
            let (first, last) = (
                batch.pos[t0] as usize,
                rows.clone().next_back().unwrap_or(0),
            );
            let lo = (first + 1).saturating_sub(self.window);
            if last - lo >= self.cap {
                return Err(ModelError::BadBatch(format!(
                    "sequence {seq}'s rows span positions {lo}..={last} of sliding-window attention, more than its cache of {} holds",
                    self.cap
                )));
            }
            let seq = seq as usize;
            let held = &self.held[seq * self.cap..(seq + 1) * self.cap];
            let mut rows = rows.peekable();
            for p in lo..last {
                if rows.peek() == Some(&p) {
                    rows.next();
                } else if held[p % self.cap] != p as u32 {
                    return Err(ModelError::BadBatch(format!(
                        "sequence {seq} at position {first}: its sliding-window layers no longer hold position {p} (they keep the last {} positions evaluated); evaluate it again from position 0",
                        self.cap
                    )));
                }
            }
        }
        Ok(())
    }

    /// Records what a step wrote: its rows' positions, or after a failed step, nothing certain
    /// about its sequences.
    fn update(&mut self, batch: &Batch, ok: bool) {
        for t in 0..batch.len() {
            let (seq, pos) = (batch.seqs[t] as usize, batch.pos[t]);
            let held = &mut self.held[seq * self.cap..(seq + 1) * self.cap];
            if ok {
                held[pos as usize % self.cap] = pos;
            } else {
                held.fill(u32::MAX);
            }
        }
    }
}

impl<B: Backend + Send, A: Architecture<B> + Send> Model for Runner<B, A>
where
    B::Buf: Send,
    B::Weight: Send,
    B::Kv: Send,
{
    fn config(&self) -> &Config {
        self.model.config()
    }

    fn device(&self) -> Device {
        self.backend.device()
    }

    fn n_ctx(&self) -> usize {
        self.n_ctx
    }

    fn n_seq(&self) -> usize {
        self.n_seq
    }

    fn kv_spec(&self) -> &KvSpec {
        &self.spec
    }

    fn map_blocks(&mut self, seq: usize, first: usize, blocks: &[u32]) -> Result<(), ModelError> {
        self.spec.check_map(seq, first, blocks)?;
        self.backend.map_blocks(&mut self.kv, seq, first, blocks)?;
        self.tables[seq][first..first + blocks.len()].copy_from_slice(blocks);
        Ok(())
    }

    fn eval_batch(
        &mut self,
        batch: &Batch,
        logits: &[u32],
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        self.check(batch, logits)?;
        let n_vocab = self.model.config().n_vocab;
        out.resize(logits.len() * n_vocab, 0.0);
        let step = self.backend.max_rows().clamp(1, crate::N_UBATCH);
        let mut done = 0; // logit rows delivered
        let mut head = std::mem::take(&mut self.scratch[3]);
        for start in (0..batch.len()).step_by(step) {
            let end = (start + step).min(batch.len());
            head.clear();
            while done + head.len() < logits.len() && (logits[done + head.len()] as usize) < end {
                head.push(logits[done + head.len()] - start as u32);
            }
            let part = Batch {
                tokens: &batch.tokens[start..end],
                seqs: &batch.seqs[start..end],
                pos: &batch.pos[start..end],
            };
            let r = self.step(&part, &head).and_then(|()| {
                for i in 0..head.len() {
                    let row = &mut out[(done + i) * n_vocab..(done + i + 1) * n_vocab];
                    self.state.read_logits(&mut self.backend, i, row)?;
                }
                Ok(())
            });
            if let Err(e) = r {
                self.scratch[3] = head;
                return Err(e);
            }
            done += head.len();
        }
        self.scratch[3] = head;
        Ok(())
    }

    fn eval(
        &mut self,
        tokens: &[u32],
        pos0: usize,
        logits: Logits,
        out: &mut Vec<f32>,
    ) -> Result<(), ModelError> {
        let n = tokens.len();
        if pos0.saturating_add(n) > self.n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: pos0.saturating_add(n),
                n_ctx: self.n_ctx,
            });
        }
        let [mut seqs, mut pos, mut rows, head] = std::mem::take(&mut self.scratch);
        seqs.clear();
        seqs.resize(n, 0);
        pos.clear();
        pos.extend((pos0..pos0 + n).map(|p| p as u32));
        rows.clear();
        match logits {
            Logits::All => rows.extend(0..n as u32),
            Logits::Last => rows.push(n.saturating_sub(1) as u32),
        }
        let batch = Batch {
            tokens,
            seqs: &seqs,
            pos: &pos,
        };
        self.scratch[3] = head;
        let r = self.eval_batch(&batch, &rows, out);
        self.scratch[0] = seqs;
        self.scratch[1] = pos;
        self.scratch[2] = rows;
        r
    }

    fn eval_argmax(&mut self, token: u32, pos: usize) -> Result<u32, ModelError> {
        if pos >= self.n_ctx {
            return Err(ModelError::ContextFull {
                n_tokens: pos.saturating_add(1),
                n_ctx: self.n_ctx,
            });
        }
        let batch = Batch {
            tokens: &[token],
            seqs: &[0],
            pos: &[pos as u32],
        };
        self.check(&batch, &[0])?;
        self.step(&batch, &[0])?;
        self.state.argmax_logits(&mut self.backend, 0)
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
    load_seqs(file, device, n_ctx, 1, opts)
}

/// [`load_with`] with a KV cache of `n_seq` sequences side by side, each of `n_ctx` positions.
pub fn load_seqs(
    file: Arc<GgufFile>,
    device: Device,
    n_ctx: usize,
    n_seq: usize,
    opts: &BackendOptions,
) -> Result<Box<dyn Model>, ModelError> {
    let size = KvSize {
        n_seq,
        seq_ctx: n_ctx,
        n_blocks: 0,
    };
    load_cache(file, device, size, opts)
}

/// How large a KV cache to allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvSize {
    /// Sequences (block tables).
    pub n_seq: usize,
    /// Positions one sequence may reach (0: the trained context length).
    pub seq_ctx: usize,
    /// Blocks of [`KV_BLOCK`] positions in the pool, shared by all sequences (0: every sequence's
    /// whole context side by side).
    pub n_blocks: usize,
}

impl KvSize {
    fn spec(&self, c: &Config, max_rows: usize) -> KvSpec {
        let side_by_side = self.n_seq * self.seq_ctx.div_ceil(KV_BLOCK);
        let n_blocks = match self.n_blocks {
            0 => side_by_side,
            n => n,
        };
        arch::kv_spec(c, self.n_seq, self.seq_ctx, n_blocks, max_rows)
    }
}

/// Loads the model in `file` onto a backend the caller built (a backend of its own, or one
/// wrapping ours), with a KV cache of `size`.
pub fn load_on<B>(
    backend: B,
    file: Arc<GgufFile>,
    size: KvSize,
) -> Result<Box<dyn Model>, ModelError>
where
    B: Backend + Send + 'static,
    B::Buf: Send,
    B::Weight: Send,
    B::Kv: Send,
{
    let mut config = Config::from_gguf(&file)?;
    let seq_ctx = match size.seq_ctx {
        0 => config.n_ctx_train,
        n => n,
    };
    if size.n_seq == 0 || seq_ctx == 0 || seq_ctx > 1 << 31 {
        return Err(ModelError::InvalidConfig(format!(
            "a cache of {} sequences of {seq_ctx} positions",
            size.n_seq
        )));
    }
    config.n_ctx = seq_ctx;
    boxed(backend, &file, config, KvSize { seq_ctx, ..size })
}

/// Whether `device`'s KV cache is paged: sequences take pool blocks as they grow and may share
/// them (on the others each sequence keeps its own side-by-side blocks).
pub fn paged(device: Device) -> bool {
    match device {
        Device::Cpu => true,
        Device::Metal | Device::Vulkan => cfg!(feature = "wgpu"),
        Device::Cuda => cfg!(feature = "cuda"),
        Device::Gpu => false,
    }
}

/// Loads the model in `file` onto `device` with a KV cache of `size`.
pub fn load_cache(
    file: Arc<GgufFile>,
    device: Device,
    size: KvSize,
    opts: &BackendOptions,
) -> Result<Box<dyn Model>, ModelError> {
    device.check_available()?;
    let config = Config::from_gguf(&file)?;
    let n_ctx = match size.seq_ctx {
        0 => config.n_ctx_train,
        n => n,
    };
    if n_ctx == 0 {
        return Err(ModelError::InvalidConfig(
            "the context length is 0 (give one with -c)".into(),
        ));
    }
    let (n_seq, n_blocks) = (size.n_seq, size.n_blocks);
    if n_seq == 0 || n_ctx > 1 << 31 || n_seq > 1 << 16 || n_blocks > 1 << 28 {
        return Err(ModelError::InvalidConfig(format!(
            "a cache of {n_seq} sequences of {n_ctx} positions ({n_blocks} blocks)"
        )));
    }
    let size = KvSize {
        seq_ctx: n_ctx,
        ..size
    };
    let mut config = config;
    config.n_ctx = n_ctx;
    match (device, config.arch) {
        (Device::Cpu, _) => {
            crate::host_memory::check(
                crate::backend::cpu::kv_bytes(&size.spec(&config, crate::backend::N_UBATCH)),
                || match n_blocks {
                    0 => format!("the KV cache for {n_seq} x {n_ctx} tokens"),
                    n => format!(
                        "the KV cache pool of {} tokens ({n_seq} sequences)",
                        n * crate::backend::KV_BLOCK
                    ),
                },
            )?;
            let backend = CpuBackend::with_options(rayon::current_num_threads(), &opts.cpu);
            boxed(backend, &file, config, size)
        }
        #[cfg(feature = "cuda")]
        (Device::Cuda, _) => {
            let backend = crate::backend::cuda::CudaBackend::new(&opts.cuda)?;
            boxed(backend, &file, config, size)
        }
        #[cfg(feature = "wgpu")]
        (Device::Metal | Device::Vulkan, _) => {
            crate::backend::wgpu::load(file, config, size, &opts.wgpu)
        }
        (Device::Gpu, _) => load_cache(file, pick_gpu()?, size, opts),
        // Reached only in builds without some backend.
        #[allow(unreachable_patterns)]
        (other, _) => Err(ModelError::Backend(format!(
            "the {} backend is not available in this build",
            other.name()
        ))),
    }
}

pub(crate) fn boxed<B>(
    backend: B,
    file: &Arc<GgufFile>,
    config: Config,
    size: KvSize,
) -> Result<Box<dyn Model>, ModelError>
where
    B: Backend + Send + 'static,
    B::Buf: Send,
    B::Weight: Send,
    B::Kv: Send,
{
    Ok(match config.arch {
        Arch::Llama => Box::new(Runner::<B, LlamaModel<B>>::new(
            backend, file, config, size,
        )?),
        Arch::Qwen2 => Box::new(Runner::<B, Qwen2Model<B>>::new(
            backend, file, config, size,
        )?),
        Arch::Qwen3 => Box::new(Runner::<B, Qwen3Model<B>>::new(
            backend, file, config, size,
        )?),
        Arch::Gemma3 => Box::new(Runner::<B, Gemma3Model<B>>::new(
            backend, file, config, size,
        )?),
        Arch::Phi3 => Box::new(Runner::<B, Phi3Model<B>>::new(backend, file, config, size)?),
    })
}

/// `--backend gpu`: CUDA where it is built and a driver is present, then Metal or Vulkan.
fn pick_gpu() -> Result<Device, ModelError> {
    #[cfg(feature = "cuda")]
    if crate::backend::cuda::present() {
        return Ok(Device::Cuda);
    }
    #[cfg(feature = "wgpu")]
    if crate::backend::wgpu::present() {
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
