//! Issue 11's items on hostile metadata and flags, one regression test each: counts checked
//! against the file before anything is allocated, a KV cache sized from the work, absurd thread
//! counts, and the smaller error-message cases. (The mutant sweep is `hostile.rs`.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Runs `rustorch args` with `stdin` and returns (exit code, stdout, stderr, peak RSS in MiB).
fn run_measured(args: &[&str], env: &[(&str, &str)], stdin: &str) -> (i32, String, String, u64) {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    // Reaped by wait4 below (which also gives the peak memory), not by `Child::wait`.
    #[allow(clippy::zombie_processes)]
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        let _ = input.write_all(stdin.as_bytes());
    }
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 writes it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: the pid is our child's, which std has not waited for.
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as i32);
    assert!(
        libc::WIFEXITED(status),
        "{args:?} ended by signal {}",
        libc::WTERMSIG(status)
    );
    (
        libc::WEXITSTATUS(status),
        std::fs::read_to_string(out).unwrap(),
        std::fs::read_to_string(err).unwrap(),
        usage.ru_maxrss as u64 / 1024,
    )
}

/// The one line of an error run, checked: exit 1, one line on stderr starting `error: `.
fn one_line_error(args: &[&str], env: &[(&str, &str)], stdin: &str) -> String {
    let (code, _, err, _) = run_measured(args, env, stdin);
    assert_eq!(code, 1, "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one line expected: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_string()
}

fn smollm() -> String {
    common::model(common::SMOLLM).to_str().unwrap().to_string()
}

/// A copy of SmolLM2 with the u32 value of `key` replaced.
fn with_u32(dir: &Path, key: &str, value: u32) -> PathBuf {
    let mut bytes = std::fs::read(common::model(common::SMOLLM)).unwrap();
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_bytes())
        .unwrap()
        + key.len();
    assert_eq!(&bytes[at..at + 4], &4u32.to_le_bytes(), "{key} is a u32");
    bytes[at + 4..at + 8].copy_from_slice(&value.to_le_bytes());
    let p = dir.join(format!("{key}-{value}.gguf"));
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn block_count_is_checked_against_the_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let p = with_u32(dir.path(), "llama.block_count", u32::MAX);
    let p = p.to_str().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(&text, "word ".repeat(2000)).unwrap();
    let text = text.to_str().unwrap();
    for args in [
        vec!["run", "-m", p, "-p", "hi", "-n", "2"],
        vec!["bench", "-m", p, "-p", "8", "-n", "2", "-r", "1"],
        vec!["perplexity", "-m", p, "-f", text, "-c", "128"],
        vec!["logits", "-m", p, "-p", "hi"],
        vec!["chat", "-m", p],
    ] {
        let (code, _, err, rss) = run_measured(&args, &[], "hi\n");
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("block_count is 4294967295"), "{args:?}: {err}");
        assert!(rss < 256, "{args:?}: peak RSS {rss} MiB");
    }
}

#[test]
fn the_kv_cache_is_sized_by_the_work() {
    let m = smollm();
    // A huge context for a two-token generation: the cache holds what is evaluated.
    let (code, out, err, rss) = run_measured(
        &[
            "run", "-m", &m, "-p", "hi", "-n", "2", "-c", "1048576", "--temp", "0",
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    let file_mib = std::fs::metadata(&m).unwrap().len() >> 20;
    assert!(
        rss < file_mib + 256,
        "run -c 1048576 -n 2: peak RSS {rss} MiB"
    );
    // A short text and a huge perplexity context: refused before the model is loaded.
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("short.txt");
    std::fs::write(&text, "eight tokens of text at most").unwrap();
    let (code, _, err, rss) = run_measured(
        &[
            "perplexity",
            "-m",
            &m,
            "-f",
            text.to_str().unwrap(),
            "-c",
            "1000000",
        ],
        &[],
        "",
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("fewer than one chunk"), "{err}");
    assert!(rss < 256, "perplexity -c 1000000: peak RSS {rss} MiB");
}

#[test]
fn a_cache_larger_than_memory_is_refused_up_front() {
    // context_length = 2^31 with -c 0 and unbounded generation: 2^31 positions of SmolLM2's
    // cache are ~1.5 TiB, more than any test machine has; the error says how much.
    let dir = tempfile::tempdir().unwrap();
    let p = with_u32(dir.path(), "llama.context_length", 1 << 31);
    let e = one_line_error(
        &["run", "-m", p.to_str().unwrap(), "-p", "hi", "-c", "0"],
        &[],
        "",
    );
    assert!(
        e.contains("KV cache") && e.contains("MiB") && e.contains("available"),
        "{e}"
    );
}

#[test]
fn absurd_thread_counts_are_capped() {
    let m = smollm();
    let (code, out, err, _) = run_measured(
        &[
            "run", "-m", &m, "-p", "hi", "-n", "4", "-t", "1024", "--temp", "0",
        ],
        &[],
        "",
    );
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    assert!(err.contains("warning: -t 1024"), "{err}");
}

#[test]
fn smaller_error_cases() {
    let m = smollm();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // A directory as the model.
    let e = one_line_error(&["run", "-m", d, "-p", "hi"], &[], "");
    assert!(e.contains("is a directory"), "{e}");
    // A missing file: the path and the OS error once each.
    let missing = dir.path().join("missing.gguf");
    let e = one_line_error(&["inspect", missing.to_str().unwrap()], &[], "");
    assert_eq!(e.matches("missing.gguf").count(), 1, "{e}");
    assert_eq!(e.matches("os error").count(), 1, "{e}");
    // Chat whose first message does not fit the context.
    let long = format!("{}\n", "many words in a long message ".repeat(20));
    let e = one_line_error(&["chat", "-m", &m, "-c", "32"], &[], &long);
    assert!(e.contains("context"), "{e}");
    // An unknown ISA name.
    let e = one_line_error(
        &["tokenize", "-m", &m, "-p", "hi"],
        &[("RUSTORCH_ISA", "bogus")],
        "",
    );
    assert!(e.contains("RUSTORCH_ISA"), "{e}");
}

#[test]
fn a_wrongly_typed_chat_template_fails_only_chat() {
    // SmolLM2 rewritten with tokenizer.chat_template as a number.
    use rustorch_gguf::{GgufFile, GgufWriter, TensorSpec, Value};
    let src = GgufFile::open(common::model(common::SMOLLM)).unwrap();
    let metadata: Vec<(String, Value)> = src
        .metadata()
        .iter()
        .map(|(k, v)| match k.as_str() {
            "tokenizer.chat_template" => (k.clone(), Value::U32(7)),
            _ => (k.clone(), v.clone()),
        })
        .collect();
    let specs: Vec<TensorSpec> = src
        .tensors()
        .iter()
        .map(|t| TensorSpec {
            name: t.name.clone(),
            dims: t.dims.clone(),
            ty: t.ty,
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("template-u32.gguf");
    let mut w = GgufWriter::create(&p, &metadata, &specs).unwrap();
    for t in src.tensors() {
        w.write_tensor_data(src.tensor_data(t)).unwrap();
    }
    w.commit().unwrap();
    let p = p.to_str().unwrap();
    let (code, out, err, _) = run_measured(&["run", "-m", p, "-p", "hi", "-n", "2"], &[], "");
    assert_eq!(code, 0, "run does not use the template: {err}");
    assert!(!out.is_empty());
    let e = one_line_error(&["chat", "-m", p], &[], "hi\n");
    assert!(e.contains("chat_template"), "{e}");
}

#[test]
fn endless_input_is_bounded() {
    // A text file or a chat line that never ends: an error at a fixed size, not all of memory.
    let m = smollm();
    let (code, _, err, rss) = run_measured(&["perplexity", "-m", &m, "-f", "/dev/zero"], &[], "");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("longer than"), "{err}");
    assert!(rss < 512, "perplexity -f /dev/zero: peak RSS {rss} MiB");
    let out = Command::new(env!("CARGO_BIN_EXE_rustorch"))
        .args(["chat", "-m", &m, "-n", "2"])
        .stdin(std::fs::File::open("/dev/zero").unwrap())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("longer than"), "{err}");
}
