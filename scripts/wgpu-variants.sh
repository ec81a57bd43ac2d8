#!/usr/bin/env bash
# Times wgpu (Vulkan) variants side by side on the GPU machine, in one call: each argument is
# "label:binary:SETTING,SETTING:type:bench args" (binary relative to .wgpubin/; a setting is a
# backend option KEY=V such as wgpu.mv=gu=128x1;long=256x4 or wgpu.submit_every=16, passed as
# --backend-opt, or a documented switch RUSTORCH_...=V set in the environment; type a synthetic
# file type; empty fields take the defaults rustorch, none, Q4_K_M, "-p 0 -n 128 -r 3"). Prints
# one line per variant (t/s of each bench line) and keeps the JSON and logs under OUT.
#   scripts/wgpu-variants.sh OUT "base:rustorch-base::Q4_K_M:" "new:::Q4_K_M:" ...
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=$1
shift
mkdir -p "$OUT"
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
[[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]] &&
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
MODELS=${MODELS:-/tmp/rustorch-models}
mkdir -p "$MODELS"
for v in "$@"; do
    IFS=: read -r label bin envs ty args <<<"$v"
    bin=.wgpubin/${bin:-rustorch}
    ty=${ty:-Q4_K_M}
    args=${args:--p 0 -n 128 -r 3}
    f="$MODELS/tinyllama-1.1b-$ty.gguf"
    [[ -f $f ]] || .wgpubin/rustorch synth --shape tinyllama-1.1b --type "$ty" -o "$f" >/dev/null || exit 1
    env_args=() opt_args=() settings=()
    [[ -n $envs ]] && IFS=, read -r -a settings <<<"$envs"
    for s in "${settings[@]}"; do
        if [[ $s == RUSTORCH_* ]]; then env_args+=("$s"); else opt_args+=(--backend-opt "$s"); fi
    done
    env "${env_args[@]}" "$bin" bench -m "$f" --backend vulkan "${opt_args[@]}" $args --json \
        >"$OUT/$label.json" 2>"$OUT/$label.err"
    rc=$?
    ts=$(python3 -c "import json,sys; print(' '.join(f\"{'pp' if r['n_prompt'] else 'tg'}{r['n_prompt'] or r['n_gen']}={r['avg_ts']:.1f}±{r['stddev_ts']:.1f}\" for r in json.load(open(sys.argv[1]))))" "$OUT/$label.json" 2>/dev/null)
    echo "$label ($ty, ${envs:-default}): rc $rc $ts"
    grep -E "^wgpu (profile|GPU time|kernel)|rror|panic" "$OUT/$label.err" | head -${PROFILE_LINES:-30}
done
