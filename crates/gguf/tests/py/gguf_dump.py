"""Dump a GGUF file as gguf-py's GGUFReader sees it, in a line format that tests/python_gguf.rs
reproduces from our reader. With `--write`, first write a sample file with gguf-py's GGUFWriter.

Lines:
  kv <TAB> key <TAB> type names (outer to inner, as gguf-py lists them) <TAB> flattened leaves
  tensor <TAB> name <TAB> type name <TAB> type id <TAB> dims (ggml order) <TAB> n_bytes
         <TAB> absolute data offset <TAB> data as hex
Leaves: integers in decimal, bools as true/false, floats as 'f' + the hex of their f64 bits,
strings as 's' + the hex of their UTF-8 bytes; separated by spaces.
"""
import struct
import sys

import numpy as np
import gguf
from gguf import GGUFValueType as T


def write_sample(path):
    w = gguf.GGUFWriter(path, "llama")
    w.add_custom_alignment(64)
    w.add_key_value("t.u8", 200, T.UINT8)
    w.add_key_value("t.i8", -100, T.INT8)
    w.add_key_value("t.u16", 60000, T.UINT16)
    w.add_key_value("t.i16", -30000, T.INT16)
    w.add_key_value("t.u32", 4000000000, T.UINT32)
    w.add_key_value("t.i32", -2000000000, T.INT32)
    w.add_key_value("t.f32", -0.15625, T.FLOAT32)
    w.add_key_value("t.bool", True, T.BOOL)
    w.add_key_value("t.string", "h\u00e9llo \u2713", T.STRING)
    w.add_key_value("t.u64", 2**64 - 1, T.UINT64)
    w.add_key_value("t.i64", -(2**63), T.INT64)
    w.add_key_value("t.f64", 1e300, T.FLOAT64)
    w.add_key_value("a.u8", [0, 1, 255], T.ARRAY, T.UINT8)
    w.add_key_value("a.i16", [-1, 2], T.ARRAY, T.INT16)
    w.add_key_value("a.i32", [-1, 0, 1], T.ARRAY, T.INT32)
    w.add_key_value("a.f32", [0.5, -2.0, 1e-30], T.ARRAY, T.FLOAT32)
    w.add_key_value("a.bool", [True, False], T.ARRAY, T.BOOL)
    w.add_key_value("a.string", ["a", "", "\u00fc"], T.ARRAY, T.STRING)
    w.add_key_value("a.u64", [2**64 - 1, 0], T.ARRAY, T.UINT64)
    w.add_key_value("a.f64", [3.5], T.ARRAY, T.FLOAT64)
    w.add_key_value("a.nested", [[1, 2], [3]], T.ARRAY, T.ARRAY)
    w.add_key_value("a.nested3", [[[1, 2]], [[3]]], T.ARRAY, T.ARRAY)
    w.add_tensor("f32", np.arange(6, dtype=np.float32).reshape(2, 3))
    w.add_tensor("f16", np.arange(8, dtype=np.float16))
    q4 = np.arange(2 * 18, dtype=np.uint8).reshape(2, 18)
    w.add_tensor("q4_0", q4, raw_dtype=gguf.GGMLQuantizationType.Q4_0)
    qk = (np.arange(3 * 144) % 251).astype(np.uint8).reshape(3, 144)
    w.add_tensor("q4_k", qk, raw_dtype=gguf.GGMLQuantizationType.Q4_K)
    w.add_tensor("i32", np.array([[1, -2], [3, 4], [5, 6]], dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def leaf(v, t):
    if t in (T.FLOAT32, T.FLOAT64):
        return "f" + struct.pack(">d", float(v)).hex()
    if t == T.BOOL:
        return "true" if v else "false"
    if t == T.STRING:
        return "s" + (v.encode("utf-8") if isinstance(v, str) else bytes(v)).hex()
    return str(int(v))


def dump(path):
    r = gguf.GGUFReader(path)
    for key, f in r.fields.items():
        if key.startswith("GGUF."):
            continue
        contents = f.contents()
        if f.types[0] != T.ARRAY:
            contents = [contents]
        leaves = " ".join(leaf(v, f.types[-1]) for v in contents)
        types = ",".join(t.name for t in f.types)
        print(f"kv\t{key}\t{types}\t{leaves}")
    for t in r.tensors:
        dims = ",".join(str(int(d)) for d in t.shape)
        data = np.asarray(t.data).tobytes().hex()
        print(f"tensor\t{t.name}\t{t.tensor_type.name}\t{int(t.tensor_type)}\t{dims}\t{int(t.n_bytes)}\t{int(t.data_offset)}\t{data}")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "--write":
        write_sample(sys.argv[1])
    dump(sys.argv[1])
