//! Tensor descriptions, and the shape checks the reader and the writer share.
//!
//! The checks are ggml's (`gguf.cpp`): at most 4 dimensions, each and their product representable
//! as an `i64`, a row a whole number of blocks. Doing them in one function means a file we write is
//! exactly a file we (and llama.cpp) accept.

use crate::{GgmlType, GgufError};

/// `GGML_MAX_DIMS`.
pub const MAX_DIMS: usize = 4;
/// ggml stores tensor names in a `char[GGML_MAX_NAME]` with a terminating NUL.
pub const MAX_NAME_BYTES: usize = 63;

/// A tensor as described in the file's tensor-info section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (`ne[0]`).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the tensor's data, relative to the data section ([`crate::GgufFile::data_offset`]).
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    pub fn n_dims(&self) -> usize {
        self.dims.len()
    }

    /// Number of elements in one row (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims[0]
    }

    /// Number of rows: the product of all dimensions but the first.
    pub fn n_rows(&self) -> u64 {
        // Cannot overflow: the full product was checked when the tensor was read.
        self.dims[1..].iter().product()
    }
}

/// A tensor to be written by [`crate::GgufWriter`]; its offset is computed by the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    /// ggml order: `dims[0]` is the row length.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, dims: &[u64], ty: GgmlType) -> TensorSpec {
        TensorSpec {
            name: name.into(),
            dims: dims.to_vec(),
            ty,
        }
    }

    /// Byte size of this tensor's data, after the same checks the reader does.
    pub fn n_bytes(&self) -> Result<u64, GgufError> {
        check_name(&self.name)?;
        check_dim_count(&self.name, self.dims.len() as u64)?;
        Ok(layout(&self.name, &self.dims, self.ty)?.1)
    }
}

pub(crate) fn check_name(name: &str) -> Result<(), GgufError> {
    if name.len() > MAX_NAME_BYTES {
        return Err(GgufError::TensorNameTooLong {
            name: name.to_owned(),
            len: name.len(),
            max: MAX_NAME_BYTES,
        });
    }
    Ok(())
}

/// ggml itself accepts 0 dimensions (a scalar); GGUF writers never produce it, so we treat it as
/// corruption.
pub(crate) fn check_dim_count(name: &str, n_dims: u64) -> Result<(), GgufError> {
    if n_dims == 0 || n_dims > MAX_DIMS as u64 {
        return Err(GgufError::BadDimCount {
            tensor: name.to_owned(),
            n_dims,
        });
    }
    Ok(())
}

/// `(n_elements, n_bytes)` of a tensor, or the reason the shape is invalid. Zero dimensions are
/// allowed (as in ggml): such a tensor has no elements and no bytes.
pub(crate) fn layout(name: &str, dims: &[u64], ty: GgmlType) -> Result<(u64, u64), GgufError> {
    for (index, &value) in dims.iter().enumerate() {
        if value > i64::MAX as u64 {
            return Err(GgufError::BadDim {
                tensor: name.to_owned(),
                index,
                value,
            });
        }
    }
    let n_elements = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= i64::MAX as u64)
        .ok_or_else(|| GgufError::ShapeOverflow {
            tensor: name.to_owned(),
            dims: dims.to_vec(),
        })?;
    let row = dims.first().copied().unwrap_or(1);
    let block_size = ty.block_size() as u64;
    if row % block_size != 0 {
        return Err(GgufError::RowNotBlockMultiple {
            tensor: name.to_owned(),
            ty,
            row,
            block_size,
        });
    }
    // row % block_size == 0 implies n_elements % block_size == 0 (or n_elements == 0).
    let n_bytes = (n_elements / block_size)
        .checked_mul(ty.type_size() as u64)
        .ok_or_else(|| GgufError::ByteSizeOverflow {
            tensor: name.to_owned(),
            ty,
            dims: dims.to_vec(),
        })?;
    Ok((n_elements, n_bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_checks() {
        assert_eq!(
            layout("t", &[64, 3], GgmlType::Q4_0).unwrap(),
            (192, 6 * 18)
        );
        assert_eq!(layout("t", &[0, 3], GgmlType::Q4_K).unwrap(), (0, 0));
        assert_eq!(layout("t", &[256, 0], GgmlType::Q4_K).unwrap(), (0, 0));
        assert!(matches!(
            layout("t", &[33], GgmlType::Q4_0),
            Err(GgufError::RowNotBlockMultiple {
                row: 33,
                block_size: 32,
                ..
            })
        ));
        assert!(matches!(
            layout("t", &[1 << 32, 1 << 31], GgmlType::F32),
            Err(GgufError::ShapeOverflow { .. })
        ));
        assert!(matches!(
            layout("t", &[1 << 62], GgmlType::F64),
            Err(GgufError::ByteSizeOverflow { .. })
        ));
        assert!(matches!(
            layout("t", &[u64::MAX], GgmlType::F32),
            Err(GgufError::BadDim { index: 0, .. })
        ));
        // A zero anywhere makes the product 0, as in ggml, even if the others are huge.
        assert_eq!(
            layout("t", &[i64::MAX as u64, 0], GgmlType::I8).unwrap(),
            (0, 0)
        );
    }
}
