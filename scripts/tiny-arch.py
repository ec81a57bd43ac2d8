#!/usr/bin/env python3
"""Writes tiny random-weight GGUF files, one per architecture, for checking rustorch's forward pass
against llama.cpp on the parts a real file may not reach (scripts/llamacpp-arch-reference.py computes the
reference logits). All weights F32, fixed seeds: the same numpy gives the same files (numpy's
default_rng(PCG64) streams are stable across versions).

usage: scripts/tiny-arch.py OUTDIR

Files (vocab 320: <unk> <s> </s>, the 256 byte tokens <0x00>..<0xFF>, 61 plain tokens; a SentencePiece
('llama') vocabulary that only needs to load, the tests feed token ids):
- llama.gguf   llama, 3 layers, n_embd 64, 4 heads / 2 KV heads (head_dim 16), rope base 10000, untied
               output, rope_freqs.weight [8]: Llama 3.1's per-pair divisors (factor 8, low/high freq factor
               1/4, original context 32 so that the 8 pairs span all three regimes).
- qwen2.gguf   qwen2, 3 layers, n_embd 64, 4/2 heads, q/k/v biases, rope base 1e6, tied output.
- qwen2-hd32.gguf  qwen2 as above with 2 heads / 1 KV head of 32 (the CUDA kernels take head_dim 32 and
               up; the engine's GPU tests run on it).
- qwen3.gguf   qwen3, 3 layers, n_embd 64, 4/2 heads with key_length 32 (q is 128 wide, not n_embd),
               q/k RMS norms, rope base 1e6, untied output.
- gemma3.gguf  gemma3, 3 layers, n_embd 64, 4 heads / 1 KV head, key_length 32, sliding window 8,
               sliding_window_pattern 3 (layers 0, 1 sliding, layer 2 global), rope base 1e6 for global
               layers and the default 10000 for sliding ones (no freq_base_swa key, as real Gemma 3 files),
               post-attention and post-ffw norms, q/k norms, tied output.
- gemma3-pattern6.gguf  the same but n_ff 64, 6 layers and no sliding_window_pattern key: llama.cpp's default rule
               (pattern 6: layers 0-4 sliding, 5 global), as the real gemma-3-270m file relies on.
- phi3.gguf    phi3, 3 layers, n_embd 64, 4/2 heads, fused attn_qkv and ffn_up (gate rows, then up rows),
               LongRoPE rope_factors_long / rope_factors_short [8], context_length 131072,
               rope.scaling.original_context_length 4096 and rope.scaling.attn_factor (as the HF converter
               writes it): at any context up to 4096 llama.cpp uses the short factors.
- phi3-long.gguf the same weights with original_context_length 128 (context_length 4096): llama.cpp pads
               its context to a multiple of 256, so n_ctx_seq (256) > 128 and it uses the long factors.
"""
import math
import os
import sys

import numpy as np
from gguf import GGUFWriter

V, E, FF = 320, 64, 128
TOKENS = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + [f"\u2581t{i}" for i in range(V - 259)]
TYPES = [2, 3, 3] + [6] * 256 + [1] * (V - 259)


def llama3_rope_freqs(head_dim, base, factor=8.0, low=1.0, high=4.0, orig_ctx=32):
    """Llama 3.1's rope scaling as the HF converter turns it into rope_freqs.weight (per-pair divisors)."""
    out = []
    low_wavelen, high_wavelen = orig_ctx / low, orig_ctx / high
    for i in range(0, head_dim, 2):
        freq = 1.0 / base ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (orig_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


class Gen:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def mat(self, rows, cols, gain=1.0):  # numpy (rows, cols) = GGUF ne [cols, rows]
        return (self.rng.standard_normal((rows, cols)) * gain / math.sqrt(cols)).astype(np.float32)

    def vec(self, n, mean=0.0, std=1.0):
        return (mean + self.rng.standard_normal(n) * std).astype(np.float32)


def writer(path, arch, n_layer, head, head_kv, ctx=4096, ff=FF):
    w = GGUFWriter(path, arch)
    w.add_block_count(n_layer)
    w.add_context_length(ctx)
    w.add_embedding_length(E)
    w.add_feed_forward_length(ff)
    w.add_head_count(head)
    w.add_head_count_kv(head_kv)
    w.add_file_type(0)
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(TOKENS)
    w.add_token_scores([0.0] * V)
    w.add_token_types(TYPES)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(False)
    return w


def finish(w):
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama(path):
    g, H, HK, d = Gen(1), 4, 2, 16
    w = writer(path, "llama", 3, H, HK)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(d)
    w.add_tensor("token_embd.weight", g.mat(V, E, math.sqrt(E)))
    w.add_tensor("rope_freqs.weight", llama3_rope_freqs(d, 10000.0))
    for i in range(3):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", g.mat(H * d, E, 2.0))
        w.add_tensor(p + "attn_k.weight", g.mat(HK * d, E, 2.0))
        w.add_tensor(p + "attn_v.weight", g.mat(HK * d, E))
        w.add_tensor(p + "attn_output.weight", g.mat(E, H * d))
        w.add_tensor(p + "ffn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", g.mat(FF, E))
        w.add_tensor(p + "ffn_up.weight", g.mat(FF, E))
        w.add_tensor(p + "ffn_down.weight", g.mat(E, FF))
    w.add_tensor("output_norm.weight", g.vec(E, 1.0, 0.1))
    w.add_tensor("output.weight", g.mat(V, E, 3.0))
    finish(w)


def qwen(path, arch, wide=False):
    g, H, HK = Gen(2 if arch == "qwen2" else 3), 4, 2
    d = 16 if arch == "qwen2" else 32
    if wide:  # 2 heads / 1 KV head of 32: the narrowest the CUDA kernels take
        g, H, HK, d = Gen(8), 2, 1, 32
    w = writer(path, arch, 3, H, HK)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(1000000.0)
    if arch == "qwen3":
        w.add_key_length(d)
        w.add_value_length(d)
    w.add_tensor("token_embd.weight", g.mat(V, E, math.sqrt(E)))
    for i in range(3):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", g.mat(H * d, E, 2.0))
        w.add_tensor(p + "attn_k.weight", g.mat(HK * d, E, 2.0))
        w.add_tensor(p + "attn_v.weight", g.mat(HK * d, E))
        if arch == "qwen2":
            w.add_tensor(p + "attn_q.bias", g.vec(H * d, 0.0, 0.5))
            w.add_tensor(p + "attn_k.bias", g.vec(HK * d, 0.0, 0.5))
            w.add_tensor(p + "attn_v.bias", g.vec(HK * d, 0.0, 0.5))
        else:
            w.add_tensor(p + "attn_q_norm.weight", g.vec(d, 1.0, 0.2))
            w.add_tensor(p + "attn_k_norm.weight", g.vec(d, 1.0, 0.2))
        w.add_tensor(p + "attn_output.weight", g.mat(E, H * d))
        w.add_tensor(p + "ffn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", g.mat(FF, E))
        w.add_tensor(p + "ffn_up.weight", g.mat(FF, E))
        w.add_tensor(p + "ffn_down.weight", g.mat(E, FF))
    w.add_tensor("output_norm.weight", g.vec(E, 1.0, 0.1))
    if arch == "qwen3":
        w.add_tensor("output.weight", g.mat(V, E, 3.0))
    finish(w)


def gemma3(path, n_layer, pattern, ff):
    g, H, HK, d = Gen(5), 4, 1, 32
    w = writer(path, "gemma3", n_layer, H, HK, ctx=32768, ff=ff)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_key_length(d)
    w.add_value_length(d)
    w.add_rope_freq_base(1000000.0)
    w.add_sliding_window(8)
    if pattern is not None:
        w.add_uint32("gemma3.attention.sliding_window_pattern", pattern)
    # Gemma's graph scales the embedding by sqrt(n_embd): rows of RMS 1/sqrt(n_embd) become unit RMS
    w.add_tensor("token_embd.weight", g.mat(V, E))
    for i in range(n_layer):
        p = f"blk.{i}."
        # Gemma norms are stored with the +1 already added (the HF converter adds it)
        w.add_tensor(p + "attn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "attn_q.weight", g.mat(H * d, E))
        w.add_tensor(p + "attn_k.weight", g.mat(HK * d, E))
        w.add_tensor(p + "attn_v.weight", g.mat(HK * d, E))
        w.add_tensor(p + "attn_q_norm.weight", g.vec(d, 1.0, 0.3))
        w.add_tensor(p + "attn_k_norm.weight", g.vec(d, 1.0, 0.3))
        w.add_tensor(p + "attn_output.weight", g.mat(E, H * d))
        w.add_tensor(p + "post_attention_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_gate.weight", g.mat(ff, E, 2.0))
        w.add_tensor(p + "ffn_up.weight", g.mat(ff, E))
        w.add_tensor(p + "ffn_down.weight", g.mat(E, ff))
        w.add_tensor(p + "post_ffw_norm.weight", g.vec(E, 1.0, 0.1))
    w.add_tensor("output_norm.weight", g.vec(E, 1.0, 0.1))
    finish(w)


def phi3(path, ctx, orig_ctx):
    g, H, HK, d = Gen(6), 4, 2, 16
    w = writer(path, "phi3", 3, H, HK, ctx=ctx)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(d)
    w.add_rope_scaling_orig_ctx_len(orig_ctx)
    scale = ctx / orig_ctx
    w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig_ctx)))
    w.add_tensor("token_embd.weight", g.mat(V, E, math.sqrt(E)))
    # LongRoPE per-pair divisors: short ones near 1, long ones growing with the pair index (as Phi-3's)
    w.add_tensor("rope_factors_long.weight", np.geomspace(1.0, 40.0, d // 2).astype(np.float32))
    w.add_tensor("rope_factors_short.weight", (1.0 + 0.1 * np.arange(d // 2)).astype(np.float32))
    for i in range(3):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "attn_qkv.weight", np.concatenate([g.mat(H * d, E, 2.0), g.mat(HK * d, E, 2.0),
                                                            g.mat(HK * d, E)]))
        w.add_tensor(p + "attn_output.weight", g.mat(E, H * d))
        w.add_tensor(p + "ffn_norm.weight", g.vec(E, 1.0, 0.1))
        w.add_tensor(p + "ffn_up.weight", np.concatenate([g.mat(FF, E), g.mat(FF, E)]))  # gate, then up
        w.add_tensor(p + "ffn_down.weight", g.mat(E, FF))
    w.add_tensor("output_norm.weight", g.vec(E, 1.0, 0.1))
    w.add_tensor("output.weight", g.mat(V, E, 3.0))
    finish(w)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    llama(f"{out}/llama.gguf")
    qwen(f"{out}/qwen2.gguf", "qwen2")
    qwen(f"{out}/qwen3.gguf", "qwen3")
    qwen(f"{out}/qwen2-hd32.gguf", "qwen2", wide=True)
    gemma3(f"{out}/gemma3.gguf", 3, 3, FF)
    gemma3(f"{out}/gemma3-pattern6.gguf", 6, None, 64)
    phi3(f"{out}/phi3.gguf", 131072, 4096)
    phi3(f"{out}/phi3-long.gguf", 4096, 128)
    for f in sorted(os.listdir(out)):
        if f.endswith(".gguf"):
            print(f"{out}/{f}: {os.path.getsize(f'{out}/{f}')} bytes")


if __name__ == "__main__":
    main()
