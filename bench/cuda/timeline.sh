#!/usr/bin/env bash
# On the device machine: where a decode token's time goes in a real run (graph and PDL on), from an
# Nsight Systems trace of the graph's nodes: per token, the wall time from one token's first kernel
# to the next token's, the time some kernel runs (the union of kernel intervals), the gaps, and per
# kernel the summed durations, set against the weight bytes at 3.0 TB/s. P=512: the same for
# prompt passes of P tokens instead of decode tokens.
#   SHAPE=llama-7b TY=Q4_K_M [P=512] bash bench/cuda/timeline.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/cuda/env.sh
NSYS=$(command -v nsys || ls /opt/nvidia/nsight-systems/*/bin/nsys /usr/local/cuda/bin/nsys 2>/dev/null | head -1)
[ -n "$NSYS" ] || { echo "no nsys here"; exit 0; }
SHAPE=${SHAPE:-llama-7b}; TY=${TY:-Q4_K_M}; F=$M/$SHAPE-$TY.gguf
[ -f $F ] || $B synth --shape $SHAPE --type $TY -o $F > /dev/null || { echo "synth failed"; exit 1; }
[ -n "${P:-}" ] && SHAPE=$SHAPE-pp$P
rm -f $OUT/tl-$SHAPE.nsys-rep $OUT/tl-$SHAPE.sqlite
$NSYS profile -q --trace=cuda --cuda-graph-trace=node -o $OUT/tl-$SHAPE $B bench -m $F --backend cuda $([ -n "${P:-}" ] && echo "-p $P -n 0 -r 4" || echo "-p 0 -n 32 -r 1") > /dev/null 2> $OUT/tl-$SHAPE.err
$NSYS stats -q --report cuda_gpu_trace --format csv -o $OUT/tl-$SHAPE $OUT/tl-$SHAPE.nsys-rep > /dev/null 2>> $OUT/tl-$SHAPE.err
rm -f $OUT/tl-$SHAPE.nsys-rep $OUT/tl-$SHAPE.sqlite
python3 - $OUT/tl-${SHAPE}_cuda_gpu_trace.csv "$(stat -c %s $F)" <<'PY'
import csv, sys, collections
rows = list(csv.reader(open(sys.argv[1])))
h = rows[0]; rows = rows[1:]
si = next(i for i, c in enumerate(h) if c.startswith("Start")); di = next(i for i, c in enumerate(h) if c.startswith("Duration"))
ni = h.index("Name")
ev = sorted((int(r[si]), int(r[di]), r[ni]) for r in rows if r[di] and not r[ni].startswith("[CUDA"))
starts = [k for k, e in enumerate(ev) if e[2].startswith("embed")]
toks = [ev[a:b] for a, b in zip(starts, starts[1:])][-16:]  # the last 16 whole tokens
walls, busys = [], []
tot = collections.defaultdict(lambda: [0, 0.0])
for tk, nxt in zip(toks, toks[1:] + [None]):
    t0 = tk[0][0]; t1 = nxt[0][0] if nxt else max(s + d for s, d, _ in tk)
    walls.append(t1 - t0)
    busy = 0; end = t0
    for s, d, n in tk:
        s2 = max(s, end); e = s + d
        if e > s2: busy += e - s2; end = e
        tot[n][0] += 1; tot[n][1] += d
    busys.append(busy)
k = len(toks); W = sorted(walls)[k // 2]; Bz = sorted(busys)[k // 2]
print(f"{k} tokens: wall {W/1e3:.1f} us a token (median), some kernel running {Bz/1e3:.1f} us, idle {(W-Bz)/1e3:.1f} us; "
      f"{len(toks[0])} launches a token; file {int(sys.argv[2])/1e9:.2f} GB -> {int(sys.argv[2])/3.0e12*1e6:.0f} us at 3.0 TB/s")
print("| kernel | launches a token | us a token (summed durations) |")
for n, (c, d) in sorted(tot.items(), key=lambda x: -x[1][1])[:14]:
    print(f"| {n[:60]} | {c/k:.0f} | {d/k/1e3:.1f} |")
PY
