#!/usr/bin/env python3
"""Reference outputs of llama.cpp 0c1e570 (through `pip install llama-cpp-python==0.3.36`, CPU, flash
attention off, 2 threads, as scripts/llamacpp-reference.py) for the architectures beyond llama: qwen2,
qwen3, phi3, gemma3. Not run by CI: its outputs are committed. See tests/data/README-arch.md.

usage: scripts/llamacpp-arch-reference.py MODELS_DIR WORK_DIR [tiny] [real]

- tiny: writes the tiny random-weight files with scripts/tiny-arch.py into tests/data/tiny-arch/ and
  their full logits for one fixed 64-token sequence into tests/data/llamacpp-tiny-arch.json.
- real: converts MODELS_DIR/SmolLM2-135M-Instruct.Q4_1.gguf into WORK_DIR/smollm2-{qwen2,qwen3,phi3}.gguf
  with scripts/convert-arch.py, then writes perplexity, greedy_ids and teacher_forced for those and for
  MODELS_DIR/gemma-3-270m-q4_k_m.gguf into tests/data/llamacpp-arch.json.
"""
import hashlib
import json
import os
import subprocess
import sys
import time

import llama_cpp
import numpy as np
from llama_cpp import Llama

LLAMA_CPP = "0c1e570 (llama-cpp-python 0.3.36), CPU, flash attention off, 2 threads"
TEXT = "texts/GPL-3 (shared/reference/texts/GPL-3)"
BASELINE_NOTE = ("the unconverted llama file through this script (the baseline for the smollm2-* entries); "
                 "llama-perplexity's CLI gives 18.3914 (shared/reference): the CLI (4 chunks per batch) and "
                 "this one-chunk-per-context path differ by 0.1-0.2%, for Gemma 3 13.9062 there, 13.9247 here")
PROMPTS = ["The capital of France is", "def fibonacci(n):"]


def find_text():
    for p in ("../shared/reference/texts/GPL-3", "/work/shared/reference/texts/GPL-3"):
        if os.path.exists(p):
            return open(p, encoding="utf-8").read()
    sys.exit("texts/GPL-3 not found (shared/reference/texts/GPL-3)")


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(path, n_ctx, **kw):
    return Llama(path, n_ctx=n_ctx, n_batch=512, logits_all=True, verbose=False, flash_attn=False,
                 n_threads=2, **kw)


def margin(row):
    top2 = np.partition(row, -2)[-2:]
    return float(abs(top2[1] - top2[0]))


def sig6(x):
    return float(f"{x:.6g}")


# ---------------------------------------------------------------------------------------------- tiny
TINY = ["llama", "qwen2", "qwen3", "gemma3", "gemma3-pattern6", "phi3", "phi3-long"]
TINY_TOKENS = [int(t) for t in np.random.default_rng(64).integers(3, 320, 64)]


def tiny():
    out_dir = "tests/data/tiny-arch"
    subprocess.run([sys.executable, "scripts/tiny-arch.py", out_dir], check=True)
    out = {"llama_cpp": LLAMA_CPP,
           "note": "full logits of TINY_TOKENS run as one batch (n_ctx 256: llama.cpp pads the context to a "
                   "multiple of 256; n_batch 512; default F16 KV cache); logits rounded to 6 significant "
                   "digits; max_abs_diff_f32_kv: largest |logit difference| when llama.cpp keeps K and V "
                   "in F32 instead, a measure of what the F16 cache alone changes"}
    for arch in TINY:
        path = f"{out_dir}/{arch}.gguf"
        llm = load(path, 256)
        llm.eval(TINY_TOKENS)
        logits = np.array(llm.scores[:len(TINY_TOKENS)], dtype=np.float32)
        llm32 = load(path, 256, type_k=0, type_v=0)
        llm32.eval(TINY_TOKENS)
        logits32 = np.array(llm32.scores[:len(TINY_TOKENS)], dtype=np.float32)
        out[arch] = {
            "file": path, "sha256": sha256(path), "tokens": TINY_TOKENS,
            "argmax": [int(r.argmax()) for r in logits],
            "margins": [round(margin(r), 5) for r in logits],
            "max_abs_diff_f32_kv": float(f"{np.abs(logits - logits32).max():.3g}"),
            "logits": [[sig6(x) for x in r] for r in logits],
        }
        print(arch, "logit std", float(logits.std()), "min margin", min(out[arch]["margins"]),
              "f32 kv diff", out[arch]["max_abs_diff_f32_kv"], flush=True)
    json.dump(out, open("tests/data/llamacpp-tiny-arch.json", "w"), separators=(",", ":"))
    print("wrote tests/data/llamacpp-tiny-arch.json")


# ---------------------------------------------------------------------------------------------- real
def is_eog(llm, tok):
    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), tok))


def greedy(path, prompt):
    llm = load(path, 512)
    ids = llm.tokenize(prompt.encode(), add_bos=True, special=True)  # BOS only where the vocab adds it
    llm.eval(ids)
    gen, margins = [], []
    for _ in range(32):
        row = np.asarray(llm.scores[llm.n_tokens - 1])
        tok = int(row.argmax())
        margins.append(round(margin(row), 3))
        if is_eog(llm, tok):
            break
        gen.append(tok)
        llm.eval([tok])
    stable = next((i for i, m in enumerate(margins) if m < 0.25), len(gen))
    return {"prompt": prompt, "prompt_ids": ids, "ids": gen, "margins": margins,
            "text": llm.detokenize(gen).decode("utf-8", errors="replace"),
            "stable_prefix_len": stable,
            "stable_prefix_text": llm.detokenize(gen[:stable]).decode("utf-8", errors="replace")}


def teacher_forced(path, text, n):
    llm = load(path, n)
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)[:n]
    llm.eval(ids)
    scores = llm.scores  # (n_ctx, n_vocab) float32, rows as llama.cpp returned them
    return {"text": TEXT, "n_ctx": n, "input_ids": ids,
            "argmax": [int(scores[i].argmax()) for i in range(len(ids))],
            "margins": [round(margin(scores[i]), 4) for i in range(len(ids))]}


def perplexity(path, text, n_ctx):
    """llama-perplexity's rule: the text tokenized with the vocabulary's special tokens (BOS where it adds
    one), cut into len // n_ctx chunks of n_ctx tokens; where the vocabulary adds BOS the first token of
    each chunk is replaced by BOS; each chunk scores its predictions of tokens n_ctx/2 + 1 .. n_ctx - 1."""
    llm = load(path, n_ctx)
    tokens = llm.tokenize(text.encode(), add_bos=True, special=False)
    add_bos = bool(llama_cpp.llama_vocab_get_add_bos(llama_cpp.llama_model_get_vocab(llm.model)))
    first = n_ctx // 2
    nll, count = 0.0, 0
    n_chunks = len(tokens) // n_ctx
    for c in range(n_chunks):
        llm = load(path, n_ctx)
        chunk = list(tokens[c * n_ctx:(c + 1) * n_ctx])
        if add_bos:
            chunk[0] = llm.token_bos()
        llm.eval(chunk)
        for j in range(first, n_ctx - 1):
            row = np.asarray(llm.scores[j], dtype=np.float64)
            mx = row.max()
            nll -= row[chunk[j + 1]] - mx - np.log(np.exp(row - mx).sum())
            count += 1
    return {"text": TEXT, "n_ctx": n_ctx, "chunks": n_chunks, "scored": count,
            "ppl": round(float(np.exp(nll / count)), 4)}


def real(models, work):
    text = find_text()
    smol = f"{models}/SmolLM2-135M-Instruct.Q4_1.gguf"
    gemma = f"{models}/gemma-3-270m-q4_k_m.gguf"
    os.makedirs(work, exist_ok=True)
    out = {"llama_cpp": LLAMA_CPP, "models": {}}
    entries = []
    for arch in ("qwen2", "qwen3", "phi3"):
        dst = f"{work}/smollm2-{arch}.gguf"
        subprocess.run([sys.executable, "scripts/convert-arch.py", smol, arch, dst], check=True)
        entries.append((f"smollm2-{arch}", dst, [512],
                        f"scripts/convert-arch.py SmolLM2-135M-Instruct.Q4_1.gguf {arch} smollm2-{arch}.gguf"))
    entries.append(("gemma-3-270m-q4_k_m", gemma, [512, 2048], "shared/reference (unchanged)"))
    for key in ("perplexity", "greedy_ids", "teacher_forced"):
        out[key] = {}
    # the llama file itself by the same code path: the baseline for the converted files
    out["perplexity"]["smollm2-135m-instruct-q4_1"] = [dict(perplexity(smol, text, 512), note=BASELINE_NOTE)]
    for key, path, ctxs, made in entries:
        t0 = time.time()
        out["models"][key] = {"file": os.path.basename(path), "bytes": os.path.getsize(path),
                              "sha256": sha256(path), "made_by": made}
        out["perplexity"][key] = [perplexity(path, text, n) for n in ctxs]
        out["greedy_ids"][key] = [greedy(path, p) for p in PROMPTS]
        out["teacher_forced"][key] = [teacher_forced(path, text, n) for n in ctxs]
        print(key, [p["ppl"] for p in out["perplexity"][key]],
              [g["stable_prefix_text"] for g in out["greedy_ids"][key]], f"{time.time() - t0:.0f}s", flush=True)
        json.dump(out, open("tests/data/llamacpp-arch.json", "w"), indent=1)
    print("wrote tests/data/llamacpp-arch.json")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    what = sys.argv[3:] or ["tiny", "real"]
    if "tiny" in what:
        tiny()
    if "real" in what:
        real(sys.argv[1], sys.argv[2])
