//! Pieces every subcommand shares: the model flag, opening files, the thread pool, backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use rustorch_gguf::GgufFile;
use rustorch_model::Device;
use rustorch_tokenizer::Tokenizer;

pub const DEFAULT_MODEL: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

#[derive(Args, Clone)]
pub struct ModelArg {
    /// GGUF model file [default: SmolLM2-135M-Instruct Q4_1 from scripts/fetch-models.sh]
    #[arg(short = 'm', long = "model", value_name = "FILE")]
    pub model: Option<PathBuf>,
}

impl ModelArg {
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        match &self.model {
            Some(p) => Ok(p.clone()),
            None => {
                let p = crate::models_dir().join(DEFAULT_MODEL);
                if !p.exists() {
                    bail!("no model given and the default model is missing at {} (run scripts/fetch-models.sh)", p.display());
                }
                Ok(p)
            }
        }
    }
}

#[derive(Args, Clone)]
pub struct RuntimeArgs {
    /// Threads [default: the number of cores]
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Backend: cpu, cuda, metal or vulkan
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub backend: Device,
}

fn parse_device(s: &str) -> Result<Device, String> {
    Device::parse(s).ok_or_else(|| {
        format!(
            "unknown backend '{s}' (expected one of: {})",
            Device::NAMES.join(", ")
        )
    })
}

impl RuntimeArgs {
    pub fn init_threads(&self) -> anyhow::Result<()> {
        init_threads(self.threads)
    }
}

/// Sizes rayon's global pool once.
pub fn init_threads(threads: Option<u32>) -> anyhow::Result<()> {
    let n = match threads {
        Some(n) => n as usize,
        None => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the thread pool")?;
    Ok(())
}

pub fn open(path: &Path) -> anyhow::Result<Arc<GgufFile>> {
    let file = GgufFile::open(path).with_context(|| format!("{}", path.display()))?;
    Ok(Arc::new(file))
}

pub fn open_with_tokenizer(path: &Path) -> anyhow::Result<(Arc<GgufFile>, Tokenizer)> {
    let file = open(path)?;
    let tok =
        Tokenizer::from_gguf(&file).with_context(|| format!("{}: tokenizer", path.display()))?;
    Ok((file, tok))
}
