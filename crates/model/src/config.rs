//! Model hyper-parameters, read from GGUF metadata and validated once at load.

use rustorch_gguf::{GgufError, GgufFile};

use crate::ModelError;

/// Architectures whose forward pass rustorch implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama", "qwen2", "qwen3", "gemma3", "phi3"];

/// The architecture families rustorch knows (`general.architecture`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Llama 2/3, TinyLlama, SmolLM2, Mistral.
    Llama,
    /// Qwen2, Qwen2.5, DeepSeek-R1-Distill-Qwen: biases on q, k and v.
    Qwen2,
    /// Qwen3: per-head RMSNorm of q and k.
    Qwen3,
    /// Gemma 3: scaled embedding, per-head q/k norms, post-norms, GELU, sliding-window layers.
    Gemma3,
    /// Phi-3: fused q/k/v and gate/up weights.
    Phi3,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            "gemma3" => Ok(Arch::Gemma3),
            "phi3" => Ok(Arch::Phi3),
            other => Err(ModelError::UnsupportedArchitecture {
                arch: other.to_string(),
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }

    /// How the architecture pairs the rotated dimensions of a head.
    pub fn rope_style(self) -> RopeStyle {
        match self {
            Arch::Llama => RopeStyle::Adjacent,
            Arch::Qwen2 | Arch::Qwen3 | Arch::Gemma3 | Arch::Phi3 => RopeStyle::Neox,
        }
    }
}

/// RoPE's pairing of a head's dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Dimensions `2i` and `2i + 1` (llama; GGUF's converter permutes q and k rows for it).
    Adjacent,
    /// Dimensions `i` and `i + n_rot / 2` (GPT-NeoX; Qwen, Gemma, Phi).
    Neox,
}

/// Hyper-parameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub arch: Arch,
    /// `{arch}.block_count`
    pub n_layer: usize,
    /// `{arch}.embedding_length`: the residual stream width.
    pub n_embd: usize,
    /// `{arch}.feed_forward_length`
    pub n_ff: usize,
    /// `{arch}.attention.head_count`
    pub n_head: usize,
    /// `{arch}.attention.head_count_kv` (defaults to `n_head`, as llama.cpp does).
    pub n_head_kv: usize,
    /// Width of one head: `{arch}.attention.key_length`, else `n_embd / n_head`.
    pub head_dim: usize,
    /// `{arch}.rope.dimension_count` (defaults to `head_dim`): leading dims of a head that rotate.
    pub n_rot: usize,
    /// `{arch}.rope.freq_base` (default 10000).
    pub rope_freq_base: f32,
    /// RoPE base of the sliding-window layers (Gemma 3: 10000; else `rope_freq_base`).
    pub rope_freq_base_swa: f32,
    /// `{arch}.attention.sliding_window`: positions a sliding-window layer's query sees (itself
    /// included); 0: every layer attends to the whole context.
    pub sliding_window: usize,
    /// `{arch}.attention.sliding_window_pattern` (Gemma 3, default 6): of every `n` layers the
    /// first `n - 1` slide.
    pub swa_pattern: usize,
    /// `{arch}.rope.scaling.original_context_length` (Phi-3 LongRoPE; 0 when absent): longer
    /// contexts take the long RoPE factors.
    pub rope_orig_ctx: usize,
    /// `{arch}.rope.scaling.attn_factor` (default 1): multiplies RoPE's sine and cosine.
    pub rope_attn_factor: f32,
    /// The context the model was loaded with (set by the loader; chooses Phi-3's RoPE factors).
    pub n_ctx: usize,
    /// Scale of the attention scores: `1 / sqrt(head_dim)` (Gemma 3 27B: `1 / sqrt(n_embd /
    /// n_head)`).
    pub attn_scale: f32,
    /// `{arch}.attention.layer_norm_rms_epsilon`
    pub rms_eps: f32,
    /// `{arch}.context_length`: the context the model was trained for.
    pub n_ctx_train: usize,
    /// Rows of the token embedding table.
    pub n_vocab: usize,
}

impl Config {
    /// Reads and validates the hyper-parameters. `n_vocab` comes from the embedding table, which is
    /// what the forward pass indexes.
    pub fn from_gguf(file: &GgufFile) -> Result<Config, ModelError> {
        let arch_name = file.get_str("general.architecture")?;
        let arch = Arch::from_name(arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let get = |k: &str| -> Result<usize, ModelError> { Ok(file.get_u32(&key(k))? as usize) };

        let n_layer = get("block_count")?;
        let n_embd = get("embedding_length")?;
        let n_ff = get("feed_forward_length")?;
        let n_head = get("attention.head_count")?;
        let n_head_kv = match file.opt_u32(&key("attention.head_count_kv"))? {
            Some(v) => v as usize,
            None => n_head,
        };
        let key_length = file.opt_u32(&key("attention.key_length"))?;
        let value_length = file.opt_u32(&key("attention.value_length"))?;
        let sliding_window = file.opt_u32(&key("attention.sliding_window"))?.unwrap_or(0) as usize;
        let n_ctx_train = get("context_length")?;
        let rms_eps = file.get_f32(&key("attention.layer_norm_rms_epsilon"))?;
        let rope_freq_base = file.opt_f32(&key("rope.freq_base"))?.unwrap_or(10000.0);

        let invalid = |what: String| ModelError::InvalidConfig(what);
        if n_layer == 0 || n_embd == 0 || n_ff == 0 || n_head == 0 || n_head_kv == 0 {
            return Err(invalid(format!(
                "zero-sized hyper-parameter (block_count={n_layer}, embedding_length={n_embd}, \
                 feed_forward_length={n_ff}, head_count={n_head}, head_count_kv={n_head_kv})"
            )));
        }
        if key_length.is_none() && n_embd % n_head != 0 {
            return Err(invalid(format!(
                "embedding_length {n_embd} is not a multiple of head_count {n_head}"
            )));
        }
        if value_length.is_some() && value_length != key_length {
            return Err(invalid(format!(
                "attention.value_length {value_length:?} differs from key_length {key_length:?}"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(invalid(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = key_length.map_or(n_embd / n_head, |k| k as usize);
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > 1 << 12 {
            return Err(invalid(format!("head size {head_dim} (even, up to 4096)")));
        }
        let n_rot = match file.opt_u32(&key("rope.dimension_count"))? {
            Some(v) => v as usize,
            None => head_dim,
        };
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(invalid(format!(
                "rope.dimension_count {n_rot} must be even and at most the head size {head_dim}"
            )));
        }
        if !(rms_eps.is_finite() && rms_eps > 0.0) {
            return Err(invalid(format!(
                "layer_norm_rms_epsilon {rms_eps} must be positive"
            )));
        }
        if !(rope_freq_base.is_finite() && rope_freq_base > 0.0) {
            return Err(invalid(format!(
                "rope.freq_base {rope_freq_base} must be positive"
            )));
        }
        let embd = file
            .tensor("token_embd.weight")
            .ok_or_else(|| ModelError::MissingTensor("token_embd.weight".into()))?;
        if embd.dims.len() != 2 || embd.dims[0] != n_embd as u64 {
            return Err(ModelError::TensorShape {
                name: "token_embd.weight".into(),
                expected: format!("[{n_embd}, n_vocab]"),
                actual: format!("{:?}", embd.dims),
            });
        }
        let n_vocab = usize::try_from(embd.dims[1])
            .map_err(|_| invalid("vocabulary size does not fit in memory".into()))?;
        if n_vocab == 0 {
            return Err(invalid("empty vocabulary".into()));
        }
        // Every count is checked against the tensors that exist before anything is sized from
        // it: a file may claim four billion layers.
        let n_blocks = blocks_in(file);
        if n_layer > n_blocks {
            return Err(invalid(format!(
                "block_count is {n_layer}, but the file has tensors for {n_blocks} blocks"
            )));
        }
        // Phi-3 keeps q/k/v in one tensor and gate/up in `ffn_up`.
        let (k_name, k_rows) = match arch {
            Arch::Phi3 => ("blk.0.attn_qkv.weight", (n_head + 2 * n_head_kv) * head_dim),
            _ => ("blk.0.attn_k.weight", n_head_kv * head_dim),
        };
        let up_rows = if arch == Arch::Phi3 { 2 * n_ff } else { n_ff };
        for (name, expected) in [
            (k_name, [n_embd, k_rows]),
            ("blk.0.ffn_up.weight", [n_embd, up_rows]),
        ] {
            let t = file
                .tensor(name)
                .ok_or_else(|| ModelError::MissingTensor(name.into()))?;
            if t.dims.len() != 2
                || t.dims[0] != expected[0] as u64
                || t.dims[1] != expected[1] as u64
            {
                return Err(ModelError::TensorShape {
                    name: name.into(),
                    expected: format!("{expected:?} (from the hyper-parameters)"),
                    actual: format!("{:?}", t.dims),
                });
            }
        }
        let attn_scale = if arch == Arch::Gemma3 && n_layer == 62 {
            // Gemma 3 27B scales queries by the model width per head, not the head size.
            1.0 / ((n_embd / n_head) as f32).sqrt()
        } else {
            1.0 / (head_dim as f32).sqrt()
        };
        let rope_freq_base_swa = match file.opt_f32(&key("rope.freq_base_swa"))? {
            Some(b) if b.is_finite() && b > 0.0 => b,
            Some(b) => return Err(invalid(format!("rope.freq_base_swa {b} must be positive"))),
            None if arch == Arch::Gemma3 => 10000.0,
            None => rope_freq_base,
        };
        let swa_pattern = file
            .opt_u32(&key("attention.sliding_window_pattern"))?
            .unwrap_or(6) as usize;
        if swa_pattern == 0 {
            return Err(invalid("attention.sliding_window_pattern is 0".into()));
        }
        let rope_orig_ctx = file
            .opt_u32(&key("rope.scaling.original_context_length"))?
            .unwrap_or(0) as usize;
        let rope_attn_factor = file
            .opt_f32(&key("rope.scaling.attn_factor"))?
            .unwrap_or(1.0);
        if !(rope_attn_factor.is_finite() && rope_attn_factor > 0.0) {
            return Err(invalid(format!(
                "rope.scaling.attn_factor {rope_attn_factor} must be positive"
            )));
        }
        Ok(Config {
            arch,
            rope_freq_base_swa,
            sliding_window,
            swa_pattern,
            rope_orig_ctx,
            rope_attn_factor,
            n_ctx: 0,
            attn_scale,
            n_layer,
            n_embd,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            n_rot,
            rope_freq_base,
            rms_eps,
            n_ctx_train,
            n_vocab,
        })
    }

    /// Width of the queries of all heads: `n_head * head_dim` (not always `n_embd`).
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Whether layer `il` attends through a sliding window: Gemma 3's first `swa_pattern - 1` of
    /// every `swa_pattern` layers (five of every six by default), when the file gives a window.
    pub fn is_swa_layer(&self, il: usize) -> bool {
        self.sliding_window > 0
            && self.arch == Arch::Gemma3
            && il % self.swa_pattern < self.swa_pattern - 1
    }

    /// Positions layer `il`'s queries see, themselves included: its sliding window, or 0 for the
    /// whole context.
    pub fn layer_window(&self, il: usize) -> usize {
        if self.is_swa_layer(il) {
            self.sliding_window
        } else {
            0
        }
    }

    /// Width of the keys (and values) of all KV heads: `n_head_kv * head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Query heads that share one KV head.
    pub fn n_gqa(&self) -> usize {
        self.n_head / self.n_head_kv
    }
}

/// Blocks the tensor names cover: one more than the largest `N` of a `blk.N.` name.
fn blocks_in(file: &GgufFile) -> usize {
    file.tensors()
        .iter()
        .filter_map(|t| {
            t.name
                .strip_prefix("blk.")?
                .split('.')
                .next()?
                .parse::<usize>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1)
}

impl From<GgufError> for ModelError {
    fn from(e: GgufError) -> Self {
        ModelError::Gguf(e)
    }
}
