#!/usr/bin/env bash
# Pipeline overhead on loopback: `herd bench` single-process against the same model split over 2
# and 4 `herd worker` processes (one stage each, -t 1), for rand15M (shared/models) and a synthetic
# stories110m Q4_0 (made once with `herd synth`, cached).
#
#   bench/pipeline.sh HERD_BIN [--cache DIR] [-p 64] [-n 32] [-r 5] [--stages 2,4] [--act-dtype f32]
#
# Every run is `herd bench -t 1 -r R -p P -n N --json` (median of R repetitions, after a warm-up),
# the cluster runs with an even --split (so every worker is a stage);
# the single-process run uses 1 thread, like each worker, so the ratio isolates the cost of the
# hops. Decode (tg) samples greedily on the last stage, as generation does. Reports a markdown
# table: pp/tg tok/s, ratio to single-process, wire bytes per decoded token on each hop, and the
# per-hop overhead = (1/tg_stages - 1/tg_single) / hops, with hops = stages + 1 messages per
# token (coordinator -> stage 0 -> ... -> last stage -> coordinator).
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage 0
HERD=$(realpath "$1"); shift
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${HOME:-/tmp}/.cache/herd/synth P=64 N=32 R=5 STAGES=2,4 ACT=f32
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --stages) STAGES=$2; shift 2 ;;
    --act-dtype) ACT=$2; shift 2 ;;
    *) echo "pipeline.sh: unknown option $1" >&2; usage ;;
  esac
done
[[ -x "$HERD" ]] || { echo "pipeline.sh: $HERD is not an executable herd binary" >&2; exit 2; }
command -v python3 >/dev/null || { echo "pipeline.sh: needs python3 for the report" >&2; exit 2; }
mkdir -p "$CACHE"
TMP=$(mktemp -d /tmp/herd-pipeline-bench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT

M110="$CACHE/stories110m-Q4_0.gguf"
if [[ ! -f "$M110" ]]; then
  echo "pipeline.sh: synthesising $M110" >&2
  "$HERD" synth --shape stories110m --type Q4_0 --seed 1 --out "$M110" -q
fi
MODELS=("$HERE/../../shared/models/rand15M-q8_0.gguf" "$M110")

start_workers() {  # N MODEL -> sets ADDRS (comma-separated) and PIDS (no subshell: we keep the pids)
  local n=$1 model=$2 addrs=() i log
  PIDS=()
  for ((i = 0; i < n; i++)); do
    log="$TMP/worker$i.err"
    "$HERD" worker --listen 'tcp://127.0.0.1:*' -t 1 -m "$model" </dev/null >/dev/null 2>"$log" &
    PIDS+=($!)
  done
  for ((i = 0; i < n; i++)); do
    log="$TMP/worker$i.err"
    for _ in $(seq 200); do grep -q 'listening on' "$log" 2>/dev/null && break; sleep 0.05; done
    addrs+=("$(sed -n 's/.*listening on \(.*\)$/\1/p' "$log" | head -1)")
  done
  ADDRS=$(IFS=,; echo "${addrs[*]}")
}
stop_workers() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done; PIDS=(); }

: >"$TMP/rows.jsonl"
for model in "${MODELS[@]}"; do
  name=$(basename "$model" .gguf)
  echo "pipeline.sh: $name single-process" >&2
  "$HERD" bench -m "$model" -t 1 -p "$P" -n "$N" -r "$R" --json 2>/dev/null |
    python3 -c "import sys,json; [print(json.dumps(dict(json.loads(l), stages=1, name='$name', hops=''))) for l in sys.stdin]" \
      >>"$TMP/rows.jsonl"
  IFS=, read -ra stage_list <<<"$STAGES"
  for n in "${stage_list[@]}"; do
    echo "pipeline.sh: $name on $n workers" >&2
    start_workers "$n" "$model"
    # An even split, given explicitly: the default (the planner) may leave workers out.
    layers=$("$HERD" info "$model" | sed -n 's/^shape: *\([0-9]*\) layers.*/\1/p')
    split=$(python3 -c "n,k=$layers,$n; b=[i*n//k for i in range(k+1)]; print(','.join('%d-%d'%(b[i],b[i+1]-1) for i in range(k)))")
    "$HERD" bench -m "$model" -t 1 -p "$P" -n "$N" -r "$R" --json --workers "$ADDRS" --split "$split" --act-dtype "$ACT" \
      2>"$TMP/bench.err" >"$TMP/bench.out" || { cat "$TMP/bench.err" >&2; exit 1; }
    hops=$(grep -o 'wire bytes per decoded token: .*' "$TMP/bench.err" | sed 's/wire bytes per decoded token: //')
    HOPS="$hops" python3 -c "import sys,json,os; [print(json.dumps(dict(json.loads(l), stages=$n, name='$name', hops=os.environ['HOPS']))) for l in sys.stdin]" \
      <"$TMP/bench.out" >>"$TMP/rows.jsonl"
    stop_workers
  done
done

python3 - "$TMP/rows.jsonl" <<'PY'
import json, sys, re
rows = [json.loads(l) for l in open(sys.argv[1])]
single = {(r["name"], r["test"]): r["median_ts"] for r in rows if r["stages"] == 1}
print("| model | stages | pp t/s | pp × single | tg t/s | tg × single | per-hop overhead (tg) | wire bytes / token / hop |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
by = {}
for r in rows:
    by.setdefault((r["name"], r["stages"]), {})[r["test"][:2]] = r
for (name, stages), t in by.items():
    pp, tg = t.get("pp"), t.get("tg")
    pps, tgs = single.get((name, pp["test"])) if pp else None, single.get((name, tg["test"])) if tg else None
    cell = lambda r, s: ("%.1f" % r["median_ts"], "%.2f" % (r["median_ts"] / s) if s else "")
    pp_c = cell(pp, pps) if pp else ("", "")
    tg_c = cell(tg, tgs) if tg else ("", "")
    over = ""
    if stages > 1 and tg and tgs:
        hops = stages + 1
        us = (1 / tg["median_ts"] - 1 / tgs) / hops * 1e6
        over = "%.0f µs" % us
    hop = ""
    if stages > 1:
        nums = re.findall(r"(\d+)", tg["hops"] if tg else "")
        m = re.search(r"coordinator->stage0 (\d+), stage->stage (\d+) .*last->coordinator (\d+)", tg["hops"] if tg else "")
        if m:
            hop = "%s → s0, %s s→s, %s → coord" % m.groups()
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (name, "1 (single process)" if stages == 1 else stages,
          pp_c[0], pp_c[1], tg_c[0], tg_c[1], over, hop))
PY
