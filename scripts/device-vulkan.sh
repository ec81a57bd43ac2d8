#!/usr/bin/env bash
# Runs the wgpu (Vulkan) backend's kernel tests, a Vulkan-vs-CPU check and the benchmarks on a
# machine with a GPU and a Vulkan driver but no Rust, using binaries built elsewhere:
#   CARGO_TARGET_DIR=target-wgpu cargo build --release --features wgpu
#   CARGO_TARGET_DIR=target-wgpu cargo test --release --features wgpu -p rustorch-model --test wgpu_kernels --no-run
#   scripts/device-vulkan.sh --stage   # copies and strips them into .wgpubin/ (with the commit id)
#                                      # and fetches the Vulkan loader package into .gl/
# then on the GPU machine, from the repository root (carry .wgpubin and .gl):
#   scripts/device-vulkan.sh [OUT_DIR]
# which writes OUT_DIR/vulkan-results.json (adapter, driver, commit, tests, check, bench table)
# plus logs. The synthetic models go to $MODELS (default /tmp/rustorch-models, shared with
# scripts/device-cuda.sh).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--stage" ]]; then
    set -e
    t=${CARGO_TARGET_DIR:-target-wgpu}
    mkdir -p .wgpubin
    cp "$t/release/rustorch" .wgpubin/rustorch
    test_bin=$(ls -t "$t"/release/deps/wgpu_kernels-* | grep -v '\.d$' | head -1)
    cp "$test_bin" .wgpubin/wgpu-kernels
    strip .wgpubin/rustorch .wgpubin/wgpu-kernels
    git rev-parse HEAD >.wgpubin/COMMIT
    git status --porcelain --untracked-files=no | grep -q . && echo "dirty" >>.wgpubin/COMMIT
    if ! ls .gl/libglvnd0_*.deb >/dev/null 2>&1; then
        # The device machine lacks the Vulkan loader and the GL dispatch libraries the NVIDIA
        # driver's ICD needs (the driver itself is there).
        mkdir -p .gl /tmp/amd64/partial
        o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
        apt-get $o update >/dev/null
        (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    fi
    grep -qx '/.wgpubin/' .git/info/exclude || echo /.wgpubin/ >>.git/info/exclude
    grep -qx '/.gl/' .git/info/exclude || echo /.gl/ >>.git/info/exclude
    ls -la .wgpubin .gl
    exit 0
fi

OUT=${1:-${OUT:-/tmp/vulkan-out}}
mkdir -p "$OUT"
BIN=.wgpubin
MODELS=${MODELS:-/tmp/rustorch-models}
mkdir -p "$MODELS"
# Smaller runs for a try on a software Vulkan:
#   BENCH_ARGS="-p 8 -n 4 -r 1" GEN_ARGS="-p 0 -n 4 -r 1" CHECK_TOKENS=16
BENCH_ARGS=${BENCH_ARGS:--p 512 -n 128}
CHECK_TOKENS=${CHECK_TOKENS:-256}
GEN_ARGS=${GEN_ARGS:--p 0 -n 128}
# Files to make and bench (Q4_K_M is always made: the check and the variants use it).
FILES=${FILES:-Q4_K_M Q4_0 Q8_0}
# SKIP_TESTS=1 skips the kernel tests, SKIP_CHECK=1 the Vulkan-vs-CPU check.

# The Vulkan loader complains on every start without a runtime directory.
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}

# The Vulkan loader and the GL dispatch libraries the NVIDIA ICD loads (the device README's
# headless-rendering recipe), and the NVIDIA ICD where that machine keeps it.
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
if [[ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]]; then
    export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-}"
ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null | tr '\n' ' '; echo
ldconfig -p | grep -E 'libvulkan.so|libGLX_nvidia|libGLdispatch' | head -5
card=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -1)
echo "card: ${card:-?}, driver: ${driver:-?}"

for t in $(echo Q4_K_M $FILES | tr ' ' '\n' | sort -u); do
    f="$MODELS/tinyllama-1.1b-$t.gguf"
    [[ -f $f ]] || "$BIN/rustorch" synth --shape tinyllama-1.1b --type "$t" -o "$f" >/dev/null || exit 1
done

# Kernel tests against the CPU reference (both subgroup variants, MSL translation).
if [[ -z ${SKIP_TESTS:-} ]]; then
    "$BIN/wgpu-kernels" --test-threads=1 2>&1 | tee "$OUT/vulkan-tests.log"
    test_rc=${PIPESTATUS[0]}
else
    echo "kernel tests skipped" >"$OUT/vulkan-tests.log"
    test_rc=-1
fi

# Whole model, Vulkan against CPU: argmax per position of one text (the batched path), and
# greedy generation (the decode path).
WORK=$(mktemp -d)
TEXT=$WORK/text.txt
for i in $(seq 1 12); do
    echo "The history of the printing press begins in the fifteenth century, when movable type met oil-based ink and a wooden press. Within fifty years printing had spread to two hundred cities."
done >"$TEXT"
M="$MODELS/tinyllama-1.1b-Q4_K_M.gguf"
: >"$OUT/logits-vulkan.err"
if [[ -z ${SKIP_CHECK:-} ]]; then
"$BIN/rustorch" logits -m "$M" -f "$TEXT" -n "$CHECK_TOKENS" --backend cpu >"$WORK/logits-cpu.json" 2>/dev/null
"$BIN/rustorch" logits -m "$M" -f "$TEXT" -n "$CHECK_TOKENS" --backend vulkan >"$WORK/logits-vulkan.json" 2>"$OUT/logits-vulkan.err"
cat "$OUT/logits-vulkan.err" | grep -v XDG_RUNTIME_DIR
for b in cpu vulkan; do
    "$BIN/rustorch" run -m "$M" -p "Once upon a time" -n "$((CHECK_TOKENS / 4))" --temp 0 --backend $b >"$WORK/greedy-$b.txt" 2>/dev/null
done
fi

# Benchmarks: every file, then Q4_K_M decode without subgroups, with one submission per step
# (instead of one every 32 ops), with the older chunk mat-vec, with naga's run-time checks kept in
# the shaders, with the prompt's matmul kernel for decode instead of the mat-vec, and with the
# profile (host time, GPU time per kernel).
BENCH=$(mktemp -d)
for t in $FILES; do
    "$BIN/rustorch" bench -m "$MODELS/tinyllama-1.1b-$t.gguf" --backend vulkan $BENCH_ARGS --json \
        >"$BENCH/bench-$t.json" 2>"$BENCH/bench-$t.err"
    echo "bench $t: rc $?"; grep -v XDG_RUNTIME_DIR "$BENCH/bench-$t.err"
done
for v in nosg:wgpu.subgroups=0 submit0:wgpu.submit_every=0 checked:wgpu.checked=1 nomatvec:wgpu.matvec=0; do
    "$BIN/rustorch" bench -m "$M" --backend vulkan --backend-opt "${v#*:}" $GEN_ARGS --json \
        >"$BENCH/bench-${v%%:*}.json" 2>/dev/null
done
# Where the host's time goes per decoded token (recording, encoding, submitting, waiting), and
# the GPU time of each kernel (timestamp queries; each dispatch in its own pass while profiling).
RUSTORCH_WGPU_PROFILE=1 "$BIN/rustorch" bench -m "$M" --backend vulkan $GEN_ARGS \
    >/dev/null 2>"$OUT/profile.err"
grep -E "^wgpu (profile|GPU time|kernel)" "$OUT/profile.err"

python3 - "$OUT" "$BENCH" "$WORK" "${card:-?}" "${driver:-?}" "$(tr '\n' ' ' <$BIN/COMMIT)" "$test_rc" <<'PY'
import json, re, sys, os
out, bench_dir, work, card, driver, commit, test_rc = sys.argv[1:8]
log = open(os.path.join(out, "vulkan-tests.log")).read()
tests = {n: s for n, s in re.findall(r"^test (\S+) \.\.\. (ok|FAILED|ignored)", log, re.M)}
adapter = ""
err = open(os.path.join(out, "logits-vulkan.err")).read()
m = re.search(r"wgpu: (.*)", err)
if m:
    adapter = m.group(1)
check = {}
try:
    cpu = json.load(open(os.path.join(work, "logits-cpu.json")))["positions"]
    gpu = json.load(open(os.path.join(work, "logits-vulkan.json")))["positions"]
    conf = [(c, g) for c, g in zip(cpu, gpu) if c["margin"] >= 0.5]
    check["positions"] = len(cpu)
    check["confident"] = len(conf)
    check["agree_confident"] = sum(c["argmax"] == g["argmax"] for c, g in conf)
    check["agree_all"] = sum(c["argmax"] == g["argmax"] for c, g in zip(cpu, gpu))
except Exception as e:
    check["error"] = str(e)
try:
    g = [open(os.path.join(work, f"greedy-{b}.txt"), errors="replace").read() for b in ("cpu", "vulkan")]
    check["greedy_equal"] = g[0] == g[1]
    check["greedy"] = {"cpu": g[0], "vulkan": g[1]}
    check["greedy_common_prefix_chars"] = len(os.path.commonprefix(g))
except Exception as e:
    check["greedy_error"] = str(e)
prof = re.findall(r"^wgpu (?:profile|GPU time|kernel).*", open(os.path.join(out, "profile.err")).read(), re.M)
bench = []
for name in ["Q4_K_M", "Q4_0", "Q8_0", "nosg", "submit0", "checked", "nomatvec"]:
    try:
        for r in json.load(open(os.path.join(bench_dir, f"bench-{name}.json"))):
            r.pop("samples_ns", None)
            r["model_filename"] = os.path.basename(r["model_filename"])
            r["variant"] = {"nosg": "wgpu.subgroups=0", "submit0": "wgpu.submit_every=0", "checked": "wgpu.checked=1", "nomatvec": "wgpu.matvec=0"}.get(name, "default")
            bench.append(r)
    except Exception as e:
        bench.append({"file": name, "error": str(e)})
res = {
    "card": card, "driver": driver, "adapter": adapter, "commit": commit.strip(),
    "tests": tests,
    "tests_passed": sum(1 for s in tests.values() if s == "ok"),
    "tests_failed": sum(1 for s in tests.values() if s == "FAILED"),
    "test_exit_code": int(test_rc),
    "check": check,
    "profile_tg": prof,
    "bench_command": "rustorch bench -m tinyllama-1.1b-<type>.gguf --backend vulkan -p 512 -n 128",
    "bench": bench,
}
json.dump(res, open(os.path.join(out, "vulkan-results.json"), "w"), indent=1)
print("| file | variant | test | t/s |")
print("| --- | --- | --- | ---: |")
for r in bench:
    if "error" in r:
        print(f"| {r['file']} | error: {r['error']} | | |")
        continue
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    print(f"| {r['model_type']} | {r['variant']} | {test} | {r['avg_ts']:.1f} ± {r['stddev_ts']:.1f} |")
print(f"check: {check}")
print(f"tests: {res['tests_passed']} passed, {res['tests_failed']} failed (exit {test_rc}); card {card}, driver {driver}; adapter {adapter}")
PY
