#!/usr/bin/env bash
# On the device machine, two calls back to back (the machine stays warm ~30 s between them), with
# .cudabin/ (scripts/device-cuda.sh --stage, plus a second binary as .cudabin/rustorch-main) and
# .ref/ (../shared/tools/gpu-compare.sh --stage .cudabin/rustorch) carried:
#   bash bench/cuda/lease.sh check   # llama.cpp's CUDA build in the background (~5 min) while the
#                                    # synthetic files are made and the CUDA tests run
#   bash bench/cuda/lease.sh bench   # llama.cpp beside rustorch (gpu-compare bench, ROUNDS times),
#                                    # then prompt and decode A/B (prompt.sh, options.sh)
#   bash bench/cuda/lease.sh all     # both in one call, one round of each
set -uo pipefail
cd "$(dirname "$0")/../.."
source bench/cuda/env.sh
W=$HOME/gpucmp
link_files() {  # gpu-compare's files under the names our scripts use
  for p in "tl tinyllama-1.1b" "l7 llama-7b"; do set -- $p
    for t in Q4_K_M Q4_0 Q8_0; do [ -f $W/m/$1-$t.gguf ] && ln -sf $W/m/$1-$t.gguf $M/$2-$t.gguf; done
  done
}
# The Q4_K_M files of options.sh and prompt.sh: TinyLlama now (the tests read it), the 7B (~60 s)
# in the background (`wait` before timing).
make_q4km() {
  $B synth --shape tinyllama-1.1b --type Q4_K_M -o $M/tinyllama-1.1b-Q4_K_M.gguf > /dev/null
  ( $B synth --shape llama-7b --type Q4_K_M -o $M/l7.tmp > /dev/null && mv $M/l7.tmp $M/llama-7b-Q4_K_M.gguf ) &
}
case "${1:-}" in
check)
  ( bash .ref/gpu-compare.sh build > $OUT/build.txt 2>&1; touch $OUT/build.finished ) &
  while ! { [ -f $W/m/l7-Q4_K_M.gguf ] && ! pgrep -f "synth --shape" > /dev/null; }; do sleep 2; done
  # one shape that is not llama's (issue 17: every architecture gets the speed)
  t0=$(date +%s); $B synth --shape gemma3-1b --type Q4_K_M -o $W/m/g1-Q4_K_M.gguf > /dev/null; echo "synth gemma3-1b: $(( $(date +%s) - t0 )) s"
  link_files; ls -laL $M $W/m
  t0=$(date +%s)
  RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA=$M/tinyllama-1.1b-Q4_K_M.gguf RUSTORCH_TEST_CUDA_OPTS=cuda.qgemm=1 \
    .cudabin/cuda-tests --test-threads=1 --nocapture 2>&1 | grep -vE "^\s*$" > $OUT/tests-qgemm.log
  echo "tests (cuda.qgemm=1) rc ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"
  grep -E "test result|FAILED|panicked|prompt matmul" $OUT/tests-qgemm.log | tail -40
  for k in $(seq 1 ${TEST_ROUNDS:-2}); do
    t0=$(date +%s)
    RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA=$M/tinyllama-1.1b-Q4_K_M.gguf \
      .cudabin/cuda-tests --test-threads=2 > $OUT/tests-$k.log 2>&1
    echo "tests (default, 2 threads) round $k rc $? in $(( $(date +%s) - t0 )) s"; grep -E "test result|FAILED|panicked" $OUT/tests-$k.log | tail -8
  done
  RUSTORCH_REQUIRE_CUDA=1 .cudabin/engine-tests --test-threads=1 > $OUT/engine-tests.log 2>&1
  echo "engine tests rc $?"; grep -E "test result|FAILED|panicked" $OUT/engine-tests.log | tail -5
  while [ ! -f $OUT/build.finished ]; do sleep 5; done; tail -8 $OUT/build.txt;;
bench)
  link_files
  for r in $(seq 1 ${ROUNDS:-3}); do
    echo "== gpu-compare round $r"; FILES=${FILES:-tl-Q4_K_M tl-Q4_0 tl-Q8_0 l7-Q4_K_M g1-Q4_K_M} VULKAN=0 BATCHED=0 OUT=$OUT/compare-$r bash .ref/gpu-compare.sh bench | grep -E "^\| (llama|rust)"
  done
  # one file, not ~20 a round: the device returns only so many files
  tar czf $OUT/compare.tgz -C $OUT $(cd $OUT && ls -d compare-*) && rm -rf $OUT/compare-*
  [ "${AB:-1}" = 1 ] && { TESTS=0 PROFILE=0 ROUNDS=${AB_ROUNDS:-2} bash bench/cuda/prompt.sh | grep round
    # main's 32-column kernel (one block a multiprocessor) against the branch's (two)
    [ -x .cudabin/rustorch-main ] && B=.cudabin/rustorch-main FILES=llama-7b:Q4_K_M OPTS="default|cuda.qgemm=1" \
      TESTS=0 PROFILE=0 ROUNDS=${AB_ROUNDS:-2} bash bench/cuda/prompt.sh | grep round | sed 's/^/main: /'
    OPTS=default BINS=".cudabin/rustorch .cudabin/rustorch-main" PROFILE=0 ROUNDS=${AB_ROUNDS:-2} bash bench/cuda/options.sh | grep round; };;
dev)  # no llama.cpp: tests, then prompt and decode A/B on the Q4_K_M files
  mkdir -p $W/m; $B synth --shape tinyllama-1.1b --type Q4_K_M -o $W/m/tl-Q4_K_M.gguf > /dev/null
  ( $B synth --shape llama-7b --type Q4_K_M -o $W/m/l7-Q4_K_M.gguf.tmp > /dev/null && mv $W/m/l7-Q4_K_M.gguf.tmp $W/m/l7-Q4_K_M.gguf ) &
  link_files
  RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA=$M/tinyllama-1.1b-Q4_K_M.gguf RUSTORCH_TEST_CUDA_OPTS=cuda.qgemm=1 \
    .cudabin/cuda-tests --test-threads=2 --nocapture 2>&1 | grep -vE "^\s*$" > $OUT/tests-qgemm.log
  echo "tests (cuda.qgemm=1, 2 threads) rc ${PIPESTATUS[0]}"; grep -E "test result|FAILED|panicked|prompt matmul" $OUT/tests-qgemm.log | tail -30
  RUSTORCH_REQUIRE_CUDA=1 .cudabin/engine-tests --test-threads=1 > $OUT/engine-tests.log 2>&1
  echo "engine tests rc $?"; grep -E "test result|FAILED|panicked" $OUT/engine-tests.log | tail -5
  wait; link_files
  FILES="tinyllama-1.1b:Q4_K_M llama-7b:Q4_K_M" TESTS=0 PROFILE=0 ROUNDS=1 bash bench/cuda/prompt.sh | grep round
  B=.cudabin/rustorch-main FILES=llama-7b:Q4_K_M OPTS="default|cuda.qgemm=1" TESTS=0 PROFILE=0 ROUNDS=1 bash bench/cuda/prompt.sh | grep round | sed 's/^/main: /'
  OPTS=default BINS=".cudabin/rustorch .cudabin/rustorch-main" PROFILE=0 ROUNDS=2 bash bench/cuda/options.sh | grep round;;
verify)  # a short re-check: tests (2 threads), pp512 old path / default, tg128 against main's binary
  make_q4km
  RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA=$M/tinyllama-1.1b-Q4_K_M.gguf .cudabin/cuda-tests --test-threads=2 > $OUT/tests.log 2>&1
  echo "tests rc $?"; grep -E "test result|FAILED|panicked" $OUT/tests.log | tail -6
  RUSTORCH_REQUIRE_CUDA=1 .cudabin/engine-tests --test-threads=1 > $OUT/engine-tests.log 2>&1
  echo "engine tests rc $?"; grep -E "test result|FAILED" $OUT/engine-tests.log | tail -3
  wait
  FILES="tinyllama-1.1b:Q4_K_M llama-7b:Q4_K_M" OPTS="cuda.qgemm=0|default" TESTS=0 PROFILE=0 ROUNDS=1 bash bench/cuda/prompt.sh | grep round
  OPTS=default BINS=".cudabin/rustorch .cudabin/rustorch-main" PROFILE=0 ROUNDS=${ROUNDS:-2} bash bench/cuda/options.sh | grep round;;
quick)  # a short lease: the kernel-level and shape tests, then tg128 of this binary and main's alternating
  make_q4km
  RUSTORCH_REQUIRE_CUDA=1 RUSTORCH_TEST_TINYLLAMA=$M/tinyllama-1.1b-Q4_K_M.gguf .cudabin/cuda-tests \
    matvec fused_gate qkv_with tinyllama_shape smollm2_shapes --test-threads=2 > $OUT/tests.log 2>&1
  echo "tests rc $?"; grep -E "test result|FAILED|panicked" $OUT/tests.log | tail -6
  wait
  OPTS=default BINS=".cudabin/rustorch-main .cudabin/rustorch" PROFILE=0 ROUNDS=${ROUNDS:-3} bash bench/cuda/options.sh | grep round;;
all)  # both in one call, one round each, when machines are scarce
  TEST_ROUNDS=1 bash $0 check; ROUNDS=${ROUNDS:-1} AB_ROUNDS=${AB_ROUNDS:-1} bash $0 bench;;
*) echo "usage: lease.sh check | bench | all | dev | verify | quick"; exit 2;;
esac
