#!/usr/bin/env bash
# Decode speed of each architecture at a real shape (synthetic Q4_K_M files), rustorch CUDA beside
# llama.cpp CUDA in the same call, engines alternating round by round.
#
# Here: ../shared/tools/gpu-compare.sh --stage .cudabin/rustorch   (llama.cpp source into .ref/)
# On the device (carry [".ref", ".cudabin"]), two calls back to back:
#   scripts/device-arch-bench.sh build   # llama.cpp CUDA build (gpu-compare.sh) + the synthetic files
#   scripts/device-arch-bench.sh bench   # ROUNDS rounds (default 3) of tg128, each engine -r 1
# SHAPES limits the shapes; the table (median and spread of the rounds) goes to stdout and $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
W=$HOME/gpucmp
L=$W/lc/build/bin
B=$PWD/.cudabin/rustorch
M=$W/arch
OUT=${OUT:-/tmp/arch-out}
SHAPES=${SHAPES:-qwen2.5-7b qwen3-8b gemma3-1b phi3-mini mistral-7b qwen2.5-0.5b qwen3-0.6b}
ROUNDS=${ROUNDS:-3}
mkdir -p "$M" "$OUT"
libdirs=$(find /usr/local /usr/lib /opt -maxdepth 6 \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) \
    -printf '%h\n' 2>/dev/null | grep -v stubs | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"

case "${1:-}" in
build)
    # The synthetic files while llama.cpp builds (gpu-compare.sh makes one small file of its own).
    for s in $SHAPES; do
        [[ -f $M/$s.gguf ]] || "$B" synth --shape "$s" --type Q4_K_M -o "$M/$s.gguf" >/dev/null ||
            echo "synth failed: $s"
    done &
    FILES=tl-Q4_K_M bash .ref/gpu-compare.sh build
    wait
    ls -la "$M"
    ;;
bench)
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/card.txt"
    for s in $SHAPES; do
        for r in $(seq "$ROUNDS"); do
            "$L/llama-bench" -m "$M/$s.gguf" -p 0 -n 128 -ngl 99 -fa 1 -r 1 -o json \
                2>/dev/null >"$OUT/llamacpp-$s-$r.json"
            "$B" bench -m "$M/$s.gguf" --backend cuda -p 0 -n 128 -r 1 --json \
                2>"$OUT/rustorch-$s-$r.err" >"$OUT/rustorch-$s-$r.json"
        done
    done
    python3 - "$OUT" "$ROUNDS" $SHAPES <<'PY'
import json, statistics, sys
out, rounds, shapes = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| shape (Q4_K_M) | llama.cpp tg128 t/s | rustorch tg128 t/s | ratio |")
print("|---|---:|---:|---:|")
for s in shapes:
    med = {}
    for e in ["llamacpp", "rustorch"]:
        v = []
        for r in range(1, rounds + 1):
            try:
                v += [x["avg_ts"] for x in json.load(open(f"{out}/{e}-{s}-{r}.json"))]
            except Exception:
                pass
        med[e] = (statistics.median(v), min(v), max(v)) if v else None
    cell = lambda m: f"{m[0]:.1f} ({m[1]:.1f}-{m[2]:.1f})" if m else "failed"
    ratio = f"{med['rustorch'][0] / med['llamacpp'][0]:.2f}x" if all(med.values()) else ""
    print(f"| {s} | {cell(med['llamacpp'])} | {cell(med['rustorch'])} | {ratio} |")
PY
    ;;
*)
    echo "usage: scripts/device-arch-bench.sh build | bench" >&2
    exit 2
    ;;
esac
