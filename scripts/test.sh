#!/usr/bin/env bash
# The test command: fetches the test models (cached) and runs every test in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/fetch-models.sh >/dev/null
cargo test --release --workspace "$@"
