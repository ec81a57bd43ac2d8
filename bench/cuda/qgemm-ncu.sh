#!/usr/bin/env bash
# On the device machine: Nsight Compute's detail sections (speed of light, warp stalls, memory,
# occupancy) for the first prompt-matmul launches of a TinyLlama-shape pp512.
#   bash bench/cuda/qgemm-ncu.sh   (binaries in .cudabin/)
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/cuda/env.sh
F=$M/${SHAPE:-tinyllama-1.1b}-Q4_K_M.gguf
[ -f $F ] || $B synth --shape ${SHAPE:-tinyllama-1.1b} --type Q4_K_M -o $F > /dev/null
$NCU --section SpeedOfLight --section WarpStateStats --section MemoryWorkloadAnalysis --section Occupancy \
  --section ComputeWorkloadAnalysis --section LaunchStats --section SchedulerStats \
  -k regex:${KERNEL:-qgemm} --launch-skip ${SKIP:-0} --launch-count ${COUNT:-3} \
  $B bench -m $F --backend cuda -p 512 -n 0 -r 1 ${EXTRA:-} > $OUT/ncu-detail.txt 2>&1
grep -vE "^\s*-+\s*$|^\s*$" $OUT/ncu-detail.txt | grep -E "qgemm|Duration|Throughput|Stall|Warp Cycles|Issued|Occupancy|Registers|Shared Memory|L1/TEX Hit|L2 Hit|Pipe|Eligible|No Eligible|Active Warps|Block Limit|cycles|Executed Ipc" | head -${LINES:-120}
