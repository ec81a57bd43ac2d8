#!/usr/bin/env python3
"""Writes tests/data/quantize-mini.json: llama-quantize's output (per-tensor type and sha256 prefix)
for every file type `rustorch quantize` offers, from a small F16 Llama whose weights follow a fixed
integer generator, so a Rust test can rebuild the identical source file and compare.

Uses llama.cpp 0c1e570 through `pip install llama-cpp-python==0.3.36` (llama_model_quantize).
The generator (xorshift32 -> k in [-1000, 1000] -> k / 16384, exact in f16) and the shape must stay
in sync with crates/cli/tests/quantize_mini.rs.
"""
import ctypes
import hashlib
import json

import gguf
import llama_cpp
import numpy as np

N_LAYER, E, FF, H, HK, V = 8, 256, 512, 4, 1, 512
FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q5_0": 8, "Q5_1": 9, "Q8_0": 7, "Q2_K": 10, "Q3_K_S": 11, "Q3_K_M": 12,
          "Q3_K_L": 13, "Q4_K_S": 14, "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17, "Q6_K": 18, "F16": 1,
          "BF16": 32, "F32": 0}


def tensors():
    state = 0x9E3779B9
    def values(n):
        nonlocal state
        out = np.empty(n, np.float32)
        for i in range(n):
            state ^= (state << 13) & 0xFFFFFFFF
            state ^= state >> 17
            state ^= (state << 5) & 0xFFFFFFFF
            out[i] = ((state % 2001) - 1000) / 16384.0
        return out
    t = [("token_embd.weight", (V, E))]
    for i in range(N_LAYER):
        p = f"blk.{i}."
        t += [(p + "attn_norm.weight", (E,)), (p + "attn_q.weight", (E, E)), (p + "attn_k.weight", (E // H * HK, E)),
              (p + "attn_v.weight", (E // H * HK, E)), (p + "attn_output.weight", (E, E)), (p + "ffn_norm.weight", (E,)),
              (p + "ffn_gate.weight", (FF, E)), (p + "ffn_up.weight", (FF, E)), (p + "ffn_down.weight", (E, FF))]
    t += [("output_norm.weight", (E,)), ("output.weight", (V, E))]
    for name, shape in t:
        if len(shape) == 1:
            yield name, np.ones(shape, np.float32)
        else:
            yield name, values(int(np.prod(shape))).reshape(shape).astype(np.float16)


src = "/tmp/quantize-mini-f16.gguf"
w = gguf.GGUFWriter(src, "llama")
w.add_block_count(N_LAYER); w.add_context_length(512); w.add_embedding_length(E); w.add_feed_forward_length(FF)
w.add_head_count(H); w.add_head_count_kv(HK); w.add_layer_norm_rms_eps(1e-5); w.add_rope_dimension_count(E // H)
w.add_file_type(1)
w.add_tokenizer_model("llama")
toks = ["<unk>", "<s>", "</s>"] + [f"<0x{i:02X}>" for i in range(256)] + [f"\u2581t{i}" for i in range(V - 259)]
w.add_token_list(toks); w.add_token_scores([0.0] * V); w.add_token_types([2, 3, 3] + [6] * 256 + [1] * (V - 259))
source_hashes = {}
for name, data in tensors():
    w.add_tensor(name, data)
    source_hashes[name] = hashlib.sha256(data.tobytes()).hexdigest()[:16]
w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()

out = {"source": "F16 Llama, 8 layers, 256 wide, FFN 512, 4/1 heads, 512 tokens; see this script",
       "command": "llama_model_quantize (llama.cpp 0c1e570), allow_requantize, no imatrix",
       "source_sha256": source_hashes, "files": {}}
for name, ft in FTYPES.items():
    p = llama_cpp.llama_model_quantize_default_params()
    p.ftype = ft
    p.nthread = 2
    dst = f"/tmp/quantize-mini-{name}.gguf"
    assert llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(p)) == 0, name
    r = gguf.GGUFReader(dst)
    out["files"][name] = {t.name: {"type": t.tensor_type.name,
                                   "sha256": hashlib.sha256(bytes(t.data)).hexdigest()[:16]} for t in r.tensors}
json.dump(out, open("tests/data/quantize-mini.json", "w"), indent=1)
print("wrote tests/data/quantize-mini.json")
