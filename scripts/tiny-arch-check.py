#!/usr/bin/env python3
"""An independent numpy forward pass for the tiny files of scripts/tiny-arch.py, compared with llama.cpp's
logits in tests/data/llamacpp-tiny-arch.json: it checks the facts tests/data/README-arch.md states about
each architecture (RoPE pairs and factors, biases, q/k norms, Gemma 3's scale / sliding window / GELU,
Phi-3's fused tensors and LongRoPE choice), written from those facts rather than from llama.cpp's code.

usage: scripts/tiny-arch-check.py [--f16]   (--f16: round Q, K, V and the attention weights to f16 as
                                             llama.cpp's CPU path with its default F16 KV cache does)
"""
import json
import sys

import numpy as np
from gguf import GGUFReader

F16 = "--f16" in sys.argv


def f16(x):
    return x.astype(np.float16).astype(np.float32) if F16 else x


def load(path):
    r = GGUFReader(path)
    kv = {k: f.contents() for k, f in r.fields.items() if not k.startswith("tokenizer.") and not k.startswith("GGUF.")}
    t = {x.name: np.array(x.data, dtype=np.float32).reshape([int(s) for s in x.shape[::-1]]) for x in r.tensors}
    return kv, t


def rms(x, w, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def rope(x, pos, base, neox, factors=None, mscale=1.0):
    """x: (n, heads, d). Pair i turns by pos * base^(-2i/d) / factors[i]; NEOX pairs (i, i + d/2), NORM (2i, 2i+1)."""
    d = x.shape[-1]
    theta = pos[:, None] * base ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    if factors is not None:
        theta = theta / factors
    cos, sin = (np.cos(theta) * mscale)[:, None, :], (np.sin(theta) * mscale)[:, None, :]
    if neox:
        a, b = x[..., :d // 2], x[..., d // 2:]
        return np.concatenate([a * cos - b * sin, a * sin + b * cos], -1).astype(np.float32)
    a, b = x[..., 0::2], x[..., 1::2]
    out = np.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def attention(q, k, v, scale, window=None):
    n, H, d = q.shape
    g = H // k.shape[1]
    q, k, v = f16(q), f16(k), f16(v)
    i, j = np.arange(n)[:, None], np.arange(n)[None, :]
    masked = j > i
    if window:
        masked |= (i - j) >= window  # llama.cpp's LLAMA_SWA_TYPE_STANDARD: p1 - p0 >= n_swa is masked
    out = np.empty((n, H, v.shape[-1]), np.float32)
    for h in range(H):
        s = (q[:, h] @ k[:, h // g].T) * scale
        s[masked] = -np.inf
        p = np.exp(s - s.max(-1, keepdims=True))
        p = f16(p / p.sum(-1, keepdims=True))
        out[:, h] = p @ v[:, h // g]
    return out.reshape(n, -1)


def silu(x):
    return x / (1 + np.exp(-x))


def gelu_llamacpp(x):
    """ggml-cpu's GELU (GGML_GELU_FP16): the tanh approximation looked up in an f16 table: x rounded to f16,
    gelu computed in f32 and rounded to f16; x <= -10 gives 0 and x >= 10 gives x."""
    def g(v):
        return 0.5 * v * (1 + np.tanh(np.float32(0.7978845608028654) * v * (1 + np.float32(0.044715) * v * v)))
    xh = x.astype(np.float16).astype(np.float32)
    y = g(xh).astype(np.float16).astype(np.float32)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, y)).astype(np.float32)


def forward(path, tokens):
    kv, t = load(path)
    arch = kv["general.architecture"]
    A = lambda k, d=None: kv.get(f"{arch}.{k}", d)
    E, L, H, HK = A("embedding_length"), A("block_count"), A("attention.head_count"), A("attention.head_count_kv")
    d = A("attention.key_length", E // H)
    eps = A("attention.layer_norm_rms_epsilon")
    base = A("rope.freq_base", 10000.0)
    n = len(tokens)
    pos = np.arange(n, dtype=np.float64)
    x = t["token_embd.weight"][tokens]
    neox = arch != "llama"
    factors, mscale = None, 1.0
    if arch == "llama" and "rope_freqs.weight" in t:
        factors = t["rope_freqs.weight"]
    if arch == "phi3":
        n_ctx_seq = 256  # llama.cpp pads n_ctx to a multiple of 256; the reference ran at n_ctx 256
        orig = A("rope.scaling.original_context_length", A("context_length"))
        factors = t["rope_factors_long.weight" if n_ctx_seq > orig else "rope_factors_short.weight"]
        mscale = A("rope.scaling.attn_factor", 1.0)
    if arch == "gemma3":
        x = x * np.float32(np.sqrt(E))
        window = A("attention.sliding_window")
        pattern = A("attention.sliding_window_pattern", 6)
    for il in range(L):
        p = f"blk.{il}."
        h = rms(x, t[p + "attn_norm.weight"], eps)
        if arch == "phi3":
            qkv = h @ t[p + "attn_qkv.weight"].T
            q, k, v = np.split(qkv, [H * d, H * d + HK * d], axis=-1)
        else:
            q, k, v = (h @ t[p + f"attn_{c}.weight"].T for c in "qkv")
            if p + "attn_q.bias" in t:
                q, k, v = q + t[p + "attn_q.bias"], k + t[p + "attn_k.bias"], v + t[p + "attn_v.bias"]
        q, k, v = q.reshape(n, H, d), k.reshape(n, HK, d), v.reshape(n, HK, -1)
        if p + "attn_q_norm.weight" in t:
            q, k = rms(q, t[p + "attn_q_norm.weight"], eps), rms(k, t[p + "attn_k_norm.weight"], eps)
        b, win = base, None
        if arch == "gemma3" and il % pattern < pattern - 1:  # sliding layer (llama.cpp's set_swa_pattern)
            b, win = A("rope.freq_base_swa", 10000.0), window
        q, k = rope(q, pos, b, neox, factors, mscale), rope(k, pos, b, neox, factors, mscale)
        a = attention(q, k, v, 1 / np.sqrt(d), win) @ t[p + "attn_output.weight"].T
        if arch == "gemma3":
            a = rms(a, t[p + "post_attention_norm.weight"], eps)
        x = x + a
        h = rms(x, t[p + "ffn_norm.weight"], eps)
        if arch == "phi3":
            gate, up = np.split(h @ t[p + "ffn_up.weight"].T, 2, axis=-1)  # first half gate, second up
        else:
            gate, up = h @ t[p + "ffn_gate.weight"].T, h @ t[p + "ffn_up.weight"].T
        act = gelu_llamacpp(gate) if arch == "gemma3" else silu(gate)
        f = (act * up) @ t[p + "ffn_down.weight"].T
        if arch == "gemma3":
            f = rms(f, t[p + "post_ffw_norm.weight"], eps)
        x = x + f
    x = rms(x, t["output_norm.weight"], eps)
    return x @ t.get("output.weight", t["token_embd.weight"]).T


def main():
    ref = json.load(open("tests/data/llamacpp-tiny-arch.json"))
    worst = 0.0
    for arch, e in ref.items():
        if not isinstance(e, dict):
            continue
        ours = forward(e["file"], e["tokens"])
        theirs = np.array(e["logits"], dtype=np.float32)
        diff = np.abs(ours - theirs).max()
        agree = (ours.argmax(1) == np.array(e["argmax"])).mean()
        print(f"{arch:16s} max |numpy - llama.cpp| = {diff:.2e} (logit std {theirs.std():.2f}), argmax agree {agree:.3f}")
        worst = max(worst, diff / theirs.std())
    print("worst relative difference", f"{worst:.2e}")


if __name__ == "__main__":
    main()
