#!/usr/bin/env bash
# Sequences decoding together, the figures of the [core] targets, on a synthetic stories110m Q4_0
# (made once with `herd synth`, cached):
#   1. one process, 1 thread: aggregate decode tok/s of N = 1, 2, 4, 8 sequences (one batch row each
#      per step), every N once per round inside one `herd bench --parallel` run, so the ratios to
#      N = 1 are paired comparisons;
#   2. two `herd worker` processes (-t 1 each, one stage each) with 8 sequences in 2 micro-batches,
#      against one process with the same 8 sequences on 1 and on 2 threads, alternating. The default
#      split gives the last stage fewer layers: it also runs the output projection, about a third
#      of an 8-sequence step on this shape (0-8,9-11 measured best of 0-5/0-7/0-8).
#
#   bench/parallel.sh HERD_BIN [--cache DIR] [-n 64] [-r 7] [--rounds 3] [--split 0-8,9-11]
#
# Prints each round's rates and ratios, then the medians over the rounds.
set -euo pipefail

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage 0
HERD=$(realpath "$1"); shift
CACHE=${HOME:-/tmp}/.cache/herd/synth N=64 R=7 ROUNDS=3 SPLIT=0-8,9-11
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --split) SPLIT=$2; shift 2 ;;
    *) echo "parallel.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -x "$HERD" ]] || { echo "parallel.sh: $HERD is not an executable herd binary" >&2; exit 2; }
command -v python3 >/dev/null || { echo "parallel.sh: needs python3 for the report" >&2; exit 2; }
mkdir -p "$CACHE"
TMP=$(mktemp -d /tmp/herd-parallel-bench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

M="$CACHE/stories110m-Q4_0.gguf"
if [[ ! -f "$M" ]]; then
  echo "parallel.sh: synthesising $M" >&2
  "$HERD" synth --shape stories110m --type Q4_0 --seed 1 --out "$M" -q
fi

rows() {  # LABEL ROUND ARGS... -> one JSON line per bench row, tagged
  local label=$1 round=$2; shift 2
  "$HERD" bench -m "$M" -p 0 -n "$N" -r "$R" --json "$@" 2>/dev/null |
    python3 -c "import sys,json; [print(json.dumps(dict(json.loads(l), label='$label', round=$round))) for l in sys.stdin]" \
      >>"$TMP/rows.jsonl"
}

: >"$TMP/rows.jsonl"
for ((round = 1; round <= ROUNDS; round++)); do
  echo "parallel.sh: round $round of $ROUNDS: one process, --parallel 1,2,4,8" >&2
  rows single "$round" -t 1 --parallel 1,2,4,8
done

for i in 0 1; do
  "$HERD" worker --listen 'tcp://127.0.0.1:*' -t 1 -m "$M" </dev/null >/dev/null 2>"$TMP/worker$i.err" &
  PIDS+=($!)
done
addrs=()
for i in 0 1; do
  for _ in $(seq 200); do grep -q 'listening on' "$TMP/worker$i.err" 2>/dev/null && break; sleep 0.05; done
  addrs+=("$(sed -n 's/.*listening on \(.*\)$/\1/p' "$TMP/worker$i.err" | head -1)")
done
ADDRS=$(IFS=,; echo "${addrs[*]}")
for ((round = 1; round <= ROUNDS; round++)); do
  echo "parallel.sh: round $round of $ROUNDS: 2 workers (split $SPLIT, 2 micro-batches) vs one process" >&2
  rows cluster "$round" -t 1 --parallel 8 --workers "$ADDRS" --split "$SPLIT" --micro-batches 2
  rows local "$round" -t 1,2 --parallel 8
done

python3 - "$TMP/rows.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def rate(label, rnd, n_seq, threads=1):
    for r in rows:
        if r["label"] == label and r["round"] == rnd and r["n_seq"] == n_seq and r["n_threads"] == threads:
            return r["median_ts"]
    return None
rounds = sorted({r["round"] for r in rows})
print("## One process, 1 thread: aggregate decode tok/s of N sequences, and the ratio to N = 1")
print("| round | N=1 | N=2 | N=4 | N=8 | 4 / 1 | 8 / 1 |")
print("|---:|---:|---:|---:|---:|---:|---:|")
r4, r8 = [], []
for k in rounds:
    v = {n: rate("single", k, n) for n in (1, 2, 4, 8)}
    r4.append(v[4] / v[1]); r8.append(v[8] / v[1])
    print(f"| {k} | {v[1]:.1f} | {v[2]:.1f} | {v[4]:.1f} | {v[8]:.1f} | {r4[-1]:.2f} | {r8[-1]:.2f} |")
print(f"| median | | | | | {statistics.median(r4):.2f} | {statistics.median(r8):.2f} |")
print()
print("## 8 sequences: 2 workers (-t 1, 2 micro-batches) vs one process on 1 and 2 threads")
print("| round | cluster | single t1 | single t2 | cluster / t1 | cluster / t2 |")
print("|---:|---:|---:|---:|---:|---:|")
c1, c2 = [], []
for k in rounds:
    c, s1, s2 = rate("cluster", k, 8), rate("local", k, 8, 1), rate("local", k, 8, 2)
    c1.append(c / s1); c2.append(c / s2)
    print(f"| {k} | {c:.1f} | {s1:.1f} | {s2:.1f} | {c1[-1]:.2f} | {c2[-1]:.2f} |")
print(f"| median | | | | {statistics.median(c1):.2f} | {statistics.median(c2):.2f} |")
PY
