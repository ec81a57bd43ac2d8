#!/usr/bin/env bash
# The prompt tiles and the f16 KV cache A/B on lavapipe (no GPU): SmolLM2 Q4_1, three rounds.
# Relative figures of the kernels on a CPU rasterizer, not GPU speed.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
B=${B:-target/release/rustorch}
S=~/.cache/rustorch/models/SmolLM2-135M-Instruct.Q4_1.gguf
num() { python3 -c "import json,sys; print(' '.join('%.2f' % x['avg_ts'] for x in json.load(sys.stdin)))" 2>/dev/null; }
for r in 1 2 3; do
  for o in "wgpu.tile_min=0 wgpu.attn_tile_min=0 wgpu.kv_f16=0" "wgpu.attn_tile_min=0 wgpu.kv_f16=0" "wgpu.kv_f16=0" "default"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "pp128 round $r | $o | $($B bench -m $S --backend vulkan -p 128 -n 0 -r 1 "${a[@]}" --json 2>/dev/null | num)"
  done
  for o in "wgpu.kv_f16=0" "default"; do
    a=(); [ "$o" != default ] && for kv in $o; do a+=(--backend-opt "$kv"); done
    echo "tg32 round $r | $o | $($B bench -m $S --backend vulkan -p 0 -n 32 -r 1 "${a[@]}" --json 2>/dev/null | num)"
  done
done
