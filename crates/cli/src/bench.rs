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
    /// Print a JSON list with llama-bench's `-o json` field names (with --parallel: one JSON
    /// object per line with llama-batched-bench's `jsonl` field names)
    #[arg(long)]
    json: bool,
    /// Sequences decoded together, as llama-batched-bench's -npl: e.g. 1,4,8,16. Each runs a
    /// prompt of -p tokens and generates -n tokens; reports prompt, decode and total tokens/s
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallel: Vec<u32>,
    /// The prefix cache: the same prompt of -p tokens twice through the engine; prints the cold
    /// and the cached prefill times (median of -r runs, each on a fresh cache)
    #[arg(long)]
    repeat_prompt: bool,
    /// No model: the memory read bandwidth the threads (-t) reach with a plain multi-stream
    /// read loop over 1 GiB, the ceiling of a memory-bound decode (median of -r runs)
    #[arg(long)]
    bandwidth: bool,
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
    if args.bandwidth {
        return bandwidth(&args);
    }
    if args.n_prompt == 0 && args.n_gen == 0 {
        bail!("nothing to measure: both -p and -n are 0");
    }
    let path = args.model.path()?;
    if !args.parallel.is_empty() {
        return parallel(&args, &path);
    }
    if args.repeat_prompt {
        return repeat_prompt(&args, &path);
    }
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

/// One line of llama-batched-bench's results (its `jsonl` field names).
#[derive(Serialize)]
struct BatchedResult {
    pp: usize,
    tg: usize,
    pl: usize,
    n_kv: usize,
    t_pp: f64,
    speed_pp: f64,
    t_tg: f64,
    speed_tg: f64,
    t: f64,
    speed: f64,
}

/// The model in `path` under an engine of `n_seq` sequences of `seq_ctx` positions side by side.
fn bench_engine(
    args: &BenchArgs,
    path: &std::path::Path,
    n_seq: usize,
    seq_ctx: usize,
    cfg: rustorch_engine::engine::EngineConfig,
) -> anyhow::Result<rustorch_engine::engine::Engine> {
    let (file, tok) = common::open_with_tokenizer(path)?;
    let size = rustorch_model::KvSize {
        n_seq,
        seq_ctx,
        n_blocks: 0,
    };
    let model = args.runtime.load_cache(path, file, size)?;
    Ok(rustorch_engine::engine::Engine::new(
        model,
        std::sync::Arc::new(tok),
        cfg,
    ))
}

/// `bench --parallel`: for each count `pl`, `pl` sequences of `-p` prompt tokens (distinct
/// random ids, so no prefix is shared) each generate `-n` tokens through the engine, all in one
/// forward pass per step. The prompt phase ends when every sequence has its first token; the
/// rest is the decode phase.
fn parallel(args: &BenchArgs, path: &std::path::Path) -> anyhow::Result<()> {
    use rustorch_engine::engine::{EngineConfig, Request};
    use rustorch_engine::sampler::SamplerConfig;
    if args.n_prompt == 0 || args.n_gen == 0 {
        bail!("--parallel needs -p and -n above 0");
    }
    let (pp, tg) = (args.n_prompt, args.n_gen);
    let max_pl = *args.parallel.iter().max().expect("not empty") as usize;
    let cfg = EngineConfig {
        prefix_cache: false,
        max_waiting: max_pl,
        ..EngineConfig::default()
    };
    let mut engine = bench_engine(args, path, max_pl, pp + tg, cfg)?;
    let n_vocab = engine.model().config().n_vocab as u64;
    let mut seed = 0x9E3779B97F4A7C15u64;
    let mut rand_prompt = || -> Vec<u32> {
        (0..pp)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n_vocab) as u32
            })
            .collect()
    };
    let mut run = |pl: usize| -> anyhow::Result<BatchedResult> {
        let mut streams = Vec::with_capacity(pl);
        for _ in 0..pl {
            let req = Request {
                prompt: rand_prompt(),
                max_tokens: tg,
                sampling: SamplerConfig::greedy(),
                stop: Vec::new(),
                ignore_eos: true,
                logprobs: None,
            };
            streams.push(engine.submit(req)?);
        }
        let t0 = Instant::now();
        let mut started = vec![false; pl];
        let mut t_pp = None;
        while !engine.idle() {
            engine.step();
            for (s, st) in streams.iter_mut().zip(started.iter_mut()) {
                while let Some(ev) = s.try_next() {
                    if let rustorch_engine::engine::Event::Done(f) = &ev {
                        if let Some(e) = &f.error {
                            bail!("{e}");
                        }
                    }
                    *st = true;
                }
            }
            if t_pp.is_none() && started.iter().all(|&s| s) {
                t_pp = Some(t0.elapsed().as_secs_f64());
            }
        }
        let t = t0.elapsed().as_secs_f64();
        let t_pp = t_pp.unwrap_or(t);
        let t_tg = (t - t_pp).max(1e-9);
        Ok(BatchedResult {
            pp,
            tg,
            pl,
            n_kv: pl * (pp + tg),
            t_pp,
            speed_pp: (pl * pp) as f64 / t_pp,
            t_tg,
            // The first token of each sequence comes with its prompt.
            speed_tg: (pl * (tg - 1)) as f64 / t_tg,
            t,
            speed: (pl * (pp + tg)) as f64 / t,
        })
    };
    // Warm-up: threads, page faults, buffers.
    run(1)?;
    if !args.json {
        common::outln!("|    PP |     TG |    B |   N_KV |   T_PP s | S_PP t/s |   T_TG s | S_TG t/s |      T s |    S t/s |");
        common::outln!("|-------|--------|------|--------|----------|----------|----------|----------|----------|----------|");
    }
    for &pl in &args.parallel {
        let r = run(pl as usize)?;
        if args.json {
            common::outln!("{}", serde_json::to_string(&r)?);
        } else {
            common::outln!(
                "| {:5} | {:6} | {:4} | {:6} | {:8.3} | {:8.2} | {:8.3} | {:8.2} | {:8.3} | {:8.2} |",
                r.pp, r.tg, r.pl, r.n_kv, r.t_pp, r.speed_pp, r.t_tg, r.speed_tg, r.t, r.speed
            );
        }
    }
    Ok(())
}

/// `bench --repeat-prompt`: a prompt of -p random tokens through the engine twice; the second
/// maps the first's blocks from the prefix cache and computes only the last block's tokens.
fn repeat_prompt(args: &BenchArgs, path: &std::path::Path) -> anyhow::Result<()> {
    use rustorch_engine::engine::{EngineConfig, Request};
    use rustorch_engine::sampler::SamplerConfig;
    if args.n_prompt == 0 {
        bail!("--repeat-prompt needs -p above 0");
    }
    let pp = args.n_prompt;
    let mut engine = bench_engine(args, path, 1, pp + 1, EngineConfig::default())?;
    let n_vocab = engine.model().config().n_vocab as u32;
    if !engine.config().prefix_cache {
        bail!("this model or backend has no prefix cache (a paged cache without sliding-window rings: the CPU backend)");
    }
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for rep in 0..=args.reps {
        // A new prompt each time: the cold run finds nothing cached.
        let prompt: Vec<u32> = (0..pp as u32)
            .map(|i| (i * 7919 + rep * 104729 + 13) % n_vocab)
            .collect();
        let mut times = [0f64; 2];
        for t in &mut times {
            let req = Request {
                prompt: prompt.clone(),
                max_tokens: 1,
                sampling: SamplerConfig::greedy(),
                stop: Vec::new(),
                ignore_eos: true,
                logprobs: None,
            };
            let stream = engine.submit(req)?;
            let t0 = Instant::now();
            engine.run_until_idle();
            *t = t0.elapsed().as_secs_f64();
            let (_, _, fin) = stream.collect_blocking();
            if let Some(e) = fin.and_then(|f| f.error) {
                bail!("{e}");
            }
        }
        if rep > 0 {
            cold.push(times[0]);
            warm.push(times[1]);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (c, w) = (median(&mut cold), median(&mut warm));
    common::outln!(
        "prompt of {pp} tokens: cold prefill {:.1} ms, from the prefix cache {:.2} ms ({:.0}x)",
        c * 1e3,
        w * 1e3,
        c / w
    );
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

/// Bytes `bench --bandwidth` reads per run: well beyond any last-level cache.
const BANDWIDTH_BYTES: usize = 1 << 30;
/// Streams each thread reads side by side (the decode kernels read several, `DECODE_STREAMS`):
/// each count is timed, and the best is the machine's figure.
const BANDWIDTH_STREAMS: [usize; 4] = [1, 2, 4, 8];

/// Sums `streams` equal parts of `words` side by side, a cache line of each in turn (with AVX2
/// where the CPU has it: the loop must be faster than memory for the figure to be memory's).
fn read_streams(words: &[u64], streams: usize) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is available.
        return unsafe { read_streams_avx2(words, streams) };
    }
    let line = 8; // u64s in a 64-byte line
    let part = words.len() / streams / line * line;
    let mut acc = [0u64; 8];
    for off in (0..part).step_by(line) {
        for s in 0..streams {
            let l = &words[s * part + off..s * part + off + line];
            for (a, &w) in acc.iter_mut().zip(l) {
                *a = a.wrapping_add(w);
            }
        }
    }
    acc.iter().fold(0, |x, &y| x ^ y)
}

/// [`read_streams`] with 32-byte loads.
///
/// # Safety
/// AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn read_streams_avx2(words: &[u64], streams: usize) -> u64 {
    use std::arch::x86_64::*;
    // A run of RUN cache lines of a stream, then the next stream's (a weight row's worth, as the
    // decode kernels take each stream's next row).
    const RUN: usize = 16;
    let part = words.len() / streams / (8 * RUN) * (8 * RUN);
    let base = words.as_ptr();
    let (mut a0, mut a1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
    for off in (0..part).step_by(8 * RUN) {
        for s in 0..streams {
            let p = base.add(s * part + off).cast::<__m256i>();
            for l in 0..2 * RUN {
                a0 = _mm256_add_epi64(a0, _mm256_loadu_si256(p.add(l)));
                std::mem::swap(&mut a0, &mut a1);
            }
        }
    }
    let mut out = [0u64; 4];
    _mm256_storeu_si256(out.as_mut_ptr().cast(), _mm256_xor_si256(a0, a1));
    out.iter().fold(0, |x, &y| x ^ y)
}

/// `bench --bandwidth`: GB/s of a plain read of 1 GiB by the pool's threads, each over its own
/// slice in 1, 2, 4 and 8 streams; the best count's median of -r runs is the figure.
fn bandwidth(args: &BenchArgs) -> anyhow::Result<()> {
    use rayon::prelude::*;
    let n_threads = rayon::current_num_threads();
    // Written once, so that every page is mapped before timing.
    let words: Vec<u64> = (0..BANDWIDTH_BYTES / 8).map(|i| i as u64).collect();
    let chunk = words.len().div_ceil(n_threads);
    let run = |streams: usize| {
        let t = Instant::now();
        let x: u64 = words
            .par_chunks(chunk)
            .map(|c| read_streams(c, streams))
            .reduce(|| 0, |a, b| a ^ b);
        std::hint::black_box(x);
        BANDWIDTH_BYTES as f64 / t.elapsed().as_secs_f64() / 1e9
    };
    let mut best: Option<(usize, f64, Vec<f64>)> = None;
    for streams in BANDWIDTH_STREAMS {
        run(streams); // warm-up
        let mut gbs: Vec<f64> = (0..args.reps).map(|_| run(streams)).collect();
        gbs.sort_by(f64::total_cmp);
        let median = gbs[gbs.len() / 2];
        if args.json {
            common::outln!(
                "{}",
                serde_json::json!({"test": "bandwidth", "n_threads": n_threads, "streams": streams,
                                   "bytes": BANDWIDTH_BYTES, "gb_s": median, "samples_gb_s": gbs})
            );
        } else {
            common::outln!(
                "read bandwidth, {n_threads} threads x {streams} streams: {median:.1} GB/s \
                 (median of {} runs over 1 GiB; range {:.1}-{:.1})",
                gbs.len(),
                gbs[0],
                gbs[gbs.len() - 1]
            );
        }
        if best.as_ref().is_none_or(|b| median > b.1) {
            best = Some((streams, median, gbs));
        }
    }
    if let (false, Some((streams, gb_s, _))) = (args.json, best) {
        common::outln!(
            "read bandwidth: {gb_s:.1} GB/s ({n_threads} threads, best with {streams} streams)"
        );
    }
    Ok(())
}
