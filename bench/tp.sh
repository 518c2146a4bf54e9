#!/usr/bin/env bash
# Tensor parallelism on this machine: decode tok/s of TP 2 x 1 thread against a single process, and
# the planner's prediction beside each measurement.
#
#   bench/tp.sh [HERD_BINARY]     (default build/bin/herd; bench_comm next to it)
#
# Models (`herd synth ... --type Q4_0` under $OUT, not the repo): stories110m, tinyllama-1.1b,
# llama2-7b (3.6 GiB; skipped with a message when $OUT's disk has less than 5 GiB free).
# Rows, each `herd bench -p 0 -n N_GEN -r REPS` (its median tok/s; the table: the median over ROUNDS):
#   single 1t       -t 1
#   single 2t       -t 2
#   tp2 f32|f16|q8  -t 2 --tp 2 --tp-sync S: two in-process ranks, 1 thread each
#   tp2 workers x 1t f32|f16|q8
#                   two `herd worker -t 1` and `--workers a,b --tp 2 --tp-sync S`, when this herd's bench takes
#                   --tp with --workers (asked first with unreachable workers: "not yet" means no);
#                   otherwise the row says "not available"
# Ratios: the row's tok/s over single 1t and over single 2t (targets for tp2: >= 1.6 and >= 0.9).
# Predicted: `herd plan --json` on a cluster file of devices `probe=probe-tN.json` (`herd probe -t N`,
#   full size: --quick's 40 MiB matrices sit partly in this L3 and over-predict a 7B by ~2x)
#   single: one device (its probe at -t 1 or -t 2), the local link ~0 (no messages);
#   tp2:    two devices on one host, `herd plan --tp 2 --tp-sync S`, each rank's rates (and cache
#           curve) min(-t 1's, -t 2's / 2) (the two ranks share the host's memory); the local link is
#           the in-process all-reduce (InprocComm) measured by bench_comm over 2 threads (each
#           size's median of three runs): the latency half a 256-byte all-reduce, the bandwidth the
#           least-squares slope over 4 to 64 KiB, the model's 2 x (latency + bytes / bandwidth);
#   tp2 workers x 1t: the same devices, the local link the worker ranks' all-reduces and the
#           coordinator's hops run on: the latency the -t 1 probe's one-way TCP latency over
#           127.0.0.1 (loopback_latency_s: threads blocked in recv, as a rank is when the other's
#           partial arrives), the bandwidth bench_comm's ring-tcp slope over 4 to 64 KiB;
#   plan context = N_GEN so its mean KV position is the benchmark's.
# sync bytes: what the busiest rank sends per token (2 x layers all-reduces of n_embd values at the
# sync's bytes per value + the logits gather), the planner's predicted sync share of the token
# ("pred.") and, for the in-process TP rows, the measured one: `herd bench --tp` prints rank 0's
# time inside its all-reduces and logits gathers (waiting for the slower rank included) over the
# tg test's wall time (warm-up included). Worker rows: rank 0's time in them over its compute time,
# from the line the worker writes when it stops ("herd worker: tp rank 0 of 2: ... (X%) in ...").
#
# Environment: OUT (/tmp/herd-tp-bench), ROUNDS (3: every row once per round, after a fresh
# calibration; medians over rounds, ratios paired within a round), REPS (3 per run), N_GEN (32; N_GEN_7B 16 for llama2-7b), MODELS
# ("stories110m tinyllama-1.1b llama2-7b"), SYNCS ("f32 f16 q8"), BASE_PORT (47710), PIN (1: worker i
# under `taskset -c i`, a core each as on two machines; 0: unpinned).
set -euo pipefail

HERD=${1:-build/bin/herd}
BIN_DIR=$(dirname "$HERD")
OUT=${OUT:-/tmp/herd-tp-bench}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-3}
N_GEN=${N_GEN:-32}
N_GEN_7B=${N_GEN_7B:-16}
MODELS=${MODELS:-"stories110m tinyllama-1.1b llama2-7b"}
SYNCS=${SYNCS:-"f32 f16 q8"}
BASE_PORT=${BASE_PORT:-47710}
# Worker i runs under `taskset -c i` where taskset exists and there are 2+ CPUs (PIN=0: unpinned).
PIN_WORKERS=0
if [ "${PIN:-1}" != 0 ] && command -v taskset >/dev/null && [ "$(nproc)" -ge 2 ]; then PIN_WORKERS=1; fi
mkdir -p "$OUT"

# shellcheck source=bench/lib.sh
. "$(dirname "$0")/lib.sh"  # worker_pids, stop_workers (on exit too), json_get

echo "load before: $(uptime)"

# This host as the planner sees it, re-measured before each model (a shared machine's speed drifts
# within minutes; the probes should see the load the benchmark sees).
calibrate() {
  "$HERD" probe -t 1 --out "$OUT/probe-t1.json" > "$OUT/probe-t1.txt"
  "$HERD" probe -t 2 --out "$OUT/probe-t2.json" > "$OUT/probe-t2.txt"

  # The all-reduce of 2 ranks, t(B) = 2 x (latency + B / bw), each size's median over three
  # bench_comm runs: in one process (InprocComm) for the in-process rows, and the ring over
  # tcp://127.0.0.1 (RingComm, what worker ranks run) for the worker rows. The latency is half a
  # 256-byte all-reduce's time (measured, not extrapolated: the intercept of a fit on 4-64 KiB gave
  # 4 us in one round and 40 us in the next, where a 256-byte all-reduce takes 82 us); the bandwidth
  # is the least-squares slope over 4-64 KiB (a decode's all-reduces are n_embd floats: 3-16 KiB).
  read -r inproc_lat inproc_bw ring_lat ring_bw < <(for _ in 1 2 3; do "$BIN_DIR/bench_comm" 2 256,4096,8192,16384,32768,65536 2>/dev/null; done | python3 -c '
import statistics as st, sys
t = {"inproc": {}, "ring-tcp": {}}
for line in sys.stdin:
    f = line.split()
    if len(f) >= 4 and f[0] in t and f[1] == "2": t[f[0]].setdefault(int(f[2]), []).append(float(f[3]) * 1e-6)
out = []
for impl in ("inproc", "ring-tcp"):
    hop = {x: st.median(v) / 2 for x, v in t[impl].items()}   # one hop: half an all-reduce of 2
    xs = sorted(x for x in hop if x >= 4096); ys = [hop[x] for x in xs]
    mx, my = st.mean(xs), st.mean(ys)
    per_byte = max(sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs), 1e-12)
    lat = max(hop[256] - per_byte * 256, 1e-7)
    out += ["%.3gus" % (lat * 1e6), "%.3gGB/s" % (1 / per_byte / 1e9)]
print(" ".join(out))')
  echo "calibration: in-process all-reduce (bench_comm, 2 threads): per-hop latency $inproc_lat, bandwidth $inproc_bw" >&2
  echo "calibration: ring over tcp://127.0.0.1 (bench_comm, 2 ranks): per-hop latency $ring_lat, bandwidth $ring_bw" >&2
  # A worker rank enters each all-reduce after computing its share, blocked in its receive when the
  # other's message comes: the hop latency is the probe's blocking one-way TCP latency
  # (loopback_latency_s, threads blocked in recv), what the planner takes for the local link of a
  # probed host anyway. bench_comm's back-to-back all-reduces can catch a message while still
  # polling: their 256-byte hop read 6 us in some rounds and 30-72 us in others.
  loop_lat=$(python3 -c 'import json, sys; print("%.3gus" % (json.load(open(sys.argv[1]))["loopback_latency_s"] * 1e6))' "$OUT/probe-t1.json")
  echo "calibration: worker rows: per-hop latency $loop_lat (herd probe -t 1 loopback), bandwidth $ring_bw (bench_comm ring)" >&2

  local one="link local latency=0.1us bw=100GB/s   # one process: no messages"
  printf '# generated by bench/tp.sh\n%s\ndevice name=r0 probe=probe-t1.json host=this\n' "$one" > "$OUT/single-t1.txt"
  printf '# generated by bench/tp.sh\n%s\ndevice name=r0 probe=probe-t2.json host=this\n' "$one" > "$OUT/single-t2.txt"
  # Two ranks share this host: each gets what one thread gets (-t 1), but at most half of what two
  # threads get together (-t 2): min(rate_t1, rate_t2 / 2) per matvec type (and per size of the
  # cache curve), for attention and for streaming reads, written as one probe file. Both probes
  # are measurements; nothing here is fitted to a TP run.
  python3 -c '
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
s = dict(a)
for k in ("read_bw_Bps", "attn_Bps"): s[k] = min(a[k], b[k] / 2)
s["matvec_Bps"] = {t: min(r, b["matvec_Bps"][t] / 2) for t, r in a["matvec_Bps"].items() if t in b["matvec_Bps"]}
cb = b.get("matvec_cached_Bps", {})
s["matvec_cached_Bps"] = {t: [[n, min(r, dict(map(tuple, cb[t])).get(n, 2 * r) / 2)] for n, r in pts]
                          for t, pts in a.get("matvec_cached_Bps", {}).items() if t in cb}
json.dump(s, open(sys.argv[3], "w"), indent=1)' "$OUT/probe-t1.json" "$OUT/probe-t2.json" "$OUT/probe-shared.json"
  {
    echo "# generated by bench/tp.sh: 2 in-process ranks of 1 thread on this host"
    echo "link local latency=$inproc_lat bw=$inproc_bw   # InprocComm, from bench_comm"
    for i in 0 1; do echo "device name=r$i probe=probe-shared.json host=this"; done
  } > "$OUT/tp2.txt"
  {
    echo "# generated by bench/tp.sh: 2 worker processes of 1 thread on this host, a TCP ring between them"
    echo "link local latency=$loop_lat bw=$ring_bw   # herd probe's loopback latency, bench_comm's RingComm bandwidth"
    for i in 0 1; do echo "device name=r$i probe=probe-shared.json host=this"; done
  } > "$OUT/tp2-workers.txt"
}

# Whether this herd runs --tp over --workers: it says "not yet" before it dials anyone.
worker_tp_msg=$(timeout 20 "$HERD" bench -m "$(ls "$OUT"/*-q4_0.gguf 2>/dev/null | head -1)" -p 0 -n 1 -r 1 \
                  --workers 127.0.0.1:9,127.0.0.1:9 --tp 2 2>&1 >/dev/null | grep -m1 -i "not yet" || true)

RESULTS="$OUT/results.tsv"   # model, row, round, measured, predicted, sync bytes, predicted sync share, load, measured sync share
: > "$RESULTS"
for shape in $MODELS; do
  model="$OUT/$shape-q4_0.gguf"
  n_gen=$N_GEN
  [ "$shape" = llama2-7b ] && n_gen=$N_GEN_7B
  if [ ! -f "$model" ]; then
    need=$("$HERD" synth --shape "$shape" --type Q4_0 --out "$model" --dry-run 2>&1 | grep -o '[0-9.]* GiB' | head -1 | cut -d' ' -f1 || true)
    free_gib=$(df -BG --output=avail "$OUT" | tail -1 | tr -dc 0-9)
    if [ -n "$need" ] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) + 1.5 < float(sys.argv[2]) else 1)" "$need" "$free_gib"; then :; \
    elif [ -z "$need" ] && [ "$free_gib" -ge 5 ]; then :; else
      printf '%s\tskipped: %s GiB free under %s, the file needs %s GiB\t0\t\t\t\t\t\n' "$shape" "$free_gib" "$OUT" "${need:-?}" >> "$RESULTS"
      continue
    fi
    "$HERD" synth --shape "$shape" --type Q4_0 --out "$model" -q > /dev/null
  fi
  rows=("single-1t" "single-2t")
  for s in $SYNCS; do rows+=("tp2-$s"); done
  for s in $SYNCS; do rows+=("workers-$s"); done
  # Rounds: every row once per round, after a fresh calibration, so the ratios within a round are
  # paired (a shared machine's load swings by 2x within minutes); the table gives medians.
  for round in $(seq 1 "$ROUNDS"); do
    calibrate
    load=$(cut -d' ' -f1 /proc/loadavg)
    for row in "${rows[@]}"; do
      sync=f32
      case "$row" in
        single-1t) args=(-t 1); cl="$OUT/single-t1.txt"; plan_args=(--strategy even) ;;
        single-2t) args=(-t 2); cl="$OUT/single-t2.txt"; plan_args=(--strategy even) ;;
        workers-*) sync=${row#workers-}; args=(--tp-sync "$sync"); cl="$OUT/tp2-workers.txt"; plan_args=(--tp 2 --tp-sync "$sync") ;;
        tp2-*) sync=${row#tp2-}; args=(-t 2 --tp 2 --tp-sync "$sync"); cl="$OUT/tp2.txt"; plan_args=(--tp 2 --tp-sync "$sync") ;;
      esac
      meas=""
      if [ "${row%-*}" = workers ]; then
        if [ -n "$worker_tp_msg" ]; then
          printf '%s\tnot available: "%s..."\t%s\t\t\t\t\t\n' "$shape" "$(cut -c1-70 <<< "$worker_tp_msg")" "$round" >> "$RESULTS"
          continue
        fi
        addrs=""
        for i in 0 1; do
          port=$((BASE_PORT + i))
          # Each worker on a core of its own, as on two machines: unpinned, the scheduler sometimes
          # stacks both ranks on one core (the receiver of an all-reduce wakes where its sender
          # runs), and the 7B read 5.0-5.2 tok/s in those runs against 6.0-6.4 in the others.
          pin=()
          [ "$PIN_WORKERS" = 1 ] && pin=(taskset -c "$i")
          "${pin[@]}" "$HERD" worker -l "127.0.0.1:$port" -m "$model" -t 1 > "$OUT/worker-$i.log" 2>&1 &
          worker_pids+=($!)
          addrs="$addrs${addrs:+,}127.0.0.1:$port"
        done
        sleep 1
        meas=$("$HERD" bench -m "$model" -p 0 -n "$n_gen" -r "$REPS" --workers "$addrs" --tp 2 "${args[@]}" --json \
                 2>"$OUT/bench-$shape-$row.err" | json_get median_ts || true)
        stop_workers
        if [ -z "$meas" ] || [ "$meas" = None ]; then
          printf '%s\tnot available: %s\t%s\t\t\t\t\t\n' "$shape" \
            "$(grep -m1 -i 'error' "$OUT/bench-$shape-$row.err" | cut -c1-80)" "$round" >> "$RESULTS"
          continue
        fi
      else
        meas=$("$HERD" bench -m "$model" -p 0 -n "$n_gen" -r "$REPS" "${args[@]}" --json 2>"$OUT/bench-$shape-$row.err" |
               json_get median_ts)
      fi
      plan=$("$HERD" plan -m "$model" --cluster "$cl" "${plan_args[@]}" --ctx "$n_gen" --prompt 1 --json)
      read -r pred sync_bytes sync_share < <(python3 -c '
import json, sys
p = json.loads(sys.stdin.read())["plans"][0]
s = p["stages"][0]
tp = s.get("tp", 1) > 1
print(p["decode_tok_s"], s["sync_bytes_per_token"] if tp else "-", s["sync_s"] / p["token_s"] if tp else "-")' <<< "$plan")
      # Measured sync share (in-process TP rows): `herd bench` prints rank 0's time in all-reduces and
      # logits gathers over the test's wall time ("tp sync: tgN: X% ...").
      sync_meas=$( { sed -n 's/^tp sync: tg[0-9]*: \([0-9.]*\)%.*/\1/p' "$OUT/bench-$shape-$row.err" 2>/dev/null || true; } | tail -1)
      if [ "${row%-*}" = workers ]; then
        sync_meas=$( { sed -n 's/^herd worker: tp rank 0 of 2: .*(\([0-9.]*\)%) in all-reduces.*/\1/p' "$OUT/worker-0.log" || true; } | tail -1)
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$shape" "$row" "$round" "$meas" "$pred" "$sync_bytes" "$sync_share" \
        "$load" "${sync_meas:--}" >> "$RESULTS"
    done
  done
done

# Medians over the rounds; "vs" ratios are the medians of each round's paired ratio.
python3 - "$RESULTS" <<'PY'
import statistics as st, sys
rows, order = {}, []
for line in open(sys.argv[1]):
    f = line.rstrip("\n").split("\t")
    key = (f[0], f[1])
    if key not in rows: rows[key] = []; order.append(key)
    rows[key].append(f)
def label(r):
    return {"single-1t": "single 1t", "single-2t": "single 2t"}.get(r, r.replace("tp2-", "tp2 ").replace("workers-", "tp2 workers x 1t "))
print("| model | run | measured tok/s | vs single 1t | vs single 2t | predicted tok/s | error | sync bytes/token/rank | sync share (pred.) | sync share (measured) |")
print("|---|---|---|---|---|---|---|---|---|---|")
loads = []
for shape, row in order:
    rs = rows[(shape, row)]
    if not rs[0][3]:
        msg = rs[0][1]
        print("| %s | %s | %s | | | | | | | |" % (shape, label(row) if not msg.startswith(("not", "skipped")) else "tp2 workers x 1t" if msg.startswith("not") else "-", msg))
        continue
    meas = [float(r[3]) for r in rs]; pred = [float(r[4]) for r in rs]
    loads += [float(r[7]) for r in rs]
    def ratio(base):
        b = {r[2]: float(r[3]) for r in rows.get((shape, base), []) if r[3]}
        v = [float(r[3]) / b[r[2]] for r in rs if r[2] in b]
        return "%.2fx" % st.median(v) if v else "-"
    m, p = st.median(meas), st.median(pred)
    share = "%.1f%%" % (100 * st.median(float(r[6]) for r in rs)) if rs[0][6] != "-" else "-"
    measured = [float(r[8]) for r in rs if len(r) > 8 and r[8] not in ("", "-")]
    mshare = "%.1f%%" % st.median(measured) if measured else "-"
    print("| %s | %s | %.2f | %s | %s | %.2f | %+.1f%% | %s | %s | %s |" % (shape, label(row), m, ratio("single-1t"), ratio("single-2t"),
          p, 100 * (p - m) / m, rs[0][5] if rs[0][5] == "-" else "%.0f" % float(rs[0][5]), share, mshare))
if loads: print("\n1-minute load average at the rounds' starts: %.1f to %.1f (median %.1f)" % (min(loads), max(loads), st.median(loads)))
PY
echo
echo "probe -t 1: $(head -1 "$OUT/probe-t1.txt")"
echo "load after: $(uptime)"
