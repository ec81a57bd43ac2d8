//! `run` (raw prompt completion) and `chat` (interactive, with the model's chat template).

use std::io::{IsTerminal, Write};

use anyhow::{bail, Context};
use clap::Args;
use rustorch_engine::chat_template::{known, ChatMessage, ChatTemplate};
use rustorch_engine::sampler::SamplerConfig;
use rustorch_engine::session::{Session, StopReason};

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
    /// Context size in tokens (0: the model's training context)
    #[arg(short = 'c', long = "ctx-size", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub ctx: u32,
}

impl SamplingArgs {
    fn sampler(&self) -> anyhow::Result<SamplerConfig> {
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
        };
        cfg.validate()?;
        Ok(cfg)
    }

    fn max_tokens(&self) -> anyhow::Result<usize> {
        match self.n_predict {
            -1 => Ok(usize::MAX),
            n if n >= 0 => Ok(n as usize),
            n => bail!("invalid value {n} for --max-tokens: expected -1 or a count >= 0"),
        }
    }
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
    sampling: &SamplingArgs,
    runtime: &RuntimeArgs,
) -> anyhow::Result<Opened> {
    runtime.init_threads()?;
    let path = model.path()?;
    let (file, tok) = common::open_with_tokenizer(&path)?;
    let n_ctx = if sampling.ctx == 0 {
        rustorch_model::Config::from_gguf(&file)
            .with_context(|| path.display().to_string())?
            .n_ctx_train
    } else {
        sampling.ctx as usize
    };
    Ok(Opened {
        path,
        file,
        tok,
        n_ctx,
    })
}

/// Loads the model with a KV cache of `n_ctx` positions and starts a session.
fn start_session(
    o: Opened,
    sampler: SamplerConfig,
    n_ctx: usize,
    runtime: &RuntimeArgs,
) -> anyhow::Result<Session> {
    let model = runtime.load(&o.path, o.file, n_ctx)?;
    Ok(Session::new(model, o.tok, sampler))
}

fn print_timings(s: &Session) {
    let t = &s.timings;
    eprintln!(
        "\n[timings] prompt: {} tokens, {:.1} tok/s | generation: {} tokens, {:.1} tok/s",
        t.prompt_tokens,
        t.prompt_tps(),
        t.gen_tokens,
        t.gen_tps()
    );
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let max_tokens = args.sampling.max_tokens()?;
    let sampler = args.sampling.sampler()?;
    let opened = open_model(&args.model, &args.sampling, &args.runtime)?;
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
    let mut session = start_session(opened, sampler, n_ctx, &args.runtime)?;
    session.feed(&ids)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut io_err = None;
    let (_, reason) = session.generate(max_tokens, |text| {
        if io_err.is_none() {
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                io_err = Some(e);
            }
        }
    })?;
    if let Some(e) = io_err {
        return Err(common::stdout_error(e));
    }
    writeln!(out).map_err(common::stdout_error)?;
    if reason == StopReason::ContextFull {
        eprintln!(
            "[stopped: the context of {} tokens is full]",
            session.n_ctx()
        );
    }
    print_timings(&session);
    Ok(())
}

pub fn chat(args: ChatArgs) -> anyhow::Result<()> {
    let max_tokens = args.sampling.max_tokens()?;
    let sampler = args.sampling.sampler()?;
    let opened = open_model(&args.model, &args.sampling, &args.runtime)?;
    let source = opened
        .file
        .opt_str("tokenizer.chat_template")
        .context("chat template")?
        .map(str::to_string);
    let file_arch = opened
        .file
        .opt_str("general.architecture")
        .ok()
        .flatten()
        .map(str::to_string);
    let n_ctx = opened.n_ctx;
    let mut session = start_session(opened, sampler, n_ctx, &args.runtime)?;
    let tok = session.tokenizer();
    let bos = tok
        .bos()
        .map(|id| tok.token_text(id).to_string())
        .unwrap_or_default();
    let eos = tok
        .eos()
        .map(|id| tok.token_text(id).to_string())
        .unwrap_or_default();
    let source = match (&args.chat_template, source) {
        (Some(choice), _) => match known::named(choice) {
            Some(s) => s.to_string(),
            None => crate::common::read_text(std::path::Path::new(choice)).with_context(|| {
                format!(
                    "--chat-template {}: not a known format ({}) nor a readable file",
                    crate::common::printable(choice),
                    known::NAMES.join(", ")
                )
            })?,
        },
        (None, Some(s)) => s,
        (None, None) => {
            let arch = file_arch.as_deref().unwrap_or("");
            let (name, s) = known::for_architecture(arch);
            eprintln!(
                "[the model has no chat template; using the {name} turn format of its \
                 architecture (--chat-template overrides)]"
            );
            s.to_string()
        }
    };
    let template = ChatTemplate::new(&source, &bos, &eos).context("chat template")?;

    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(system) = &args.system {
        messages.push(ChatMessage {
            role: "system".into(),
            content: system.clone(),
        });
    }
    // The text of the conversation as it is in the KV cache.
    let mut rendered = String::new();
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
        let full = template.render(&messages, true).context("chat template")?;
        let delta = match full.strip_prefix(&rendered) {
            Some(d) => d.to_string(),
            None => bail!("the chat template re-rendered earlier turns differently; cannot continue the cached conversation"),
        };
        let first = session.n_past() == 0;
        // A template that writes BOS itself, for a vocabulary that adds it: only one BOS (as
        // llama.cpp does).
        let text = match delta.strip_prefix(bos.as_str()) {
            Some(rest) if first && !bos.is_empty() && session.tokenizer().add_bos() => rest,
            _ => delta.as_str(),
        };
        let ids = session.tokenizer().encode(text, first, true);
        if !session.fits(ids.len() + 1) {
            if first {
                bail!(
                    "the first message is {} tokens long with the template, more than the context of {} tokens holds (raise -c)",
                    ids.len(),
                    session.n_ctx()
                );
            }
            eprintln!(
                "[the context of {} tokens is full: start a new chat]",
                session.n_ctx()
            );
            break;
        }
        session.feed(&ids)?;
        rendered = full;
        let stdout = std::io::stdout();
        let mut reply = String::new();
        let mut io_err = None;
        let (_, reason) = session.generate(max_tokens, |text| {
            reply.push_str(text);
            if io_err.is_none() {
                let mut out = stdout.lock();
                if let Err(e) = out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
                    io_err = Some(e);
                }
            }
        })?;
        if let Some(e) = io_err {
            return Err(common::stdout_error(e));
        }
        common::outln!();
        rendered.push_str(&reply);
        messages.push(ChatMessage {
            role: "assistant".into(),
            content: reply,
        });
        if reason == StopReason::ContextFull {
            eprintln!(
                "[the context of {} tokens is full: start a new chat]",
                session.n_ctx()
            );
            break;
        }
    }
    print_timings(&session);
    Ok(())
}
