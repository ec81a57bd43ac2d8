#!/usr/bin/env bash
# On the device machine: build and run a microbenchmark of bench/cuda/ (default matvec_bench).
#   bash bench/cuda/run.sh [NAME]    -> $OUT/NAME.txt (the table), $OUT/NAME-ptxas.txt (registers)
set -uo pipefail
cd "$(dirname "$0")/../.."
name=${1:-matvec_bench}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PATH=/usr/local/cuda/bin:$PATH
nvcc -O3 -arch=sm_90 -Xptxas -v -o /tmp/$name bench/cuda/$name.cu 2>"$OUT/$name-ptxas.txt" || { tail -30 "$OUT/$name-ptxas.txt"; exit 1; }
grep -A1 "mv_\|matvec\b" "$OUT/$name-ptxas.txt" | grep -E "registers|spill" | head -40
/tmp/$name | tee "$OUT/$name.txt"
