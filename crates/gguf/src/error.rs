//! One error type for reading and writing.
//!
//! A GGUF file is untrusted input, so a bad file is an ordinary outcome, not a bug: every problem the
//! reader can find has its own variant carrying the key, tensor name, offset or sizes involved, so
//! that a user can tell a truncated download from a buggy converter, and tests can assert which check
//! fired rather than only that something failed.

use std::path::PathBuf;

use crate::GgmlType;

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// Opening, mapping or creating the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The output file was refused or could not be created or committed.
    #[error(transparent)]
    Output(#[from] crate::OutputError),
    /// A write to the output of a [`crate::GgufWriter`] failed.
    #[error("writing GGUF output: {0}")]
    Write(#[from] std::io::Error),
    /// Any other error, while reading the file at `path` (returned by [`crate::GgufFile::open`]).
    ///
    /// Not a `#[source]`: the message already includes the inner one, and a report chain would
    /// print it twice. Use [`GgufError::root`] to match on the inner error.
    #[error("{}: {inner}", path.display())]
    InFile {
        path: PathBuf,
        inner: Box<GgufError>,
    },

    // ---- header ----
    #[error(
        "not a GGUF file: magic is {found:02x?} ({}), expected \"GGUF\"",
        String::from_utf8_lossy(found)
    )]
    BadMagic { found: [u8; 4] },
    #[error("GGUF version {version} is not supported (only versions 2 and 3 are)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "GGUF version reads as {version:#010x}: the file was written with the other byte order \
         (big-endian GGUF is not supported)"
    )]
    WrongEndianness { version: u32 },

    // ---- sizes that do not fit the file ----
    /// The file ends before a field that must be there.
    #[error(
        "truncated or corrupt file: {what} at offset {offset} needs {needed} bytes, \
         but only {available} remain"
    )]
    Truncated {
        what: String,
        offset: u64,
        needed: u64,
        available: u64,
    },
    /// A count (of kv pairs, tensors, array elements) that the rest of the file could not hold even if
    /// every item had its smallest encoding. Checked before anything is allocated for the items.
    #[error(
        "truncated or corrupt file: {what} at offset {offset} declares {count} items of at least \
         {min_item_bytes} bytes each, but only {available} bytes remain"
    )]
    CountTooLarge {
        what: String,
        offset: u64,
        count: u64,
        min_item_bytes: u64,
        available: u64,
    },

    // ---- metadata ----
    #[error("{what} at offset {offset} is not valid UTF-8")]
    InvalidUtf8 { what: String, offset: u64 },
    #[error("key of kv pair #{index} at offset {offset} is empty")]
    EmptyKey { index: u64, offset: u64 },
    #[error("duplicate metadata key '{key}'")]
    DuplicateKey { key: String },
    #[error("key '{key}' has unknown metadata value type {type_id} (at offset {offset})")]
    UnknownValueType {
        key: String,
        type_id: u32,
        offset: u64,
    },
    #[error("key '{key}': arrays nested {depth} deep, more than the allowed {max}")]
    ArrayTooDeep {
        key: String,
        depth: usize,
        max: usize,
    },
    #[error("general.alignment is {alignment}, but it must be a nonzero power of two")]
    BadAlignment { alignment: u64 },

    // ---- typed getters ----
    #[error("metadata key '{key}' not found")]
    MissingKey { key: String },
    #[error("metadata key '{key}' has type {found}, expected {expected}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("metadata key '{key}' has value {value}, which does not fit in {expected}")]
    OutOfRange {
        key: String,
        value: String,
        expected: &'static str,
    },

    // ---- tensor infos ----
    #[error("tensor name '{name}' is {len} bytes long; ggml allows at most {max}")]
    TensorNameTooLong {
        name: String,
        len: usize,
        max: usize,
    },
    #[error("duplicate tensor name '{name}'")]
    DuplicateTensor { name: String },
    #[error("tensor '{tensor}' has {n_dims} dimensions, expected 1 to 4")]
    BadDimCount { tensor: String, n_dims: u64 },
    #[error("tensor '{tensor}' dimension {index} is {value}, more than i64::MAX")]
    BadDim {
        tensor: String,
        index: usize,
        value: u64,
    },
    #[error("tensor '{tensor}' has shape {dims:?}, whose element count overflows i64")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },
    #[error(
        "tensor '{tensor}' of type {ty} with shape {dims:?} has a byte size that overflows u64"
    )]
    ByteSizeOverflow {
        tensor: String,
        ty: GgmlType,
        dims: Vec<u64>,
    },
    #[error("tensor '{tensor}' has unknown or removed ggml type id {type_id}")]
    UnknownGgmlType { tensor: String, type_id: u32 },
    #[error(
        "tensor '{tensor}' of type {ty} has rows of {row} elements, \
         not a multiple of the block size {block_size}"
    )]
    RowNotBlockMultiple {
        tensor: String,
        ty: GgmlType,
        row: u64,
        block_size: u64,
    },

    // ---- tensor data ----
    #[error(
        "tensor '{tensor}' data offset {offset} is not a multiple of the alignment {alignment}"
    )]
    MisalignedTensor {
        tensor: String,
        offset: u64,
        alignment: u64,
    },
    #[error(
        "tensor '{tensor}' data ({n_bytes} bytes at data offset {offset}, data section at {data_offset}) \
         extends past the end of the file ({file_size} bytes)"
    )]
    TensorOutOfBounds {
        tensor: String,
        offset: u64,
        n_bytes: u64,
        data_offset: u64,
        file_size: u64,
    },
    #[error(
        "tensor '{tensor}' data (bytes {start}..{end} of the data section) overlaps tensor \
         '{other}' (bytes {other_start}..{other_end})"
    )]
    TensorOverlap {
        tensor: String,
        start: u64,
        end: u64,
        other: String,
        other_start: u64,
        other_end: u64,
    },

    // ---- writer ----
    #[error("tensor '{tensor}': got {actual} bytes of data, expected {expected}")]
    TensorSizeMismatch {
        tensor: String,
        expected: u64,
        actual: u64,
    },
    #[error("data for more tensors than the {declared} declared in the header")]
    TooManyTensorData { declared: usize },
    #[error(
        "finished after data for {written} of {declared} tensors; tensor '{next}' has no data"
    )]
    MissingTensorData {
        next: String,
        written: usize,
        declared: usize,
    },
}

impl GgufError {
    /// The error itself, with the [`GgufError::InFile`] wrapper (which only adds the path) removed.
    pub fn root(&self) -> &GgufError {
        match self {
            GgufError::InFile { inner, .. } => inner.root(),
            e => e,
        }
    }

    /// Whether the error means the file ended too soon (or a length field is corrupt, which looks
    /// the same): [`GgufError::Truncated`], [`GgufError::CountTooLarge`] or a tensor whose data
    /// extends past the end.
    pub fn is_truncation(&self) -> bool {
        matches!(
            self.root(),
            GgufError::Truncated { .. }
                | GgufError::CountTooLarge { .. }
                | GgufError::TensorOutOfBounds { .. }
        )
    }
}
