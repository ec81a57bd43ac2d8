#!/usr/bin/env bash
# Minimizes a target's corpus (libFuzzer's merge, as `cargo fuzz cmin` does) before it is
# committed, with the run's -max_len, so the corpus keeps only inputs that add coverage; then
# drops inputs slower than 0.25 s each (chat templates that run into the renderer's limits,
# which crates/engine/tests/chat_template_limits.rs already covers), so the replay in CI stays
# under a minute.
#
#   fuzz/cmin.sh <target>
set -euo pipefail
cd "$(dirname "$0")/.."
target=${1:?target}
bin=fuzz/target/x86_64-unknown-linux-gnu/release/$target
case $target in
    tokenizer) max_len=2500 ;; # truncates the larger inputs: 97% of the features in half the bytes
    chat_template) max_len=8192 ;;
    model_loader) max_len=256 ;;
    gguf_reader) max_len=4096 ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
esac
out=$(mktemp -d)
"$bin" -merge=1 -max_len=$max_len -timeout=10 -rss_limit_mb=2048 "$out" "fuzz/corpus/$target" 2>&1 | tail -1
# "Executed <file> in <n> ms", one line an input
slow=0
while read -r f ms; do
    if (( ms > 250 )); then
        rm "$f"
        slow=$((slow + 1))
    fi
done < <("$bin" -timeout=10 "$out"/* 2>&1 | sed -n 's/^Executed \(.*\) in \([0-9]*\) ms$/\1 \2/p')
rm -rf "fuzz/corpus/$target"
mv "$out" "fuzz/corpus/$target"
echo "$target: $(ls "fuzz/corpus/$target" | wc -l) files, $(du -sb "fuzz/corpus/$target" | cut -f1) bytes, $slow slow inputs dropped"
