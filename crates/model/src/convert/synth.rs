//! Synthetic models of a named real shape (TinyLlama 1.1B, Llama 7B, SmolLM2 135M) with
//! deterministic pseudo-random weights, so benchmarks run at real sizes without a download.
//!
//! The file is a normal Llama GGUF (llama.cpp loads it): a SentencePiece-style vocabulary of the
//! shape's size (byte tokens plus made-up pieces), f32 norms of ones, and weight matrices drawn from a
//! fixed generator and quantized by the same per-tensor rules as `quantize`.

use std::io::Write;

use rayon::prelude::*;
use rustorch_gguf::{Array, GgmlType, GgufWriter, OutputFile, TensorSpec, Value};

use crate::convert::ftype::{llama_tensor_order, FileType, ModelFacts, TensorFacts, TypeChooser};
use crate::convert::quantize::convert_tensor;
use crate::ModelError;

/// A named model shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub name: &'static str,
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub n_vocab: usize,
    pub n_ctx: usize,
    pub rope_freq_base: f32,
    /// Output head shares the token embedding (no `output.weight`).
    pub tied: bool,
}

pub const SHAPES: &[Shape] = &[
    Shape {
        name: "tinyllama-1.1b",
        n_layer: 22,
        n_embd: 2048,
        n_ff: 5632,
        n_head: 32,
        n_head_kv: 4,
        n_vocab: 32000,
        n_ctx: 2048,
        rope_freq_base: 10000.0,
        tied: false,
    },
    Shape {
        name: "llama-7b",
        n_layer: 32,
        n_embd: 4096,
        n_ff: 11008,
        n_head: 32,
        n_head_kv: 32,
        n_vocab: 32000,
        n_ctx: 4096,
        rope_freq_base: 10000.0,
        tied: false,
    },
    Shape {
        name: "smollm2-135m",
        n_layer: 30,
        n_embd: 576,
        n_ff: 1536,
        n_head: 9,
        n_head_kv: 3,
        n_vocab: 49152,
        n_ctx: 8192,
        rope_freq_base: 100000.0,
        tied: true,
    },
];

impl Shape {
    pub fn by_name(name: &str) -> Option<Shape> {
        SHAPES.iter().copied().find(|s| s.name == name)
    }

    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (e, ff, v) = (self.n_embd as u64, self.n_ff as u64, self.n_vocab as u64);
        let kv = (self.n_embd / self.n_head * self.n_head_kv) as u64;
        let mut t = vec![("token_embd.weight".to_string(), vec![e, v])];
        for i in 0..self.n_layer {
            for (name, dims) in [
                ("attn_norm", vec![e]),
                ("attn_q", vec![e, e]),
                ("attn_k", vec![e, kv]),
                ("attn_v", vec![e, kv]),
                ("attn_output", vec![e, e]),
                ("ffn_norm", vec![e]),
                ("ffn_gate", vec![e, ff]),
                ("ffn_up", vec![e, ff]),
                ("ffn_down", vec![ff, e]),
            ] {
                t.push((format!("blk.{i}.{name}.weight"), dims));
            }
        }
        t.push(("output_norm.weight".to_string(), vec![e]));
        if !self.tied {
            t.push(("output.weight".to_string(), vec![e, v]));
        }
        t
    }

    fn metadata(&self, ftype: FileType) -> Vec<(String, Value)> {
        let s = |v: &str| Value::String(v.to_string());
        let u = |v: usize| Value::U32(v as u32);
        let mut md = vec![
            ("general.architecture".to_string(), s("llama")),
            (
                "general.name".to_string(),
                s(&format!("rustorch synthetic {}", self.name)),
            ),
            ("llama.block_count".to_string(), u(self.n_layer)),
            ("llama.context_length".to_string(), u(self.n_ctx)),
            ("llama.embedding_length".to_string(), u(self.n_embd)),
            ("llama.feed_forward_length".to_string(), u(self.n_ff)),
            ("llama.attention.head_count".to_string(), u(self.n_head)),
            (
                "llama.attention.head_count_kv".to_string(),
                u(self.n_head_kv),
            ),
            (
                "llama.rope.freq_base".to_string(),
                Value::F32(self.rope_freq_base),
            ),
            (
                "llama.rope.dimension_count".to_string(),
                u(self.n_embd / self.n_head),
            ),
            (
                "llama.attention.layer_norm_rms_epsilon".to_string(),
                Value::F32(1e-5),
            ),
            ("llama.vocab_size".to_string(), u(self.n_vocab)),
            ("general.file_type".to_string(), Value::U32(ftype.id())),
            ("general.quantization_version".to_string(), Value::U32(2)),
        ];
        let (tokens, scores, types) = synthetic_vocab(self.n_vocab);
        md.extend([
            ("tokenizer.ggml.model".to_string(), s("llama")),
            ("tokenizer.ggml.pre".to_string(), s("default")),
            (
                "tokenizer.ggml.tokens".to_string(),
                Value::Array(Array::String(tokens)),
            ),
            (
                "tokenizer.ggml.scores".to_string(),
                Value::Array(Array::F32(scores)),
            ),
            (
                "tokenizer.ggml.token_type".to_string(),
                Value::Array(Array::I32(types)),
            ),
            ("tokenizer.ggml.bos_token_id".to_string(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".to_string(), Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id".to_string(), Value::U32(0)),
            (
                "tokenizer.ggml.add_bos_token".to_string(),
                Value::Bool(true),
            ),
            (
                "tokenizer.ggml.add_eos_token".to_string(),
                Value::Bool(false),
            ),
        ]);
        md
    }
}

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then distinct made-up pieces with falling scores.
fn synthetic_vocab(n: usize) -> (Vec<String>, Vec<f32>, Vec<i32>) {
    const LETTERS: &[u8] = b"etaoinshrdlucmfwypvbgkjqxz";
    let mut tokens = vec!["<unk>".to_string(), "<s>".to_string(), "</s>".to_string()];
    let mut types = vec![2, 3, 3]; // unknown, control, control
    for b in 0..256 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6); // byte
    }
    let mut i = 0usize;
    while tokens.len() < n {
        // Pieces in base-26 over common letters, half of them word-initial.
        let mut piece = String::new();
        let mut k = i / 2;
        loop {
            piece.push(LETTERS[k % 26] as char);
            k /= 26;
            if k == 0 {
                break;
            }
        }
        if i.is_multiple_of(2) {
            piece.insert(0, '\u{2581}');
        }
        tokens.push(piece);
        types.push(1);
        i += 1;
    }
    tokens.truncate(n);
    types.truncate(n);
    let scores = (0..n)
        .map(|i| if i < 259 { 0.0 } else { -((i - 259) as f32) })
        .collect();
    (tokens, scores, types)
}

/// splitmix64: a fixed, fast generator; each tensor row is seeded from the tensor's name and row.
fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn fnv(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// One row of weights: roughly normal (sum of four uniforms), standard deviation `std`.
fn fill_row(seed: u64, std: f32, out: &mut [f32]) {
    let mut state = seed;
    for x in out.iter_mut() {
        state = splitmix(state);
        let u = [
            state as u16,
            (state >> 16) as u16,
            (state >> 32) as u16,
            (state >> 48) as u16,
        ];
        let sum: f32 = u.iter().map(|&v| v as f32 / 65535.0).sum::<f32>() - 2.0;
        // Four uniforms on [0,1) have variance 1/3: scale to `std`.
        *x = sum * std * 1.732_050_8;
    }
}

/// [`write`] to an [`OutputFile`], committed when complete.
pub fn write_file(
    shape: &Shape,
    ftype: FileType,
    out: OutputFile,
    progress: impl FnMut(usize, usize),
) -> Result<(), ModelError> {
    let out = write(shape, ftype, out.buffered(), progress)?;
    Ok(OutputFile::commit_buffered(out)?)
}

/// Writes a synthetic model of `shape` quantized as `ftype` to `out` and returns it flushed.
/// `progress(done, total)` counts tensors.
pub fn write<W: Write>(
    shape: &Shape,
    ftype: FileType,
    out: W,
    mut progress: impl FnMut(usize, usize),
) -> Result<W, ModelError> {
    let tensors = shape.tensors();
    let names: Vec<&str> = tensors.iter().map(|(n, _)| n.as_str()).collect();
    let facts = ModelFacts {
        arch: "llama".into(),
        n_layer: shape.n_layer,
        n_head: shape.n_head,
        n_head_kv: shape.n_head_kv,
        n_expert: 0,
    };
    let mut chooser = TypeChooser::new(ftype, facts, names.iter().copied());
    let order = llama_tensor_order(&names);
    let mut types = vec![GgmlType::F32; tensors.len()];
    for &i in &order {
        let (name, dims) = &tensors[i];
        types[i] = chooser.choose(&TensorFacts {
            name,
            dims,
            ty: GgmlType::F32,
        });
    }
    let specs: Vec<TensorSpec> = tensors
        .iter()
        .zip(&types)
        .map(|((n, d), &ty)| TensorSpec {
            name: n.clone(),
            dims: d.clone(),
            ty,
        })
        .collect();
    let mut writer = GgufWriter::new(out, &shape.metadata(ftype), &specs)?;
    for (i, ((name, dims), &ty)) in tensors.iter().zip(&types).enumerate() {
        let row_len = dims[0] as usize;
        let n_rows: usize = dims[1..].iter().map(|&d| d as usize).product();
        let data: Vec<f32> = if dims.len() == 1 {
            vec![1.0; row_len]
        } else {
            let seed = fnv(name);
            let std = 0.02 / ((shape.n_layer as f32) / 8.0).sqrt().max(1.0)
                * if name.contains("token_embd") {
                    2.0
                } else {
                    1.0
                };
            let mut v = vec![0f32; row_len * n_rows];
            v.par_chunks_mut(row_len)
                .enumerate()
                .for_each(|(r, row)| fill_row(splitmix(seed ^ r as u64), std, row));
            v
        };
        let bytes: &[u8] = bytemuck::cast_slice(&data);
        if ty == GgmlType::F32 {
            writer.write_tensor_data(bytes)?;
        } else {
            let q = convert_tensor(bytes, GgmlType::F32, ty, row_len)?;
            writer.write_tensor_data(&q)?;
        }
        progress(i + 1, tensors.len());
    }
    Ok(writer.finish()?)
}
