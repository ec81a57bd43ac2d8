#!/usr/bin/env bash
# The wgpu backend on the device machine's Vulkan driver beside llama.cpp CUDA, three calls on one
# warm machine (carry .wgpubin, .ref and .gl). Here:
#   CARGO_TARGET_DIR=target-wgpu cargo build --release --features cuda,wgpu
#   CARGO_TARGET_DIR=target-wgpu cargo test --release --features wgpu -p rustorch-model --test wgpu_kernels --no-run
#   scripts/device-vulkan.sh --stage && ../shared/tools/gpu-compare.sh --stage .wgpubin/rustorch
# then on the device, from the repository root:
#   OUT=$OUT bash bench/wgpu/lease.sh prep   # ~5 min: llama.cpp CUDA build and the files (gpu-compare
#                                            # build) beside the kernel tests and greedy ids
#   OUT=$OUT bash bench/wgpu/lease.sh ab     # ~6 min: the prompt's tiles A/B (pp512), decode
#                                            # (tg128), GPU time per kernel
#   OUT=$OUT bash bench/wgpu/lease.sh table  # ~4 min: 3 rounds of llama.cpp CUDA, rustorch Vulkan
#                                            # and CUDA alternating (gpu-compare bench)
#   OUT=$OUT bash bench/wgpu/lease.sh next   # ~7 min: cooperative-matrix tiles, q8 decode and the
#                                            # tiles' prefetch, each against the defaults
# ROUNDS (2) rounds of the A/B, options alternating within a file; OPTS lists them ("|"-separated,
# `default` for none).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/out}; mkdir -p $OUT
B=.ref/rustorch; M=$HOME/gpucmp/m   # gpu-compare.sh's files: tl-Q4_K_M, l7-Q4_K_M
mkdir -p $M
export FILES="tl-Q4_K_M l7-Q4_K_M"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ] && export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
cat .wgpubin/COMMIT
num() { python3 -c "import json,sys; print(' '.join('%.1f' % x['avg_ts'] for x in json.load(sys.stdin)))" 2>/dev/null; }
synth() { # shape type file
  [ -f $M/$3.gguf ] || { $B synth --shape $1 --type $2 -o $M/$3.tmp > /dev/null && mv $M/$3.tmp $M/$3.gguf; }
}
tests() {
  RUSTORCH_REQUIRE_WGPU=1 timeout 240 .wgpubin/wgpu-kernels --test-threads=1 2>&1 | grep -E "^test |test result|panicked|left|right" | tee $OUT/wgpu-tests.txt
}
greedy() {
  # Greedy ids after a 40-token prompt (tiled matmul and attention) against the untiled kernels
  # and the CPU (random weights: near-ties part the texts early, so this is a smoke check).
  P="The history of the printing press begins in the fifteenth century, when movable type met oil-based ink and a wooden press. Within fifty years printing had spread to two hundred cities."
  for o in "wgpu.tile_min=0 wgpu.attn_tile_min=0 wgpu.kv_f16=0" default "wgpu.f16=1"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "greedy TinyLlama vulkan | $o | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend vulkan -p "$P" -n 32 --temp 0 "${a[@]}" 2>>$OUT/err.txt | md5sum | cut -c1-12)"
  done
  for be in cpu cuda; do
    echo "greedy TinyLlama $be | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend $be -p "$P" -n 32 --temp 0 2>/dev/null | md5sum | cut -c1-12)"
  done
  timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend vulkan -p "$P" -n 8 --temp 0 2>&1 | grep -iE "adapter|error" | head -3
}
ab() {
  # main's kernels before issue 18 | matmul tiled | + attention tiled | + f16 cache (the
  # defaults) | + f16 matmul tiles
  IFS='|' read -ra opts <<< "${OPTS:-wgpu.tile_min=0 wgpu.attn_tile_min=0 wgpu.kv_f16=0|wgpu.attn_tile_min=0 wgpu.kv_f16=0|wgpu.kv_f16=0|default|wgpu.f16=1}"
  for r in $(seq 1 ${ROUNDS:-2}); do for s in tl l7; do for o in "${opts[@]}"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "pp512 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 512 -n 0 -r 2 "${a[@]}" --json 2>>$OUT/err.txt | num)" | tee -a $OUT/ab.txt
  done; done; done
  for s in tl l7; do
    for o in wgpu.kv_f16=0 default; do
      a=(); [ $o != default ] && a=(--backend-opt $o)
      echo "tg128 | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 0 -n 128 -r 2 "${a[@]}" --json 2>>$OUT/err.txt | num)" | tee -a $OUT/ab.txt
    done
    for t in "-p 512 -n 0" "-p 0 -n 32"; do
      RUSTORCH_WGPU_PROFILE=1 timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan $t -r 1 > /dev/null 2> $OUT/profile.tmp
      echo "== GPU time, $s, $t"; grep -E "^wgpu (profile|GPU time|kernel)" $OUT/profile.tmp | head -40 | tee -a $OUT/profile.txt
    done
  done
  grep -v XDG $OUT/err.txt | sort | uniq -c | sort -rn | head -5
}
case "${1:-}" in
prep) # the files, the llama.cpp build beside the kernel tests, greedy ids
  synth tinyllama-1.1b Q4_K_M tl-Q4_K_M; synth llama-7b Q4_K_M l7-Q4_K_M &
  FILES=tl-Q4_K_M bash .ref/gpu-compare.sh build > $OUT/build.txt 2>&1 &
  tests; greedy; wait; cat $OUT/build.txt;;
one) # prep and ab in one call: the llama.cpp build runs niced beside the A/B (which compares
     # options with one another only; the table comes in a call of its own)
  synth tinyllama-1.1b Q4_K_M tl-Q4_K_M; synth llama-7b Q4_K_M l7-Q4_K_M &
  tests; greedy; wait
  FILES=tl-Q4_K_M nice -n 19 bash .ref/gpu-compare.sh build > $OUT/build.txt 2>&1 &
  ab; wait; cat $OUT/build.txt;;
ab) ab;;
q8) # the decode mat-vec over 8-bit activations (wgpu.q8) against the f32 one: kernel tests, greedy
    # ids, tg128 in three rounds alternating, GPU time per kernel; the tiles' prefetch
    # (wgpu.tile_prefetch) A/B at pp512 (files from a warm machine's prep or made here)
  synth tinyllama-1.1b Q4_K_M tl-Q4_K_M; synth llama-7b Q4_K_M l7-Q4_K_M &
  tests; wait
  P="The history of the printing press begins in the fifteenth century, when movable type met oil-based ink and a wooden press."
  for o in wgpu.q8=0 wgpu.q8=1; do
    echo "greedy TinyLlama vulkan | $o | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend vulkan -p "$P" -n 32 --temp 0 --backend-opt $o 2>>$OUT/err.txt | md5sum | cut -c1-12)"
  done
  echo "greedy TinyLlama cpu | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend cpu -p "$P" -n 32 --temp 0 2>/dev/null | md5sum | cut -c1-12)"
  for r in 1 2 3; do for s in tl l7; do for o in wgpu.q8=0 wgpu.q8=1; do
    echo "tg128 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 0 -n 128 -r 2 --backend-opt $o --json 2>>$OUT/err.txt | num)" | tee -a $OUT/q8.txt
  done; done; done
  # The tiled matmul with the next step's loads before the sums (wgpu.tile_prefetch).
  for r in 1 2; do for s in tl l7; do for o in wgpu.tile_prefetch=0 wgpu.tile_prefetch=1; do
    echo "pp512 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 512 -n 0 -r 2 --backend-opt $o --json 2>>$OUT/err.txt | num)" | tee -a $OUT/q8.txt
  done; done; done
  for s in tl l7; do
    RUSTORCH_WGPU_PROFILE=1 timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 0 -n 32 -r 1 --backend-opt wgpu.q8=1 > /dev/null 2> $OUT/profile.tmp
    echo "== GPU time, $s, q8"; grep -E "^wgpu (profile|GPU time|kernel [^[]*$)" $OUT/profile.tmp | head -16 | tee -a $OUT/profile-q8.txt
  done;;
next) # everything built since the H100 measurement, in one call (~7 min): kernel tests (the
      # tiles by cooperative matrices on the hardware's), greedy ids and the adapter line per
      # option; pp512 of default | wgpu.tile_prefetch=1 | wgpu.coop=1 | both (two rounds); tg128 of
      # wgpu.q8=0 | 1 (three rounds); GPU time per kernel for a 512-token prompt with coop and
      # for decode with q8
  synth tinyllama-1.1b Q4_K_M tl-Q4_K_M; synth llama-7b Q4_K_M l7-Q4_K_M &
  tests; wait
  P="The history of the printing press begins in the fifteenth century, when movable type met oil-based ink and a wooden press."
  for o in wgpu.coop=0 wgpu.coop=1 wgpu.q8=1 wgpu.tile_prefetch=1 wgpu.coop=emu; do
    echo "greedy TinyLlama vulkan | $o | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend vulkan -p "$P" -n 32 --temp 0 --backend-opt $o 2>>$OUT/err.txt | md5sum | cut -c1-12)"
  done
  echo "greedy TinyLlama cpu | $(timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend cpu -p "$P" -n 32 --temp 0 2>/dev/null | md5sum | cut -c1-12)"
  timeout 60 $B run -m $M/tl-Q4_K_M.gguf --backend vulkan -p "$P" -n 4 --temp 0 --backend-opt wgpu.coop=1 2>&1 >/dev/null | grep -E "^wgpu|rror" | head -3 | tee $OUT/adapter.txt
  for r in 1 2; do for s in tl l7; do for o in wgpu.coop=0 wgpu.tile_prefetch=1 wgpu.coop=1 "wgpu.coop=1 wgpu.tile_prefetch=1"; do
    a=(); for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "pp512 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 512 -n 0 -r 2 "${a[@]}" --json 2>>$OUT/err.txt | num)" | tee -a $OUT/next.txt
  done; done; done
  for r in 1 2 3; do for s in tl l7; do for o in wgpu.q8=0 wgpu.q8=1; do
    echo "tg128 round $r | $s | $o | $(timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan -p 0 -n 128 -r 2 --backend-opt $o --json 2>>$OUT/err.txt | num)" | tee -a $OUT/next.txt
  done; done; done
  for s in tl l7; do
    for t in "-p 512 -n 0 --backend-opt wgpu.coop=1" "-p 0 -n 32 --backend-opt wgpu.q8=1"; do
      RUSTORCH_WGPU_PROFILE=1 timeout 150 $B bench -m $M/$s-Q4_K_M.gguf --backend vulkan $t -r 1 > /dev/null 2> $OUT/profile.tmp
      echo "== GPU time, $s, $t"; grep -E "^wgpu (profile|GPU time|kernel [^[]*$)" $OUT/profile.tmp | head -16 | tee -a $OUT/profile-next.txt
    done
  done
  grep -v XDG $OUT/err.txt | sort | uniq -c | sort -rn | head -5;;
table)
  for r in 1 2 3; do echo "== round $r"; OUT=/tmp/table-r$r BATCHED=0 bash .ref/gpu-compare.sh bench; done 2>&1 | tee $OUT/table.txt
  tar czf $OUT/table-json.tgz -C /tmp table-r1 table-r2 table-r3;;
*) echo "usage: lease.sh prep|one|ab|table|q8|next"; exit 2;;
esac
