#!/usr/bin/env python3
"""Side-by-side CPU benchmark: rustorch vs llama.cpp on the same files, in the same run, engines
alternating; prints a Markdown table for BENCHMARKS.md, with the machine's read bandwidth beside it.

usage: scripts/bench-cpu.py [-p 128,512] [-n 64] [-r 3] [-t 1,2] [--rounds 3] [FILE...]

With no FILE, the standard set is made once by `rustorch synth` under ~/.cache/rustorch/bench
(TinyLlama-1.1B shape Q4_K_M, Q4_0, Q8_0 and Llama-7B shape Q4_K_M, ~6 GiB in all); the 7B file
takes -r 1 (a warm-up and one timed run per round: its pp512 alone is a minute a run on two cores).
From a fresh clone this one command builds rustorch (cargo, release) and, if the `llama_cpp` module is
missing, installs llama-cpp-python 0.3.36 (llama.cpp 0c1e570) built from source with
`CMAKE_ARGS=-DGGML_NATIVE=ON` (10+ minutes on two cores).

Each engine runs in its own process (`rustorch bench --json`, `scripts/llamacpp-bench.py`), timed by
its own llama-bench-style loop (one warm-up, then r runs). For each file and thread count the pair
is run --rounds times, alternating; the table gives the median of the round means, their spread
(min-max), and the ratio of the medians. Decode rows also give the weight bytes read per second
(file size x tokens/s) against `rustorch bench --bandwidth` (a plain multi-stream read loop, best of
1, 2, 4, 8 streams a thread), measured at the start of every round (the percentages: each round's
decode over its own read loop, median over rounds; the column gives the read loop's median and
spread) and before and after the engines at each thread count: the machine's memory speed moves
between phases minutes apart (shared hosts), so only figures of one run, and of one round, are
compared. `-p 0` runs decode only.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("files", nargs="*")
ap.add_argument("-p", default="128,512", help="prompt lengths, comma-separated")
ap.add_argument("-n", type=int, default=64)
ap.add_argument("-r", type=int, default=3)
ap.add_argument("-t", default="1,2", help="thread counts, comma-separated")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--dir", default=os.path.expanduser("~/.cache/rustorch/bench"))
a = ap.parse_args()
prompts = [int(x) for x in a.p.split(",") if x]
threads = [int(x) for x in a.t.split(",") if x]

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rustorch = os.environ.get("RUSTORCH", os.path.join(root, "target/release/rustorch"))


def log(msg):
    print(msg, file=sys.stderr, flush=True)


if "RUSTORCH" not in os.environ:
    log("building rustorch (cargo build --release -p rustorch)")
    subprocess.run(["cargo", "build", "--release", "-p", "rustorch"], cwd=root, check=True)
try:
    import llama_cpp  # noqa: F401
except ImportError:
    log("installing llama-cpp-python 0.3.36 (builds llama.cpp 0c1e570 from source, GGML_NATIVE=ON)")
    subprocess.run([sys.executable, "-m", "pip", "install", "llama-cpp-python==0.3.36"], check=True,
                   env=dict(os.environ, CMAKE_ARGS="-DGGML_NATIVE=ON"))

STANDARD = [("tinyllama-1.1b", "Q4_K_M"), ("tinyllama-1.1b", "Q4_0"), ("tinyllama-1.1b", "Q8_0"),
            ("llama-7b", "Q4_K_M")]
files = a.files
if not files:
    os.makedirs(a.dir, exist_ok=True)
    for shape, ty in STANDARD:
        path = os.path.join(a.dir, f"{shape}-{ty}.gguf")
        if not os.path.exists(path):
            log(f"synth {shape} {ty} -> {path}")
            subprocess.run([rustorch, "synth", "--shape", shape, "--type", ty, "-o", path + ".tmp"],
                           check=True)
            os.rename(path + ".tmp", path)
        files.append(path)


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    return json.loads(out.stdout)


def bandwidth(t):
    rows = [json.loads(line) for line in subprocess.run(
        [rustorch, "bench", "--bandwidth", "-t", str(t), "-r", "5", "--json"],
        capture_output=True, text=True, check=True).stdout.splitlines() if line.strip()]
    return max(r["gb_s"] for r in rows)


def tests(results):
    return {(f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"): r["avg_ts"]
            for r in results}


def engines(f, t, reps):
    """One round: both engines, rustorch first, each running every test."""
    ours, theirs = {}, {}
    for i, p in enumerate(prompts):
        n = a.n if i == 0 else 0
        common = ["-p", str(p), "-n", str(n), "-r", str(reps), "-t", str(t)]
        ours.update(tests(run_json([rustorch, "bench", "-m", f, "--json"] + common)))
        theirs.update(tests(run_json([sys.executable, os.path.join(root, "scripts/llamacpp-bench.py"),
                                      f] + common)))
    return ours, theirs


def spread(xs):
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


print("| file | size | threads | test | rustorch t/s (min-max) | llama.cpp t/s (min-max) | ratio "
      "| decode GB/s: rustorch / llama.cpp / read loop |")
print("|---|---:|---:|---|---:|---:|---:|---|")
summary = []
for t in threads:
    bw_before = bandwidth(t)
    rows = []
    for f in files:
        reps = 1 if "7b" in os.path.basename(f).lower() else a.r
        rounds = []
        for k in range(a.rounds):
            log(f"{os.path.basename(f)} -t {t}: round {k + 1}/{a.rounds}")
            # The read loop of this round, next to its decode: the machine's memory speed moves
            # between phases minutes apart, so each round's decode is set against its own.
            bw_round = bandwidth(t) if a.n else 0.0
            rounds.append(engines(f, t, reps) + (bw_round,))
        rows.append((f, rounds))
    bw_after = bandwidth(t)
    for f, rounds in rows:
        size = os.path.getsize(f)
        for test in [f"pp{p}" for p in prompts if p] + ([f"tg{a.n}"] if a.n else []):
            o = [r[0][test] for r in rounds]
            l = [r[1][test] for r in rounds]
            ratio = statistics.median(o) / statistics.median(l)
            gbs = ""
            bws = [r[2] for r in rounds]
            if test.startswith("tg"):
                go, gl = (statistics.median(x) * size / 1e9 for x in (o, l))
                # Each round's share of its own read loop, the median over rounds.
                fo = statistics.median(x * size / 1e9 / b for x, b in zip(o, bws))
                fl = statistics.median(x * size / 1e9 / b for x, b in zip(l, bws))
                gbs = (f"{go:.1f} ({100 * fo:.0f}%) / {gl:.1f} ({100 * fl:.0f}%) / "
                       f"{spread(bws)} (before {bw_before:.1f}, after {bw_after:.1f})")
            print(f"| {os.path.basename(f)} | {size / 2**20:.0f} MiB | {t} | {test} | {spread(o)} "
                  f"| {spread(l)} | {ratio:.2f}x | {gbs} |", flush=True)
            summary.append({"file": os.path.basename(f), "threads": t, "test": test,
                            "rustorch_ts": o, "llama_cpp_ts": l, "ratio": ratio,
                            "bandwidth_gb_s": [bw_before, bw_after],
                            "round_bandwidth_gb_s": bws})
json.dump(summary, open(os.environ.get("BENCH_JSON", os.devnull), "w"), indent=1)
