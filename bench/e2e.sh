#!/usr/bin/env bash
# End-to-end speed of herd on synthetic stories110M models against the machine's memory bandwidth.
# Builds nothing: give it a built herd binary (herd_membw is looked for beside it).
#
#   bench/e2e.sh HERD_BIN [--cache DIR] [--out DIR] [--threads 1,2] [-p 128] [-n 64] [-r 5] [--membw PATH]
#
# 1. synthesises stories110m in Q4_0, Q4_K_M and Q8_0 into the cache dir (default
#    ~/.cache/herd/synth), reusing files already there (synth writes FILE.partial and renames, so a
#    file in the cache is always complete);
# 2. runs `herd bench -t THREADS -r R -p P -n N --json` on each;
# 3. measures the streaming read bound with herd_membw (beyond the last-level cache, every read
#    pattern, pinned, best of 5: engine/read_bound.h) per thread count;
# 4. writes OUT/e2e.csv and OUT/e2e.md (default OUT: the cache dir's parent/e2e): pp/tg tok/s, weight bytes read per
#    token, the bandwidth bound (GB/s / bytes per token, tg only: a decoded token reads every weight once)
#    and the fraction of it reached.
set -euo pipefail

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
[[ $# -ge 1 ]] || usage
[[ "$1" == -h || "$1" == --help ]] && usage 0
HERD=$(realpath "$1"); shift
CACHE=${HOME:-/tmp}/.cache/herd/synth OUT= THREADS=1,2 P=128 N=64 R=5
MEMBW=$(dirname "$HERD")/herd_membw
while [[ $# -gt 0 ]]; do
  case "$1" in
    --cache) CACHE=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --threads|-t) THREADS=$2; shift 2 ;;
    -p) P=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) R=$2; shift 2 ;;
    --membw) MEMBW=$2; shift 2 ;;
    *) echo "e2e.sh: unknown option $1" >&2; usage ;;
  esac
done
OUT=${OUT:-$(dirname "$CACHE")/e2e}
[[ -x "$HERD" ]] || { echo "e2e.sh: $HERD is not an executable herd binary" >&2; exit 2; }
[[ -x "$MEMBW" ]] || { echo "e2e.sh: no herd_membw at $MEMBW (build the herd_membw target or pass --membw)" >&2; exit 2; }
command -v python3 >/dev/null || { echo "e2e.sh: needs python3 for the report" >&2; exit 2; }
mkdir -p "$CACHE" "$OUT"

JSONL="$OUT/bench.jsonl"; : > "$JSONL"
for TYPE in Q4_0 Q4_K_M Q8_0; do
  F="$CACHE/stories110m-$TYPE.gguf"
  if [[ -f "$F" ]]; then
    echo "e2e: reusing $F" >&2
  else
    "$HERD" synth --shape stories110m --type "$TYPE" --seed 1 --out "$F"
  fi
  echo "e2e: herd bench $TYPE (threads $THREADS, pp$P, tg$N, $R reps)" >&2
  "$HERD" bench -m "$F" -t "$THREADS" -r "$R" -p "$P" -n "$N" --json >> "$JSONL"
done

echo "e2e: memory bandwidth (threads $THREADS)" >&2
"$MEMBW" --threads "$THREADS" --reps 5 --csv > "$OUT/membw.csv"

python3 - "$JSONL" "$OUT/membw.csv" "$OUT/e2e.csv" "$OUT/e2e.md" <<'PY'
import csv, json, os, sys
jsonl, membw_csv, out_csv, out_md = sys.argv[1:5]
bw = {}
for line in open(membw_csv):
    f = line.strip().split(",")
    if len(f) >= 3 and f[1] == "bound":  # threads,bound,best_GBps,
        bw[int(f[0])] = float(f[2])
rows = []
for line in open(jsonl):
    if not line.strip():
        continue
    j = json.loads(line)
    t = j["n_threads"]
    tg = j["n_gen"] > 0
    bpt = j["weights_bytes_per_token"]
    gbs = bw.get(t)
    bound = gbs * 1e9 / bpt if (tg and gbs) else None
    rows.append({
        "model": os.path.basename(j["model_filename"]), "type": j["model_type"], "backend": j["backend"],
        "threads": t, "test": j["test"], "tok_s": j["median_ts"], "spread": j["spread_ts"],
        "weights_bytes_per_token": bpt, "membw_gb_s": gbs if gbs else "",
        "bound_tok_s": round(bound, 2) if bound else "",
        "fraction_of_bound": round(j["median_ts"] / bound, 4) if bound else "",
    })
with open(out_csv, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(rows)
with open(out_md, "w") as f:
    f.write("| model | backend | threads | test | t/s (median ± spread) | weight MiB/token | mem GB/s | bound t/s | of bound |\n")
    f.write("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
    for r in rows:
        frac = f"{100 * r['fraction_of_bound']:.1f}%" if r["fraction_of_bound"] != "" else "-"
        bound = f"{r['bound_tok_s']:.1f}" if r["bound_tok_s"] != "" else "-"
        gbs = f"{r['membw_gb_s']:.1f}" if r["membw_gb_s"] != "" else "-"
        f.write(f"| {r['model']} | {r['backend']} | {r['threads']} | {r['test']} | {r['tok_s']:.2f} ± {r['spread']:.2f} "
                f"| {r['weights_bytes_per_token'] / 1048576:.1f} | {gbs} | {bound} | {frac} |\n")
print(open(out_md).read())
PY
echo "e2e: wrote $OUT/e2e.csv and $OUT/e2e.md" >&2
