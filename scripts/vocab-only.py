#!/usr/bin/env python3
"""Copy every metadata key of a GGUF file into a new GGUF file with zero tensors.

    python3 scripts/vocab-only.py SRC.gguf OUT.gguf

The result keeps general.architecture and the whole vocabulary / chat template, so llama.cpp's
`vocab_only=True` and rustorch's tokenizer load it. SRC may be truncated anywhere after its
metadata (e.g. the first 100 MB of a 4.7 GB model): the header is parsed here, not by
gguf.GGUFReader (which maps the tensor data and refuses a truncated file), and only the key/value
section is read. The output is written with gguf.GGUFWriter (gguf 0.19.x), keys in SRC's order,
each with SRC's value type (and array element type).
"""

import struct
import sys

import gguf
from gguf import GGUFValueType as T

SCALAR = {
    T.UINT8: "<B", T.INT8: "<b", T.UINT16: "<H", T.INT16: "<h", T.UINT32: "<I", T.INT32: "<i",
    T.FLOAT32: "<f", T.UINT64: "<Q", T.INT64: "<q", T.FLOAT64: "<d", T.BOOL: "<?",
}


class Reader:
    def __init__(self, f):
        self.f = f

    def take(self, n):
        b = self.f.read(n)
        if len(b) != n:
            raise SystemExit("vocab-only: source ends inside its metadata")
        return b

    def unpack(self, fmt):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self):
        return self.take(self.unpack("<Q")).decode("utf-8")

    def value(self, vtype):
        if vtype == T.STRING:
            return self.string()
        if vtype == T.ARRAY:
            raise ValueError("nested arrays are not supported")
        return self.unpack(SCALAR[vtype])


def read_metadata(path):
    """[(key, value, vtype, sub_type)] of a little-endian GGUF v2/v3 file, in file order."""
    with open(path, "rb") as f:
        r = Reader(f)
        if r.take(4) != b"GGUF":
            raise SystemExit(f"vocab-only: {path} is not a GGUF file")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise SystemExit(f"vocab-only: GGUF version {version} is not supported")
        r.unpack("<Q")  # tensor count: dropped
        n_kv = r.unpack("<Q")
        kvs = []
        for _ in range(n_kv):
            key = r.string()
            vtype = T(r.unpack("<I"))
            if vtype == T.ARRAY:
                sub = T(r.unpack("<I"))
                n = r.unpack("<Q")
                if sub in SCALAR:  # bulk read: token_type / scores arrays are 150k long
                    fmt = SCALAR[sub]
                    size = struct.calcsize(fmt)
                    val = list(struct.unpack(f"<{n}{fmt[1]}", r.take(n * size)))
                else:
                    val = [r.value(sub) for _ in range(n)]
                kvs.append((key, val, vtype, sub))
            else:
                kvs.append((key, r.value(vtype), vtype, None))
        return kvs


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    kvs = read_metadata(src)
    meta = {k: v for k, v, _, _ in kvs}
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise SystemExit("vocab-only: source has no general.architecture")
    w = gguf.GGUFWriter(out, arch)
    w.kv_data[0].clear()  # GGUFWriter pre-adds general.architecture: keep SRC's order instead
    if "general.alignment" in meta:
        w.data_alignment = meta["general.alignment"]
    for key, val, vtype, sub in kvs:
        w.add_key_value(key, val, vtype, sub_type=sub)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    w.close()
    print(f"vocab-only: {out}: {len(kvs)} keys, 0 tensors (architecture {arch})", file=sys.stderr)


if __name__ == "__main__":
    main()
