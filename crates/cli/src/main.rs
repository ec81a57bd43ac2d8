//! `rustorch`: run GGUF language models from the command line.

mod bench;
mod common;
mod generate;
mod inspect;
mod perplexity;
mod quantize;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rustorch",
    version,
    about = "Run GGUF language models: generate, chat, quantize, inspect"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Without a subcommand: interactive chat.
    #[command(flatten)]
    chat: generate::ChatArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a raw prompt (no chat template), streaming it to stdout.
    Run(generate::RunArgs),
    /// Interactive chat using the model's own chat template.
    Chat(generate::ChatArgs),
    /// Serve the OpenAI API (chat, completions, models, metrics) and a chat page over HTTP.
    Serve(Box<serve::ServeArgs>),
    /// Print the token ids of a text as a JSON list.
    Tokenize(TokenizeArgs),
    /// Perplexity of a text file, computed as llama-perplexity does.
    Perplexity(perplexity::PerplexityArgs),
    /// Logits of a text run as one batch: argmax, top-two margin and top-K per position, as JSON.
    Logits(perplexity::LogitsArgs),
    /// Describe a GGUF file: architecture, sizes, tokenizer, tensors.
    Inspect(inspect::InspectArgs),
    /// Measure prompt processing and generation speed, as llama-bench does.
    Bench(bench::BenchArgs),
    /// Write a GGUF model of a real shape with deterministic pseudo-random weights.
    Synth(bench::SynthArgs),
    /// Requantize a GGUF file to another file type, as llama-quantize does.
    Quantize(quantize::QuantizeArgs),
}

#[derive(Args)]
struct TokenizeArgs {
    #[command(flatten)]
    model: common::ModelArg,
    /// Text to tokenize.
    #[arg(short, long)]
    prompt: String,
    /// Treat control-token text (e.g. `<|im_start|>`) as plain text.
    #[arg(long)]
    no_parse_special: bool,
    /// Do not add BOS/EOS even when the vocabulary asks for them.
    #[arg(long)]
    no_add_special: bool,
}

fn tokenize(args: TokenizeArgs) -> anyhow::Result<()> {
    let (_, tok) = common::open_with_tokenizer(&args.model.path()?)?;
    let ids = tok.encode(&args.prompt, !args.no_add_special, !args.no_parse_special);
    let list: Vec<String> = ids.iter().map(|i| i.to_string()).collect();
    common::outln!("[{}]", list.join(", "));
    Ok(())
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                e.exit();
            }
            // One line, as every other error: clap's first line names the flag and the problem.
            let text = e.render().to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            eprintln!("{} (see --help)", first.trim_end());
            return ExitCode::from(2);
        }
    };
    // A wrong switch is an error, not silently ignored.
    if let Err(e) = rustorch_quant::kernels::Isa::cap_from_env() {
        eprintln!("error: {}", common::printable(&e));
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Run(a)) => generate::run(a),
        Some(Command::Chat(a)) => generate::chat(a),
        Some(Command::Serve(a)) => serve::serve(*a),
        Some(Command::Tokenize(a)) => tokenize(a),
        Some(Command::Perplexity(a)) => perplexity::perplexity(a),
        Some(Command::Logits(a)) => perplexity::logits(a),
        Some(Command::Inspect(a)) => inspect::inspect(a),
        Some(Command::Quantize(a)) => quantize::quantize(a),
        Some(Command::Bench(a)) => bench::bench(a),
        Some(Command::Synth(a)) => bench::synth(a),
        None => generate::chat(cli.chat),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // `| head`: the reader is gone; end quietly with the status of a SIGPIPE death.
        Err(e) if common::is_broken_pipe(&e) => ExitCode::from(141),
        Err(e) => {
            eprintln!("error: {}", common::one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Where the default model lives (fetched by `scripts/fetch-models.sh`).
pub fn models_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUSTORCH_MODELS") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache/rustorch/models")
}
