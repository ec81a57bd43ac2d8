//! Where a command writes: `quantize` and `synth` given outputs that are the input under another
//! name, links, a FIFO, a device node, a directory or a missing directory, interrupted by SIGINT /
//! SIGTERM, or racing another writer; and every printing command's stdout full or closed. FIFOs and
//! device nodes are made inside a temporary directory: no test touches a real device node.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::common;
use super::runner::{self, End, Input, Output, Spec};

/// What each entry of a directory is: kind, size, inode and a hash of its content (regular files),
/// its target (symlinks) or its device number (device nodes).
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let md = std::fs::symlink_metadata(&p).unwrap();
        let ft = md.file_type();
        let what = if ft.is_file() {
            let mut h = Sha256::new();
            h.update(std::fs::read(&p).unwrap());
            format!(
                "file {} bytes, inode {}, sha256 {:x}",
                md.len(),
                md.ino(),
                h.finalize()
            )
        } else if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&p).unwrap().display())
        } else if ft.is_dir() {
            format!(
                "directory of {} entries",
                std::fs::read_dir(&p).unwrap().count()
            )
        } else if ft.is_fifo() {
            format!("fifo, inode {}", md.ino())
        } else if ft.is_char_device() {
            format!("char device {:x}", md.rdev())
        } else {
            format!("{ft:?}")
        };
        out.insert(e.file_name().to_string_lossy().to_string(), what);
    }
    out
}

fn c_path(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn mkfifo(p: &Path) {
    let c = c_path(p);
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "mkfifo {}",
        p.display()
    );
}

/// A character device node with /dev/null's numbers (1:3), inside the test's own directory.
fn mknod_null(p: &Path) {
    let c = c_path(p);
    // SAFETY: a valid NUL-terminated path; the node is created in a temporary directory.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
    assert_eq!(
        r,
        0,
        "mknod {} (the suite runs as root): {}",
        p.display(),
        std::io::Error::last_os_error()
    );
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn smollm2_size() -> u64 {
    std::fs::metadata(common::model(common::SMOLLM))
        .unwrap()
        .len()
}

/// Copies SmolLM2 into `dir` as `name`.
fn copy_model(dir: &Path, name: &str) {
    std::fs::copy(common::model(common::SMOLLM), dir.join(name)).unwrap();
}

/// One output-path case: `setup` makes the directory's files, then the command runs in it.
struct Case {
    name: &'static str,
    setup: fn(&Path),
    args: Vec<String>,
    /// The entry the command was asked to write (relative to the directory); `None` when it is
    /// another name of a file that must survive.
    output: Option<&'static str>,
    /// Whether any other outcome than a one-line error destroys a file (the output is the input).
    must_fail: bool,
}

fn check_case(c: &Case, model_size: u64) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    (c.setup)(d);
    let before = snapshot(d);
    let out = runner::run(&Spec {
        args: c.args.clone(),
        measure: true,
        cwd: d,
        stdin: Input::Null,
        stdout: Output::Capture,
        model_size,
    });
    let mut p = out.problems(model_size, false);
    let after = snapshot(d);
    let ok = out.end == End::Code(0);
    if c.must_fail && ok {
        p.push("succeeded, but its output is its input".into());
    }
    for (name, was) in &before {
        // A symbolic-link output is replaced by the new file; the file it led to must stay.
        if ok && Some(name.as_str()) == c.output {
            continue;
        }
        match after.get(name) {
            Some(now) if now == was => {}
            Some(now) => p.push(format!("{name} changed: {was} -> {now}")),
            None => p.push(format!("{name} removed (was {was})")),
        }
    }
    for (name, now) in &after {
        if !(before.contains_key(name) || ok && Some(name.as_str()) == c.output) {
            p.push(format!("a new file {name} was left: {now}"));
        }
    }
    if ok {
        if let Some(o) = c.output {
            let was = before.get(o).map(String::as_str).unwrap_or("");
            let special = was.starts_with("fifo") || was.starts_with("char device");
            if special {
                // Writing into a device is fine; replacing it is not.
                if after.get(o).map(String::as_str) != Some(was) {
                    p.push(format!("the {was} was replaced by {:?}", after.get(o)));
                }
            } else {
                let check = runner::run(&Spec {
                    args: strings(&["inspect", o]),
                    measure: true,
                    cwd: d,
                    stdin: Input::Null,
                    stdout: Output::Capture,
                    model_size: 0,
                });
                if check.end != End::Code(0) {
                    p.push(format!(
                        "succeeded, but {o} is not a complete GGUF: {}",
                        check.describe()
                    ));
                }
            }
        }
    }
    p.into_iter()
        .map(|x| {
            format!(
                "{} | rustorch {} | {x} | {}",
                c.name,
                c.args.join(" "),
                out.describe()
            )
        })
        .collect()
}

fn run_cases(what: &str, cases: Vec<Case>, model_size: u64) {
    let fails: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .map(|c| scope.spawn(move || check_case(c, model_size)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    for f in &fails {
        eprintln!("FAIL {f}");
    }
    assert!(
        fails.is_empty(),
        "{what}: {} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

fn quantize(input: &str, output: &str) -> Vec<String> {
    strings(&[
        "quantize",
        input,
        output,
        "Q8_0",
        "--allow-requantize",
        "-t",
        "1",
    ])
}

#[test]
fn quantize_output_paths() {
    let case = |name, setup: fn(&Path), input: &str, output: &'static str, must_fail| Case {
        name,
        setup,
        args: quantize(input, output),
        output: Some(output),
        must_fail,
    };
    let cases = vec![
        case(
            "output is the input",
            |d| copy_model(d, "in.gguf"),
            "in.gguf",
            "in.gguf",
            true,
        ),
        case(
            "output ./in.gguf is the input in.gguf",
            |d| copy_model(d, "in.gguf"),
            "in.gguf",
            "./in.gguf",
            true,
        ),
        case(
            "input through a symlink, output its target",
            |d| {
                copy_model(d, "in.gguf");
                std::os::unix::fs::symlink("in.gguf", d.join("link.gguf")).unwrap();
            },
            "link.gguf",
            "in.gguf",
            true,
        ),
        case(
            "output a hard link of the input",
            |d| {
                copy_model(d, "in.gguf");
                std::fs::hard_link(d.join("in.gguf"), d.join("hard.gguf")).unwrap();
            },
            "in.gguf",
            "hard.gguf",
            false,
        ),
        case(
            "output a symlink to the input",
            |d| {
                copy_model(d, "in.gguf");
                std::os::unix::fs::symlink("in.gguf", d.join("link.gguf")).unwrap();
            },
            "in.gguf",
            "link.gguf",
            false,
        ),
        case(
            "output a symlink to another file",
            |d| {
                copy_model(d, "in.gguf");
                keep(d);
                std::os::unix::fs::symlink("keep.gguf", d.join("link.gguf")).unwrap();
            },
            "in.gguf",
            "link.gguf",
            false,
        ),
        case(
            "output a hard link of another file",
            |d| {
                copy_model(d, "in.gguf");
                keep(d);
                std::fs::hard_link(d.join("keep.gguf"), d.join("hard.gguf")).unwrap();
            },
            "in.gguf",
            "hard.gguf",
            false,
        ),
        case(
            "output a dangling symlink",
            |d| {
                copy_model(d, "in.gguf");
                std::os::unix::fs::symlink("elsewhere.gguf", d.join("link.gguf")).unwrap();
            },
            "in.gguf",
            "link.gguf",
            false,
        ),
        case(
            "input x.gguf.partial, output x",
            |d| copy_model(d, "x.gguf.partial"),
            "x.gguf.partial",
            "x",
            false,
        ),
        case(
            "an unrelated out.gguf.partial beside the output",
            |d| {
                copy_model(d, "in.gguf");
                std::fs::write(d.join("out.gguf.partial"), b"someone else's file\n").unwrap();
            },
            "in.gguf",
            "out.gguf",
            false,
        ),
        case(
            "output a FIFO",
            |d| {
                copy_model(d, "in.gguf");
                mkfifo(&d.join("fifo.gguf"));
            },
            "in.gguf",
            "fifo.gguf",
            false,
        ),
        case(
            "output a character device node",
            |d| {
                copy_model(d, "in.gguf");
                mknod_null(&d.join("null.gguf"));
            },
            "in.gguf",
            "null.gguf",
            false,
        ),
        case(
            "output a directory",
            |d| {
                copy_model(d, "in.gguf");
                std::fs::create_dir(d.join("outdir")).unwrap();
            },
            "in.gguf",
            "outdir",
            false,
        ),
        case(
            "output in a missing directory",
            |d| copy_model(d, "in.gguf"),
            "in.gguf",
            "missing/out.gguf",
            false,
        ),
    ];
    run_cases("quantize output paths", cases, smollm2_size());
}

/// An unrelated small file that links and special outputs stand next to.
fn keep(d: &Path) {
    std::fs::write(d.join("keep.gguf"), b"not yours to overwrite\n").unwrap();
}

fn synth(output: &str) -> Vec<String> {
    strings(&[
        "synth",
        "--shape",
        "smollm2-135m",
        "-o",
        output,
        "--type",
        "Q8_0",
        "-t",
        "1",
    ])
}

/// Bytes of synth's smollm2-135m Q8_0 file, the RSS budget's base.
const SYNTH_SIZE: u64 = 145 * runner::MIB;

#[test]
fn synth_output_paths() {
    let case = |name, setup: fn(&Path), output: &'static str| Case {
        name,
        setup,
        args: synth(output),
        output: Some(output),
        must_fail: false,
    };
    let cases = vec![
        case(
            "output a hard link of another file",
            |d| {
                keep(d);
                std::fs::hard_link(d.join("keep.gguf"), d.join("hard.gguf")).unwrap();
            },
            "hard.gguf",
        ),
        case(
            "output a symlink to another file",
            |d| {
                keep(d);
                std::os::unix::fs::symlink("keep.gguf", d.join("link.gguf")).unwrap();
            },
            "link.gguf",
        ),
        case(
            "output x beside an unrelated x.gguf.partial",
            |d| std::fs::write(d.join("x.gguf.partial"), b"someone else's file\n").unwrap(),
            "x",
        ),
        case(
            "an unrelated out.gguf.partial beside the output",
            |d| std::fs::write(d.join("out.gguf.partial"), b"someone else's file\n").unwrap(),
            "out.gguf",
        ),
        case(
            "output a FIFO",
            |d| mkfifo(&d.join("fifo.gguf")),
            "fifo.gguf",
        ),
        case(
            "output a character device node",
            |d| mknod_null(&d.join("null.gguf")),
            "null.gguf",
        ),
        case(
            "output a directory",
            |d| std::fs::create_dir(d.join("outdir")).unwrap(),
            "outdir",
        ),
        case(
            "output a dangling symlink",
            |d| std::os::unix::fs::symlink("elsewhere.gguf", d.join("link.gguf")).unwrap(),
            "link.gguf",
        ),
        case("output in a missing directory", keep, "missing/out.gguf"),
    ];
    run_cases("synth output paths", cases, SYNTH_SIZE);
}

/// Sends `signal` to a quantize or synth once its first new file appears in `dir`; returns `None`
/// when the command finished before that (too fast to interrupt).
fn interrupt(args: Vec<String>, dir: &Path, model_size: u64, signal: i32) -> Option<Vec<String>> {
    let before = snapshot(dir);
    let names = |d: &Path| -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect()
    };
    let _slots = runner::Slots::take(1);
    let spec = Spec {
        args: args.clone(),
        measure: false,
        cwd: dir,
        stdin: Input::Null,
        stdout: Output::Capture,
        model_size,
    };
    let mut child = runner::spawn(&spec);
    let err = runner::drain(child.child.stderr.take());
    let start = Instant::now();
    let pid = child.child.id() as libc::pid_t;
    loop {
        if names(dir).iter().any(|n| !before.contains_key(n)) {
            break;
        }
        if runner::exited(child.child.id()) || start.elapsed() > Duration::from_secs(20) {
            runner::reap(&mut child, Instant::now());
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    // SAFETY: signalling our own unreaped child.
    unsafe { libc::kill(pid, signal) };
    let (end, peak) = runner::reap(&mut child, Instant::now() + runner::timeout());
    let stderr = err.join().unwrap();
    let after = snapshot(dir);
    eprintln!(
        "{} to rustorch {} (at {:.0} ms, once its first file appeared): {end:?}, stderr {}",
        runner::signal_name(signal),
        args.join(" "),
        start.elapsed().as_secs_f64() * 1000.0,
        runner::excerpt(&stderr)
    );
    if end == End::Code(0) && after.contains_key("out.gguf") {
        // It finished between seeing its file and the signal: too fast to tell.
        return None;
    }
    let mut p = Vec::new();
    match end {
        End::Hang => p.push("still running after the signal".into()),
        End::Signal(s) if s == signal => {}
        End::Signal(s) => p.push(format!("killed by signal {s} ({})", runner::signal_name(s))),
        End::Code(0) => p.push("exit 0 after the signal".into()),
        End::Code(_) => {}
    }
    if String::from_utf8_lossy(&stderr).contains("panicked") {
        p.push("a panic".into());
    }
    if after != before {
        let added: Vec<_> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        let changed: Vec<_> = before
            .keys()
            .filter(|k| after.get(*k) != before.get(*k))
            .collect();
        p.push(format!(
            "directory changed: left behind {added:?}, changed or removed {changed:?}"
        ));
    }
    Some(
        p.into_iter()
            .map(|x| {
                format!(
                    "{} to rustorch {} | {x} | {end:?}, peak RSS {} MiB, stderr {}",
                    runner::signal_name(signal),
                    args.join(" "),
                    peak / runner::MIB,
                    runner::excerpt(&stderr)
                )
            })
            .collect(),
    )
}

#[test]
fn signals_during_quantize_and_synth() {
    let mut fails = Vec::new();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // A slower file type is tried when the command finished before the signal could land.
        let mut done = false;
        for ty in ["Q8_0", "Q4_K_M", "Q6_K"] {
            let dir = tempfile::tempdir().unwrap();
            copy_model(dir.path(), "in.gguf");
            let args = strings(&[
                "quantize",
                "in.gguf",
                "out.gguf",
                ty,
                "--allow-requantize",
                "-t",
                "1",
            ]);
            if let Some(f) = interrupt(args, dir.path(), smollm2_size(), signal) {
                fails.extend(f);
                done = true;
                break;
            }
        }
        assert!(
            done,
            "quantize always finished before {} could be sent",
            runner::signal_name(signal)
        );
        let synth_done = ["Q8_0", "Q4_K_M"].iter().any(|ty| {
            let dir = tempfile::tempdir().unwrap();
            keep(dir.path());
            let args = strings(&[
                "synth",
                "--shape",
                "smollm2-135m",
                "-o",
                "out.gguf",
                "--type",
                ty,
                "-t",
                "1",
            ]);
            interrupt(args, dir.path(), SYNTH_SIZE, signal)
                .map(|f| fails.extend(f))
                .is_some()
        });
        assert!(
            synth_done,
            "synth always finished before {} could be sent",
            runner::signal_name(signal)
        );
    }
    for f in &fails {
        eprintln!("FAIL {f}");
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn concurrent_quantize_to_one_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    copy_model(d, "in.gguf");
    let size = smollm2_size();
    let args = quantize("in.gguf", "single.gguf");
    let single = runner::run(&Spec {
        args,
        measure: true,
        cwd: d,
        stdin: Input::Null,
        stdout: Output::Capture,
        model_size: size,
    });
    assert_eq!(
        single.end,
        End::Code(0),
        "a single quantize: {}",
        single.describe()
    );
    let reference = std::fs::read(d.join("single.gguf")).unwrap();
    std::fs::remove_file(d.join("single.gguf")).unwrap();
    let before = snapshot(d);
    let rounds = if std::env::var("RUSTORCH_HOSTILE_FULL").is_ok_and(|v| v == "1") {
        5
    } else {
        1
    };
    let mut fails = Vec::new();
    for round in 0..rounds {
        let _slots = runner::Slots::take(2);
        let spec = Spec {
            args: quantize("in.gguf", "out.gguf"),
            measure: true,
            cwd: d,
            stdin: Input::Null,
            stdout: Output::Capture,
            model_size: size,
        };
        let mut a = runner::spawn(&spec);
        let mut b = runner::spawn(&spec);
        let (ea, eb) = (
            runner::drain(a.child.stderr.take()),
            runner::drain(b.child.stderr.take()),
        );
        let deadline = Instant::now() + runner::timeout();
        let ends = [
            runner::reap(&mut a, deadline),
            runner::reap(&mut b, deadline),
        ];
        let errs = [ea.join().unwrap(), eb.join().unwrap()];
        for ((end, _), err) in ends.iter().zip(&errs) {
            let text = String::from_utf8_lossy(err);
            match end {
                End::Code(0) => {}
                End::Code(1) if runner::one_error_line(&text).is_ok() => {}
                other => fails.push(format!(
                    "round {round}: one of two quantize runs: {other:?}, stderr {}",
                    runner::excerpt(err)
                )),
            }
        }
        if !ends.iter().any(|(e, _)| *e == End::Code(0)) {
            fails.push(format!(
                "round {round}: neither of two concurrent runs succeeded"
            ));
        }
        match std::fs::read(d.join("out.gguf")) {
            Ok(out) if out == reference => {}
            Ok(out) => fails.push(format!(
                "round {round}: out.gguf ({} bytes) differs from a single run's output ({} bytes)",
                out.len(),
                reference.len()
            )),
            Err(e) => fails.push(format!("round {round}: no out.gguf: {e}")),
        }
        std::fs::remove_file(d.join("out.gguf")).ok();
        let after = snapshot(d);
        if after != before {
            fails.push(format!(
                "round {round}: directory after the runs: {:?}",
                after.keys().collect::<Vec<_>>()
            ));
        }
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}

#[test]
fn stdout_full_or_closed() {
    let m = common::model(common::SMOLLM);
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "The quick brown fox jumps over the lazy dog. ".repeat(40),
    )
    .unwrap();
    let text = text.to_str().unwrap();
    let size = smollm2_size();
    let commands = [
        strings(&["inspect", m]),
        strings(&["inspect", "--metadata", m]),
        strings(&["inspect", "--json", m]),
        strings(&["tokenize", "-m", m, "-p", "hi there"]),
        strings(&["run", "-m", m, "-p", "hi", "-n", "2", "-c", "64", "-t", "1"]),
        strings(&["logits", "-m", m, "-p", "hi there", "--json", "-t", "1"]),
        strings(&[
            "perplexity",
            "-m",
            m,
            "-f",
            text,
            "-c",
            "64",
            "--chunks",
            "1",
            "--json",
            "-t",
            "1",
        ]),
    ];
    let mut fails = Vec::new();
    for args in commands {
        let full = runner::run(&Spec {
            args: args.clone(),
            measure: true,
            cwd: dir.path(),
            stdin: Input::Null,
            stdout: Output::File("/dev/full".into()),
            model_size: size,
        });
        let mut p = full.problems(size, false);
        if full.end == End::Code(0) {
            p.push("exit 0 with stdout on a full device".into());
        }
        for x in p {
            fails.push(format!(
                "rustorch {} >/dev/full | {x} | {}",
                args.join(" "),
                full.describe()
            ));
        }
        let closed = runner::run(&Spec {
            args: args.clone(),
            measure: true,
            cwd: dir.path(),
            stdin: Input::Null,
            stdout: Output::ClosedPipe,
            model_size: size,
        });
        let stderr = String::from_utf8_lossy(&closed.stderr);
        let mut p = Vec::new();
        // Conventional for a closed pipe (`rustorch inspect m | head -1`): end quietly, by
        // SIGPIPE or exit 0 / 141, with no error text.
        match closed.end {
            End::Signal(libc::SIGPIPE) | End::Code(0) | End::Code(141) => {}
            other => p.push(format!("ended by {other:?}")),
        }
        if stderr.contains("panicked at") {
            p.push("a panic".into());
        }
        if stderr.lines().any(|l| l.starts_with("error")) {
            p.push("error text for a closed pipe".into());
        }
        for x in p {
            fails.push(format!(
                "rustorch {} | (closed pipe) | {x} | {}",
                args.join(" "),
                closed.describe()
            ));
        }
    }
    for f in &fails {
        eprintln!("FAIL {f}");
    }
    assert!(
        fails.is_empty(),
        "{} failures:\n{}",
        fails.len(),
        fails.join("\n")
    );
}
