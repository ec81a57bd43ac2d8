//! Requantizing a GGUF file to another file type, as llama-quantize does: each tensor's type is
//! chosen by [`TypeChooser`], its rows are dequantized to f32 and quantized with the reference
//! quantizers of `rustorch-quant`, and a tensor already of its chosen type is copied unchanged.

use std::io::Write;

use rayon::prelude::*;
use rustorch_gguf::{GgmlType, GgufFile, GgufWriter, OutputFile, TensorSpec, Value};
use rustorch_quant::dispatch;

use crate::convert::ftype::{llama_tensor_order, FileType, ModelFacts, TensorFacts, TypeChooser};
use crate::ModelError;

/// One tensor of the output file and what happens to it.
#[derive(Debug, Clone)]
pub struct TensorPlan {
    /// Index into the input file's tensor list.
    pub input: usize,
    pub name: String,
    pub from: GgmlType,
    pub to: GgmlType,
    pub dims: Vec<u64>,
}

/// The whole plan: output tensors in llama-quantize's order, the output metadata.
#[derive(Debug, Clone)]
pub struct QuantizePlan {
    pub tensors: Vec<TensorPlan>,
    pub metadata: Vec<(String, Value)>,
    pub n_fallback: usize,
}

/// Reads what the type choice needs from the file's metadata.
pub fn model_facts(file: &GgufFile) -> Result<ModelFacts, ModelError> {
    let arch = file.get_str("general.architecture")?.to_string();
    let key = |k: &str| format!("{arch}.{k}");
    let n_layer = file.get_u32(&key("block_count"))? as usize;
    let n_head = file.opt_u32(&key("attention.head_count"))?.unwrap_or(0) as usize;
    let n_head_kv = file
        .opt_u32(&key("attention.head_count_kv"))?
        .map_or(n_head, |v| v as usize);
    let n_expert = file.opt_u32(&key("expert_count"))?.unwrap_or(0) as usize;
    Ok(ModelFacts {
        arch,
        n_layer,
        n_head,
        n_head_kv,
        n_expert,
    })
}

/// Decides every tensor's output type without touching tensor data. Refuses to requantize an
/// already quantized tensor unless `allow_requantize`.
pub fn plan(
    file: &GgufFile,
    ftype: FileType,
    allow_requantize: bool,
) -> Result<QuantizePlan, ModelError> {
    let facts = model_facts(file)?;
    let infos = file.tensors();
    let names: Vec<&str> = infos.iter().map(|t| t.name.as_str()).collect();
    let mut chooser = TypeChooser::new(ftype, facts, names.iter().copied());
    let mut tensors = Vec::with_capacity(infos.len());
    for i in llama_tensor_order(&names) {
        let t = &infos[i];
        let to = chooser.choose(&TensorFacts {
            name: &t.name,
            dims: &t.dims,
            ty: t.ty,
        });
        if to != t.ty {
            if t.ty.is_quantized() && !allow_requantize {
                return Err(ModelError::Quantize(format!(
                    "tensor {} is already quantized ({}); requantizing from it is disabled \
                     (pass --allow-requantize to allow it)",
                    t.name, t.ty
                )));
            }
            if !dispatch::is_supported(t.ty) && t.ty != GgmlType::F32 {
                return Err(ModelError::Quantize(format!(
                    "tensor {}: cannot convert from type {}",
                    t.name, t.ty
                )));
            }
            if !dispatch::is_supported(to) {
                return Err(ModelError::Quantize(format!(
                    "tensor {}: cannot quantize to type {to}",
                    t.name
                )));
            }
        }
        // As llama-quantize: the Q2_K tensors of a Q2_K_S file are only usable with an importance
        // matrix, which `quantize` does not take.
        if ftype == FileType::Q2_K_S
            && to == GgmlType::Q2_K
            && t.name != "token_embd.weight"
            && t.name != "output.weight"
        {
            return Err(ModelError::Quantize(format!(
                "Q2_K_S needs an importance matrix (tensor {} would be Q2_K), which rustorch quantize \
                 does not take; use Q2_K",
                t.name
            )));
        }
        tensors.push(TensorPlan {
            input: i,
            name: t.name.clone(),
            from: t.ty,
            to,
            dims: t.dims.clone(),
        });
    }

    // Metadata: the input's, in order, without split keys; then quantization_version and file_type
    // re-set, which (as in gguf's set_val) moves them to the end.
    let mut metadata: Vec<(String, Value)> = file
        .metadata()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "split.no"
                    | "split.count"
                    | "split.tensors.count"
                    | "general.quantization_version"
                    | "general.file_type"
            )
        })
        .cloned()
        .collect();
    metadata.push(("general.quantization_version".into(), Value::U32(2)));
    metadata.push(("general.file_type".into(), Value::U32(ftype.id())));
    Ok(QuantizePlan {
        tensors,
        metadata,
        n_fallback: chooser.n_fallback,
    })
}

/// Rows converted per parallel work item: enough to amortize the hand-off, few enough to balance.
const ROWS_PER_TASK: usize = 16;

/// Converts one tensor's data (`src`, of type `from`) to `to`, on the current rayon pool.
pub fn convert_tensor(
    src: &[u8],
    from: GgmlType,
    to: GgmlType,
    row_len: usize,
) -> Result<Vec<u8>, ModelError> {
    let bad =
        |what: &str| ModelError::Quantize(format!("{what} (row length {row_len}, {from} -> {to})"));
    let src_row = from
        .row_bytes(row_len as u64)
        .ok_or_else(|| bad("row is not a whole number of blocks"))? as usize;
    let dst_row = to
        .row_bytes(row_len as u64)
        .ok_or_else(|| bad("row is not a whole number of blocks"))? as usize;
    if src_row == 0 || !src.len().is_multiple_of(src_row) {
        return Err(bad("tensor data is not a whole number of rows"));
    }
    let n_rows = src.len() / src_row;
    let mut out = vec![0u8; n_rows * dst_row];
    out.par_chunks_mut(dst_row * ROWS_PER_TASK)
        .zip(src.par_chunks(src_row * ROWS_PER_TASK))
        .try_for_each_init(
            || vec![0f32; row_len],
            |row, (dst, src)| -> Result<(), ModelError> {
                for (d, s) in dst.chunks_mut(dst_row).zip(src.chunks(src_row)) {
                    if from == GgmlType::F32 {
                        for (x, b) in row.iter_mut().zip(s.chunks_exact(4)) {
                            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                        }
                    } else {
                        dispatch::dequantize_row(from, s, row).map_err(|e| bad(&e.to_string()))?;
                    }
                    if to == GgmlType::F32 {
                        for (b, x) in d.chunks_exact_mut(4).zip(row.iter()) {
                            b.copy_from_slice(&x.to_le_bytes());
                        }
                    } else {
                        dispatch::quantize_row(to, row, d).map_err(|e| bad(&e.to_string()))?;
                    }
                }
                Ok(())
            },
        )?;
    Ok(out)
}

/// [`write`] to an [`OutputFile`] (created with the input among the files it must not be),
/// committed when complete.
pub fn write_file(
    file: &GgufFile,
    plan: &QuantizePlan,
    out: OutputFile,
    progress: impl FnMut(u64, u64),
) -> Result<(), ModelError> {
    let out = write(file, plan, out.buffered(), progress)?;
    Ok(OutputFile::commit_buffered(out)?)
}

/// Writes `plan` to `out`, converting tensor data from `file`, and returns `out` flushed.
/// `progress(done, total)` is called after each tensor with byte counts of the input.
pub fn write<W: Write>(
    file: &GgufFile,
    plan: &QuantizePlan,
    out: W,
    mut progress: impl FnMut(u64, u64),
) -> Result<W, ModelError> {
    let specs: Vec<TensorSpec> = plan
        .tensors
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.to,
        })
        .collect();
    let mut writer = GgufWriter::new(out, &plan.metadata, &specs)?;
    let infos = file.tensors();
    let total: u64 = plan.tensors.iter().map(|t| infos[t.input].n_bytes).sum();
    let mut done = 0u64;
    for t in &plan.tensors {
        let info = &infos[t.input];
        let data = file.tensor_data(info);
        if t.from == t.to {
            writer.write_tensor_data(data)?;
        } else {
            let converted = convert_tensor(data, t.from, t.to, t.dims[0] as usize)
                .map_err(|e| ModelError::Quantize(format!("tensor {}: {e}", t.name)))?;
            writer.write_tensor_data(&converted)?;
        }
        done += info.n_bytes;
        progress(done, total);
    }
    Ok(writer.finish()?)
}
