#!/usr/bin/env bash
# On the device machine: decode (tg128) of the synthetic TinyLlama and Llama-7B Q4_K_M files under
# several backend options and binaries, alternating, ROUNDS rounds; then the per-kernel profile
# (profile.sh). BINS lists binaries to alternate (e.g. a branch's and main's, staged side by side).
#   OPTS="default|cuda.wpr_max=1|..." BINS=".cudabin/rustorch .cudabin/rustorch-main" bash bench/cuda/options.sh
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/cuda/env.sh
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for s in tinyllama-1.1b llama-7b; do
  F=$M/$s-Q4_K_M.gguf
  [ -f $F ] || { t0=$(date +%s); $B synth --shape $s --type Q4_K_M -o $F > /dev/null || echo "synth failed"; echo "synth $s: $(( $(date +%s) - t0 )) s"; }
done
IFS='|' read -ra opts <<< "${OPTS:-default|cuda.wpr_max=1}"
for r in $(seq 1 ${ROUNDS:-2}); do
  for s in tinyllama-1.1b llama-7b; do
    for bin in ${BINS:-$B}; do
      for o in "${opts[@]}"; do
        a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
        t=$($bin bench -m $M/$s-Q4_K_M.gguf --backend cuda -p ${P:-0} -n 128 -r 3 "${a[@]}" --json 2>>$OUT/err.txt | python3 -c "import json,sys; print(' '.join('%.1f' % x['avg_ts'] for x in json.load(sys.stdin)))")
        echo "round $r | $s | $(basename $bin) | $o | $t" | tee -a $OUT/options.txt
      done
    done
  done
done
[ "${PROFILE:-1}" = 1 ] && bash bench/cuda/profile.sh
