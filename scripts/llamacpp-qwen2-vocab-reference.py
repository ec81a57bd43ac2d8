#!/usr/bin/env python3
"""Writes tests/data/llamacpp-qwen2-vocab.json: llama.cpp's tokenizations with a real Qwen2 vocabulary
(DeepSeek-R1-Distill-Qwen-7B, pre-tokenizer `deepseek-r1-qwen`, 152,064 tokens) and Jinja2's renderings
of its chat template. Not run by CI: its output is committed.

usage: scripts/llamacpp-qwen2-vocab-reference.py MODELS_DIR [OUT.json]

MODELS_DIR holds deepseek-r1-distill-qwen-7b-vocab.gguf (scripts/fetch-models.sh). Needs
llama-cpp-python==0.3.36 (llama.cpp 0c1e570), gguf==0.19.0 and jinja2 3.1.
"""
import datetime
import hashlib
import json
import sys

import gguf
import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from llama_cpp import Llama

NAME = "deepseek-r1-distill-qwen-7b-vocab.gguf"
models = sys.argv[1]
out_path = sys.argv[2] if len(sys.argv) > 2 else "tests/data/llamacpp-qwen2-vocab.json"
path = f"{models}/{NAME}"

reader = gguf.GGUFReader(path)
tokens = reader.fields["tokenizer.ggml.tokens"].contents()
template = reader.fields["tokenizer.chat_template"].contents()
bos_token = tokens[reader.fields["tokenizer.ggml.bos_token_id"].contents()]
eos_token = tokens[reader.fields["tokenizer.ggml.eos_token_id"].contents()]

# --- chat template, rendered as Hugging Face transformers does -----------------------------------


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=[jinja2.ext.loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now
compiled = env.from_string(template)

CONVERSATIONS = [
    [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    [
        {"role": "user", "content": "What is 17 * 23?"},
        {"role": "assistant",
         "content": "<think>\n17 * 23 = 17 * 20 + 17 * 3 = 340 + 51 = 391.\n</think>\n\n17 × 23 = **391**."},
        {"role": "user", "content": "And 391 / 17?"},
    ],
    [
        {"role": "system", "content": "Réponds en français.\n"},
        {"role": "user", "content": "你好！Explain `x = [i**2 for i in range(10)]`  in one line. 🤔"},
        {"role": "assistant", "content": "Une liste des carrés de 0 à 9."},
        {"role": "user", "content": "Merci  \n\n  et <think> ?"},
    ],
]

chat = []
for messages in CONVERSATIONS:
    text = compiled.render(messages=messages, bos_token=bos_token, eos_token=eos_token,
                           add_generation_prompt=True)
    chat.append({"messages": messages, "add_generation_prompt": True, "rendered": text})

# --- tokenization ---------------------------------------------------------------------------------

gpl3 = open("../shared/reference/texts/GPL-3", encoding="utf-8").read()[:2000]

TEXTS = [
    "Hello world",
    " Hello world",
    "Hello, world! How are you today?",
    # digits: the Qwen2 pre-tokenizer splits numbers into single digits
    "1234567890",
    "3.14159 and 2,718,281 and 1e-10 and 0x1F",
    "In 2024 there were 365 days; 12:30pm, v1.2.3, $19.99, 100%",
    # contractions, case
    "I'm sure you'll see they've done it, haven't they? DON'T SHOUT. It's 'quoted'.",
    "The Quick-Brown FOX's den",
    # CJK, other scripts, accents
    "你好，世界！这是一个测试。",
    "日本語のテキストとカタカナ、ひらがな。",
    "한국어 문장입니다.",
    "Привет, мир! Ελληνικά. مرحبا بالعالم. שלום",
    "café naïve résumé Zürich Ångström",
    # emoji, ZWJ sequences, flags, symbols
    "I love 🦀 and 🐍! 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✓ → ∑ ≠ ∞",
    "🤔🤔🤔",
    # code, whitespace runs
    "def f(x):\n    if x > 0:\n        return x  # positive\n\treturn -x\n",
    "fn main() {\n    let v: Vec<u32> = (0..10).collect();\n    println!(\"{:?}\", v);\n}\n",
    "a  b   c    d     e",
    "          ten spaces before",
    "trailing spaces      ",
    "\n",
    "\n\n\n\n",
    "line one\n\nline two\r\nline three\n \n  \n",
    "\t\t tabs\t and\tspaces \t",
    "   \n   \n",
    # special tokens: control (<｜User｜>, <|fim_prefix|>) and user-defined (<think>, <tool_call>)
    "<｜begin▁of▁sentence｜><｜User｜>Hi there<｜Assistant｜><think>\nOkay.\n</think>\n\nHello!<｜end▁of▁sentence｜>",
    "<think>reasoning</think>answer",
    " <think> spaced </think> ",
    "<tool_call>{\"name\": \"f\"}</tool_call>",
    "<|fim_prefix|>def add(a, b):<|fim_suffix|>\n<|fim_middle|>",
    "<|im_start|>user\nhi<|im_end|>",
    # ASCII look-alikes of the full-width special tokens are plain text
    "<|User|>Hello<|Assistant|>",
    "<|begin_of_sentence|>text<|end_of_sentence|>",
    "",
    gpl3,
]
TEXTS += [c["rendered"] for c in chat]

llm = Llama(path, vocab_only=True, verbose=False)
cases = []
for text in TEXTS:
    for add_bos, special in [(True, True), (False, True), (True, False), (False, False)]:
        ids = llm.tokenize(text.encode(), add_bos=add_bos, special=special)
        cases.append({"text": text, "add_bos": add_bos, "special": special, "ids": ids})

with open(path, "rb") as f:
    sha = hashlib.sha256(f.read()).hexdigest()

out = {
    "llama_cpp": "0c1e570 (llama-cpp-python 0.3.36, Llama(vocab_only=True).tokenize(text.encode(), "
                 "add_bos=add_bos, special=special))",
    "jinja2": f"{jinja2.__version__}: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, "
              "loopcontrols) with Hugging Face's tojson / raise_exception / strftime_now",
    "model": NAME,
    "sha256": sha,
    "bos_token": bos_token,
    "eos_token": eos_token,
    "tokenize": cases,
    "chat": chat,
}
with open(out_path, "w", encoding="utf-8") as f:
    json.dump(out, f, ensure_ascii=False, indent=1)
    f.write("\n")
print(f"{out_path}: {len(cases)} tokenizations, {len(chat)} renderings", file=sys.stderr)
