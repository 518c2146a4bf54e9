#!/usr/bin/env bash
# Runs every libFuzzer harness (or the ones named) for a bounded time under ASan + UBSan, starting
# from its seed corpus in fuzz/corpus/<name>/ (new inputs go to build-fuzz/corpus/<name>/, so the
# committed seeds stay small). Exits non-zero when any harness finds a crash, a leak, a sanitizer
# report or a timeout; the reproducer is left in build-fuzz/artifacts/.
#   fuzz/run.sh [SECONDS] [NAME...]          e.g. fuzz/run.sh 600 fuzz_gguf
#   FUZZ_RUNS=10000000 fuzz/run.sh 0 [NAME...]  a fixed number of executions instead of a time
#   FUZZ_MAX_LEN=N: the longest input libFuzzer makes (default 65536)
# Build first (clang from Debian):
#   CC=clang CXX=clang++ cmake -S . -B build-fuzz -DHERD_FUZZ=ON && cmake --build build-fuzz --target herd_fuzzers
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
shift || true
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(fuzz_gguf fuzz_protocol fuzz_lane fuzz_chat_template fuzz_tokenizer fuzz_nccl_id)
bin=${HERD_FUZZ_BUILD:-build-fuzz}
mkdir -p "$bin/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
for n in "${names[@]}"; do
  work="$bin/corpus/$n"
  mkdir -p "$work"
  log="$bin/artifacts/$n.log"
  # -rss_limit_mb: a harness must never need much memory; -timeout: one input must never take 10 s.
  if [ -n "${FUZZ_RUNS:-}" ]; then limit=(-runs="$FUZZ_RUNS"); what="runs=$FUZZ_RUNS"; else limit=(-max_total_time="$secs"); what="${secs} s"; fi
  start=$(date +%s)
  if "$bin/fuzz/$n" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len="${FUZZ_MAX_LEN:-65536}" -print_final_stats=1 \
       -artifact_prefix="$bin/artifacts/$n-" "$work" "fuzz/corpus/$n" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    echo "fuzz: $n ok: ${execs:-?} executions in $(( $(date +%s) - start )) s ($what)"
  else
    status=1
    echo "fuzz: $n FAILED (log: $log):"
    grep -E "ERROR|runtime error|SUMMARY|Test unit written" "$log" | head -n 20 || tail -n 30 "$log"
  fi
done
exit $status
