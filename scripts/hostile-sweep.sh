#!/usr/bin/env bash
# The full hostile-input sweep (issue 11): every mutant of the test models (truncations at every
# structural boundary, boundary values in every header, metadata and tensor-info field, 2,000 seeded
# byte flips of SmolLM2 and 500 of Gemma, hostile hyper-parameters, strings and chat templates) run
# through inspect, tokenize, run, quantize and chat, plus the output-path, signal, concurrency and
# stdout cases. CI runs a fixed sample of the same suite (`cargo test --release --test hostile`).
#
#   scripts/hostile-sweep.sh                      a fresh seed, printed first
#   RUSTORCH_HOSTILE_SEED=S scripts/hostile-sweep.sh   replay a seed
#   scripts/hostile-sweep.sh smollm2_byte_flips   one family (any test name of crates/cli/tests/hostile.rs)
#
# RUSTORCH_HOSTILE_CASE=TEXT keeps only the mutants whose id contains TEXT; RUSTORCH_HOSTILE_VERBOSE=1
# prints every command's outcome; RUSTORCH_HOSTILE_TIMEOUT=SECONDS is the hang limit (30). Needs GNU
# time (/usr/bin/time) for peak RSS and root for the device-node case (mknod in a temporary directory).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
export RUSTORCH_HOSTILE_FULL=1
cargo test --release -p rustorch --test hostile -- --nocapture "$@"
