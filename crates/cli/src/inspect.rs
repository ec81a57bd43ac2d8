//! `inspect`: what a GGUF file holds, from its header alone (no tensor data is read).

use std::fmt::Write as _;
use std::path::PathBuf;

use clap::Args;
use rustorch_gguf::{GgufFile, Value};
use rustorch_model::ftype::file_type_name;
use serde::Serialize;

use crate::common;

#[derive(Args)]
pub struct InspectArgs {
    /// GGUF file
    file: PathBuf,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
    /// Also print every metadata key and value
    #[arg(long)]
    metadata: bool,
}

#[derive(Serialize)]
struct TensorRow {
    name: String,
    shape: Vec<u64>,
    #[serde(rename = "type")]
    ty: String,
    bytes: u64,
}

#[derive(Serialize)]
struct Report {
    file: String,
    gguf_version: u32,
    architecture: Option<String>,
    name: Option<String>,
    parameters: u64,
    file_type: Option<String>,
    context_length: Option<u64>,
    tokenizer: Option<String>,
    vocab_size: Option<usize>,
    tensor_bytes: u64,
    tensors: Vec<TensorRow>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Vec<(String, String)>>,
}

fn report(path: &str, f: &GgufFile, with_metadata: bool) -> anyhow::Result<Report> {
    let arch = f.opt_str("general.architecture")?.map(str::to_string);
    let context_length = match &arch {
        Some(a) => f.opt_u64(&format!("{a}.context_length"))?,
        None => None,
    };
    let file_type = f
        .opt_u32("general.file_type")?
        .map(|id| format!("{} ({id})", file_type_name(id)));
    let tensors: Vec<TensorRow> = f
        .tensors()
        .iter()
        .map(|t| TensorRow {
            name: t.name.clone(),
            shape: t.dims.clone(),
            ty: t.ty.name().to_string(),
            bytes: t.n_bytes,
        })
        .collect();
    Ok(Report {
        file: path.to_string(),
        gguf_version: f.version(),
        architecture: arch,
        name: f.opt_str("general.name")?.map(str::to_string),
        parameters: f.tensors().iter().map(|t| t.n_elements).sum(),
        file_type,
        context_length,
        tokenizer: f.opt_str("tokenizer.ggml.model")?.map(str::to_string),
        vocab_size: f
            .opt_str_array("tokenizer.ggml.tokens")?
            .map(<[String]>::len),
        tensor_bytes: f.tensors().iter().map(|t| t.n_bytes).sum(),
        tensors,
        metadata: with_metadata.then(|| {
            f.metadata()
                .iter()
                .map(|(k, v)| (k.clone(), short(v)))
                .collect()
        }),
    })
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 120 {
        let cut: String = s.chars().take(117).collect();
        format!("{cut}...")
    } else {
        s
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

pub fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let file = common::open(&args.file)?;
    let r = report(&args.file.display().to_string(), &file, args.metadata)?;
    if args.json {
        let json = serde_json::to_string_pretty(&r)?;
        common::outln!("{}", common::printable_json(&json));
        return Ok(());
    }
    // Names and values come from the file: each is escaped before it reaches a terminal.
    let p = |s: &str| common::printable(s).into_owned();
    let mut text = String::new();
    let na = || "-".to_string();
    writeln!(text, "file:           {}", p(&r.file))?;
    writeln!(text, "gguf version:   {}", r.gguf_version)?;
    writeln!(
        text,
        "architecture:   {}",
        r.architecture.as_deref().map_or_else(na, p)
    )?;
    writeln!(
        text,
        "name:           {}",
        r.name.as_deref().map_or_else(na, p)
    )?;
    writeln!(
        text,
        "parameters:     {} ({:.1}M)",
        r.parameters,
        r.parameters as f64 / 1e6
    )?;
    writeln!(
        text,
        "file type:      {}",
        r.file_type.as_deref().map_or_else(na, p)
    )?;
    writeln!(
        text,
        "context length: {}",
        r.context_length.map_or_else(na, |c| c.to_string())
    )?;
    writeln!(
        text,
        "tokenizer:      {}",
        r.tokenizer.as_deref().map_or_else(na, p)
    )?;
    writeln!(
        text,
        "vocab size:     {}",
        r.vocab_size.map_or_else(na, |c| c.to_string())
    )?;
    writeln!(text, "tensor data:    {}", human(r.tensor_bytes))?;
    if let Some(md) = &r.metadata {
        writeln!(text, "\nmetadata ({} keys):", md.len())?;
        for (k, v) in md {
            writeln!(text, "  {:<44} {}", p(k), p(v))?;
        }
    }
    let w = r
        .tensors
        .iter()
        .map(|t| p(&t.name).chars().count())
        .max()
        .unwrap_or(4)
        .max(4);
    writeln!(text, "\n{} tensors:", r.tensors.len())?;
    writeln!(
        text,
        "  {:<w$}  {:<20}  {:<7}  {:>12}",
        "name", "shape", "type", "bytes"
    )?;
    for t in &r.tensors {
        let shape = format!("{:?}", t.shape);
        writeln!(
            text,
            "  {:<w$}  {:<20}  {:<7}  {:>12}",
            p(&t.name),
            shape,
            t.ty,
            t.bytes
        )?;
    }
    common::outln!("{}", text.trim_end_matches('\n'));
    Ok(())
}
