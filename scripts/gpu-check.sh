#!/usr/bin/env bash
# The GPU check of [cuda], for a machine with an NVIDIA GPU (a lent H100/H200: see DEVELOPERS.md).
# In one go, under 8 minutes on 16 cores:
#   1. builds herd with the CUDA backend for this GPU's architecture only (build-gpu/);
#   2. runs the CPU proofs of the CUDA math (test_cuda_block_math, test_cuda_ops_math,
#      test_device_seam) and test_cuda (every op × type, replay of ../shared/reference, repeated
#      runs) on the GPU;
#   3. a mixed pipeline: a CPU worker and a GPU worker on 127.0.0.1, greedy tokens against one
#      CPU process on the same F32 model;
#   4. benchmarks: `herd probe` (the GPU's copy bandwidth), and decode of the Llama-3-8B shape in
#      Q4_K_M on a GPU worker (tok/s, and weight bytes per token ÷ copy bandwidth), without and
#      with CUDA graphs (HERD_CUDA_GRAPHS=1);
# and writes a short report to $OUT/gpu-check.txt (OUT defaults to ./gpu-check-out), with the logs
# beside it. Exit status: 0 when every check passed, else the number of failed steps.
#
#   bash scripts/gpu-check.sh            # SKIP_BENCH=1 skips step 4
#   DRY_RUN=1 BUILD=build BENCH_MODEL=small.gguf bash scripts/gpu-check.sh   # on a CPU: the
#       script's own plumbing, with an existing build and --device cpu where a GPU would be
#       (test_cuda then reports SKIPPED)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu-check-out}
mkdir -p "$OUT"
REPORT=$OUT/gpu-check.txt
: >"$REPORT"
JOBS=${JOBS:-$(nproc)}
failed=0
say() { echo "$*" | tee -a "$REPORT"; }
step() {  # step NAME CMD...: runs CMD, logs to $OUT/NAME.log, one line in the report
  local name=$1
  shift
  local t0=$SECONDS
  if "$@" >"$OUT/$name.log" 2>&1; then
    say "ok    $name ($((SECONDS - t0)) s)"
  else
    say "FAIL  $name ($((SECONDS - t0)) s): tail of $name.log:"
    tail -n 15 "$OUT/$name.log" | sed 's/^/      /' | tee -a "$REPORT"
    failed=$((failed + 1))
  fi
}

say "herd gpu-check, $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
BUILD=${BUILD:-build-gpu}
DEV=cuda:0
if [ "${DRY_RUN:-0}" = 1 ]; then
  DEV=cpu
  say "DRY_RUN: no GPU used; $BUILD as it is, --device cpu where a GPU would be"
  [ -x "$BUILD/bin/herd" ] || { say "DRY_RUN needs a built $BUILD"; exit 1; }
else
  if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    say "no GPU here (nvidia-smi found none): nothing to check"
    exit 1
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader | sed 's/^/gpu: /' | tee -a "$REPORT"
  ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d ' .')
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  [ -x "$NVCC" ] || { say "no nvcc (CUDA toolkit) found"; exit 1; }
  step configure cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DHERD_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    -DCMAKE_CUDA_ARCHITECTURES="$ARCH"
  step build cmake --build "$BUILD" -j"$JOBS" --target herd test_cuda test_cuda_block_math test_cuda_ops_math test_device_seam \
    test_device_tp test_device_hop bench_nccl
  [ -x "$BUILD/bin/herd" ] || { say "the build failed: see $OUT/build.log"; exit "$((failed > 0 ? failed : 1))"; }
fi
HERD=$PWD/$BUILD/bin/herd
export BUILD

step cpu_proofs bash -c '"$BUILD"/tests/test_cuda_block_math && "$BUILD"/tests/test_cuda_ops_math && "$BUILD"/tests/test_device_seam && "$BUILD"/tests/test_device_tp && "$BUILD"/tests/test_device_hop'
step test_cuda "$BUILD"/tests/test_cuda
grep -E '^cuda |SKIPPED \] [0-9]+ test|FAILED' "$OUT/test_cuda.log" | sed 's/^/      /' | tee -a "$REPORT"

# 3. Mixed pipeline: CPU worker (layers first) + GPU worker, greedy, against one CPU process.
MODEL=../shared/models/stories260K.gguf
mixed() {
  local pids=()
  "$HERD" worker -l tcp://127.0.0.1:47411 -t 2 --exit-with-parent $$ >"$OUT/worker-cpu.log" 2>&1 &
  pids+=($!)
  "$HERD" worker -l tcp://127.0.0.1:47412 --device "$DEV" --exit-with-parent $$ >"$OUT/worker-gpu.log" 2>&1 &
  pids+=($!)
  sleep 8  # the workers measure their host / GPU at startup
  local one two
  one=$("$HERD" run -m "$MODEL" -p "Once upon a time" -n 48 --temp 0 2>/dev/null)
  two=$("$HERD" run -m "$MODEL" -p "Once upon a time" -n 48 --temp 0 --workers 127.0.0.1:47411,127.0.0.1:47412 --plan-strategy even 2>"$OUT/mixed-run.err")
  kill "${pids[@]}" 2>/dev/null
  wait 2>/dev/null
  echo "one process: $one"
  echo "cpu+gpu:     $two"
  [ -n "$one" ] && [ "$one" = "$two" ]
}
step mixed_pipeline mixed

# 3b. With 2+ GPUs: tensor parallelism across them over NCCL (one rank per GPU), greedy, against
# one process on the first GPU. (test_cuda's NCCL tests cover the logits; this is the CLI path.)
if [ "$(nvidia-smi -L 2>/dev/null | wc -l)" -ge 2 ]; then
  tp_gpus() {
    local one two
    one=$("$HERD" run -m "$MODEL" -p "Once upon a time" -n 48 --temp 0 --device "$DEV" 2>/dev/null)
    two=$("$HERD" run -m "$MODEL" -p "Once upon a time" -n 48 --temp 0 --tp 2 --device cuda:0,cuda:1 2>"$OUT/tp-gpus.err")
    echo "one GPU:        $one"
    echo "tp 2 over NCCL: $two"
    [ -n "$one" ] && [ "$one" = "$two" ]
  }
  step tp_two_gpus tp_gpus
  step nccl_latency "$BUILD"/bin/bench_nccl
  sed 's/^/      /' "$OUT/nccl_latency.log" | tee -a "$REPORT"
else
  say "tp_two_gpus: skipped (one GPU: NCCL joins one rank per GPU)"
fi

# 4. Benchmarks.
if [ "${SKIP_BENCH:-0}" != 1 ]; then
  step probe "$HERD" probe --quick --out "$OUT/probe.json"
  grep -E '^ +gpu' "$OUT/probe.log" | sed 's/^/      /' | tee -a "$REPORT"
  M8=${BENCH_MODEL:-$OUT/llama3-8b-Q4_K_M.gguf}  # BENCH_MODEL: another model instead (a dry run's)
  [ -n "${BENCH_MODEL:-}" ] || step synth_8b "$HERD" synth --shape llama3-8b --type Q4_K_M -o "$M8" -q
  bench8() {  # bench8 NAME: decode and prefill of the 8B shape on a GPU worker, JSON lines in $OUT/NAME.json
    "$HERD" worker -l tcp://127.0.0.1:47413 -m "$M8" --device "$DEV" --exit-with-parent $$ >"$OUT/worker-$1.log" 2>&1 &
    local w=$!
    sleep 10  # the worker measures its GPU at startup
    "$HERD" bench -m "$M8" --workers 127.0.0.1:47413 -p 512 -n 128 -r 3 --json >"$OUT/$1.json"
    local rc=$?
    kill $w 2>/dev/null
    wait 2>/dev/null
    return $rc
  }
  # tok/s, and decode's weight bytes per token x tok/s as a share of the GPU's copy bandwidth (the target: >= 70%).
  summarize() {
    python3 - "$OUT/$1.json" "$OUT/probe.json" <<'PY' | sed 's/^/      /' | tee -a "$REPORT"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip().startswith("{")]
try:
    bw = json.load(open(sys.argv[2]))["gpus"][0]["copy_bw_Bps"]
except Exception:
    bw = 0
for r in rows:
    line = "%-6s %9.1f tok/s" % (r["test"], r["median_ts"])
    if r["n_gen"] > 0 and bw > 0:
        line += "  %.0f%% of the copy bandwidth (%.1f GB/s of weights, copy %.1f GB/s)" % (
            100 * r["median_ts"] * r["weights_bytes_per_token"] / bw, r["median_ts"] * r["weights_bytes_per_token"] / 1e9, bw / 1e9)
    print(line)
PY
  }
  step bench_8b bench8 bench_8b
  summarize bench_8b
  export HERD_CUDA_GRAPHS=1
  step bench_8b_graphs bench8 bench_8b_graphs
  unset HERD_CUDA_GRAPHS
  summarize bench_8b_graphs
fi

say "$failed step(s) failed; logs in $OUT"
exit "$failed"
