#!/usr/bin/env python3
"""Rewrites a llama-architecture GGUF (SmolLM2-135M-Instruct.Q4_1.gguf) into the GGUF layout of another
architecture, so that rustorch's qwen2 / qwen3 / phi3 code can be checked on a real, confident model
against llama.cpp. No re-quantization: whole quantized rows are moved, byte for byte.

usage: scripts/convert-arch.py SRC.gguf ARCH OUT.gguf      (ARCH: qwen2, qwen3, phi3)

What changes, per architecture (llama.cpp 0c1e570, src/models/*.cpp):
- all three use NEOX RoPE (rotation pairs i and i + head_dim/2), llama uses adjacent pairs (2i, 2i+1).
  llama.cpp's HF converter permuted the rows of attn_q / attn_k of each head for llama
  (`permute(w, n_head, n_head_kv)`: reshape(n_head, 2, head_dim/2, cols).swapaxes(1, 2)), so llama row
  h*d + 2i + j holds HF row h*d + j*d/2 + i. This script undoes that (whole rows), after which NEOX RoPE
  computes exactly what the llama file computes with NORM RoPE (same pairs, same frequencies).
- qwen2: adds blk.N.attn_{q,k,v}.bias (F32, seeded normal * 0.02): the model then differs slightly.
- qwen3: adds blk.N.attn_{q,k}_norm.weight (F32 [head_dim]: s * (1 + seeded normal * 0.05), s per
  dimension the least-squares scale that maps the normalized q (or k) of that layer of the llama model back
  to the original, see qk_rms_per_layer) and qwen3.attention.key_length / value_length. The per-head RMS
  norm of q and k still changes the model a lot: perplexity ~75 on the first 3 chunks of GPL-3 against
  ~16 for the llama file (~330 with weights near 1, ~118 with one median scale per layer).
- phi3: fuses attn_q, attn_k, attn_v rows into blk.N.attn_qkv.weight (q rows, then k, then v) and
  ffn_gate, ffn_up rows into blk.N.ffn_up.weight (gate rows first: llama.cpp's phi3 graph applies
  ggml_swiglu to the ffn_up output, silu(first half) * second half); adds output.weight (a copy of
  token_embd.weight) since Phi-3 files have an untied output; adds phi3.rope.dimension_count.
Metadata: every `llama.*` key becomes `ARCH.*`, general.architecture = ARCH; tokenizer.* and the other
general.* keys are kept as they are. Deterministic: the same source gives the same bytes (see sha256 in
tests/data/llamacpp-arch.json).
"""
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType, GGUFWriter, GGMLQuantizationType

SEED = {"qwen2": 2, "qwen3": 3, "phi3": 4}


def rows_of(t):
    """The tensor's data as (n_rows, bytes_per_row) uint8: one row = ne0 elements (whole blocks)."""
    n_rows = int(np.prod([int(x) for x in t.shape[1:]])) if len(t.shape) > 1 else 1
    raw = np.frombuffer(t.data.tobytes(), dtype=np.uint8)
    return raw.reshape(n_rows, -1)


def unpermute_rows(rows, n_head):
    """Inverse of the HF converter's llama permute, on whole rows: HF row h*d + j*d/2 + i <- llama row h*d + 2i + j."""
    n, b = rows.shape
    d = n // n_head
    return rows.reshape(n_head, d // 2, 2, b).swapaxes(1, 2).reshape(n, b)


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in SEED:
        sys.exit(__doc__)
    src, arch, out = sys.argv[1], sys.argv[2], sys.argv[3]
    r = GGUFReader(src)
    assert r.fields["general.architecture"].contents() == "llama", "source must be a llama GGUF"
    kv = {k: r.fields[k].contents() for k in r.fields if k.startswith("llama.")}
    n_head, n_head_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    n_embd, n_layer = kv["llama.embedding_length"], kv["llama.block_count"]
    head_dim = n_embd // n_head
    rng = np.random.default_rng(SEED[arch])
    if arch == "qwen3":
        # rounded to 1/8 so that float differences between numpy builds cannot change the file
        qk_scale = [(np.round(a * 8) / 8, np.round(b * 8) / 8) for a, b in qk_rms_per_layer(r, kv)]

    w = GGUFWriter(out, arch, use_temp_file=False)
    for name, f in r.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        new = arch + name[len("llama"):] if name.startswith("llama.") else name
        vtype = f.types[0]
        if vtype == GGUFValueType.ARRAY:
            w.add_key_value(new, f.contents(), vtype, sub_type=f.types[-1])
        else:
            w.add_key_value(new, f.contents(), vtype)
    if arch == "qwen3":
        w.add_uint32("qwen3.attention.key_length", head_dim)
        w.add_uint32("qwen3.attention.value_length", head_dim)
    if arch == "phi3" and "llama.rope.dimension_count" not in kv:
        w.add_uint32("phi3.rope.dimension_count", head_dim)

    tensors = {t.name: t for t in r.tensors}

    def put(name, rows, qtype):
        # rows: (n_rows, bytes_per_row) uint8, whole rows of any type; the writer derives ne0 from the bytes
        w.add_tensor(name, np.ascontiguousarray(rows, dtype=np.uint8), raw_dtype=qtype)

    def copy(t, name=None):
        if t.tensor_type == GGMLQuantizationType.F32:
            w.add_tensor(name or t.name, np.array(t.data, dtype=np.float32).reshape([int(x) for x in t.shape[::-1]]))
        else:
            put(name or t.name, rows_of(t), t.tensor_type)

    def small_f32(name, values):
        w.add_tensor(name, np.asarray(values, dtype=np.float32))

    done = set()
    for t in r.tensors:
        name = t.name
        if name in done:
            continue
        if not name.startswith("blk."):
            copy(t)
            if name == "token_embd.weight" and arch == "phi3" and "output.weight" not in tensors:
                copy(t, "output.weight")
            continue
        il = int(name.split(".")[1])
        p = f"blk.{il}."
        base = name[len(p):]
        if base in ("attn_q.weight", "attn_k.weight", "attn_v.weight"):
            if arch == "phi3":
                q, k, v = (tensors[p + f"attn_{x}.weight"] for x in "qkv")
                assert q.tensor_type == k.tensor_type == v.tensor_type
                fused = np.concatenate([unpermute_rows(rows_of(q), n_head),
                                        unpermute_rows(rows_of(k), n_head_kv), rows_of(v)])
                put(p + "attn_qkv.weight", fused, q.tensor_type)
                done.update(p + f"attn_{x}.weight" for x in "qkv")
                continue
            rows = rows_of(t)
            if base == "attn_q.weight":
                rows = unpermute_rows(rows, n_head)
            elif base == "attn_k.weight":
                rows = unpermute_rows(rows, n_head_kv)
            put(name, rows, t.tensor_type)
            done.add(name)
            n_out = rows.shape[0]
            if arch == "qwen2":
                small_f32(p + base.replace("weight", "bias"), rng.standard_normal(n_out) * 0.02)
            if arch == "qwen3" and base in ("attn_q.weight", "attn_k.weight"):
                norm = p + base.replace(".weight", "_norm.weight")
                scale = qk_scale[il][0 if base == "attn_q.weight" else 1]
                small_f32(norm, scale * (1.0 + rng.standard_normal(head_dim) * 0.05))
            continue
        if arch == "phi3" and base in ("ffn_gate.weight", "ffn_up.weight"):
            g, u = tensors[p + "ffn_gate.weight"], tensors[p + "ffn_up.weight"]
            assert g.tensor_type == u.tensor_type
            put(p + "ffn_up.weight", np.concatenate([rows_of(g), rows_of(u)]), g.tensor_type)
            done.update([p + "ffn_gate.weight", p + "ffn_up.weight"])
            continue
        copy(t)
        done.add(name)

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {out} ({arch}, {n_layer} layers)")


# The first 128 tokens of tests/data/MPL-2.0.txt in SmolLM2's vocabulary: calibration input for qwen3.
CALIB_IDS = [
    61, 47280, 4837, 6966, 13867, 216, 34, 30, 32, 198, 12704, 1189, 1116, 33, 30, 39331, 198, 36488, 1116, 33,
    30, 33, 30, 476, 5121, 1649, 270, 18, 472, 1530, 971, 1212, 355, 3425, 10404, 338, 5593, 28, 8719, 288, 472,
    260, 4599, 282, 28, 355, 22247, 340, 2213, 12316, 30, 1116, 33, 30, 34, 30, 476, 5121, 1649, 270, 13867, 18,
    472, 1530, 260, 4925, 282, 260, 42904, 282, 1449, 365, 342, 750, 25, 804, 472, 411, 253, 35822, 270, 284,
    338, 1542, 35822, 270, 506, 47631, 30, 1116, 33, 30, 35, 30, 476, 5121, 2865, 18, 472, 1530, 340, 2213,
    12316, 282, 253, 1542, 35822, 270, 30, 1116, 33, 30, 36, 30, 476, 51, 2213, 12316, 18, 472, 1530, 12238,
    9166, 6164, 288, 527, 260, 3791]


def qk_rms_per_layer(r, kv):
    """Per layer, for q and for k (before RoPE), the per-dimension least-squares scale w with
    w * x / rms(x) ~ x over the heads and tokens, from a float32 numpy forward pass of the llama model
    over CALIB_IDS (dequantized weights, adjacent-pair RoPE as llama.cpp's llama graph), in HF (NEOX)
    dimension order. qwen3's per-head RMS norm makes q and k unit-RMS; these weights bring them back near
    the original scale, so the converted model keeps some of SmolLM2's confidence."""
    from gguf.quants import dequantize
    t = {x.name: x for x in r.tensors}
    deq = lambda n: dequantize(t[n].data, t[n].tensor_type).astype(np.float32)
    n_head, n_kv = kv["llama.attention.head_count"], kv["llama.attention.head_count_kv"]
    d = kv["llama.embedding_length"] // n_head
    eps = kv["llama.attention.layer_norm_rms_epsilon"]
    base = kv.get("llama.rope.freq_base", 10000.0)
    ids = np.array(CALIB_IDS)
    n = len(ids)
    x = deq("token_embd.weight")[ids]
    norm = lambda v, w: v / np.sqrt((v * v).mean(-1, keepdims=True) + eps) * w
    pos = np.arange(n)[:, None]
    ang = pos * base ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(v):  # (n, heads, d), adjacent pairs
        a, b = v[..., 0::2], v[..., 1::2]
        out = np.empty_like(v)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out
    def ls_scale(a):
        # per dimension (HF/NEOX order), the least-squares w with w * a / rms(a) ~ a over tokens and heads
        r = np.sqrt((a * a).mean(-1, keepdims=True))
        w = (a * a / r).sum((0, 1)) / (a * a / (r * r)).sum((0, 1))
        return w.reshape(d // 2, 2).T.reshape(d)  # llama order 2i+j -> HF order j*d/2+i

    mask = np.triu(np.full((n, n), -np.inf, np.float32), 1)
    out = []
    for il in range(kv["llama.block_count"]):
        p = f"blk.{il}."
        h = norm(x, deq(p + "attn_norm.weight"))
        q = (h @ deq(p + "attn_q.weight").T).reshape(n, n_head, d)
        k = (h @ deq(p + "attn_k.weight").T).reshape(n, n_kv, d)
        v = (h @ deq(p + "attn_v.weight").T).reshape(n, n_kv, d)
        out.append((ls_scale(q), ls_scale(k)))
        q, k = rope(q), rope(k)
        g = n_head // n_kv
        att = np.empty((n, n_head, d), np.float32)
        for hh in range(n_head):
            s = q[:, hh] @ k[:, hh // g].T / np.sqrt(d) + mask
            s = np.exp(s - s.max(-1, keepdims=True))
            att[:, hh] = (s / s.sum(-1, keepdims=True)) @ v[:, hh // g]
        x = x + att.reshape(n, -1) @ deq(p + "attn_output.weight").T
        h = norm(x, deq(p + "ffn_norm.weight"))
        gt, up = h @ deq(p + "ffn_gate.weight").T, h @ deq(p + "ffn_up.weight").T
        x = x + (gt / (1 + np.exp(-gt)) * up) @ deq(p + "ffn_down.weight").T
    return out

if __name__ == "__main__":
    main()
