#!/usr/bin/env python3
"""Aggregate throughput of several sequences at once: `rustorch bench --parallel` beside
llama.cpp's `llama-batched-bench`, same file, same thread count, engines alternating, several
rounds; prints the median (and range) of each engine's decode, prompt and total tokens/s per
sequence count, and the ratio of the medians.

    scripts/bench-parallel.py --llama-batched-bench PATH [-p 128] [-n 128] [--npl 1,4,8,16]
                              [-t 2] [--rounds 3] FILE...

llama-batched-bench comes from the llama.cpp source vendored in llama-cpp-python 0.3.36
(`cmake -B build -DGGML_NATIVE=ON ... && cmake --build build --target llama-batched-bench`).
"""
import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def rustorch(binary, f, a):
    cmd = [binary, "bench", "-m", f, "--parallel", a.npl, "-p", str(a.p), "-n", str(a.n),
           "-t", str(a.t), "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def llamacpp(binary, f, a):
    npl = [int(x) for x in a.npl.split(",")]
    ctx = max(npl) * (a.p + a.n) + 256
    cmd = [binary, "-m", f, "-c", str(ctx), "-b", "2048", "-ub", "512", "-npp", str(a.p),
           "-ntg", str(a.n), "-npl", a.npl, "-t", str(a.t), "--output-format", "jsonl"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return [json.loads(l) for l in out.splitlines() if l.startswith("{")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--llama-batched-bench", required=True)
    ap.add_argument("--rustorch", default=str(ROOT / "target/release/rustorch"))
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--npl", default="1,4,8,16")
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    print(f"| file | sequences | test | rustorch t/s | llama.cpp t/s | ratio |")
    print(f"|---|---:|---|---:|---:|---:|")
    for f in a.files:
        runs = {"rustorch": [], "llama.cpp": []}
        for r in range(a.rounds):
            # Alternate which engine goes first.
            order = ["rustorch", "llama.cpp"] if r % 2 == 0 else ["llama.cpp", "rustorch"]
            for e in order:
                res = rustorch(a.rustorch, f, a) if e == "rustorch" else llamacpp(a.llama_batched_bench, f, a)
                runs[e].append({x["pl"]: x for x in res})
                print(f"round {r + 1} {e}: " + ", ".join(
                    f"pl {x['pl']} tg {x['speed_tg']:.1f}" for x in res), file=sys.stderr)
        for pl in [int(x) for x in a.npl.split(",")]:
            for key, name in [("speed_tg", f"tg{a.n}"), ("speed_pp", f"pp{a.p}"), ("speed", "total")]:
                cell = {}
                for e in runs:
                    v = [r[pl][key] for r in runs[e] if pl in r]
                    cell[e] = (statistics.median(v), min(v), max(v))
                ours, theirs = cell["rustorch"], cell["llama.cpp"]
                print(f"| {Path(f).name} | {pl} | {name} | {ours[0]:.1f} ({ours[1]:.1f}-{ours[2]:.1f}) "
                      f"| {theirs[0]:.1f} ({theirs[1]:.1f}-{theirs[2]:.1f}) | {ours[0] / theirs[0]:.2f}x |")


if __name__ == "__main__":
    main()
