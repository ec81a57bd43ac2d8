#!/usr/bin/env bash
# Runs the CUDA backend's tests and benchmarks on a machine with an NVIDIA GPU and no Rust, using
# binaries built elsewhere:
#   CARGO_TARGET_DIR=target-cuda cargo build --release --features cuda
#   CARGO_TARGET_DIR=target-cuda cargo test --release --features cuda-testing -p rustorch-model --test cuda --no-run
#   CARGO_TARGET_DIR=target-cuda cargo test --release --features cuda -p rustorch-engine --test engine_gpu --no-run
#   scripts/device-cuda.sh --stage    # copies and strips them into .cudabin/ (with the commit id)
# then on the GPU machine, from the repository root:
#   scripts/device-cuda.sh [OUT_DIR]  # makes the synthetic models, runs the tests and the benches
# and writes OUT_DIR/cuda-results.json (card, driver, commit, test counts, bench table) plus logs.
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--stage" ]]; then
    set -e
    t=${CARGO_TARGET_DIR:-target-cuda}
    mkdir -p .cudabin
    cp "$t/release/rustorch" .cudabin/rustorch
    test_bin=$(ls -t "$t"/release/deps/cuda-* | grep -v '\.d$' | head -1)
    cp "$test_bin" .cudabin/cuda-tests
    engine_bin=$(ls -t "$t"/release/deps/engine_gpu-* | grep -v '\.d$' | head -1)
    cp "$engine_bin" .cudabin/engine-tests
    strip .cudabin/rustorch .cudabin/cuda-tests .cudabin/engine-tests
    git rev-parse HEAD >.cudabin/COMMIT
    git status --porcelain --untracked-files=no | grep -q . && echo "dirty" >>.cudabin/COMMIT
    ls -la .cudabin
    exit 0
fi

OUT=${1:-${OUT:-/tmp/cuda-out}}
mkdir -p "$OUT"
BIN=.cudabin
# The synthetic models in memory when /dev/shm has room (making them on /tmp took a minute).
shm_free=$(df -Pk /dev/shm 2>/dev/null | awk 'NR == 2 {print $4}')
if [[ ${shm_free:-0} -gt 20000000 ]]; then
    MODELS=${MODELS:-/dev/shm/rustorch-models}
else
    MODELS=${MODELS:-/tmp/rustorch-models}
fi
mkdir -p "$MODELS"

# NVRTC and cuBLAS are loaded at run time: put their directories on the library path.
libdirs=$(find /usr/local /usr/lib /opt / -maxdepth 6 \( -name 'libnvrtc.so*' -o -name 'libcublas.so*' \) \
    -printf '%h\n' 2>/dev/null | grep -v stubs | sort -u | tr '\n' ':')
export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:-}"
echo "library path: $LD_LIBRARY_PATH"

card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
echo "card: $card, driver: $driver"

# The synthetic models of the benchmarks.
for t in Q4_K_M Q4_0 Q8_0; do
    f="$MODELS/tinyllama-1.1b-$t.gguf"
    [[ -f $f ]] || "$BIN/rustorch" synth --shape tinyllama-1.1b --type "$t" -o "$f" >/dev/null || exit 1
done
ls -la "$MODELS"

# The real SmolLM2-135M-Instruct Q4_1 file (98 MB, over what one call carries): carried in two
# halves, .smolA/part1 and .smolB/part2, in back-to-back calls, and joined in /tmp.
SMOL=/tmp/smol/SmolLM2-135M-Instruct.Q4_1.gguf
mkdir -p /tmp/smol
for d in .smolA .smolB; do [[ -d $d ]] && cp $d/* /tmp/smol/; done
if [[ ! -f $SMOL && -f /tmp/smol/part1 && -f /tmp/smol/part2 ]]; then
    cat /tmp/smol/part1 /tmp/smol/part2 >$SMOL
fi
if [[ -f $SMOL && -f $BIN/llamacpp.json ]]; then
    export RUSTORCH_TEST_SMOLLM2=$SMOL RUSTORCH_TEST_REFERENCE=$BIN/llamacpp.json
    sha256sum $SMOL
fi

# Tests (a missing GPU is a failure here).
RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA="$MODELS/tinyllama-1.1b-Q4_K_M.gguf" \
    "$BIN/cuda-tests" --test-threads=2 --nocapture ${TEST_FILTER:-} 2>&1 | tee "$OUT/cuda-tests.log"
test_rc=${PIPESTATUS[0]}
# The engine on CUDA (paged cache, preemption, prefix cache), appended to the same log.
RUSTORCH_REQUIRE_CUDA=1 "$BIN/engine-tests" --test-threads=1 --nocapture 2>&1 | tee -a "$OUT/cuda-tests.log"
[[ ${PIPESTATUS[0]} == 0 ]] || test_rc=1

# Benchmarks.
BENCH=$(mktemp -d)
for t in ${BENCH_TYPES-Q4_K_M Q4_0 Q8_0}; do
    "$BIN/rustorch" bench -m "$MODELS/tinyllama-1.1b-$t.gguf" --backend cuda -p 512 -n 128 --json \
        >"$BENCH/bench-$t.json" 2>"$BENCH/bench-$t.err"
    echo "bench $t: rc $?"; cat "$BENCH/bench-$t.err"
done

python3 - "$OUT" "$BENCH" "$card" "$driver" "$(cat $BIN/COMMIT | tr '\n' ' ')" "$test_rc" <<'PY'
import json, re, sys, os, glob
out, bench_dir, card, driver, commit, test_rc = sys.argv[1:7]
log = open(os.path.join(out, "cuda-tests.log")).read()
tests = {name: status for name, status in re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", log, re.M)}
summary = re.findall(r"test result: (\w+)\. (\d+) passed; (\d+) failed", log)
bench = []
for t in ["Q4_K_M", "Q4_0", "Q8_0"]:
    p = os.path.join(bench_dir, f"bench-{t}.json")
    try:
        for r in json.load(open(p)):
            r.pop("samples_ns", None)
            r["model_filename"] = os.path.basename(r["model_filename"])
            bench.append(r)
    except Exception as e:
        bench.append({"file": t, "error": str(e)})
res = {
    "card": card, "driver": driver, "commit": commit.strip(),
    "tests": tests,
    "tests_passed": sum(1 for s in tests.values() if s == "ok"),
    "tests_failed": sum(1 for s in tests.values() if s == "FAILED"),
    "test_exit_code": int(test_rc),
    "bench_command": "rustorch bench -m tinyllama-1.1b-<type>.gguf --backend cuda -p 512 -n 128",
    "bench": bench,
}
json.dump(res, open(os.path.join(out, "cuda-results.json"), "w"), indent=1)
print("| file | test | t/s |")
print("| --- | --- | ---: |")
for r in bench:
    if "error" in r:
        print(f"| {r['file']} | error: {r['error']} | |")
        continue
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    print(f"| {r['model_type']} | {test} | {r['avg_ts']:.1f} ± {r['stddev_ts']:.1f} |")
print(f"tests: {res['tests_passed']} passed, {res['tests_failed']} failed (exit {test_rc}); card {card}, driver {driver}")
PY
