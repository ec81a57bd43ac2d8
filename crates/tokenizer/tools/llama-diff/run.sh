#!/usr/bin/env bash
# Differential test of rustorch-tokenizer against llama.cpp's own tokenizer code.
#
#   LLAMA_CPP_DIR=/path/to/llama.cpp tools/llama-diff/run.sh MODEL.gguf [MODEL.gguf ...]
#
# Builds harness.cpp against llama.cpp's src/llama-vocab.cpp and src/unicode*.cpp (g++ only, no
# cmake, no ggml), then for each model compares special ids, EOG set, every token's piece and
# encode/decode of a few thousand random texts. Needs python3 with the `gguf` package.
# Last run (llama.cpp 0c1e570 from llama-cpp-python 0.3.36): SmolLM2, Gemma 3 and the 17
# supported ggml-vocab-*.gguf files of llama.cpp's models/ folder, no differences.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
crate="$(cd "$here/../.." && pwd)"
: "${LLAMA_CPP_DIR:?set LLAMA_CPP_DIR to a llama.cpp source tree}"
work="${WORK:-$(mktemp -d)}"
inc=(-I"$LLAMA_CPP_DIR/include" -I"$LLAMA_CPP_DIR/ggml/include" -I"$LLAMA_CPP_DIR/src")
for src in "$LLAMA_CPP_DIR/src/unicode.cpp" "$LLAMA_CPP_DIR/src/unicode-data.cpp" \
           "$LLAMA_CPP_DIR/src/llama-arch.cpp" "$here/stubs.cpp" "$here/harness.cpp"; do
    g++ -std=c++17 -O1 "${inc[@]}" -c "$src" -o "$work/$(basename "$src" .cpp).o"
done
g++ "$work"/*.o -o "$work/harness"
cargo build --release -q -p rustorch-tokenizer --example llama_diff_dump
dump="$crate/../../target/release/examples/llama_diff_dump"
gpl="$crate/../../../shared/reference/texts/GPL-3"
python3 "$here/gen_texts.py" "${N_TEXTS:-2000}" "${SEED:-1}" "$work/texts.bin" "$( [ -f "$gpl" ] && echo "$gpl")"
status=0
for model in "$@"; do
    name="$(basename "$model" .gguf)"
    python3 "$here/dump_gguf_kv.py" "$model" "$work/$name.kv"
    "$work/harness" "$work/$name.kv" "$work/texts.bin" > "$work/$name.llama.txt"
    "$dump" "$model" "$work/texts.bin" > "$work/$name.rustorch.txt"
    echo -n "$name: "
    python3 "$here/compare.py" "$work/$name.llama.txt" "$work/$name.rustorch.txt" || status=1
done
exit $status
