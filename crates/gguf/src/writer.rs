//! Writing GGUF version 3 files.
//!
//! Quantized models are written tensor by tensor by tools that may produce several GB, so the
//! writer takes the full list of tensor shapes up front (the header holds every tensor's offset),
//! writes the header at once, and then streams each tensor's bytes as they are produced. Everything
//! the reader would reject (duplicate keys or names, bad shapes, bad alignment) is rejected here
//! before a byte is written, so we never produce a file we cannot read back.

use std::collections::HashSet;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::parse::{KEY_ALIGNMENT, MAGIC, MAX_ARRAY_DEPTH};
use crate::tensor::TensorSpec;
use crate::value::{Array, Value, ValueType};
use crate::{GgufError, OutputFile, DEFAULT_ALIGNMENT};

/// The version this crate writes.
pub const WRITE_VERSION: u32 = 3;

/// Streams a GGUF file: header in [`GgufWriter::new`], then one
/// [`GgufWriter::write_tensor_data`] per tensor in spec order, then [`GgufWriter::finish`].
pub struct GgufWriter<W: Write> {
    out: W,
    /// (name, n_bytes) of each declared tensor, in order.
    tensors: Vec<(String, u64)>,
    /// Index of the next tensor whose data is expected.
    next: usize,
    alignment: u64,
    /// Bytes written so far; the data section starts at a multiple of the alignment, so this also
    /// tells how much padding each tensor needs.
    written: u64,
}

impl GgufWriter<BufWriter<OutputFile>> {
    /// Writes the header to a new temporary file beside `path` (see [`OutputFile`]); the file
    /// appears at `path` only when [`GgufWriter::commit`] succeeds, and nothing is left behind if
    /// the writer is dropped before.
    pub fn create(
        path: impl AsRef<Path>,
        metadata: &[(String, Value)],
        tensors: &[TensorSpec],
    ) -> Result<Self, GgufError> {
        // Validate before touching the file system.
        let header = encode_header(metadata, tensors)?;
        let file = OutputFile::create(path.as_ref(), &[])?;
        GgufWriter::start(file.buffered(), header)
    }

    /// [`GgufWriter::finish`], then syncs the file and renames it into place.
    pub fn commit(self) -> Result<(), GgufError> {
        OutputFile::commit_buffered(self.finish()?)
    }
}

impl<W: Write> GgufWriter<W> {
    /// Writes the version 3 header: metadata, tensor infos with offsets computed from the shapes,
    /// and padding to `general.alignment` (if present in `metadata`, else 32).
    pub fn new(
        out: W,
        metadata: &[(String, Value)],
        tensors: &[TensorSpec],
    ) -> Result<Self, GgufError> {
        let header = encode_header(metadata, tensors)?;
        GgufWriter::start(out, header)
    }

    fn start(mut out: W, header: EncodedHeader) -> Result<Self, GgufError> {
        out.write_all(&header.bytes)?;
        Ok(GgufWriter {
            out,
            tensors: header.tensors,
            next: 0,
            alignment: header.alignment,
            written: header.bytes.len() as u64,
        })
    }

    /// Writes the data of the next tensor (in the order the specs were given) and pads to the
    /// alignment. `data` must be exactly that tensor's byte size.
    pub fn write_tensor_data(&mut self, data: &[u8]) -> Result<(), GgufError> {
        let Some((name, n_bytes)) = self.tensors.get(self.next) else {
            return Err(GgufError::TooManyTensorData {
                declared: self.tensors.len(),
            });
        };
        if data.len() as u64 != *n_bytes {
            return Err(GgufError::TensorSizeMismatch {
                tensor: name.clone(),
                expected: *n_bytes,
                actual: data.len() as u64,
            });
        }
        self.out.write_all(data)?;
        self.written += data.len() as u64;
        let mut padding = pad_len(self.written, self.alignment);
        self.written += padding;
        while padding > 0 {
            let n = padding.min(ZEROS.len() as u64);
            self.out.write_all(&ZEROS[..n as usize])?;
            padding -= n;
        }
        self.next += 1;
        Ok(())
    }

    /// Number of tensors whose data has been written.
    pub fn tensors_written(&self) -> usize {
        self.next
    }

    /// Checks that every tensor got its data, flushes, and returns the output.
    pub fn finish(mut self) -> Result<W, GgufError> {
        if let Some((name, _)) = self.tensors.get(self.next) {
            return Err(GgufError::MissingTensorData {
                next: name.clone(),
                written: self.next,
                declared: self.tensors.len(),
            });
        }
        self.out.flush()?;
        Ok(self.out)
    }
}

static ZEROS: [u8; 4096] = [0; 4096];

fn pad_len(pos: u64, alignment: u64) -> u64 {
    (alignment - pos % alignment) % alignment
}

struct EncodedHeader {
    bytes: Vec<u8>,
    tensors: Vec<(String, u64)>,
    alignment: u64,
}

fn encode_header(
    metadata: &[(String, Value)],
    tensors: &[TensorSpec],
) -> Result<EncodedHeader, GgufError> {
    let alignment = match metadata.iter().find(|(k, _)| k == KEY_ALIGNMENT) {
        None => DEFAULT_ALIGNMENT,
        Some((_, Value::U32(a))) => u64::from(*a),
        Some((_, v)) => {
            return Err(GgufError::WrongType {
                key: KEY_ALIGNMENT.to_owned(),
                expected: "u32",
                found: v.type_name(),
            })
        }
    };
    if !alignment.is_power_of_two() {
        return Err(GgufError::BadAlignment { alignment });
    }

    let mut b = Vec::new();
    b.extend_from_slice(MAGIC);
    put_u32(&mut b, WRITE_VERSION);
    put_u64(&mut b, tensors.len() as u64);
    put_u64(&mut b, metadata.len() as u64);

    let mut keys = HashSet::with_capacity(metadata.len());
    for (index, (key, value)) in metadata.iter().enumerate() {
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                index: index as u64,
                offset: b.len() as u64,
            });
        }
        if !keys.insert(key.as_str()) {
            return Err(GgufError::DuplicateKey { key: key.clone() });
        }
        if let Value::Array(a) = value {
            if a.depth() > MAX_ARRAY_DEPTH {
                return Err(GgufError::ArrayTooDeep {
                    key: key.clone(),
                    depth: a.depth(),
                    max: MAX_ARRAY_DEPTH,
                });
            }
        }
        put_str(&mut b, key);
        put_u32(&mut b, value.value_type() as u32);
        put_value(&mut b, value);
    }

    let mut names = HashSet::with_capacity(tensors.len());
    let mut sizes = Vec::with_capacity(tensors.len());
    let mut offset = 0u64;
    for spec in tensors {
        let n_bytes = spec.n_bytes()?;
        if !names.insert(spec.name.as_str()) {
            return Err(GgufError::DuplicateTensor {
                name: spec.name.clone(),
            });
        }
        put_str(&mut b, &spec.name);
        put_u32(&mut b, spec.dims.len() as u32);
        for &d in &spec.dims {
            put_u64(&mut b, d);
        }
        put_u32(&mut b, spec.ty.id());
        put_u64(&mut b, offset);
        sizes.push((spec.name.clone(), n_bytes));
        offset = n_bytes
            .checked_add(pad_len(n_bytes, alignment))
            .and_then(|padded| offset.checked_add(padded))
            .ok_or_else(|| GgufError::ByteSizeOverflow {
                tensor: spec.name.clone(),
                ty: spec.ty,
                dims: spec.dims.clone(),
            })?;
    }
    let padding = pad_len(b.len() as u64, alignment);
    b.resize(b.len() + padding as usize, 0);
    Ok(EncodedHeader {
        bytes: b,
        tensors: sizes,
        alignment,
    })
}

fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    put_u64(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// A value without its type id (which the caller wrote, or which an array's header implies).
fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::String(s) => put_str(b, s),
        Value::Array(a) => put_array(b, a),
        Value::U64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => b.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => b.extend_from_slice(&x.to_le_bytes()),
    }
}

/// Element type, count, elements; an element that is an array is written the same way, without
/// an `ARRAY` tag of its own.
fn put_array(b: &mut Vec<u8>, a: &Array) {
    fn each<T>(b: &mut Vec<u8>, v: &[T], mut f: impl FnMut(&mut Vec<u8>, &T)) {
        put_u64(b, v.len() as u64);
        for x in v {
            f(b, x);
        }
    }
    let ty: ValueType = a.elem_type();
    put_u32(b, ty as u32);
    match a {
        Array::U8(v) => each(b, v, |b, x| b.push(*x)),
        Array::I8(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::U16(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::I16(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::U32(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::I32(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::F32(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::Bool(v) => each(b, v, |b, x| b.push(u8::from(*x))),
        Array::String(v) => each(b, v, |b, x| put_str(b, x)),
        Array::Array(v) => each(b, v, put_array),
        Array::U64(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::I64(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
        Array::F64(v) => each(b, v, |b, x| b.extend_from_slice(&x.to_le_bytes())),
    }
}
