#!/usr/bin/env bash
# The full hostile-input sweep (issue 11): every mutant of the test models (truncations at every
# structural boundary and one byte either side, boundary values in every header, metadata and
# tensor-info field, each kv pair and tensor removed, 2,000 seeded byte flips of SmolLM2 and 500 of
# Gemma, hostile hyper-parameters, strings and chat templates) run through inspect, tokenize, run,
# quantize and chat, plus the output-path, signal, concurrency and stdout cases. About 46,000
# mutants at some 0.6 s each: eight hours on two cores. CI runs a fixed sample of the same suite
# (`cargo test --release --test hostile`, about four minutes on two busy cores).
#
#   scripts/hostile-sweep.sh                         everything, a fresh seed printed first
#   scripts/hostile-sweep.sh smollm2_byte_flips      one family (a test name of crates/cli/tests/hostile.rs)
#   RUSTORCH_HOSTILE_SEED=S scripts/hostile-sweep.sh replay a seed
#   RUSTORCH_HOSTILE_SAMPLE=500 scripts/hostile-sweep.sh   500 mutants a family, a fresh seed
#
# RUSTORCH_HOSTILE_CASE=TEXT keeps only the mutants whose id contains TEXT; RUSTORCH_HOSTILE_VERBOSE=1
# prints every command's outcome; RUSTORCH_HOSTILE_TIMEOUT=SECONDS is the hang limit (30). Needs GNU
# time (/usr/bin/time) for peak RSS and root for the device-node case (mknod in a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
if [[ -z "${RUSTORCH_HOSTILE_SAMPLE:-}" ]]; then
    export RUSTORCH_HOSTILE_FULL=1
fi
cargo test --release -p rustorch --test hostile -- --nocapture "$@"
