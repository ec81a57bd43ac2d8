//! Runs the `rustorch` binary under a memory cap and a timeout, reaps it with `wait4` for its peak
//! RSS, and judges the outcome: an exit by code (never a signal), 0 or a one-line `error: `, no
//! panic, no raw control bytes, peak RSS within the model file's size + 512 MiB.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;
/// Peak RSS allowed above the size of the model file a command reads.
pub const RSS_ALLOWANCE: u64 = 512 * MIB;
/// Address space allowed above the model file's size: a cap that stops a runaway allocation before
/// it takes the machine, far above what a normal run maps (about 500 MiB for SmolLM2).
const ADDRESS_SPACE_ALLOWANCE: u64 = 2048 * MIB;
/// Captured output kept per stream; the rest is read and dropped.
const CAPTURE_LIMIT: usize = 1 << 20;

/// How long a command may run before it counts as a hang (`RUSTORCH_HOSTILE_TIMEOUT`, seconds).
pub fn timeout() -> Duration {
    let s = std::env::var("RUSTORCH_HOSTILE_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(s)
}

/// At most two `rustorch` processes at a time across the whole test binary (the machine that runs
/// CI has two cores; tests run in parallel threads).
static SLOTS: (Mutex<usize>, Condvar) = (Mutex::new(2), Condvar::new());

/// Permits to run `rustorch` processes, given back when dropped.
pub struct Slots(usize);

impl Slots {
    /// Waits until `n` (1 or 2) processes may start, and takes them together.
    pub fn take(n: usize) -> Slots {
        let (lock, cv) = &SLOTS;
        let mut free = cv
            .wait_while(lock.lock().unwrap(), |free| *free < n)
            .unwrap();
        *free -= n;
        Slots(n)
    }
}

impl Drop for Slots {
    fn drop(&mut self) {
        let (lock, cv) = &SLOTS;
        *lock.lock().unwrap() += self.0;
        cv.notify_all();
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum End {
    Code(i32),
    Signal(i32),
    /// Killed by the runner after [`timeout`].
    Hang,
}

#[derive(Debug)]
pub struct Outcome {
    pub end: End,
    pub peak_rss: u64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
}

/// What a command's stdin gets.
#[derive(Clone)]
pub enum Input {
    Null,
    Text(Vec<u8>),
}

/// Where a command's stdout goes.
#[derive(Clone)]
pub enum Output {
    Capture,
    /// A file opened for writing (`/dev/full`).
    File(PathBuf),
    /// A pipe whose reading end is closed before the command starts.
    ClosedPipe,
}

pub struct Spec<'a> {
    pub args: Vec<String>,
    /// Whether the command runs under GNU time (`/usr/bin/time -f %M`) for its peak RSS; a child of
    /// the test process itself would report the test's own peak (Linux carries `ru_maxrss` across
    /// fork and exec). Unmeasured commands run directly, for tests that signal them.
    pub measure: bool,
    pub cwd: &'a Path,
    pub stdin: Input,
    pub stdout: Output,
    /// The size of the model file the command reads (or writes, for synth): the RSS budget's base.
    pub model_size: u64,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_rustorch")
}

/// A started command: the process (GNU time's when measured) and the file time reports into.
pub struct Running {
    pub child: std::process::Child,
    report: Option<tempfile::NamedTempFile>,
}

/// Starts `spec` (with its limits), in a process group of its own.
pub fn spawn(spec: &Spec) -> Running {
    let report = spec
        .measure
        .then(|| tempfile::NamedTempFile::new().unwrap());
    let mut cmd = match &report {
        Some(r) => {
            assert!(
                Path::new(TIME).exists(),
                "{TIME} (GNU time) is missing: the suite measures peak RSS with it (apt-get install time)"
            );
            let mut c = Command::new(TIME);
            c.arg("-f")
                .arg("%M")
                .arg("-o")
                .arg(r.path())
                .arg("--")
                .arg(bin());
            c
        }
        None => Command::new(bin()),
    };
    cmd.args(&spec.args)
        .current_dir(spec.cwd)
        .process_group(0)
        .stderr(Stdio::piped())
        .env_remove("RUSTORCH_DEBUG")
        .env("RUST_BACKTRACE", "0");
    cmd.stdin(match spec.stdin {
        Input::Null => Stdio::null(),
        Input::Text(_) => Stdio::piped(),
    });
    match &spec.stdout {
        Output::Capture => {
            cmd.stdout(Stdio::piped());
        }
        Output::File(p) => {
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            cmd.stdout(f);
        }
        Output::ClosedPipe => {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both descriptors were just created and are owned here, once each.
            let (read, write) = unsafe {
                use std::os::fd::FromRawFd;
                (
                    std::os::fd::OwnedFd::from_raw_fd(fds[0]),
                    std::os::fd::OwnedFd::from_raw_fd(fds[1]),
                )
            };
            drop(read);
            cmd.stdout(Stdio::from(write));
        }
    }
    let cap = spec.model_size + ADDRESS_SPACE_ALLOWANCE;
    // SAFETY: only async-signal-safe calls (setrlimit) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let as_limit = libc::rlimit {
                rlim_cur: cap,
                rlim_max: cap,
            };
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &as_limit) != 0
                || libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("starting rustorch");
    if let Input::Text(text) = &spec.stdin {
        let mut stdin = child.stdin.take().unwrap();
        let text = text.clone();
        std::thread::spawn(move || {
            stdin.write_all(&text).ok();
        });
    }
    Running { child, report }
}

const TIME: &str = "/usr/bin/time";

pub fn drain(r: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        if let Some(mut r) = r {
            let mut buf = [0u8; 65536];
            while let Ok(n) = r.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let room = CAPTURE_LIMIT.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
            }
        }
        kept
    })
}

/// Reaps a command, killing its process group at the deadline; returns how it ended and its peak
/// RSS in bytes (GNU time's report when measured, else wait4's, which counts the test's own).
pub fn reap(r: &mut Running, deadline: Instant) -> (End, u64) {
    let pid = r.child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data; zeroed is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut hung = false;
    loop {
        // SAFETY: `pid` is our child, not yet reaped; status and usage are valid pointers.
        let w = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if w == pid {
            break;
        }
        assert_eq!(w, 0, "wait4: {}", std::io::Error::last_os_error());
        if Instant::now() >= deadline {
            hung = true;
            // SAFETY: the process group the command leads (time and rustorch, or rustorch).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            // SAFETY: as above, now blocking until it is gone.
            let w = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            assert_eq!(w, pid);
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    if hung {
        return (End::Hang, 0);
    }
    let mut end = if libc::WIFSIGNALED(status) {
        End::Signal(libc::WTERMSIG(status))
    } else {
        End::Code(libc::WEXITSTATUS(status))
    };
    let mut peak = usage.ru_maxrss as u64 * 1024;
    if let Some(report) = &r.report {
        // "Command terminated by signal N" (or "... exited with non-zero status N"), then %M.
        let text = std::fs::read_to_string(report.path()).unwrap_or_default();
        for line in text.lines() {
            if let Some(sig) = line.strip_prefix("Command terminated by signal ") {
                end = End::Signal(sig.trim().parse().unwrap());
            } else if let Ok(kib) = line.trim().parse::<u64>() {
                peak = kib * 1024;
            }
        }
    }
    (end, peak)
}

/// Runs `spec` to its end (or the timeout), with the two-process limit.
pub fn run(spec: &Spec) -> Outcome {
    let _slot = Slots::take(1);
    let start = Instant::now();
    let mut r = spawn(spec);
    let out = drain(r.child.stdout.take());
    let err = drain(r.child.stderr.take());
    let (end, peak_rss) = reap(&mut r, start + timeout());
    Outcome {
        end,
        peak_rss,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        wall: start.elapsed(),
    }
}

/// A character that must not reach a terminal raw: C0 and C1 controls and DEL, except newline and
/// tab. (An ANSI escape from a file's metadata would recolour or retitle the user's terminal.)
pub fn raw_control(text: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(text);
    s.chars()
        .find(|&c| c.is_control() && c != '\n' && c != '\t')
        .map(|c| format!("{:?} in {:?}", c, excerpt_around(&s, c)))
}

fn excerpt_around(s: &str, c: char) -> String {
    let at = s.chars().position(|x| x == c).unwrap_or(0);
    s.chars().skip(at.saturating_sub(40)).take(80).collect()
}

/// Short text for a report.
pub fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b);
    let s = s.trim_end();
    let mut e: String = s.chars().take(300).collect();
    if e.len() < s.len() {
        e.push_str(" ...");
    }
    format!("{e:?}")
}

impl Outcome {
    /// The problems of an outcome by the rules every command obeys on any input. `stdout_is_text`:
    /// stdout is ours (inspect, tokenize) rather than the model's generated text.
    pub fn problems(&self, model_size: u64, stdout_is_text: bool) -> Vec<String> {
        let mut p = Vec::new();
        let stderr = String::from_utf8_lossy(&self.stderr);
        match self.end {
            End::Hang => p.push(format!("hang: killed after {:?}", timeout())),
            End::Signal(s) => p.push(format!("killed by signal {s} ({})", signal_name(s))),
            End::Code(101) => p.push("exit 101 (a panic)".into()),
            End::Code(0) | End::Code(1) | End::Code(2) => {}
            End::Code(c) => p.push(format!("exit status {c}")),
        }
        if stderr.contains("panicked at") {
            p.push("a panic message on stderr".into());
        }
        if self.peak_rss > model_size + RSS_ALLOWANCE {
            p.push(format!(
                "peak RSS {} MiB > file {} MiB + 512 MiB",
                self.peak_rss / MIB,
                model_size / MIB
            ));
        }
        if let End::Code(c) = self.end {
            if c != 0 {
                if let Err(e) = one_error_line(&stderr) {
                    p.push(e);
                }
            }
        }
        if let Some(c) = raw_control(&self.stderr) {
            p.push(format!("raw control character on stderr: {c}"));
        }
        if stdout_is_text {
            if let Some(c) = raw_control(&self.stdout) {
                p.push(format!("raw control character on stdout: {c}"));
            }
        }
        p
    }

    pub fn describe(&self) -> String {
        format!(
            "{:?} in {:.1} s, peak RSS {} MiB, stderr {}",
            self.end,
            self.wall.as_secs_f64(),
            self.peak_rss / MIB,
            excerpt(&self.stderr)
        )
    }
}

/// A failure's stderr: exactly one line that starts with `error: `, and it is the last line (lines
/// before it are progress notes, such as quantize's plan or chat's `> ` prompt).
pub fn one_error_line(stderr: &str) -> Result<(), String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(|l| l.trim_start_matches("> "))
        .filter(|l| !l.trim().is_empty())
        .collect();
    let errors = lines.iter().filter(|l| l.starts_with("error")).count();
    match lines.last() {
        Some(last) if errors == 1 && last.starts_with("error: ") => Ok(()),
        _ => Err(format!(
            "a failure without exactly one final `error: ` line on stderr ({} lines, {errors} errors)",
            lines.len()
        )),
    }
}

pub fn signal_name(s: i32) -> &'static str {
    match s {
        libc::SIGABRT => "SIGABRT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGKILL => "SIGKILL",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        _ => "?",
    }
}

/// Whether `pid` (our child) has exited and waits to be reaped.
pub fn exited(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}
