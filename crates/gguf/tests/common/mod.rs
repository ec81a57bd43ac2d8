//! Hand-built GGUF bytes, independent of the crate's writer, so that tests can put any value in any
//! field (bad counts, unknown type ids, overlapping offsets) and so that the writer itself can be
//! checked against a second encoder.
#![allow(dead_code)]

use std::io::Write;

use rustorch_gguf::{Array, GgmlType, GgufError, GgufFile, GgufWriter, TensorSpec, Value};

pub const T_U8: u32 = 0;
pub const T_I8: u32 = 1;
pub const T_U16: u32 = 2;
pub const T_I16: u32 = 3;
pub const T_U32: u32 = 4;
pub const T_I32: u32 = 5;
pub const T_F32: u32 = 6;
pub const T_BOOL: u32 = 7;
pub const T_STRING: u32 = 8;
pub const T_ARRAY: u32 = 9;
pub const T_U64: u32 = 10;
pub const T_I64: u32 = 11;
pub const T_F64: u32 = 12;

/// Little-endian encoding helpers.
pub fn u32le(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
pub fn u64le(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}
/// A GGUF string: u64 length, then the bytes.
pub fn gstr(s: &[u8]) -> Vec<u8> {
    let mut b = u64le(s.len() as u64);
    b.extend_from_slice(s);
    b
}

/// One kv pair: the key's bytes, the value type id and the encoded value, each free to be wrong.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: Vec<u8>,
    pub ty: u32,
    pub payload: Vec<u8>,
}

impl Kv {
    pub fn raw(key: &str, ty: u32, payload: Vec<u8>) -> Kv {
        Kv {
            key: key.as_bytes().to_vec(),
            ty,
            payload,
        }
    }
    pub fn string(key: &str, v: &str) -> Kv {
        Kv::raw(key, T_STRING, gstr(v.as_bytes()))
    }
    pub fn u32(key: &str, v: u32) -> Kv {
        Kv::raw(key, T_U32, u32le(v))
    }
    /// An array of strings.
    pub fn strs(key: &str, v: &[&str]) -> Kv {
        let mut p = u32le(T_STRING);
        p.extend(u64le(v.len() as u64));
        for s in v {
            p.extend(gstr(s.as_bytes()));
        }
        Kv::raw(key, T_ARRAY, p)
    }
    pub fn f32s(key: &str, v: &[f32]) -> Kv {
        let mut p = u32le(T_F32);
        p.extend(u64le(v.len() as u64));
        for x in v {
            p.extend(x.to_le_bytes());
        }
        Kv::raw(key, T_ARRAY, p)
    }
}

/// One tensor info, every field free to be wrong.
#[derive(Clone, Debug)]
pub struct Ti {
    pub name: Vec<u8>,
    /// Written as n_dims unless `n_dims` overrides it.
    pub dims: Vec<u64>,
    pub n_dims: Option<u32>,
    pub ty: u32,
    pub offset: u64,
}

impl Ti {
    pub fn new(name: &str, dims: &[u64], ty: u32, offset: u64) -> Ti {
        Ti {
            name: name.as_bytes().to_vec(),
            dims: dims.to_vec(),
            n_dims: None,
            ty,
            offset,
        }
    }
}

/// A whole file. `bytes()` lays it out as a GGUF writer would, padding to `alignment` (which the
/// caller keeps consistent with any `general.alignment` kv, or deliberately not).
#[derive(Clone, Debug)]
pub struct Crafted {
    pub magic: [u8; 4],
    pub version: u32,
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    pub kvs: Vec<Kv>,
    pub tis: Vec<Ti>,
    pub alignment: u64,
    /// The data section (after the padding that aligns its start).
    pub data: Vec<u8>,
}

/// Byte ranges of the sections of a crafted file.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// End of the 24-byte header / start of the first kv.
    pub kv_start: usize,
    pub infos_start: usize,
    pub infos_end: usize,
    pub data_offset: usize,
    pub len: usize,
}

impl Crafted {
    /// A small valid file: four kv pairs and three tensors of three types, data section 160 bytes.
    pub fn valid() -> Crafted {
        Crafted {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![
                Kv::string("general.architecture", "llama"),
                Kv::u32("llama.block_count", 2),
                Kv::strs("tokenizer.ggml.tokens", &["<s>", "a", "bc"]),
                Kv::f32s("tokenizer.ggml.scores", &[0.0, -1.0, -2.5]),
            ],
            tis: vec![
                // f32 [4, 2]: 32 bytes at 0
                Ti::new("a.weight", &[4, 2], 0, 0),
                // q4_0 [64, 2]: 4 blocks of 18 = 72 bytes at 32
                Ti::new("b.weight", &[64, 2], 2, 32),
                // f16 [3]: 6 bytes at 128
                Ti::new("c.bias", &[3], 1, 128),
            ],
            alignment: 32,
            data: (0..160u32).map(|i| (i * 7 + 3) as u8).collect(),
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_and_layout().0
    }

    pub fn layout(&self) -> Layout {
        self.bytes_and_layout().1
    }

    pub fn bytes_and_layout(&self) -> (Vec<u8>, Layout) {
        let mut b = self.magic.to_vec();
        b.extend(u32le(self.version));
        b.extend(u64le(self.n_tensors.unwrap_or(self.tis.len() as u64)));
        b.extend(u64le(self.n_kv.unwrap_or(self.kvs.len() as u64)));
        let kv_start = b.len();
        for kv in &self.kvs {
            b.extend(gstr(&kv.key));
            b.extend(u32le(kv.ty));
            b.extend(&kv.payload);
        }
        let infos_start = b.len();
        for t in &self.tis {
            b.extend(gstr(&t.name));
            b.extend(u32le(t.n_dims.unwrap_or(t.dims.len() as u32)));
            for &d in &t.dims {
                b.extend(u64le(d));
            }
            b.extend(u32le(t.ty));
            b.extend(u64le(t.offset));
        }
        let infos_end = b.len();
        while !(b.len() as u64).is_multiple_of(self.alignment) {
            b.push(0);
        }
        let data_offset = b.len();
        b.extend(&self.data);
        let len = b.len();
        (
            b,
            Layout {
                kv_start,
                infos_start,
                infos_end,
                data_offset,
                len,
            },
        )
    }
}

/// Parses `bytes` with `from_bytes` and, through a temporary file, with `open`; both must fail
/// the same way (`open` adds the path). Returns the error.
pub fn parse_err(bytes: Vec<u8>) -> GgufError {
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(&bytes).unwrap();
    tmp.flush().unwrap();
    let from_bytes = GgufFile::from_bytes(bytes).expect_err("from_bytes accepted a corrupt file");
    let opened = GgufFile::open(tmp.path()).expect_err("open accepted a corrupt file");
    assert!(matches!(opened, GgufError::InFile { .. }), "{opened:?}");
    assert!(opened
        .to_string()
        .contains(&tmp.path().display().to_string()));
    assert_eq!(format!("{:?}", opened.root()), format!("{from_bytes:?}"));
    from_bytes
}

/// Parses `bytes` both ways and expects success.
pub fn parse_ok(bytes: Vec<u8>) -> GgufFile {
    let mut tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.write_all(&bytes).unwrap();
    tmp.flush().unwrap();
    let opened = GgufFile::open(tmp.path()).unwrap_or_else(|e| panic!("open: {e}"));
    let f = GgufFile::from_bytes(bytes).unwrap_or_else(|e| panic!("from_bytes: {e}"));
    assert_eq!(opened.metadata(), f.metadata());
    assert_eq!(opened.tensors(), f.tensors());
    f
}

/// Asserts that `$bytes` fails to parse (both ways) with an error matching `$pat`; evaluates to
/// the error.
#[macro_export]
macro_rules! assert_parse_err {
    ($bytes:expr, $pat:pat $(if $guard:expr)?) => {{
        let e = $crate::common::parse_err($bytes);
        assert!(
            matches!(e, $pat $(if $guard)?),
            "expected {}, got {e:?} ({e})",
            stringify!($pat)
        );
        e
    }};
}

// ---------------------------------------------------------------- writer fixtures

pub fn kv(k: &str, v: Value) -> (String, Value) {
    (k.to_owned(), v)
}

/// Every value type, empty and nested arrays included.
pub fn all_values() -> Vec<(String, Value)> {
    vec![
        kv("general.architecture", Value::String("llama".into())),
        kv("t.u8", Value::U8(200)),
        kv("t.i8", Value::I8(-100)),
        kv("t.u16", Value::U16(60000)),
        kv("t.i16", Value::I16(-30000)),
        kv("t.u32", Value::U32(4_000_000_000)),
        kv("t.i32", Value::I32(-2_000_000_000)),
        kv("t.f32", Value::F32(-0.15625)),
        kv("t.f32_inf", Value::F32(f32::INFINITY)),
        kv("t.bool_t", Value::Bool(true)),
        kv("t.bool_f", Value::Bool(false)),
        kv("t.string", Value::String("héllo ✓ \u{0} \n".into())),
        kv("t.string_empty", Value::String(String::new())),
        kv("t.u64", Value::U64(u64::MAX)),
        kv("t.i64", Value::I64(i64::MIN)),
        kv("t.f64", Value::F64(1e300)),
        kv("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        kv("a.i8", Value::Array(Array::I8(vec![-128, 127]))),
        kv("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        kv("a.i16", Value::Array(Array::I16(vec![-1, 2]))),
        kv("a.u32", Value::Array(Array::U32(vec![7; 100]))),
        kv("a.i32", Value::Array(Array::I32(vec![-1, 0, 1]))),
        kv("a.f32", Value::Array(Array::F32(vec![0.5, -2.0, 1e-30]))),
        kv("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        kv(
            "a.string",
            Value::Array(Array::String(vec!["a".into(), "".into(), "ü".into()])),
        ),
        kv("a.u64", Value::Array(Array::U64(vec![u64::MAX, 0]))),
        kv("a.i64", Value::Array(Array::I64(vec![i64::MIN, i64::MAX]))),
        kv(
            "a.f64",
            Value::Array(Array::F64(vec![std::f64::consts::PI])),
        ),
        kv("a.empty", Value::Array(Array::F32(vec![]))),
        kv(
            "a.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::U8(vec![9]), Array::Bool(vec![])]),
                Array::Array(vec![]),
            ])),
        ),
    ]
}

/// Several tensors of several types, one with no elements; `fill` gives each its bytes.
pub fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("token_embd.weight", &[64, 3], GgmlType::Q4_0),
        TensorSpec::new("blk.0.attn_norm.weight", &[5], GgmlType::F32),
        TensorSpec::new("blk.0.ffn_up.weight", &[256, 2, 1], GgmlType::Q4_K),
        TensorSpec::new("blk.0.ffn_down.weight", &[32, 1, 1, 3], GgmlType::Q8_0),
        TensorSpec::new("empty", &[0, 4], GgmlType::I8),
        TensorSpec::new("output.weight", &[7, 2], GgmlType::F16),
        TensorSpec::new("bf", &[3], GgmlType::BF16),
    ]
}

pub fn fill(i: usize, n: u64) -> Vec<u8> {
    (0..n)
        .map(|j| (j as usize * 31 + i * 7 + 1) as u8)
        .collect()
}

pub fn write(metadata: &[(String, Value)], tensors: &[TensorSpec]) -> Vec<u8> {
    let mut w = GgufWriter::new(Vec::new(), metadata, tensors).unwrap();
    for (i, t) in tensors.iter().enumerate() {
        w.write_tensor_data(&fill(i, t.n_bytes().unwrap())).unwrap();
    }
    w.finish().unwrap()
}
