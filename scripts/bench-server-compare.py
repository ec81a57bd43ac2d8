#!/usr/bin/env python3
"""`rustorch serve` beside llama-server on the same model: for each concurrency level C, each
engine is started with C parallel sequences (`rustorch serve -t T --parallel C -c 4096*C`,
`llama-server -t T -np C -c 4096*C`), driven by `scripts/bench-server.py` at that level, and
stopped; the engines alternate (which goes first changes every round). Prints, per level, the
median (and range) over the rounds of aggregate generated tokens/s, TTFT p50 and inter-token p99,
and the ratio of the medians; then the shared-system-prompt test (first request's TTFT against
the median of the later ones) for each engine.

    scripts/bench-server-compare.py --llama-server PATH [--rustorch target/release/rustorch]
        [--levels 1,4,8,16] [--requests 32] [--rounds 3] [-t 2] MODEL.gguf
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "scripts" / "bench-server.py"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url, proc, timeout=180):
    end = time.time() + timeout
    while time.time() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("server not ready")


def start(engine, a, c):
    port = free_port()
    ctx = str(4096 * c)
    if engine == "rustorch":
        cmd = [a.rustorch, "serve", "-m", a.model, "-t", str(a.t), "--parallel", str(c),
               "-c", ctx, "--port", str(port)]
    else:
        cmd = [a.llama_server, "-m", a.model, "-t", str(a.t), "-np", str(c), "-c", ctx,
               "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
    except Exception:
        proc.kill()
        raise
    return proc, url


def stop(proc):
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def bench(url, args):
    out = subprocess.run([sys.executable, str(BENCH), url, "--json", *args],
                         capture_output=True, text=True)
    rows = [json.loads(l) for l in out.stdout.splitlines() if l.startswith("{")]
    if not rows:
        raise RuntimeError(f"bench-server.py printed nothing: {out.stderr[-2000:]}")
    return rows


def med(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return "-"
    return f"{statistics.median(xs):.1f} ({min(xs):.1f}-{max(xs):.1f})"


def ratio(a, b):
    a = [x for x in a if x is not None]
    b = [x for x in b if x is not None]
    if not a or not b or statistics.median(b) == 0:
        return "-"
    return f"{statistics.median(a) / statistics.median(b):.2f}x"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--llama-server", required=True)
    ap.add_argument("--rustorch", default=str(ROOT / "target/release/rustorch"))
    ap.add_argument("--levels", default="1,4,8,16")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-t", type=int, default=2)
    a = ap.parse_args()
    levels = [int(x) for x in a.levels.split(",")]
    engines = ["rustorch", "llama.cpp"]
    res = {(e, c): [] for e in engines for c in levels}
    sys_res = {e: [] for e in engines}
    for r in range(a.rounds):
        order = engines if r % 2 == 0 else engines[::-1]
        for c in levels:
            for e in order:
                proc, url = start(e, a, c)
                try:
                    row = bench(url, ["--levels", str(c), "--requests", str(a.requests)])[0]
                finally:
                    stop(proc)
                res[(e, c)].append(row)
                print(f"round {r + 1} {e} C={c}: {row['gen_tok_s']:.1f} tok/s, TTFT p50 "
                      f"{row['ttft_p50_ms']:.0f} ms, ITL p99 {row['itl_p99_ms']:.1f} ms, "
                      f"failures {row['failures']}", file=sys.stderr, flush=True)
        for e in order:
            proc, url = start(e, a, 1)
            try:
                row = bench(url, ["--system-prompt-tokens", "1000", "--requests", "8"])[0]
            finally:
                stop(proc)
            sys_res[e].append(row)
            print(f"round {r + 1} {e} system prompt: {json.dumps(row)}", file=sys.stderr,
                  flush=True)

    print("| streams | rustorch tok/s | llama-server tok/s | ratio | rustorch TTFT p50 ms | "
          "llama-server TTFT p50 ms | rustorch ITL p99 ms | llama-server ITL p99 ms | failures |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for c in levels:
        ours, theirs = res[("rustorch", c)], res[("llama.cpp", c)]
        col = lambda rows, k: [x[k] for x in rows]
        fails = sum(x["failures"] for x in ours + theirs)
        print(f"| {c} | {med(col(ours, 'gen_tok_s'))} | {med(col(theirs, 'gen_tok_s'))} | "
              f"{ratio(col(ours, 'gen_tok_s'), col(theirs, 'gen_tok_s'))} | "
              f"{med(col(ours, 'ttft_p50_ms'))} | {med(col(theirs, 'ttft_p50_ms'))} | "
              f"{med(col(ours, 'itl_p99_ms'))} | {med(col(theirs, 'itl_p99_ms'))} | {fails} |")
    print()
    print("| engine | first TTFT ms | later TTFT p50 ms | ratio |")
    print("|---|---:|---:|---:|")
    for e in engines:
        rows = sys_res[e]
        print(f"| {e} | {med([x.get('first_ttft_ms') for x in rows])} | "
              f"{med([x.get('later_ttft_p50_ms') for x in rows])} | "
              f"{med([x.get('ratio') for x in rows])} |")


if __name__ == "__main__":
    main()
