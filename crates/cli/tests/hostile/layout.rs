//! A GGUF file's structure read by hand, independent of `rustorch-gguf`, so that a mutant can aim at
//! any field: where each header field, kv pair and tensor info starts, the offset and width of every
//! number in them, and a re-encoder for mutants that change a string's length.

use std::ops::Range;

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

/// What a number in the file means, which decides the boundary values a mutant puts there.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// A u64 count or length (tensor count, kv count, string length, array count, dimension, offset).
    Size,
    /// A u32 type id (value type, array element type, ggml tensor type) or `n_dims` / the version.
    Id,
    /// A scalar metadata value of this GGUF value type.
    Value(u32),
}

/// One number in the file.
#[derive(Clone, Debug)]
pub struct Field {
    /// e.g. `kv[5] llama.block_count value` or `tensor[3] blk.0.attn_q.weight dim[1]`.
    pub name: String,
    pub at: usize,
    pub kind: Kind,
}

impl Field {
    pub fn width(&self) -> usize {
        match self.kind {
            Kind::Size => 8,
            Kind::Id => 4,
            Kind::Value(ty) => scalar_width(ty).expect("scalar"),
        }
    }
}

/// One kv pair: its key, type id and encoded value (without the type id), and where it lay.
#[derive(Clone, Debug)]
pub struct Kv {
    pub key: String,
    pub ty: u32,
    pub value: Vec<u8>,
    pub span: Range<usize>,
}

/// One tensor info, encoded as it was in the file (name, n_dims, dims, type, offset).
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: u32,
    pub offset: u64,
}

/// The structure of a valid GGUF file.
#[derive(Clone, Debug)]
pub struct Layout {
    pub version: u32,
    pub kvs: Vec<Kv>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: usize,
    /// Where the tensor data starts (after the padding that follows the tensor infos).
    pub data_start: usize,
    /// Every number of the header, the kv pairs (for arrays: the first two and the last element)
    /// and the tensor infos.
    pub fields: Vec<Field>,
    /// Offsets where one structure ends and the next begins, named.
    pub boundaries: Vec<(String, usize)>,
}

pub fn scalar_width(ty: u32) -> Option<usize> {
    Some(match ty {
        T_U8 | T_I8 | T_BOOL => 1,
        T_U16 | T_I16 => 2,
        T_U32 | T_I32 | T_F32 => 4,
        T_U64 | T_I64 | T_F64 => 8,
        _ => return None,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        s
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().unwrap())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().unwrap())
    }
    fn string(&mut self) -> String {
        let n = self.u64() as usize;
        String::from_utf8(self.take(n).to_vec()).expect("utf-8 string in the base file")
    }
}

/// Reads the fields of one value of type `ty` at the cursor; `keep` says whether an array element's
/// fields are recorded (arrays hold tens of thousands of tokens: the first two and the last are).
fn value_fields(c: &mut Cursor, ty: u32, name: &str, keep: bool, fields: &mut Vec<Field>) {
    let push = |fields: &mut Vec<Field>, name: String, at, kind| {
        if keep {
            fields.push(Field { name, at, kind })
        }
    };
    if let Some(w) = scalar_width(ty) {
        push(fields, format!("{name} value"), c.at, Kind::Value(ty));
        c.take(w);
    } else if ty == T_STRING {
        push(fields, format!("{name} length"), c.at, Kind::Size);
        c.string();
    } else if ty == T_ARRAY {
        push(fields, format!("{name} element type"), c.at, Kind::Id);
        let elem = c.u32();
        push(fields, format!("{name} count"), c.at, Kind::Size);
        let n = c.u64() as usize;
        for i in 0..n {
            let keep = keep && (i < 2 || i + 1 == n);
            value_fields(c, elem, &format!("{name}[{i}]"), keep, fields);
        }
    } else {
        panic!("value type {ty} in the base file");
    }
}

impl Layout {
    pub fn parse(b: &[u8]) -> Layout {
        let mut c = Cursor { b, at: 0 };
        assert_eq!(c.take(4), b"GGUF", "the base file is a GGUF file");
        let mut fields = vec![
            Field {
                name: "header version".into(),
                at: 4,
                kind: Kind::Id,
            },
            Field {
                name: "header tensor count".into(),
                at: 8,
                kind: Kind::Size,
            },
            Field {
                name: "header kv count".into(),
                at: 16,
                kind: Kind::Size,
            },
        ];
        let mut boundaries = vec![
            ("magic".to_string(), 0),
            ("version".to_string(), 4),
            ("tensor count".to_string(), 8),
            ("kv count".to_string(), 16),
        ];
        let version = c.u32();
        let n_tensors = c.u64() as usize;
        let n_kv = c.u64() as usize;
        let mut kvs = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let start = c.at;
            fields.push(Field {
                name: format!("kv[{i}] key length"),
                at: start,
                kind: Kind::Size,
            });
            let key = c.string();
            let name = format!("kv[{i}] {key}");
            boundaries.push((format!("{name} start"), start));
            boundaries.push((format!("{name} type"), c.at));
            fields.push(Field {
                name: format!("{name} type"),
                at: c.at,
                kind: Kind::Id,
            });
            let ty = c.u32();
            let value_start = c.at;
            boundaries.push((format!("{name} value"), value_start));
            value_fields(&mut c, ty, &name, true, &mut fields);
            kvs.push(Kv {
                key,
                ty,
                value: b[value_start..c.at].to_vec(),
                span: start..c.at,
            });
        }
        let mut tensors = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let start = c.at;
            fields.push(Field {
                name: format!("tensor[{i}] name length"),
                at: start,
                kind: Kind::Size,
            });
            let tname = c.string();
            let name = format!("tensor[{i}] {tname}");
            boundaries.push((format!("{name} start"), start));
            boundaries.push((format!("{name} n_dims"), c.at));
            fields.push(Field {
                name: format!("{name} n_dims"),
                at: c.at,
                kind: Kind::Id,
            });
            let n_dims = c.u32() as usize;
            let mut dims = Vec::with_capacity(n_dims);
            for d in 0..n_dims {
                fields.push(Field {
                    name: format!("{name} dim[{d}]"),
                    at: c.at,
                    kind: Kind::Size,
                });
                dims.push(c.u64());
            }
            boundaries.push((format!("{name} type"), c.at));
            fields.push(Field {
                name: format!("{name} type"),
                at: c.at,
                kind: Kind::Id,
            });
            let ty = c.u32();
            boundaries.push((format!("{name} offset"), c.at));
            fields.push(Field {
                name: format!("{name} offset"),
                at: c.at,
                kind: Kind::Size,
            });
            let offset = c.u64();
            tensors.push(TensorInfo {
                name: tname,
                dims,
                ty,
                offset,
            });
        }
        boundaries.push(("end of tensor infos".into(), c.at));
        let alignment = kvs
            .iter()
            .find(|kv| kv.key == "general.alignment")
            .map(|kv| u32::from_le_bytes(kv.value[..4].try_into().unwrap()) as usize)
            .unwrap_or(32);
        let data_start = c.at.div_ceil(alignment) * alignment;
        boundaries.push(("data start".into(), data_start));
        for t in &tensors {
            boundaries.push((
                format!("data of {}", t.name),
                data_start + t.offset as usize,
            ));
        }
        boundaries.push(("end of file".into(), b.len()));
        Layout {
            version,
            kvs,
            tensors,
            alignment,
            data_start,
            fields,
            boundaries,
        }
    }

    pub fn kv(&self, key: &str) -> Option<&Kv> {
        self.kvs.iter().find(|kv| kv.key == key)
    }

    /// The file again, from `self` (possibly edited) and the original file's tensor data.
    pub fn encode(&self, original: &[u8], original_data_start: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(original.len() + 4096);
        out.extend_from_slice(b"GGUF");
        out.extend_from_slice(&self.version.to_le_bytes());
        out.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        out.extend_from_slice(&(self.kvs.len() as u64).to_le_bytes());
        for kv in &self.kvs {
            out.extend_from_slice(&gstr(kv.key.as_bytes()));
            out.extend_from_slice(&kv.ty.to_le_bytes());
            out.extend_from_slice(&kv.value);
        }
        for t in &self.tensors {
            out.extend_from_slice(&gstr(t.name.as_bytes()));
            out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                out.extend_from_slice(&d.to_le_bytes());
            }
            out.extend_from_slice(&t.ty.to_le_bytes());
            out.extend_from_slice(&t.offset.to_le_bytes());
        }
        out.resize(out.len().div_ceil(self.alignment) * self.alignment, 0);
        out.extend_from_slice(&original[original_data_start..]);
        out
    }

    /// Replaces (or appends) a string-valued kv pair.
    pub fn set_string(&mut self, key: &str, value: &[u8]) {
        let kv = Kv {
            key: key.to_string(),
            ty: T_STRING,
            value: gstr(value),
            span: 0..0,
        };
        match self.kvs.iter_mut().find(|k| k.key == key) {
            Some(k) => *k = kv,
            None => self.kvs.push(kv),
        }
    }
}

pub fn gstr(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(s);
    b
}
