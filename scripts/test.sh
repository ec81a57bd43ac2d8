#!/usr/bin/env bash
# The test command: fetches the test models (cached) and runs every test in release mode.
#
# The CPU tests always run. The wgpu backend's tests (every shader against the CPU reference, the
# whole model against the CPU backend, the shaders' translation to Metal, the engine on its paged
# KV cache) run too when a Vulkan driver is installed (Mesa's lavapipe runs them on the CPU:
# `apt-get install mesa-vulkan-drivers`); RUSTORCH_REQUIRE_WGPU=1 (set by CI) makes a missing
# driver an error instead of a skip. The CUDA tests need an NVIDIA GPU: scripts/device-cuda.sh runs
# them there.
#
# Then the server suite: `rustorch serve` on SmolLM2 driven by the official `openai` Python client
# and a headless Chromium (tests/server; needs `python3 -m pip install -r tests/server/requirements.txt`
# and Debian's `chromium` and `chromium-driver`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo test --release --workspace "$@"

if compgen -G "/usr/share/vulkan/icd.d/*.json" >/dev/null || compgen -G "/etc/vulkan/icd.d/*.json" >/dev/null; then
    # The Vulkan loader wants a runtime directory (CI and containers often have none).
    export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
    cargo test --release -p rustorch-model --features wgpu --test wgpu_kernels --test wgpu_model \
        --test wgpu_architectures "$@"
    cargo test --release -p rustorch-engine --features wgpu --test engine_gpu "$@"
elif [[ "${RUSTORCH_REQUIRE_WGPU:-0}" == 1 ]]; then
    echo "error: no Vulkan driver for the wgpu tests (install mesa-vulkan-drivers)" >&2
    exit 1
else
    echo "note: no Vulkan driver found, wgpu tests skipped (install mesa-vulkan-drivers to run them)" >&2
fi

# The server suite runs target/release/rustorch, which `cargo test --release --workspace` above
# builds for the CLI's own tests (a separate `cargo build -p rustorch` would resolve other features
# and relink it every time).
if ! python3 -c 'import openai, pytest, requests, selenium' 2>/dev/null; then
    echo "error: the server tests need: python3 -m pip install -r tests/server/requirements.txt" >&2
    exit 1
fi
python3 -m pytest -q -p no:cacheprovider tests/server
