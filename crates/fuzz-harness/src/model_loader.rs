//! A tiny Llama GGUF of real shape (2 layers, width 64, 4 heads, 2 KV heads, 300 tokens) whose
//! hyper-parameters and tensor shapes come from the input, absurd values included (0, 2^32-1,
//! 2^63, NaN, negative, the wrong value type), loaded as the CLI loads a model: the config, then
//! the model on the CPU backend with a small context, then one or two tokens evaluated. Any of it
//! may fail with an error; none of it may panic, hang or allocate more than the file justifies.
//!
//! Input: [`N_SLOTS`] slots of 9 bytes (a mode byte, then 8 value bytes: see [`Slot`]), one for
//! each metadata key of [`KEYS`]; then the tensor geometry (see [`Geometry::parse`]); then the
//! run: the context size and two token ids.

use std::sync::{Arc, Once};

use rustorch_gguf::{Array, GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use rustorch_model::{Config, Device, Logits};

/// The metadata keys the input sets, with the value the tiny model has.
pub const KEYS: &[(&str, Default)] = &[
    ("general.architecture", Default::Str("llama")),
    ("llama.block_count", Default::U32(2)),
    ("llama.embedding_length", Default::U32(64)),
    ("llama.feed_forward_length", Default::U32(128)),
    ("llama.attention.head_count", Default::U32(4)),
    ("llama.attention.head_count_kv", Default::U32(2)),
    ("llama.context_length", Default::U32(64)),
    ("llama.rope.dimension_count", Default::U32(16)),
    ("llama.rope.freq_base", Default::F32(10000.0)),
    ("llama.attention.layer_norm_rms_epsilon", Default::F32(1e-5)),
    ("llama.vocab_size", Default::U32(300)),
    ("llama.attention.key_length", Default::U32(16)),
    ("llama.attention.value_length", Default::U32(16)),
    ("llama.expert_count", Default::Absent),
    ("llama.expert_used_count", Default::Absent),
    ("llama.rope.scaling.type", Default::Absent),
    ("llama.rope.scaling.factor", Default::Absent),
    ("general.file_type", Default::U32(0)),
];
pub const N_SLOTS: usize = KEYS.len();
pub const SLOT_BYTES: usize = 9;
const GEOMETRY_BYTES: usize = 16;
const RUN_BYTES: usize = 5;
pub const INPUT_BYTES: usize = N_SLOTS * SLOT_BYTES + GEOMETRY_BYTES + RUN_BYTES;
/// Tensors above this many weights in all are not written: the input is skipped (a file's size
/// bounds what the loader may allocate, so big tensors find nothing small ones do not).
const MAX_WEIGHTS: u64 = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub enum Default {
    U32(u32),
    F32(f32),
    Str(&'static str),
    Absent,
}

/// Integers a hyper-parameter should never hold, or holds only at a boundary.
const INTERESTING_INT: &[u64] = &[
    0,
    1,
    2,
    3,
    7,
    63,
    65,
    255,
    256,
    4096,
    65535,
    65536,
    i32::MAX as u64,
    1 << 31,
    u32::MAX as u64,
    1 << 32,
    1 << 62,
    1 << 63,
    u64::MAX,
];
const INTERESTING_F32: &[f32] = &[
    0.0,
    -0.0,
    1.0,
    -1.0,
    f32::NAN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::MIN_POSITIVE,
    1e-45,
    f32::MAX,
    1e-30,
    1e30,
];
const INTERESTING_STR: &[&str] = &[
    "llama", "", "gpt2", "gemma3", "linear", "yarn", "none", "Llama", "llama\0", "64",
];

/// How one metadata key is written, from its 9 input bytes: `mode % 8` chooses
///
/// | mode | value |
/// | --- | --- |
/// | 0 | the tiny model's value |
/// | 1 | u32 from the value bytes |
/// | 2 | the tiny model's value plus a small signed step (byte 1) |
/// | 3 | a value from the tables of interesting values (byte 1 picks) in the key's type |
/// | 4 | the key's value in a wrong type (byte 1 picks: string, i32, u64, f64, bool, array) |
/// | 5 | absent |
/// | 6 | u64 from the value bytes |
/// | 7 | f32 from the value bytes |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub mode: u8,
    pub value: [u8; 8],
}

impl Slot {
    pub const DEFAULT: Slot = Slot {
        mode: 0,
        value: [0; 8],
    };

    fn value(&self, default: Default) -> Option<Value> {
        let v = self.value;
        let u32_ = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
        let step = v[0] as i8;
        let pick = usize::from(v[0]);
        match self.mode % 8 {
            0 => default_value(default),
            1 => Some(Value::U32(u32_)),
            2 => Some(match default {
                Default::U32(d) => Value::U32(d.wrapping_add_signed(i32::from(step))),
                Default::F32(d) => Value::F32(d * (1.0 + f32::from(step) / 16.0)),
                Default::Str(s) => Value::String(format!("{s}{}", step as u8 as char)),
                Default::Absent => Value::U32(step as u8 as u32),
            }),
            3 => Some(match default {
                Default::F32(_) => Value::F32(INTERESTING_F32[pick % INTERESTING_F32.len()]),
                Default::Str(_) => {
                    Value::String(INTERESTING_STR[pick % INTERESTING_STR.len()].to_string())
                }
                Default::U32(_) | Default::Absent => {
                    let x = INTERESTING_INT[pick % INTERESTING_INT.len()];
                    u32::try_from(x).map_or(Value::U64(x), Value::U32)
                }
            }),
            4 => {
                let d = match default {
                    Default::U32(d) => f64::from(d),
                    Default::F32(d) => f64::from(d),
                    Default::Str(_) | Default::Absent => 64.0,
                };
                Some(match pick % 6 {
                    0 => Value::String(d.to_string()),
                    1 => Value::I32(i32::from_le_bytes([v[1], v[2], v[3], v[4]])),
                    2 => Value::U64(d as u64),
                    3 => Value::F64(d),
                    4 => Value::Bool(true),
                    _ => Value::Array(Array::U32(vec![d as u32; usize::from(v[1] % 4)])),
                })
            }
            5 => None,
            6 => Some(Value::U64(u64::from_le_bytes(v))),
            _ => Some(Value::F32(f32::from_le_bytes([v[0], v[1], v[2], v[3]]))),
        }
    }
}

fn default_value(d: Default) -> Option<Value> {
    match d {
        Default::U32(x) => Some(Value::U32(x)),
        Default::F32(x) => Some(Value::F32(x)),
        Default::Str(s) => Some(Value::String(s.to_string())),
        Default::Absent => None,
    }
}

/// Tensor types a fuzzed model may carry: those the CPU backend computes with first, then a few it
/// must refuse.
const TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::BF16,
    GgmlType::Q4_K,
    GgmlType::Q6_K,
    GgmlType::Q2_K,
    GgmlType::I32,
    GgmlType::IQ4_NL,
    GgmlType::F64,
];

/// Sizes a tensor dimension may take instead of the tiny model's.
const DIMS: &[u64] = &[
    0, 1, 2, 16, 31, 32, 33, 63, 64, 65, 128, 256, 299, 300, 301, 512,
];

/// The tensors' shapes and types. By default they agree with the tiny model's hyper-parameters;
/// the input may change the layer count, each width, the types, drop a tensor, add
/// `output.weight`, or overwrite one dimension of up to four tensors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    pub n_layer: u64,
    pub n_embd: u64,
    pub n_ff: u64,
    pub kv_dim: u64,
    pub n_vocab: u64,
    pub matrix_type: GgmlType,
    pub norm_type: GgmlType,
    pub untied: bool,
    /// Index (modulo the tensor count) of a tensor left out.
    pub drop: Option<u8>,
    /// (tensor index modulo the count, dimension index, new size)
    pub overrides: Vec<(u8, u8, u64)>,
}

impl Geometry {
    /// 16 bytes: 0 flags (bit 0 widths from bytes 1-5, bit 1 untied head, bit 2 drop the tensor
    /// of byte 6, bit 3 the overrides of bytes 8-15); 1 layers (`% 4`); 2-5 embd, ff, kv_dim,
    /// vocab (indexes into [`DIMS`]); 6 dropped tensor; 7 matrix type (low nibble) and norm type
    /// (high nibble), indexes into [`TYPES`]; 8-15 four overrides of 2 bytes (tensor, then dim
    /// index in the top 2 bits and a [`DIMS`] index in the low 6).
    pub fn parse(b: &[u8; GEOMETRY_BYTES]) -> Geometry {
        let widths = b[0] & 1 != 0;
        let dim = |i: usize, default: u64| {
            if widths {
                DIMS[usize::from(b[i]) % DIMS.len()]
            } else {
                default
            }
        };
        let overrides = if b[0] & 8 != 0 {
            b[8..16]
                .chunks_exact(2)
                .map(|c| (c[0], c[1] >> 6, DIMS[usize::from(c[1] & 63) % DIMS.len()]))
                .collect()
        } else {
            Vec::new()
        };
        Geometry {
            n_layer: if widths { u64::from(b[1] % 4) } else { 2 },
            n_embd: dim(2, 64),
            n_ff: dim(3, 128),
            kv_dim: dim(4, 32),
            n_vocab: dim(5, 300),
            matrix_type: TYPES[usize::from(b[7] & 15) % TYPES.len()],
            norm_type: TYPES[usize::from(b[7] >> 4) % TYPES.len()],
            untied: b[0] & 2 != 0,
            drop: (b[0] & 4 != 0).then_some(b[6]),
            overrides,
        }
    }

    fn specs(&self) -> Vec<TensorSpec> {
        let (e, ff, kv, v) = (self.n_embd, self.n_ff, self.kv_dim, self.n_vocab);
        let (mt, nt) = (self.matrix_type, self.norm_type);
        let mut t = vec![TensorSpec::new("token_embd.weight", &[e, v], mt)];
        for i in 0..self.n_layer {
            for (name, dims, ty) in [
                ("attn_norm", vec![e], nt),
                ("attn_q", vec![e, e], mt),
                ("attn_k", vec![e, kv], mt),
                ("attn_v", vec![e, kv], mt),
                ("attn_output", vec![e, e], mt),
                ("ffn_norm", vec![e], nt),
                ("ffn_gate", vec![e, ff], mt),
                ("ffn_up", vec![e, ff], mt),
                ("ffn_down", vec![ff, e], mt),
            ] {
                t.push(TensorSpec::new(format!("blk.{i}.{name}.weight"), &dims, ty));
            }
        }
        t.push(TensorSpec::new("output_norm.weight", &[e], nt));
        if self.untied {
            t.push(TensorSpec::new("output.weight", &[e, v], mt));
        }
        let n = t.len();
        for &(ti, di, size) in &self.overrides {
            let dims = &mut t[usize::from(ti) % n].dims;
            let di = usize::from(di);
            if di < dims.len() {
                dims[di] = size;
            } else {
                dims.push(size);
            }
        }
        if let Some(d) = self.drop {
            t.remove(usize::from(d) % n);
        }
        t
    }
}

/// One model-loader input, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelCase {
    pub slots: [Slot; N_SLOTS],
    pub geometry: [u8; GEOMETRY_BYTES],
    /// Context of the loaded model: `1 + n_ctx % 16`.
    pub n_ctx: u8,
    pub tokens: [u16; 2],
}

impl ModelCase {
    /// The tiny model as it is, evaluating tokens 1 and 2.
    pub fn tiny() -> ModelCase {
        ModelCase {
            slots: [Slot::DEFAULT; N_SLOTS],
            geometry: [0; GEOMETRY_BYTES],
            n_ctx: 7,
            tokens: [1, 2],
        }
    }

    pub fn parse(data: &[u8]) -> ModelCase {
        let mut b = [0u8; INPUT_BYTES];
        let n = data.len().min(INPUT_BYTES);
        b[..n].copy_from_slice(&data[..n]);
        let slots = std::array::from_fn(|i| {
            let s = &b[i * SLOT_BYTES..(i + 1) * SLOT_BYTES];
            Slot {
                mode: s[0],
                value: s[1..].try_into().expect("8 bytes"),
            }
        });
        let g = N_SLOTS * SLOT_BYTES;
        let r = g + GEOMETRY_BYTES;
        ModelCase {
            slots,
            geometry: b[g..r].try_into().expect("geometry bytes"),
            n_ctx: b[r],
            tokens: [
                u16::from_le_bytes([b[r + 1], b[r + 2]]),
                u16::from_le_bytes([b[r + 3], b[r + 4]]),
            ],
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(INPUT_BYTES);
        for s in &self.slots {
            out.push(s.mode);
            out.extend_from_slice(&s.value);
        }
        out.extend_from_slice(&self.geometry);
        out.push(self.n_ctx);
        for t in self.tokens {
            out.extend_from_slice(&t.to_le_bytes());
        }
        out
    }

    pub fn metadata(&self) -> Vec<(String, Value)> {
        KEYS.iter()
            .zip(&self.slots)
            .filter_map(|(&(key, default), slot)| Some((key.to_string(), slot.value(default)?)))
            .collect()
    }

    /// The GGUF file's bytes, or `None` when its tensors would be too big or the writer refuses
    /// the shapes (a reader-side problem the `gguf_reader` target covers).
    pub fn file_bytes(&self) -> Option<Vec<u8>> {
        let specs = Geometry::parse(&self.geometry).specs();
        let mut total = 0u64;
        for s in &specs {
            s.n_bytes().ok()?;
            total = total.checked_add(s.dims.iter().try_fold(1u64, |n, &d| n.checked_mul(d))?)?;
        }
        if total > MAX_WEIGHTS {
            return None;
        }
        let mut w = GgufWriter::new(Vec::new(), &self.metadata(), &specs).ok()?;
        for (i, s) in specs.iter().enumerate() {
            w.write_tensor_data(&tensor_data(s, i as u64)).ok()?;
        }
        w.finish().ok()
    }
}

/// Small pseudo-random weights (norms of ones), in the tensor's type; bytes of a fixed pattern
/// for types nothing here can quantize to. One row is made and repeated: quantizing every row
/// (K-quants under the sanitizer) would take most of the fuzzer's time.
fn tensor_data(s: &TensorSpec, seed: u64) -> Vec<u8> {
    let n_bytes = s.n_bytes().expect("checked by file_bytes") as usize;
    let row_len = s.dims.first().copied().unwrap_or(1) as usize;
    let n_rows: usize = s.dims.iter().skip(1).map(|&d| d as usize).product();
    if n_bytes == 0 || n_rows == 0 {
        return vec![0; n_bytes];
    }
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let values: Vec<f32> = (0..row_len)
        .map(|_| {
            if s.dims.len() == 1 {
                return 1.0;
            }
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 0.2 - 0.1
        })
        .collect();
    let f32_bytes: Vec<u8> = values.iter().flat_map(|x| x.to_le_bytes()).collect();
    let row = if s.ty == GgmlType::F32 {
        f32_bytes
    } else {
        match rustorch_model::quantize::convert_tensor(&f32_bytes, GgmlType::F32, s.ty, row_len) {
            Ok(q) if q.len() * n_rows == n_bytes => q,
            _ => return (0..n_bytes).map(|i| (i * 37 % 251) as u8).collect(),
        }
    };
    row.repeat(n_rows)
}

/// The CPU backend's pool and rayon's global one, one thread each: the fuzzer runs one process
/// on one core.
fn one_thread() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build_global();
    });
}

pub fn model_loader(data: &[u8]) {
    one_thread();
    let case = ModelCase::parse(data);
    let Some(bytes) = case.file_bytes() else {
        return;
    };
    let file =
        Arc::new(GgufFile::from_bytes(bytes).expect("the reader reads what the writer wrote"));
    // As `rustorch run` does: the config first (for the trained context), then the model.
    let Ok(config) = Config::from_gguf(&file) else {
        return;
    };
    let _ = (config.kv_dim(), config.n_gqa());
    let n_ctx = 1 + usize::from(case.n_ctx % 16);
    let Ok(mut model) = rustorch_model::load(file, Device::Cpu, n_ctx) else {
        return;
    };
    assert_eq!(model.n_ctx(), n_ctx);
    let n_vocab = model.config().n_vocab;
    let [t0, t1] = case.tokens.map(u32::from);
    let mut logits = Vec::new();
    if model.eval(&[t0], 0, Logits::Last, &mut logits).is_ok() {
        assert_eq!(logits.len(), n_vocab);
        if let Ok(next) = model.eval_argmax(t1, 1) {
            assert!((next as usize) < n_vocab, "argmax {next} outside {n_vocab}");
        }
    }
    let _ = model.eval(&[t1, t0], 0, Logits::All, &mut logits);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_round_trips_through_bytes() {
        let mut c = ModelCase::tiny();
        c.slots[1] = Slot {
            mode: 6,
            value: [1, 2, 3, 4, 5, 6, 7, 8],
        };
        c.geometry[0] = 0xF;
        assert_eq!(ModelCase::parse(&c.to_bytes()), c);
    }

    #[test]
    fn tiny_model_loads_and_runs() {
        let c = ModelCase::tiny();
        let file = Arc::new(GgufFile::from_bytes(c.file_bytes().unwrap()).unwrap());
        let config = Config::from_gguf(&file).unwrap();
        assert_eq!(
            (config.n_layer, config.n_embd, config.n_vocab),
            (2, 64, 300)
        );
        let mut model = rustorch_model::load(file, Device::Cpu, 8).unwrap();
        assert!(model.eval_argmax(1, 0).unwrap() < 300);
        model_loader(&c.to_bytes());
    }

    #[test]
    fn any_bytes_are_an_input() {
        for data in [&b""[..], &[0xFF; INPUT_BYTES + 3][..]] {
            model_loader(data);
        }
    }
}
