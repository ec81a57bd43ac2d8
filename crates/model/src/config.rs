//! Model hyper-parameters, read from GGUF metadata and validated once at load.

use rustorch_gguf::{GgufError, GgufFile};

use crate::ModelError;

/// Architectures whose forward pass rustorch implements.
pub const SUPPORTED_ARCHITECTURES: &[&str] = &["llama"];

/// The architecture families rustorch knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Llama,
}

impl Arch {
    pub fn from_name(name: &str) -> Result<Arch, ModelError> {
        match name {
            "llama" => Ok(Arch::Llama),
            other => Err(ModelError::UnsupportedArchitecture {
                arch: other.to_string(),
                supported: SUPPORTED_ARCHITECTURES.join(", "),
            }),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
        }
    }
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
    /// Width of one head: `n_embd / n_head`.
    pub head_dim: usize,
    /// `{arch}.rope.dimension_count` (defaults to `head_dim`): leading dims of a head that rotate.
    pub n_rot: usize,
    /// `{arch}.rope.freq_base` (default 10000).
    pub rope_freq_base: f32,
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
        if n_embd % n_head != 0 {
            return Err(invalid(format!(
                "embedding_length {n_embd} is not a multiple of head_count {n_head}"
            )));
        }
        if n_head % n_head_kv != 0 {
            return Err(invalid(format!(
                "head_count {n_head} is not a multiple of head_count_kv {n_head_kv}"
            )));
        }
        let head_dim = n_embd / n_head;
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
        for (name, expected) in [
            ("blk.0.attn_k.weight", [n_embd, n_head_kv * head_dim]),
            ("blk.0.ffn_up.weight", [n_embd, n_ff]),
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
        Ok(Config {
            arch,
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
