//! An opened GGUF file: parsed metadata and tensor infos over memory-mapped (or owned) bytes.
//!
//! Tensor data is never copied: [`GgufFile::tensor_data`] hands out slices of the mapping, so a
//! multi-GB model costs page cache, not heap. All tensor ranges are checked once at open (aligned,
//! inside the file, not overlapping), which is what lets `tensor_data` return a plain slice.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;

use crate::parse::{self, Header};
use crate::value::{Array, Value};
use crate::{GgufError, TensorInfo};

enum Storage {
    Mmap(Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mmap(m) => m,
            Storage::Owned(v) => v,
        }
    }
}

/// A parsed GGUF file (version 2 or 3).
pub struct GgufFile {
    storage: Storage,
    version: u32,
    alignment: u64,
    data_offset: u64,
    metadata: Vec<(String, Value)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("file_size", &self.file_size())
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish_non_exhaustive()
    }
}

impl GgufFile {
    /// Memory-maps and parses the file at `path`. Errors other than I/O come wrapped in
    /// [`GgufError::InFile`] so the message names the file; [`GgufError::root`] unwraps them.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile, GgufError> {
        let path = path.as_ref();
        let io_err = |source| GgufError::Io {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let storage = if len == 0 {
            // Mapping an empty file fails on some platforms; it is simply too short.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the mapping is read-only, and we assume (as llama.cpp does) that nobody
            // truncates or rewrites the file while it is open; if they do, reads may fault
            // or see changed bytes. Every structural check is done on the mapped bytes, and the
            // data itself is only ever read as `&[u8]`, valid for any byte values.
            Storage::Mmap(unsafe { Mmap::map(&file) }.map_err(io_err)?)
        };
        GgufFile::from_storage(storage).map_err(|e| GgufError::InFile {
            path: path.to_owned(),
            inner: Box::new(e),
        })
    }

    /// Parses a file held in memory, with exactly the checks of [`GgufFile::open`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
        GgufFile::from_storage(Storage::Owned(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile, GgufError> {
        let bytes = storage.bytes();
        let header = parse::parse(bytes)?;
        check_tensor_ranges(&header, bytes.len() as u64)?;
        let Header {
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        } = header;
        Ok(GgufFile {
            storage,
            version,
            alignment,
            data_offset,
            metadata,
            key_index,
            tensors,
            tensor_index,
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of every tensor's offset (`general.alignment`, default 32).
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Absolute offset of the data section in the file.
    pub fn data_offset(&self) -> u64 {
        self.data_offset
    }

    pub fn file_size(&self) -> u64 {
        self.storage.bytes().len() as u64
    }

    /// The whole file.
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// All key/value pairs, in file order.
    pub fn metadata(&self) -> &[(String, Value)] {
        &self.metadata
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensor infos, in file order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// Says that tensor `t`'s bytes will not be read again soon (a backend copied them into a
    /// layout of its own): a mapped file's pages then leave this process's resident memory; a
    /// later read faults them back in from the file. No effect on a file read into memory.
    pub fn release(&self, t: &TensorInfo) {
        let Storage::Mmap(m) = &self.storage else {
            return;
        };
        let start = self.data_offset.checked_add(t.offset).map(usize::try_from);
        let (Some(Ok(start)), Ok(len)) = (start, usize::try_from(t.n_bytes)) else {
            return;
        };
        if start.checked_add(len).is_none_or(|end| end > m.len()) {
            return;
        }
        // SAFETY: the mapping is private and never written, so dropping its pages loses nothing:
        // the next read of them sees the file's bytes again, as before.
        let _ = unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, start, len) };
    }

    /// The bytes of a tensor's data, exactly `t.n_bytes` long, borrowed from the file.
    ///
    /// # Panics
    /// If `t` describes a range outside this file, i.e. it was not obtained from this file. Every
    /// `TensorInfo` this file hands out was range-checked when the file was opened.
    pub fn tensor_data(&self, t: &TensorInfo) -> &[u8] {
        let range = self
            .data_offset
            .checked_add(t.offset)
            .and_then(|start| Some(start..start.checked_add(t.n_bytes)?))
            .and_then(|r| Some(usize::try_from(r.start).ok()?..usize::try_from(r.end).ok()?));
        match range.and_then(|r| self.storage.bytes().get(r)) {
            Some(data) => data,
            None => panic!(
                "tensor '{}' ({} bytes at data offset {}) is not inside this {}-byte GGUF file",
                t.name,
                t.n_bytes,
                t.offset,
                self.file_size()
            ),
        }
    }
}

/// Each tensor's data must start at a multiple of the alignment, lie inside the file, and not
/// overlap another tensor's. Unlike gguf.cpp we do not insist that tensors are packed in info
/// order: gaps and reordering are harmless, and gguf-py reads such files.
fn check_tensor_ranges(header: &Header, file_size: u64) -> Result<(), GgufError> {
    let data_size = file_size.saturating_sub(header.data_offset);
    let mut ranges: Vec<(u64, u64, usize)> = Vec::with_capacity(header.tensors.len());
    for (i, t) in header.tensors.iter().enumerate() {
        if t.offset % header.alignment != 0 {
            return Err(GgufError::MisalignedTensor {
                tensor: t.name.clone(),
                offset: t.offset,
                alignment: header.alignment,
            });
        }
        match t.offset.checked_add(t.n_bytes) {
            Some(end) if end <= data_size => {
                if t.n_bytes > 0 {
                    ranges.push((t.offset, end, i));
                }
            }
            _ => {
                return Err(GgufError::TensorOutOfBounds {
                    tensor: t.name.clone(),
                    offset: t.offset,
                    n_bytes: t.n_bytes,
                    data_offset: header.data_offset,
                    file_size,
                })
            }
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let (a_start, a_end, a) = pair[0];
        let (b_start, b_end, b) = pair[1];
        if b_start < a_end {
            // Report the later tensor in file order as the offender.
            let (t, o) = if a < b { (b, a) } else { (a, b) };
            let (ts, te, os, oe) = if a < b {
                (b_start, b_end, a_start, a_end)
            } else {
                (a_start, a_end, b_start, b_end)
            };
            return Err(GgufError::TensorOverlap {
                tensor: header.tensors[t].name.clone(),
                start: ts,
                end: te,
                other: header.tensors[o].name.clone(),
                other_start: os,
                other_end: oe,
            });
        }
    }
    Ok(())
}

/// The typed getters. Integers convert between widths when the value fits (a converter may store
/// a count as u32 or u64); floats accept f32 and f64; everything else must match exactly.
impl GgufFile {
    fn typed<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, GgufError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match conv(v) {
            Some(x) => Ok(Some(x)),
            // An integer of the wrong range rather than the wrong kind.
            None if v.as_integer().is_some() && expected_is_integer(expected) => {
                Err(GgufError::OutOfRange {
                    key: key.to_owned(),
                    value: v.to_string(),
                    expected,
                })
            }
            None => Err(GgufError::WrongType {
                key: key.to_owned(),
                expected,
                found: v.type_name(),
            }),
        }
    }

    fn required<'a, T>(
        &'a self,
        key: &str,
        expected: &'static str,
        conv: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<T, GgufError> {
        self.typed(key, expected, conv)?
            .ok_or_else(|| GgufError::MissingKey {
                key: key.to_owned(),
            })
    }

    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        self.required(key, "string", Value::as_str)
    }
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        self.required(key, "u32", Value::as_u32)
    }
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        self.required(key, "u64", Value::as_u64)
    }
    pub fn get_i64(&self, key: &str) -> Result<i64, GgufError> {
        self.required(key, "i64", Value::as_i64)
    }
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        self.required(key, "f32", Value::as_f32)
    }
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        self.required(key, "bool", Value::as_bool)
    }
    pub fn get_array(&self, key: &str) -> Result<&Array, GgufError> {
        self.required(key, "array", Value::as_array)
    }
    pub fn get_str_array(&self, key: &str) -> Result<&[String], GgufError> {
        self.required(key, "array[string]", Value::as_str_array)
    }
    pub fn get_f32_array(&self, key: &str) -> Result<&[f32], GgufError> {
        self.required(key, "array[f32]", Value::as_f32_array)
    }
    pub fn get_i32_array(&self, key: &str) -> Result<&[i32], GgufError> {
        self.required(key, "array[i32]", Value::as_i32_array)
    }

    pub fn opt_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        self.typed(key, "string", Value::as_str)
    }
    pub fn opt_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.typed(key, "u32", Value::as_u32)
    }
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.typed(key, "u64", Value::as_u64)
    }
    pub fn opt_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.typed(key, "i64", Value::as_i64)
    }
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        self.typed(key, "f32", Value::as_f32)
    }
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        self.typed(key, "bool", Value::as_bool)
    }
    pub fn opt_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        self.typed(key, "array", Value::as_array)
    }
    pub fn opt_str_array(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        self.typed(key, "array[string]", Value::as_str_array)
    }
    pub fn opt_f32_array(&self, key: &str) -> Result<Option<&[f32]>, GgufError> {
        self.typed(key, "array[f32]", Value::as_f32_array)
    }
    pub fn opt_i32_array(&self, key: &str) -> Result<Option<&[i32]>, GgufError> {
        self.typed(key, "array[i32]", Value::as_i32_array)
    }
}

fn expected_is_integer(expected: &str) -> bool {
    matches!(expected, "u32" | "u64" | "i64")
}
