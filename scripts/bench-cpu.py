#!/usr/bin/env python3
"""Side-by-side CPU benchmark: rustorch vs llama.cpp (through llama-cpp-python) on the same files,
in the same run, alternating engines per repetition block. Prints a Markdown table for BENCHMARKS.md.

usage: scripts/bench-cpu.py [-p 128] [-n 64] [-r 5] [-t 2] [--rounds 3] FILE...

Each engine runs in its own process (`rustorch bench --json`, `scripts/llamacpp-bench.py`), timed
by its own llama-bench-style loop (one warm-up, then r runs); peak resident memory of each process
comes from /usr/bin/time. With --rounds k, the pair is run k times, alternating, and the median of
the k means is reported.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ap = argparse.ArgumentParser()
ap.add_argument("files", nargs="+")
ap.add_argument("-p", type=int, default=128)
ap.add_argument("-n", type=int, default=64)
ap.add_argument("-r", type=int, default=5)
ap.add_argument("-t", type=int, default=2)
ap.add_argument("--rounds", type=int, default=3)
a = ap.parse_args()

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
rustorch = os.environ.get("RUSTORCH", os.path.join(root, "target/release/rustorch"))
common = ["-p", str(a.p), "-n", str(a.n), "-r", str(a.r), "-t", str(a.t)]


def timed(cmd):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, capture_output=True, text=True, check=True)
    rss_kib = int(out.stderr.strip().splitlines()[-1])
    return json.loads(out.stdout), rss_kib


def by_test(results):
    return {("pp" if r["n_prompt"] else "tg"): r["avg_ts"] for r in results}


print(f"| file | size | test | rustorch t/s | llama.cpp t/s | ratio | rustorch peak RSS | llama.cpp peak RSS |")
print("|---|---:|---|---:|---:|---:|---:|---:|")
for f in a.files:
    ours, theirs, rss_o, rss_t = [], [], [], []
    for _ in range(a.rounds):
        o, m = timed([rustorch, "bench", "-m", f, "--json"] + common)
        ours.append(by_test(o)); rss_o.append(m)
        t, m = timed([sys.executable, os.path.join(root, "scripts/llamacpp-bench.py"), f] + common)
        theirs.append(by_test(t)); rss_t.append(m)
    size = os.path.getsize(f) / 2**20
    for test, n in (("pp", a.p), ("tg", a.n)):
        mo = statistics.median(r[test] for r in ours)
        mt = statistics.median(r[test] for r in theirs)
        print(f"| {os.path.basename(f)} | {size:.0f} MiB | {test}{n} | {mo:.1f} | {mt:.1f} | {mo / mt:.2f}x "
              f"| {max(rss_o) / 1024:.0f} MiB | {max(rss_t) / 1024:.0f} MiB |", flush=True)
