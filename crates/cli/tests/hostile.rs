//! The hostile-input suite (issue 11): mutants of the real test models run through `inspect`,
//! `tokenize`, `run -n 2` and `quantize` (and `chat` for chat templates) under a memory cap and a
//! timeout. Every command ends by an exit code (never a signal or a hang), with 0 or one final
//! `error: ` line, no panic, no raw control bytes, peak RSS within the file's size + 512 MiB, and
//! the input file and its directory untouched but for quantize's output. `hostile/paths.rs` does the
//! same for output paths (links, FIFOs, device nodes), signals, concurrent writers and stdout.
//!
//! CI runs a fixed, seeded sample of each family (about four minutes on two busy cores).
//! `RUSTORCH_HOSTILE_FULL=1` (or `scripts/hostile-sweep.sh`) runs every mutant, with a fresh seed
//! printed first: about 46,000 mutants, 0.6 s each, some eight hours on two cores.
//! `RUSTORCH_HOSTILE_SAMPLE=N` runs N mutants a family with a fresh seed; `RUSTORCH_HOSTILE_SEED=S`
//! replays a seed; `RUSTORCH_HOSTILE_CASE=TEXT` keeps the mutants whose id contains TEXT;
//! `RUSTORCH_HOSTILE_TIMEOUT=SECONDS` is the hang limit (30); `RUSTORCH_HOSTILE_VERBOSE=1` prints
//! every command's outcome.

mod common;
#[path = "hostile/layout.rs"]
mod layout;
#[path = "hostile/mutants.rs"]
mod mutants;
#[path = "hostile/paths.rs"]
mod paths;
#[path = "hostile/runner.rs"]
mod runner;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use layout::Layout;
use mutants::{Body, Mutant, Rng};
use runner::{End, Input, Output, Spec};

/// The seed CI samples with; a full sweep draws a fresh one.
const CI_SEED: u64 = 11;

struct Sweep {
    full: bool,
    /// Mutants a family in place of CI's counts (`RUSTORCH_HOSTILE_SAMPLE=N`, a fresh seed).
    per_family: Option<usize>,
    /// Print every command's outcome (`RUSTORCH_HOSTILE_VERBOSE=1`).
    verbose: bool,
    seed: u64,
    only: Option<String>,
}

fn sweep() -> &'static Sweep {
    static S: OnceLock<Sweep> = OnceLock::new();
    S.get_or_init(|| {
        let full = std::env::var("RUSTORCH_HOSTILE_FULL").is_ok_and(|v| v == "1");
        let per_family = std::env::var("RUSTORCH_HOSTILE_SAMPLE")
            .ok()
            .map(|n| n.parse().expect("RUSTORCH_HOSTILE_SAMPLE is a count"));
        let seed = match std::env::var("RUSTORCH_HOSTILE_SEED") {
            Ok(s) => s.parse().expect("RUSTORCH_HOSTILE_SEED is a number"),
            Err(_) if full || per_family.is_some() => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64,
            Err(_) => CI_SEED,
        };
        let mode = match (full, per_family) {
            (true, _) => "full sweep".to_string(),
            (false, Some(n)) => format!("{n} mutants a family"),
            (false, None) => "CI sample".to_string(),
        };
        eprintln!("hostile: {mode}, seed {seed} (replay: RUSTORCH_HOSTILE_SEED={seed})");
        Sweep {
            full,
            per_family,
            verbose: std::env::var("RUSTORCH_HOSTILE_VERBOSE").is_ok_and(|v| v == "1"),
            seed,
            only: std::env::var("RUSTORCH_HOSTILE_CASE").ok(),
        }
    })
}

/// A base model: its bytes and structure, read once.
struct Base {
    bytes: Arc<Vec<u8>>,
    layout: Layout,
}

fn base(name: &'static str) -> &'static Base {
    static BASES: OnceLock<Mutex<BTreeMap<&'static str, &'static Base>>> = OnceLock::new();
    let mut map = BASES.get_or_init(Default::default).lock().unwrap();
    map.entry(name).or_insert_with(|| {
        let bytes = std::fs::read(common::model(name)).unwrap();
        let layout = Layout::parse(&bytes);
        Box::leak(Box::new(Base {
            bytes: Arc::new(bytes),
            layout,
        }))
    })
}

/// `n` of `all` in CI (a seeded choice), all of them in a full sweep; then the RUSTORCH_HOSTILE_CASE
/// filter.
fn sample(mut all: Vec<Mutant>, n: usize, salt: u64) -> Vec<Mutant> {
    let s = sweep();
    let total = all.len();
    let n = s.per_family.unwrap_or(n);
    if !s.full && all.len() > n {
        Rng::new(s.seed ^ salt).shuffle(&mut all);
        all.truncate(n);
    }
    if let Some(only) = &s.only {
        all.retain(|m| m.id.contains(only.as_str()));
    }
    eprintln!("hostile: {} of {total} mutants (salt {salt})", all.len());
    all
}

/// A working directory holding one mutant at a time as `in.gguf`.
struct Bench {
    dir: tempfile::TempDir,
    base: &'static Base,
    /// Whether `in.gguf` now holds the base's bytes (so that a patch is a few writes).
    holds_base: bool,
}

impl Bench {
    fn new(base: &'static Base) -> Bench {
        Bench {
            dir: tempfile::tempdir().unwrap(),
            base,
            holds_base: false,
        }
    }

    fn input(&self) -> std::path::PathBuf {
        self.dir.path().join("in.gguf")
    }

    /// Writes the mutant to `in.gguf`; returns the bytes it holds.
    fn write(&mut self, m: &Mutant) -> Vec<u8> {
        use std::os::unix::fs::FileExt;
        let base = &self.base.bytes;
        match &m.body {
            Body::Patch(patches) => {
                if !self.holds_base {
                    std::fs::write(self.input(), base.as_slice()).unwrap();
                    self.holds_base = true;
                }
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(self.input())
                    .unwrap();
                let mut expected = base.to_vec();
                for (at, bytes) in patches {
                    f.write_all_at(bytes, *at as u64).unwrap();
                    expected[*at..*at + bytes.len()].copy_from_slice(bytes);
                }
                self.holds_base = false;
                expected
            }
            Body::Truncate(n) => {
                std::fs::write(self.input(), &base[..*n]).unwrap();
                self.holds_base = false;
                base[..*n].to_vec()
            }
            Body::Whole(layout) => {
                let bytes = layout.encode(base, self.base.layout.data_start);
                std::fs::write(self.input(), &bytes).unwrap();
                self.holds_base = false;
                bytes
            }
        }
    }

    /// Puts the base's bytes back over a patch (cheaper than rewriting the whole file).
    fn restore(&mut self, m: &Mutant) {
        use std::os::unix::fs::FileExt;
        if let Body::Patch(patches) = &m.body {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(self.input())
                .unwrap();
            for (at, bytes) in patches {
                f.write_all_at(&self.base.bytes[*at..*at + bytes.len()], *at as u64)
                    .unwrap();
            }
            self.holds_base = true;
        }
    }
}

/// The names in a directory, with each one's size and kind.
pub fn listing(dir: &Path) -> BTreeMap<String, (u64, String)> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            (
                e.file_name().to_string_lossy().to_string(),
                (md.len(), format!("{:?}", md.file_type())),
            )
        })
        .collect()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The commands every mutant runs, by its `Extra`.
fn commands(m: &Mutant) -> Vec<(Vec<String>, Input, bool)> {
    let f = "in.gguf";
    let mut c = vec![
        (s(&["inspect", f]), Input::Null, true),
        (s(&["tokenize", "-m", f, "-p", "hi"]), Input::Null, true),
        (
            s(&[
                "run", "-m", f, "-p", "hi", "-n", "2", "-c", "64", "--seed", "1", "-t", "1",
            ]),
            Input::Null,
            false,
        ),
        (
            s(&[
                "quantize",
                f,
                "out.gguf",
                "Q8_0",
                "--allow-requantize",
                "-t",
                "1",
            ]),
            Input::Null,
            false,
        ),
    ];
    if m.extra.model_ctx {
        c.push((
            s(&[
                "run", "-m", f, "-p", "hi", "-n", "2", "-c", "0", "--seed", "1", "-t", "1",
            ]),
            Input::Null,
            false,
        ));
    }
    if m.extra.inspect_all {
        c.push((s(&["inspect", "--metadata", f]), Input::Null, true));
        c.push((s(&["inspect", "--json", f]), Input::Null, true));
    }
    if m.extra.chat {
        let chat = s(&[
            "chat", "-m", f, "-n", "2", "-c", "64", "--seed", "1", "-t", "1", "--temp", "0",
        ]);
        c.push((chat.clone(), Input::Text(b"hi\n".to_vec()), false));
        c.push((chat, Input::Null, false));
    }
    c
}

/// Runs one mutant's commands; returns its failures, each one line.
fn run_mutant(bench: &mut Bench, m: &Mutant) -> Vec<String> {
    let mut fails = Vec::new();
    let expected = bench.write(m);
    let size = expected.len() as u64;
    let dir = bench.dir.path().to_path_buf();
    let before = listing(&dir);
    // inspect's verdict on the input (the first command): an output quantize copied the same
    // metadata into may fail it the same way.
    let mut input_inspect: Option<String> = None;
    for (args, stdin, stdout_is_text) in commands(m) {
        let spec = Spec {
            args: args.clone(),
            measure: true,
            cwd: &dir,
            stdin,
            stdout: Output::Capture,
            model_size: size,
        };
        let out = runner::run(&spec);
        let mut problems = out.problems(size, stdout_is_text);
        if args[..2] == ["inspect", "in.gguf"] && out.end != End::Code(0) {
            input_inspect = Some(String::from_utf8_lossy(&out.stderr).to_string());
        }
        let after = listing(&dir);
        if args[0] == "quantize" && out.end == End::Code(0) {
            let mut expect = before.clone();
            if let Some(o) = after.get("out.gguf") {
                expect.insert("out.gguf".into(), o.clone());
                let check = runner::run(&Spec {
                    args: s(&["inspect", "out.gguf"]),
                    measure: true,
                    cwd: &dir,
                    stdin: Input::Null,
                    stdout: Output::Capture,
                    model_size: o.0,
                });
                let same_as_input = input_inspect.as_ref().is_some_and(|e| {
                    *e == String::from_utf8_lossy(&check.stderr).replace("out.gguf", "in.gguf")
                });
                if check.end != End::Code(0) && !same_as_input {
                    problems.push(format!(
                        "quantize succeeded but its output does not inspect: {}",
                        check.describe()
                    ));
                }
            } else {
                problems.push("quantize succeeded without writing out.gguf".into());
            }
            if after != expect {
                problems.push(format!("directory after quantize: {after:?}"));
            }
        } else if after != before {
            problems.push(format!("directory changed: {after:?}"));
        }
        std::fs::remove_file(dir.join("out.gguf")).ok();
        if sweep().verbose {
            eprintln!(
                "[{}] {} | rustorch {} | {}",
                m.family,
                m.id,
                args.join(" "),
                out.describe()
            );
        }
        if !problems.is_empty() {
            fails.push(format!(
                "[{}] {} | rustorch {} | {} | {}",
                m.family,
                m.id,
                args.join(" "),
                problems.join("; "),
                out.describe()
            ));
        }
    }
    let now = std::fs::read(bench.input()).unwrap();
    if now != expected {
        fails.push(format!(
            "[{}] {} | the input file changed ({} -> {} bytes)",
            m.family,
            m.id,
            expected.len(),
            now.len()
        ));
        bench.holds_base = false;
    } else {
        bench.restore(m);
    }
    fails
}

/// Runs `mutants` of `base` two at a time; fails the test with every failing case listed.
fn run_family(name: &str, base_name: &'static str, mutants: Vec<Mutant>) {
    let start = Instant::now();
    let base = base(base_name);
    let next = AtomicUsize::new(0);
    let fails = Mutex::new(Vec::new());
    eprintln!("hostile {name}: {} mutants of {base_name}", mutants.len());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                let mut bench = Bench::new(base);
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(m) = mutants.get(i) else { break };
                    if i > 0 && i.is_multiple_of(500) {
                        eprintln!(
                            "hostile {name}: {i} of {} mutants, {:.0} s",
                            mutants.len(),
                            start.elapsed().as_secs_f64()
                        );
                    }
                    let f = run_mutant(&mut bench, m);
                    for line in &f {
                        eprintln!("FAIL {line}");
                    }
                    fails.lock().unwrap().extend(f);
                }
            });
        }
    });
    let fails = fails.into_inner().unwrap();
    eprintln!(
        "hostile {name}: {} mutants of {base_name}, {} failures, {:.1} s",
        mutants.len(),
        fails.len(),
        start.elapsed().as_secs_f64()
    );
    assert!(
        fails.is_empty(),
        "{name}: {} of the command runs on {} mutants failed (seed {}):\n{}",
        fails.len(),
        mutants.len(),
        sweep().seed,
        fails.join("\n")
    );
}

fn smollm2() -> &'static Base {
    base(common::SMOLLM)
}

#[test]
fn smollm2_truncations() {
    let b = smollm2();
    let all = mutants::truncations(&b.bytes, &b.layout);
    run_family("truncations", common::SMOLLM, sample(all, 16, 1));
}

/// Boundary values in the tensor-info fields, or in the header and metadata fields.
fn smollm2_fields(tensor_infos: bool) -> Vec<Mutant> {
    let b = smollm2();
    mutants::field_values(&b.bytes, &b.layout)
        .into_iter()
        .filter(|m| m.id.starts_with("tensor[") == tensor_infos)
        .collect()
}

#[test]
fn smollm2_header_and_metadata_fields() {
    let all = smollm2_fields(false);
    run_family(
        "header and metadata fields",
        common::SMOLLM,
        sample(all, 24, 2),
    );
}

#[test]
fn smollm2_tensor_info_fields() {
    let all = smollm2_fields(true);
    run_family("tensor-info fields", common::SMOLLM, sample(all, 24, 12));
}

#[test]
fn smollm2_structure() {
    let all = mutants::structure(&smollm2().layout);
    run_family("structure", common::SMOLLM, sample(all, 12, 13));
}

#[test]
fn smollm2_byte_flips() {
    let b = smollm2();
    let n = if sweep().full {
        2000
    } else {
        sweep().per_family.unwrap_or(24)
    };
    let all = mutants::flips(&b.bytes, &b.layout, &mut Rng::new(sweep().seed ^ 3), n);
    run_family("byte flips", common::SMOLLM, sample(all, n, 3));
}

#[test]
fn smollm2_hyper_parameters() {
    let b = smollm2();
    let all = mutants::hyper_parameters(&b.layout);
    run_family("hyper-parameters", common::SMOLLM, sample(all, 24, 4));
}

#[test]
fn smollm2_hostile_strings() {
    let b = smollm2();
    let all = mutants::hostile_strings(&b.layout);
    run_family("hostile strings", common::SMOLLM, sample(all, 12, 5));
}

#[test]
fn smollm2_hostile_templates() {
    let b = smollm2();
    let all = mutants::templates(&b.layout);
    // Every template, in CI too: they are the ones that could run for ever.
    let n = all.len();
    run_family("chat templates", common::SMOLLM, sample(all, n, 6));
}

#[test]
fn gemma_mutants() {
    let b = base(common::GEMMA);
    let mut all = sample(mutants::truncations(&b.bytes, &b.layout), 4, 7);
    all.extend(sample(mutants::field_values(&b.bytes, &b.layout), 8, 8));
    let n = if sweep().full {
        500
    } else {
        sweep().per_family.unwrap_or(4)
    };
    let flips = mutants::flips(&b.bytes, &b.layout, &mut Rng::new(sweep().seed ^ 9), n);
    all.extend(sample(flips, n, 9));
    all.extend(sample(mutants::hostile_strings(&b.layout), 2, 10));
    all.extend(sample(mutants::templates(&b.layout), 3, 11));
    run_family("gemma mutants", common::GEMMA, all);
}
