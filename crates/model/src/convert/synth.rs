//! Synthetic models of a named real shape (TinyLlama 1.1B, Llama 7B, SmolLM2 135M, Mistral 7B,
//! Qwen2.5 0.5B / 7B, Qwen3 0.6B / 8B, Gemma 3 1B, Phi-3 mini) with deterministic pseudo-random
//! weights, so benchmarks run at real sizes without a download.
//!
//! The file is a normal GGUF of the shape's architecture (llama.cpp loads it): a SentencePiece-style
//! vocabulary of the shape's size (byte tokens plus made-up pieces), f32 norms of ones, small
//! biases, and weight matrices drawn from a fixed generator and quantized by the same per-tensor
//! rules as `quantize`.

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
    /// `general.architecture`: llama, qwen2, qwen3, gemma3 or phi3.
    pub arch: &'static str,
    /// Width of a head when it is not `n_embd / n_head` (written as `key_length`); 0: that.
    pub head_dim: usize,
    /// Gemma 3's sliding window (0: none).
    pub window: usize,
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
        arch: "llama",
        head_dim: 0,
        window: 0,
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
        arch: "llama",
        head_dim: 0,
        window: 0,
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
        arch: "llama",
        head_dim: 0,
        window: 0,
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
    Shape {
        name: "mistral-7b",
        arch: "llama",
        head_dim: 0,
        window: 0,
        n_layer: 32,
        n_embd: 4096,
        n_ff: 14336,
        n_head: 32,
        n_head_kv: 8,
        n_vocab: 32768,
        n_ctx: 32768,
        rope_freq_base: 1000000.0,
        tied: false,
    },
    Shape {
        name: "qwen2.5-0.5b",
        arch: "qwen2",
        head_dim: 0,
        window: 0,
        n_layer: 24,
        n_embd: 896,
        n_ff: 4864,
        n_head: 14,
        n_head_kv: 2,
        n_vocab: 151936,
        n_ctx: 32768,
        rope_freq_base: 1000000.0,
        tied: true,
    },
    Shape {
        name: "qwen2.5-7b",
        arch: "qwen2",
        head_dim: 0,
        window: 0,
        n_layer: 28,
        n_embd: 3584,
        n_ff: 18944,
        n_head: 28,
        n_head_kv: 4,
        n_vocab: 152064,
        n_ctx: 32768,
        rope_freq_base: 1000000.0,
        tied: false,
    },
    Shape {
        name: "qwen3-0.6b",
        arch: "qwen3",
        head_dim: 128,
        window: 0,
        n_layer: 28,
        n_embd: 1024,
        n_ff: 3072,
        n_head: 16,
        n_head_kv: 8,
        n_vocab: 151936,
        n_ctx: 40960,
        rope_freq_base: 1000000.0,
        tied: true,
    },
    Shape {
        name: "qwen3-8b",
        arch: "qwen3",
        head_dim: 128,
        window: 0,
        n_layer: 36,
        n_embd: 4096,
        n_ff: 12288,
        n_head: 32,
        n_head_kv: 8,
        n_vocab: 151936,
        n_ctx: 40960,
        rope_freq_base: 1000000.0,
        tied: false,
    },
    Shape {
        name: "gemma3-1b",
        arch: "gemma3",
        head_dim: 256,
        window: 512,
        n_layer: 26,
        n_embd: 1152,
        n_ff: 6912,
        n_head: 4,
        n_head_kv: 1,
        n_vocab: 262144,
        n_ctx: 32768,
        rope_freq_base: 1000000.0,
        tied: true,
    },
    Shape {
        name: "phi3-mini",
        arch: "phi3",
        head_dim: 0,
        window: 0,
        n_layer: 32,
        n_embd: 3072,
        n_ff: 8192,
        n_head: 32,
        n_head_kv: 32,
        n_vocab: 32064,
        n_ctx: 4096,
        rope_freq_base: 10000.0,
        tied: false,
    },
];

impl Shape {
    pub fn by_name(name: &str) -> Option<Shape> {
        SHAPES.iter().copied().find(|s| s.name == name)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        if self.head_dim > 0 {
            self.head_dim
        } else {
            self.n_embd / self.n_head
        }
    }

    fn tensors(&self) -> Vec<(String, Vec<u64>)> {
        let (e, ff, v) = (self.n_embd as u64, self.n_ff as u64, self.n_vocab as u64);
        let hd = self.head_dim() as u64;
        let (q, kv) = (hd * self.n_head as u64, hd * self.n_head_kv as u64);
        let mut t = vec![("token_embd.weight".to_string(), vec![e, v])];
        for i in 0..self.n_layer {
            let mut layer: Vec<(&str, Vec<u64>)> = vec![("attn_norm.weight", vec![e])];
            if self.arch == "phi3" {
                layer.push(("attn_qkv.weight", vec![e, q + 2 * kv]));
            } else {
                layer.extend([
                    ("attn_q.weight", vec![e, q]),
                    ("attn_k.weight", vec![e, kv]),
                    ("attn_v.weight", vec![e, kv]),
                ]);
            }
            match self.arch {
                "qwen2" => layer.extend([
                    ("attn_q.bias", vec![q]),
                    ("attn_k.bias", vec![kv]),
                    ("attn_v.bias", vec![kv]),
                ]),
                "qwen3" | "gemma3" => layer.extend([
                    ("attn_q_norm.weight", vec![hd]),
                    ("attn_k_norm.weight", vec![hd]),
                ]),
                _ => {}
            }
            layer.push(("attn_output.weight", vec![q, e]));
            if self.arch == "gemma3" {
                layer.push(("post_attention_norm.weight", vec![e]));
            }
            layer.push(("ffn_norm.weight", vec![e]));
            if self.arch == "phi3" {
                layer.push(("ffn_up.weight", vec![e, 2 * ff]));
            } else {
                layer.extend([
                    ("ffn_gate.weight", vec![e, ff]),
                    ("ffn_up.weight", vec![e, ff]),
                ]);
            }
            layer.push(("ffn_down.weight", vec![ff, e]));
            if self.arch == "gemma3" {
                layer.push(("post_ffw_norm.weight", vec![e]));
            }
            for (name, dims) in layer {
                t.push((format!("blk.{i}.{name}"), dims));
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
        let a = self.arch;
        let mut md = vec![
            ("general.architecture".to_string(), s(a)),
            (
                "general.name".to_string(),
                s(&format!("rustorch synthetic {}", self.name)),
            ),
            (format!("{a}.block_count"), u(self.n_layer)),
            (format!("{a}.context_length"), u(self.n_ctx)),
            (format!("{a}.embedding_length"), u(self.n_embd)),
            (format!("{a}.feed_forward_length"), u(self.n_ff)),
            (format!("{a}.attention.head_count"), u(self.n_head)),
            (format!("{a}.attention.head_count_kv"), u(self.n_head_kv)),
            (
                format!("{a}.rope.freq_base"),
                Value::F32(self.rope_freq_base),
            ),
            (format!("{a}.rope.dimension_count"), u(self.head_dim())),
            (
                format!("{a}.attention.layer_norm_rms_epsilon"),
                Value::F32(1e-5),
            ),
            (format!("{a}.vocab_size"), u(self.n_vocab)),
            ("general.file_type".to_string(), Value::U32(ftype.id())),
            ("general.quantization_version".to_string(), Value::U32(2)),
        ];
        if self.head_dim > 0 {
            md.push((format!("{a}.attention.key_length"), u(self.head_dim)));
            md.push((format!("{a}.attention.value_length"), u(self.head_dim)));
        }
        if self.window > 0 {
            md.push((format!("{a}.attention.sliding_window"), u(self.window)));
        }
        let (mut tokens, scores, mut types) = synthetic_vocab(self.n_vocab);
        // The chat markers llama.cpp's vocabulary loader looks up for this architecture, as the
        // last tokens (control).
        let markers: &[&str] = match self.arch {
            "phi3" => &[
                "<|endoftext|>",
                "<|assistant|>",
                "<|system|>",
                "<|end|>",
                "<|user|>",
            ],
            _ => &[],
        };
        let n = tokens.len();
        for (i, m) in markers.iter().enumerate() {
            tokens[n - markers.len() + i] = m.to_string();
            types[n - markers.len() + i] = 3;
        }
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
        arch: shape.arch.into(),
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
        let data: Vec<f32> = if dims.len() == 1 && name.ends_with(".bias") {
            // Biases: small, like the rows' weights.
            let mut v = vec![0f32; row_len];
            fill_row(fnv(name), 0.02, &mut v);
            v
        } else if dims.len() == 1 {
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
