#!/usr/bin/env bash
# herd against llama.cpp on the same GGUF files and thread counts, in alternating rounds.
# Builds nothing: give it a llama-bench binary (llama.cpp built outside this repository) and a herd.
#
#   bench/vs_llama.sh LLAMA_BENCH HERD_BIN FILE... [--threads 1,2] [-p 128] [-n 64] [-r 5]
#                     [--rounds 3] [--out DIR] [--llama-args "ARGS"]
#
# Each round runs, file by file, `llama-bench -m F -t T -p P -n N -r R -o jsonl` and then
# `herd bench -m F -t T -p P -n N -r R --json` (both with an f16 KV cache, their default), so a
# neighbour's load hits both sides of a pair alike. Writes OUT/raw.jsonl (every row, tagged with
# its round and engine) and prints a markdown table: per file, thread count and test, the medians
# over the rounds of each engine's median t/s and of the per-round ratio herd / llama.cpp, with the
# ratios' range. -p 0 or -n 0 skips that test. Default OUT: ./vs-llama.
# --llama-args passes more options to llama-bench; where they ask for several configurations (e.g.
# "--repack 0,1": llama.cpp's repacked/AMX weight buffers off and on), each test takes llama.cpp's
# fastest configuration of that round, so the ratio is against llama.cpp at its best.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 && ( "$1" == -h || "$1" == --help ) ]] && usage 0
[[ $# -ge 3 ]] || usage
LB=$1 HERD=$2; shift 2
THREADS=1,2 P=128 N=64 R=5 ROUNDS=3 OUT=vs-llama LLAMA_ARGS= FILES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --threads|-t) THREADS=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --rounds) ROUNDS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --llama-args) LLAMA_ARGS=$2; shift 2 ;;
    -*) echo "vs_llama.sh: unknown option $1" >&2; usage ;;
    *) FILES+=("$1"); shift ;;
  esac
done
[[ -x "$LB" ]] || { echo "vs_llama.sh: $LB is not an executable llama-bench" >&2; exit 2; }
[[ -x "$HERD" ]] || { echo "vs_llama.sh: $HERD is not an executable herd binary" >&2; exit 2; }
[[ ${#FILES[@]} -gt 0 ]] || { echo "vs_llama.sh: no GGUF files given" >&2; usage; }
for F in "${FILES[@]}"; do [[ -f "$F" ]] || { echo "vs_llama.sh: no file $F" >&2; exit 2; }; done
mkdir -p "$OUT"
RAW="$OUT/raw.jsonl"; : > "$RAW"

tag() {  # tag every JSON line of stdin with round, engine and file
  python3 -c 'import json,sys
r,e,f=sys.argv[1:4]
for l in sys.stdin:
    l=l.strip()
    if l.startswith("{"):
        d=json.loads(l); d.update(round=int(r), engine=e, file=f); print(json.dumps(d))' "$@"
}

for ((round = 1; round <= ROUNDS; round++)); do
  for F in "${FILES[@]}"; do
    echo "vs_llama: round $round/$ROUNDS: llama-bench $(basename "$F")" >&2
    "$LB" -m "$F" -t "$THREADS" -p "$P" -n "$N" -r "$R" $LLAMA_ARGS -o jsonl 2>"$OUT/llama-bench.err" |
      tag "$round" llama.cpp "$F" >> "$RAW" ||
      echo "vs_llama: llama-bench failed on $F (status ${PIPESTATUS[0]}; $OUT/llama-bench.err): its rows of this round are missing" >&2
    echo "vs_llama: round $round/$ROUNDS: herd bench $(basename "$F")" >&2
    "$HERD" bench -m "$F" -t "$THREADS" -p "$P" -n "$N" -r "$R" --json 2>"$OUT/herd.err" | tag "$round" herd "$F" >> "$RAW" ||
      echo "vs_llama: herd bench failed on $F (status ${PIPESTATUS[0]}; $OUT/herd.err): its rows of this round are missing" >&2
  done
done

python3 - "$RAW" <<'PY'
import json, os, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
def test(d):
    return f"pp{d['n_prompt']}" if d["n_gen"] == 0 else f"tg{d['n_gen']}"
def rate(d):  # the median of the repetitions' t/s (llama-bench reports samples_ts too)
    return statistics.median(d["samples_ts"])
runs = {}
for d in rows:
    r = runs.setdefault((d["file"], d["n_threads"], test(d), d["round"]), {})
    r[d["engine"]] = max(r.get(d["engine"], 0.0), rate(d))  # llama.cpp: its fastest configuration
keys = sorted({k[:3] for k in runs})
print("| file | threads | test | llama.cpp t/s | herd t/s | ratio (median) | ratio range | rounds |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for f, t, name in keys:
    pairs = [v for k, v in runs.items() if k[:3] == (f, t, name) and len(v) == 2]
    if not pairs:
        continue
    ratios = [p["herd"] / p["llama.cpp"] for p in pairs]
    print(f"| {os.path.basename(f)} | {t} | {name} | {statistics.median(p['llama.cpp'] for p in pairs):.1f} | "
          f"{statistics.median(p['herd'] for p in pairs):.1f} | {statistics.median(ratios):.2f} | "
          f"{min(ratios):.2f}–{max(ratios):.2f} | {len(pairs)} |")
PY
