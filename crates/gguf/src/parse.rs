//! Parsing the header, metadata and tensor infos out of the file's bytes.
//!
//! The bytes are hostile. Everything goes through [`Cursor`], which never reads past the end and
//! reports where it was and what it was reading when the bytes ran out. Before anything is
//! allocated for `count` items, `count * (smallest encoding of one item)` is checked against the
//! bytes that remain, so no allocation can be larger than a small multiple of the file size, however
//! large the numbers in the file are.

use std::collections::HashMap;

use crate::tensor::{self, TensorInfo};
use crate::value::{Array, Value, ValueType};
use crate::{GgmlType, GgufError};

pub(crate) const MAGIC: &[u8; 4] = b"GGUF";
pub(crate) use crate::keys::GENERAL_ALIGNMENT as KEY_ALIGNMENT;
pub(crate) use crate::DEFAULT_ALIGNMENT;
/// Arrays may contain arrays; ggml itself allows no nesting, gguf-py any. We allow a little, and
/// bound it so that a file of nested array headers cannot exhaust the stack.
pub const MAX_ARRAY_DEPTH: usize = 8;

/// Smallest encoding of a kv pair: key length, a 1-byte key, value type, a 1-byte value.
const MIN_KV_BYTES: u64 = 8 + 1 + 4 + 1;
/// Smallest encoding of a tensor info: name length, empty name, n_dims, one dim, type, offset.
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;

/// Everything in a GGUF file before the tensor data.
#[derive(Debug)]
pub(crate) struct Header {
    pub version: u32,
    pub alignment: u64,
    pub data_offset: u64,
    pub metadata: Vec<(String, Value)>,
    pub key_index: HashMap<String, usize>,
    pub tensors: Vec<TensorInfo>,
    pub tensor_index: HashMap<String, usize>,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.bytes.len() - self.pos) as u64
    }

    /// The next `n` bytes; `what` describes them for the error if the file ends first.
    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8], GgufError> {
        if n > self.remaining() {
            return Err(GgufError::Truncated {
                what: what(),
                offset: self.offset(),
                needed: n,
                available: self.remaining(),
            });
        }
        // n <= remaining <= usize::MAX, so the cast and the addition are exact.
        let end = self.pos + n as usize;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, GgufError> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, GgufError> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A u64 length followed by that many bytes of UTF-8.
    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, GgufError> {
        let len = self.u64(&|| format!("length of {}", what()))?;
        let start = self.offset();
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 {
            what: what(),
            offset: start,
        })
    }

    /// Checks that `count` items of at least `min_bytes` each could fit in the rest of the file.
    fn check_count(
        &self,
        count: u64,
        min_bytes: u64,
        at: u64,
        what: &dyn Fn() -> String,
    ) -> Result<usize, GgufError> {
        match count.checked_mul(min_bytes) {
            Some(total) if total <= self.remaining() => Ok(count as usize),
            _ => Err(GgufError::CountTooLarge {
                what: what(),
                offset: at,
                count,
                min_item_bytes: min_bytes,
                available: self.remaining(),
            }),
        }
    }
}

pub(crate) fn parse(bytes: &[u8]) -> Result<Header, GgufError> {
    let mut cur = Cursor { bytes, pos: 0 };
    let header = || "header".to_owned();

    let magic: [u8; 4] = cur.array(&header)?;
    if &magic != MAGIC {
        return Err(GgufError::BadMagic { found: magic });
    }
    let version = cur.u32(&header)?;
    if version != 0 && version & 0xFFFF == 0 {
        return Err(GgufError::WrongEndianness { version });
    }
    if !(2..=3).contains(&version) {
        return Err(GgufError::UnsupportedVersion { version });
    }
    let n_tensors_at = cur.offset();
    let n_tensors = cur.u64(&header)?;
    let n_kv_at = cur.offset();
    let n_kv = cur.u64(&header)?;
    let n_kv = cur.check_count(n_kv, MIN_KV_BYTES, n_kv_at, &|| "kv count".to_owned())?;

    let mut metadata = Vec::with_capacity(n_kv);
    let mut key_index = HashMap::with_capacity(n_kv);
    for index in 0..n_kv as u64 {
        let key_at = cur.offset();
        let key = cur.string(&|| format!("key of kv pair #{index}"))?;
        if key.is_empty() {
            return Err(GgufError::EmptyKey {
                index,
                offset: key_at,
            });
        }
        if key_index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        let value = read_value(&mut cur, &key)?;
        key_index.insert(key.clone(), metadata.len());
        metadata.push((key, value));
    }

    let alignment = match key_index.get(KEY_ALIGNMENT).map(|&i| &metadata[i].1) {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) => u64::from(*a),
        Some(v) => {
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

    let n_tensors = cur.check_count(n_tensors, MIN_TENSOR_INFO_BYTES, n_tensors_at, &|| {
        "tensor count".to_owned()
    })?;
    let mut tensors = Vec::with_capacity(n_tensors);
    let mut tensor_index = HashMap::with_capacity(n_tensors);
    for index in 0..n_tensors {
        let info = read_tensor_info(&mut cur, index)?;
        if tensor_index.contains_key(&info.name) {
            return Err(GgufError::DuplicateTensor { name: info.name });
        }
        tensor_index.insert(info.name.clone(), tensors.len());
        tensors.push(info);
    }

    // As in gguf.cpp: the data section starts at the next multiple of the alignment, and a file
    // without tensors need not contain that padding.
    let mut data_offset = cur.offset();
    if n_tensors > 0 {
        let padding = (alignment - data_offset % alignment) % alignment;
        cur.take(padding, &|| "padding before the data section".to_owned())?;
        data_offset = cur.offset();
    }

    Ok(Header {
        version,
        alignment,
        data_offset,
        metadata,
        key_index,
        tensors,
        tensor_index,
    })
}

fn read_value(cur: &mut Cursor<'_>, key: &str) -> Result<Value, GgufError> {
    let what = || format!("value of key '{key}'");
    let type_at = cur.offset();
    let type_id = cur.u32(&|| format!("type of key '{key}'"))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        type_id,
        offset: type_at,
    })?;
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.array::<1>(&what)?[0]),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(&what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(&what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(&what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(&what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(&what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(&what)?)),
        // As in gguf.cpp, any nonzero byte is true.
        ValueType::Bool => Value::Bool(cur.array::<1>(&what)?[0] != 0),
        ValueType::String => Value::String(cur.string(&what)?),
        ValueType::Array => Value::Array(read_array(cur, key, 1)?),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(&what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(&what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(&what)?)),
    })
}

/// Decodes `count` fixed-size little-endian values, already bounds-checked as one slice.
fn fixed<const N: usize, T>(
    cur: &mut Cursor<'_>,
    count: usize,
    what: &dyn Fn() -> String,
    from: fn([u8; N]) -> T,
) -> Result<Vec<T>, GgufError> {
    // count * N <= remaining was checked by the caller, so this cannot overflow.
    let bytes = cur.take(count as u64 * N as u64, what)?;
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            from(a)
        })
        .collect())
}

/// An array value (after its `ARRAY` type id): element type, count, elements. `depth` is 1 for a
/// top-level array.
fn read_array(cur: &mut Cursor<'_>, key: &str, depth: usize) -> Result<Array, GgufError> {
    if depth > MAX_ARRAY_DEPTH {
        return Err(GgufError::ArrayTooDeep {
            key: key.to_owned(),
            depth,
            max: MAX_ARRAY_DEPTH,
        });
    }
    let what = || format!("array of key '{key}'");
    let type_at = cur.offset();
    let type_id = cur.u32(&|| format!("element type of {}", what()))?;
    let ty = ValueType::from_id(type_id).ok_or_else(|| GgufError::UnknownValueType {
        key: key.to_owned(),
        type_id,
        offset: type_at,
    })?;
    let count_at = cur.offset();
    let count = cur.u64(&|| format!("length of {}", what()))?;
    let n = cur.check_count(count, ty.min_encoded_size(), count_at, &what)?;
    Ok(match ty {
        ValueType::U8 => Array::U8(fixed(cur, n, &what, |[b]| b)?),
        ValueType::I8 => Array::I8(fixed(cur, n, &what, i8::from_le_bytes)?),
        ValueType::U16 => Array::U16(fixed(cur, n, &what, u16::from_le_bytes)?),
        ValueType::I16 => Array::I16(fixed(cur, n, &what, i16::from_le_bytes)?),
        ValueType::U32 => Array::U32(fixed(cur, n, &what, u32::from_le_bytes)?),
        ValueType::I32 => Array::I32(fixed(cur, n, &what, i32::from_le_bytes)?),
        ValueType::F32 => Array::F32(fixed(cur, n, &what, f32::from_le_bytes)?),
        ValueType::Bool => Array::Bool(fixed(cur, n, &what, |[b]| b != 0)?),
        ValueType::U64 => Array::U64(fixed(cur, n, &what, u64::from_le_bytes)?),
        ValueType::I64 => Array::I64(fixed(cur, n, &what, i64::from_le_bytes)?),
        ValueType::F64 => Array::F64(fixed(cur, n, &what, f64::from_le_bytes)?),
        ValueType::String => {
            let mut v = Vec::with_capacity(n);
            for i in 0..n {
                v.push(cur.string(&|| format!("element {i} of array of key '{key}'"))?);
            }
            Array::String(v)
        }
        ValueType::Array => {
            let mut v = Vec::with_capacity(n);
            // Each element is an array value without its own ARRAY tag: element type, count, data.
            for _ in 0..n {
                v.push(read_array(cur, key, depth + 1)?);
            }
            Array::Array(v)
        }
    })
}

fn read_tensor_info(cur: &mut Cursor<'_>, index: usize) -> Result<TensorInfo, GgufError> {
    let name = cur.string(&|| format!("name of tensor #{index}"))?;
    tensor::check_name(&name)?;
    let what = || format!("info of tensor '{name}'");
    let n_dims = cur.u32(&what)?;
    tensor::check_dim_count(&name, n_dims.into())?;
    let mut dims = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        dims.push(cur.u64(&what)?);
    }
    let type_id = cur.u32(&what)?;
    let ty = GgmlType::from_id(type_id).ok_or_else(|| GgufError::UnknownGgmlType {
        tensor: name.clone(),
        type_id,
    })?;
    let (n_elements, n_bytes) = tensor::layout(&name, &dims, ty)?;
    let offset = cur.u64(&what)?;
    Ok(TensorInfo {
        name,
        dims,
        ty,
        offset,
        n_elements,
        n_bytes,
    })
}
