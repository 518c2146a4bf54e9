#!/usr/bin/env bash
# The cost of authenticated, encrypted links (issue [trust]): 2-stage decode on loopback, secure
# (the default: CURVE on ZeroMQ, sealed lanes) against --insecure, on SmolLM2-135M Q4_1 and a
# synthetic stories110m Q4_0.
#
#   bench/secure.sh HERD_BIN [--cache DIR] [-n 64] [-r 5] [--rounds 5] [--models A.gguf,B.gguf]
#
# Two secure and two --insecure workers (-t 1, -m MODEL, an even --split) run side by side; each
# round runs `herd bench -t 1 -p 0 -n N -r R --json` once against each pair, alternating which goes
# first, so a machine whose speed drifts (a shared VM) skews both alike. Reports per model the
# medians over rounds of tg t/s, the per-round secure/insecure ratio, and the per-hop cost
# (1/tg_secure - 1/tg_insecure) / hops with hops = stages + 1 = 3 messages per token.
set -euo pipefail

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage 0
HERD=$(realpath "$1"); shift
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${HOME:-/tmp}/.cache/herd/synth N=64 R=5 ROUNDS=5 MODELS=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --models) MODELS=$2; shift 2 ;;
    *) echo "secure.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -x "$HERD" ]] || { echo "secure.sh: $HERD is not an executable herd binary" >&2; exit 2; }
mkdir -p "$CACHE"
TMP=$(mktemp -d /tmp/herd-secure-bench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

if [[ -z $MODELS ]]; then
  M110="$CACHE/stories110m-Q4_0.gguf"
  if [[ ! -f "$M110" ]]; then
    echo "secure.sh: synthesising $M110" >&2
    "$HERD" synth --shape stories110m --type Q4_0 --seed 1 --out "$M110" -q
  fi
  MODELS="$HERE/../models/SmolLM2-135M-Instruct.Q4_1.gguf,$M110"
fi
IFS=, read -ra MODEL_LIST <<<"$MODELS"

start_worker() {  # MODEL TAG [--insecure] -> appends to PIDS, prints the address
  local model=$1 tag=$2 log="$TMP/$2.err"
  shift 2
  "$HERD" worker --listen 'tcp://127.0.0.1:*' -t 1 -m "$model" "$@" </dev/null >/dev/null 2>"$log" &
  PIDS+=($!)
}
address_of() {
  local log="$TMP/$1.err"
  for _ in $(seq 400); do grep -q 'listening on' "$log" 2>/dev/null && break; sleep 0.05; done
  sed -n 's/.*listening on \(.*\)$/\1/p' "$log" | head -1
}

: >"$TMP/rows.jsonl"
run() {  # MODEL NAME MODE ROUND SPLIT ADDRS [--insecure]
  local model=$1 name=$2 mode=$3 round=$4 split=$5 addrs=$6
  shift 6
  "$HERD" bench -m "$model" -t 1 -p 0 -n "$N" -r "$R" --json --workers "$addrs" --split "$split" "$@" \
    2>"$TMP/bench.err" >"$TMP/bench.out" || { cat "$TMP/bench.err" >&2; exit 1; }
  python3 -c "import sys,json; [print(json.dumps(dict(json.loads(l), name='$name', mode='$mode', round=$round))) for l in sys.stdin]" \
    <"$TMP/bench.out" >>"$TMP/rows.jsonl"
}
for model in "${MODEL_LIST[@]}"; do
  name=$(basename "$model" .gguf)
  layers=$("$HERD" info "$model" | sed -n 's/^shape: *\([0-9]*\) layers.*/\1/p')
  split=$(python3 -c "n=$layers; print('0-%d,%d-%d' % (n//2-1, n//2, n-1))")
  PIDS=()
  start_worker "$model" s0; start_worker "$model" s1
  start_worker "$model" i0 --insecure; start_worker "$model" i1 --insecure
  secure="$(address_of s0),$(address_of s1)" insecure="$(address_of i0),$(address_of i1)"
  echo "secure.sh: $name ($layers layers, split $split), $ROUNDS rounds" >&2
  for ((round = 0; round < ROUNDS; round++)); do
    if ((round % 2 == 0)); then
      run "$model" "$name" secure "$round" "$split" "$secure"
      run "$model" "$name" insecure "$round" "$split" "$insecure" --insecure
    else
      run "$model" "$name" insecure "$round" "$split" "$insecure" --insecure
      run "$model" "$name" secure "$round" "$split" "$secure"
    fi
  done
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  PIDS=()
done

python3 - "$TMP/rows.jsonl" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
by = {}
for r in rows:
    by.setdefault(r["name"], {}).setdefault(r["round"], {})[r["mode"]] = r["median_ts"]
print("| model | tg t/s secure | tg t/s --insecure | secure / insecure (median of rounds, range) | per-hop cost (median) |")
print("| --- | ---: | ---: | ---: | ---: |")
for name, rounds in by.items():
    pairs = [(v["secure"], v["insecure"]) for v in rounds.values() if "secure" in v and "insecure" in v]
    ratios = [s / i for s, i in pairs]
    hop_us = [(1 / s - 1 / i) / 3 * 1e6 for s, i in pairs]
    print("| %s | %.1f | %.1f | %.3f (%.3f–%.3f) | %+.1f µs |" % (
        name, med([s for s, _ in pairs]), med([i for _, i in pairs]), med(ratios), min(ratios), max(ratios),
        med(hop_us)))
PY
