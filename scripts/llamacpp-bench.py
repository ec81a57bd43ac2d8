#!/usr/bin/env python3
"""llama-bench's pp/tg tests through llama.cpp's Python binding, for side-by-side figures.

llama-cpp-python==0.3.36 builds llama.cpp 0c1e570 (the reference version); its wheel has no
llama-bench, so this times the same work llama-bench does: `pp N` evaluates N prompt tokens as one
batch in an empty context, `tg N` generates N tokens one at a time from an empty context; one warm-up
run, then R timed runs; tokens/s mean and sample standard deviation. Prints a JSON object with
llama-bench's field names.

usage: llamacpp-bench.py MODEL [-p 128] [-n 64] [-r 5] [-t 2]
"""
import argparse
import json
import statistics
import time

from llama_cpp import Llama

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("-p", type=int, default=128)
ap.add_argument("-n", type=int, default=64)
ap.add_argument("-r", type=int, default=5)
ap.add_argument("-t", type=int, default=2)
a = ap.parse_args()

llm = Llama(a.model, n_ctx=max(a.p, a.n, 1) + 16, n_batch=max(a.p, 1), n_ubatch=max(a.p, 1),
            n_threads=a.t, n_threads_batch=a.t, verbose=False, logits_all=False)
n_vocab = llm.n_vocab()
tokens = [(i * 7919 + 13) % n_vocab for i in range(max(a.p, a.n))]


def run(n_prompt, n_gen):
    llm.reset()
    llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    t0 = time.perf_counter_ns()
    if n_prompt:
        llm.eval(tokens[:n_prompt])
    for i in range(n_gen):
        llm.eval([tokens[i]])
    return time.perf_counter_ns() - t0


results = []
for n_prompt, n_gen in ((a.p, 0), (0, a.n)):
    if n_prompt + n_gen == 0:
        continue
    run(n_prompt, n_gen)  # warm-up
    ns = [run(n_prompt, n_gen) for _ in range(a.r)]
    ts = [(n_prompt + n_gen) / (x / 1e9) for x in ns]
    results.append({
        "model_filename": a.model, "backend": "CPU (llama.cpp 0c1e570 via llama-cpp-python)",
        "n_threads": a.t, "n_prompt": n_prompt, "n_gen": n_gen,
        "avg_ts": statistics.mean(ts), "stddev_ts": statistics.stdev(ts) if len(ts) > 1 else 0.0,
        "samples_ts": ts, "samples_ns": ns,
    })
print(json.dumps(results))
