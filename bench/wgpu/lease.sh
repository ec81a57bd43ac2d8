#!/usr/bin/env bash
# The wgpu backend on the device machine's Vulkan driver, one call (carry .wgpubin and .gl):
#   CARGO_TARGET_DIR=target-wgpu cargo build --release --features wgpu
#   CARGO_TARGET_DIR=target-wgpu cargo test --release --features wgpu -p rustorch-model --test wgpu_kernels --no-run
#   scripts/device-vulkan.sh --stage
# then on the device, from the repository root:
#   OUT=$OUT bash bench/wgpu/lease.sh ab   # ~6 min: kernel tests, greedy ids, the prompt's tiles
#                                          # A/B (pp512) and decode (tg128), GPU time per kernel
# ROUNDS (2) rounds of the A/B, options alternating within a file; OPTS lists them ("|"-separated,
# `default` for none). The llama.cpp CUDA figures of the same files come from
# ../shared/tools/gpu-compare.sh (VULKAN=1) in a call of their own.
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
B=.wgpubin/rustorch; M=/tmp/rt-models
[ "$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')" -gt 20000000 ] 2>/dev/null && M=/dev/shm/rt-models
mkdir -p $M
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cat .wgpubin/COMMIT
num() { python3 -c "import json,sys; print(' '.join('%.1f' % x['avg_ts'] for x in json.load(sys.stdin)))" 2>/dev/null; }
case "${1:-}" in
ab)
  $B synth --shape tinyllama-1.1b --type Q4_K_M -o $M/tinyllama-1.1b-Q4_K_M.gguf > /dev/null
  ( $B synth --shape llama-7b --type Q4_K_M -o $M/l7.tmp > /dev/null && mv $M/l7.tmp $M/llama-7b-Q4_K_M.gguf ) &
  timeout 150 .wgpubin/wgpu-kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked" | tee $OUT/wgpu-tests.txt
  # Greedy ids after a 40-token prompt (tiled matmul and attention) against the untiled kernels
  # and the CPU (random weights: near-ties part the texts early, so this is a smoke check).
  P="The history of the printing press begins in the fifteenth century, when movable type met oil-based ink and a wooden press. Within fifty years printing had spread to two hundred cities."
  for o in "wgpu.tile_min=0 wgpu.attn_tile_min=0 wgpu.kv_f16=0" default "wgpu.f16=1"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "greedy TinyLlama vulkan | $o | $(timeout 60 $B run -m $M/tinyllama-1.1b-Q4_K_M.gguf --backend vulkan -p "$P" -n 32 --temp 0 "${a[@]}" 2>>$OUT/err.txt | md5sum | cut -c1-12)"
  done
  echo "greedy TinyLlama cpu | $(timeout 60 $B run -m $M/tinyllama-1.1b-Q4_K_M.gguf --backend cpu -p "$P" -n 32 --temp 0 2>/dev/null | md5sum | cut -c1-12)"
  wait
  # main's kernels before issue 18 | matmul tiled | + attention tiled | + f16 cache (the
  # defaults) | + f16 matmul tiles
  IFS='|' read -ra opts <<< "${OPTS:-wgpu.tile_min=0 wgpu.attn_tile_min=0 wgpu.kv_f16=0|wgpu.attn_tile_min=0 wgpu.kv_f16=0|wgpu.kv_f16=0|default|wgpu.f16=1}"
  for r in $(seq 1 ${ROUNDS:-2}); do for s in tinyllama-1.1b llama-7b; do for o in "${opts[@]}"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "pp512 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 512 -n 0 -r 2 "${a[@]}" --json 2>>$OUT/err.txt | num)" | tee -a $OUT/ab.txt
  done; done; done
  for s in tinyllama-1.1b llama-7b; do
    for o in wgpu.kv_f16=0 default; do
      a=(); [ $o != default ] && a=(--backend-opt $o)
      echo "tg128 | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 0 -n 128 -r 2 "${a[@]}" --json 2>>$OUT/err.txt | num)" | tee -a $OUT/ab.txt
    done
    for t in "-p 512 -n 0" "-p 0 -n 32"; do
      RUSTORCH_WGPU_PROFILE=1 timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan $t -r 1 > /dev/null 2> $OUT/profile.tmp
      echo "== GPU time, $s, $t"; grep -E "^wgpu (profile|GPU time|kernel [^\[]*$)" $OUT/profile.tmp | head -16 | tee -a $OUT/profile.txt
    done
  done
  grep -v XDG $OUT/err.txt | sort | uniq -c | sort -rn | head -5;;
*) echo "usage: lease.sh ab"; exit 2;;
esac
