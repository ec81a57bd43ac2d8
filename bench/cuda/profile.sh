#!/usr/bin/env bash
# On the device machine: a per-kernel profile of one decode token of the Llama-7B shape (Q4_K_M),
# with Nsight Compute (kernel time and DRAM bytes of each launch; no clock or cache control, so the
# L2 prefetch between kernels counts as it does in a run), beside the end-to-end decode rate.
#   bash bench/cuda/profile.sh   (rustorch from .cudabin/, see scripts/device-cuda.sh --stage)
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/cuda/env.sh
SHAPE=${SHAPE:-llama-7b}; TY=${TY:-Q4_K_M}; F=$M/$SHAPE-$TY.gguf
[ -f $F ] || $B synth --shape $SHAPE --type $TY -o $F > /dev/null || { echo "synth failed"; exit 1; }
$B bench -m $F --backend cuda -p 0 -n 128 -r 3 2>&1 | grep -E "tg|error" | tee $OUT/e2e.txt
# -p 0 -n 6 -r 1: warm-up and one run, 12 tokens of 165-265 launches; skip the first ~3-5 tokens
$NCU --clock-control none --cache-control none --metrics gpu__time_duration.sum,dram__bytes_read.sum \
  --csv --print-units base --launch-skip ${SKIP:-800} --launch-count ${COUNT:-700} \
  $B bench -m $F --backend cuda -p 0 -n 6 -r 1 --backend-opt cuda.graph=0 > $OUT/ncu.csv 2> $OUT/ncu.err
tail -3 $OUT/ncu.err
python3 - "$OUT/ncu.csv" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
hdr = rows[0]; rows = rows[1:]
ki, mi, vi, ii = hdr.index("Kernel Name"), hdr.index("Metric Name"), hdr.index("Metric Value"), hdr.index("ID")
per = collections.defaultdict(dict); names = {}
for r in rows:
    per[r[ii]][r[mi]] = float(r[vi].replace(",", "")); names[r[ii]] = r[ki]
ids = sorted(per, key=int)
seq = [names[i] for i in ids]
# one token: from one 'embed' launch to the next
starts = [k for k, n in enumerate(seq) if n.startswith("embed")]
if len(starts) >= 2:
    ids = ids[starts[0]:starts[1]]
tot = collections.defaultdict(lambda: [0, 0.0, 0.0])
for i in ids:
    t = tot[names[i]]; t[0] += 1; t[1] += per[i].get("gpu__time_duration.sum", 0); t[2] += per[i].get("dram__bytes_read.sum", 0)
T = sum(t[1] for t in tot.values()); Bt = sum(t[2] for t in tot.values())
print(f"one token: {len(ids)} launches, kernel time {T/1e3:.1f} us, DRAM read {Bt/1e6:.1f} MB ({Bt/T:.0f} GB/s over kernel time)")
print("| kernel | launches | us | MB read | GB/s |")
for n, t in sorted(tot.items(), key=lambda x: -x[1][1]):
    print(f"| {n[:60]} | {t[0]} | {t[1]/1e3:.1f} | {t[2]/1e6:.1f} | {t[2]/max(t[1],1):.0f} |")
# time units: gpu__time_duration in ns (Metric Unit column), dram bytes in bytes
PY
