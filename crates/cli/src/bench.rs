//! `bench` (llama-bench's pp/tg tests and table, its JSON field names) and `synth`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rustorch_model::ftype::FileType;
use rustorch_model::synth::{Shape, SHAPES};
use rustorch_model::Logits;
use serde::Serialize;

use crate::common::{self, ModelArg, RuntimeArgs};

#[derive(Args)]
pub struct BenchArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Prompt tokens of the prompt-processing test (0: skip it)
    #[arg(short = 'p', long = "n-prompt", default_value_t = 128)]
    n_prompt: usize,
    /// Tokens of the generation test (0: skip it)
    #[arg(short = 'n', long = "n-gen", default_value_t = 64)]
    n_gen: usize,
    /// Repetitions of each test (after one warm-up run)
    #[arg(short = 'r', long = "repetitions", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    reps: u32,
    /// Print a JSON list with llama-bench's `-o json` field names
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Serialize)]
struct TestResult {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    backend: String,
    n_threads: usize,
    n_prompt: usize,
    n_gen: usize,
    avg_ts: f64,
    stddev_ts: f64,
    samples_ts: Vec<f64>,
    samples_ns: Vec<u64>,
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    args.runtime.init_threads()?;
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: both -p and -n are 0");
    }
    let path = args.model.path()?;
    let file = common::open(&path)?;
    let model_size: u64 = file.tensors().iter().map(|t| t.n_bytes).sum();
    let n_params: u64 = file.tensors().iter().map(|t| t.n_elements).sum();
    let ftype = file
        .opt_u32("general.file_type")?
        .map(rustorch_model::ftype::file_type_name)
        .unwrap_or("?");
    let arch = file
        .opt_str("general.architecture")?
        .unwrap_or("?")
        .to_string();
    let n_ctx = args.n_prompt.max(args.n_gen).max(1);
    let mut model = args.runtime.load(&path, file, n_ctx)?;
    let n_vocab = model.config().n_vocab;
    let n_threads = rayon::current_num_threads();
    // Token ids as llama-bench uses: arbitrary ids below the vocabulary size.
    let tokens: Vec<u32> = (0..n_ctx as u32)
        .map(|i| (i * 7919 + 13) % n_vocab as u32)
        .collect();
    let mut logits = Vec::new();

    let mut results = Vec::new();
    for (n_prompt, n_gen) in [(args.n_prompt, 0), (0, args.n_gen)] {
        if n_prompt + n_gen == 0 {
            continue;
        }
        let mut samples_ns = Vec::new();
        for rep in 0..=args.reps {
            let t0 = Instant::now();
            if n_prompt > 0 {
                model.eval(&tokens[..n_prompt], 0, Logits::Last, &mut logits)?;
            }
            for i in 0..n_gen {
                model.eval(&tokens[i..i + 1], i, Logits::Last, &mut logits)?;
            }
            let ns = t0.elapsed().as_nanos() as u64;
            if rep > 0 {
                samples_ns.push(ns); // rep 0 is the warm-up
            }
        }
        let n = (n_prompt + n_gen) as f64;
        let samples_ts: Vec<f64> = samples_ns.iter().map(|&ns| n / (ns as f64 / 1e9)).collect();
        let (avg_ts, stddev_ts) = mean_sd(&samples_ts);
        results.push(TestResult {
            model_filename: path.display().to_string(),
            model_type: format!("{arch} {ftype}"),
            model_size,
            model_n_params: n_params,
            backend: model.device().name().to_string(),
            n_threads,
            n_prompt,
            n_gen,
            avg_ts,
            stddev_ts,
            samples_ts,
            samples_ns,
        });
    }
    if args.json {
        common::outln!(
            "{}",
            common::printable_json(&serde_json::to_string_pretty(&results)?)
        );
        return Ok(());
    }
    common::outln!("| model | size | params | backend | threads | test | t/s |");
    common::outln!("| --- | ---: | ---: | --- | ---: | ---: | ---: |");
    for r in &results {
        let test = if r.n_prompt > 0 {
            format!("pp{}", r.n_prompt)
        } else {
            format!("tg{}", r.n_gen)
        };
        common::outln!(
            "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} ± {:.2} |",
            common::printable(&r.model_type),
            r.model_size as f64 / 1048576.0,
            r.model_n_params as f64 / 1e6,
            r.backend,
            r.n_threads,
            test,
            r.avg_ts,
            r.stddev_ts
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct SynthArgs {
    /// Model shape: tinyllama-1.1b, llama-7b, smollm2-135m, mistral-7b, qwen2.5-0.5b, qwen2.5-7b,
    /// qwen3-0.6b, qwen3-8b, gemma3-1b or phi3-mini
    #[arg(long, value_parser = parse_shape)]
    shape: Shape,
    /// Output GGUF file
    #[arg(short = 'o', long = "output")]
    output: PathBuf,
    /// File type of the weights
    #[arg(long = "type", default_value = "Q4_K_M", value_parser = parse_ftype)]
    ftype: FileType,
    /// Threads [default: the number of physical cores]
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
}

fn parse_shape(s: &str) -> Result<Shape, String> {
    Shape::by_name(s).ok_or_else(|| {
        let names: Vec<&str> = SHAPES.iter().map(|s| s.name).collect();
        format!(
            "unknown shape '{s}' (expected one of: {})",
            names.join(", ")
        )
    })
}

fn parse_ftype(s: &str) -> Result<FileType, String> {
    FileType::parse(s).ok_or_else(|| format!("unknown file type '{s}'"))
}

pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    common::init_threads(args.threads)?;
    common::clean_up_outputs_on_signals()?;
    let out = rustorch_gguf::OutputFile::create(&args.output, &[])?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "synth {bar:40} {pos}/{len} tensors [{elapsed_precise}<{eta_precise}]",
        )
        .unwrap(),
    );
    let result = rustorch_model::synth::write_file(&args.shape, args.ftype, out, |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    result?;
    eprintln!(
        "wrote {} ({}, {}, {:.1} MiB)",
        args.output.display(),
        args.shape.name,
        args.ftype.name(),
        std::fs::metadata(&args.output)?.len() as f64 / 1048576.0
    );
    Ok(())
}
