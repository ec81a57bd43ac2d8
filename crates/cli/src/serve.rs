//! `serve`: the OpenAI-compatible HTTP server (`rustorch-server`) on a model loaded here.

use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use rustorch_engine::engine::{Engine, EngineConfig, EngineHandle};
use rustorch_server::{Loaded, ServeConfig};

use crate::common::{self, ModelArg, RuntimeArgs};
use crate::generate::{self, SamplingArgs};

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any free port; the first line printed says which)
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Sequences generated at once (each step evaluates all of them in one forward pass)
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub parallel: u32,
    /// KV cache pool in tokens, shared by all sequences (one request may use up to the model's
    /// context) [default: 4096 per parallel sequence]
    #[arg(short = 'c', long = "ctx-size", value_parser = clap::value_parser!(u32).range(1..=16_777_216))]
    pub ctx: Option<u32>,
    /// Positions one sequence may reach (0: the model's training context)
    #[arg(long = "seq-ctx", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1_048_576))]
    pub seq_ctx: u32,
    /// Requests waiting for a sequence at most; more get 429 with Retry-After
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub queue: u32,
    /// Require `Authorization: Bearer KEY` on every API request [env: RUSTORCH_API_KEY]
    #[arg(long = "api-key", value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model's name in the API [default: the file name without .gguf]
    #[arg(long)]
    pub alias: Option<String>,
    /// An origin allowed to call the API from web pages (`*`: any)
    #[arg(long, value_name = "ORIGIN")]
    pub cors: Option<String>,
    /// The turn format: a known name (chatml, gemma, llama3, phi3) or a Jinja file; default:
    /// the file's `tokenizer.chat_template`, else its architecture's format
    #[arg(long, value_name = "NAME|FILE")]
    pub chat_template: Option<String>,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Logs on stderr, off but for warnings unless RUSTORCH_LOG asks (`RUSTORCH_LOG=info`: a
    // line per request with its status and time).
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUSTORCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    let path = args.model.path()?;
    // What can be checked before listening is: a bad flag or file fails at once.
    let sampling = args.sampling.sampler()?;
    let max_tokens = match args.sampling.max_tokens()? {
        usize::MAX => None,
        n => Some(n),
    };
    let api_key = match args.api_key.clone() {
        Some(k) => Some(k),
        None => std::env::var("RUSTORCH_API_KEY").ok(),
    };
    if api_key.as_deref().is_some_and(|k| k.trim().is_empty()) {
        bail!("--api-key must not be empty");
    }
    if let Some(origin) = &args.cors {
        if origin != "*" && not_an_origin(origin) {
            bail!(
                "--cors {}: not an origin (scheme://host[:port]) nor *",
                common::printable(origin)
            );
        }
    }
    args.runtime.init_threads()?;
    let model_id = match &args.alias {
        Some(a) if !a.is_empty() => a.clone(),
        Some(_) => bail!("--alias must not be empty"),
        None => path
            .file_name()
            .map(|n| n.to_string_lossy().trim_end_matches(".gguf").to_string())
            .unwrap_or_else(|| "model".into()),
    };
    let cfg = ServeConfig {
        host: args.host.clone(),
        port: args.port,
        api_key,
        model_id,
        cors: args.cors.clone(),
        seed: args.sampling.seed,
        sampling,
        max_tokens,
    };
    let load = Box::new(move || load(&args, &path));
    rustorch_server::serve(cfg, load)
}

/// An origin is `scheme://host[:port]`, printable ASCII.
fn not_an_origin(origin: &str) -> bool {
    !(origin.contains("://") && origin.bytes().all(|b| b.is_ascii_graphic()))
}

fn load(args: &ServeArgs, path: &std::path::Path) -> anyhow::Result<Loaded> {
    let (file, tok) = common::open_with_tokenizer(path)?;
    let template = generate::chat_template(&file, &tok, args.chat_template.as_deref())?;
    let n_ctx_train = rustorch_model::Config::from_gguf(&file)
        .with_context(|| path.display().to_string())?
        .n_ctx_train;
    let seq_ctx = match args.seq_ctx {
        0 => n_ctx_train,
        n => n as usize,
    };
    let parallel = args.parallel as usize;
    let pool = args.ctx.map(|c| c as usize).unwrap_or(4096 * parallel);
    let block = rustorch_model::KV_BLOCK;
    let size = rustorch_model::KvSize {
        n_seq: parallel,
        seq_ctx,
        n_blocks: pool.div_ceil(block),
    };
    let model = args.runtime.load_cache(path, file, size)?;
    let tok = Arc::new(tok);
    let cfg = EngineConfig {
        max_waiting: args.queue as usize,
        // Streams keep their pace while long prompts are prefilled beside them.
        pace_prompts: true,
        ..EngineConfig::default()
    };
    let engine = EngineHandle::spawn(Engine::new(model, tok.clone(), cfg));
    Ok(Loaded {
        engine,
        tok,
        template,
    })
}
