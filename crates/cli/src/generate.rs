//! `run` (raw prompt completion) and `chat` (interactive, with the model's chat template).

use std::io::{IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use rustorch_engine::chat_template::{known, ChatMessage, ChatTemplate};
use rustorch_engine::engine::{Engine, EngineConfig, Event, Finish, FinishReason, Request};
use rustorch_engine::sampler::SamplerConfig;
use rustorch_tokenizer::Tokenizer;

use crate::common::{self, ModelArg, RuntimeArgs};

#[derive(Args, Clone)]
pub struct SamplingArgs {
    /// Tokens to generate (-1: until end of generation or a full context)
    #[arg(short = 'n', long = "max-tokens", visible_alias = "n-predict", default_value_t = -1, allow_negative_numbers = true)]
    pub n_predict: i64,
    /// Temperature; 0 is greedy
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temp: f32,
    /// Keep the K most likely tokens (0: all)
    #[arg(long = "top-k", default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens whose probabilities add up to P (1: all)
    #[arg(long = "top-p", default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Drop tokens less likely than P times the most likely one (0: off)
    #[arg(long = "min-p", default_value_t = 0.05, allow_negative_numbers = true)]
    pub min_p: f32,
    /// Penalty for repeating a token of the recent window (1: off)
    #[arg(
        long = "repeat-penalty",
        default_value_t = 1.0,
        allow_negative_numbers = true
    )]
    pub repeat_penalty: f32,
    /// Window of recent tokens the repetition penalty looks at
    #[arg(long = "repeat-last-n", default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed [default: from the clock]
    #[arg(long)]
    pub seed: Option<u64>,
}

impl SamplingArgs {
    pub fn sampler(&self) -> anyhow::Result<SamplerConfig> {
        let seed = self.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        });
        let cfg = SamplerConfig {
            temp: self.temp,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n,
            seed,
            ..SamplerConfig::default()
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn max_tokens(&self) -> anyhow::Result<usize> {
        match self.n_predict {
            -1 => Ok(usize::MAX),
            n if n >= 0 => Ok(n as usize),
            n => bail!("invalid value {n} for --max-tokens: expected -1 or a count >= 0"),
        }
    }
}

#[derive(Args, Clone)]
pub struct ContextArg {
    /// Context size in tokens (0: the model's training context)
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub ctx: u32,
}

#[derive(Args, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Prompt, fed as is (no chat template); control-token text is parsed as special tokens
    #[arg(short = 'p', long)]
    pub prompt: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub context: ContextArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

#[derive(Args, Clone)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// System message for the conversation
    #[arg(long)]
    pub system: Option<String>,
    /// The turn format: a known name (chatml, gemma, llama3, phi3) or a file holding a Jinja
    /// template; default: the file's `tokenizer.chat_template`, else its architecture's format
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub context: ContextArg,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// The model file with its tokenizer, and the context size asked for (`-c`, 0: the model's).
struct Opened {
    path: std::path::PathBuf,
    file: std::sync::Arc<rustorch_gguf::GgufFile>,
    tok: rustorch_tokenizer::Tokenizer,
    n_ctx: usize,
}

fn open_model(
    model: &ModelArg,
    context: &ContextArg,
    runtime: &RuntimeArgs,
) -> anyhow::Result<Opened> {
    runtime.init_threads()?;
    let path = model.path()?;
    let (file, tok) = common::open_with_tokenizer(&path)?;
    let n_ctx = if context.ctx == 0 {
        rustorch_model::Config::from_gguf(&file)
            .with_context(|| path.display().to_string())?
            .n_ctx_train
    } else {
        context.ctx as usize
    };
    Ok(Opened {
        path,
        file,
        tok,
        n_ctx,
    })
}

/// Loads the model with a KV cache of one sequence of `n_ctx` positions, under an engine.
fn start_engine(
    o: Opened,
    n_ctx: usize,
    runtime: &RuntimeArgs,
) -> anyhow::Result<(Engine, Arc<Tokenizer>)> {
    let size = rustorch_model::KvSize {
        n_seq: 1,
        seq_ctx: n_ctx,
        n_blocks: 0,
    };
    let model = runtime.load_cache(&o.path, o.file, size)?;
    let tok = Arc::new(o.tok);
    Ok((
        Engine::new(model, tok.clone(), EngineConfig::default()),
        tok,
    ))
}

/// Runs `req` on `engine`, writing its text to stdout as it comes. Returns the generated ids,
/// their text and how it ended. A failed write to stdout ends the request (the stream is dropped)
/// and is the error.
fn generate(engine: &mut Engine, req: Request) -> anyhow::Result<(Vec<u32>, String, Finish)> {
    let mut stream = engine.submit(req)?;
    let stdout = std::io::stdout();
    let (mut ids, mut text) = (Vec::new(), String::new());
    loop {
        engine.step();
        while let Some(ev) = stream.try_next() {
            let piece = match ev {
                Event::Token { id, text, .. } => {
                    ids.push(id);
                    text
                }
                Event::Text(t) => t,
                Event::Done(f) => {
                    if let Some(e) = &f.error {
                        bail!("{e}");
                    }
                    return Ok((ids, text, f));
                }
            };
            let mut out = stdout.lock();
            out.write_all(piece.as_bytes())
                .and_then(|_| out.flush())
                .map_err(common::stdout_error)?;
            text.push_str(&piece);
        }
        if engine.idle() {
            bail!("the engine stopped without finishing the request");
        }
    }
}

fn print_timings(f: &Finish) {
    let prompt = f.prompt_tokens - f.cached_tokens;
    let gen = f.completion_tokens.saturating_sub(1);
    eprintln!(
        "\n[timings] prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s",
        prompt,
        prompt as f64 / f.prompt_time.as_secs_f64().max(1e-9),
        f.completion_tokens,
        gen as f64 / f.gen_time.as_secs_f64().max(1e-9)
    );
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let max_tokens = args.sampling.max_tokens()?;
    let sampling = args.sampling.sampler()?;
    let opened = open_model(&args.model, &args.context, &args.runtime)?;
    let ids = opened.tok.encode(&args.prompt, true, true);
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    if ids.len() > opened.n_ctx {
        bail!(
            "the prompt is {} tokens long, longer than the context of {} tokens (raise -c)",
            ids.len(),
            opened.n_ctx
        );
    }
    // The cache holds what this run evaluates: the prompt and the tokens to generate.
    let n_ctx = opened.n_ctx.min(ids.len().saturating_add(max_tokens));
    let (mut engine, _) = start_engine(opened, n_ctx, &args.runtime)?;
    let req = Request {
        prompt: ids,
        max_tokens,
        sampling,
        stop: Vec::new(),
        ignore_eos: false,
        logprobs: None,
    };
    let (_, _, fin) = generate(&mut engine, req)?;
    common::outln!();
    if fin.reason == FinishReason::ContextFull {
        eprintln!("[stopped: the context of {n_ctx} tokens is full]");
    }
    print_timings(&fin);
    Ok(())
}

/// The chat template: `choice` (a known format's name or a Jinja file), else the file's
/// `tokenizer.chat_template`, else its architecture's turn format.
pub fn chat_template(
    file: &rustorch_gguf::GgufFile,
    tok: &Tokenizer,
    choice: Option<&str>,
) -> anyhow::Result<ChatTemplate> {
    let own = file
        .opt_str("tokenizer.chat_template")
        .context("chat template")?
        .map(str::to_string);
    let text_of = |id: Option<u32>| {
        id.map(|id| tok.token_text(id).to_string())
            .unwrap_or_default()
    };
    let (bos, eos) = (text_of(tok.bos()), text_of(tok.eos()));
    let source = match (choice, own) {
        (Some(choice), _) => match known::named(choice) {
            Some(s) => s.to_string(),
            None => common::read_text(std::path::Path::new(choice)).with_context(|| {
                format!(
                    "--chat-template {}: not a known format ({}) nor a readable file",
                    common::printable(choice),
                    known::NAMES.join(", ")
                )
            })?,
        },
        (None, Some(s)) => s,
        (None, None) => {
            let arch = file
                .opt_str("general.architecture")
                .ok()
                .flatten()
                .unwrap_or("");
            let (name, s) = known::for_architecture(arch);
            eprintln!(
                "[the model has no chat template; using the {name} turn format of its \
                 architecture (--chat-template overrides)]"
            );
            s.to_string()
        }
    };
    ChatTemplate::new(&source, &bos, &eos).context("chat template")
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let max_tokens = args.sampling.max_tokens()?;
    let sampling = args.sampling.sampler()?;
    let opened = open_model(&args.model, &args.context, &args.runtime)?;
    let template = chat_template(&opened.file, &opened.tok, args.chat_template.as_deref())?;
    let n_ctx = opened.n_ctx;
    let (mut engine, tok) = start_engine(opened, n_ctx, &args.runtime)?;
    let bos = template.bos_token().to_string();

    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system.clone(),
        });
    }
    let mut last: Option<Finish> = None;
    let mut stdin = std::io::stdin().lock();
    // The prompt marker only for a person at a terminal, not for piped input.
    let interactive = std::io::stdin().is_terminal();
    loop {
        if interactive {
            eprint!("> ");
            std::io::stderr().flush().ok();
        }
        let Some(line) = common::read_line(&mut stdin, common::MAX_TEXT_BYTES)? else {
            break;
        };
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            continue;
        }
        messages.push(ChatMessage {
            role: "user".into(),
            content: line.to_string(),
        });
        // The whole conversation, rendered and tokenized again each turn (as llama-server does
        // for a chat request): a template that changes earlier turns (Gemma's trims the replies)
        // is followed; the prefix cache keeps the blocks the turns share.
        let full = template.render(&messages, true).context("chat template")?;
        // A template that writes BOS itself, for a vocabulary that adds it: only one BOS (as
        // llama.cpp does).
        let text = match full.strip_prefix(bos.as_str()) {
            Some(rest) if !bos.is_empty() && tok.add_bos() => rest,
            _ => full.as_str(),
        };
        let ids = tok.encode(text, true, true);
        if ids.len() + 1 > n_ctx {
            if messages.len() <= 2 {
                bail!(
                    "the first message is {} tokens long with the template, more than the context of {n_ctx} tokens holds (raise -c)",
                    ids.len(),
                );
            }
            eprintln!("[the context of {n_ctx} tokens is full: start a new chat]");
            break;
        }
        // Each turn is one request of the whole conversation: the prefix cache keeps the earlier
        // turns' blocks where the backend pages its cache.
        let seed = sampling.seed.wrapping_add(ids.len() as u64);
        let req = Request {
            prompt: ids,
            max_tokens,
            sampling: SamplerConfig {
                seed,
                ..sampling.clone()
            },
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        };
        let (_, reply, fin) = generate(&mut engine, req)?;
        let reason = fin.reason;
        last = Some(fin);
        common::outln!();
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: reply,
        });
        if reason == FinishReason::ContextFull {
            eprintln!("[the context of {n_ctx} tokens is full: start a new chat]");
            break;
        }
    }
    if let Some(f) = &last {
        print_timings(f);
    }
    Ok(())
}
