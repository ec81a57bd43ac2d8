#!/usr/bin/env bash
# Fuzzes one target for a while, in one process, with the limits every run here uses, and adds
# a line to fuzz/logs/runs.tsv: target, start (UTC), seconds, executions, corpus files, outcome.
#
#   flock /tmp/rustorch-build.lock cargo +nightly fuzz build <target>   # first; chat_template: -s none (README)
#   fuzz/run.sh <target> <seconds>
#
# It runs the binary `cargo fuzz build` left, so a run never rebuilds (or waits for a build).
# A crash, a hang over 10 s, an allocation over 1 GiB or 2 GiB resident end the run; the input
# is in fuzz/artifacts/<target>/.
set -uo pipefail
cd "$(dirname "$0")/.."
target=${1:?target}
secs=${2:?seconds}
bin=fuzz/target/x86_64-unknown-linux-gnu/release/$target
[[ -x $bin ]] || { echo "no $bin: run cargo +nightly fuzz build $target" >&2; exit 2; }
case $target in
    tokenizer) extra=(-max_len=16384 -dict=fuzz/dicts/tokenizer.dict) ;;
    chat_template) extra=(-max_len=8192 -dict=fuzz/dicts/jinja.dict) ;;
    model_loader) extra=(-max_len=256) ;;
    gguf_reader) extra=(-max_len=4096) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
esac
mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target" fuzz/logs
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
log=fuzz/logs/$target-$(date -u +%Y%m%dT%H%M%S).log
t0=$(date +%s)
"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
    -print_final_stats=1 -artifact_prefix="fuzz/artifacts/$target/" "${extra[@]}" \
    "fuzz/corpus/$target" "fuzz/seeds/$target" >"$log" 2>&1
rc=$?
took=$(( $(date +%s) - t0 ))
execs=$(grep -o 'stat::number_of_executed_runs: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
if [[ -z $execs ]]; then
    # killed or crashed before the final stats: the last status line's count
    execs=$(grep -oE '^#[0-9]+' "$log" | tail -1 | tr -d '#')
fi
outcome=ok
if [[ $rc != 0 ]]; then
    outcome="rc=$rc $(grep -oE 'ERROR: libFuzzer: [a-z-]+|deadly signal|Test unit written to [^ ]*' "$log" | tr '\n' ' ')"
fi
printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$target" "$start" "$took" "${execs:-?}" \
    "$(ls "fuzz/corpus/$target" | wc -l)" "$outcome" >>fuzz/logs/runs.tsv
echo "$target: ${took}s, ${execs:-?} executions, $outcome (log $log)"
