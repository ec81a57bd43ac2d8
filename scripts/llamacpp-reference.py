#!/usr/bin/env python3
"""Writes tests/data/llamacpp-extra.json: more llama.cpp facts for the end-to-end tests, beyond
../shared/reference (other prompts, another text), made with llama.cpp 0c1e570 through its Python
binding (`pip install llama-cpp-python==0.3.36`, which builds that commit; flash attention off, as
in shared/reference's teacher-forced and greedy_ids entries). Not run by CI: its output is committed.

usage: scripts/llamacpp-reference.py MODELS_DIR
"""
import json
import sys

import numpy as np
from llama_cpp import Llama

models = sys.argv[1]
smollm = f"{models}/SmolLM2-135M-Instruct.Q4_1.gguf"
text = open("tests/data/MPL-2.0.txt", encoding="utf-8").read()

PROMPTS = [
    "The largest planet in the solar system is",
    "In 1492, Christopher Columbus",
    "import numpy as np\n\ndef softmax(x):",
    "Q: What is 12 times 12?\nA:",
    "My favourite recipe for pancakes needs",
    "<|im_start|>user\nName three fruits.<|im_end|>\n<|im_start|>assistant\n",
]


def load(n_ctx=512):
    return Llama(smollm, n_ctx=n_ctx, n_batch=512, logits_all=True, verbose=False,
                 flash_attn=False, n_threads=2)


def margin(row):
    top2 = np.sort(row)[-2:]
    return float(top2[1] - top2[0])


out = {"llama_cpp": "0c1e570 (llama-cpp-python 0.3.36), CPU, flash attention off",
       "model": "SmolLM2-135M-Instruct.Q4_1.gguf"}

# Greedy: prompt as one batch, then one token at a time; margins at each step.
greedy = []
for prompt in PROMPTS:
    llm = load()
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.eval(ids)
    gen, margins = [], []
    for _ in range(32):
        row = np.array(llm.scores[llm.n_tokens - 1])
        tok = int(row.argmax())
        margins.append(round(margin(row), 3))
        if tok in (0, 2):
            break
        gen.append(tok)
        llm.eval([tok])
    stable = next((i for i, m in enumerate(margins) if m < 0.25), len(gen))
    greedy.append({
        "prompt": prompt, "prompt_ids": ids, "ids": gen, "margins": margins,
        "stable_prefix_len": stable,
        "stable_prefix_text": llm.detokenize(gen[:stable]).decode("utf-8", errors="replace"),
    })
out["greedy_ids"] = greedy

# Teacher-forced: the first 512 tokens of the text as one batch.
llm = load()
ids = llm.tokenize(text.encode(), add_bos=False, special=False)[:512]
llm.eval(ids)
scores = np.array(llm.scores[:len(ids)])
out["teacher_forced"] = {
    "text": "tests/data/MPL-2.0.txt",
    "input_ids": ids,
    "argmax": [int(r.argmax()) for r in scores],
    "margins": [round(margin(r), 4) for r in scores],
}

# Perplexity as llama-perplexity: chunks of 512, second half scored (no BOS for this vocabulary).
tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
n_ctx, first = 512, 256
nll, count = 0.0, 0
for c in range(len(tokens) // n_ctx):
    llm = load()
    chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
    llm.eval(chunk)
    logits = np.array(llm.scores[:n_ctx], dtype=np.float64)
    for j in range(first, n_ctx - 1):
        row = logits[j]
        mx = row.max()
        nll -= row[chunk[j + 1]] - mx - np.log(np.exp(row - mx).sum())
        count += 1
out["perplexity"] = {"text": "tests/data/MPL-2.0.txt", "n_ctx": n_ctx,
                     "chunks": len(tokens) // n_ctx, "ppl": round(float(np.exp(nll / count)), 4)}

json.dump(out, open("tests/data/llamacpp-extra.json", "w"), indent=1)
print("wrote tests/data/llamacpp-extra.json")
