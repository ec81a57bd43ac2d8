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
    /// Threads [default: the number of physical cores]
    #[arg(short = 't', long = "threads", value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub threads: Option<u32>,
    /// Backend: cpu, cuda, metal, vulkan, or gpu (CUDA, then Metal/Vulkan, whichever is built and present)
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
        None => physical_cores(),
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

/// Physical cores (hyper-threads rarely help memory-bound decode): distinct (package, core) pairs
/// in /proc/cpuinfo on Linux, else the logical CPUs the process may use.
pub fn physical_cores() -> usize {
    let logical = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
        return logical;
    };
    let mut cores = std::collections::HashSet::new();
    let (mut package, mut core) = (None, None);
    for line in info.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (package.take(), core.take()) {
                cores.insert((p, c));
            }
            continue;
        }
        let mut kv = line.splitn(2, ':').map(str::trim);
        match (kv.next(), kv.next()) {
            (Some("physical id"), Some(v)) => package = Some(v.to_string()),
            (Some("core id"), Some(v)) => core = Some(v.to_string()),
            _ => {}
        }
    }
    // The affinity mask may allow fewer CPUs than the machine has.
    if cores.is_empty() {
        logical
    } else {
        cores.len().min(logical)
    }
}

/// For commands that write files: on SIGINT, SIGTERM or SIGHUP, remove the temporary files of
/// outputs not yet complete, then end the process by that signal as it would have ended.
pub fn clean_up_outputs_on_signals() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
            .context("installing signal handlers")?;
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                rustorch_gguf::output::remove_pending();
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        });
    }
    Ok(())
}
