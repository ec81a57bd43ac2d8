//! `quantize`: llama-quantize's per-tensor type choice and ggml's reference quantizers.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rustorch_gguf::OutputFile;
use rustorch_model::ftype::FileType;
use rustorch_model::quantize;

use crate::common;

#[derive(Args)]
pub struct QuantizeArgs {
    /// Input GGUF file
    input: PathBuf,
    /// Output GGUF file
    output: PathBuf,
    /// File type: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q2_K Q2_K_S Q3_K_S Q3_K_M Q3_K_L Q4_K_S Q4_K_M Q5_K_S Q5_K_M Q6_K F16 BF16 F32
    #[arg(value_parser = parse_ftype)]
    ftype: FileType,
    /// Allow requantizing tensors that are already quantized (quality suffers)
    #[arg(long)]
    allow_requantize: bool,
    /// Threads [default: the number of physical cores]
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

fn parse_ftype(s: &str) -> Result<FileType, String> {
    FileType::parse(s).ok_or_else(|| {
        let names: Vec<&str> = FileType::ALL.iter().map(|t| t.name()).collect();
        format!(
            "unknown file type '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

pub fn quantize(args: QuantizeArgs) -> anyhow::Result<()> {
    common::init_threads(args.threads)?;
    common::clean_up_outputs_on_signals()?;
    let file = common::open(&args.input)?;
    let plan = quantize::plan(&file, args.ftype, args.allow_requantize)
        .with_context(|| args.input.display().to_string())?;
    let out = OutputFile::create(&args.output, &[&args.input])?;
    let converted = plan.tensors.iter().filter(|t| t.from != t.to).count();
    eprintln!(
        "quantizing {} -> {} as {} ({} of {} tensors converted, {} row-length fallbacks)",
        args.input.display(),
        args.output.display(),
        args.ftype.name(),
        converted,
        plan.tensors.len(),
        plan.n_fallback
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap(),
    );
    let result = quantize::write_file(&file, &plan, out, |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    });
    bar.finish_and_clear();
    result?;
    let in_bytes: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let out_bytes = std::fs::metadata(&args.output)?.len();
    eprintln!(
        "done: tensor data {:.2} MiB -> file {:.2} MiB",
        in_bytes as f64 / 1048576.0,
        out_bytes as f64 / 1048576.0
    );
    Ok(())
}
