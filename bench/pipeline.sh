#!/usr/bin/env bash
# Pipeline overhead on loopback: `herd bench` single-process against the same model split over 2
# and 4 `herd worker` processes (one stage each, -t 1), for rand15M (shared/models) and a synthetic
# stories110m Q4_0 (made once with `herd synth`, cached).
#
#   bench/pipeline.sh HERD_BIN [--cache DIR] [-p 64] [-n 32] [-r 5] [--rounds 3] [--stages 2,4] [--act-dtype f32]
#
# Every run is `herd bench -t 1 -r R -p P -n N --json` (median of R repetitions, after a warm-up),
# the cluster runs with an even --split (so every worker is a stage); the single-process run uses
# 1 thread, like each worker, so the ratio isolates the cost of the hops. The single-process and
# the cluster runs alternate for --rounds rounds and each round's cluster/single ratio is taken
# from runs seconds apart, so a machine whose speed drifts (a shared VM) skews both alike; the
# table gives the medians over rounds. Decode (tg) samples greedily on the last stage, as
# generation does. Reports a markdown table: pp/tg tok/s, ratio to single-process, wire bytes per
# decoded token on each hop, and the per-hop overhead = (1/tg_stages - 1/tg_single) / hops, with
# hops = stages + 1 messages per token (coordinator -> stage 0 -> ... -> last stage -> coordinator).
set -euo pipefail

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage 0
HERD=$(realpath "$1"); shift
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${HOME:-/tmp}/.cache/herd/synth P=64 N=32 R=5 ROUNDS=3 STAGES=2,4 ACT=f32
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
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
single() {  # MODEL NAME ROUND
  "$HERD" bench -m "$1" -t 1 -p "$P" -n "$N" -r "$R" --json 2>/dev/null |
    python3 -c "import sys,json; [print(json.dumps(dict(json.loads(l), stages=1, name='$2', hops='', round=$3))) for l in sys.stdin]" \
      >>"$TMP/rows.jsonl"
}
for model in "${MODELS[@]}"; do
  name=$(basename "$model" .gguf)
  IFS=, read -ra stage_list <<<"$STAGES"
  layers=$("$HERD" info "$model" | sed -n 's/^shape: *\([0-9]*\) layers.*/\1/p')
  for n in "${stage_list[@]}"; do
    echo "pipeline.sh: $name, single process vs $n workers, $ROUNDS rounds" >&2
    start_workers "$n" "$model"
    # An even split, given explicitly: the default (the planner) may leave workers out.
    split=$(python3 -c "n,k=$layers,$n; b=[i*n//k for i in range(k+1)]; print(','.join('%d-%d'%(b[i],b[i+1]-1) for i in range(k)))")
    for ((round = 0; round < ROUNDS; round++)); do
      single "$model" "$name" "$round"
      "$HERD" bench -m "$model" -t 1 -p "$P" -n "$N" -r "$R" --json --workers "$ADDRS" --split "$split" --act-dtype "$ACT" \
        2>"$TMP/bench.err" >"$TMP/bench.out" || { cat "$TMP/bench.err" >&2; exit 1; }
      hops=$(grep -o 'wire bytes per decoded token: .*' "$TMP/bench.err" | sed 's/wire bytes per decoded token: //')
      HOPS="$hops" python3 -c "import sys,json,os; [print(json.dumps(dict(json.loads(l), stages=$n, name='$name', hops=os.environ['HOPS'], round=$round))) for l in sys.stdin]" \
        <"$TMP/bench.out" >>"$TMP/rows.jsonl"
    done
    stop_workers
  done
done

python3 - "$TMP/rows.jsonl" <<'PY'
import json, sys, re, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
# Single-process runs: all rounds of a model pooled; each cluster round pairs with the single run
# made just before it (same model, same round, the next row back in the file).
single_all, cluster = {}, {}
last_single = {}
for r in rows:
    kind = r["test"][:2]
    if r["stages"] == 1:
        single_all.setdefault((r["name"], kind), []).append(r["median_ts"])
        last_single[(r["name"], kind)] = r["median_ts"]
    else:
        s = last_single.get((r["name"], kind))
        cluster.setdefault((r["name"], r["stages"]), {}).setdefault(kind, []).append((r["median_ts"], s, r["hops"]))
print("| model | stages | pp t/s | pp × single | tg t/s | tg × single | per-hop overhead (tg) | wire bytes / token / hop |")
print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
for name in dict.fromkeys(r["name"] for r in rows):
    pp, tg = single_all.get((name, "pp"), []), single_all.get((name, "tg"), [])
    print("| %s | 1 (single process) | %s | 1.00 | %s | 1.00 |  |  |" % (
        name, "%.1f" % med(pp) if pp else "", "%.1f" % med(tg) if tg else ""))
    for (cname, stages), t in cluster.items():
        if cname != name:
            continue
        cells = []
        for kind in ("pp", "tg"):
            runs = t.get(kind, [])
            cells.append(("%.1f" % med([x for x, _, _ in runs]),
                          "%.2f" % med([x / s for x, s, _ in runs if s])) if runs else ("", ""))
        over = ""
        runs = t.get("tg", [])
        if runs:
            hops = stages + 1
            over = "%.0f µs" % med([(1 / x - 1 / s) / hops * 1e6 for x, s, _ in runs if s])
        hop = ""
        m = re.search(r"coordinator->stage0 (\d+), stage->stage (\d+) .*last->coordinator (\d+)", runs[0][2] if runs else "")
        if m:
            hop = "%s → s0, %s s→s, %s → coord" % m.groups()
        print("| %s | %d | %s | %s | %s | %s | %s | %s |" % (name, stages, cells[0][0], cells[0][1], cells[1][0],
              cells[1][1], over, hop))
PY
