#!/usr/bin/env bash
# `herd serve` under concurrent streams (bench/serve_bench.py): aggregate decode tok/s with 1, 2, 4,
# 8 streams and time to first token p50/p99, against one process (-t 1) and a cluster of two local
# `herd worker`s (-t 1 each), on SmolLM2-135M-Instruct Q4_1 (models/, scripts/fetch-model.sh) and a
# synthetic stories110m Q4_0 (made once with `herd synth`, cached). Prints a markdown table per model
# and the ratios the [serve] issue targets: single 4 streams >= 2.5x single 1 stream; cluster
# 8 streams >= 1.6x single 8 streams.
#
#   bench/serve.sh [HERD_BIN] [--cache DIR] [-n 64] [--rounds 3] [--streams 1,2,4,8]
#                  [--models smollm2,stories110m] [--modes single,cluster] [--json OUT.jsonl]
#
# The cluster splits balance the two stages' bytes, the output matrix included: stories110m 0-8,9-11
# (bench/parallel.sh); SmolLM2 0-20,21-29 (its tied 49152 x 576 output matrix weighs as much as ~7
# of its layers; `--plan-strategy even` gave stage 2 half again stage 1's work: 1.07x instead of 1.58x).
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ "${1:-}" == -h || "${1:-}" == --help ]] && usage 0
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERD=$ROOT/build/bin/herd
if [[ $# -ge 1 && $1 != -* ]]; then HERD=$(realpath "$1"); shift; fi
CACHE=${HOME:-/tmp}/.cache/herd/synth N=64 ROUNDS=3 STREAMS=1,2,4,8 MODELS=smollm2,stories110m MODES=single,cluster
JSON=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --streams) STREAMS=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    --modes) MODES=$2; shift 2 ;;
    --json) JSON=(--json "$2"); shift 2 ;;
    *) echo "serve.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -x "$HERD" ]] || { echo "serve.sh: $HERD is not an executable herd binary" >&2; exit 2; }


for m in ${MODELS//,/ }; do
  case "$m" in
    smollm2)
      M=$ROOT/models/SmolLM2-135M-Instruct.Q4_1.gguf
      [[ -f "$M" ]] || { echo "serve.sh: $M missing (scripts/fetch-model.sh)" >&2; exit 2; }
      CARGS="--split 0-20,21-29" ;;
    stories110m)
      mkdir -p "$CACHE"
      M=$CACHE/stories110m-Q4_0.gguf
      if [[ ! -f "$M" ]]; then
        echo "serve.sh: synthesising $M" >&2
        "$HERD" synth --shape stories110m --type Q4_0 --seed 1 --out "$M" -q
      fi
      CARGS="--split 0-8,9-11" ;;
    *) echo "serve.sh: unknown model $m (smollm2, stories110m)" >&2; exit 2 ;;
  esac
  python3 "$ROOT/bench/serve_bench.py" --herd "$HERD" --model "$M" --modes "$MODES" --streams "$STREAMS" \
    --max-tokens "$N" --rounds "$ROUNDS" --cluster-args "$CARGS" "${JSON[@]}"
done
