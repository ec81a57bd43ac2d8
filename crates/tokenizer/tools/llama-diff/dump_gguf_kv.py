"""Dump the tokenizer.* and general.* metadata of a GGUF file for harness.cpp.

usage: dump_gguf_kv.py MODEL.gguf OUT.kv   (needs the `gguf` Python package)
"""
import sys, struct, gguf
r = gguf.GGUFReader(sys.argv[1])
out = open(sys.argv[2], 'wb')
T = gguf.GGUFValueType
def w32(x): out.write(struct.pack('<I', x))
def wstr(b):
    if isinstance(b, str): b = b.encode('utf-8')
    w32(len(b)); out.write(b)
n = 0
items = []
for k, f in r.fields.items():
    if not (k.startswith('tokenizer.') or k.startswith('general.')): continue
    items.append((k, f))
w32(len(items))
for k, f in items:
    wstr(k)
    t = f.types[0]
    w32(int(t))
    if t == T.ARRAY:
        at = f.types[1]
        w32(int(at))
        vals = f.contents()
        out.write(struct.pack('<Q', len(vals)))
        for v in vals:
            if at == T.STRING: wstr(v)
            elif at == T.INT32: out.write(struct.pack('<i', v))
            elif at == T.UINT32: out.write(struct.pack('<I', v))
            elif at == T.FLOAT32: out.write(struct.pack('<f', v))
            elif at == T.BOOL: out.write(struct.pack('<B', v))
            else: raise Exception(f'{k} array type {at}')
    else:
        v = f.contents()
        if t == T.STRING: wstr(v)
        elif t == T.INT32: out.write(struct.pack('<i', v))
        elif t == T.UINT32: out.write(struct.pack('<I', v))
        elif t == T.FLOAT32: out.write(struct.pack('<f', v))
        elif t == T.BOOL: out.write(struct.pack('<B', v))
        elif t == T.UINT64: out.write(struct.pack('<Q', v))
        else: raise Exception(f'{k} type {t}')
