#!/usr/bin/env bash
# The aarch64 NEON kernels on an x86-64 host, emulated by qemu-user: rustorch-quant's tests
# (every kernel against the scalar reference, packed layouts included) on a CPU with the
# dot-product extension (`-cpu max`: the `sdot` kernels) and on one without (`-cpu cortex-a72`:
# plain NEON). CI runs it (.ci/run). Each build and run takes /tmp/rustorch-build.lock, so that it
# waits for other builds and benchmarks on a shared machine instead of slowing them down.
#
# Needs (Debian): apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross
#                 rustup target add aarch64-unknown-linux-gnu
# Builds into $CARGO_TARGET_DIR (default: target/aarch64-qemu). Extra arguments go to the test
# binaries (e.g. a test name filter).
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in qemu-aarch64 aarch64-linux-gnu-gcc; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool is missing (apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)" >&2
        exit 1
    }
done

TARGET=aarch64-unknown-linux-gnu
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target/aarch64-qemu}
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
# The tests check that the best ISA is the one they test.
unset RUSTORCH_ISA
LOCK=/tmp/rustorch-build.lock
CARGO=(cargo test --release -p rustorch-quant --target "$TARGET" --no-fail-fast)

# Tests that cannot pass here, each with the reason.
SKIP=(
    # ggml's outputs in these fixtures were made on x86-64, whose default NaN is 0xffc00000;
    # aarch64's is 0x7fc00000, so the NaNs the scalar code makes differ in the sign bit.
    kquants_match_llama_cpp_bit_for_bit
    block_formats_match_ggml_bytes_and_values
    dots_match_ggml_generic_kernels
    # Portable scalar code on a real model file, which scripts/test.sh runs on the host.
    requantized_smollm2_tensors_match_llama_quantize
)
SKIP_ARGS=()
for t in "${SKIP[@]}"; do
    echo "test-neon: skipping $t (see scripts/test-neon.sh for why)" >&2
    SKIP_ARGS+=(--skip "$t")
done

flock "$LOCK" "${CARGO[@]}" --no-run

# RUSTORCH_NEON_DOTPROD: the unit test `dots_sum_byte_quads_into_lanes` checks that the emulated
# CPU has (1) or lacks (0) dotprod, so that each run is known to test its kernel table.
for cpu in max:1 cortex-a72:0; do
    echo "test-neon: qemu-aarch64 -cpu ${cpu%:*}" >&2
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu ${cpu%:*}" \
        RUSTORCH_NEON_DOTPROD=${cpu#*:} \
        flock "$LOCK" "${CARGO[@]}" -- "${SKIP_ARGS[@]}" "$@"
done
