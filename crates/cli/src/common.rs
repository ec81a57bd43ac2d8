//! Pieces every subcommand shares: the model flag, opening files, the thread pool, backends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::Args;
use rustorch_gguf::GgufFile;
use rustorch_model::{BackendOptions, Device};
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
    /// A backend setting, KEY=VALUE (repeatable): cpu.pack, cuda.graph, cuda.flash, cuda.pdl,
    /// cuda.prefetch, cuda.attn_prefetch, cuda.mv_warps, cuda.wpr_max, cuda.qgemm, cuda.qgemm_tm,
    /// cuda.qgemm_sb, wgpu.adapter, wgpu.profile,
    /// wgpu.subgroups, wgpu.matvec, wgpu.checked, wgpu.timeout, wgpu.submit_every, wgpu.mv,
    /// wgpu.max_binding, wgpu.tile_min, wgpu.attn_tile_min, wgpu.f16, wgpu.kv_f16, wgpu.q8,
    /// wgpu.tile_prefetch, wgpu.coop
    #[arg(long = "backend-opt", value_name = "KEY=VALUE")]
    pub backend_opts: Vec<String>,
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

    /// The backends' options: defaults, the documented environment switches, then each
    /// `--backend-opt`.
    pub fn backend_options(&self) -> anyhow::Result<BackendOptions> {
        let mut opts = BackendOptions::from_env();
        for pair in &self.backend_opts {
            opts.set_pair(pair).map_err(anyhow::Error::msg)?;
        }
        Ok(opts)
    }

    /// Loads the model in `file` (named `path` in errors) on the chosen backend with a KV cache
    /// of `size`.
    pub fn load_cache(
        &self,
        path: &Path,
        file: Arc<GgufFile>,
        size: rustorch_model::KvSize,
    ) -> anyhow::Result<Box<dyn rustorch_model::Model>> {
        let opts = self.backend_options()?;
        rustorch_model::load_cache(file, self.backend, size, &opts)
            .with_context(|| path.display().to_string())
    }

    /// Loads the model in `file` (named `path` in errors) on the chosen backend.
    pub fn load(
        &self,
        path: &Path,
        file: Arc<GgufFile>,
        n_ctx: usize,
    ) -> anyhow::Result<Box<dyn rustorch_model::Model>> {
        let opts = self.backend_options()?;
        rustorch_model::load_with(file, self.backend, n_ctx, &opts)
            .with_context(|| path.display().to_string())
    }
}

/// Sizes rayon's global pool once. More threads than the CPUs the process may use only slow the
/// spinning pool down (each waits for the others to be scheduled): capped there, with a warning.
pub fn init_threads(threads: Option<u32>) -> anyhow::Result<()> {
    let n = match threads {
        Some(n) => {
            let cpus = available_cpus();
            let n = n as usize;
            if n > cpus {
                eprintln!(
                    "warning: -t {n} is more than the {cpus} CPUs this process may use; using {cpus}"
                );
                cpus
            } else {
                n
            }
        }
        None => physical_cores(),
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
        .context("starting the thread pool")?;
    Ok(())
}

/// Logical CPUs this process may run on.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

pub fn open(path: &Path) -> anyhow::Result<Arc<GgufFile>> {
    if path.is_dir() {
        bail!("{}: is a directory, not a GGUF file", path.display());
    }
    // The reader's errors name the file already.
    Ok(Arc::new(GgufFile::open(path)?))
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
    let logical = available_cpus();
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

/// `println!` that returns an error (see [`stdout_error`]) instead of panicking when stdout is
/// closed or full.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::common::stdout_error)?
    }};
}
pub(crate) use outln;

/// A failed write to stdout. A closed pipe (`| head`) is not reported: `main` ends the program
/// quietly with the status a shell gives a process killed by SIGPIPE.
pub fn stdout_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context("writing to stdout")
}

/// Whether `e` is a write to a closed pipe.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `s` safe to print on a terminal: control characters (C0, DEL, C1) and the bidirectional
/// overrides are written as escapes (`\u{1b}`), so a string from a downloaded file cannot drive
/// the terminal. Generated text is printed as the model produced it, never through this.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    fn hostile(c: char) -> bool {
        c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    }
    if !s.chars().any(hostile) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if hostile(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// JSON text with the characters [`printable`] escapes written as `\uXXXX` inside strings
/// (serde_json escapes only C0 there; raw newlines and tabs are the layout between values): the
/// same JSON value, safe on a terminal.
pub fn printable_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        let layout = matches!(c, '\n' | '\r' | '\t');
        if !layout
            && (c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// An error as one line: the cause chain joined by `: `, without the repetitions that arise when
/// a message already includes its source's text (or a context repeats the start of its cause),
/// newlines folded, and control characters escaped.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let m = cause.to_string();
        let m = m.trim();
        if m.is_empty() || parts.iter().any(|p| p.contains(m)) {
            continue;
        }
        match parts.last_mut() {
            Some(last) if m.starts_with(last.as_str()) => *last = m.to_string(),
            _ => parts.push(m.to_string()),
        }
    }
    let line = parts.join(": ").replace(['\r', '\n'], " ");
    printable(&line).into_owned()
}

/// Longest text file (`perplexity -f`, `logits -f`) or chat message read: more than any context
/// holds, and a bound on memory when the input never ends (`-f /dev/zero`).
pub const MAX_TEXT_BYTES: u64 = 128 << 20;

/// The UTF-8 text of `path`, at most [`MAX_TEXT_BYTES`].
pub fn read_text(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let what = || format!("reading {}", path.display());
    if path.is_dir() {
        bail!("{}: is a directory, not a text file", path.display());
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .with_context(what)?
        .take(MAX_TEXT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(what)?;
    if bytes.len() as u64 > MAX_TEXT_BYTES {
        bail!(
            "{}: longer than {} MiB of text",
            path.display(),
            MAX_TEXT_BYTES >> 20
        );
    }
    String::from_utf8(bytes).map_err(|e| {
        anyhow::anyhow!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// One line of `input` (without its end), at most `limit` bytes; `None` at the end of input.
pub fn read_line(input: &mut impl std::io::BufRead, limit: u64) -> anyhow::Result<Option<String>> {
    use std::io::{BufRead, Read};
    let mut bytes = Vec::new();
    let n = Read::take(&mut *input, limit + 1)
        .read_until(b'\n', &mut bytes)
        .context("reading stdin")?;
    if n == 0 {
        return Ok(None);
    }
    if bytes.len() as u64 > limit && bytes.last() != Some(&b'\n') {
        bail!("a line of input is longer than {} MiB", limit >> 20);
    }
    let line =
        String::from_utf8(bytes).map_err(|_| anyhow::anyhow!("stdin: a line is not UTF-8 text"))?;
    Ok(Some(line))
}
