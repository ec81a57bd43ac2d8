"""Compare harness (llama.cpp) and llama_diff_dump (rustorch) outputs line by line.

Detokenized text may differ only where llama.cpp returns invalid UTF-8 bytes, which our
`decode` returns as lossy UTF-8 (U+FFFD). Exits non-zero on any other difference.
usage: compare.py LLAMA.txt RUSTORCH.txt
"""
import sys

a = open(sys.argv[1], encoding="ascii").read().split("\n")
b = open(sys.argv[2], encoding="ascii").read().split("\n")
bad = lossy = 0
if len(a) != len(b):
    print(f"line counts differ: {len(a)} vs {len(b)}")
    bad += 1
for x, y in zip(a, b):
    if x == y:
        continue
    if x.startswith("D") and y.startswith("D") and x.split(" ")[:2] == y.split(" ")[:2]:
        raw = bytes.fromhex(x.split(" ")[2])
        if raw.decode("utf-8", errors="replace").encode() == bytes.fromhex(y.split(" ")[2]):
            lossy += 1
            continue
    bad += 1
    if bad <= 10:
        print(f"- {x[:200]}\n+ {y[:200]}")
print(f"{len(a)} lines: {bad} differ, {lossy} differ only as lossy UTF-8")
sys.exit(1 if bad else 0)
