//! `perplexity` (as llama-perplexity computes it) and `logits` (per-position argmax and margins,
//! the tool for comparing two engines or two backends).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rustorch_model::{Logits, N_UBATCH};
use serde::Serialize;

use crate::common::{self, ModelArg, RuntimeArgs};

#[derive(Args)]
pub struct PerplexityArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Text file to score
    #[arg(short = 'f', long = "file")]
    file: PathBuf,
    /// Chunk length in tokens
    #[arg(short = 'c', long = "ctx-size", default_value_t = 512, value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    ctx: u32,
    /// Score at most this many chunks
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    chunks: Option<u32>,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Serialize)]
struct PerplexityReport {
    ppl: f64,
    /// Standard error of the estimate, as llama-perplexity's `+/-`.
    ppl_stderr: f64,
    chunks: usize,
    ctx: usize,
    tokens_scored: usize,
    chunk_ppl: Vec<f64>,
}

/// `log p(tok)` under softmax(logits), with the sum of exponentials in double as llama.cpp does.
fn log_softmax(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| (l - max).exp() as f64).sum();
    (logits[tok] - max) as f64 - sum.ln()
}

pub fn perplexity(args: PerplexityArgs) -> anyhow::Result<()> {
    args.runtime.init_threads()?;
    let path = args.model.path()?;
    let text = common::read_text(&args.file)?;
    let (file, tok) = common::open_with_tokenizer(&path)?;
    let n_ctx = args.ctx as usize;

    // As llama-perplexity: tokenized once (BOS if the vocabulary adds it, special text not parsed),
    // cut into non-overlapping chunks whose first token becomes BOS when the vocabulary adds one;
    // each chunk scores the predictions of its second half. The text is checked before the model
    // and its cache are loaded.
    let tokens = tok.encode(&text, true, false);
    let n_chunk_max = tokens.len() / n_ctx;
    if n_chunk_max == 0 {
        bail!(
            "{} tokenizes to {} tokens, fewer than one chunk of {n_ctx}",
            args.file.display(),
            tokens.len()
        );
    }
    let mut model = args.runtime.load(&path, file, n_ctx)?;
    let n_vocab = model.config().n_vocab;
    let n_chunk = args
        .chunks
        .map_or(n_chunk_max, |c| (c as usize).min(n_chunk_max));
    let first = n_ctx / 2;
    let bos = if tok.add_bos() { tok.bos() } else { None };

    let bar = ProgressBar::new(n_chunk as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "perplexity {bar:40} {pos}/{len} chunks [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .unwrap(),
    );
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut chunk_ppl = Vec::with_capacity(n_chunk);
    let mut logits = Vec::new();
    let mut chunk = vec![0u32; n_ctx];
    for i in 0..n_chunk {
        chunk.copy_from_slice(&tokens[i * n_ctx..(i + 1) * n_ctx]);
        if let Some(b) = bos {
            chunk[0] = b;
        }
        model.eval(&chunk, 0, Logits::All, &mut logits)?;
        for j in first..n_ctx - 1 {
            let v = -log_softmax(
                &logits[j * n_vocab..(j + 1) * n_vocab],
                tokens[i * n_ctx + j + 1] as usize,
            );
            nll += v;
            nll2 += v * v;
        }
        count += n_ctx - 1 - first;
        chunk_ppl.push((nll / count as f64).exp());
        bar.set_message(format!("PPL {:.4}", (nll / count as f64).exp()));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let mean = nll / count as f64;
    let ppl = mean.exp();
    let var = nll2 / count as f64 - mean * mean;
    let stderr = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    if args.json {
        let report = PerplexityReport {
            ppl,
            ppl_stderr: stderr,
            chunks: n_chunk,
            ctx: n_ctx,
            tokens_scored: count,
            chunk_ppl,
        };
        common::outln!("{}", serde_json::to_string(&report)?);
    } else {
        common::outln!(
            "PPL = {ppl:.4} +/- {stderr:.5} ({n_chunk} chunks of {n_ctx} tokens, {count} scored)"
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct LogitsArgs {
    #[command(flatten)]
    model: ModelArg,
    /// Text to run
    #[arg(
        short = 'p',
        long,
        conflicts_with = "file",
        required_unless_present = "file"
    )]
    prompt: Option<String>,
    /// File whose text to run
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Run at most this many tokens
    #[arg(short = 'n', long = "max-tokens", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..))]
    max_tokens: u32,
    /// Also list the K largest logits at each position
    #[arg(long, default_value_t = 0)]
    top: usize,
    /// Tokens per evaluation (1: every token is a decode step, as in generation)
    #[arg(long, default_value_t = N_UBATCH as u32, value_parser = clap::value_parser!(u32).range(1..))]
    ubatch: u32,
    /// Print JSON (the only output format)
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    runtime: RuntimeArgs,
}

#[derive(Serialize)]
struct Position {
    pos: usize,
    id: u32,
    argmax: u32,
    margin: f32,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    top: Vec<(u32, f32)>,
}

/// Indices of the `k` largest values, largest first (ties: lower index first).
fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let k = k.min(idx.len());
    let cmp = |a: &u32, b: &u32| {
        logits[*b as usize]
            .total_cmp(&logits[*a as usize])
            .then(a.cmp(b))
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k, cmp);
        idx.truncate(k);
    }
    idx.sort_by(cmp);
    idx.into_iter().map(|i| (i, logits[i as usize])).collect()
}

pub fn logits(args: LogitsArgs) -> anyhow::Result<()> {
    args.runtime.init_threads()?;
    let path = args.model.path()?;
    let text = match (&args.prompt, &args.file) {
        (Some(p), _) => p.clone(),
        (None, Some(f)) => common::read_text(f)?,
        (None, None) => bail!("give -p TEXT or -f FILE"),
    };
    let (file, tok) = common::open_with_tokenizer(&path)?;
    let mut ids = tok.encode(&text, true, true);
    ids.truncate(args.max_tokens as usize);
    if ids.is_empty() {
        bail!("the text is empty");
    }
    let mut model = args.runtime.load(&path, file, ids.len())?;
    let n_vocab = model.config().n_vocab;
    let mut logits = Vec::new();
    let mut positions = Vec::with_capacity(ids.len());
    let ubatch = args.ubatch as usize;
    for (c, chunk) in ids.chunks(ubatch).enumerate() {
        model.eval(chunk, c * ubatch, Logits::All, &mut logits)?;
        for (j, row) in logits.chunks(n_vocab).enumerate() {
            let best = top_k(row, args.top.max(2));
            positions.push(Position {
                pos: c * ubatch + j,
                id: chunk[j],
                argmax: best[0].0,
                margin: best[0].1 - best.get(1).map_or(f32::NEG_INFINITY, |b| b.1),
                top: best.into_iter().take(args.top).collect(),
            });
        }
    }
    #[derive(Serialize)]
    struct Report {
        positions: Vec<Position>,
    }
    common::outln!("{}", serde_json::to_string(&Report { positions })?);
    Ok(())
}
